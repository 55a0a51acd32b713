//! The one place deciding that an open or a click was made by a machine.
//!
//! Machine opens and clicks are still recorded, but flagged, and counted
//! apart in metrics (the [`Verdict::reason`] is a small fixed set of strings,
//! fit for a metric label). The rules are checked in the order below; the
//! first that matches decides.
//!
//! # Opens (the pixel, [`classify_open`])
//!
//! 1. **Gmail's image proxy** (`GoogleImageProxy` in the user agent, as in
//!    `... (via ggpht.com GoogleImageProxy)`) is a **person**: Gmail fetches
//!    images when the recipient opens the message, not on delivery.
//! 2. A `HEAD` request is a machine: no mail client renders a pixel that way.
//! 3. **Apple Mail Privacy Protection** prefetches every image on delivery
//!    through Apple's proxies, which send the user agent `Mozilla/5.0` and
//!    nothing else: that exact user agent is a machine, and so is any
//!    request from Apple's own networks (`17.0.0.0/8`, `2620:149::/32`),
//!    where the proxies live.
//! 4. **Known prefetchers**: Yahoo's mail proxy (`YahooMailProxy`) fetches on
//!    delivery.
//! 5. **Scanners and bots** (see below).
//! 6. No user agent at all is a machine: every mail client sends one.
//!
//! # Clicks (the redirect, [`classify_click`])
//!
//! 1. A `HEAD` request is a machine (a link checker).
//! 2. **Scanners and bots** (see below).
//! 3. A click within [`ClickRules::scanner_window`] of delivery (10 seconds
//!    by default) is a machine: security gateways follow every link as the
//!    message arrives, often with a browser's user agent (Microsoft Defender
//!    Safe Links does), and no person reads that fast. A negative delay (clock
//!    skew) counts as within the window.
//! 4. The bare user agent `Mozilla/5.0` or no user agent at all is a
//!    machine: browsers always say more.
//!
//! # Scanners and bots
//!
//! A user agent containing, case-insensitively, the name of a mail security
//! product (Microsoft `BingPreview`, Office's `Existence Discovery` and
//! `Protocol Discovery` probes, Barracuda, Proofpoint, Mimecast, Symantec and
//! MessageLabs, Cisco IronPort and Secure Email, Trend Micro, Bitdefender,
//! Forcepoint, Fortinet, Sophos, Check Point) or of an HTTP library or robot
//! (`bot` (except the phone maker Cubot), `crawler`, `spider`, `preview`,
//! `python-requests`, `python-urllib`, `aiohttp`, `curl/`, `wget`, `libwww`,
//! `Go-http-client`, `Java/`, `Apache-HttpClient`, `HeadlessChrome`,
//! `PhantomJS`, `facebookexternalhit`, `WhatsApp`, `Scrapy`).
//!
//! Left out on purpose: `ms-office` / `Microsoft Outlook` (Outlook for
//! Windows loading images when a person opens the message) and `okhttp`,
//! `Dalvik`, `CFNetwork` (mobile mail apps), which are people as often as
//! not. Safe Links and similar services that pose as browsers are caught only
//! by the timing and `HEAD` rules.

use std::net::IpAddr;
use std::time::Duration;

/// The HTTP method of a tracking request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// `GET`: what browsers and mail clients send.
    Get,
    /// `HEAD`: what link checkers send.
    Head,
    /// Anything else.
    Other,
}

/// What is known about one open or click request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestContext<'a> {
    /// The `User-Agent` header, if any.
    pub user_agent: Option<&'a str>,
    /// The request method.
    pub method: HttpMethod,
    /// The client address (after trusted proxies are stripped), if known.
    pub remote_ip: Option<IpAddr>,
    /// Seconds between the message's delivery and this request, if the
    /// delivery time is known.
    pub seconds_since_delivery: Option<f64>,
}

/// Tunables of the click rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickRules {
    /// A click sooner than this after delivery is a scanner's.
    pub scanner_window: Duration,
}

impl Default for ClickRules {
    fn default() -> Self {
        ClickRules {
            scanner_window: Duration::from_secs(10),
        }
    }
}

/// The decision on one open or click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether a machine made the request.
    pub machine: bool,
    /// The rule that decided, from a fixed set (a metric label).
    pub reason: &'static str,
}

impl Verdict {
    const fn machine(reason: &'static str) -> Self {
        Verdict {
            machine: true,
            reason,
        }
    }

