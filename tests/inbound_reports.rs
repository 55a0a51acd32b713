//! Reports that come back, delivered by swaks (a real SMTP client) into
//! facteur's own inbound listener, and posted to `/v1/inbound`:
//!
//! - a DSN for a delivered message → `bounced`, the address suppressed for
//!   everything (the next message to it answers `suppressed`);
//! - an ARF complaint → `complained`, suppressed for marketing only;
//! - an out-of-office → `auto_replied`, nothing suppressed;
//! - a soft bounce (mailbox full) posted over REST, found by its
//!   Message-ID → `bounced`, nothing suppressed;
//! - mail for a foreign domain is refused: facteur is no relay.

mod common;
mod inbound_support;

use common::{lo, Facteur, Sink};
use inbound_support::{
    config, fixture, have_swaks, listener, metric, post_inbound, send_one, status_of_new_message,
    swaks, swaks_with, BOUNCE_DOMAIN,
};
use serde_json::Value;

fn events_of(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect()
}

fn vars<'a>(id: &'a str, email: &'a str, msgid: &'a str) -> [(&'static str, &'a str); 3] {
    [("ID", id), ("EMAIL", email), ("MSGID", msgid)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_complaints_and_auto_replies_reach_their_messages() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    let facteur = Facteur::start(config(&sink)).await;
    let smtp = listener(&facteur);
    let ann = send_one(&facteur, "ann@alpha.test", "marketing").await;
    let bob = send_one(&facteur, "bob@alpha.test", "marketing").await;
    let cyd = send_one(&facteur, "cyd@alpha.test", "marketing").await;
    let dan = send_one(&facteur, "dan@alpha.test", "marketing").await;
    let mid = |id: &str| format!("{id}@brand.test");

    // A hard bounce to the VERP address, from the null sender.
    let verp = format!("bounces+{ann}@{BOUNCE_DOMAIN}");
    let m = mid(&ann);
    let dsn = fixture("dsn-userunknown.eml", &vars(&ann, "ann@alpha.test", &m));
    let s = swaks(smtp, "<>", &verp, &dsn);
    assert!(s.ok, "{}", s.transcript);
    assert!(
        s.data_reply()
            .contains(&format!("250 2.0.0 bounce recorded for message {ann}")),
        "{}",
        s.transcript
    );
    assert!(
        s.data_reply().contains("suppressed ann@alpha.test"),
        "{}",
        s.transcript
    );
    let message = facteur.message(&ann).await;
    assert_eq!(
        message["state"], "bounced",
        "a late DSN after delivery: {message:#}"
    );
    let bounced = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "bounced")
        .expect("bounced event");
    assert_eq!(bounced["data"]["status"], "5.1.1");
    assert_eq!(bounced["data"]["reason"], "userunknown");
    assert_eq!(bounced["data"]["hard"], true);
    assert_eq!(bounced["data"]["attributed_by"], "verp");
    for category in ["marketing", "transactional"] {
        assert_eq!(
            status_of_new_message(&facteur, "ann@alpha.test", category).await,
            "suppressed",
            "a hard bounce suppresses {category} mail too"
        );
    }

    // A complaint, to another address of the bounce domain: found by the
    // X-Facteur-Id of the returned original.
    let m = mid(&bob);
    let arf = fixture("arf-abuse.eml", &vars(&bob, "bob@alpha.test", &m));
    let s = swaks(
        smtp,
        "fbl@feedback.alpha.test",
        &format!("fbl@{BOUNCE_DOMAIN}"),
        &arf,
    );
    assert!(
        s.data_reply()
            .contains(&format!("complaint recorded for message {bob}")),
        "{}",
        s.transcript
    );
    let message = facteur.message(&bob).await;
    assert!(
        events_of(&message).contains(&"complained".to_string()),
        "{message:#}"
    );
    assert_eq!(
        status_of_new_message(&facteur, "bob@alpha.test", "marketing").await,
        "suppressed"
    );
    assert_eq!(
        status_of_new_message(&facteur, "bob@alpha.test", "transactional").await,
        "queued",
        "a complaint suppresses marketing only"
    );

    // An out-of-office to the VERP address: an event, no suppression.
    let m = mid(&cyd);
    let ooo = fixture("autoreply-ooo.eml", &vars(&cyd, "cyd@alpha.test", &m));
    let s = swaks(
        smtp,
        "cyd@alpha.test",
        &format!("bounces+{cyd}@{BOUNCE_DOMAIN}"),
        &ooo,
    );
    assert!(
        s.data_reply()
            .contains(&format!("auto-reply recorded for message {cyd}")),
        "{}",
        s.transcript
    );
    let message = facteur.message(&cyd).await;
    assert_eq!(message["state"], "delivered");
    assert!(
        events_of(&message).contains(&"auto_replied".to_string()),
        "{message:#}"
    );
    assert_eq!(
        status_of_new_message(&facteur, "cyd@alpha.test", "marketing").await,
        "queued"
    );

    // A soft bounce posted over REST, found by the original's Message-ID.
    let m = mid(&dan);
    let soft = fixture("dsn-mailboxfull.eml", &vars(&dan, "dan@alpha.test", &m));
    let (status, answer) = post_inbound(&facteur, &soft, "message/rfc822").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kind"], "bounce");
    assert_eq!(answer["message_id"], dan.as_str(), "{answer}");
    assert_eq!(
        answer["effects"][0]["attributed_by"], "message_id",
        "{answer}"
    );
    let actions: Vec<&str> = answer["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        actions,
        ["event bounced"],
        "a full mailbox is not suppressed"
    );
    assert_eq!(
        status_of_new_message(&facteur, "dan@alpha.test", "marketing").await,
        "queued"
    );

    let text = facteur.metrics().await;
    let hard = [("kind", "hard"), ("reason", "userunknown")];
    assert_eq!(metric(&text, "facteur_bounces_total", &hard), 1.0, "{text}");
    let soft = [("kind", "soft"), ("reason", "mailboxfull")];
    assert_eq!(metric(&text, "facteur_bounces_total", &soft), 1.0);
    assert_eq!(metric(&text, "facteur_complaints_total", &[]), 1.0);
    for (kind, n) in [("bounce", 2.0), ("feedback", 1.0), ("autoreply", 1.0)] {
        let labels = [("kind", kind)];
        assert_eq!(
            metric(&text, "facteur_inbound_messages_total", &labels),
            n,
            "{kind}"
        );
    }
    let message = facteur.message(&ann).await;
    assert_eq!(
        events_of(&message),
        ["queued", "delivered", "bounced"],
        "the whole timeline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_is_not_a_relay_and_has_limits() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    let facteur = Facteur::start(config(&sink).set("inbound.max_message_bytes", 4096)).await;
    let smtp = listener(&facteur);
    let hello = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n".to_vec();

    let s = swaks(smtp, "a@example.org", "someone@elsewhere.test", &hello);
    assert!(!s.ok, "{}", s.transcript);
    assert!(
        s.transcript.contains("550 5.7.1 relaying denied"),
        "{}",
        s.transcript
    );

    let s = swaks(smtp, "a@example.org", "sales@brand.test", &hello);
    assert!(!s.ok);
    assert!(s.transcript.contains("550 5.1.1"), "{}", s.transcript);

    let mut big = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".to_vec(), 400).flatten());
    let s = swaks(smtp, "a@example.org", &format!("x@{BOUNCE_DOMAIN}"), &big);
    assert!(!s.ok);
    assert!(s.transcript.contains("552 5.3.4"), "{}", s.transcript);

    // Mail for the bounce domain that is no report: classified, not routed.
    let s = swaks(smtp, "a@example.org", &format!("x@{BOUNCE_DOMAIN}"), &hello);
    assert!(s.ok, "{}", s.transcript);
    assert!(s.data_reply().contains("not routed"), "{}", s.transcript);

    // Pipelined (RFC 2920): the envelope in one group, a refused recipient
    // beside an accepted one.
    let to = format!("someone@elsewhere.test,y@{BOUNCE_DOMAIN}");
    let s = swaks_with(smtp, "a@example.org", &to, &hello, &["--pipeline"]);
    assert!(s.ok, "{}", s.transcript);
    assert!(s.transcript.contains("250-PIPELINING"), "{}", s.transcript);
    assert!(
        s.transcript.contains("550 5.7.1 relaying denied"),
        "{}",
        s.transcript
    );
    assert!(s.data_reply().contains("not routed"), "{}", s.transcript);
    // Both RCPT commands went out before the first one was answered.
    let last_rcpt = s.transcript.rfind("-> RCPT TO").expect("RCPT");
    let refusal = s.transcript.find("relaying denied").expect("refusal");
    assert!(last_rcpt < refusal, "not pipelined: {}", s.transcript);
    assert_eq!(sink.messages().len(), 0, "nothing was relayed or answered");

    // REST: clear 4xx for what is not a message; garbage is human mail.
    let (status, answer) = post_inbound(&facteur, b"", "message/rfc822").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "empty_message");
    let (status, _) = post_inbound(&facteur, &hello, "application/json").await;
    assert_eq!(status, 415);
    let (status, answer) = post_inbound(&facteur, &big, "message/rfc822").await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("4096"));
    let (status, answer) =
        post_inbound(&facteur, b"\x00\xff\xfe garbage \r\n\r\n", "message/rfc822").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kind"], "human");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_notices_and_unsubscribe_mail() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    let facteur = Facteur::start(config(&sink)).await;
    let smtp = listener(&facteur);
    let eve = send_one(&facteur, "eve@alpha.test", "marketing").await;
    let fay = send_one(&facteur, "fay@alpha.test", "marketing").await;

    // A delay notice: recorded, no change of state, nothing suppressed.
    let m = format!("{eve}@brand.test");
    let raw = fixture("dsn-delayed.eml", &vars(&eve, "eve@alpha.test", &m));
    let s = swaks(smtp, "<>", &format!("bounces+{eve}@{BOUNCE_DOMAIN}"), &raw);
    assert!(
        s.data_reply()
            .contains(&format!("bounce recorded for message {eve}; event delayed")),
        "{}",
        s.transcript
    );
    let message = facteur.message(&eve).await;
    assert_eq!(message["state"], "delivered", "{message:#}");
    assert_eq!(events_of(&message), ["queued", "delivered", "delayed"]);
    assert_eq!(
        status_of_new_message(&facteur, "eve@alpha.test", "marketing").await,
        "queued"
    );
    let text = facteur.metrics().await;
    let soft = [("kind", "soft"), ("reason", "expired")];
    assert_eq!(metric(&text, "facteur_bounces_total", &soft), 1.0);

    // The mailto: of List-Unsubscribe.
    let mail = b"From: fay@alpha.test\r\nSubject: unsubscribe\r\n\r\n".to_vec();
    let to = format!("unsubscribe+{fay}@{BOUNCE_DOMAIN}");
    let s = swaks(smtp, "fay@alpha.test", &to, &mail);
    assert!(
        s.data_reply()
            .contains(&format!("unsubscribe recorded for message {fay}")),
        "{}",
        s.transcript
    );
    assert_eq!(
        status_of_new_message(&facteur, "fay@alpha.test", "marketing").await,
        "suppressed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_smtp_client_does_not_hold_shutdown() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let sink = Sink::start(lo(1), 0);
    let mut facteur = Facteur::start(config(&sink)).await;
    let stream = tokio::net::TcpStream::connect(listener(&facteur))
        .await
        .expect("connect to the inbound listener");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.expect("greeting");
    assert!(line.starts_with("220 "), "{line}");
    w.write_all(b"EHLO client.test\r\n").await.expect("EHLO");
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("EHLO reply");
        if line.starts_with("250 ") {
            break;
        }
        assert!(line.starts_with("250-"), "{line}");
    }
    let status = facteur.sigterm().await;
    assert!(status.success(), "facteur exited with {status}");
    line.clear();
    r.read_line(&mut line).await.expect("goodbye");
    assert!(line.starts_with("421 4.3.2"), "{line:?}");
}
