//! The test peers themselves, checked against real clients before the
//! delivery tests rely on them: the DNS server answers a real resolver
//! (hickory-resolver), facteur-sink answers swaks as an SMTP server must
//! (pipelining, dot-stuffing, magic recipients), aiosmtpd and smtp-sink
//! store what swaks sends, and the DKIM check accepts a message dkimpy
//! signed and refuses it once altered.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use common::mail::DkimKey;
use common::{dkim_verify, lo, pick_port, require, Aiosmtpd, DnsServer, PostfixSink, Sink};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::ProtoErrorKind;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, Resolver};

const WAIT: Duration = Duration::from_secs(30);

fn resolver(dns: &DnsServer) -> Resolver<TokioConnectionProvider> {
    let servers =
        NameServerConfigGroup::from_ips_clear(&[dns.addr().ip()], dns.addr().port(), true);
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut builder = Resolver::builder_with_config(config, TokioConnectionProvider::default());
    builder.options_mut().cache_size = 0;
    builder.options_mut().attempts = 1;
    builder.build()
}

/// The response code a failed lookup carries, if it got an answer.
fn response_code(error: &ResolveError) -> Option<ResponseCode> {
    match error.proto()?.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => Some(*response_code),
        _ => None,
    }
}

#[tokio::test]
async fn dns_server_answers_mx_a_txt_nxdomain_and_servfail() {
    let dns = DnsServer::start();
    dns.add_mx("alpha.test", 20, "mx2.alpha.test");
    dns.add_mx("alpha.test", 10, "mx1.alpha.test");
    dns.add_a("mx1.alpha.test", lo(2));
    dns.add_txt("s1._domainkey.brand.test", &"k".repeat(400));
    dns.null_mx("nomail.test");
    dns.add_mail_host("broken.test", lo(3));
    dns.servfail("broken.test");
    let resolver = resolver(&dns);

    let mx = resolver
        .lookup("alpha.test.", RecordType::MX)
        .await
        .expect("MX");
    let mut exchanges: Vec<(u16, String)> = mx
        .iter()
        .filter_map(|r| match r {
            RData::MX(mx) => Some((mx.preference(), mx.exchange().to_string())),
            _ => None,
        })
        .collect();
    exchanges.sort();
    assert_eq!(
        exchanges,
        [
            (10, "mx1.alpha.test.".into()),
            (20, "mx2.alpha.test.".into())
        ]
    );

    let a = resolver.ipv4_lookup("mx1.alpha.test.").await.expect("A");
    assert_eq!(
        a.iter().map(|a| IpAddr::V4(a.0)).collect::<Vec<_>>(),
        [IpAddr::V4(lo(2))]
    );

    let txt = resolver
        .txt_lookup("s1._domainkey.brand.test.")
        .await
        .expect("TXT");
    let joined: String = txt.iter().map(|t| t.to_string()).collect();
    assert_eq!(joined, "k".repeat(400), "a long TXT comes back whole");

    let null = resolver
        .lookup("nomail.test.", RecordType::MX)
        .await
        .expect("null MX");
    assert!(null
        .iter()
        .any(|r| matches!(r, RData::MX(mx) if mx.exchange().is_root())));

    let missing = resolver
        .lookup("nothing.alpha.test.", RecordType::MX)
        .await
        .unwrap_err();
    assert!(missing.is_nx_domain(), "unknown name: {missing}");
    assert_eq!(
        response_code(&missing),
        Some(ResponseCode::NXDomain),
        "{missing}"
    );

    let nodata = resolver
        .lookup("mx1.alpha.test.", RecordType::MX)
        .await
        .unwrap_err();
    assert!(
        nodata.is_no_records_found() && !nodata.is_nx_domain(),
        "no MX: {nodata}"
    );

    let failing = resolver
        .lookup("broken.test.", RecordType::MX)
        .await
        .unwrap_err();
    assert_eq!(
        response_code(&failing),
        Some(ResponseCode::ServFail),
        "{failing}"
    );
    dns.clear_servfail("broken.test");
    resolver
        .lookup("broken.test.", RecordType::MX)
        .await
        .expect("MX once SERVFAIL is cleared");

    dns.remove("mx1.alpha.test");
    let removed = resolver.ipv4_lookup("mx1.alpha.test.").await.unwrap_err();
    assert!(removed.is_nx_domain(), "removed name: {removed}");

    let outside = resolver
        .lookup("example.invalid-tld-of-the-world.", RecordType::MX)
        .await;
    assert!(outside.is_err(), "names outside the test zones are refused");
}

