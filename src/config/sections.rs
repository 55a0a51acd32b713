//! The sections of the configuration file, with their defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{de_opt_addr, de_opt_rate, de_opt_string, ConfigErrors, HumanDuration, Rate};

fn d(text: &str) -> HumanDuration {
    HumanDuration::parse(text).expect("valid default duration")
}

/// `[api]`: the REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the API and tracking endpoints listen on.
    pub listen: SocketAddr,
    /// Bearer keys; none means the API is open, on loopback only.
    pub keys: Vec<String>,
    /// Public base URL of tracking and unsubscribe links.
    pub public_url: String,
    /// Most recipients in one request.
    pub max_recipients: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8025".parse().expect("valid"),
            keys: Vec::new(),
            public_url: "http://127.0.0.1:8025".into(),
            max_recipients: 1000,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// `[spool]`: the sled database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// How long finished messages keep their full record before compaction.
    pub retention: HumanDuration,
    /// sled's page cache, in megabytes.
    pub cache_mb: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            data_dir: super::default_data_dir(),
            retention: d("7d"),
            cache_mb: 256,
        }
    }
}

/// TLS policy towards a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS when offered; plain text otherwise or when it fails.
    #[default]
    Opportunistic,
    /// STARTTLS must succeed (certificate checked), or the attempt is deferred.
    Required,
    /// Never STARTTLS.
    Disabled,
}

/// Throttle of one destination: connections, messages per connection, rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSpec {
    /// Connections open at once to the destination.
    pub max_connections: usize,
    /// Messages sent over one connection before it is closed.
    pub messages_per_connection: usize,
    /// Messages per period (`"3000/h"`); empty means unlimited.
    #[serde(deserialize_with = "de_opt_rate")]
    pub rate: Option<Rate>,
    /// TLS policy; when absent the delivery default holds.
    pub tls: Option<TlsPolicy>,
}

impl Default for ThrottleSpec {
    fn default() -> Self {
        ThrottleSpec {
            max_connections: 10,
            messages_per_connection: 100,
            rate: None,
            tls: None,
        }
    }
}

/// `[delivery]`: SMTP delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// DNS server `ip:port`; empty means the system's resolver.
    #[serde(deserialize_with = "de_opt_addr")]
    pub resolver: Option<SocketAddr>,
    /// Port used on MX hosts.
    pub smtp_port: u16,
    /// Send everything to this `host:port` (development).
    #[serde(deserialize_with = "de_opt_string")]
    pub relay: Option<String>,
    /// Name given in EHLO.
    pub helo_name: String,
    /// Domain of the VERP envelope sender `bounces+TOKEN@bounce_domain`.
    pub bounce_domain: String,
    /// Delays between attempts; the last repeats.
    pub retry_schedule: Vec<HumanDuration>,
    /// Random spread of each delay, as a fraction (0.1 = ±10 %).
    pub retry_jitter: f64,
    /// Age after which a message that could not be delivered expires.
    pub max_age: HumanDuration,
    /// TCP connect timeout.
    pub connect_timeout: HumanDuration,
    /// Timeout of each SMTP command (and of the data transfer).
    pub command_timeout: HumanDuration,
    /// Default TLS policy.
    pub tls: TlsPolicy,
    /// Time given to transactions in flight at shutdown.
    pub shutdown_deadline: HumanDuration,
    /// How long a destination stays slowed down after a 421 or a slow-down reply.
    pub slowdown_period: HumanDuration,
    /// Throttle for destinations without their own.
    pub default_throttle: ThrottleSpec,
    /// Throttles by domain.
    pub domains: BTreeMap<String, ThrottleSpec>,
    /// Most messages held in memory ready for delivery.
    pub max_ready: usize,
    /// Most SMTP connections open at once, all destinations together.
    pub max_connections_total: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            resolver: None,
            smtp_port: 25,
            relay: None,
            helo_name: "localhost".into(),
            bounce_domain: "bounces.localhost".into(),
            retry_schedule: ["1m", "5m", "30m", "2h", "6h"]
                .iter()
                .map(|s| d(s))
                .collect(),
            retry_jitter: 0.1,
            max_age: d("3d"),
            connect_timeout: d("10s"),
            command_timeout: d("60s"),
            tls: TlsPolicy::Opportunistic,
            shutdown_deadline: d("25s"),
            slowdown_period: d("5m"),
            default_throttle: ThrottleSpec::default(),
            domains: BTreeMap::new(),
            max_ready: 100_000,
            max_connections_total: 500,
        }
    }
}

impl DeliveryConfig {
    /// The throttle of a domain: its own, or the default.
    pub fn throttle_for(&self, domain: &str) -> &ThrottleSpec {
        self.domains.get(domain).unwrap_or(&self.default_throttle)
    }

    /// The TLS policy of a domain.
    pub fn tls_for(&self, domain: &str) -> TlsPolicy {
        self.throttle_for(domain).tls.unwrap_or(self.tls)
    }

