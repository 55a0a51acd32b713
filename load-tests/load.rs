//! Load tool: M personalised messages through facteur to SMTP sinks on
//! loopback, end to end.
//!
//! It starts (unless told to use running ones) Postfix's `smtp-sink` on
//! 127.0.1.1..=127.0.1.H port 25, a DNS server on loopback answering MX for
//! D domains spread over those hosts, and facteur (release build) pointed at
//! both. It then posts the messages in batches of personalised recipients
//! (about 4 KB of HTML with links each, tracking on), and prints with a
//! progress line: ingest rate, delivered messages per second end to end,
//! accept latency p50 and p99, and the server's peak memory.
//!
//! ```text
//! cargo build --release && cargo run --release --example load -- --messages 50000
//! ```
//!
//! It reaches loopback only, and stops by itself (a bounded wait).

#[path = "../tests/common/dns.rs"]
#[allow(dead_code)]
mod dns;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "End-to-end load test of facteur on loopback")]
struct Args {
    /// Messages to send.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Recipient domains.
    #[arg(long, default_value_t = 50)]
    domains: usize,
    /// Sink hosts (127.0.1.1 ..).
    #[arg(long, default_value_t = 10)]
    hosts: u8,
    /// Recipients per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// facteur binary.
    #[arg(long, default_value = "target/release/facteur")]
    facteur: PathBuf,
    /// Use sinks already listening on 127.0.1.x:25 instead of starting smtp-sink.
    #[arg(long)]
    external_sinks: bool,
    /// SMTP connections per destination.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Turn link tracking off.
    #[arg(long)]
    no_tracking: bool,
    /// Give up waiting for delivery after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// Kills the child processes on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn html_template() -> String {
    let mut s = String::from("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{{ subject }}</title></head><body>");
    s.push_str("<table width=\"600\" cellpadding=\"0\" cellspacing=\"0\"><tr><td><h1>Hello {{ first_name }}!</h1>");
    for i in 0..12 {
        s.push_str(&format!(
            "<p>Offer {i} picked for {{{{ first_name }}}} in {{{{ city }}}}: our spring collection has arrived, with \
             prices you will like. <a href=\"https://shop.example.com/p/{i}?utm_source=mail&amp;c={{{{ code }}}}\">See offer {i}</a></p>"
        ));
    }
    s.push_str("<p><a href=\"https://shop.example.com/account\">Your account</a> · <a href=\"mailto:help@example.com\">Help</a></p>");
    s.push_str("</td></tr></table></body></html>");
    s
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn metric(client: &reqwest::Client, base: &str, name: &str) -> u64 {
    let Ok(r) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut procs = Procs(Vec::new());
    if !args.external_sinks {
        for h in 1..=args.hosts {
            let child = Command::new("smtp-sink")
                .args(["-u", "nobody", "-c", &format!("127.0.1.{h}:25"), "1000"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!("cannot start smtp-sink (apt-get install postfix): {e}")
                })?;
            procs.0.push(child);
        }
    }
    let dns = dns::DnsServer::start();
    for d in 0..args.domains {
        let h = (d % usize::from(args.hosts)) as u8 + 1;
        dns.add_mail_host(&format!("d{d}.load.test"), Ipv4Addr::new(127, 0, 1, h));
    }
    let port = free_port();
    let config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [spool]\ndata_dir = \"{data}\"\n\
         [delivery]\nresolver = \"{dns}\"\nsmtp_port = 25\nhelo_name = \"load.facteur.test\"\nbounce_domain = \"bounces.load.test\"\n\
         [delivery.default_throttle]\nmax_connections = {conns}\nmessages_per_connection = 1000\n\
         [tracking]\nkeys = [\"1:load-test-key-0123456789abcdef\"]\n[log]\nlevel = \"warn\"\n",
        data = dir.path().join("data").display(),
        dns = dns.addr(),
        conns = args.connections,
    );
    let config_path = dir.path().join("facteur.toml");
    std::fs::write(&config_path, config)?;
    let server = Command::new(&args.facteur)
        .args(["serve", "--config"])
        .arg(&config_path)
        .stderr(std::fs::File::create(dir.path().join("facteur.log"))?)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start {}: {e} (cargo build --release)",
                args.facteur.display()
            )
        })?;
    let pid = server.id();
    procs.0.push(server);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    for _ in 0..100 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let html = Arc::new(html_template());
    let sent = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let requests = args.messages.div_ceil(args.batch);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, base, html, sent, latencies, next) = (
            client.clone(),
            base.clone(),
            html.clone(),
            sent.clone(),
            latencies.clone(),
            next.clone(),
        );
        let (batch, total, domains, track) =
            (args.batch, args.messages, args.domains, !args.no_tracking);
        workers.push(tokio::spawn(async move {
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed) as usize;
                if r >= requests {
                    return;
                }
                let first = r * batch;
                let recipients: Vec<_> = (first..(first + batch).min(total))
                    .map(|n| {
                        serde_json::json!({"email": format!("user{n}@d{}.load.test", n % domains),
                            "vars": {"first_name": format!("Name{n}"), "city": "Lyon", "code": n}})
                    })
                    .collect();
                let n = recipients.len() as u64;
                let body = serde_json::json!({"from": {"email": "news@brand.load.test", "name": "Brand"},
                    "subject": "Spring offers for {{ first_name }}", "html": *html,
                    "text": "Hello {{ first_name }}, see https://shop.example.com/spring", "category": "marketing",
                    "campaign": "spring", "track": track, "recipients": recipients});
                let t = Instant::now();
                match client.post(format!("{base}/v1/messages")).json(&body).send().await {
                    Ok(resp) if resp.status().as_u16() == 202 => {
                        latencies.lock().unwrap().push(t.elapsed().as_secs_f64());
                        sent.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(resp) => eprintln!("\nrequest refused: {} {}", resp.status(), resp.text().await.unwrap_or_default()),
                    Err(e) => eprintln!("\nrequest failed: {e}"),
                }
            }
        }));
    }
    let mut ingest_done = None;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let total = args.messages as u64;
    let mut delivered = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let accepted = sent.load(Ordering::Relaxed);
        if ingest_done.is_none() && workers.iter().all(|w| w.is_finished()) {
            ingest_done = Some(started.elapsed());
        }
        delivered = metric(&client, &base, "facteur_messages_delivered_total").await;
        let el = started.elapsed().as_secs_f64();
        eprint!(
            "\r[{:<40}] accepted {accepted}/{total}  delivered {delivered}/{total}  {:.0} msg/s   ",
            "#".repeat((delivered * 40 / total.max(1)) as usize),
            delivered as f64 / el
        );
        let _ = std::io::stderr().flush();
        if delivered >= total {
            break;
        }
    }
    eprintln!();
    let end_to_end = started.elapsed();
    let ingest = ingest_done.unwrap_or(end_to_end);
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let deferred = metric(&client, &base, "facteur_messages_deferred_total").await;
    println!(
        "messages            {total} to {} domains over {} sink hosts, batches of {}",
        args.domains, args.hosts, args.batch
    );
    println!(
        "ingest              {:.0} msg/s ({:.2} s)",
        total as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64()
    );
    println!("delivered           {delivered} ({deferred} deferrals)");
    println!(
        "end to end          {:.0} msg/s ({:.2} s)",
        delivered as f64 / end_to_end.as_secs_f64(),
        end_to_end.as_secs_f64()
    );
    println!(
        "accept latency      p50 {:.1} ms, p99 {:.1} ms per request of {} recipients",
        percentile(&lat, 0.5) * 1000.0,
        percentile(&lat, 0.99) * 1000.0,
        args.batch
    );
    let flushes = metric(&client, &base, "facteur_spool_flush_duration_seconds_count").await;
    let flush_text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let dump = std::env::temp_dir().join("facteur-load-metrics.txt");
    std::fs::write(&dump, &flush_text)?;
    println!("metrics at the end  {}", dump.display());
    let flush_sum: f64 = flush_text
        .lines()
        .find(|l| l.starts_with("facteur_spool_flush_duration_seconds_sum"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    println!(
        "spool flushes       {flushes} (mean {:.2} ms; {:.1} messages per flush)",
        flush_sum * 1000.0 / flushes.max(1) as f64,
        total as f64 * 2.0 / flushes.max(1) as f64
    );
    if let Some(cpu) = cpu_seconds(pid) {
        println!(
            "server CPU          {cpu:.1} s over {:.1} s ({:.0} µs per message)",
            end_to_end.as_secs_f64(),
            cpu * 1e6 / total as f64
        );
    }
    if let Some(kib) = peak_rss_kib(pid) {
        println!("server peak memory  {:.1} MiB", kib as f64 / 1024.0);
    }
    if delivered < total {
        anyhow::bail!(
            "only {delivered} of {total} delivered before the timeout; see {}",
            dir.path().display()
        );
    }
    Ok(())
}
