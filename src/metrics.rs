//! The Prometheus registry behind `/metrics`.
//!
//! Every metric facteur exports is created here, with a help text, the
//! `facteur_` prefix and the Prometheus suffixes (`_total`, `_seconds`,
//! `_bytes`). Labels are bounded: destinations and campaigns are folded into
//! a fixed set by [`LabelFolder`] before they reach a metric.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of the service, registered in one [`Registry`].
///
/// Handles are cheap to clone (they are `Arc`s inside); the struct is shared
/// behind an `Arc` by every part of the service.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `facteur_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// Messages accepted by the API, by category.
    pub accepted: IntCounterVec,
    /// Messages delivered (2xx after DATA).
    pub delivered: IntCounter,
    /// Delivery attempts deferred, by destination group.
    pub deferred: IntCounterVec,
    /// Messages bounced at delivery time (5xx, null MX, NXDOMAIN), by destination group.
    pub bounced: IntCounterVec,
    /// Messages given up after `max_age`.
    pub expired: IntCounter,
    /// Messages refused by policy before sending, by reason.
    pub suppressed: IntCounterVec,
    /// Messages in the spool by state.
    pub queue_depth: IntGaugeVec,
    /// Age of the oldest message waiting for delivery.
    pub queue_oldest_age: IntGauge,
    /// Duration of one delivery attempt (one message), by outcome.
    pub attempt_duration: HistogramVec,
    /// SMTP replies received, by class (`2xx`, `4xx`, `5xx`, `network`).
    pub smtp_replies: IntCounterVec,
    /// SMTP connections open now, by destination group.
    pub smtp_connections: IntGaugeVec,
    /// Destinations currently slowed down after a 421 or a "slow down" reply.
    pub throttled_destinations: IntGauge,
    /// HTTP requests by route template, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request duration by route template.
    pub http_duration: HistogramVec,
    /// Requests refused by the API, by reason.
    pub api_rejections: IntCounterVec,
    /// Size of the spool on disk.
    pub spool_size: IntGauge,
    /// Duration of one group-commit flush of the spool.
    pub spool_flush: Histogram,
    /// DNS lookups by result (`ok`, `nxdomain`, `nullmx`, `servfail`, `timeout`, `cached`).
    pub dns_lookups: IntCounterVec,
    /// Webhook deliveries by result (`ok`, `retry`, `dropped`).
    pub webhook_deliveries: IntCounterVec,
    /// Inbound messages by kind (`bounce`, `feedback`, `autoreply`, `human`).
    pub inbound: IntCounterVec,
    /// Bounces read from inbound mail, by kind (`hard`, `soft`) and reason.
    pub bounces: IntCounterVec,
    /// Complaints (ARF feedback reports).
    pub complaints: IntCounter,
    /// Acknowledgements sent to customer queries.
    pub acknowledgements: IntCounterVec,
    /// Opens by campaign and machine (`true`/`false`).
    pub opens: IntCounterVec,
    /// Unique opens (first per message) by campaign.
    pub unique_opens: IntCounterVec,
    /// Clicks by campaign and machine.
    pub clicks: IntCounterVec,
    /// Unique clicks (first per message) by campaign.
    pub unique_clicks: IntCounterVec,
    /// Unsubscribes by campaign.
    pub unsubscribes: IntCounterVec,
    /// Tracking requests refused (forged or malformed token), by endpoint.
    pub tracking_rejected: IntCounterVec,
    /// Campaign label folding.
    pub campaigns: LabelFolder,
    /// Destination label folding.
    pub destinations: LabelFolder,
    /// Every registered family, for [`Metrics::exported_names`]:
    /// `Registry::gather` leaves out labelled families with no series yet.
    families: Families,
}

type Families = Vec<Box<dyn Collector>>;

/// Registers `c` and keeps a handle on it in `f`.
fn register<C: Collector + Clone + 'static>(r: &Registry, f: &mut Families, c: C) -> C {
    r.register(Box::new(c.clone())).expect("unique metric");
    f.push(Box::new(c.clone()));
    c
}