    /// The configured delay before attempt `attempt + 1` (without jitter).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) as usize - 1).min(self.retry_schedule.len().saturating_sub(1));
        self.retry_schedule
            .get(i)
            .map(|h| h.0)
            .unwrap_or(Duration::from_secs(60))
    }
}

/// DKIM algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    /// Ed25519-SHA256 (RFC 8463).
    #[default]
    Ed25519,
    /// RSA-SHA256.
    Rsa,
}

/// `[dkim]`: signing of outgoing mail.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Signing domain (`d=`); empty means no signing.
    pub domain: String,
    /// Selector (`s=`).
    pub selector: String,
    /// Key algorithm.
    pub algorithm: DkimAlgorithm,
    /// PEM file of the private key.
    pub private_key_file: PathBuf,
}

/// Scope of an unsubscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnsubscribeScope {
    /// Only the category of the message.
    Category,
    /// Every category that is not transactional.
    #[default]
    Marketing,
}

/// `[tracking]`: opens, clicks, unsubscribe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// Signing keys `KID:SECRET`; the first signs, all verify. Empty: a
    /// random key per start (tokens then die with the process).
    pub keys: Vec<String>,
    /// Track opens and clicks by default for these categories.
    pub track_categories: Vec<String>,
    /// Rewrite links in the text part too.
    pub rewrite_text: bool,
    /// What an unsubscribe covers.
    pub unsubscribe_scope: UnsubscribeScope,
    /// A click sooner than this after delivery is a link scanner's.
    pub scanner_click_window: HumanDuration,
    /// Campaign label values kept in metrics before folding into `other`.
    pub max_campaigns: usize,
    /// Answer an open or click only once its event is flushed to disk
    /// (group commit); otherwise sled flushes it within 50 ms.
    pub flush_events: bool,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            keys: Vec::new(),
            track_categories: vec!["marketing".into()],
            rewrite_text: false,
            unsubscribe_scope: UnsubscribeScope::Marketing,
            scanner_click_window: d("10s"),
            max_campaigns: 50,
            flush_events: false,
        }
    }
}

/// One routing rule for customer queries.
///
/// Every criterion given must match (a rule without criteria matches
/// everything); regular expressions are case-sensitive unless they start
/// with `(?i)`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Name of the route, for events and logs.
    pub name: String,
    /// Regular expression on the recipient address (any recipient).
    pub recipient: Option<String>,
    /// Regular expression on the sender address.
    pub sender: Option<String>,
    /// Regular expression on the subject.
    pub subject: Option<String>,
    /// Regular expression on the body text.
    pub body: Option<String>,
    /// Any of these words in the subject or body (case-insensitive).
    pub keywords: Vec<String>,
    /// POST the parsed message as JSON here.
    pub webhook: Option<String>,
    /// HMAC-SHA256 secret of the webhook's `X-Facteur-Signature`; empty:
    /// the header is left out.
    pub webhook_secret: String,
    /// Forward the message to this address through the outbound queue.
    pub forward_to: Option<String>,
    /// Priority of the forward and acknowledgement: `high`, `normal`, `low`.
    pub priority: Option<String>,
    /// Acknowledgement subject template; absent means no acknowledgement.
    pub ack_subject: Option<String>,
    /// Acknowledgement text template.
    pub ack_text: Option<String>,
}

/// `[inbound]`: mail that comes back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    /// SMTP listener `ip:port`; empty means none.
    #[serde(deserialize_with = "de_opt_addr")]
    pub listen: Option<SocketAddr>,
    /// Addresses customers write to (besides the bounce domain); `@domain`
    /// serves every address of the domain.
    pub reply_addresses: Vec<String>,
    /// Largest inbound message, in bytes.
    pub max_message_bytes: usize,
    /// SMTP connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Certificate chain (PEM) offered with STARTTLS; empty: no STARTTLS.
    pub tls_cert_file: PathBuf,
    /// Private key (PEM) of `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// A bounce that names only its recipient is attributed to the latest
    /// message sent to that address within this period.
    pub attribution_window: HumanDuration,
    /// At most one acknowledgement per sender in this period.
    pub ack_period: HumanDuration,
    /// Sender of acknowledgements (and of forwards).
    pub ack_from: String,
    /// Routing rules, first match wins.
    pub routes: Vec<RouteConfig>,
    /// The route when no rule matches.
    pub default_route: RouteConfig,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            listen: None,
            reply_addresses: Vec::new(),
            max_message_bytes: 10 * 1024 * 1024,
            max_connections: 100,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            attribution_window: d("30d"),
            ack_period: d("1d"),
            ack_from: String::new(),
            routes: Vec::new(),
            default_route: RouteConfig {
                name: "default".into(),
                ..Default::default()
            },
        }
    }
}

impl InboundConfig {
    /// True when `email` is one of the reply addresses (or in a served
    /// `@domain`).
    pub fn is_reply_address(&self, email: &str) -> bool {
        let email = email.trim().to_ascii_lowercase();
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.reply_addresses.iter().any(|a| {
            let a = a.trim().to_ascii_lowercase();
            match a.strip_prefix('@') {
                Some(d) => d == domain,
                None => a == email,
            }
        })
    }

