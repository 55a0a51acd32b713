//! STARTTLS on the inbound listener (RFC 3207), with swaks as the client:
//! offered only when a certificate is configured, mail comes through the
//! TLS session, and commands pipelined behind STARTTLS in clear text are
//! refused rather than carried into it.

mod common;
mod inbound_support;

use std::path::PathBuf;

use common::{lo, Facteur, Sink};
use inbound_support::{config, have_swaks, listener, swaks_with, BOUNCE_DOMAIN};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
) -> String {
    lines.next_line().await.unwrap().unwrap_or_default()
}

const HELLO: &[u8] = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_offered_with_a_certificate_and_mail_comes_through_it() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    let cfg = config(&sink)
        .set("inbound.tls_cert_file", fixture("inbound.crt"))
        .set("inbound.tls_key_file", fixture("inbound.key"));
    let facteur = Facteur::start(cfg).await;
    let smtp = listener(&facteur);
    let to = format!("x@{BOUNCE_DOMAIN}");

    // --tls: swaks insists on STARTTLS and fails without it.
    let s = swaks_with(smtp, "a@example.org", &to, HELLO, &["--tls"]);
    assert!(s.ok, "{}", s.transcript);
    assert!(s.transcript.contains("250-STARTTLS"), "{}", s.transcript);
    assert!(
        s.transcript.contains("220 2.0.0 ready to start TLS"),
        "{}",
        s.transcript
    );
    assert!(s.transcript.contains("TLS started"), "{}", s.transcript);
    // After the handshake, EHLO again: STARTTLS is no longer offered.
    let after = &s.transcript[s.transcript.find("TLS started").unwrap()..];
    assert!(!after.contains("250-STARTTLS"), "{}", s.transcript);
    assert!(s.data_reply().contains("not routed"), "{}", s.transcript);

    // A command pipelined behind STARTTLS, in clear text, is refused.
    let stream = tokio::net::TcpStream::connect(smtp).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    assert!(next_line(&mut lines).await.starts_with("220"));
    w.write_all(b"EHLO client.test\r\n").await.unwrap();
    while !next_line(&mut lines).await.starts_with("250 ") {}
    w.write_all(b"STARTTLS\r\nMAIL FROM:<a@example.org>\r\n")
        .await
        .unwrap();
    let refused = next_line(&mut lines).await;
    assert!(refused.starts_with("554 5.5.1"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_starttls_is_not_offered() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    let facteur = Facteur::start(config(&sink)).await;
    let to = format!("x@{BOUNCE_DOMAIN}");
    let s = swaks_with(listener(&facteur), "a@example.org", &to, HELLO, &["--tls"]);
    assert!(!s.ok, "{}", s.transcript);
    assert!(!s.transcript.contains("STARTTLS\r\n<-"), "{}", s.transcript);
    assert!(!s.transcript.contains("250-STARTTLS"), "{}", s.transcript);
}
