//! The tracking endpoints of the real facteur binary, on links read from a
//! message it delivered to a real SMTP sink (`facteur-sink`) on loopback:
//! the open pixel, the click redirect, machine opens and clicks, the
//! unsubscribe page and RFC 8058 one-click, the suppression that follows,
//! and tokens that were changed, cut short, forged or signed with another
//! key, which must get 404 and leave nothing behind.

mod common;
mod tracking_support;

use facteur::tracking::{TokenKind, TokenSigner, TrackingToken};
use reqwest::header;
use serde_json::json;

use common::{lo, Facteur, Sink};
use tracking_support::{
    events_of, html, links, marketing, metric, path_of, send_and_receive, send_one, start, BROWSER,
    KID, SECRET,
};

const SHOP: &str = "https://shop.test";

/// A client that does not follow redirects.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_clicks_and_one_click_unsubscribe_are_recorded_and_honoured() {
    let (facteur, sink) = start("0s").await;
    let email = "ann@example.test";
    let (id, received) =
        send_and_receive(&facteur, &sink, &marketing(email, "spring", &html(SHOP))).await;
    let l = links(&received);
    let public = facteur.url("");

    // What was rewritten, and what was left alone.
    assert!(l.offer.starts_with(&format!("{public}/t/c/")), "{l:?}");
    assert!(l.pixel.starts_with(&format!("{public}/t/o/")), "{l:?}");
    assert!(l.unsubscribe.starts_with(&format!("{public}/u/")), "{l:?}");
    for kept in ["mailto:help@brand.test", "tel:+33123456789", "#top"] {
        assert!(l.hrefs.iter().any(|h| h == kept), "{kept} changed: {l:?}");
    }
    assert!(l.hrefs.contains(&format!("{SHOP}/terms")), "{l:?}");
    assert!(
        l.hrefs.contains(&l.unsubscribe),
        "unsubscribe link rewritten: {l:?}"
    );
    assert!(!received.html().unwrap().contains("data-facteur-notrack"));
    assert_eq!(
        l.unsubscribe_mailto,
        format!("mailto:unsubscribe+{id}@bounces.facteur.test")
    );
    assert_eq!(
        received.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        received.text().unwrap().contains("https://shop.test/offer"),
        "text part rewritten although tracking.rewrite_text is off"
    );

    let http = client();
    let get = |url: &str, ua: &str| http.get(url).header(header::USER_AGENT, ua).send();

    // The pixel: a GIF that is never cached; an open by a person.
    let r = get(&l.pixel, BROWSER).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "image/gif");
    assert_eq!(
        h[header::CACHE_CONTROL],
        "no-store, no-cache, must-revalidate, max-age=0"
    );
    assert_eq!(h[header::PRAGMA], "no-cache");
    assert_eq!(h[header::EXPIRES], "0");
    let gif = r.bytes().await.unwrap();
    assert_eq!(gif.len(), 43);
    assert!(gif.starts_with(b"GIF89a"));
    // Apple's privacy proxy and a HEAD: machines.
    assert_eq!(get(&l.pixel, "Mozilla/5.0").await.unwrap().status(), 200);
    let head = http.head(&l.pixel).header(header::USER_AGENT, BROWSER);
    assert_eq!(head.send().await.unwrap().status(), 200);

    let opens = events_of(&facteur, &id, "opened").await;
    assert_eq!(opens.len(), 3, "{opens:#?}");
    let machine: Vec<(bool, &str)> = opens
        .iter()
        .map(|e| {
            (
                e["data"]["machine"].as_bool().unwrap(),
                e["data"]["machine_reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        machine,
        [
            (false, "no_rule"),
            (true, "apple_mpp"),
            (true, "head_request")
        ]
    );
    assert_eq!(opens[0]["data"]["user_agent"], BROWSER);

    // The click: 302 to the URL that was in the message, and nowhere else.
    let r = get(&l.offer, BROWSER).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()[header::LOCATION],
        "https://shop.test/offer?x=1&y=2"
    );
    assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
    let head = http.head(&l.offer).header(header::USER_AGENT, BROWSER);
    assert_eq!(head.send().await.unwrap().status(), 302);
    assert_eq!(get(&l.offer, "curl/8.5.0").await.unwrap().status(), 302);
    let clicks = events_of(&facteur, &id, "clicked").await;
    let seen: Vec<(bool, &str, &str)> = clicks
        .iter()
        .map(|e| {
            (
                e["data"]["machine"].as_bool().unwrap(),
                e["data"]["machine_reason"].as_str().unwrap(),
                e["data"]["url"].as_str().unwrap(),
            )
        })
        .collect();
    let url = "https://shop.test/offer?x=1&y=2";
    assert_eq!(
        seen,
        [
            (false, "no_rule", url),
            (true, "head_request", url),
            (true, "bot_user_agent", url)
        ]
    );

    // GET /u/ shows a page with a form, in French when asked, and never
    // unsubscribes: link scanners fetch every GET.
    let r = http
        .get(&l.unsubscribe)
        .header(header::ACCEPT_LANGUAGE, "fr-FR,fr;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"<html lang="fr">"#), "{page}");
    assert!(page.contains(r#"<form method="post""#), "{page}");
    let r = http.get(&l.unsubscribe).send().await.unwrap();
    assert!(r.text().await.unwrap().contains(r#"<html lang="en">"#));
    assert!(events_of(&facteur, &id, "unsubscribed").await.is_empty());
    let again = send_one(&facteur, &marketing(email, "summer", "<p>hi</p>")).await;
    assert_eq!(again["status"], "queued", "a GET unsubscribed: {again}");

    // RFC 8058 one-click: 200, suppressed for marketing, counted once.
    for _ in 0..2 {
        let r = http
            .post(&l.unsubscribe)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let unsubscribed = events_of(&facteur, &id, "unsubscribed").await;
    assert_eq!(unsubscribed.len(), 1, "{unsubscribed:#?}");
    assert_eq!(unsubscribed[0]["data"]["scope"], "marketing");
    let refused = send_one(&facteur, &marketing(email, "autumn", "<p>hi</p>")).await;
    assert_eq!(refused["status"], "suppressed", "{refused}");
    let mut receipt = marketing(email, "receipt", "<p>your order</p>");
    receipt["category"] = json!("transactional");
    receipt["campaign"] = serde_json::Value::Null;
    let receipt = send_one(&facteur, &receipt).await;
    assert_eq!(
        receipt["status"], "queued",
        "transactional mail refused: {receipt}"
    );

    // Metrics: by campaign and machine, unique ones once, routes by template.
    let m = facteur.metrics().await;
    let spring = |machine: &str| format!(r#"campaign="spring",machine="{machine}""#);
    assert_eq!(metric(&m, "facteur_opens_total", &spring("false")), 1.0);
    assert_eq!(metric(&m, "facteur_opens_total", &spring("true")), 2.0);
    assert_eq!(metric(&m, "facteur_clicks_total", &spring("false")), 1.0);
    assert_eq!(metric(&m, "facteur_clicks_total", &spring("true")), 2.0);
    let campaign = r#"campaign="spring""#;
    assert_eq!(metric(&m, "facteur_unique_opens_total", campaign), 1.0);
    assert_eq!(metric(&m, "facteur_unique_clicks_total", campaign), 1.0);
    assert_eq!(metric(&m, "facteur_unsubscribes_total", campaign), 1.0);
    assert!(
        m.contains(r#"route="/t/o/{token}""#),
        "no route template in metrics"
    );
    assert!(
        !m.contains(&path_of(&l.pixel)),
        "a token leaked into metric labels"
    );
}

/// Every way a token can be wrong, for each endpoint.
fn bad_tokens(open: &str, click: &str, unsubscribe: &str) -> Vec<(String, String)> {
    let right = TokenSigner::new(vec![(KID, SECRET.as_bytes().to_vec())], KID).unwrap();
    let wrong_key =
        TokenSigner::new(vec![(KID, b"another-secret-0123456789".to_vec())], KID).unwrap();
    let unknown_kid =
        TokenSigner::new(vec![(KID + 1, SECRET.as_bytes().to_vec())], KID + 1).unwrap();
    let content = right.verify(click).expect("the click token verifies");
    let changed = |t: &str| {
        let mut b = t.as_bytes().to_vec();
        let i = b.len() / 2;
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let mut out = Vec::new();
    for (kind, token) in [
        ("open", open),
        ("click", click),
        ("unsubscribe", unsubscribe),
    ] {
        out.push((
            format!("{kind}: truncated"),
            token[..token.len() - 3].to_string(),
        ));
        out.push((format!("{kind}: cut to 10"), token[..10].to_string()));
        out.push((format!("{kind}: one character changed"), changed(token)));
        out.push((format!("{kind}: padded"), format!("{token}=")));
    }
    out.push((
        "re-signed with the wrong key".into(),
        wrong_key.sign(&content).unwrap(),
    ));
    out.push((
        "signed with an unknown key id".into(),
        unknown_kid.sign(&content).unwrap(),
    ));
    let javascript = TrackingToken {
        url: Some("javascript:alert(1)".into()),
        ..content.clone()
    };
    out.push((
        "a validly signed click to javascript:".into(),
        right.sign(&javascript).unwrap(),
    ));
    let ftp = TrackingToken {
        url: Some("ftp://files.test/x".into()),
        ..content.clone()
    };
    out.push((
        "a validly signed click to ftp:".into(),
        right.sign(&ftp).unwrap(),
    ));
    let no_url = TrackingToken {
        url: None,
        ..content
    };
    out.push((
        "a click token without a URL".into(),
        right.sign(&no_url).unwrap(),
    ));
    out.push(("garbage".into(), "not-a-token".into()));
    out.push(("too long".into(), "A".repeat(5000)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_truncated_and_wrong_key_tokens_get_404_and_record_nothing() {
    let (facteur, sink) = start("1h").await;
    let email = "bob@example.test";
    let (id, received) =
        send_and_receive(&facteur, &sink, &marketing(email, "forgery", &html(SHOP))).await;
    let l = links(&received);
    let token = |url: &str| url.rsplit('/').next().unwrap().to_string();
    let (open, click, unsubscribe) = (token(&l.pixel), token(&l.offer), token(&l.unsubscribe));
    let http = client();
    let base = facteur.url("");

    let mut wrong_kind = vec![
        ("click token on /t/o", format!("/t/o/{click}")),
        ("unsubscribe token on /t/o", format!("/t/o/{unsubscribe}")),
        ("open token on /t/c", format!("/t/c/{open}")),
        ("open token on /u", format!("/u/{open}")),
    ];
    let bad = bad_tokens(&open, &click, &unsubscribe);
    let mut tried = Vec::new();
    for (what, t) in &bad {
        for path in ["/t/o/", "/t/c/", "/u/"] {
            tried.push((format!("{what} on {path}"), format!("{path}{t}")));
        }
    }
    tried.extend(wrong_kind.drain(..).map(|(w, p)| (w.to_string(), p)));
    let mut rejected = 0;
    for (what, path) in &tried {
        let url = format!("{base}{path}");
        let r = http.get(&url).header(header::USER_AGENT, BROWSER).send();
        assert_eq!(r.await.unwrap().status(), 404, "GET {what}");
        rejected += 1;
        if path.starts_with("/u/") {
            let r = http.post(&url).body("List-Unsubscribe=One-Click").send();
            assert_eq!(r.await.unwrap().status(), 404, "POST {what}");
            rejected += 1;
        }
    }

    // Nothing recorded: no event, no suppression, no open or click counted.
    for kind in ["opened", "clicked", "unsubscribed"] {
        assert!(events_of(&facteur, &id, kind).await.is_empty(), "{kind}");
    }
    let again = send_one(&facteur, &marketing(email, "after", "<p>hi</p>")).await;
    assert_eq!(again["status"], "queued", "{again}");
    let m = facteur.metrics().await;
    for name in ["facteur_opens_total", "facteur_clicks_total"] {
        for machine in ["true", "false"] {
            let labels = format!(r#"campaign="forgery",machine="{machine}""#);
            assert_eq!(metric(&m, name, &labels), 0.0, "{name}{{{labels}}}");
        }
    }
    assert_eq!(
        metric(&m, "facteur_unsubscribes_total", r#"campaign="forgery""#),
        0.0
    );
    let counted: f64 = ["open", "click", "unsubscribe"]
        .iter()
        .map(|e| {
            metric(
                &m,
                "facteur_tracking_rejected_total",
                &format!(r#"endpoint="{e}""#),
            )
        })
        .sum();
    assert_eq!(counted, rejected as f64);

    // The genuine link still works, and a click this soon after delivery
    // (within tracking.scanner_click_window) is a scanner's.
    let r = http
        .get(&l.offer)
        .header(header::USER_AGENT, BROWSER)
        .send();
    assert_eq!(r.await.unwrap().status(), 302);
    let clicks = events_of(&facteur, &id, "clicked").await;
    assert_eq!(clicks.len(), 1);
    assert_eq!(clicks[0]["data"]["machine"], true);
    assert_eq!(
        clicks[0]["data"]["machine_reason"],
        "too_soon_after_delivery"
    );
    let m = facteur.metrics().await;
    let labels = r#"campaign="forgery",machine="true""#;
    assert_eq!(metric(&m, "facteur_clicks_total", labels), 1.0);
    assert_eq!(
        metric(&m, "facteur_unique_clicks_total", r#"campaign="forgery""#),
        0.0,
        "a scanner's click counted as a unique click"
    );
    // The token really was the genuine one.
    let signer = TokenSigner::new(vec![(KID, SECRET.as_bytes().to_vec())], KID).unwrap();
    assert_eq!(signer.verify(&click).unwrap().kind, TokenKind::Click);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_mail_is_neither_tracked_nor_unsubscribable_and_dkim_signs_the_headers() {
    let sink = Sink::start(lo(1), 0);
    let dir = tempfile::Builder::new()
        .prefix("facteur-tracking-")
        .tempdir()
        .expect("tempdir");
    let key = common::mail::DkimKey::ed25519(dir.path());
    let config =
        tracking_support::config(&sink, "0s").dkim_ed25519("brand.test", &key.private_key_file);
    let facteur = Facteur::start_in(dir, config).await;

    let mut receipt = marketing("cyd@example.test", "x", &html(SHOP));
    receipt["category"] = json!("transactional");
    receipt["campaign"] = serde_json::Value::Null;
    let (_, m) = send_and_receive(&facteur, &sink, &receipt).await;
    assert!(m.header("List-Unsubscribe").is_none());
    assert!(m.header("List-Unsubscribe-Post").is_none());
    let html = m.html().unwrap();
    assert!(html.contains("https://shop.test/offer"), "{html}");
    assert!(!html.contains("/t/c/") && !html.contains("/t/o/"), "{html}");

    // A newsletter (not tracked unless asked, but unsubscribable), signed:
    // both List-Unsubscribe headers are in h= (RFC 8058 §4).
    let mut news = marketing("dee@example.test", "news", "<p>news</p>");
    news["category"] = json!("newsletter");
    let (_, m) = send_and_receive(&facteur, &sink, &news).await;
    assert!(m.header("List-Unsubscribe").is_some());
    let sig = m.header("DKIM-Signature").expect("DKIM-Signature");
    let h = sig
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("h="))
        .expect("h= tag")
        .to_ascii_lowercase();
    let signed: Vec<&str> = h.split(':').map(str::trim).collect();
    for name in ["list-unsubscribe", "list-unsubscribe-post"] {
        assert!(signed.contains(&name), "{name} not in h={h}");
    }
    if common::python_has("dkim") && common::python_has("nacl") {
        common::dkim_verify(&m.raw, "s1._domainkey.brand.test", &key.txt).unwrap();
    }
}
