//! End to end: the real facteur binary sends a personalised batch to three
//! domains whose MX hosts are three different real SMTP servers on
//! loopback, found through a real DNS server, and signs it with DKIM.
//!
//! - `alpha.test` → `mx.alpha.test` = 127.0.0.2: aiosmtpd (PyPI);
//! - `beta.test` → `mx.beta.test` = 127.0.0.3: facteur-sink;
//! - `gamma.test` → `mx.gamma.test` = 127.0.0.4: Postfix's smtp-sink;
//!
//! all on the same port, `delivery.smtp_port`. Every message must arrive
//! once, at its own domain's host, personalised, with the headers a mailbox
//! provider expects, and with a DKIM signature that dkimpy verifies against
//! the key published in DNS.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::mail::DkimKey;
use common::{
    dkim_verify, lo, pick_port, Aiosmtpd, DnsServer, Facteur, FacteurConfig, PostfixSink, Received,
    Sink,
};
use serde_json::{json, Value};

const DOMAINS: [&str; 3] = ["alpha.test", "beta.test", "gamma.test"];
const PEOPLE: [(&str, &str); 3] = [("ann", "Ann"), ("bob", "Bob"), ("cyd", "Cyd")];
const DKIM_NAME: &str = "s1._domainkey.brand.test";
const WAIT: Duration = Duration::from_secs(90);

