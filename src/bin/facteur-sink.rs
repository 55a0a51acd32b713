//! `facteur-sink`: an SMTP sink for facteur's integration tests, whose magic
//! recipients answer as a difficult remote MTA would.
//!
//! ```text
//! facteur-sink --listen 127.0.0.2:2526 [--listen ...] --log sink.jsonl [--maildir DIR]
//! ```
//!
//! It prints `listening ADDR` on stdout for each bound address (so a test
//! may ask for port 0), then writes one JSON object a line to `--log`:
//! `connect`, `disconnect`, `message` (with the envelope, the size and the
//! stored file), `reply` (a magic answer), `hangup` and `slow`. With
//! `--maildir`, each accepted message is stored as `<n>.eml`, written under a
//! temporary name first so that a reader never sees half a message.
//!
//! Magic recipients, by local part (case-insensitive, any domain); attempts
//! are counted per address across connections:
//! - `permfail`: `550 5.1.1 no such user`.
//! - `tempfail-N`: `451 4.3.0 try again` for the first N attempts, then
//!   accepted; a bare `tempfail` always answers 451.
//! - `slowdown` / `slowdown-N`: `421 4.7.0 too many messages, slow down` and
//!   the connection is closed, the first (N) time(s); then accepted.
//! - `hangup` / `hangup-N`: RCPT is accepted, then the connection is closed
//!   without reply in the middle of DATA, the first (N) time(s).
//! - `slow-S`: the end of DATA is answered after S seconds.
//!
//! The protocol is written by hand: EHLO (PIPELINING, 8BITMIME, SIZE,
//! ENHANCEDSTATUSCODES), HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET,
//! NOOP, QUIT. Replies are buffered while pipelined commands are waiting in
//! the input and written out before the sink waits for more input.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Largest message accepted, announced with SIZE.
const MAX_MESSAGE: usize = 50 * 1024 * 1024;
/// Longest command line; longer ones are refused and the connection closed.
const MAX_COMMAND_LINE: u64 = 4096;
/// Most recipients in one transaction.
const MAX_RECIPIENTS: usize = 1000;
/// A connection silent for this long is closed with a 421.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest delay a `slow-S` recipient may ask for.
const MAX_SLOW_SECS: u64 = 3600;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "SMTP sink with magic recipients, for facteur's tests")]
struct Args {
    /// Address to listen on (repeatable); port 0 picks a free port.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
    /// JSON-lines event log.
    #[arg(long)]
    log: PathBuf,
    /// Directory where each accepted message is stored as `<n>.eml`.
    #[arg(long)]
    maildir: Option<PathBuf>,
}

/// What a recipient's local part asks the sink to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Magic {
    /// An ordinary recipient: accepted.
    Accept,
    /// Refused for good at RCPT.
    PermFail,
    /// Refused for now at RCPT, the first N attempts (`None`: always).
    TempFail(Option<u32>),
    /// 421 and the connection closed at RCPT, the first N attempts.
    SlowDown(u32),
    /// Connection dropped during DATA, the first N attempts.
    Hangup(u32),
    /// End of DATA answered after this many seconds.
    Slow(u64),
}

impl Magic {
    /// Reads the magic out of an address (`local@domain`).
    fn of(address: &str) -> Magic {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        let local = local.to_ascii_lowercase();
        let (word, n) = match local.rsplit_once('-') {
            Some((word, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                (word, n.parse::<u64>().ok())
            }
            _ => (local.as_str(), None),
        };
        let count = |n: Option<u64>| n.map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
        match (word, n) {
            ("permfail", None) => Magic::PermFail,
            ("tempfail", None) => Magic::TempFail(None),
            ("tempfail", Some(_)) => Magic::TempFail(Some(count(n))),
            ("slowdown", _) => Magic::SlowDown(count(n)),
            ("hangup", _) => Magic::Hangup(count(n)),
            ("slow", Some(s)) => Magic::Slow(s.min(MAX_SLOW_SECS)),
            _ => Magic::Accept,
        }
    }

    /// Seconds to wait before answering the end of DATA.
    fn delay(self) -> Option<u64> {
        match self {
            Magic::Slow(secs) => Some(secs),
            _ => None,
        }
    }
}

/// State shared by every connection.
struct Shared {
    /// The event log; a std mutex because a line is written without awaiting.
    log: Mutex<std::fs::File>,
    maildir: Option<PathBuf>,
    /// Attempts seen per (magic kind, lower-cased address), across connections.
    attempts: Mutex<HashMap<(&'static str, String), u32>>,
    next_conn: AtomicU64,
    next_message: AtomicU64,
}

impl Shared {
    /// Appends one event, with its time, to the log. A failed write is
    /// reported on stderr: the sink keeps serving.
    fn event(&self, mut ev: Value) {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        ev["t"] = json!(t as u64);
        let mut line = ev.to_string();
        line.push('\n');
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = log.write_all(line.as_bytes()) {
            eprintln!("facteur-sink: writing the log: {e}");
        }
    }

