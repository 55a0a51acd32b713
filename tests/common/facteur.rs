//! [`Facteur`]: the real service binary, run in a temporary directory and
//! driven over its REST API; [`FacteurConfig`]: its TOML configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{free_addr, lo, tail, wait_for};

/// A facteur configuration, kept as a TOML table that tests adjust with
/// [`FacteurConfig::set`] before [`Facteur::start`] writes it out.
#[derive(Clone, Debug, Default)]
pub struct FacteurConfig {
    table: toml::Table,
}

impl FacteurConfig {
    /// An empty configuration: every key takes facteur's default, except
    /// `api.listen` and `spool.data_dir`, which [`Facteur::start`] fills.
    pub fn new() -> FacteurConfig {
        FacteurConfig::default()
    }

    /// Parses a whole configuration written by the test.
    pub fn from_toml(text: &str) -> FacteurConfig {
        let table = text
            .parse()
            .unwrap_or_else(|e| panic!("test config is not TOML: {e}"));
        FacteurConfig { table }
    }

    /// The usual test set-up: MX lookups go to `dns` (the test's
    /// [`DnsServer`](super::DnsServer)), MX hosts listen on `smtp_port`,
    /// retries come after 1 s then 2 s without jitter, timeouts are short.
    pub fn typical(dns: SocketAddr, smtp_port: u16) -> FacteurConfig {
        FacteurConfig::new()
            .set("delivery.resolver", dns.to_string())
            .set("delivery.smtp_port", i64::from(smtp_port))
            .set("delivery.helo_name", "facteur.test")
            .set("delivery.bounce_domain", "bounces.facteur.test")
            .set("delivery.retry_schedule", vec!["1s", "2s"])
            .set("delivery.retry_jitter", 0.0)
            .set("delivery.max_age", "1h")
            .set("delivery.connect_timeout", "5s")
            .set("delivery.command_timeout", "20s")
            .set("delivery.shutdown_deadline", "5s")
    }

    /// Sets a key by its dotted path (`"delivery.command_timeout"`),
    /// creating the tables on the way. For a table name that holds a dot
    /// (a domain), use [`FacteurConfig::set_at`].
    pub fn set(self, path: &str, value: impl Into<toml::Value>) -> FacteurConfig {
        let parts: Vec<&str> = path.split('.').collect();
        self.set_at(&parts, value)
    }

    /// Sets a key by its path given part by part:
    /// `set_at(&["delivery", "domains", "slow.test", "rate"], "20/s")`.
    pub fn set_at(mut self, path: &[&str], value: impl Into<toml::Value>) -> FacteurConfig {
        let (key, tables) = path.split_last().expect("a non-empty key path");
        let mut table = &mut self.table;
        for part in tables {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .unwrap_or_else(|| panic!("config key {part} in {path:?} is not a table"));
        }
        table.insert(key.to_string(), value.into());
        self
    }

    /// DKIM signing for `domain` with selector `s1` and an Ed25519 key.
    pub fn dkim_ed25519(self, domain: &str, private_key_file: &Path) -> FacteurConfig {
        self.set("dkim.domain", domain)
            .set("dkim.selector", "s1")
            .set("dkim.algorithm", "ed25519")
            .set(
                "dkim.private_key_file",
                private_key_file.display().to_string(),
            )
    }

    /// The value at a dotted path, if set.
    pub fn get(&self, path: &str) -> Option<&toml::Value> {
        let mut parts = path.split('.');
        let first = self.table.get(parts.next()?)?;
        parts.try_fold(first, |value, part| value.get(part))
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.table).expect("config serialises")
    }
}

/// The facteur binary running `serve` on a configuration in its own
/// temporary directory, with stdout and stderr captured there. Killed
/// (SIGKILL) on drop; if the test is panicking, the end of its stderr is
/// printed first.
pub struct Facteur {
    dir: tempfile::TempDir,
    config: FacteurConfig,
    api: SocketAddr,
    child: Option<Child>,
    client: reqwest::Client,
}

impl Facteur {
    /// Starts facteur and waits until `GET /readyz` answers 200. Fills
    /// `api.listen` (a free port on 127.0.0.1), `api.public_url` and
    /// `spool.data_dir` (in the temporary directory) unless the test set
    /// them.
    pub async fn start(config: FacteurConfig) -> Facteur {
        let dir = tempfile::Builder::new()
            .prefix("facteur-test-")
            .tempdir()
            .expect("tempdir");
        Facteur::start_in(dir, config).await
    }

