//! [`Tracker`]: what tracking adds to each outgoing message.
//!
//! For a message whose template has tracking on, every `http(s)` link of the
//! HTML part becomes `{api.public_url}/t/c/TOKEN` (the original URL signed
//! into the token), the open pixel `{api.public_url}/t/o/TOKEN` goes at the
//! end of the body, and with `tracking.rewrite_text` the bare URLs of the
//! text part are rewritten too. Every message that is not transactional gets
//! the unsubscribe URLs of its `List-Unsubscribe` header:
//! `{api.public_url}/u/TOKEN` and `mailto:unsubscribe+ID@{bounce_domain}`.
//!
//! Compose calls it through [`Decorate`] and [`LinkTracker`]; nothing here
//! does I/O.

use std::sync::Arc;

use crate::compose::{Decorate, Extras, LinkTracker};
use crate::config::Config;
use crate::spool::{MessageRecord, Template};
use crate::tracking::{
    rewrite_html, rewrite_text, RewriteOptions, TokenKind, TokenSigner, TrackingToken,
};

/// Decorates outgoing messages with tracked links, the open pixel and the
/// unsubscribe URLs.
pub struct Tracker {
    signer: Arc<TokenSigner>,
    /// `api.public_url` without a trailing `/`.
    base: String,
    bounce_domain: String,
    rewrite_text: bool,
    /// Links starting with `{base}/u/` are never wrapped in a redirect.
    opts: RewriteOptions,
}

impl Tracker {
    /// A tracker signing with `signer` (the one the endpoints verify with).
    pub fn new(cfg: &Config, signer: Arc<TokenSigner>) -> Tracker {
        let base = cfg.api.public_url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            tracing::warn!(
                public_url = %base,
                "api.public_url is not https: mailbox providers offer one-click unsubscribe (RFC 8058) for https URLs only"
            );
        }
        Tracker {
            signer,
            opts: RewriteOptions {
                unsubscribe_base: Some(format!("{base}/u/")),
            },
            base,
            bounce_domain: cfg.delivery.bounce_domain.clone(),
            rewrite_text: cfg.tracking.rewrite_text,
        }
    }

    /// The tracking URL `{base}/{path}/TOKEN` of `kind` for `rec`, or `None`
    /// when the token would be too long (a huge URL: left untracked).
    fn url(
        &self,
        path: &str,
        kind: TokenKind,
        rec: &MessageRecord,
        url: Option<&str>,
    ) -> Option<String> {
        let token = TrackingToken {
            kind,
            message_id: rec.id.clone(),
            recipient: rec.email.clone(),
            url: url.map(str::to_string),
        };
        match self.signer.sign(&token) {
            Ok(t) => Some(format!("{}/{path}/{t}", self.base)),
            Err(e) => {
                tracing::debug!(id = %rec.id, error = %e, "link left untracked");
                None
            }
        }
    }

    /// The click URL for a link of `rec`.
    pub fn click_url(&self, rec: &MessageRecord, original: &str) -> Option<String> {
        self.url("t/c", TokenKind::Click, rec, Some(original))
    }

    /// The open pixel's URL for `rec`.
    pub fn open_url(&self, rec: &MessageRecord) -> Option<String> {
        self.url("t/o", TokenKind::Open, rec, None)
    }

    /// The `List-Unsubscribe` URLs of `rec`: the HTTPS page (which also
    /// takes the RFC 8058 one-click POST) and the mailto on the bounce
    /// domain.
    pub fn unsubscribe_urls(&self, rec: &MessageRecord) -> Option<(String, String)> {
        let https = self.url("u", TokenKind::Unsubscribe, rec, None)?;
        let mailto = format!("mailto:unsubscribe+{}@{}", rec.id, self.bounce_domain);
        Some((https, mailto))
    }
}

impl LinkTracker for Tracker {
    fn rewrite_html(&self, rec: &MessageRecord, html: &str) -> String {
        let pixel = self.open_url(rec);
        let out = rewrite_html(
            html,
            &self.opts,
            |url| self.click_url(rec, url),
            pixel.as_deref(),
        );
        match out {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(id = %rec.id, error = %e, "HTML part sent untracked");
                html.to_string()
            }
        }
    }

    fn rewrite_text(&self, rec: &MessageRecord, text: &str) -> String {
        if !self.rewrite_text {
            return text.to_string();
        }
        rewrite_text(text, &self.opts, |url| self.click_url(rec, url))
    }
}