fn counter_vec(
    r: &Registry,
    f: &mut Families,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    register(
        r,
        f,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn counter(r: &Registry, f: &mut Families, name: &str, help: &str) -> IntCounter {
    register(r, f, IntCounter::new(name, help).expect("valid metric"))
}

fn gauge_vec(
    r: &Registry,
    f: &mut Families,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntGaugeVec {
    register(
        r,
        f,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(r: &Registry, f: &mut Families, name: &str, help: &str) -> IntGauge {
    register(r, f, IntGauge::new(name, help).expect("valid metric"))
}

fn histogram_vec(
    r: &Registry,
    f: &mut Families,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    register(r, f, h)
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

impl Metrics {
    /// Creates and registers every metric. `max_campaigns` and
    /// `max_destinations` bound the label sets that come from user data.
    pub fn new(max_campaigns: usize, max_destinations: usize) -> Self {
        let r = Registry::new();
        let f = &mut Families::new();
        let lat = LATENCY_BUCKETS.to_vec();
        let m = Metrics {
            build_info: gauge_vec(
                &r,
                f,
                "facteur_build_info",
                "Build information; always 1.",
                &["version"],
            ),
            accepted: counter_vec(
                &r,
                f,
                "facteur_messages_accepted_total",
                "Messages accepted by the API and written to the spool.",
                &["category"],
            ),
            delivered: counter(
                &r,
                f,
                "facteur_messages_delivered_total",
                "Messages delivered: the remote answered 2xx after DATA.",
            ),
            deferred: counter_vec(
                &r,
                f,
                "facteur_messages_deferred_total",
                "Delivery attempts deferred (4xx or network error), by destination group.",
                &["destination"],
            ),
            bounced: counter_vec(
                &r,
                f,
                "facteur_messages_bounced_total",
                "Messages bounced at delivery (5xx, null MX, NXDOMAIN), by destination group.",
                &["destination"],
            ),
            expired: counter(
                &r,
                f,
                "facteur_messages_expired_total",
                "Messages given up after max_age without delivery.",
            ),
            suppressed: counter_vec(
                &r,
                f,
                "facteur_messages_suppressed_total",
                "Messages not sent because policy said never, by reason.",
                &["reason"],
            ),
            queue_depth: gauge_vec(
                &r,
                f,
                "facteur_queue_depth",
                "Messages in the spool by state.",
                &["state"],
            ),
            queue_oldest_age: gauge(
                &r,
                f,
                "facteur_queue_oldest_age_seconds",
                "Age of the oldest message waiting for delivery.",
            ),
            attempt_duration: histogram_vec(
                &r,
                f,
                "facteur_delivery_attempt_duration_seconds",
                "Duration of one delivery attempt, by outcome.",
                &["outcome"],
                lat.clone(),
            ),
            smtp_replies: counter_vec(
                &r,
                f,
                "facteur_smtp_replies_total",
                "SMTP replies to delivery attempts, by class.",
                &["class"],
            ),
            smtp_connections: gauge_vec(
                &r,
                f,
                "facteur_smtp_connections_open",
                "SMTP connections open now, by destination group.",
                &["destination"],
            ),
            throttled_destinations: gauge(
                &r,
                f,
                "facteur_throttled_destinations",
                "Destinations slowed down after a 421 or a slow-down reply.",
            ),
            http_requests: counter_vec(
                &r,
                f,
                "facteur_http_requests_total",
                "HTTP requests by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                &r,
                f,
                "facteur_http_request_duration_seconds",
                "HTTP request duration by route template.",
                &["route"],
                lat.clone(),
            ),
            api_rejections: counter_vec(
                &r,
                f,
                "facteur_api_rejections_total",
                "API requests refused, by reason.",
                &["reason"],
            ),
            spool_size: gauge(
                &r,
                f,
                "facteur_spool_size_bytes",
                "Size of the spool on disk.",
            ),
            spool_flush: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "facteur_spool_flush_duration_seconds",
                        "Duration of one group-commit flush of the spool.",
                    )
                    .buckets(lat),
                )
                .expect("valid metric");
                register(&r, f, h)
            },
            dns_lookups: counter_vec(
                &r,
                f,
                "facteur_dns_lookups_total",
                "DNS lookups for delivery, by result.",
                &["result"],
            ),
            webhook_deliveries: counter_vec(
                &r,
                f,
                "facteur_webhook_deliveries_total",
                "Webhook deliveries, by result.",
                &["result"],
            ),
            inbound: counter_vec(
                &r,
                f,
                "facteur_inbound_messages_total",
                "Inbound messages, by kind.",
                &["kind"],
            ),
            bounces: counter_vec(
                &r,
                f,
                "facteur_bounces_total",
                "Bounces read from inbound mail, by kind (hard, soft) and reason.",
                &["kind", "reason"],
            ),
            complaints: counter(
                &r,
                f,
                "facteur_complaints_total",
                "Complaints (ARF feedback reports) received.",
            ),
            acknowledgements: counter_vec(
                &r,
                f,
                "facteur_acknowledgements_total",
                "Acknowledgements of customer queries, by result (sent, skipped, failed).",
                &["result"],
            ),
            opens: counter_vec(
                &r,
                f,
                "facteur_opens_total",
                "Opens by campaign and machine.",
                &["campaign", "machine"],
            ),
            unique_opens: counter_vec(
                &r,
                f,
                "facteur_unique_opens_total",
                "First open of each message, by campaign.",
                &["campaign"],
            ),
            clicks: counter_vec(
                &r,
                f,
                "facteur_clicks_total",
                "Clicks by campaign and machine.",
                &["campaign", "machine"],
            ),
            unique_clicks: counter_vec(
                &r,
                f,
                "facteur_unique_clicks_total",
                "First click of each message, by campaign.",
                &["campaign"],
            ),
            unsubscribes: counter_vec(
                &r,
                f,
                "facteur_unsubscribes_total",
                "Unsubscribes by campaign.",
                &["campaign"],
            ),
            tracking_rejected: counter_vec(
                &r,
                f,
                "facteur_tracking_rejected_total",
                "Tracking requests refused (forged or malformed token), by endpoint.",
                &["endpoint"],
            ),
            campaigns: LabelFolder::new(max_campaigns),
            destinations: LabelFolder::new(max_destinations),
            families: std::mem::take(f),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Pre-create the children of the small fixed label sets so that every
        // series exists (at 0) from the first scrape.
        for s in [
            "queued",
            "deferred",
            "sending",
            "delivered",
            "bounced",
            "expired",
            "suppressed",
        ] {
            m.queue_depth.with_label_values(&[s]);
        }
        for c in ["2xx", "4xx", "5xx", "network"] {
            m.smtp_replies.with_label_values(&[c]);
        }
        for k in ["bounce", "feedback", "autoreply", "human"] {
            m.inbound.with_label_values(&[k]);
        }
        for r in ["ok", "retry", "dropped"] {
            m.webhook_deliveries.with_label_values(&[r]);
        }
        for r in ["ok", "nxdomain", "nullmx", "servfail", "timeout", "cached"] {
            m.dns_lookups.with_label_values(&[r]);
        }
        m
    }

    /// The text exposition of every metric, for `/metrics`.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Every metric family registered, with its type and label names,
    /// labelled families that have no series yet included (the README's
    /// metrics table is checked against this).
    pub fn families(&self) -> Vec<Family> {
        let mut families = Vec::with_capacity(self.families.len());
        for c in &self.families {
            let labels = c
                .desc()
                .first()
                .map(|d| d.variable_labels.clone())
                .unwrap_or_default();
            for mf in c.collect() {
                let kind = match mf.get_field_type() {
                    MetricType::COUNTER => "counter",
                    MetricType::GAUGE => "gauge",
                    MetricType::HISTOGRAM => "histogram",
                    MetricType::SUMMARY => "summary",
                    MetricType::UNTYPED => "untyped",
                };
                families.push(Family {
                    name: mf.name().to_string(),
                    kind,
                    labels: labels.clone(),
                    help: mf.help().to_string(),
                });
            }
        }
        families
    }

    /// The names of every metric family registered, with the suffixes that
    /// Prometheus adds to histograms (`_bucket`, `_sum`, `_count`), labelled
    /// families that have no series yet included.
    pub fn exported_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for f in self.families() {
            if f.kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{}{s}", f.name));
                }
            }
            names.push(f.name);
        }
        names
    }
}

/// One metric family as `/metrics` exports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Name, `facteur_` prefixed.
    pub name: String,
    /// Prometheus type: `counter`, `gauge`, `histogram`.
    pub kind: &'static str,
    /// Label names, in declaration order.
    pub labels: Vec<String>,
    /// Help text.
    pub help: String,
}