    /// Like [`Facteur::start`], in a directory the test prepared (with a DKIM
    /// key in it, say).
    pub async fn start_in(dir: tempfile::TempDir, mut config: FacteurConfig) -> Facteur {
        let api = match config.get("api.listen").and_then(|v| v.as_str()) {
            Some(listen) => listen.parse().expect("api.listen is an ip:port"),
            None => free_addr(lo(1)),
        };
        if config.get("api.listen").is_none() {
            config = config.set("api.listen", api.to_string());
        }
        if config.get("api.public_url").is_none() {
            config = config.set("api.public_url", format!("http://{api}"));
        }
        if config.get("spool.data_dir").is_none() {
            config = config.set(
                "spool.data_dir",
                dir.path().join("data").display().to_string(),
            );
        }
        std::fs::write(dir.path().join("facteur.toml"), config.to_toml()).expect("write config");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let mut facteur = Facteur {
            dir,
            config,
            api,
            child: None,
            client,
        };
        facteur.spawn().await;
        facteur
    }

    /// Starts the process (again) on the same configuration and data, and
    /// waits until it is ready. If it is still running, it is first killed
    /// with SIGKILL.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("open a log file")
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_facteur"));
        // Only the test's file configures it: no FACTEUR_* from outside.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FACTEUR_") {
                command.env_remove(&name);
            }
        }
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .expect("spawn facteur");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = self.url("/readyz");
        let stderr = self.stderr_path();
        for _ in 0..600 {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "facteur exited with {status} before it was ready; stderr:\n{}",
                    tail(&stderr, 40)
                );
            }
            if let Ok(response) = self.client.get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "facteur not ready after 30 s; stderr:\n{}",
            tail(&stderr, 40)
        );
    }

    /// The temporary directory (config, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration it runs on.
    pub fn config(&self) -> &FacteurConfig {
        &self.config
    }

    /// Path of the written configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("facteur.toml")
    }

    /// Path of the captured stderr (the service's logs), kept across restarts.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// The API's address.
    pub fn api(&self) -> SocketAddr {
        self.api
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// An HTTP client that goes straight to loopback (no proxy).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// POSTs JSON; returns the status and the JSON body (`Null` if the body
    /// is empty or not JSON).
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.client.post(self.url(path)).json(body).send().await;
        read_json(response.unwrap_or_else(|e| panic!("POST {path}: {e}"))).await
    }

    /// GETs JSON; returns the status and the JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await;
        read_json(response.unwrap_or_else(|e| panic!("GET {path}: {e}"))).await
    }

    /// GETs text; returns the status and the body.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await;
        let response = response.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let (status, text) = self.get_text("/metrics").await;
        assert_eq!(status, 200, "GET /metrics");
        text
    }

    /// POSTs `/v1/messages`, requires 202, and returns the ids in the order
    /// of the recipients.
    pub async fn send(&self, body: &Value) -> Vec<String> {
        let (status, reply) = self.post_json("/v1/messages", body).await;
        assert_eq!(status, 202, "POST /v1/messages answered {reply}");
        let messages = reply["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("no messages in {reply}"));
        messages
            .iter()
            .map(|m| {
                m["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no id in {m}"))
                    .to_string()
            })
            .collect()
    }

    /// `GET /v1/messages/{id}`, which must answer 200.
    pub async fn message(&self, id: &str) -> Value {
        let (status, message) = self.get_json(&format!("/v1/messages/{id}")).await;
        assert_eq!(status, 200, "GET /v1/messages/{id} answered {message}");
        message
    }

    /// Polls the message until its state is `state`, and returns it. Panics
    /// after `timeout`, or at once if it reaches another final state
    /// (delivered, bounced, expired, suppressed), showing the message.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        const FINAL: &[&str] = &["delivered", "bounced", "expired", "suppressed", "dropped"];
        let what = format!("message {id} to be {state}");
        let stderr = &self.stderr_path();
        wait_for(&what, timeout, move || async move {
            let message = self.message(id).await;
            let now = message["state"].as_str().unwrap_or_default();
            if now == state {
                return Ok(message);
            }
            if FINAL.contains(&now) {
                panic!(
                    "message {id} is {now}, not {state}: {message:#}\nstderr:\n{}",
                    tail(stderr, 20)
                );
            }
            Err(message.to_string())
        })
        .await
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (at most a minute) for the process to exit;
    /// returns its exit status.
    pub async fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("facteur is not running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().expect("wait for facteur") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "facteur still running a minute after SIGTERM; stderr:\n{}",
            tail(&self.stderr_path(), 40)
        );
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `lines` lines of its stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr_path(), lines)
    }
}

impl Drop for Facteur {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- facteur stderr (last 60 lines) ---\n{}",
                self.stderr_tail(60)
            );
        }
        self.kill9();
    }
}

async fn read_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
