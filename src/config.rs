//! Typed configuration, validated at start.
//!
//! The file is TOML (`config/facteur.toml` documents every key); every key
//! has a default, so `facteur serve` runs with no file at all. Environment
//! variables `FACTEUR_<SECTION>_<KEY>` override the file. Loading collects
//! every error it finds, each with its key, instead of stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod sections;
pub use sections::*;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// REST API.
    pub api: ApiConfig,
    /// The sled spool.
    pub spool: SpoolConfig,
    /// SMTP delivery.
    pub delivery: DeliveryConfig,
    /// DKIM signing.
    pub dkim: DkimConfig,
    /// Open and click tracking, unsubscribe.
    pub tracking: TrackingConfig,
    /// Mail that comes back: bounces, complaints, replies.
    pub inbound: InboundConfig,
    /// Event webhooks.
    pub webhooks: WebhooksConfig,
    /// e-CRM policy: categories, pressure.
    pub policy: PolicyConfig,
    /// Logging.
    pub log: LogConfig,
    /// Shared state across nodes.
    pub cluster: ClusterConfig,
}

/// Every problem found in a configuration, each with its key.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<(String, String)>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, why)) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{key}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn push(&mut self, key: impl Into<String>, why: impl Into<String>) {
        self.0.push((key.into(), why.into()));
    }
}

/// The sections a file may have, in order.
const SECTIONS: &[&str] = &[
    "api", "spool", "delivery", "dkim", "tracking", "inbound", "webhooks", "policy", "log",
    "cluster",
];

impl Config {
    /// Loads the file (if any), applies `FACTEUR_*` overrides from `env`, and
    /// validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut table = match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(p.display().to_string(), e.message().to_string());
                        return Err(errors);
                    }
                },
                Err(e) => {
                    errors.push(p.display().to_string(), format!("cannot read: {e}"));
                    return Err(errors);
                }
            },
            None => toml::Table::new(),
        };
        apply_env(&mut table, env, &mut errors);
        let config = from_table(table, &mut errors);
        config.validate(&mut errors);
        if errors.0.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Checks what types alone cannot: relations between keys, files that
    /// must exist.
    fn validate(&self, errors: &mut ConfigErrors) {
        if self.api.max_recipients == 0 || self.api.max_recipients > 100_000 {
            errors.push("api.max_recipients", "must be between 1 and 100000");
        }
        if self.delivery.retry_schedule.is_empty() {
            errors.push("delivery.retry_schedule", "must name at least one delay");
        }
        if !(0.0..=1.0).contains(&self.delivery.retry_jitter) {
            errors.push("delivery.retry_jitter", "must be between 0 and 1");
        }
        if self.delivery.helo_name.trim().is_empty() {
            errors.push("delivery.helo_name", "must not be empty");
        }
        if let Some(relay) = &self.delivery.relay {
            if relay
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                errors.push("delivery.relay", format!("'{relay}' is not host:port"));
            }
        }
        if !self.dkim.domain.is_empty() && self.dkim.private_key_file.as_os_str().is_empty() {
            errors.push("dkim.private_key_file", "required when dkim.domain is set");
        }
        if !self.dkim.domain.is_empty() && !self.dkim.private_key_file.exists() {
            errors.push(
                "dkim.private_key_file",
                format!("{} does not exist", self.dkim.private_key_file.display()),
            );
        }
        if url_base(&self.api.public_url).is_none() {
            errors.push("api.public_url", "must start with http:// or https://");
        }
        for (i, key) in self.tracking.keys.iter().enumerate() {
            if let Err(e) = parse_tracking_key(key) {
                errors.push(format!("tracking.keys[{i}]"), e);
            }
        }
        self.inbound.validate(errors);
        if self.webhooks.max_queue == 0 {
            errors.push("webhooks.max_queue", "must be at least 1");
        }
        for (i, hook) in self.webhooks.endpoints.iter().enumerate() {
            if url_base(&hook.url).is_none() {
                errors.push(
                    format!("webhooks.endpoints[{i}].url"),
                    "must be an http(s) URL",
                );
            }
        }
    }
}

fn url_base(url: &str) -> Option<&str> {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
}

/// Parses a tracking key `KID:SECRET` (KID 0..=255, SECRET of at least 16
/// bytes) into its id and bytes.
pub fn parse_tracking_key(text: &str) -> Result<(u8, Vec<u8>), String> {
    let (kid, secret) = text
        .split_once(':')
        .ok_or_else(|| "expected KID:SECRET, e.g. 1:a-long-random-secret".to_string())?;
    let kid = kid
        .trim()
        .parse::<u8>()
        .map_err(|_| format!("key id '{kid}' is not 0..=255"))?;
    if secret.len() < 16 {
        return Err("secret must be at least 16 bytes".into());
    }
    Ok((kid, secret.as_bytes().to_vec()))
}