/// Folds an unbounded label value (campaign, destination domain) into a set
/// of at most `max` values plus `other`: the first `max` distinct values seen
/// keep their name, later ones become `other`.
pub struct LabelFolder {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelFolder {
    /// A folder that keeps at most `max` distinct values.
    pub fn new(max: usize) -> Self {
        LabelFolder {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The label to use for `value`: itself while the set has room, else `other`.
    pub fn fold(&self, value: &str) -> String {
        if value.is_empty() {
            return "none".to_string();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(value) {
            return value.to_string();
        }
        if seen.len() < self.max && value.len() <= 64 {
            seen.insert(value.to_string());
            return value.to_string();
        }
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_bounds_label_values() {
        let f = LabelFolder::new(2);
        assert_eq!(f.fold("a"), "a");
        assert_eq!(f.fold("b"), "b");
        assert_eq!(f.fold("c"), "other");
        assert_eq!(f.fold("a"), "a");
    }

    #[test]
    fn names_follow_conventions() {
        let m = Metrics::new(10, 10);
        let text = m.encode();
        assert!(text.contains("facteur_build_info"));
        let names = m.exported_names();
        for name in &names {
            assert!(name.starts_with("facteur_"), "{name}");
        }
        // Labelled families are listed before their first series exists.
        assert!(names.iter().any(|n| n == "facteur_opens_total"));
        assert!(names
            .iter()
            .any(|n| n == "facteur_http_request_duration_seconds_bucket"));
    }
}
