//! What the tracking tests share: a facteur relaying all mail to a
//! `facteur-sink` on loopback, a tracked marketing message, and its
//! tracking URLs read back from the message as delivered.
//!
//! A test file uses it with `mod common; mod tracking_support;`.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{lo, wait_for, Facteur, FacteurConfig, Received, Sink};

/// The tracking key facteur signs with, as configured (`KID:SECRET`).
pub const KID: u8 = 7;
/// Its secret.
pub const SECRET: &str = "tracking-test-secret-0123456789";
/// How long anything in these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// The configuration of the tracking tests: all mail to `sink`, a fixed
/// tracking key, and the given scanner click window.
pub fn config(sink: &Sink, scanner_click_window: &str) -> FacteurConfig {
    FacteurConfig::new()
        .set("delivery.relay", sink.addr().to_string())
        .set("delivery.helo_name", "facteur.test")
        .set("delivery.bounce_domain", "bounces.facteur.test")
        .set("delivery.retry_schedule", vec!["1s"])
        .set("delivery.retry_jitter", 0.0)
        .set("delivery.shutdown_deadline", "5s")
        .set("tracking.keys", vec![format!("{KID}:{SECRET}")])
        .set("tracking.scanner_click_window", scanner_click_window)
}

/// A facteur-sink on 127.0.0.1 and a facteur relaying to it.
pub async fn start(scanner_click_window: &str) -> (Facteur, Sink) {
    let sink = Sink::start(lo(1), 0);
    let facteur = Facteur::start(config(&sink, scanner_click_window)).await;
    (facteur, sink)
}

/// The HTML of the test message: a tracked link, links left alone, and the
/// unsubscribe link.
pub fn html(shop: &str) -> String {
    format!(
        r##"<html><body><h1>Spring sale</h1>
<p><a id="offer" href="{shop}/offer?x=1&amp;y=2">See the offer</a></p>
<p><a href="mailto:help@brand.test">mail</a> <a href="tel:+33123456789">call</a>
<a href="#top">top</a> <a data-facteur-notrack href="{shop}/terms">terms</a></p>
<p><a id="unsubscribe" href="{{{{ unsubscribe_url }}}}">Unsubscribe</a></p>
</body></html>"##
    )
}

/// A marketing request for `email` in `campaign`.
pub fn marketing(email: &str, campaign: &str, html: &str) -> Value {
    json!({
        "from": {"email": "news@brand.test", "name": "Brand"},
        "subject": "Spring sale",
        "html": html,
        "text": "See the offer at https://shop.test/offer",
        "category": "marketing",
        "campaign": campaign,
        "recipients": [{"email": email}],
    })
}

/// Sends `body` (one recipient) and returns its answer: `{id, status, ...}`.
pub async fn send_one(facteur: &Facteur, body: &Value) -> Value {
    let (status, reply) = facteur.post_json("/v1/messages", body).await;
    assert_eq!(status, 202, "POST /v1/messages answered {reply}");
    reply["messages"][0].clone()
}

/// Sends `body`, waits for it to be delivered and returns it as the sink
/// received it.
pub async fn send_and_receive(facteur: &Facteur, sink: &Sink, body: &Value) -> (String, Received) {
    let answer = send_one(facteur, body).await;
    assert_eq!(answer["status"], "queued", "{answer}");
    let id = answer["id"].as_str().expect("message id").to_string();
    facteur.wait_state(&id, "delivered", WAIT).await;
    let id_for_wait = id.clone();
    let received = wait_for("the message at the sink", WAIT, || {
        let id = id_for_wait.clone();
        async move {
            sink.messages()
                .into_iter()
                .find(|m| m.facteur_id().as_deref() == Some(id.as_str()))
                .ok_or_else(|| format!("{} messages, none is {id}", sink.messages().len()))
        }
    })
    .await;
    (id, received)
}

/// The tracking URLs of a delivered message.
#[derive(Debug, Clone)]
pub struct Links {
    /// `src` of the open pixel.
    pub pixel: String,
    /// `href` of the link with id `offer` (tracked).
    pub offer: String,
    /// Every `href` of the HTML part, in order.
    pub hrefs: Vec<String>,
    /// The HTTPS URL of `List-Unsubscribe`.
    pub unsubscribe: String,
    /// The mailto of `List-Unsubscribe`.
    pub unsubscribe_mailto: String,
}

/// Reads the tracking URLs out of a received message.
pub fn links(m: &Received) -> Links {
    let html = m.html().expect("an HTML part");
    let doc = scraper::Html::parse_document(&html);
    let select = |css: &str| scraper::Selector::parse(css).expect("selector");
    let hrefs: Vec<String> = doc
        .select(&select("a"))
        .filter_map(|a| a.value().attr("href").map(str::to_string))
        .collect();
    let offer = doc
        .select(&select("a#offer"))
        .next()
        .and_then(|a| a.value().attr("href"))
        .expect("the offer link")
        .to_string();
    let pixel = doc
        .select(&select(r#"img[width="1"][height="1"]"#))
        .next_back()
        .and_then(|i| i.value().attr("src"))
        .expect("the open pixel")
        .to_string();
    let header = m.header("List-Unsubscribe").expect("List-Unsubscribe");
    let urls: Vec<String> = header
        .split(',')
        .map(|p| {
            p.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .collect();
    let unsubscribe = urls
        .iter()
        .find(|u| u.starts_with("http"))
        .expect("an HTTP(S) unsubscribe URL")
        .clone();
    let unsubscribe_mailto = urls
        .iter()
        .find(|u| u.starts_with("mailto:"))
        .expect("a mailto unsubscribe URL")
        .clone();
    Links {
        pixel,
        offer,
        hrefs,
        unsubscribe,
        unsubscribe_mailto,
    }
}

/// The path of a URL on facteur (`/t/o/TOKEN`).
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/')
        .map_or("/".to_string(), |i| rest[i..].to_string())
}

/// The event types on a message's timeline, in order.
pub async fn timeline(facteur: &Facteur, id: &str) -> Vec<Value> {
    facteur.message(id).await["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The events of `kind` on the timeline.
pub async fn events_of(facteur: &Facteur, id: &str, kind: &str) -> Vec<Value> {
    timeline(facteur, id)
        .await
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

/// The value of the series `name{labels}` in a Prometheus text page (0
/// when absent). `labels` is the exact label set as printed, in order:
/// `campaign="spring",machine="false"`.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A browser's user agent (a person, to the machine rules).
pub const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
