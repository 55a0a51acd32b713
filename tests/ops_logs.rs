//! `facteur --log-format json` with `FACTEUR_LOG=debug`: every line on
//! stderr is one JSON object, and every line about a message carries the
//! message's id as a field (its own, or its span's), not only in prose.
//!
//! Two runs of the real binary, each sending one message through a relay
//! on loopback: to `facteur-sink` with a `tempfail-1@` recipient (deferred
//! over an open session, then delivered), and to a port where nothing
//! listens (deferred without a session).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::{free_addr, lo, tail, wait_for, FacteurConfig, Sink};

/// facteur started by hand: `--log-format json` and `FACTEUR_LOG` are what
/// the test is about, so it does not go through the shared helper.
struct JsonFacteur {
    dir: tempfile::TempDir,
    api: SocketAddr,
    child: Option<Child>,
    client: reqwest::Client,
}

impl JsonFacteur {
    async fn start(relay: SocketAddr) -> JsonFacteur {
        let dir = tempfile::Builder::new()
            .prefix("facteur-logs-")
            .tempdir()
            .expect("tempdir");
        let api = free_addr(lo(1));
        let config = FacteurConfig::new()
            .set("api.listen", api.to_string())
            .set("api.public_url", format!("http://{api}"))
            .set(
                "spool.data_dir",
                dir.path().join("data").display().to_string(),
            )
            .set("delivery.relay", relay.to_string())
            .set("delivery.helo_name", "facteur.test")
            .set("delivery.bounce_domain", "bounces.facteur.test")
            .set("delivery.retry_schedule", vec!["1s", "2s"])
            .set("delivery.retry_jitter", 0.0)
            .set("delivery.connect_timeout", "2s")
            .set("delivery.shutdown_deadline", "2s");
        let config_path = dir.path().join("facteur.toml");
        std::fs::write(&config_path, config.to_toml()).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_facteur"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FACTEUR_") {
                command.env_remove(&name);
            }
        }
        let child = command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .env("FACTEUR_LOG", "debug")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn facteur");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let mut facteur = JsonFacteur {
            dir,
            api,
            child: Some(child),
            client,
        };
        let url = facteur.url("/readyz");
        for _ in 0..300 {
            let child = facteur.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait for facteur") {
                panic!(
                    "facteur exited with {status}; stderr:\n{}",
                    tail(&facteur.stderr_path(), 20)
                );
            }
            if let Ok(r) = facteur.client.get(&url).send().await {
                if r.status() == 200 {
                    return facteur;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "facteur not ready after 30 s; stderr:\n{}",
            tail(&facteur.stderr_path(), 20)
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Sends one message to `email`; returns its id and its batch's.
    async fn send(&self, email: &str) -> (String, String) {
        let body = json!({
            "from": "news@brand.example",
            "subject": "Hello",
            "text": "Hello there",
            "category": "transactional",
            "recipients": [{"email": email}],
        });
        let r = self
            .client
            .post(self.url("/v1/messages"))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/messages");
        assert_eq!(r.status(), 202);
        let reply: Value = r.json().await.expect("JSON answer");
        let id = reply["messages"][0]["id"].as_str().expect("an id");
        let batch = reply["batch"].as_str().expect("a batch");
        (id.to_string(), batch.to_string())
    }

    /// Polls the message until `done` says yes; returns it.
    async fn wait_message(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let url = self.url(&format!("/v1/messages/{id}"));
        let (url, done) = (&url, &done);
        wait_for(what, Duration::from_secs(30), || async move {
            let r = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let m: Value = r.json().await.map_err(|e| e.to_string())?;
            if done(&m) {
                Ok(m)
            } else {
                Err(m.to_string())
            }
        })
        .await
    }

    /// Stops the process with SIGTERM (so that the last lines are whole)
    /// and returns every line of its stderr, each parsed as JSON.
    async fn stop_and_read(mut self) -> Vec<Value> {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..300 {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(self.stderr_path()).expect("read stderr");
        text.lines()
            .enumerate()
            .map(|(n, line)| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stderr line {} is not JSON ({e}): {line}", n + 1))
            })
            .collect()
    }
}

impl Drop for JsonFacteur {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the line carries `id` as a field: the event's own, or a field of
/// its current span or of any span it is in.
fn carries(line: &Value, key: &str, id: &str) -> bool {
    line[key] == id
        || line["span"][key] == id
        || line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s[key] == id))
}

/// Checks the lines of a run: each has the fields a log collector needs;
/// each that mentions the message carries its id as a field; and the story
/// is there (accepted, deferred, plus `also`).
fn check_lines(lines: &[Value], id: &str, batch: &str, also: &[&str]) {
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
        if line.to_string().contains(id) {
            assert!(
                carries(line, "id", id),
                "a line about message {id} without its id as a field: {line}"
            );
        }
    }
    let about: Vec<&Value> = lines.iter().filter(|l| carries(l, "id", id)).collect();
    let said = |msg: &str| about.iter().any(|l| l["message"] == msg);
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "batch accepted" && l["batch"] == batch),
        "no 'batch accepted' line for batch {batch}"
    );
    assert!(
        about
            .iter()
            .any(|l| l["message"] == "message accepted" && l["batch"] == batch),
        "no 'message accepted' line with id {id} and batch {batch}"
    );
    for msg in ["message deferred"].iter().chain(also) {
        assert!(
            said(msg),
            "no '{msg}' line with id {id}; lines with it:\n{}",
            about
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let deferred = about
        .iter()
        .find(|l| l["message"] == "message deferred")
        .expect("checked above");
    assert_eq!(deferred["level"], "INFO", "{deferred}");
    assert!(
        deferred["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a deferral says why: {deferred}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_about_a_deferred_then_delivered_message_carry_its_id() {
    let sink = Sink::start(lo(1), 0);
    let facteur = JsonFacteur::start(sink.addr()).await;
    let (id, batch) = facteur.send("tempfail-1@example.com").await;
    facteur
        .wait_message(&id, "delivery after one deferral", |m| {
            m["state"] == "delivered"
        })
        .await;
    let lines = facteur.stop_and_read().await;
    check_lines(&lines, &id, &batch, &["message delivered"]);
    // Delivery's own debug line, in the message's span.
    assert!(
        lines.iter().any(|l| l["message"] == "attempt finished"
            && l["span"]["name"] == "message"
            && l["span"]["id"] == id.as_str()),
        "no 'attempt finished' line in the span of {id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_about_a_message_to_a_closed_port_carry_its_id() {
    // Bound, then released: nothing listens there.
    let closed = free_addr(lo(1));
    let facteur = JsonFacteur::start(closed).await;
    let (id, batch) = facteur.send("reader@example.com").await;
    facteur
        .wait_message(&id, "two failed attempts", |m| {
            m["attempts"].as_u64().is_some_and(|a| a >= 2)
        })
        .await;
    let lines = facteur.stop_and_read().await;
    check_lines(&lines, &id, &batch, &[]);
}
