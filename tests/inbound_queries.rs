//! Customer queries delivered by swaks into facteur's inbound listener:
//! routed by the configured rules to a webhook (an axum receiver on
//! loopback), forwarded and acknowledged through the normal sending path
//! (the messages arrive at a facteur-sink), and never answered twice in a
//! period, nor when the query is automatic or comes from a daemon.

mod common;
mod inbound_support;

use common::{lo, Facteur, Received, Sink};
use inbound_support::{
    config, fixture, have_swaks, listener, metric, swaks, WebhookReceiver, SUPPORT, WAIT,
};

const ACK_TEXT: &str =
    "Hello {{ name }}, we received your request about {{ subject }}; an advisor will call you.";

fn query(from: &str, subject: &str, msgid: &str, extra: &str) -> Vec<u8> {
    fixture(
        "query.eml",
        &[
            ("FROM", from),
            ("SUBJECT", subject),
            ("MSGID", msgid),
            ("EXTRA", extra),
        ],
    )
}

fn to(messages: &[Received], rcpt: &str) -> Vec<Received> {
    messages
        .iter()
        .filter(|m| m.rcpt.iter().any(|r| r == rcpt))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_routed_forwarded_and_acknowledged_once() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    let hook = WebhookReceiver::start().await;
    let cfg = config(&sink)
        .set("inbound.ack_period", "1h")
        .set_at(&["inbound", "routes"], {
            let mut billing = toml::Table::new();
            billing.insert("name".into(), "billing".into());
            billing.insert("subject".into(), "(?i)invoice|refund".into());
            billing.insert("webhook".into(), hook.url().into());
            billing.insert("forward_to".into(), "billing@crm.test".into());
            billing.insert("priority".into(), "high".into());
            billing.insert(
                "ack_subject".into(),
                "We received your request about {{ subject }}".into(),
            );
            billing.insert("ack_text".into(), ACK_TEXT.into());
            toml::Value::Array(vec![toml::Value::Table(billing)])
        })
        .set("inbound.default_route.name", "default")
        .set("inbound.default_route.ack_subject", "Re: {{ subject }}");
    let facteur = Facteur::start(cfg).await;
    let smtp = listener(&facteur);

    let s = swaks(
        smtp,
        "ann@customer.test",
        SUPPORT,
        &query(
            "ann@customer.test",
            "Invoice 42 is wrong",
            "q1@customer.test",
            "",
        ),
    );
    assert!(s.ok, "{}", s.transcript);
    let reply = s.data_reply();
    for part in [
        "250 2.0.0 query routed to billing",
        "webhook posted",
        "forwarded to billing@crm.test",
        "acknowledged",
    ] {
        assert!(reply.contains(part), "{part}: {}", s.transcript);
    }

    // The webhook got the parsed message as JSON.
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert_eq!(post["type"], "inbound.query");
    assert_eq!(post["route"], "billing");
    assert_eq!(post["priority"], "high");
    assert_eq!(post["via"], "smtp");
    assert_eq!(post["envelope"]["rcpt_to"][0], SUPPORT);
    assert_eq!(post["message"]["from"], "ann@customer.test");
    assert_eq!(post["message"]["from_name"], "Ann Customer");
    assert_eq!(post["message"]["subject"], "Invoice 42 is wrong");
    assert_eq!(post["message"]["message_id"], "q1@customer.test");
    assert!(post["message"]["text"]
        .as_str()
        .unwrap_or("")
        .contains("charged me twice"));

    // The forward and the acknowledgement went out through the queue.
    let all = sink.wait_messages(2, WAIT).await;
    let forward = &to(&all, "billing@crm.test")[0];
    assert_eq!(
        forward.subject().as_deref(),
        Some("Fwd: Invoice 42 is wrong")
    );
    assert_eq!(
        forward.header("Reply-To").as_deref(),
        Some("<ann@customer.test>")
    );
    assert!(forward
        .text()
        .unwrap_or_default()
        .contains("charged me twice"));
    let ack = &to(&all, "ann@customer.test")[0];
    assert_eq!(
        ack.subject().as_deref(),
        Some("We received your request about Invoice 42 is wrong")
    );
    assert_eq!(
        ack.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        ack.header("In-Reply-To").as_deref(),
        Some("<q1@customer.test>")
    );
    assert_eq!(
        ack.header("References").as_deref(),
        Some("<q0@customer.test> <q1@customer.test>")
    );
    assert!(ack.header("List-Unsubscribe").is_none(), "transactional");
    assert!(
        ack.from.starts_with("bounces+"),
        "VERP sender: {}",
        ack.from
    );
    let text = ack.text().unwrap_or_default();
    assert!(
        text.contains("Hello Ann Customer, we received your request about Invoice 42 is wrong; an advisor will call you."),
        "{text}"
    );

    // The same sender within the period: routed, not acknowledged again.
    let s = swaks(
        smtp,
        "ann@customer.test",
        SUPPORT,
        &query(
            "ann@customer.test",
            "Another question",
            "q2@customer.test",
            "",
        ),
    );
    assert!(
        s.data_reply().contains("query routed to default"),
        "{}",
        s.transcript
    );
    assert!(
        s.data_reply()
            .contains("not acknowledged: sender answered recently"),
        "{}",
        s.transcript
    );

    // Automatic mail, daemons and the null sender are never answered.
    for (from, envelope, extra, why) in [
        (
            "bob@customer.test",
            "bob@customer.test",
            "Precedence: bulk\n",
            "precedence",
        ),
        (
            "cyd@customer.test",
            "cyd@customer.test",
            "List-Id: <news.customer.test>\n",
            "list header",
        ),
        (
            "dan@customer.test",
            "dan@customer.test",
            "Auto-Submitted: auto-generated\n",
            "auto-submitted",
        ),
        (
            "MAILER-DAEMON@customer.test",
            "MAILER-DAEMON@customer.test",
            "",
            "daemon or no-reply sender",
        ),
        (
            "noreply@customer.test",
            "noreply@customer.test",
            "",
            "daemon or no-reply sender",
        ),
        ("eve@customer.test", "<>", "", "null sender"),
        (SUPPORT, SUPPORT, "", "facteur's own address"),
    ] {
        let msgid = format!("{}@customer.test", why.replace(' ', "-"));
        let s = swaks(
            smtp,
            envelope,
            SUPPORT,
            &query(from, "A question", &msgid, extra),
        );
        assert!(s.ok, "{}", s.transcript);
        assert!(
            s.data_reply().contains(&format!("not acknowledged: {why}")),
            "{from}: {}",
            s.transcript
        );
    }

    let text = facteur.metrics().await;
    let sent = [("result", "sent")];
    assert_eq!(metric(&text, "facteur_acknowledgements_total", &sent), 1.0);
    let skipped = [("result", "skipped")];
    assert_eq!(
        metric(&text, "facteur_acknowledgements_total", &skipped),
        8.0
    );
    // Nothing else was queued: one forward, one acknowledgement.
    let queued = metric(&text, "facteur_messages_accepted_total", &[]);
    assert_eq!(queued, 2.0, "{text}");
}