impl Decorate for Tracker {
    fn extras<'a>(&'a self, rec: &MessageRecord, t: &Template) -> Extras<'a> {
        Extras {
            unsubscribe: if t.is_transactional() {
                None
            } else {
                self.unsubscribe_urls(rec)
            },
            tracker: t.track.then_some(self as &dyn LinkTracker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Mailbox, Priority, State};

    fn tracker(rewrite_text: bool) -> (Tracker, Arc<TokenSigner>) {
        let mut cfg = Config::default();
        cfg.api.public_url = "https://t.example.net/".into();
        cfg.delivery.bounce_domain = "bounces.example.net".into();
        cfg.tracking.rewrite_text = rewrite_text;
        let signer =
            Arc::new(TokenSigner::new(vec![(1, b"0123456789abcdef0123".to_vec())], 1).unwrap());
        (Tracker::new(&cfg, signer.clone()), signer)
    }

    fn rec() -> MessageRecord {
        MessageRecord {
            id: "m1".into(),
            batch: "b1".into(),
            email: "ann@example.com".into(),
            name: None,
            vars: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            domain: "example.com".into(),
            category: "marketing".into(),
            campaign: None,
            priority: Priority::Normal,
            state: State::Queued,
            attempts: 0,
            created_ms: 0,
            due_ms: 0,
            delivered_ms: None,
            last_reply: None,
            message_id_header: String::new(),
            events: vec![],
            compacted: false,
        }
    }

    fn template(category: &str, track: bool) -> Template {
        Template {
            from: Mailbox {
                email: "news@brand.test".into(),
                name: None,
            },
            reply_to: None,
            subject: "s".into(),
            html: None,
            text: None,
            headers: vec![],
            category: category.into(),
            campaign: None,
            priority: Priority::Normal,
            track,
            created_ms: 0,
            recipients: 1,
        }
    }

    fn token_of(url: &str, prefix: &str) -> String {
        url.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{url} does not start with {prefix}"))
            .to_string()
    }

    #[test]
    fn html_links_are_signed_and_the_pixel_added() {
        let (t, signer) = tracker(false);
        let html = r#"<body><a href="https://shop.test/a?x=1&amp;y=2">a</a><a href="mailto:x@y.test">m</a></body>"#;
        let out = t.rewrite_html(&rec(), html);
        let doc = scraper::Html::parse_document(&out);
        let a = scraper::Selector::parse("a").unwrap();
        let hrefs: Vec<&str> = doc
            .select(&a)
            .filter_map(|e| e.value().attr("href"))
            .collect();
        let click = signer
            .verify(&token_of(hrefs[0], "https://t.example.net/t/c/"))
            .unwrap();
        assert_eq!(click.kind, TokenKind::Click);
        assert_eq!(click.url.as_deref(), Some("https://shop.test/a?x=1&y=2"));
        assert_eq!(click.message_id, "m1");
        assert_eq!(hrefs[1], "mailto:x@y.test");
        let img = scraper::Selector::parse("img").unwrap();
        let src = doc
            .select(&img)
            .next()
            .unwrap()
            .value()
            .attr("src")
            .unwrap();
        let open = signer
            .verify(&token_of(src, "https://t.example.net/t/o/"))
            .unwrap();
        assert_eq!(
            (open.kind, open.recipient.as_str()),
            (TokenKind::Open, "ann@example.com")
        );
    }

    #[test]
    fn the_unsubscribe_link_is_left_alone() {
        let (t, _) = tracker(false);
        let (https, _) = t.unsubscribe_urls(&rec()).unwrap();
        let html = format!(r#"<a href="{https}">stop</a>"#);
        assert!(t
            .rewrite_html(&rec(), &html)
            .contains(&format!(r#"href="{https}""#)));
    }

    #[test]
    fn text_links_only_when_configured() {
        let text = "See https://shop.test/a now.";
        let (off, _) = tracker(false);
        assert_eq!(off.rewrite_text(&rec(), text), text);
        let (on, _) = tracker(true);
        let out = on.rewrite_text(&rec(), text);
        assert!(
            out.starts_with("See https://t.example.net/t/c/") && out.ends_with(" now."),
            "{out}"
        );
    }

    #[test]
    fn extras_follow_category_and_track_flag() {
        let (t, signer) = tracker(false);
        let e = t.extras(&rec(), &template("marketing", true));
        assert!(e.tracker.is_some());
        let (https, mailto) = e.unsubscribe.unwrap();
        assert_eq!(mailto, "mailto:unsubscribe+m1@bounces.example.net");
        let u = signer
            .verify(&token_of(&https, "https://t.example.net/u/"))
            .unwrap();
        assert_eq!(u.kind, TokenKind::Unsubscribe);
        let e = t.extras(&rec(), &template("transactional", false));
        assert!(e.tracker.is_none() && e.unsubscribe.is_none());
        let e = t.extras(&rec(), &template("newsletter", false));
        assert!(e.tracker.is_none() && e.unsubscribe.is_some());
    }

    #[test]
    fn an_overlong_url_stays_untracked() {
        let (t, _) = tracker(false);
        let long = format!("https://shop.test/{}", "a".repeat(5000));
        let html = format!(r#"<a href="{long}">x</a>"#);
        assert!(t.rewrite_html(&rec(), &html).contains(&long));
    }
}
