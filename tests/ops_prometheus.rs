//! A real Prometheus (Debian's `prometheus` package) scrapes a running
//! facteur on loopback; after N messages are delivered to a loopback sink,
//! Prometheus's own query API answers N for
//! `facteur_messages_delivered_total`.
//!
//! In CI (`CI` set) a missing `/usr/bin/prometheus` fails the test; elsewhere
//! it prints `skipped: …` and passes.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::{free_addr, lo, require, tail, wait_for, Facteur, FacteurConfig, Sink};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Messages sent through facteur.
const N: usize = 20;

/// Prometheus 2 in a temporary directory, scraping one target every second.
/// Killed on drop; its log is printed if the test is failing.
struct Prometheus {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Child,
    client: reqwest::Client,
}

impl Prometheus {
    /// Writes `prometheus.yml` (job `facteur`, `/metrics` of `target` every
    /// 1 s), starts Prometheus on a free loopback port with its TSDB in the
    /// temporary directory, and waits until `/-/ready` answers 200.
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("facteur-prometheus-")
            .tempdir()
            .expect("tempdir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: facteur\n    scrape_interval: 1s\n    \
             scrape_timeout: 1s\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = free_addr(lo(1));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let prometheus = Prometheus {
            dir,
            addr,
            child,
            client,
        };
        let ready = format!("http://{addr}/-/ready");
        let p = &prometheus;
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            let ready = ready.clone();
            async move {
                let r = p.client.get(&ready).send().await;
                match r {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(format!("/-/ready answered {}", r.status())),
                    Err(e) => Err(format!("{e}; log:\n{}", p.log_tail())),
                }
            }
        })
        .await;
        prometheus
    }

    /// The values of an instant query's result vector, by `job` label.
    async fn query(&self, promql: &str) -> Result<Vec<f64>, String> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let response = self
            .client
            .get(url)
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("query {promql} answered {body}"));
        }
        let result = body["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("no result vector in {body}"))?;
        result
            .iter()
            .map(|series| {
                series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| format!("no value in {series}"))
            })
            .collect()
    }

    /// Polls an instant query until it gives exactly one series whose
    /// value is `want`; returns that value, or panics with the last answer.
    async fn wait_value(&self, promql: &str, want: f64, timeout: Duration) -> f64 {
        let what = format!("Prometheus to answer {want} for {promql}");
        wait_for(&what, timeout, || async move {
            match self.query(promql).await? {
                values if values == [want] => Ok(want),
                values => Err(format!("{values:?}")),
            }
        })
        .await
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.path().join("prometheus.log"), 30)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_delivered_count() {
    if !require(
        "prometheus (Debian package prometheus)",
        Path::new(PROMETHEUS).exists(),
    ) {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    let facteur = Facteur::start(
        FacteurConfig::new()
            .set("delivery.relay", sink.addr().to_string())
            .set("delivery.helo_name", "facteur.test")
            .set("delivery.bounce_domain", "bounces.facteur.test"),
    )
    .await;
    let prometheus = Prometheus::start(facteur.api()).await;

    // The target is up and scraped before anything is sent: the count
    // Prometheus reports later is a change it saw, not a first sample.
    prometheus
        .wait_value(r#"up{job="facteur"}"#, 1.0, Duration::from_secs(60))
        .await;
    prometheus
        .wait_value(
            "facteur_messages_delivered_total",
            0.0,
            Duration::from_secs(30),
        )
        .await;

    let recipients: Vec<Value> = (0..N)
        .map(|i| json!({"email": format!("reader{i}@example.com"), "vars": {"n": i}}))
        .collect();
    let ids = facteur
        .send(&json!({
            "from": "news@brand.example",
            "subject": "Issue {{ n }}",
            "text": "Hello reader {{ n }}",
            "category": "transactional",
            "recipients": recipients,
        }))
        .await;
    assert_eq!(ids.len(), N);
    for id in &ids {
        facteur
            .wait_state(id, "delivered", Duration::from_secs(60))
            .await;
    }
    sink.wait_messages(N, Duration::from_secs(30)).await;

    let seen = prometheus
        .wait_value(
            "facteur_messages_delivered_total",
            N as f64,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(seen, N as f64);
    // Prometheus and facteur agree with each other as well as with the sink.
    let own = facteur.metrics().await;
    assert!(
        own.lines()
            .any(|l| l == format!("facteur_messages_delivered_total {N}")),
        "facteur's /metrics does not say {N} delivered"
    );
}