fn from_table(mut table: toml::Table, errors: &mut ConfigErrors) -> Config {
    let mut config = Config::default();
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            errors.push(
                key.clone(),
                format!("unknown section; expected one of {SECTIONS:?}"),
            );
        }
    }
    macro_rules! section {
        ($name:ident) => {
            if let Some(v) = table.remove(stringify!($name)) {
                match v.try_into() {
                    Ok(s) => config.$name = s,
                    Err(e) => errors.push(stringify!($name), clean_toml_error(&e)),
                }
            }
        };
    }
    section!(api);
    section!(spool);
    section!(delivery);
    section!(dkim);
    section!(tracking);
    section!(inbound);
    section!(webhooks);
    section!(policy);
    section!(log);
    section!(cluster);
    config
}

fn clean_toml_error(e: &toml::de::Error) -> String {
    e.message().trim().replace('\n', " ")
}

/// Applies `FACTEUR_<SECTION>_<KEY>` variables onto the table. A value is
/// read as a TOML value when it parses as one (numbers, booleans, arrays),
/// else as a string; a comma-separated string becomes an array for keys
/// whose default is a list.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut ConfigErrors,
) {
    let lists = [
        "keys",
        "retry_schedule",
        "reply_addresses",
        "categories",
        "domains_served",
    ];
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("FACTEUR_") else {
            continue;
        };
        // The tracing filter (`FACTEUR_LOG=debug`), read by the binary
        // before the configuration.
        if rest == "LOG" {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        // Variables Kubernetes injects for a Service named `facteur`
        // (FACTEUR_PORT, FACTEUR_SERVICE_HOST, FACTEUR_HEADLESS_PORT_…).
        if rest.starts_with("port")
            || rest.starts_with("service_")
            || rest.contains("_service_")
            || rest.contains("_port_")
        {
            continue;
        }
        let Some((section, key)) = rest.split_once('_') else {
            errors.push(name.clone(), "expected FACTEUR_<SECTION>_<KEY>");
            continue;
        };
        if !SECTIONS.contains(&section) {
            errors.push(name.clone(), format!("unknown section '{section}'"));
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| {
                if lists.contains(&key) {
                    toml::Value::Array(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| toml::Value::String(s.to_string()))
                            .collect(),
                    )
                } else {
                    toml::Value::String(value.clone())
                }
            });
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry.as_table_mut() {
            Some(t) => {
                t.insert(key.to_string(), parsed);
            }
            None => errors.push(name.clone(), format!("section '{section}' is not a table")),
        }
    }
}

/// A duration written for humans: `250ms`, `10s`, `5m`, `2h`, `3d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `250ms`, `10s`, `5m`, `2h`, `3d` (a bare number is seconds).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration '{text}'"))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            "w" => n * 7.0 * 86400.0,
            _ => {
                return Err(format!(
                    "invalid duration unit in '{text}' (ms, s, m, h, d, w)"
                ))
            }
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("invalid duration '{text}'"));
        }
        Ok(HumanDuration(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A rate: `3000/h`, `10/s`, `100/m`, `50000/d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Messages allowed per `per`.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m`, `N/h`, `N/d` (also `N/sec`, `N/min`, `N/hour`, `N/day`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (n, unit) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("invalid rate '{text}': expected N/s, N/m, N/h or N/d"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate count in '{text}'"))?;
        if count == 0 {
            return Err(format!("rate '{text}' must allow at least one message"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86400),
            _ => return Err(format!("invalid rate unit in '{text}' (s, m, h, d)")),
        };
        Ok(Rate { count, per })
    }

    /// The time between two messages at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

/// An optional rate: the empty string means unlimited.
pub fn de_opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    Rate::parse(&s).map(Some).map_err(serde::de::Error::custom)
}

/// An optional socket address: the empty string means none.
pub fn de_opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("'{s}' is not ip:port")))
}

/// An optional string: the empty string means none.
pub fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    Ok(if s.trim().is_empty() { None } else { Some(s) })
}

/// Prints the errors of a configuration for `check-config`, one per line.
pub fn report(errors: &ConfigErrors) -> String {
    let mut out = String::new();
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in &errors.0 {
        by_key.entry(k).or_default().push(v);
    }
    for (k, vs) in by_key {
        for v in vs {
            out.push_str(&format!("error: {k}: {v}\n"));
        }
    }
    out
}

/// Where a path in the configuration is relative to: the working directory.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

#[cfg(test)]
mod tests;
