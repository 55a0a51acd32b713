//! The Grafana dashboard (`config/grafana/facteur.json`) against the metrics
//! facteur exports: every metric a query names must exist, or the panel would
//! stay empty without anyone noticing.
//!
//! Also checks what Grafana needs to import the file anywhere: valid JSON,
//! unique panel ids, and every query on the `${datasource}` variable.

use std::collections::{BTreeSet, HashSet};

use facteur::metrics::Metrics;
use serde_json::Value;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana/facteur.json");

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Every PromQL expression: panel targets and template variable queries.
fn expressions(dash: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in panels(dash) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_string());
            }
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let query = &var["query"];
        if let Some(q) = query.as_str().or_else(|| query["query"].as_str()) {
            out.push(q.to_string());
        }
    }
    out
}

/// The identifiers in `expr` that start with `facteur_`, outside quoted
/// strings (label values and regexes are not metric names).
fn metric_names(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None if !is_ident(prev) && expr[i..].starts_with("facteur_") => {
                let len = expr[i..]
                    .find(|c: char| !is_ident(c))
                    .unwrap_or(expr.len() - i);
                names.push(expr[i..i + len].to_string());
                for _ in 1..expr[i..i + len].chars().count() {
                    chars.next();
                }
                prev = 'x';
                continue;
            }
            None => {}
        }
        prev = c;
    }
    names
}

#[test]
fn extracts_metric_names_outside_strings() {
    let expr = r#"sum by (le) (rate(facteur_http_request_duration_seconds_bucket{route="facteur_not_a_metric", x='a\'facteur_no'}[5m])) / facteur_up:ratio + notfacteur_x"#;
    assert_eq!(
        metric_names(expr),
        vec![
            "facteur_http_request_duration_seconds_bucket",
            "facteur_up:ratio"
        ]
    );
}

#[test]
fn every_metric_in_the_dashboard_is_exported() {
    let exported: HashSet<String> = Metrics::new(100, 100)
        .exported_names()
        .into_iter()
        .collect();
    let dash = dashboard();
    let exprs = expressions(&dash);
    assert!(
        exprs.len() >= 20,
        "expected the dashboard's queries, found {}",
        exprs.len()
    );

    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "query names no facteur metric: {expr}");
        used.extend(names);
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics facteur does not export: {unknown:?}\nexported: {:?}",
        exported.iter().collect::<BTreeSet<_>>()
    );
}

#[test]
fn panel_ids_are_unique() {
    let dash = dashboard();
    let mut seen = HashSet::new();
    for panel in panels(&dash) {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without id: {}", panel["title"]));
        assert!(
            seen.insert(id),
            "panel id {id} used twice ({})",
            panel["title"]
        );
    }
    assert!(
        seen.len() >= 10,
        "expected a real dashboard, found {} panels",
        seen.len()
    );
}

#[test]
fn every_query_uses_the_datasource_variable() {
    let dash = dashboard();
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "the dashboard needs a Prometheus datasource variable named `datasource`"
    );
    let wanted = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in panels(&dash).into_iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"], wanted, "panel {}", panel["title"]);
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"], wanted,
                "a target of panel {}",
                panel["title"]
            );
        }
    }
    for var in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(var["datasource"], wanted, "variable {}", var["name"]);
    }
}

#[test]
fn latency_quantiles_come_from_buckets() {
    let dash = dashboard();
    let quantiles: Vec<String> = expressions(&dash)
        .into_iter()
        .filter(|e| e.contains("histogram_quantile"))
        .collect();
    assert!(
        !quantiles.is_empty(),
        "the dashboard shows no latency quantile"
    );
    for expr in quantiles {
        assert!(
            metric_names(&expr).iter().all(|n| n.ends_with("_bucket")),
            "histogram_quantile over something other than a _bucket series: {expr}"
        );
        assert!(
            expr.contains("by (le"),
            "histogram_quantile must aggregate by le: {expr}"
        );
    }
}
