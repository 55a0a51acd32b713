//! One SMTP connection, with mail-send: connect, greeting, EHLO, STARTTLS,
//! then transactions (pipelined where the server offers PIPELINING).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_send::SmtpClient;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EhloResponse, Response, EXT_8BIT_MIME, EXT_PIPELINING, EXT_START_TLS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::reply::{from_response, Outcome};
use crate::config::TlsPolicy;
use crate::events::SmtpReply;

/// Any stream an SMTP session runs over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a connection could not be set up.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP, TLS or a timeout: try another host, or defer.
    Network(String),
    /// The server answered the greeting or EHLO with an error.
    Refused(SmtpReply),
}

/// An open SMTP session, ready for transactions.
pub struct Session {
    client: SmtpClient<Box<dyn Io>>,
    pipelining: bool,
    eight_bit: bool,
    /// Bytes read past the last reply (pipelined replies arrive together).
    pending: Vec<u8>,
    /// The next transaction's MAIL, RCPT and DATA went out after the last
    /// message body; their replies are still to be read.
    envelope_sent: bool,
    /// True when STARTTLS succeeded.
    pub tls: bool,
    /// The host name and address connected to.
    pub peer: (String, SocketAddr),
}

/// What [`Session::send`] did.
#[derive(Debug)]
pub struct Sent {
    /// The message's outcome; `Err` when the connection is no longer usable.
    pub outcome: Result<Outcome, Outcome>,
    /// Whether the next message's envelope went out behind this body.
    pub then_sent: bool,
}

/// Settings of a connection attempt.
pub struct ConnectOptions<'a> {
    /// EHLO name.
    pub helo: &'a str,
    /// Host name for TLS.
    pub host: &'a str,
    /// TLS policy.
    pub tls: TlsPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Per-command timeout.
    pub command_timeout: Duration,
    /// Verifying TLS connector (for `required`) and a lenient one
    /// (opportunistic TLS accepts any certificate, as MTAs do).
    pub tls_strict: &'a TlsConnector,
    /// The lenient connector.
    pub tls_lenient: &'a TlsConnector,
}

fn net(e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Network(e.to_string())
}

