//! SMTP servers that receive what facteur sends, each a real program in its
//! own temporary directory, killed on drop:
//! - [`Sink`]: the project's `facteur-sink`, with magic recipients and a
//!   JSON-lines log of connections, messages and magic answers;
//! - [`Aiosmtpd`]: aiosmtpd from PyPI with its Mailbox (maildir) handler;
//! - [`PostfixSink`]: Postfix's `smtp-sink`, dumping one file a message.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::mail::{crlf, Received};
use super::{python_has, require, tail, wait_for, wait_listening};

/// Waits until `received` gives at least `n` messages; returns them all.
async fn wait_count(
    what: &str,
    n: usize,
    timeout: Duration,
    received: impl Fn() -> Vec<Received>,
) -> Vec<Received> {
    let received = &received;
    wait_for(what, timeout, move || async move {
        let all = received();
        if all.len() >= n {
            Ok(all)
        } else {
            Err(format!("{} of {n} messages", all.len()))
        }
    })
    .await
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Files of `dir` (not hidden) sorted by name.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.is_file()
            && !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
    });
    files.sort();
    files
}

/// The address between the first `<` and the next `>`.
fn bracketed(text: &str) -> String {
    text.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_string())
        .unwrap_or_default()
}

/// `facteur-sink` listening on one loopback address.
pub struct Sink {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
    /// Kept open so that the sink never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Sink {
    /// Starts `facteur-sink` on `ip:port` (port 0: any free port) and waits
    /// until it has printed its bound address.
    pub fn start(ip: Ipv4Addr, port: u16) -> Sink {
        let dir = tempfile::Builder::new()
            .prefix("facteur-sink-")
            .tempdir()
            .expect("tempdir");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_facteur-sink"))
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg("--log")
            .arg(dir.path().join("sink.jsonl"))
            .arg("--maildir")
            .arg(dir.path().join("mail"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn facteur-sink");
        let mut stdout = BufReader::new(child.stdout.take().expect("sink stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let Some(addr) = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
        else {
            kill(&mut child);
            panic!(
                "facteur-sink did not start on {ip}:{port}: {line:?}\n{}",
                tail(&dir.path().join("stderr.log"), 20)
            );
        };
        Sink {
            addr,
            dir,
            child,
            _stdout: stdout,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Path of the JSON-lines log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sink.jsonl")
    }

    /// Every complete event logged so far, in order.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        // The last line may still be being written: only whole lines count.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad sink log line {l}: {e}"))
            })
            .collect()
    }

    /// The events of one kind (`"connect"`, `"message"`, `"reply"`,
    /// `"hangup"`, `"slow"`, `"disconnect"`).
    pub fn events_of(&self, ev: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["ev"] == ev)
            .collect()
    }

    /// The magic replies (`reply` events) given to `rcpt`.
    pub fn replies_to(&self, rcpt: &str) -> Vec<Value> {
        self.events_of("reply")
            .into_iter()
            .filter(|e| e["rcpt"] == rcpt)
            .collect()
    }

    /// Number of connections accepted so far.
    pub fn connections(&self) -> usize {
        self.events_of("connect").len()
    }

    /// The most connections that were open at once.
    pub fn max_concurrent_connections(&self) -> usize {
        let (mut open, mut max) = (0usize, 0usize);
        for event in self.events() {
            match event["ev"].as_str() {
                Some("connect") => {
                    open += 1;
                    max = max.max(open);
                }
                Some("disconnect") => open = open.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    /// How many messages each connection carried, by connection number
    /// (connections that carried none are left out).
    pub fn messages_per_connection(&self) -> std::collections::BTreeMap<u64, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for event in self.events_of("message") {
            *counts
                .entry(event["conn"].as_u64().unwrap_or(0))
                .or_insert(0) += 1;
        }
        counts
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.events_of("message")
            .into_iter()
            .map(|e| {
                let file = PathBuf::from(e["file"].as_str().unwrap_or_default());
                let raw =
                    std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
                let rcpt = e["rcpt"].as_array().into_iter().flatten();
                Received {
                    from: e["from"].as_str().unwrap_or_default().to_string(),
                    rcpt: rcpt
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect(),
                    raw,
                    file,
                }
            })
            .collect()
    }

    /// Waits until at least `n` messages were accepted; returns them all.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_count(
            &format!("{n} messages at facteur-sink {}", self.addr),
            n,
            timeout,
            || self.messages(),
        )
        .await
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// aiosmtpd (`python3 -m aiosmtpd`) with the Mailbox handler.
pub struct Aiosmtpd {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Aiosmtpd {
    /// Starts aiosmtpd on `ip:port` and waits until it accepts connections.
    /// None when aiosmtpd is not installed outside CI (the test should
    /// return: `skipped: aiosmtpd not installed` was printed); in CI a
    /// missing aiosmtpd fails the test.
    pub async fn start(ip: Ipv4Addr, port: u16) -> Option<Aiosmtpd> {
        if !require("aiosmtpd", python_has("aiosmtpd")) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("aiosmtpd-")
            .tempdir()
            .expect("tempdir");
        let log = std::fs::File::create(dir.path().join("aiosmtpd.log")).expect("log file");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("{ip}:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn aiosmtpd");
        let addr = SocketAddr::from((ip, port));
        let server = Aiosmtpd { addr, dir, child };
        wait_listening("aiosmtpd", addr).await;
        Some(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages stored so far. The envelope comes from the
    /// `X-MailFrom` and `X-RcptTo` headers the handler adds.
    pub fn messages(&self) -> Vec<Received> {
        let maildir = self.dir.path().join("maildir");
        let mut files = files_in(&maildir.join("new"));
        files.extend(files_in(&maildir.join("cur")));
        files
            .into_iter()
            .map(|file| {
                let raw = crlf(&std::fs::read(&file).unwrap_or_default());
                let mut received = Received {
                    from: String::new(),
                    rcpt: Vec::new(),
                    raw,
                    file,
                };
                received.from = received.header("X-MailFrom").unwrap_or_default();
                received.rcpt = received
                    .header("X-RcptTo")
                    .unwrap_or_default()
                    .split(',')
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect();
                received
            })
            .collect()
    }

    /// Waits until at least `n` messages were stored; returns them all.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_count(
            &format!("{n} messages at aiosmtpd {}", self.addr),
            n,
            timeout,
            || self.messages(),
        )
        .await
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Postfix's `smtp-sink`, dumping each message to a file.
pub struct PostfixSink {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

/// Where Debian installs it.
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

impl PostfixSink {
    /// Starts `smtp-sink` on `ip:port` and waits until it accepts
    /// connections. None when it is not installed outside CI (see
    /// [`Aiosmtpd::start`]).
    pub async fn start(ip: Ipv4Addr, port: u16) -> Option<PostfixSink> {
        if !require("smtp-sink (Postfix)", Path::new(SMTP_SINK).exists()) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("smtp-sink-")
            .tempdir()
            .expect("tempdir");
        let dump = dir.path().join("dump");
        std::fs::create_dir(&dump).expect("dump dir");
        let mut command = Command::new(SMTP_SINK);
        if is_root() {
            // smtp-sink refuses to run as root: it drops to nobody, who must
            // be able to reach and write the dump directory.
            let open = std::fs::Permissions::from_mode(0o777);
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            std::fs::set_permissions(&dump, open).expect("chmod");
            command.args(["-u", "nobody"]);
        }
        let log = std::fs::File::create(dir.path().join("smtp-sink.log")).expect("log file");
        let child = command
            .arg("-d")
            .arg(format!("{}/%Y%m%d%H%M%S.", dump.display()))
            .arg(format!("{ip}:{port}"))
            .arg("100")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn smtp-sink");
        let addr = SocketAddr::from((ip, port));
        let server = PostfixSink { addr, dir, child };
        wait_listening("smtp-sink", addr).await;
        Some(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages dumped so far, without smtp-sink's own header lines.
    pub fn messages(&self) -> Vec<Received> {
        files_in(&self.dir.path().join("dump"))
            .into_iter()
            .filter_map(|file| {
                let text = std::fs::read(&file).ok()?;
                parse_dump(&text).map(|(from, rcpt, raw)| Received {
                    from,
                    rcpt,
                    raw,
                    file,
                })
            })
            .collect()
    }

    /// Waits until at least `n` messages were dumped; returns them all.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_count(
            &format!("{n} messages at smtp-sink {}", self.addr),
            n,
            timeout,
            || self.messages(),
        )
        .await
    }
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Splits an smtp-sink dump: its `X-…-Args` lines give the envelope; the
/// three-line `Received:` header it writes ends its part; the message
/// follows, then one empty line. None while the dump is incomplete.
fn parse_dump(text: &[u8]) -> Option<(String, Vec<String>, Vec<u8>)> {
    let (mut from, mut rcpt) = (String::new(), Vec::new());
    let mut offset = 0;
    let mut lines = text.split_inclusive(|&b| b == b'\n');
    for line in lines.by_ref() {
        offset += line.len();
        let line = String::from_utf8_lossy(line);
        if let Some(args) = line.strip_prefix("X-Mail-Args:") {
            from = bracketed(args);
        } else if let Some(args) = line.strip_prefix("X-Rcpt-Args:") {
            rcpt.push(bracketed(args));
        } else if line.starts_with("Received:") {
            break;
        }
    }
    for line in lines.take(2) {
        offset += line.len();
    }
    let message = text.get(offset..)?.strip_suffix(b"\n")?;
    Some((from, rcpt, crlf(message)))
}