    /// Counts one more attempt of `kind` for `address`; true while the
    /// attempt is among the first `limit`.
    fn within_first(&self, kind: &'static str, address: &str, limit: u32) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let seen = attempts
            .entry((kind, address.to_ascii_lowercase()))
            .or_insert(0);
        if *seen < limit {
            *seen += 1;
            true
        } else {
            false
        }
    }
}

/// The envelope of the transaction in progress.
#[derive(Default)]
struct Envelope {
    from: String,
    rcpts: Vec<String>,
}

/// What the session does after a command.
enum Flow {
    Continue,
    /// Flush the replies, then close.
    Close,
    /// Close at once, without a reply.
    Drop,
}

/// How a DATA body ended.
enum Body {
    Complete(Vec<u8>),
    TooBig,
    Hangup,
    Eof,
}

/// One SMTP connection.
struct Session {
    id: u64,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Replies not yet written: kept while pipelined commands are waiting.
    out: Vec<u8>,
    shared: Arc<Shared>,
    envelope: Option<Envelope>,
}

impl Session {
    fn reply(&mut self, code: u16, text: &str) {
        self.out
            .extend_from_slice(format!("{code} {text}\r\n").as_bytes());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        self.writer.flush().await
    }

    /// Serves the connection until QUIT, EOF, an error or a magic hang-up.
    async fn run(mut self) -> std::io::Result<()> {
        self.reply(220, "localhost ESMTP facteur-sink");
        loop {
            // Pipelining: answer only once every command already received
            // has been handled, and always before waiting for input.
            if self.reader.buffer().is_empty() {
                self.flush().await?;
            }
            let mut line = Vec::new();
            let mut limited = (&mut self.reader).take(MAX_COMMAND_LINE);
            let read = limited.read_until(b'\n', &mut line);
            let n = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
                Ok(n) => n?,
                Err(_) => {
                    self.reply(421, "4.4.2 idle too long, closing");
                    return self.flush().await;
                }
            };
            if n == 0 {
                return Ok(());
            }
            if !line.ends_with(b"\n") {
                self.reply(500, "5.5.2 line too long");
                return self.flush().await;
            }
            let text = String::from_utf8_lossy(&line);
            match self.command(text.trim_end_matches(['\r', '\n'])).await? {
                Flow::Continue => {}
                Flow::Close => return self.flush().await,
                Flow::Drop => return Ok(()),
            }
        }
    }

