//! The README's metrics table and the registry agree: every family facteur
//! registers is listed with its type and labels, every row names a family
//! that exists, and names follow Prometheus conventions (counters end in
//! `_total`, histograms in `_seconds` or `_bytes`, labels stay bounded).

use std::collections::BTreeMap;

use facteur::metrics::{Family, Metrics};

/// One row of the README's table: type and labels by name.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    kind: String,
    labels: Vec<String>,
}

/// Label names that would grow without bound if used as labels: per
/// message, per recipient, per URL or per raw domain.
const UNBOUNDED_LABELS: &[&str] = &[
    "id",
    "message_id",
    "email",
    "recipient",
    "address",
    "url",
    "path",
    "token",
    "domain",
    "batch",
    "user_agent",
];

/// The rows of the table that follows `## Metrics` in README.md.
fn readme_rows() -> BTreeMap<String, Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Metrics")
        .nth(1)
        .expect("README.md has a '## Metrics' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `facteur_")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "README metrics row needs 4 cells: {line}");
        let name = cells[0].trim_matches('`').to_string();
        let labels = cells[2]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        assert!(
            !cells[3].is_empty(),
            "README metrics row {name} has no meaning"
        );
        let row = Row {
            kind: cells[1].to_string(),
            labels,
        };
        assert!(
            rows.insert(name.clone(), row).is_none(),
            "README lists {name} twice"
        );
    }
    assert!(!rows.is_empty(), "no `facteur_*` rows under ## Metrics");
    rows
}

fn registry() -> BTreeMap<String, Family> {
    Metrics::new(10, 10)
        .families()
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect()
}

#[test]
fn every_exported_metric_is_in_the_readme_and_back() {
    let rows = readme_rows();
    let families = registry();
    let mut problems = Vec::new();
    for (name, f) in &families {
        match rows.get(name) {
            None => problems.push(format!("{name} ({}) is not in README.md", f.kind)),
            Some(row) => {
                if row.kind != f.kind {
                    problems.push(format!(
                        "{name}: README says {}, the registry {}",
                        row.kind, f.kind
                    ));
                }
                let mut documented = row.labels.clone();
                let mut registered = f.labels.clone();
                documented.sort();
                registered.sort();
                if documented != registered {
                    problems.push(format!(
                        "{name}: README labels {documented:?}, registry labels {registered:?}"
                    ));
                }
            }
        }
    }
    for name in rows.keys() {
        if !families.contains_key(name) {
            problems.push(format!("README.md lists {name}, which is not exported"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn exported_names_are_the_families_and_their_histogram_series() {
    let m = Metrics::new(10, 10);
    let names = m.exported_names();
    for f in m.families() {
        assert!(names.contains(&f.name), "{}", f.name);
        if f.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                let series = format!("{}{suffix}", f.name);
                assert!(names.contains(&series), "{series}");
            }
        }
    }
}

#[test]
fn names_types_and_labels_follow_prometheus_conventions() {
    let mut problems = Vec::new();
    for (name, f) in registry() {
        if !name.starts_with("facteur_") {
            problems.push(format!("{name}: no facteur_ prefix"));
        }
        if f.help.trim().is_empty() {
            problems.push(format!("{name}: no help text"));
        }
        match f.kind {
            "counter" if !name.ends_with("_total") => {
                problems.push(format!("counter {name} does not end in _total"))
            }
            "histogram" if !(name.ends_with("_seconds") || name.ends_with("_bytes")) => problems
                .push(format!(
                    "histogram {name} ends in neither _seconds nor _bytes"
                )),
            "gauge" if name.ends_with("_total") => {
                problems.push(format!("gauge {name} ends in _total, the counter suffix"))
            }
            "counter" | "gauge" | "histogram" => {}
            other => problems.push(format!("{name}: unexpected type {other}")),
        }
        if (name.contains("duration") || name.contains("latency")) && !name.ends_with("_seconds") {
            problems.push(format!("{name}: a duration not in _seconds"));
        }
        for label in &f.labels {
            if UNBOUNDED_LABELS.contains(&label.as_str()) {
                problems.push(format!("{name}: label {label} is unbounded"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The families the operations issue asks for, beside delivery and
/// tracking, exist with the labels that make them useful.
#[test]
fn the_operational_families_exist() {
    let families = registry();
    let wanted: &[(&str, &[&str])] = &[
        (
            "facteur_http_requests_total",
            &["route", "method", "status"],
        ),
        ("facteur_http_request_duration_seconds", &["route"]),
        ("facteur_spool_size_bytes", &[]),
        ("facteur_spool_flush_duration_seconds", &[]),
        ("facteur_dns_lookups_total", &["result"]),
        ("facteur_smtp_connections_open", &["destination"]),
        ("facteur_webhook_deliveries_total", &["result"]),
        ("facteur_inbound_messages_total", &["kind"]),
        ("facteur_build_info", &["version"]),
        ("facteur_messages_delivered_total", &[]),
    ];
    for (name, labels) in wanted {
        let f = families
            .get(*name)
            .unwrap_or_else(|| panic!("{name} is not registered"));
        assert_eq!(f.labels, *labels, "labels of {name}");
    }
}
