//! [`DnsServer`]: an authoritative DNS server on loopback for the tests.
//!
//! It is hickory-server's `ServerFuture` with a `Catalog` of
//! `InMemoryAuthority` zones, one for each reserved name space a test may
//! use (`test.`, `example.`, `invalid.`, `localhost.`, `example.com.`,
//! `example.net.`, `example.org.`). A name under those zones that has no
//! record answers NXDOMAIN (or NODATA when the name exists with other
//! types); any other name is REFUSED, so nothing ever reaches the internet.
//!
//! The server runs on its own thread and runtime, so its methods are plain
//! functions usable from any test, async or not, and records may be added
//! while facteur is running.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::authority::{AuthorityObject, Catalog, MessageResponseBuilder, ZoneType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;

/// The zones served: every test name must fall under one of them.
const ZONES: &[&str] = &[
    "test.",
    "example.",
    "invalid.",
    "localhost.",
    "example.com.",
    "example.net.",
    "example.org.",
];

/// TTL of every record, and negative TTL: short, so that a test which
/// changes a record sees the change soon.
const TTL: u32 = 1;

/// A DNS server on 127.0.0.1 (UDP and TCP on the same port) serving an
/// in-memory zone that the test fills. Stopped on drop.
pub struct DnsServer {
    addr: SocketAddr,
    zones: Vec<(LowerName, Arc<InMemoryAuthority>)>,
    servfail: Arc<Mutex<HashSet<LowerName>>>,
    serial: Mutex<u32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Starts the server on 127.0.0.1 with a free port, UDP and TCP.
    pub fn start() -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("DNS socket address");
        let servfail = Arc::new(Mutex::new(HashSet::new()));
        let mut catalog = Catalog::new();
        let mut zones = Vec::new();
        for zone in ZONES {
            let origin = Name::from_str(zone).expect("zone name");
            let mut authority = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
            let soa = SOA::new(
                Name::from_str("ns.facteur.test.").expect("name"),
                Name::from_str("hostmaster.facteur.test.").expect("name"),
                1,
                60,
                60,
                600,
                TTL,
            );
            authority.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), 1);
            let authority = Arc::new(authority);
            let object: Arc<dyn AuthorityObject> = authority.clone();
            catalog.upsert(LowerName::new(&origin), vec![object]);
            zones.push((LowerName::new(&origin), authority));
        }
        let handler = Handler {
            catalog,
            servfail: servfail.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("DNS runtime");
                runtime.block_on(async move {
                    let mut server = ServerFuture::new(handler);
                    let registered = udp
                        .set_nonblocking(true)
                        .and_then(|()| server.register_socket_std(udp))
                        .and_then(|()| server.register_listener_std(tcp, Duration::from_secs(10)));
                    let failed = registered.is_err();
                    let _ = ready.send(registered);
                    if !failed {
                        let _ = stopped.await;
                        let _ = server.shutdown_gracefully().await;
                    }
                });
            })
            .expect("spawn the DNS thread");
        is_ready
            .recv()
            .expect("DNS thread started")
            .expect("register the DNS sockets");
        DnsServer {
            addr,
            zones,
            servfail,
            serial: Mutex::new(1),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Address of the server (`127.0.0.1:PORT`), for `delivery.resolver`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds an MX record `domain MX pref host`.
    pub fn add_mx(&self, domain: &str, pref: u16, host: &str) {
        self.add(domain, RData::MX(MX::new(pref, name(host))));
    }

    /// Adds an A record (or AAAA for an IPv6 address).
    pub fn add_a(&self, host: &str, ip: impl Into<IpAddr>) {
        let rdata = match ip.into() {
            IpAddr::V4(ip) => RData::A(A(ip)),
            IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
        };
        self.add(host, rdata);
    }

    /// Shorthand: `domain MX 10 mx.domain` and `mx.domain A ip`.
    pub fn add_mail_host(&self, domain: &str, ip: Ipv4Addr) {
        let host = format!("mx.{domain}");
        self.add_mx(domain, 10, &host);
        self.add_a(&host, ip);
    }

    /// Adds a TXT record; text longer than 255 bytes is split into several
    /// strings, as a DKIM key must be.
    pub fn add_txt(&self, name_: &str, text: &str) {
        let mut strings = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(255);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            strings.push(rest[..cut].to_string());
            rest = &rest[cut..];
        }
        self.add(name_, RData::TXT(TXT::new(strings)));
    }

    /// Publishes a null MX (RFC 7505: `domain MX 0 .`): the domain accepts
    /// no mail.
    pub fn null_mx(&self, domain: &str) {
        self.add(domain, RData::MX(MX::new(0, Name::root())));
    }

    /// Makes every query for `name_` (any type) answer SERVFAIL, until
    /// [`DnsServer::clear_servfail`].
    pub fn servfail(&self, name_: &str) {
        self.servfail
            .lock()
            .unwrap()
            .insert(LowerName::new(&name(name_)));
    }

    /// Undoes [`DnsServer::servfail`] for `name_`.
    pub fn clear_servfail(&self, name_: &str) {
        self.servfail
            .lock()
            .unwrap()
            .remove(&LowerName::new(&name(name_)));
    }

    /// Removes every record of `name_`: it then answers NXDOMAIN.
    pub fn remove(&self, name_: &str) {
        let name_ = name(name_);
        let lower = LowerName::new(&name_);
        let authority = self.zone_of(&name_);
        futures::executor::block_on(async {
            authority
                .records_mut()
                .await
                .retain(|key, _| key.name != lower);
        });
    }

    fn add(&self, name_: &str, rdata: RData) {
        let name_ = name(name_);
        let authority = self.zone_of(&name_);
        let serial = {
            let mut serial = self.serial.lock().unwrap();
            *serial += 1;
            *serial
        };
        let record = Record::from_rdata(name_.clone(), TTL, rdata);
        // The authority's lock is a tokio RwLock held only briefly by the
        // server thread; any executor may wait for it.
        let added = futures::executor::block_on(authority.upsert(record, serial));
        assert!(added, "DNS record for {name_} not added");
    }

    /// The zone that holds `name_`: the longest served origin above it.
    fn zone_of(&self, name_: &Name) -> Arc<InMemoryAuthority> {
        let lower = LowerName::new(name_);
        self.zones
            .iter()
            .filter(|(origin, _)| origin.zone_of(&lower))
            .max_by_key(|(origin, _)| origin.num_labels())
            .map(|(_, authority)| authority.clone())
            .unwrap_or_else(|| panic!("{name_} is not under a reserved test zone {ZONES:?}"))
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fully qualified name from test text (`mx.alpha.test` or with a dot).
fn name(text: &str) -> Name {
    let mut name = Name::from_str(text).unwrap_or_else(|e| panic!("bad DNS name {text}: {e}"));
    name.set_fqdn(true);
    name
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
fn bind_pair() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
        let port = udp.local_addr().expect("UDP address").port();
        if let Ok(tcp) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// The catalog, plus names made to answer SERVFAIL.
struct Handler {
    catalog: Catalog,
    servfail: Arc<Mutex<HashSet<LowerName>>>,
}

impl Handler {
    async fn answer<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let failing = request.queries().iter().any(|q| {
            let servfail = self.servfail.lock().unwrap_or_else(|e| e.into_inner());
            servfail.contains(q.name())
        });
        if !failing {
            return self.catalog.handle_request(request, response).await;
        }
        let builder = MessageResponseBuilder::from_message_request(request);
        let message = builder.error_msg(request.header(), ResponseCode::ServFail);
        match response.send_response(message).await {
            Ok(info) => info,
            Err(_) => {
                let mut header = Header::response_from_request(request.header());
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

/// `RequestHandler` is declared with `async_trait`; this is the signature
/// that macro would write, so that the tests need no extra dependency.
impl RequestHandler for Handler {
    fn handle_request<'a, 'b, 'async_trait, R>(
        &'a self,
        request: &'b Request,
        response: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        'a: 'async_trait,
        'b: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.answer(request, response))
    }
}
