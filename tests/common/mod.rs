//! Helpers shared by the integration tests: real peers on loopback.
//!
//! # Layout
//!
//! - [`dns`]: [`DnsServer`], an authoritative DNS server (hickory-server) on
//!   127.0.0.1, serving reserved test names from an in-memory zone.
//! - [`facteur`]: [`Facteur`], the real service binary in a temporary
//!   directory, driven over its REST API; [`FacteurConfig`] builds its TOML.
//! - [`sinks`]: SMTP servers that receive what facteur sends: [`Sink`] (the
//!   project's `facteur-sink` with magic recipients), [`Aiosmtpd`] (PyPI) and
//!   [`PostfixSink`] (Postfix's `smtp-sink`).
//! - [`mail`]: reading received messages and verifying DKIM with dkimpy.
//!
//! Every helper talks only to 127.0.0.0/8, kills what it started on drop,
//! and waits with bounded loops that fail with what they last saw: a test
//! never asserts a time.
//!
//! Each test file includes this module with `mod common;` and uses only part
//! of it, hence the `dead_code` and `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod dns;
pub mod facteur;
pub mod mail;
pub mod sinks;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub use dns::DnsServer;
pub use facteur::{Facteur, FacteurConfig};
pub use mail::{dkim_verify, Received};
pub use sinks::{Aiosmtpd, PostfixSink, Sink};

/// The loopback address `127.0.0.n`.
pub fn lo(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Lowest and highest port handed out by [`pick_port`]: below the kernel's
/// ephemeral range (32768–60999), so that no outgoing connection takes it.
const PORT_RANGE: (u16, u16) = (20_000, 32_000);

/// A TCP port that is free on every one of `ips` (and UDP too on the first),
/// for servers that must share one port on several loopback addresses, as
/// MX hosts share `delivery.smtp_port`.
///
/// Ports are tried from a start that differs between processes, so that
/// test processes running at once rarely try the same port; each port is
/// bound and released, so a race remains possible but unlikely.
pub fn pick_port(ips: &[Ipv4Addr]) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORT_RANGE.1 - PORT_RANGE.0;
    let seed = (std::process::id() as u64).wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    let _ = NEXT.compare_exchange(
        0,
        (seed % span as u64) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = PORT_RANGE.0 + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let free = ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok())
            && ips
                .first()
                .is_none_or(|ip| UdpSocket::bind((*ip, port)).is_ok());
        if free {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?} on {ips:?}");
}

/// A free TCP address on `ip`.
pub fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((ip, pick_port(&[ip])))
}

/// Whether the test runs in CI (the `CI` environment variable is set).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Decides what a test does when a peer program is missing: in CI the test
/// fails, naming the missing tool; elsewhere it prints `skipped: WHAT not
/// installed` and the caller returns early. True when the tool is there.
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if in_ci() {
        panic!("{what} not installed: run scripts/install-test-deps.sh");
    }
    eprintln!("skipped: {what} not installed");
    false
}

/// Whether `python3 -c "import MODULE"` succeeds.
pub fn python_has(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `check` every `every` until it returns `Some`, or panics after
/// `timeout` with `what` and the last value `describe` gives.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("gave up waiting for {what} after {timeout:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until something accepts TCP connections on `addr`, or panics.
pub async fn wait_listening(what: &str, addr: SocketAddr) {
    wait_for(what, Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
}

/// The last `lines` lines of a text file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