    async fn command(&mut self, line: &str) -> std::io::Result<Flow> {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                self.envelope = None;
                self.out.extend_from_slice(
                    format!(
                        "250-localhost greets {}\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                         250-SIZE {MAX_MESSAGE}\r\n250 ENHANCEDSTATUSCODES\r\n",
                        arg.trim()
                    )
                    .as_bytes(),
                );
            }
            "HELO" => {
                self.envelope = None;
                self.reply(250, "localhost");
            }
            "MAIL" => self.mail(arg),
            "RCPT" => return Ok(self.rcpt(arg)),
            "DATA" => return self.data().await,
            "RSET" => {
                self.envelope = None;
                self.reply(250, "2.0.0 ok");
            }
            "NOOP" => self.reply(250, "2.0.0 ok"),
            "QUIT" => {
                self.reply(221, "2.0.0 bye");
                return Ok(Flow::Close);
            }
            "VRFY" => self.reply(252, "2.5.2 cannot verify, will attempt delivery"),
            "STARTTLS" | "BDAT" | "EXPN" | "HELP" | "AUTH" => {
                self.reply(502, "5.5.1 command not implemented")
            }
            _ => self.reply(500, "5.5.2 command unrecognized"),
        }
        Ok(Flow::Continue)
    }

    fn mail(&mut self, arg: &str) {
        if self.envelope.is_some() {
            return self.reply(503, "5.5.1 nested MAIL command");
        }
        let Some((from, params)) = path_arg(arg, "FROM:") else {
            return self.reply(501, "5.5.4 syntax: MAIL FROM:<address>");
        };
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if key.eq_ignore_ascii_case("SIZE") && value.parse::<usize>().unwrap_or(0) > MAX_MESSAGE
            {
                return self.reply(552, "5.3.4 message too big");
            }
        }
        self.envelope = Some(Envelope {
            from,
            rcpts: Vec::new(),
        });
        self.reply(250, "2.1.0 ok");
    }

    fn rcpt(&mut self, arg: &str) -> Flow {
        let Some(rcpts) = self.envelope.as_ref().map(|e| e.rcpts.len()) else {
            self.reply(503, "5.5.1 need MAIL first");
            return Flow::Continue;
        };
        let Some((rcpt, _)) = path_arg(arg, "TO:").filter(|(r, _)| !r.is_empty()) else {
            self.reply(501, "5.5.4 syntax: RCPT TO:<address>");
            return Flow::Continue;
        };
        if rcpts >= MAX_RECIPIENTS {
            self.reply(452, "4.5.3 too many recipients");
            return Flow::Continue;
        }
        let refusal = match Magic::of(&rcpt) {
            Magic::PermFail => Some((550, "5.1.1 no such user")),
            Magic::TempFail(None) => Some((451, "4.3.0 try again")),
            Magic::TempFail(Some(n)) if self.shared.within_first("tempfail", &rcpt, n) => {
                Some((451, "4.3.0 try again"))
            }
            Magic::SlowDown(n) if self.shared.within_first("slowdown", &rcpt, n) => {
                Some((421, "4.7.0 too many messages, slow down"))
            }
            _ => None,
        };
        if let Some((code, text)) = refusal {
            self.shared
                .event(json!({"ev": "reply", "conn": self.id, "rcpt": rcpt,
                                     "code": code, "text": text}));
            self.reply(code, text);
            return if code == 421 {
                Flow::Close
            } else {
                Flow::Continue
            };
        }
        if let Some(envelope) = self.envelope.as_mut() {
            envelope.rcpts.push(rcpt);
        }
        self.reply(250, "2.1.5 ok");
        Flow::Continue
    }

    async fn data(&mut self) -> std::io::Result<Flow> {
        let Some(envelope) = self.envelope.take() else {
            self.reply(503, "5.5.1 need MAIL first");
            return Ok(Flow::Continue);
        };
        if envelope.rcpts.is_empty() {
            self.reply(554, "5.5.1 no valid recipients");
            return Ok(Flow::Continue);
        }
        let hangup: Vec<&String> = envelope
            .rcpts
            .iter()
            .filter(|r| match Magic::of(r) {
                Magic::Hangup(n) => self.shared.within_first("hangup", r, n),
                _ => false,
            })
            .collect();
        let hangup = (!hangup.is_empty()).then(|| json!(hangup));
        self.reply(354, "end data with <CR><LF>.<CR><LF>");
        self.flush().await?;
        let body = match tokio::time::timeout(IDLE_TIMEOUT, self.read_body(hangup.is_some())).await
        {
            Ok(body) => body?,
            Err(_) => return Ok(Flow::Drop),
        };
        let body = match body {
            Body::Complete(body) => body,
            Body::TooBig => {
                self.reply(552, "5.3.4 message too big");
                return Ok(Flow::Continue);
            }
            Body::Eof => return Ok(Flow::Drop),
            Body::Hangup => {
                self.shared
                    .event(json!({"ev": "hangup", "conn": self.id, "rcpt": hangup}));
                return Ok(Flow::Drop);
            }
        };
        let delay = envelope.rcpts.iter().filter_map(|r| Magic::of(r).delay());
        if let Some(secs) = delay.max() {
            self.shared
                .event(json!({"ev": "slow", "conn": self.id, "secs": secs}));
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
        let n = self.shared.next_message.fetch_add(1, Ordering::Relaxed) + 1;
        let file = match self.store(n, &body) {
            Ok(file) => file,
            Err(e) => {
                eprintln!("facteur-sink: storing message {n}: {e}");
                self.reply(451, "4.3.0 cannot store the message");
                return Ok(Flow::Continue);
            }
        };
        self.shared
            .event(json!({"ev": "message", "conn": self.id, "n": n,
            "from": envelope.from, "rcpt": envelope.rcpts, "size": body.len(), "file": file}));
        self.reply(250, &format!("2.0.0 ok: queued as {n}"));
        Ok(Flow::Continue)
    }

    /// Reads a DATA body up to the lone dot, removing dot-stuffing. With
    /// `hangup`, gives up after the first line.
    async fn read_body(&mut self, hangup: bool) -> std::io::Result<Body> {
        let mut body = Vec::new();
        let mut too_big = false;
        let mut at_line_start = true;
        loop {
            let mut chunk = Vec::new();
            let n = (&mut self.reader)
                .take(64 * 1024)
                .read_until(b'\n', &mut chunk)
                .await?;
            if n == 0 {
                return Ok(Body::Eof);
            }
            if at_line_start && (chunk == b".\r\n" || chunk == b".\n") {
                return Ok(if too_big {
                    Body::TooBig
                } else {
                    Body::Complete(body)
                });
            }
            if hangup {
                return Ok(Body::Hangup);
            }
            let line = if at_line_start && chunk.first() == Some(&b'.') {
                &chunk[1..]
            } else {
                &chunk[..]
            };
            at_line_start = chunk.ends_with(b"\n");
            if body.len() + line.len() > MAX_MESSAGE {
                too_big = true;
                body = Vec::new();
            } else if !too_big {
                body.extend_from_slice(line);
            }
        }
    }

    /// Stores message `n` in the maildir, if there is one; returns its path.
    fn store(&self, n: u64, body: &[u8]) -> std::io::Result<Option<String>> {
        let Some(dir) = &self.shared.maildir else {
            return Ok(None);
        };
        let tmp = dir.join(format!(".{n}.eml.tmp"));
        let path = dir.join(format!("{n}.eml"));
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)?;
        Ok(Some(path.display().to_string()))
    }
}

