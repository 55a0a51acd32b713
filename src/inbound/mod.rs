//! Mail that comes back: bounces, complaints, auto-replies and customer
//! queries.
//!
//! # Layout
//!
//! - [`classify`]: what a message is: bounce, feedback, auto-reply, human.
//! - [`cli`]: `facteur classify FILE...`, the classifier for people.
//! - [`listener`]: facteur's own SMTP listener (`inbound.listen`), for the
//!   bounce domain and the reply addresses only.
//! - [`api`]: `POST /v1/inbound` with a raw RFC 5322 message.
//! - [`pipeline`]: what both ways in call: classify → attribute → effects →
//!   route, answering with an [`pipeline::Outcome`].
//! - [`message`]: the inbound message read once for routing and answers.
//! - [`attribution`]: which message a report is about.
//! - [`effects`]: events, suppressions and metrics of bounces, complaints
//!   and auto-replies.
//! - [`routing`]: rules for customer queries; webhook, forward,
//!   acknowledgement.
//! - [`loops`]: RFC 3834: when facteur never answers.
//!
//! One [`Inbound`] is built at start and shared by both ways in.

pub mod api;
pub mod attribution;
pub mod classify;
pub mod cli;
pub mod effects;
pub mod listener;
pub mod loops;
pub mod message;
pub mod pipeline;
pub mod routing;

use std::sync::Arc;

use crate::api::App;

/// What the pipeline needs, built once at start.
pub struct Inbound {
    /// The service: spool, metrics, events, and the sending path for
    /// acknowledgements and forwards.
    pub app: App,
    /// The routing rules, compiled.
    routes: routing::Routes,
    /// Posts queries to route webhooks.
    http: reqwest::Client,
    /// Where a route webhook post that failed is queued for retry.
    route_retries: Arc<crate::webhooks::RouteRetries>,
    /// Serialises acknowledgement decisions, so that the per-sender period
    /// check and its marker cannot interleave. A tokio mutex: it is held
    /// while the acknowledgement is queued (an await).
    ack_lock: tokio::sync::Mutex<()>,
}

/// Whether the listener takes mail for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// The bounce domain or a reply address.
    Served,
    /// A domain facteur serves, but not this address.
    UnknownAddress,
    /// Another domain: facteur is not a relay.
    Foreign,
}

impl Inbound {
    /// Compiles the routing rules and builds the webhook client.
    pub fn new(
        app: App,
        route_retries: Arc<crate::webhooks::RouteRetries>,
    ) -> anyhow::Result<Arc<Inbound>> {
        let routes = routing::Routes::compile(&app.cfg.inbound)
            .map_err(|e| anyhow::anyhow!("inbound.routes: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(app.cfg.webhooks.timeout.0)
            .build()
            .map_err(|e| anyhow::anyhow!("inbound webhook client: {e}"))?;
        Ok(Arc::new(Inbound {
            app,
            routes,
            http,
            route_retries,
            ack_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Whether the listener takes mail for `rcpt`.
    pub fn accepts(&self, rcpt: &str) -> Acceptance {
        let cfg = &self.app.cfg;
        let rcpt = rcpt.trim();
        let Some((local, domain)) = rcpt.rsplit_once('@') else {
            return Acceptance::UnknownAddress;
        };
        if local.is_empty() {
            return Acceptance::UnknownAddress;
        }
        if domain.eq_ignore_ascii_case(&cfg.delivery.bounce_domain)
            || cfg.inbound.is_reply_address(rcpt)
        {
            return Acceptance::Served;
        }
        let ours = cfg.inbound.reply_addresses.iter().any(|a| {
            a.rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
        });
        if ours {
            Acceptance::UnknownAddress
        } else {
            Acceptance::Foreign
        }
    }

    /// One of facteur's own addresses: a reply address, the
    /// acknowledgement sender, or any address of the bounce domain.
    pub fn is_own_address(&self, address: &str) -> bool {
        let cfg = &self.app.cfg;
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        cfg.inbound.is_reply_address(address)
            || (!cfg.inbound.ack_from.is_empty()
                && address.eq_ignore_ascii_case(cfg.inbound.ack_from.trim()))
            || address
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&cfg.delivery.bounce_domain))
    }
}
