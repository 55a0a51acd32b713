//! Where mail for a domain goes: MX lookup with hickory-resolver.
//!
//! MX hosts in preference order, each with its addresses; no MX means the
//! domain's own A/AAAA (RFC 5321 §5.1); a null MX (RFC 7505) or NXDOMAIN is
//! permanent; SERVFAIL or a timeout is temporary. Answers are cached until
//! their TTL runs out (hickory caches records too; this cache saves the
//! address lookups of every host as well).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};
use thiserror::Error;

use crate::metrics::Metrics;

/// One host to try, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host name (for TLS and logs).
    pub name: String,
    /// Addresses with the port to connect to.
    pub addrs: Vec<SocketAddr>,
}

/// Why a domain has no usable route.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RouteError {
    /// The domain does not exist, or says it takes no mail: bounce.
    #[error("{0}")]
    Permanent(String),
    /// DNS failed for now: defer.
    #[error("{0}")]
    Temporary(String),
}

/// The hosts of a destination, best first, or why there are none.
pub type Route = Result<Arc<Vec<Host>>, RouteError>;

/// Resolves destinations to hosts.
pub struct MxResolver {
    resolver: TokioResolver,
    port: u16,
    relay: Option<String>,
    cache: Mutex<HashMap<String, (Instant, Route)>>,
    metrics: Arc<Metrics>,
}

/// How long a failure is remembered, so a broken domain is not asked again
/// for every message.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);

impl MxResolver {
    /// A resolver asking `server` (or the system's resolvers), connecting on
    /// `port`; with `relay`, every domain goes to that `host:port`.
    pub fn new(
        server: Option<SocketAddr>,
        port: u16,
        relay: Option<String>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<MxResolver> {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        opts.cache_size = 4096;
        let resolver = match server {
            Some(addr) => {
                let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                let config = ResolverConfig::from_parts(None, vec![], group);
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                    .with_options(opts)
                    .build()
            }
            None => TokioResolver::builder_tokio()?.with_options(opts).build(),
        };
        Ok(MxResolver {
            resolver,
            port,
            relay,
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The hosts for `domain`, best first.
    pub async fn route(&self, domain: &str) -> Result<Arc<Vec<Host>>, RouteError> {
        if let Some(relay) = &self.relay {
            return self.relay_route(relay).await;
        }
        if let Some((until, r)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
        {
            if *until > Instant::now() {
                self.metrics
                    .dns_lookups
                    .with_label_values(&["cached"])
                    .inc();
                return r.clone();
            }
        }
        let (r, ttl) = self.lookup(domain).await;
        let label = match &r {
            Ok(_) => "ok",
            Err(RouteError::Permanent(t)) if t.contains("null MX") => "nullmx",
            Err(RouteError::Permanent(_)) => "nxdomain",
            Err(RouteError::Temporary(t)) if t.contains("timed out") => "timeout",
            Err(RouteError::Temporary(_)) => "servfail",
        };
        self.metrics.dns_lookups.with_label_values(&[label]).inc();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(domain.to_string(), (Instant::now() + ttl, r.clone()));
        r
    }

    async fn relay_route(&self, relay: &str) -> Result<Arc<Vec<Host>>, RouteError> {
        let (host, port) = relay.rsplit_once(':').unwrap_or((relay, "25"));
        let port: u16 = port.parse().unwrap_or(25);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self.addresses(host, port).await?,
        };
        Ok(Arc::new(vec![Host {
            name: host.to_string(),
            addrs,
        }]))
    }

    async fn lookup(&self, domain: &str) -> (Result<Arc<Vec<Host>>, RouteError>, Duration) {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(mx) => {
                let ttl = mx
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1));
                let mut records: Vec<_> = mx
                    .iter()
                    .map(|r| (r.preference(), r.exchange().to_utf8()))
                    .collect();
                records.sort();
                if records.len() == 1 && (records[0].1 == "." || records[0].1.is_empty()) {
                    return (
                        Err(RouteError::Permanent(format!(
                            "{domain} has a null MX (RFC 7505): it accepts no mail"
                        ))),
                        ttl,
                    );
                }
                let mut hosts = Vec::new();
                let mut last_err = None;
                for (_, name) in records {
                    let name = name.trim_end_matches('.').to_string();
                    match self.addresses(&name, self.port).await {
                        Ok(addrs) => hosts.push(Host { name, addrs }),
                        Err(e) => last_err = Some(e),
                    }
                }
                if hosts.is_empty() {
                    let e = last_err.unwrap_or_else(|| {
                        RouteError::Temporary(format!("no MX host of {domain} resolves"))
                    });
                    // An MX pointing nowhere may be fixed soon: temporary.
                    let e = RouteError::Temporary(e.to_string());
                    return (Err(e), NEGATIVE_TTL);
                }
                (Ok(Arc::new(hosts)), ttl)
            }
            Err(e) => match classify_error(&e) {
                DnsFailure::NxDomain => (
                    Err(RouteError::Permanent(format!(
                        "{domain} does not exist (NXDOMAIN)"
                    ))),
                    NEGATIVE_TTL,
                ),
                DnsFailure::NoRecords => match self.addresses(domain, self.port).await {
                    // RFC 5321 §5.1: no MX, use the domain's own address.
                    Ok(addrs) => (
                        Ok(Arc::new(vec![Host {
                            name: domain.to_string(),
                            addrs,
                        }])),
                        NEGATIVE_TTL,
                    ),
                    Err(e) => (Err(e), NEGATIVE_TTL),
                },
                DnsFailure::Temporary(t) => (
                    Err(RouteError::Temporary(format!(
                        "DNS lookup of {domain} failed: {t}"
                    ))),
                    Duration::from_secs(5),
                ),
            },
        }
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, RouteError> {
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => {
                let addrs: Vec<_> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                if addrs.is_empty() {
                    Err(RouteError::Permanent(format!("{host} has no address")))
                } else {
                    Ok(addrs)
                }
            }
            Err(e) => Err(match classify_error(&e) {
                DnsFailure::NxDomain => {
                    RouteError::Permanent(format!("{host} does not exist (NXDOMAIN)"))
                }
                DnsFailure::NoRecords => RouteError::Permanent(format!("{host} has no address")),
                DnsFailure::Temporary(t) => {
                    RouteError::Temporary(format!("address lookup of {host} failed: {t}"))
                }
            }),
        }
    }
}

enum DnsFailure {
    NxDomain,
    NoRecords,
    Temporary(String),
}

fn classify_error(e: &ResolveError) -> DnsFailure {
    if let Some(p) = e.proto() {
        match p.kind() {
            ProtoErrorKind::NoRecordsFound { response_code, .. } => {
                return match *response_code {
                    ResponseCode::NXDomain => DnsFailure::NxDomain,
                    ResponseCode::NoError => DnsFailure::NoRecords,
                    other => DnsFailure::Temporary(format!("server answered {other}")),
                };
            }
            ProtoErrorKind::Timeout => return DnsFailure::Temporary("timed out".into()),
            _ => {}
        }
    }
    if e.is_nx_domain() {
        DnsFailure::NxDomain
    } else if e.is_no_records_found() {
        DnsFailure::NoRecords
    } else {
        DnsFailure::Temporary(e.to_string())
    }
}
