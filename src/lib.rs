//! facteur: an email delivery and tracking service for e-CRM.
//!
//! # Layout
//!
//! - [`config`]: typed configuration, validated at start (`config/facteur.toml`,
//!   `FACTEUR_<SECTION>_<KEY>` environment overrides).
//! - [`api`]: the REST API (axum on hyper): messages, inbound, health, metrics.
//! - [`compose`]: building the MIME message for one recipient from templates.
//! - [`tracking`]: signed tokens, link rewriting, open pixel, click redirect,
//!   unsubscribe, machine detection.
//! - [`policy`]: suppression, dedup, priorities: send now, later or never.
//! - [`spool`]: the sled database; the only module that knows sled.
//! - [`delivery`]: scheduler, per-destination queues, throttles, MX
//!   resolution, SMTP sessions, retries.
//! - [`inbound`]: the SMTP listener and classifier for mail that comes back,
//!   routing of customer queries, acknowledgements without loops.
//! - [`events`]: one event type for everything that happens to a message.
//! - [`webhooks`]: durable, signed delivery of events to HTTP endpoints.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`server`]: wiring of all of the above into one running service.

pub mod api;
pub mod compose;
pub mod config;
pub mod delivery;
pub mod events;
pub mod inbound;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod spool;
pub mod tracking;
pub mod webhooks;