/// Parses `FROM:<addr> params` (or `TO:`): the address without its angle
/// brackets, and what follows. None when the syntax is wrong.
fn path_arg(arg: &str, keyword: &str) -> Option<(String, String)> {
    let arg = arg.trim_start();
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((rest[..end].to_string(), rest[end + 1..].trim().to_string()))
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("facteur-sink: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move { handle(stream, peer, shared).await });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    shared.event(json!({"ev": "connect", "conn": id, "peer": peer.to_string(), "local": local}));
    let (read, writer) = stream.into_split();
    let session = Session {
        id,
        reader: BufReader::new(read),
        writer,
        out: Vec::new(),
        shared: shared.clone(),
        envelope: None,
    };
    let result = session.run().await;
    let error = result.err().map(|e| e.to_string());
    shared.event(
        json!({"ev": "disconnect", "conn": id, "peer": peer.to_string(),
                        "local": local, "error": error}),
    );
}

/// Reports a start-up failure on stderr.
fn fail(what: String) -> ExitCode {
    eprintln!("facteur-sink: {what}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log);
    let log = match file {
        Ok(log) => log,
        Err(e) => return fail(format!("opening {}: {e}", args.log.display())),
    };
    if let Some(Err(e)) = args.maildir.as_ref().map(std::fs::create_dir_all) {
        return fail(format!("creating the maildir: {e}"));
    }
    let shared = Arc::new(Shared {
        log: Mutex::new(log),
        maildir: args.maildir,
        attempts: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        next_message: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for addr in args.listen {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => return fail(format!("binding {addr}: {e}")),
        };
        match listener.local_addr() {
            Ok(bound) => println!("listening {bound}"),
            Err(e) => return fail(format!("local address: {e}")),
        }
        tasks.push(tokio::spawn(serve(listener, shared.clone())));
    }
    // stdout may be a pipe: make sure the test sees the addresses now.
    let _ = std::io::stdout().flush();
    for task in tasks {
        let _ = task.await;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_read_from_the_local_part() {
        assert_eq!(Magic::of("permfail@x.test"), Magic::PermFail);
        assert_eq!(Magic::of("PermFail@X.TEST"), Magic::PermFail);
        assert_eq!(Magic::of("tempfail-2@x.test"), Magic::TempFail(Some(2)));
        assert_eq!(Magic::of("tempfail@x.test"), Magic::TempFail(None));
        assert_eq!(Magic::of("slowdown@x.test"), Magic::SlowDown(1));
        assert_eq!(Magic::of("hangup-3@x.test"), Magic::Hangup(3));
        assert_eq!(Magic::of("slow-3@x.test"), Magic::Slow(3));
        assert_eq!(Magic::of("slow@x.test"), Magic::Accept);
        assert_eq!(Magic::of("ann@x.test"), Magic::Accept);
        assert_eq!(Magic::of("tempfail-x@x.test"), Magic::Accept);
        assert_eq!(
            Magic::of("tempfail-99999999999@x"),
            Magic::TempFail(Some(u32::MAX))
        );
        assert_eq!(Magic::of(""), Magic::Accept);
    }

    #[test]
    fn paths_are_parsed_with_their_parameters() {
        assert_eq!(
            path_arg("FROM:<a@b.test> SIZE=10 BODY=8BITMIME", "FROM:"),
            Some(("a@b.test".into(), "SIZE=10 BODY=8BITMIME".into()))
        );
        assert_eq!(
            path_arg("from: <>", "FROM:"),
            Some((String::new(), String::new()))
        );
        assert_eq!(path_arg("TO:a@b.test", "TO:"), None);
        assert_eq!(path_arg("TO:<a@b.test", "TO:"), None);
        assert_eq!(path_arg("T", "TO:"), None);
        assert_eq!(path_arg("é", "TO:"), None);
    }
}