impl Session {
    /// Connects, reads the greeting, says EHLO and starts TLS as the policy asks.
    pub async fn connect(
        addr: SocketAddr,
        o: &ConnectOptions<'_>,
    ) -> Result<Session, ConnectError> {
        let stream = tokio::time::timeout(o.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Network(format!("connect to {addr} timed out")))?
            .map_err(|e| ConnectError::Network(format!("connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut client = SmtpClient {
            stream,
            timeout: o.command_timeout,
        };
        let greeting = tokio::time::timeout(o.command_timeout, client.read())
            .await
            .map_err(|_| net("greeting timed out"))?
            .map_err(|e| net(format!("greeting: {e}")))?;
        if greeting.code != 220 {
            return Err(ConnectError::Refused(from_response(&greeting)));
        }
        let hello = ehlo(&mut client, o.helo).await?;
        let offers_tls = hello.has_capability(EXT_START_TLS);
        if o.tls == TlsPolicy::Required && !offers_tls {
            return Err(net(format!(
                "{} does not offer STARTTLS, which is required",
                o.host
            )));
        }
        if o.tls != TlsPolicy::Disabled && offers_tls {
            let connector = if o.tls == TlsPolicy::Required {
                o.tls_strict
            } else {
                o.tls_lenient
            };
            let reply = client
                .cmd(b"STARTTLS\r\n")
                .await
                .map_err(|e| net(format!("STARTTLS: {e}")))?;
            if reply.code != 220 {
                if o.tls == TlsPolicy::Required {
                    return Err(ConnectError::Refused(from_response(&reply)));
                }
                return Ok(Session::ready(client.stream, o, addr, &hello, false));
            }
            let mut tls = client
                .into_tls(connector, o.host)
                .await
                .map_err(|e| net(format!("TLS handshake with {}: {e}", o.host)))?;
            let hello = ehlo(&mut tls, o.helo).await?;
            return Ok(Session::ready(tls.stream, o, addr, &hello, true));
        }
        Ok(Session::ready(client.stream, o, addr, &hello, false))
    }

    fn ready<S: Io + 'static>(
        stream: S,
        o: &ConnectOptions<'_>,
        addr: SocketAddr,
        ehlo: &EhloResponse<String>,
        tls: bool,
    ) -> Session {
        Session {
            client: SmtpClient {
                // Buffered: the message body's pieces (split where dots are
                // stuffed) and its terminator leave in one write at flush.
                stream: Box::new(tokio::io::BufStream::with_capacity(
                    8 * 1024,
                    32 * 1024,
                    stream,
                )) as Box<dyn Io>,
                timeout: o.command_timeout,
            },
            pipelining: ehlo.has_capability(EXT_PIPELINING),
            eight_bit: ehlo.has_capability(EXT_8BIT_MIME),
            pending: Vec::new(),
            envelope_sent: false,
            tls,
            peer: (o.host.to_string(), addr),
        }
    }

    /// Whether the server takes pipelined commands.
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// Sends one message to one recipient. `Err` means the connection is
    /// no longer usable (the outcome is in it); `Ok` keeps it open.
    ///
    /// `then` is the envelope (sender, recipient) of the message the
    /// caller will send next on this session: with PIPELINING its MAIL,
    /// RCPT and DATA leave right behind this body (RFC 2920 §3.1 lets the
    /// message content start a group), so that a message costs one round
    /// trip instead of two. [`Sent::then_sent`] says whether they did; if
    /// so, the next call must be for that message.
    pub async fn send(
        &mut self,
        from: &str,
        rcpt: &str,
        body: &[u8],
        then: Option<(&str, &str)>,
    ) -> Sent {
        let mut then_sent = false;
        let outcome = self
            .transaction(from, rcpt, body, then, &mut then_sent)
            .await;
        Sent { outcome, then_sent }
    }

    async fn transaction(
        &mut self,
        from: &str,
        rcpt: &str,
        body: &[u8],
        then: Option<(&str, &str)>,
        then_sent: &mut bool,
    ) -> Result<Outcome, Outcome> {
        let replies = if self.pipelining {
            if !std::mem::take(&mut self.envelope_sent) {
                let cmds = self.envelope(from, rcpt);
                self.write(cmds.as_bytes()).await?;
            }
            self.read_replies(3).await?
        } else {
            let mut replies = Vec::new();
            for cmd in [
                self.mail(from),
                format!("RCPT TO:<{rcpt}>\r\n"),
                "DATA\r\n".into(),
            ] {
                self.write(cmd.as_bytes()).await?;
                let r = self.read_replies(1).await?;
                let ok = r.last().is_some_and(|r| r.code / 100 == 2 || r.code == 354);
                replies.extend(r);
                if !ok {
                    break;
                }
            }
            replies
        };
        // The first reply that is not positive decides.
        for (i, r) in replies.iter().enumerate() {
            let expected_ok = if i == 2 {
                r.code == 354
            } else {
                r.code / 100 == 2
            };
            if !expected_ok {
                let outcome = Outcome::from_reply(from_response(r));
                if r.code == 421 || replies.len() < 3 && self.pipelining {
                    return Err(outcome);
                }
                // A DATA that was accepted after a failed RCPT must be ended.
                if replies.get(2).is_some_and(|d| d.code == 354) {
                    self.write(b".\r\n").await?;
                    let _ = self.read_replies(1).await?;
                }
                self.rset().await?;
                return Ok(outcome);
            }
        }
        if replies.len() < 3 {
            return Err(Outcome::network("connection closed during the envelope"));
        }
        let next = match then {
            Some((f, r)) if self.pipelining => Some(self.envelope(f, r)),
            _ => None,
        };
        self.write_data(body, next.as_deref()).await?;
        if next.is_some() {
            self.envelope_sent = true;
            *then_sent = true;
        }
        let r = self.read_replies(1).await?;
        match r.first() {
            Some(r) => {
                let outcome = Outcome::from_reply(from_response(r));
                if r.code == 421 {
                    Err(outcome)
                } else {
                    Ok(outcome)
                }
            }
            None => Err(Outcome::network("no reply after DATA")),
        }
    }

    fn mail(&self, from: &str) -> String {
        let body_param = if self.eight_bit { " BODY=8BITMIME" } else { "" };
        format!("MAIL FROM:<{from}>{body_param}\r\n")
    }

    /// MAIL, RCPT and DATA, as one pipelined group.
    fn envelope(&self, from: &str, rcpt: &str) -> String {
        format!("{}RCPT TO:<{rcpt}>\r\nDATA\r\n", self.mail(from))
    }

    /// Writes a message body with its dots stuffed (RFC 5321 §4.5.2) and
    /// its terminator, then `next` (a pipelined envelope), in one flush.
    async fn write_data(&mut self, body: &[u8], next: Option<&str>) -> Result<(), Outcome> {
        let stream = &mut self.client.stream;
        tokio::time::timeout(self.client.timeout, async {
            let mut from = 0;
            for dot in memchr::memchr_iter(b'.', body) {
                if dot == 0 || matches!(body[dot - 1], b'\n' | b'\r') {
                    stream.write_all(&body[from..dot]).await?;
                    stream.write_all(b".").await?;
                    from = dot;
                }
            }
            stream.write_all(&body[from..]).await?;
            let end: &[u8] = if body.is_empty() || body.ends_with(b"\r\n") {
                b".\r\n"
            } else {
                b"\r\n.\r\n"
            };
            stream.write_all(end).await?;
            if let Some(cmds) = next {
                stream.write_all(cmds.as_bytes()).await?;
            }
            stream.flush().await
        })
        .await
        .map_err(|_| Outcome::network("timed out sending the message body"))?
        .map_err(|e| Outcome::network(format!("connection lost in DATA: {e}")))
    }

    async fn rset(&mut self) -> Result<(), Outcome> {
        self.write(b"RSET\r\n").await?;
        let r = self.read_replies(1).await?;
        match r.first() {
            Some(r) if r.code / 100 == 2 => Ok(()),
            Some(r) => Err(Outcome::from_reply(from_response(r))),
            None => Err(Outcome::network("no reply to RSET")),
        }
    }

    /// Says QUIT and closes, without waiting long.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            // Inside an open DATA a QUIT would be message text: hang up
            // instead (no final dot, so nothing is delivered).
            if !self.envelope_sent && self.write(b"QUIT\r\n").await.is_ok() {
                let _ = self.read_replies(1).await;
            }
            let _ = self.client.stream.shutdown().await;
        })
        .await;
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Outcome> {
        let stream = &mut self.client.stream;
        tokio::time::timeout(self.client.timeout, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| Outcome::network("timed out writing a command"))?
        .map_err(|e| Outcome::network(format!("connection lost: {e}")))
    }

    /// Reads up to `n` replies. A connection closed early returns the
    /// replies read so far when there is at least one (a `421` followed by
    /// a hang-up is a reply, not a network error).
    async fn read_replies(&mut self, n: usize) -> Result<Vec<Response<String>>, Outcome> {
        let mut out = Vec::with_capacity(n);
        let mut parser = ResponseReceiver::default();
        let mut buf = [0u8; 4096];
        loop {
            if !self.pending.is_empty() {
                let data = std::mem::take(&mut self.pending);
                let mut iter = data.iter();
                loop {
                    match parser.parse(&mut iter) {
                        Ok(r) => {
                            out.push(r);
                            parser = ResponseReceiver::default();
                            if out.len() == n {
                                self.pending = iter.as_slice().to_vec();
                                return Ok(out);
                            }
                        }
                        Err(smtp_proto::Error::NeedsMoreData { .. }) => break,
                        Err(_) => return Err(Outcome::network("unparseable SMTP reply")),
                    }
                }
            }
            let read =
                tokio::time::timeout(self.client.timeout, self.client.stream.read(&mut buf)).await;
            match read {
                Err(_) => return Err(Outcome::network("timed out waiting for a reply")),
                Ok(Err(e)) if out.is_empty() => {
                    return Err(Outcome::network(format!("connection lost: {e}")))
                }
                Ok(Ok(0)) if out.is_empty() => {
                    return Err(Outcome::network("connection closed by the remote"))
                }
                Ok(Err(_)) | Ok(Ok(0)) => return Ok(out),
                Ok(Ok(len)) => {
                    if self.pending.len() + len > 64 * 1024 {
                        return Err(Outcome::network("SMTP reply too long"));
                    }
                    self.pending.extend_from_slice(&buf[..len]);
                }
            }
        }
    }
}