/// The variable `name` of a recipient: unique, so that a mix-up shows.
fn var_name(first: &str, domain: &str) -> String {
    format!("{first}-{}", domain.trim_end_matches(".test"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personalised_batch_reaches_three_domains_signed_with_dkim() {
    let port = pick_port(&[lo(2), lo(3), lo(4)]);
    let Some(aiosmtpd) = Aiosmtpd::start(lo(2), port).await else {
        return;
    };
    let sink = Sink::start(lo(3), port);
    let Some(postfix) = PostfixSink::start(lo(4), port).await else {
        return;
    };
    if !common::require(
        "dkimpy",
        common::python_has("dkim") && common::python_has("nacl"),
    ) {
        return;
    }

    let dns = DnsServer::start();
    for (domain, host) in DOMAINS.iter().zip([2, 3, 4]) {
        dns.add_mail_host(domain, lo(host));
    }
    let dir = tempfile::Builder::new()
        .prefix("facteur-e2e-")
        .tempdir()
        .expect("tempdir");
    let key = DkimKey::ed25519(dir.path());
    dns.add_txt(DKIM_NAME, &key.txt);
    let config =
        FacteurConfig::typical(dns.addr(), port).dkim_ed25519("brand.test", &key.private_key_file);
    let facteur = Facteur::start_in(dir, config).await;

    // A marketing batch: three people at each domain.
    let recipients: Vec<Value> = DOMAINS
        .iter()
        .flat_map(|domain| {
            PEOPLE.iter().map(move |(local, first)| {
                json!({"email": format!("{local}@{domain}"), "name": first,
                       "vars": {"name": var_name(first, domain)}})
            })
        })
        .collect();
    let batch = json!({
        "from": {"email": "news@brand.test", "name": "Brand"},
        "subject": "Hello {{ name }}",
        "html": "<p>Hi {{ name }}</p><p><a href=\"https://brand.test/offer\">Our offer</a></p>",
        "text": "Hi {{ name }}\n\nOur offer: https://brand.test/offer\n",
        "category": "marketing",
        "campaign": "e2e-1",
        "recipients": recipients,
    });
    let ids = facteur.send(&batch).await;
    assert_eq!(ids.len(), 9, "one message per recipient");
    // And one transactional message, which must carry no List-Unsubscribe.
    let receipt = json!({
        "from": {"email": "orders@brand.test", "name": "Brand"},
        "subject": "Your order {{ order }}",
        "text": "Order {{ order }} is on its way.",
        "category": "transactional",
        "recipients": [{"email": "dan@gamma.test", "vars": {"order": "A-1"}}],
    });
    let receipt_id = facteur.send(&receipt).await.remove(0);

    // What the API says: delivered, with the remote's 250.
    let mut expected: BTreeMap<String, String> = BTreeMap::new(); // id -> email
    for (id, recipient) in ids.iter().zip(&recipients) {
        expected.insert(
            id.clone(),
            recipient["email"].as_str().unwrap_or_default().to_string(),
        );
    }
    expected.insert(receipt_id.clone(), "dan@gamma.test".into());
    for (id, email) in &expected {
        let message = facteur.wait_state(id, "delivered", WAIT).await;
        assert_eq!(message["email"], email.as_str(), "{message:#}");
        assert_eq!(message["last_reply"]["code"], 250, "{message:#}");
        let types: Vec<&str> = message["events"]
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["type"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            types.contains(&"queued") && types.last() == Some(&"delivered"),
            "{message:#}"
        );
    }

    // What the hosts received: each message once, at its domain's host.
    let alpha = aiosmtpd.wait_messages(3, WAIT).await;
    let beta = sink.wait_messages(3, WAIT).await;
    let gamma = postfix.wait_messages(4, WAIT).await;
    let mut seen = BTreeMap::new();
    for (domain, received) in [
        ("alpha.test", &alpha),
        ("beta.test", &beta),
        ("gamma.test", &gamma),
    ] {
        for message in received.iter() {
            let id = message
                .facteur_id()
                .unwrap_or_else(|| panic!("no X-Facteur-Id in {}", show(message)));
            let email = expected
                .get(&id)
                .unwrap_or_else(|| panic!("unknown X-Facteur-Id {id}"));
            assert!(
                email.ends_with(&format!("@{domain}")),
                "{email} delivered to the {domain} host"
            );
            assert!(
                seen.insert(id.clone(), message.clone()).is_none(),
                "{id} received twice"
            );
        }
    }
    assert_eq!(seen.len(), expected.len(), "every message arrived once");

    for (id, message) in &seen {
        let email = &expected[id];
        check_envelope(message, email);
        check_headers(message, email);
        if *id == receipt_id {
            check_transactional(message);
        } else {
            check_marketing(message, email);
        }
        if let Err(why) = dkim_verify(&message.raw, DKIM_NAME, &key.txt) {
            panic!("DKIM of {id} to {email}: {why}\n{}", show(message));
        }
    }
}

/// The message's start, for failure messages.
fn show(message: &Received) -> String {
    let text = String::from_utf8_lossy(&message.raw);
    text.chars().take(3000).collect()
}

fn check_envelope(message: &Received, email: &str) {
    assert_eq!(message.rcpt, [email], "envelope recipient");
    assert!(
        message.from.starts_with("bounces+") && message.from.ends_with("@bounces.facteur.test"),
        "VERP envelope sender, got {:?}",
        message.from
    );
}

fn check_headers(message: &Received, email: &str) {
    let names: Vec<String> = message
        .header_names()
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    for name in [
        "from",
        "to",
        "subject",
        "message-id",
        "date",
        "x-facteur-id",
        "dkim-signature",
    ] {
        assert!(
            names.contains(&name.to_string()),
            "no {name} header in\n{}",
            show(message)
        );
    }
    let to = message.header("To").unwrap_or_default();
    assert!(to.contains(email), "To: {to}");
    let from = message.header("From").unwrap_or_default();
    assert!(
        from.contains("@brand.test") && from.contains("Brand"),
        "From: {from}"
    );
    let message_id = message.header("Message-ID").unwrap_or_default();
    assert!(
        message_id.starts_with('<') && message_id.contains('@'),
        "Message-ID: {message_id}"
    );
    let parsed = message.parsed();
    assert!(
        parsed.date().is_some(),
        "Date must parse: {:?}",
        message.header("Date")
    );
}

fn check_marketing(message: &Received, email: &str) {
    let (local, domain) = email.split_once('@').expect("an address");
    let first = PEOPLE
        .iter()
        .find(|(l, _)| *l == local)
        .map(|(_, f)| *f)
        .expect("a person");
    let name = var_name(first, domain);
    assert_eq!(
        message.subject().as_deref(),
        Some(format!("Hello {name}").as_str())
    );
    let text = message
        .text()
        .unwrap_or_else(|| panic!("no text part in\n{}", show(message)));
    assert!(
        text.contains(&format!("Hi {name}")),
        "text part not personalised: {text}"
    );
    let html = message
        .html()
        .unwrap_or_else(|| panic!("no html part in\n{}", show(message)));
    assert!(
        html.contains(&format!("Hi {name}")),
        "html part not personalised: {html}"
    );
    for other in PEOPLE.iter().map(|(_, f)| *f).filter(|f| *f != first) {
        assert!(
            !html.contains(&format!("Hi {other}")),
            "another person's name in {html}"
        );
    }
    let unsubscribe = message.header("List-Unsubscribe").unwrap_or_default();
    assert!(
        unsubscribe.contains("<http"),
        "List-Unsubscribe with an https/http URL: {unsubscribe:?}"
    );
    assert_eq!(
        message.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click"),
        "RFC 8058 one-click"
    );
}

fn check_transactional(message: &Received) {
    assert_eq!(message.subject().as_deref(), Some("Your order A-1"));
    let text = message.text().unwrap_or_default();
    assert!(text.contains("Order A-1 is on its way."), "text: {text}");
    assert!(
        message.header("List-Unsubscribe").is_none(),
        "transactional mail has no List-Unsubscribe"
    );
}
