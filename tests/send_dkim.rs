//! DKIM with an RSA key: dkimpy verifies the signature, and on marketing
//! mail both List-Unsubscribe headers are signed (RFC 8058 §4).

mod common;

use std::time::Duration;

use common::mail::DkimKey;
use common::{lo, python_has, require, DnsServer, Facteur, FacteurConfig, Sink};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signatures_verify_and_cover_list_unsubscribe() {
    if !require("dkimpy", python_has("dkim")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = DkimKey::rsa(dir.path());
    let sink = Sink::start(lo(2), 0);
    let dns = DnsServer::start();
    dns.add_mail_host("rsa.test", lo(2));
    let config = FacteurConfig::typical(dns.addr(), sink.port())
        .set("dkim.domain", "brand.test")
        .set("dkim.selector", "s1")
        .set("dkim.algorithm", "rsa")
        .set(
            "dkim.private_key_file",
            key.private_key_file.display().to_string(),
        );
    let facteur = Facteur::start_in(dir, config).await;
    facteur
        .send(&json!({
            "from": {"email": "news@brand.test", "name": "Brand"},
            "subject": "Spring for {{ name }}",
            "html": "<p>Hello {{ name }}, <a href=\"https://brand.test/spring\">see</a></p>",
            "text": "Hello {{ name }}",
            "category": "marketing",
            "recipients": [{"email": "ann@rsa.test", "vars": {"name": "Ann"}}],
        }))
        .await;
    let got = sink.wait_messages(1, Duration::from_secs(60)).await;
    let raw = &got[0].raw;
    if let Err(e) = common::mail::dkim_verify(raw, "s1._domainkey.brand.test", &key.txt) {
        panic!("{e}\n{}", String::from_utf8_lossy(raw));
    }
    let sig = got[0].header("DKIM-Signature").expect("signed");
    let compact: String = sig
        .split_whitespace()
        .collect::<String>()
        .to_ascii_lowercase();
    assert!(compact.contains("a=rsa-sha256"), "{sig}");
    let h = compact
        .split(';')
        .find_map(|t| t.trim().strip_prefix("h="))
        .expect("h= tag")
        .to_string();
    let signed: Vec<&str> = h.split(':').collect();
    for name in [
        "from",
        "subject",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(signed.contains(&name), "{name} not in h={h}");
    }
}