    /// The sender of facteur's own mail (forwards): `ack_from`, else the
    /// first reply address that is an address, not a domain.
    pub fn own_sender(&self) -> Option<&str> {
        if !self.ack_from.is_empty() {
            return Some(&self.ack_from);
        }
        self.reply_addresses
            .iter()
            .map(String::as_str)
            .find(|a| !a.starts_with('@'))
    }

    pub(super) fn validate(&self, errors: &mut ConfigErrors) {
        if self.max_message_bytes < 1024 {
            errors.push("inbound.max_message_bytes", "must be at least 1024");
        }
        if self.max_connections == 0 {
            errors.push("inbound.max_connections", "must be at least 1");
        }
        let (cert, key) = (&self.tls_cert_file, &self.tls_key_file);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            errors.push(
                "inbound.tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            );
        }
        for (name, path) in [
            ("inbound.tls_cert_file", cert),
            ("inbound.tls_key_file", key),
        ] {
            if !path.as_os_str().is_empty() && !path.is_file() {
                errors.push(name, format!("{} is not a readable file", path.display()));
            }
        }
        for (i, a) in self.reply_addresses.iter().enumerate() {
            let checked = match a.strip_prefix('@') {
                Some(d) => crate::api::address::parse(&format!("x@{d}")),
                None => crate::api::address::parse(a),
            };
            if let Err(e) = checked {
                errors.push(format!("inbound.reply_addresses[{i}]"), e);
            }
        }
        if !self.ack_from.is_empty() {
            if let Err(e) = crate::api::address::parse(&self.ack_from) {
                errors.push("inbound.ack_from", e);
            }
        }
        let all = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("inbound.routes[{i}]"), r));
        let all = all.chain(std::iter::once((
            "inbound.default_route".to_string(),
            &self.default_route,
        )));
        for (key, r) in all {
            self.validate_route(&key, r, errors);
        }
    }

    fn validate_route(&self, key: &str, r: &RouteConfig, errors: &mut ConfigErrors) {
        for (field, re) in [
            ("recipient", &r.recipient),
            ("sender", &r.sender),
            ("subject", &r.subject),
            ("body", &r.body),
        ] {
            if let Some(re) = re {
                if let Err(e) = regex::Regex::new(re) {
                    errors.push(
                        format!("{key}.{field}"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
        }
        if r.keywords.iter().any(|k| k.trim().is_empty()) {
            errors.push(format!("{key}.keywords"), "a keyword is empty");
        }
        if let Some(url) = &r.webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!("{key}.webhook"), "must be an http(s) URL");
            }
        }
        if let Some(to) = &r.forward_to {
            if let Err(e) = crate::api::address::parse(to) {
                errors.push(format!("{key}.forward_to"), e);
            } else if self.is_reply_address(to) {
                errors.push(
                    format!("{key}.forward_to"),
                    "is a reply address: the forward would come back",
                );
            }
        }
        if let Some(p) = &r.priority {
            if !["high", "normal", "low"].contains(&p.as_str()) {
                errors.push(
                    format!("{key}.priority"),
                    format!("'{p}' is not high, normal or low"),
                );
            }
        }
        if r.ack_text.is_some() && r.ack_subject.is_none() {
            errors.push(
                format!("{key}.ack_subject"),
                "required when ack_text is set",
            );
        }
        if let Some(subject) = &r.ack_subject {
            if self.ack_from.is_empty() {
                errors.push(
                    "inbound.ack_from",
                    format!("required: {key} sends acknowledgements"),
                );
            }
            let text = r.ack_text.as_deref().unwrap_or("");
            if let Err(e) = crate::compose::check_templates(subject, None, Some(text)) {
                errors.push(format!("{key}.ack_subject"), e.to_string());
            }
        }
        if r.forward_to.is_some() && self.own_sender().is_none() {
            errors.push(
                "inbound.ack_from",
                format!("required: {key} forwards mail and needs a sender"),
            );
        }
    }
}

/// One webhook endpoint.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookEndpoint {
    /// URL events are POSTed to.
    pub url: String,
    /// Event types sent; empty means all.
    pub events: Vec<String>,
    /// HMAC-SHA256 secret of the signature header.
    pub secret: String,
}

/// `[webhooks]`: events out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The endpoints.
    pub endpoints: Vec<WebhookEndpoint>,
    /// Request timeout.
    pub timeout: HumanDuration,
    /// Attempts before an event is dropped for an endpoint.
    pub max_attempts: u32,
    /// Requests waiting per queue; new ones beyond it are dropped.
    pub max_queue: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            endpoints: Vec::new(),
            timeout: d("10s"),
            max_attempts: 12,
            max_queue: 1_000_000,
        }
    }
}

/// `[policy]`: e-CRM rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Categories besides `transactional` and `marketing`.
    pub categories: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            categories: vec!["newsletter".into(), "notification".into()],
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Text or JSON.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info,facteur=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[cluster]`: shared state across nodes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Redis URL for suppressions and counters shared by several nodes.
    pub redis_url: String,
}