    const fn person(reason: &'static str) -> Self {
        Verdict {
            machine: false,
            reason,
        }
    }
}

/// Reasons a [`Verdict`] may give, one per rule.
pub mod reason {
    /// Gmail's image proxy: a person opened the message.
    pub const GMAIL_IMAGE_PROXY: &str = "gmail_image_proxy";
    /// A `HEAD` request.
    pub const HEAD_REQUEST: &str = "head_request";
    /// Apple Mail Privacy Protection's bare `Mozilla/5.0` user agent.
    pub const APPLE_MPP: &str = "apple_mpp";
    /// A request from Apple's networks, where the MPP proxies live.
    pub const APPLE_NETWORK: &str = "apple_network";
    /// Yahoo's mail proxy, which fetches on delivery.
    pub const YAHOO_PROXY: &str = "yahoo_proxy";
    /// A mail security product's user agent.
    pub const SECURITY_SCANNER: &str = "security_scanner";
    /// An HTTP library, robot or link preview user agent.
    pub const BOT_USER_AGENT: &str = "bot_user_agent";
    /// No user agent.
    pub const NO_USER_AGENT: &str = "no_user_agent";
    /// The bare user agent `Mozilla/5.0` on a click.
    pub const BARE_USER_AGENT: &str = "bare_user_agent";
    /// A click sooner after delivery than a person could.
    pub const TOO_SOON_AFTER_DELIVERY: &str = "too_soon_after_delivery";
    /// No rule matched: a person.
    pub const NO_RULE: &str = "no_rule";
}

/// Lowercase fragments of mail security products' user agents.
const SCANNER_AGENTS: &[&str] = &[
    "bingpreview",
    "existence discovery",
    "protocol discovery",
    "barracuda",
    "proofpoint",
    "mimecast",
    "symantec",
    "messagelabs",
    "ironport",
    "ciscosecureemail",
    "cisco secure email",
    "trendmicro",
    "trend micro",
    "bitdefender",
    "forcepoint",
    "fortinet",
    "fortimail",
    "fortiguard",
    "sophos",
    "checkpoint",
    "check point",
];

/// Lowercase fragments of HTTP libraries', robots' and link previewers' user
/// agents (`bot` is handled apart, for Cubot).
const BOT_AGENTS: &[&str] = &[
    "crawler",
    "spider",
    "preview",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget",
    "libwww",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "headlesschrome",
    "phantomjs",
    "facebookexternalhit",
    "whatsapp",
    "scrapy",
];

/// Decides whether the open pixel was fetched by a machine (rules in the
/// module doc).
pub fn classify_open(ctx: &RequestContext<'_>) -> Verdict {
    let ua = ctx.user_agent.map(str::trim).filter(|ua| !ua.is_empty());
    if ua.is_some_and(|ua| ua.contains("GoogleImageProxy")) {
        return Verdict::person(reason::GMAIL_IMAGE_PROXY);
    }
    if ctx.method == HttpMethod::Head {
        return Verdict::machine(reason::HEAD_REQUEST);
    }
    if ua == Some("Mozilla/5.0") {
        return Verdict::machine(reason::APPLE_MPP);
    }
    if ctx.remote_ip.is_some_and(is_apple_network) {
        return Verdict::machine(reason::APPLE_NETWORK);
    }
    let Some(ua) = ua else {
        return Verdict::machine(reason::NO_USER_AGENT);
    };
    let lower = ua.to_ascii_lowercase();
    if lower.contains("yahoomailproxy") {
        return Verdict::machine(reason::YAHOO_PROXY);
    }
    automaton_agent(&lower).unwrap_or(Verdict::person(reason::NO_RULE))
}

/// Decides whether a tracked link was followed by a machine (rules in the
/// module doc).
pub fn classify_click(ctx: &RequestContext<'_>, rules: &ClickRules) -> Verdict {
    if ctx.method == HttpMethod::Head {
        return Verdict::machine(reason::HEAD_REQUEST);
    }
    let ua = ctx.user_agent.map(str::trim).filter(|ua| !ua.is_empty());
    let lower = ua.map(str::to_ascii_lowercase);
    if let Some(verdict) = lower.as_deref().and_then(automaton_agent) {
        return verdict;
    }
    let window = rules.scanner_window.as_secs_f64();
    if ctx.seconds_since_delivery.is_some_and(|s| s < window) {
        return Verdict::machine(reason::TOO_SOON_AFTER_DELIVERY);
    }
    match ua {
        None => Verdict::machine(reason::NO_USER_AGENT),
        Some("Mozilla/5.0") => Verdict::machine(reason::BARE_USER_AGENT),
        Some(_) => Verdict::person(reason::NO_RULE),
    }
}

