//! Where mail goes and in what order: MX preference and fallbacks, null MX
//! and NXDOMAIN bounces, SERVFAIL deferrals, priorities, scheduled sends,
//! expiry, STARTTLS (opportunistic and required), and a graceful SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{lo, pick_port, python_has, require, DnsServer, Facteur, FacteurConfig, Sink};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn message(to: &str, category: &str) -> Value {
    json!({
        "from": "orders@brand.test",
        "subject": "Routing test",
        "text": "Hello",
        "category": category,
        "recipients": [{"email": to}],
    })
}

fn has_event(m: &Value, kind: &str) -> bool {
    m["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["type"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_decide_bounce_defer_or_fallback() {
    let port = pick_port(&[lo(2), lo(3)]);
    let primary = Sink::start(lo(2), port);
    let dns = DnsServer::start();
    // Preference order: the lower preference (10) is tried first.
    dns.add_mx("pref.test", 20, "backup.pref.test");
    dns.add_mx("pref.test", 10, "main.pref.test");
    dns.add_a("main.pref.test", lo(2));
    dns.add_a("backup.pref.test", lo(3));
    // No MX at all: the domain's own A record (RFC 5321 §5.1).
    dns.add_a("bare.test", lo(2));
    dns.null_mx("nullmx.test");
    dns.servfail("broken.test");
    let facteur = Facteur::start(FacteurConfig::typical(dns.addr(), port)).await;

    let to_pref = facteur
        .send(&message("a@pref.test", "transactional"))
        .await
        .remove(0);
    let to_bare = facteur
        .send(&message("b@bare.test", "transactional"))
        .await
        .remove(0);
    let to_null = facteur
        .send(&message("c@nullmx.test", "transactional"))
        .await
        .remove(0);
    let to_nx = facteur
        .send(&message("d@nowhere.test", "transactional"))
        .await
        .remove(0);
    let to_broken = facteur
        .send(&message("e@broken.test", "transactional"))
        .await
        .remove(0);

    let m = facteur.wait_state(&to_pref, "delivered", WAIT).await;
    let delivered = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "delivered")
        .unwrap();
    assert_eq!(delivered["data"]["mx"], "main.pref.test", "{m:#}");
    facteur.wait_state(&to_bare, "delivered", WAIT).await;
    assert_eq!(primary.wait_messages(2, WAIT).await.len(), 2);

    let m = facteur.wait_state(&to_null, "bounced", WAIT).await;
    assert!(
        m["last_reply"]["text"]
            .as_str()
            .unwrap()
            .contains("null MX"),
        "{m:#}"
    );
    let m = facteur.wait_state(&to_nx, "bounced", WAIT).await;
    assert!(
        m["last_reply"]["text"]
            .as_str()
            .unwrap()
            .contains("NXDOMAIN"),
        "{m:#}"
    );

    // SERVFAIL is temporary: deferred, and delivered once DNS recovers.
    common::wait_for("a deferral for SERVFAIL", WAIT, || async {
        let m = facteur.message(&to_broken).await;
        if has_event(&m, "deferred") {
            Ok(())
        } else {
            Err(m.to_string())
        }
    })
    .await;
    dns.clear_servfail("broken.test");
    dns.add_mail_host("broken.test", lo(2));
    facteur.wait_state(&to_broken, "delivered", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_mail_overtakes_a_marketing_batch() {
    let sink = Sink::start(lo(2), 0);
    let dns = DnsServer::start();
    dns.add_mail_host("busy.test", lo(2));
    let d = ["delivery", "domains", "busy.test"];
    let config = FacteurConfig::typical(dns.addr(), sink.port())
        .set_at(&[d[0], d[1], d[2], "max_connections"], 1i64)
        .set_at(&[d[0], d[1], d[2], "rate"], "10/s");
    let facteur = Facteur::start(config).await;
    let recipients: Vec<_> = (0..40)
        .map(|i| json!({"email": format!("bulk{i}@busy.test")}))
        .collect();
    facteur
        .send(
            &json!({"from": "news@brand.test", "subject": "Bulk", "text": "x",
            "category": "marketing", "recipients": recipients}),
        )
        .await;
    sink.wait_messages(3, WAIT).await;
    facteur
        .send(&message("urgent@busy.test", "transactional"))
        .await;
    let all = sink.wait_messages(41, WAIT).await;
    let position = all
        .iter()
        .position(|m| m.rcpt.iter().any(|r| r == "urgent@busy.test"))
        .unwrap();
    // It was queued after three bulk messages had gone; it may follow the
    // ones already taken from the queue, never the rest of the batch.
    assert!(
        position <= 8,
        "the transactional message came {position}th of 41"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_and_expiring_messages() {
    let sink = Sink::start(lo(2), 0);
    let dns = DnsServer::start();
    dns.add_mail_host("sched.test", lo(2));
    let config = FacteurConfig::typical(dns.addr(), sink.port()).set("delivery.max_age", "3s");
    let facteur = Facteur::start(config).await;

    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let mut body = message("later@sched.test", "transactional");
    body["send_at"] = at.to_rfc3339().into();
    let later = facteur.send(&body).await.remove(0);
    let m = facteur.message(&later).await;
    assert_eq!(m["state"], "queued", "{m:#}");
    let m = facteur.wait_state(&later, "delivered", WAIT).await;
    let delivered_at = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "delivered")
        .unwrap()["at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    assert!(
        delivered_at >= at,
        "delivered at {delivered_at}, before send_at {at}"
    );

    // tempfail@ always answers 451: retried until max_age, then expired.
    let doomed = facteur
        .send(&message("tempfail@sched.test", "transactional"))
        .await
        .remove(0);
    let m = facteur.wait_state(&doomed, "expired", WAIT).await;
    assert!(has_event(&m, "deferred"), "{m:#}");
    assert_eq!(m["last_reply"]["code"], 451, "{m:#}");
}

/// Starts aiosmtpd offering STARTTLS with a self-signed certificate.
fn tls_server(dir: &std::path::Path, port: u16) -> Option<std::process::Child> {
    if !require("aiosmtpd", python_has("aiosmtpd")) {
        return None;
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=mx.tls.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl could not make a certificate");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join("mail").join(sub)).unwrap();
    }
    let child = Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("{}:{port}", lo(2)),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg("--tlscert")
        .arg(&cert)
        .arg("--tlskey")
        .arg(&key)
        .arg("--no-requiretls")
        .arg(dir.join("mail"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd");
    Some(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_when_offered_and_required_where_configured() {
    let dir = tempfile::tempdir().unwrap();
    let port = pick_port(&[lo(2), lo(3)]);
    let Some(mut server) = tls_server(dir.path(), port) else {
        return;
    };
    common::wait_listening(
        "aiosmtpd with STARTTLS",
        std::net::SocketAddr::from((lo(2), port)),
    )
    .await;
    let plain = Sink::start(lo(3), port);
    let dns = DnsServer::start();
    dns.add_mail_host("tls.test", lo(2));
    dns.add_mail_host("plain.test", lo(3));
    dns.add_mail_host("strict.test", lo(3));
    let config = FacteurConfig::typical(dns.addr(), port)
        .set_at(&["delivery", "domains", "strict.test", "tls"], "required");
    let facteur = Facteur::start(config).await;

    let secure = facteur
        .send(&message("a@tls.test", "transactional"))
        .await
        .remove(0);
    let clear = facteur
        .send(&message("b@plain.test", "transactional"))
        .await
        .remove(0);
    let strict = facteur
        .send(&message("c@strict.test", "transactional"))
        .await
        .remove(0);

    let m = facteur.wait_state(&secure, "delivered", WAIT).await;
    let ev = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "delivered")
        .unwrap()
        .clone();
    assert_eq!(
        ev["data"]["tls"], true,
        "opportunistic STARTTLS was used: {m:#}"
    );
    let m = facteur.wait_state(&clear, "delivered", WAIT).await;
    let ev = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "delivered")
        .unwrap()
        .clone();
    assert_eq!(ev["data"]["tls"], false, "{m:#}");
    common::wait_for("the strict domain to be deferred", WAIT, || async {
        let m = facteur.message(&strict).await;
        let deferred = m["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == "deferred")
            .cloned();
        match deferred {
            Some(e)
                if e["reply"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("STARTTLS") =>
            {
                Ok(())
            }
            _ => Err(m.to_string()),
        }
    })
    .await;
    assert_eq!(
        plain
            .messages()
            .iter()
            .filter(|r| r.rcpt.iter().any(|x| x.starts_with("c@")))
            .count(),
        0
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_transaction_in_flight_and_exits_zero() {
    let sink = Sink::start(lo(2), 0);
    let dns = DnsServer::start();
    dns.add_mail_host("slowpoke.test", lo(2));
    let mut facteur = Facteur::start(FacteurConfig::typical(dns.addr(), sink.port())).await;
    let id = facteur
        .send(&message("slow-2@slowpoke.test", "transactional"))
        .await
        .remove(0);
    // The transaction is under way once the sink has the envelope.
    common::wait_for("the slow transaction to start", WAIT, || async {
        if sink.events().iter().any(|e| e["ev"] == "slow") {
            Ok(())
        } else {
            Err(format!("{:?}", sink.events()))
        }
    })
    .await;
    let status = facteur.sigterm().await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        sink.messages().len(),
        1,
        "the message in flight was finished"
    );
    facteur.restart().await;
    facteur.wait_state(&id, "delivered", WAIT).await;
    assert_eq!(sink.messages().len(), 1, "and not sent again");
}