async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<S>,
    helo: &str,
) -> Result<EhloResponse<String>, ConnectError> {
    match client.ehlo(helo).await {
        Ok(r) => Ok(r),
        Err(mail_send::Error::UnexpectedReply(r)) => Err(ConnectError::Refused(from_response(&r))),
        Err(e) => Err(net(format!("EHLO: {e}"))),
    }
}

/// The two TLS connectors: verifying (webpki roots) and lenient.
pub fn tls_connectors() -> (Arc<TlsConnector>, Arc<TlsConnector>) {
    (
        Arc::new(mail_send::smtp::tls::build_tls_connector(false)),
        Arc::new(mail_send::smtp::tls::build_tls_connector(true)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    /// A remote that greets, answers EHLO, answers RCPT with `rcpt` and
    /// every other line with `other` (either may be garbage).
    async fn remote(rcpt: &'static str, other: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"220 remote ready\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = if line.starts_with("EHLO") {
                    "250-remote\r\n250 PIPELINING\r\n"
                } else if line.starts_with("RCPT") {
                    rcpt
                } else if line.starts_with("DATA") && rcpt.starts_with('5') {
                    "503 5.5.1 no valid recipients\r\n"
                } else {
                    other
                };
                if w.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        addr
    }

    /// Connects to `addr` with test settings.
    async fn connect(addr: SocketAddr) -> Result<Session, ConnectError> {
        let (strict, lenient) = tls_connectors();
        let o = ConnectOptions {
            helo: "facteur.test",
            host: "remote.test",
            tls: TlsPolicy::Opportunistic,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            tls_strict: &strict,
            tls_lenient: &lenient,
        };
        Session::connect(addr, &o).await
    }

    async fn session(addr: SocketAddr) -> Session {
        match connect(addr).await {
            Ok(s) => s,
            Err(_) => panic!("connect failed"),
        }
    }

    #[tokio::test]
    async fn garbage_replies_defer_without_panic() {
        let addr = remote("this is not SMTP\r\n", "this is not SMTP\r\n").await;
        let mut s = session(addr).await;
        match s
            .send("b@x.test", "r@y.test", b"Subject: x\r\n\r\nbody", None)
            .await
            .outcome
        {
            Err(Outcome::Deferred { reply, .. }) => assert_eq!(reply.code, 0, "{reply:?}"),
            other => panic!("expected a network deferral, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refused_recipient_keeps_the_connection() {
        let addr = remote("550 5.1.1 no such user\r\n", "250 2.0.0 ok\r\n").await;
        let mut s = session(addr).await;
        match s
            .send("b@x.test", "r@y.test", b"Subject: x\r\n\r\nbody", None)
            .await
            .outcome
        {
            Ok(Outcome::Bounced(reply)) => {
                assert_eq!(reply.code, 550);
                assert_eq!(reply.enhanced.as_deref(), Some("5.1.1"));
            }
            other => panic!("expected a bounce on an open connection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_greeting_is_a_network_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(b"\x00\xff garbage\r\n").await;
        });
        assert!(matches!(
            connect(addr).await,
            Err(ConnectError::Network(_)) | Err(ConnectError::Refused(_))
        ));
    }

    /// A well-behaved pipelining remote that keeps every line it reads.
    async fn recording_remote() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"220 remote ready\r\n").await.unwrap();
            let (mut in_data, mut n) = (false, 0);
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line.clone());
                let reply = if in_data {
                    if line != "." {
                        continue;
                    }
                    in_data = false;
                    n += 1;
                    format!("250 2.0.0 queued as {n}\r\n")
                } else if line.starts_with("EHLO") {
                    "250-remote\r\n250 PIPELINING\r\n".into()
                } else if line.starts_with("DATA") {
                    in_data = true;
                    "354 go ahead\r\n".into()
                } else if line.starts_with("QUIT") {
                    "221 bye\r\n".into()
                } else {
                    "250 2.1.0 ok\r\n".into()
                };
                if w.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn the_next_envelope_follows_the_body_and_dots_are_stuffed() {
        let (addr, mut rx) = recording_remote().await;
        let mut s = session(addr).await;
        let first = b".starts with a dot\r\nline\r\n.\r\n..two\r\n";
        let sent = s
            .send(
                "b@x.test",
                "one@y.test",
                first,
                Some(("b@x.test", "two@y.test")),
            )
            .await;
        assert!(sent.then_sent);
        match sent.outcome {
            Ok(Outcome::Delivered(r)) => assert!(r.text.contains("queued as 1"), "{r:?}"),
            other => panic!("first message: {other:?}"),
        }
        let sent = s.send("b@x.test", "two@y.test", b"second", None).await;
        assert!(!sent.then_sent);
        assert!(
            matches!(sent.outcome, Ok(Outcome::Delivered(_))),
            "{sent:?}"
        );
        s.quit().await;
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l);
        }
        let start = lines.iter().position(|l| l.starts_with("MAIL")).unwrap();
        assert_eq!(
            lines[start..],
            [
                "MAIL FROM:<b@x.test>",
                "RCPT TO:<one@y.test>",
                "DATA",
                "..starts with a dot",
                "line",
                "..",
                "...two",
                ".",
                "MAIL FROM:<b@x.test>",
                "RCPT TO:<two@y.test>",
                "DATA",
                "second",
                ".",
                "QUIT",
            ]
        );
    }

    #[tokio::test]
    async fn an_open_data_is_hung_up_not_quit() {
        let (addr, mut rx) = recording_remote().await;
        let mut s = session(addr).await;
        let sent = s
            .send(
                "b@x.test",
                "one@y.test",
                b"hi",
                Some(("b@x.test", "two@y.test")),
            )
            .await;
        assert!(sent.then_sent);
        // The caller gives up on the second message: no QUIT goes into its
        // DATA, which ends without a dot.
        s.quit().await;
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l);
        }
        assert_eq!(lines.last().map(String::as_str), Some("DATA"), "{lines:?}");
    }

    #[tokio::test]
    async fn a_421_after_the_body_ends_the_session_with_the_next_envelope_out() {
        // Answers the end of data with 421 and hangs up.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closing = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"220 ready\r\n").await.unwrap();
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                let reply: &[u8] = if in_data {
                    if line != "." {
                        continue;
                    }
                    b"421 4.3.2 shutting down\r\n"
                } else if line.starts_with("EHLO") {
                    b"250-remote\r\n250 PIPELINING\r\n"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    b"354 go ahead\r\n"
                } else {
                    b"250 ok\r\n"
                };
                let _ = w.write_all(reply).await;
                if reply.starts_with(b"421") {
                    break;
                }
            }
        });
        let mut s = session(closing).await;
        let sent = s
            .send(
                "b@x.test",
                "one@y.test",
                b"hi",
                Some(("b@x.test", "two@y.test")),
            )
            .await;
        assert!(sent.then_sent, "the next envelope went out behind the body");
        match sent.outcome {
            Err(Outcome::Deferred { reply, .. }) => assert_eq!(reply.code, 421),
            other => panic!("expected a 421 that ends the session, got {other:?}"),
        }
    }
}
