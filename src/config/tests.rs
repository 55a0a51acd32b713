use super::*;

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
fn defaults_load_without_file() {
    let c = Config::load(None, Vec::new()).unwrap();
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:8025");
    assert_eq!(c.delivery.smtp_port, 25);
    assert!(c.delivery.relay.is_none());
    assert!(c.delivery.resolver.is_none());
}

#[test]
fn env_overrides_file() {
    let f = write("[delivery]\nsmtp_port = 2525\n");
    let env = vec![
        ("FACTEUR_DELIVERY_SMTP_PORT".to_string(), "2626".to_string()),
        ("FACTEUR_API_KEYS".to_string(), "k1,k2".to_string()),
        (
            "FACTEUR_DELIVERY_RELAY".to_string(),
            "127.0.0.1:2500".to_string(),
        ),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let c = Config::load(Some(f.path()), env).unwrap();
    assert_eq!(c.delivery.smtp_port, 2626);
    assert_eq!(c.api.keys, vec!["k1", "k2"]);
    assert_eq!(c.delivery.relay.as_deref(), Some("127.0.0.1:2500"));
}

#[test]
fn facteur_log_is_the_tracing_filter_not_a_key() {
    let env = vec![
        ("FACTEUR_LOG".to_string(), "debug".to_string()),
        ("FACTEUR_LOG_LEVEL".to_string(), "warn".to_string()),
    ];
    let c = Config::load(None, env).unwrap();
    assert_eq!(c.log.level, "warn");
}

#[test]
fn every_error_is_collected_with_its_key() {
    let f = write(
        "[api]\nlisten = \"nowhere\"\n[delivery]\nretry_jitter = 3.0\n[bogus]\nx = 1\n[tracking]\nkeys = [\"x\"]\n",
    );
    let e = Config::load(Some(f.path()), Vec::new()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("api:"), "{text}");
    assert!(text.contains("delivery.retry_jitter"), "{text}");
    assert!(text.contains("bogus"), "{text}");
    assert!(text.contains("tracking.keys[0]"), "{text}");
}

#[test]
fn unknown_keys_are_refused() {
    let f = write("[delivery]\nsmtp_prot = 25\n");
    let e = Config::load(Some(f.path()), Vec::new()).unwrap_err();
    assert!(e.to_string().contains("smtp_prot"), "{e}");
}

#[test]
fn durations_and_rates_parse() {
    assert_eq!(
        HumanDuration::parse("250ms").unwrap().0,
        Duration::from_millis(250)
    );
    assert_eq!(
        HumanDuration::parse("5m").unwrap().0,
        Duration::from_secs(300)
    );
    assert_eq!(
        HumanDuration::parse("3d").unwrap().0,
        Duration::from_secs(3 * 86400)
    );
    assert!(HumanDuration::parse("5 parsecs").is_err());
    let r = Rate::parse("3000/h").unwrap();
    assert_eq!(r.count, 3000);
    assert_eq!(r.interval(), Duration::from_millis(1200));
    assert!(Rate::parse("0/s").is_err());
    assert!(Rate::parse("10/fortnight").is_err());
}

#[test]
fn per_domain_throttles_override_default() {
    let f = write(
        "[delivery.default_throttle]\nmax_connections = 5\n[delivery.domains.\"slow.test\"]\nmax_connections = 2\nrate = \"20/s\"\ntls = \"required\"\n",
    );
    let c = Config::load(Some(f.path()), Vec::new()).unwrap();
    assert_eq!(c.delivery.throttle_for("slow.test").max_connections, 2);
    assert_eq!(c.delivery.throttle_for("other.test").max_connections, 5);
    assert_eq!(c.delivery.tls_for("slow.test"), TlsPolicy::Required);
    assert_eq!(c.delivery.tls_for("other.test"), TlsPolicy::Opportunistic);
}