/// The verdict for a scanner's or a bot's user agent, given in lowercase.
fn automaton_agent(lower: &str) -> Option<Verdict> {
    if SCANNER_AGENTS.iter().any(|s| lower.contains(s)) {
        return Some(Verdict::machine(reason::SECURITY_SCANNER));
    }
    let robot = lower
        .match_indices("bot")
        .any(|(i, _)| !lower[..i].ends_with("cu"));
    if robot || BOT_AGENTS.iter().any(|s| lower.contains(s)) {
        return Some(Verdict::machine(reason::BOT_USER_AGENT));
    }
    None
}

/// Whether `ip` belongs to Apple (`17.0.0.0/8`, `2620:149::/32`), where the
/// Mail Privacy Protection proxies fetch from.
fn is_apple_network(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 17,
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2620, 0x0149],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLE_MPP: &str = "Mozilla/5.0";
    const GMAIL_PROXY: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    const OUTLOOK_DESKTOP: &str = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)";
    const OUTLOOK_DESKTOP_2: &str =
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17531; Pro)";
    const IPHONE_MAIL: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
    const MAC_MAIL: &str =
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0";
    const CUBOT_CHROME: &str = "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36";
    const YAHOO_PROXY: &str =
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html";
    const BING_PREVIEW: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/79.0.3945.74 Safari/537.36 Edg/79.0.309.43 BingPreview/1.0b";
    const OFFICE_PROBE: &str = "Microsoft Office Existence Discovery";
    const BARRACUDA: &str = "Barracuda Sentinel (EE)";
    const CURL: &str = "curl/8.5.0";
    const PYTHON: &str = "python-requests/2.31.0";
    const GO: &str = "Go-http-client/1.1";
    const JAVA: &str = "Java/1.8.0_292";
    const HEADLESS: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
        HeadlessChrome/120.0.6099.71 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

    fn get(ua: &str) -> RequestContext<'_> {
        RequestContext {
            user_agent: Some(ua),
            method: HttpMethod::Get,
            remote_ip: Some("203.0.113.7".parse().unwrap()),
            seconds_since_delivery: Some(3600.0),
        }
    }

    fn open(ctx: RequestContext<'_>) -> (bool, &'static str) {
        let v = classify_open(&ctx);
        (v.machine, v.reason)
    }

    fn click(ctx: RequestContext<'_>) -> (bool, &'static str) {
        let v = classify_click(&ctx, &ClickRules::default());
        (v.machine, v.reason)
    }

    #[test]
    fn people_opening_mail() {
        for ua in [
            GMAIL_PROXY,
            OUTLOOK_DESKTOP,
            OUTLOOK_DESKTOP_2,
            IPHONE_MAIL,
            MAC_MAIL,
            CHROME,
            FIREFOX,
            CUBOT_CHROME,
        ] {
            assert!(!open(get(ua)).0, "{ua} flagged");
        }
        assert_eq!(open(get(GMAIL_PROXY)), (false, reason::GMAIL_IMAGE_PROXY));
        assert_eq!(open(get(CHROME)), (false, reason::NO_RULE));
    }

    #[test]
    fn gmail_proxy_is_a_person_even_from_a_fresh_delivery() {
        let ctx = RequestContext {
            remote_ip: Some("66.249.84.1".parse().unwrap()),
            seconds_since_delivery: Some(1.0),
            ..get(GMAIL_PROXY)
        };
        assert_eq!(open(ctx), (false, reason::GMAIL_IMAGE_PROXY));
    }

    #[test]
    fn apple_mail_privacy_protection_is_a_machine() {
        let from_apple = RequestContext {
            remote_ip: Some("17.58.63.12".parse().unwrap()),
            ..get(APPLE_MPP)
        };
        assert_eq!(open(from_apple), (true, reason::APPLE_MPP));
        assert_eq!(open(get(" Mozilla/5.0 ")), (true, reason::APPLE_MPP));
        // Apple's networks, even with a fuller user agent, and IPv4-mapped.
        for ip in ["17.0.0.1", "::ffff:17.1.2.3", "2620:149:a:b::1"] {
            let ctx = RequestContext {
                remote_ip: Some(ip.parse().unwrap()),
                ..get(IPHONE_MAIL)
            };
            assert_eq!(open(ctx), (true, reason::APPLE_NETWORK), "{ip}");
        }
        // 18.x and other 2620::/16 networks are not Apple.
        for ip in ["18.0.0.1", "2620:150::1"] {
            let ctx = RequestContext {
                remote_ip: Some(ip.parse().unwrap()),
                ..get(IPHONE_MAIL)
            };
            assert!(!open(ctx).0, "{ip}");
        }
    }

    #[test]
    fn prefetchers_scanners_and_bots_opening() {
        assert_eq!(open(get(YAHOO_PROXY)), (true, reason::YAHOO_PROXY));
        for ua in [BARRACUDA, BING_PREVIEW, OFFICE_PROBE] {
            assert_eq!(open(get(ua)), (true, reason::SECURITY_SCANNER), "{ua}");
        }
        for ua in [CURL, PYTHON, GO, JAVA, HEADLESS, GOOGLEBOT, SLACK] {
            assert_eq!(open(get(ua)), (true, reason::BOT_USER_AGENT), "{ua}");
        }
        let head = RequestContext {
            method: HttpMethod::Head,
            ..get(CHROME)
        };
        assert_eq!(open(head), (true, reason::HEAD_REQUEST));
        let anonymous = RequestContext {
            user_agent: None,
            ..get(CHROME)
        };
        assert_eq!(open(anonymous), (true, reason::NO_USER_AGENT));
        assert_eq!(open(get("  ")), (true, reason::NO_USER_AGENT));
    }

    #[test]
    fn people_clicking() {
        for ua in [
            CHROME,
            FIREFOX,
            IPHONE_MAIL,
            MAC_MAIL,
            CUBOT_CHROME,
            OUTLOOK_DESKTOP_2,
        ] {
            assert_eq!(click(get(ua)), (false, reason::NO_RULE), "{ua}");
        }
        // Delivery time unknown: the timing rule cannot apply.
        let unknown = RequestContext {
            seconds_since_delivery: None,
            ..get(CHROME)
        };
        assert!(!click(unknown).0);
        // Just after the window.
        let patient = RequestContext {
            seconds_since_delivery: Some(10.0),
            ..get(CHROME)
        };
        assert!(!click(patient).0);
    }

    #[test]
    fn scanners_clicking() {
        // Safe Links poses as a browser but follows links on arrival.
        let safe_links = RequestContext {
            remote_ip: Some("40.94.31.9".parse().unwrap()),
            seconds_since_delivery: Some(2.5),
            ..get(CHROME)
        };
        assert_eq!(click(safe_links), (true, reason::TOO_SOON_AFTER_DELIVERY));
        let skewed = RequestContext {
            seconds_since_delivery: Some(-1.0),
            ..get(CHROME)
        };
        assert_eq!(click(skewed), (true, reason::TOO_SOON_AFTER_DELIVERY));
        for ua in [BARRACUDA, BING_PREVIEW, OFFICE_PROBE] {
            assert_eq!(click(get(ua)), (true, reason::SECURITY_SCANNER), "{ua}");
        }
        for ua in [CURL, PYTHON, GO, JAVA, HEADLESS, GOOGLEBOT, SLACK] {
            assert_eq!(click(get(ua)), (true, reason::BOT_USER_AGENT), "{ua}");
        }
        let head = RequestContext {
            method: HttpMethod::Head,
            ..get(CHROME)
        };
        assert_eq!(click(head), (true, reason::HEAD_REQUEST));
        assert_eq!(click(get(APPLE_MPP)), (true, reason::BARE_USER_AGENT));
        let anonymous = RequestContext {
            user_agent: None,
            ..get(CHROME)
        };
        assert_eq!(click(anonymous), (true, reason::NO_USER_AGENT));
    }

    #[test]
    fn scanner_window_is_configurable() {
        let rules = ClickRules {
            scanner_window: Duration::from_secs(60),
        };
        let ctx = RequestContext {
            seconds_since_delivery: Some(30.0),
            ..get(CHROME)
        };
        assert!(classify_click(&ctx, &rules).machine);
        assert!(!classify_click(&ctx, &ClickRules::default()).machine);
        let off = ClickRules {
            scanner_window: Duration::ZERO,
        };
        let instant = RequestContext {
            seconds_since_delivery: Some(0.0),
            ..get(CHROME)
        };
        assert!(!classify_click(&instant, &off).machine);
    }
}
