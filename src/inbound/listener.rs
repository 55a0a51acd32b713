//! facteur's own SMTP listener (`inbound.listen`) for mail that comes back.
//!
//! It takes mail only for the addresses facteur serves: any address of
//! `delivery.bounce_domain` and the `inbound.reply_addresses`; a recipient
//! of another domain is refused (`550 5.7.1 relaying denied`): facteur is
//! never a relay. Each accepted message goes through the
//! [`pipeline`](super::pipeline) before the end of DATA is answered, and the
//! answer says what was done (`250 2.0.0 bounce recorded for message X`).
//!
//! The protocol is written by hand: EHLO/HELO, PIPELINING (commands are
//! read from one buffer, so a pipelined group loses nothing), STARTTLS (RFC
//! 3207, with rustls, when `inbound.tls_cert_file` and `tls_key_file` are
//! set; commands pipelined behind it are refused, not carried into the TLS
//! session), MAIL (with `SIZE=`), RCPT,
//! DATA with dot-unstuffing and `inbound.max_message_bytes` (552 beyond),
//! RSET, NOOP, QUIT, VRFY, HELP. One task per connection; a semaphore caps
//! connections at `inbound.max_connections`; a watch channel stops the
//! accept loop and the connections waiting for a command, while a
//! transaction in flight finishes. [`Listener::stop`] returns when the
//! last connection has ended (or its deadline has passed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
    WriteHalf,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn, Instrument};

use super::pipeline::{self, Envelope, Via};
use super::{Acceptance, Inbound};

/// Longest command line; longer ones close the connection.
const MAX_COMMAND_LINE: usize = 2048;
/// Most recipients in one transaction.
const MAX_RECIPIENTS: usize = 100;
/// Errors tolerated on one connection before it is closed.
const MAX_ERRORS: u32 = 10;
/// A client silent this long while a command or data is awaited is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Size of each read of message data.
const DATA_CHUNK: u64 = 64 * 1024;

/// Any stream a connection runs over: TCP, then TLS after STARTTLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;
type Reader = BufReader<ReadHalf<Stream>>;
type Writer = WriteHalf<Stream>;