/// Runs swaks against `server` with extra arguments; returns its transcript.
fn swaks(server: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new("swaks")
        .args([
            "--server",
            &server.to_string(),
            "--from",
            "news@brand.test",
            "--timeout",
            "20",
        ])
        .args(args)
        .output()
        .expect("run swaks");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn have_swaks() -> bool {
    require(
        "swaks",
        Command::new("swaks").arg("--version").output().is_ok(),
    )
}

#[tokio::test]
async fn facteur_sink_speaks_smtp_with_pipelining_and_magic() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(2), 0);
    let body_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        body_file.path(),
        "Subject: dots\r\n\r\n.one\r\n..two\r\nend\r\n",
    )
    .expect("body");
    let body = body_file.path().to_str().expect("path");

    let transcript = swaks(
        sink.addr(),
        &[
            "--to",
            "ann@alpha.test,bob@alpha.test",
            "--pipeline",
            "--data",
            body,
        ],
    );
    assert!(transcript.contains("250-PIPELINING"), "{transcript}");
    assert!(transcript.contains("queued as 1"), "{transcript}");
    let messages = sink.wait_messages(1, WAIT).await;
    assert_eq!(messages[0].rcpt, ["ann@alpha.test", "bob@alpha.test"]);
    assert_eq!(messages[0].from, "news@brand.test");
    let raw = String::from_utf8_lossy(&messages[0].raw).into_owned();
    // swaks dot-stuffs on the wire; the sink must undo it exactly.
    assert!(
        raw.starts_with("Subject: dots\r\n\r\n.one\r\n..two\r\nend\r\n"),
        "{raw:?}"
    );

    for _ in 0..2 {
        let transcript = swaks(sink.addr(), &["--to", "tempfail-2@alpha.test"]);
        assert!(transcript.contains("451 4.3.0 try again"), "{transcript}");
    }
    let transcript = swaks(sink.addr(), &["--to", "Tempfail-2@alpha.test"]);
    assert!(
        transcript.contains("queued as"),
        "accepted on the third attempt: {transcript}"
    );
    assert_eq!(sink.replies_to("tempfail-2@alpha.test").len(), 2);

    let transcript = swaks(sink.addr(), &["--to", "permfail@beta.test"]);
    assert!(
        transcript.contains("550 5.1.1 no such user"),
        "{transcript}"
    );

    let transcript = swaks(sink.addr(), &["--to", "slowdown@beta.test"]);
    assert!(
        transcript.contains("421 4.7.0 too many messages, slow down"),
        "{transcript}"
    );
    let transcript = swaks(sink.addr(), &["--to", "slowdown@beta.test"]);
    assert!(transcript.contains("queued as"), "{transcript}");

    let transcript = swaks(sink.addr(), &["--to", "hangup@beta.test"]);
    assert!(!transcript.contains("queued as"), "{transcript}");
    assert_eq!(sink.events_of("hangup").len(), 1);
    let transcript = swaks(sink.addr(), &["--to", "hangup@beta.test"]);
    assert!(transcript.contains("queued as"), "{transcript}");

    let transcript = swaks(sink.addr(), &["--to", "slow-1@beta.test"]);
    assert!(transcript.contains("queued as"), "{transcript}");
    assert_eq!(sink.events_of("slow").len(), 1);

    assert_eq!(sink.messages().len(), 5);
    assert!(
        sink.messages_per_connection().values().all(|&n| n == 1),
        "one message a connection"
    );
    assert_eq!(
        sink.max_concurrent_connections(),
        1,
        "swaks ran one at a time"
    );
    assert_eq!(sink.connections(), sink.events_of("disconnect").len());
}

#[tokio::test]
async fn aiosmtpd_and_smtp_sink_store_what_they_receive() {
    if !have_swaks() {
        return;
    }
    let port = pick_port(&[lo(2), lo(3)]);
    let Some(aiosmtpd) = Aiosmtpd::start(lo(2), port).await else {
        return;
    };
    let Some(postfix) = PostfixSink::start(lo(3), port).await else {
        return;
    };
    for (addr, to) in [
        (aiosmtpd.addr(), "ann@alpha.test"),
        (postfix.addr(), "bob@beta.test"),
    ] {
        let transcript = swaks(
            addr,
            &[
                "--to",
                to,
                "--header",
                "Subject: hello",
                "--body",
                "Hi there",
            ],
        );
        assert!(transcript.contains("<-  250"), "{transcript}");
    }
    for (messages, to) in [
        (aiosmtpd.wait_messages(1, WAIT).await, "ann@alpha.test"),
        (postfix.wait_messages(1, WAIT).await, "bob@beta.test"),
    ] {
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].from, "news@brand.test");
        assert_eq!(messages[0].rcpt, [to]);
        assert_eq!(messages[0].subject().as_deref(), Some("hello"));
        assert_eq!(
            messages[0].text().map(|t| t.trim().to_string()).as_deref(),
            Some("Hi there")
        );
    }
}

#[test]
fn dkim_check_accepts_a_good_signature_and_refuses_a_changed_message() {
    if !require(
        "dkimpy",
        common::python_has("dkim") && common::python_has("nacl"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = DkimKey::ed25519(dir.path());
    let message = b"From: news@brand.test\r\nTo: ann@alpha.test\r\nSubject: hi\r\n\r\nHello\r\n";
    let sign = r#"
import base64, sys, dkim
# dkimpy takes the raw Ed25519 seed, the last 32 bytes of the PKCS#8 DER.
pem = open(sys.argv[1]).read().split("-----")[2]
key = base64.b64encode(base64.b64decode(pem)[-32:])
sig = dkim.sign(sys.stdin.buffer.read(), b"s1", b"brand.test", key,
                include_headers=[b"from", b"to", b"subject"], signature_algorithm=b"ed25519-sha256")
sys.stdout.buffer.write(sig)
"#;
    let mut child = Command::new("python3")
        .args(["-c", sign])
        .arg(&key.private_key_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), message).expect("write");
    let out = child.wait_with_output().expect("dkim.sign");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "dkim.sign failed"
    );
    let signed = [out.stdout.as_slice(), message].concat();
    let name = "s1._domainkey.brand.test";
    dkim_verify(&signed, name, &key.txt).expect("good signature");
    let changed = String::from_utf8_lossy(&signed).replace("Hello", "Hullo");
    assert!(
        dkim_verify(changed.as_bytes(), name, &key.txt).is_err(),
        "altered body"
    );
    assert!(
        dkim_verify(&signed, "s2._domainkey.brand.test", &key.txt).is_err(),
        "other selector"
    );
}
