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
    /// True when STARTTLS succeeded.
    pub tls: bool,
    /// The host name and address connected to.
    pub peer: (String, SocketAddr),
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
                stream: Box::new(tokio::io::BufStream::new(stream)) as Box<dyn Io>,
                timeout: o.command_timeout,
            },
            pipelining: ehlo.has_capability(EXT_PIPELINING),
            eight_bit: ehlo.has_capability(EXT_8BIT_MIME),
            pending: Vec::new(),
            tls,
            peer: (o.host.to_string(), addr),
        }
    }

    /// Sends one message to one recipient. `Err` means the connection is
    /// no longer usable (the outcome is in it); `Ok` keeps it open.
    pub async fn send(&mut self, from: &str, rcpt: &str, body: &[u8]) -> Result<Outcome, Outcome> {
        let body_param = if self.eight_bit { " BODY=8BITMIME" } else { "" };
        let mail = format!("MAIL FROM:<{from}>{body_param}\r\n");
        let rcpt_cmd = format!("RCPT TO:<{rcpt}>\r\n");
        let replies = if self.pipelining {
            let cmds = format!("{mail}{rcpt_cmd}DATA\r\n");
            self.write(cmds.as_bytes()).await?;
            self.read_replies(3).await?
        } else {
            let mut replies = Vec::new();
            for cmd in [mail.as_str(), rcpt_cmd.as_str(), "DATA\r\n"] {
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
        tokio::time::timeout(self.client.timeout, self.client.write_message(body))
            .await
            .map_err(|_| Outcome::network("timed out sending the message body"))?
            .map_err(|e| Outcome::network(format!("connection lost in DATA: {e}")))?;
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
            if self.write(b"QUIT\r\n").await.is_ok() {
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
            .send("b@x.test", "r@y.test", b"Subject: x\r\n\r\nbody")
            .await
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
            .send("b@x.test", "r@y.test", b"Subject: x\r\n\r\nbody")
            .await
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
}