/// The TLS acceptor of `inbound.tls_cert_file` and `tls_key_file`, when set.
pub fn tls_acceptor(cfg: &crate::config::InboundConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if cfg.tls_cert_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let (cert, key) = (&cfg.tls_cert_file, &cfg.tls_key_file);
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("inbound.tls_cert_file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("inbound.tls_cert_file {}: no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("inbound.tls_key_file {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
    .map_err(|e| anyhow::anyhow!("inbound.tls_cert_file: {e}"))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// The running listener.
pub struct Listener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Binds `inbound.listen` and starts accepting. Stops when `stop`
    /// becomes true.
    pub async fn start(
        inbound: Arc<Inbound>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Listener>> {
        let Some(listen) = inbound.app.cfg.inbound.listen else {
            return Ok(None);
        };
        let socket = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("inbound.listen {listen}: {e}"))?;
        let addr = socket.local_addr()?;
        let tls = tls_acceptor(&inbound.app.cfg.inbound)?.map(Arc::new);
        info!(listen = %addr, starttls = tls.is_some(), "inbound SMTP listener is serving");
        let task = tokio::spawn(serve(socket, inbound, tls, stop));
        Ok(Some(Listener { addr, task }))
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits, at most `deadline`, until the accept loop and every
    /// connection have ended (the stop signal must have been sent).
    pub async fn stop(self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            warn!("inbound SMTP connections still open at the shutdown deadline");
        }
    }
}

/// The accept loop: one task per connection, at most `max_connections`.
async fn serve(
    socket: TcpListener,
    inbound: Arc<Inbound>,
    tls: Option<Arc<TlsAcceptor>>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(inbound.app.cfg.inbound.max_connections));
    // Every connection holds a sender; when all are dropped, `recv` ends.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    loop {
        let permit = tokio::select! {
            _ = stopped(&mut stop) => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "inbound accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = Connection::new(inbound.clone(), stream, peer, tls.clone(), stop.clone());
        let alive = alive.clone();
        let span = tracing::info_span!("inbound_smtp", peer = %peer);
        tokio::spawn(
            async move {
                conn.run().await;
                drop(permit);
                drop(alive);
            }
            .instrument(span),
        );
    }
    drop(socket);
    drop(alive);
    let _ = all_done.recv().await;
}

/// Completes once the stop signal is sent (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A stream split into a buffered reader and a writer.
fn halves(stream: Stream) -> (Reader, Writer) {
    let (r, w) = tokio::io::split(stream);
    (BufReader::new(r), w)
}

/// Why a connection ends.
enum Closed {
    /// The client quit or hung up.
    Client,
    /// Too long a line, too many errors, a timeout, shutdown, I/O error.
    Us,
}

/// One SMTP connection.
struct Connection {
    inbound: Arc<Inbound>,
    reader: Reader,
    writer: Writer,
    peer: SocketAddr,
    /// Offered with STARTTLS while the session is not secured yet.
    tls: Option<Arc<TlsAcceptor>>,
    /// STARTTLS succeeded.
    secured: bool,
    stop: watch::Receiver<bool>,
    /// The name the client gave in HELO/EHLO.
    helo: Option<String>,
    /// The transaction under way: the sender, once MAIL was accepted.
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    errors: u32,
}

impl Connection {
    fn new(
        inbound: Arc<Inbound>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<TlsAcceptor>>,
        stop: watch::Receiver<bool>,
    ) -> Connection {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = halves(Box::new(stream));
        Connection {
            inbound,
            reader,
            writer,
            peer,
            tls,
            secured: false,
            stop,
            helo: None,
            mail_from: None,
            rcpt_to: Vec::new(),
            errors: 0,
        }
    }

    async fn run(mut self) {
        debug!("connected");
        let greeting = format!(
            "220 {} ESMTP facteur inbound",
            self.inbound.app.cfg.delivery.helo_name
        );
        if self.reply(&greeting).await.is_err() {
            return;
        }
        loop {
            let line = match self.next_command().await {
                Ok(line) => line,
                Err(_) => break,
            };
            match self.command(&line).await {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        debug!("disconnected");
    }

    /// The next command line, without its line end.
    async fn next_command(&mut self) -> Result<String, Closed> {
        enum Got {
            Stop,
            Read(std::io::Result<usize>),
            Idle,
        }
        let mut buf = Vec::new();
        let mut stop = self.stop.clone();
        let got = {
            let mut limited = (&mut self.reader).take(MAX_COMMAND_LINE as u64 + 1);
            let read = limited.read_until(b'\n', &mut buf);
            tokio::select! {
                _ = stopped(&mut stop) => Got::Stop,
                r = tokio::time::timeout(IDLE_TIMEOUT, read) => match r {
                    Ok(r) => Got::Read(r),
                    Err(_) => Got::Idle,
                },
            }
        };
        match got {
            Got::Stop => {
                let _ = self.reply("421 4.3.2 service shutting down").await;
                Err(Closed::Us)
            }
            Got::Idle => {
                let _ = self.reply("421 4.4.2 idle for too long").await;
                Err(Closed::Us)
            }
            Got::Read(Err(_)) => Err(Closed::Us),
            Got::Read(Ok(0)) => Err(Closed::Client),
            Got::Read(Ok(_)) if !buf.ends_with(b"\n") => {
                let _ = self.reply("500 5.5.2 line too long").await;
                Err(Closed::Us)
            }
            Got::Read(Ok(_)) => {
                let line = String::from_utf8_lossy(&buf);
                Ok(line.trim_end_matches(['\r', '\n']).to_string())
            }
        }
    }

    /// Writes one reply (which may hold several lines joined by CRLF).
    async fn reply(&mut self, text: &str) -> std::io::Result<()> {
        let mut out = text.replace("\r\n", "\n").replace('\n', "\r\n");
        out.push_str("\r\n");
        self.writer.write_all(out.as_bytes()).await
    }

    /// A reply to a client error, counted; Ok(false) when the connection
    /// must end.
    async fn error(&mut self, text: &str) -> std::io::Result<bool> {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.reply("421 4.7.0 too many errors, closing").await?;
            return Ok(false);
        }
        self.reply(text).await?;
        Ok(true)
    }

    /// Handles one command; Ok(false) when the connection must end.
    async fn command(&mut self, line: &str) -> std::io::Result<bool> {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let arg = line.get(verb.len()..).unwrap_or("").trim();
        match verb.as_str() {
            "EHLO" | "HELO" => self.hello(&verb, arg).await,
            "MAIL" => self.mail(arg).await,
            "RCPT" => self.rcpt(arg).await,
            "DATA" => self.data().await,
            "STARTTLS" => self.starttls(arg).await,
            "RSET" => {
                self.reset();
                self.reply("250 2.0.0 ok").await.map(|_| true)
            }
            "NOOP" => self.reply("250 2.0.0 ok").await.map(|_| true),
            "QUIT" => {
                self.reply("221 2.0.0 bye").await?;
                Ok(false)
            }
            "VRFY" => self
                .reply("252 2.5.2 cannot verify, but will take the message")
                .await
                .map(|_| true),
            "HELP" => self
                .reply("214 2.0.0 EHLO MAIL RCPT DATA RSET NOOP QUIT")
                .await
                .map(|_| true),
            "" => self.error("500 5.5.2 empty command").await,
            _ => self.error("502 5.5.1 command not implemented").await,
        }
    }

    /// RFC 3207: answers 220, then the TLS handshake; the client starts
    /// over with EHLO. Ok(false) when the connection must end.
    async fn starttls(&mut self, arg: &str) -> std::io::Result<bool> {
        let Some(acceptor) = self.tls.clone().filter(|_| !self.secured) else {
            return self.error("502 5.5.1 command not implemented").await;
        };
        if !arg.is_empty() {
            return self.error("501 5.5.4 STARTTLS takes no parameter").await;
        }
        // Anything sent behind STARTTLS was sent in clear text and must not
        // be taken as coming through TLS (CVE-2011-0411).
        if !self.reader.buffer().is_empty() {
            self.reply("554 5.5.1 commands pipelined after STARTTLS")
                .await?;
            return Ok(false);
        }
        self.reply("220 2.0.0 ready to start TLS").await?;
        let (reader, writer) = halves(Box::new(tokio::io::duplex(1).0));
        let reader = std::mem::replace(&mut self.reader, reader);
        let writer = std::mem::replace(&mut self.writer, writer);
        let plain = reader.into_inner().unsplit(writer);
        match tokio::time::timeout(IDLE_TIMEOUT, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                (self.reader, self.writer) = halves(Box::new(tls));
                self.secured = true;
                self.helo = None;
                self.reset();
                debug!("TLS started");
                Ok(true)
            }
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                Ok(false)
            }
            Err(_) => Ok(false),
        }
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    async fn hello(&mut self, verb: &str, arg: &str) -> std::io::Result<bool> {
        if arg.is_empty() {
            return self
                .error("501 5.5.4 a domain or address is required")
                .await;
        }
        self.reset();
        self.helo = Some(arg.split_whitespace().next().unwrap_or(arg).to_string());
        let me = &self.inbound.app.cfg.delivery.helo_name;
        let text = if verb == "EHLO" {
            let max = self.inbound.app.cfg.inbound.max_message_bytes;
            let tls = if self.tls.is_some() && !self.secured {
                "250-STARTTLS\n"
            } else {
                ""
            };
            format!("250-{me} hello {arg}\n250-PIPELINING\n{tls}250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250 SIZE {max}")
        } else {
            format!("250 {me} hello {arg}")
        };
        self.reply(&text).await.map(|_| true)
    }

    async fn mail(&mut self, arg: &str) -> std::io::Result<bool> {
        if self.helo.is_none() {
            return self.error("503 5.5.1 send EHLO or HELO first").await;
        }
        if self.mail_from.is_some() {
            return self.error("503 5.5.1 a transaction is already open").await;
        }
        let Some((address, params)) = path_argument(arg, "FROM:") else {
            return self.error("501 5.5.4 syntax: MAIL FROM:<address>").await;
        };
        let max = self.inbound.app.cfg.inbound.max_message_bytes;
        let size = params.split_whitespace().find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.eq_ignore_ascii_case("SIZE")
                .then(|| v.parse::<usize>().ok())?
        });
        if size.is_some_and(|s| s > max) {
            return self
                .error(&format!(
                    "552 5.3.4 message size exceeds the limit of {max} bytes"
                ))
                .await;
        }
        self.mail_from = Some(address);
        self.reply("250 2.1.0 sender ok").await.map(|_| true)
    }

    async fn rcpt(&mut self, arg: &str) -> std::io::Result<bool> {
        if self.mail_from.is_none() {
            return self.error("503 5.5.1 send MAIL first").await;
        }
        let Some((address, _)) = path_argument(arg, "TO:") else {
            return self.error("501 5.5.4 syntax: RCPT TO:<address>").await;
        };
        if self.rcpt_to.len() >= MAX_RECIPIENTS {
            return self
                .reply("452 4.5.3 too many recipients")
                .await
                .map(|_| true);
        }
        match self.inbound.accepts(&address) {
            Acceptance::Served => {
                self.rcpt_to.push(address);
                self.reply("250 2.1.5 recipient ok").await.map(|_| true)
            }
            Acceptance::UnknownAddress => {
                debug!(rcpt = %address, "unknown address refused");
                self.error("550 5.1.1 no such address here").await
            }
            Acceptance::Foreign => {
                info!(rcpt = %address, "relaying refused");
                self.error("550 5.7.1 relaying denied").await
            }
        }
    }

    async fn data(&mut self) -> std::io::Result<bool> {
        if self.mail_from.is_none() {
            return self.error("503 5.5.1 send MAIL first").await;
        }
        if self.rcpt_to.is_empty() {
            return self.error("554 5.5.1 no valid recipients").await;
        }
        self.reply("354 end data with <CR><LF>.<CR><LF>").await?;
        let max = self.inbound.app.cfg.inbound.max_message_bytes;
        let body = match read_data(&mut self.reader, max).await {
            Ok(b) => b,
            Err(Closed::Client) => return Ok(false),
            Err(Closed::Us) => {
                let _ = self.reply("421 4.4.2 timeout or error reading data").await;
                return Ok(false);
            }
        };
        let envelope = Envelope {
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
        };
        let Some(body) = body else {
            return self
                .reply(&format!(
                    "552 5.3.4 message exceeds the limit of {max} bytes"
                ))
                .await
                .map(|_| true);
        };
        let raw = self.trace_headers(&envelope, body);
        match pipeline::process(&self.inbound, raw, Some(envelope), Via::Smtp).await {
            Ok(outcome) => {
                let text = format!("250 2.0.0 {}", outcome.summary());
                self.reply(&text).await.map(|_| true)
            }
            Err(e) => {
                warn!(error = %e, "inbound message not processed");
                self.reply("451 4.3.0 temporary failure, try again later")
                    .await
                    .map(|_| true)
            }
        }
    }

    /// `Return-Path` and `Received` (RFC 5321 §4.4), before the message.
    fn trace_headers(&self, envelope: &Envelope, body: Vec<u8>) -> Vec<u8> {
        let me = &self.inbound.app.cfg.delivery.helo_name;
        let helo: String = self
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(100)
            .collect();
        let from: String = envelope
            .mail_from
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let date = chrono::Utc::now().to_rfc2822();
        // RFC 3848: ESMTPS when the message came through TLS.
        let proto = if self.secured { "ESMTPS" } else { "ESMTP" };
        let mut raw = format!(
            "Return-Path: <{from}>\r\nReceived: from {helo} ([{}])\r\n\tby {me} (facteur) with {proto};\r\n\t{date}\r\n",
            self.peer.ip()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw
    }
}

/// `FROM:<a@b> PARAMS` → (`a@b`, `PARAMS`); `<>` gives an empty address.
fn path_argument(arg: &str, keyword: &str) -> Option<(String, String)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let (address, params) = match rest.strip_prefix('<') {
        Some(inner) => {
            let (a, p) = inner.split_once('>')?;
            (a, p)
        }
        None => rest.split_once(' ').unwrap_or((rest, "")),
    };
    let address = address.trim();
    if address.contains(|c: char| c.is_whitespace() || c.is_control()) || address.len() > 320 {
        return None;
    }
    // A source route (`@a,@b:user@host`) is ignored (RFC 5321 §4.1.2).
    let address = address.rsplit_once(':').map_or(address, |(_, a)| a);
    Some((address.to_string(), params.trim().to_string()))
}

/// Reads message data up to the lone dot, undoing dot-stuffing. `None`
/// when it is larger than `max` (all of it is read anyway, so that the
/// connection stays in step).
async fn read_data(reader: &mut Reader, max: usize) -> Result<Option<Vec<u8>>, Closed> {
    let mut body = Vec::new();
    let mut too_big = false;
    let mut line = Vec::new();
    let mut at_line_start = true;
    loop {
        line.clear();
        let mut limited = (&mut *reader).take(DATA_CHUNK);
        let read = limited.read_until(b'\n', &mut line);
        let n = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Err(Closed::Us),
        };
        if n == 0 {
            return Err(Closed::Client);
        }
        let mut chunk = &line[..];
        if at_line_start {
            if chunk == b".\r\n" || chunk == b".\n" {
                break;
            }
            if chunk.first() == Some(&b'.') {
                chunk = &chunk[1..];
            }
        }
        at_line_start = chunk.ends_with(b"\n");
        if body.len() + chunk.len() > max {
            too_big = true;
            body = Vec::new();
        }
        if !too_big {
            body.extend_from_slice(chunk);
        }
    }
    Ok((!too_big).then_some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_arguments() {
        assert_eq!(
            path_argument("FROM:<a@b.test> SIZE=10", "FROM:"),
            Some(("a@b.test".into(), "SIZE=10".into()))
        );
        assert_eq!(
            path_argument("from: <>", "FROM:"),
            Some(("".into(), "".into()))
        );
        assert_eq!(
            path_argument("TO:<@relay.test:c@d.test>", "TO:"),
            Some(("c@d.test".into(), "".into()))
        );
        assert_eq!(
            path_argument("TO:c@d.test", "TO:"),
            Some(("c@d.test".into(), "".into()))
        );
        assert_eq!(path_argument("TO <c@d.test>", "TO:"), None);
        assert_eq!(path_argument("TO:<c@d.test", "TO:"), None);
        assert_eq!(path_argument("", "TO:"), None);
    }
}
