//! A real browser on a delivered message: headless Chromium, driven over
//! the WebDriver protocol by Debian's `chromedriver`, opens the message's
//! HTML as a test web server on loopback serves it, which loads the open
//! pixel; clicks the tracked link and lands on the original page (served by
//! the same test server); then clicks the unsubscribe link, and the confirm
//! button of facteur's page. The open and the click are on the message's
//! timeline, the address is suppressed, and the next message to it is
//! refused.
//!
//! Headless Chromium announces itself as `HeadlessChrome`, which the
//! machine rules rightly call a bot; the browser here plays a person, so it
//! sends a desktop Chrome user agent, and asks for French pages.

mod common;
mod tracking_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use common::{free_addr, lo, tail, wait_for, wait_listening};
use tracking_support::{
    events_of, html, marketing, send_and_receive, send_one, start, BROWSER, WAIT,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The test's own web server: the "webmail" page showing a message, and
/// the shop the tracked link points to.
#[derive(Default)]
struct Web {
    /// HTML of the message shown at `/inbox/{id}`.
    inbox: Mutex<Vec<(String, String)>>,
    /// Query strings the shop's `/offer` was fetched with.
    landed: Mutex<Vec<String>>,
}

async fn inbox(State(w): State<Arc<Web>>, UrlPath(id): UrlPath<String>) -> Html<String> {
    let found = w
        .inbox
        .lock()
        .unwrap()
        .iter()
        .find(|(i, _)| *i == id)
        .cloned();
    Html(found.map(|(_, h)| h).unwrap_or_default())
}

async fn offer(State(w): State<Arc<Web>>, RawQuery(q): RawQuery) -> Html<&'static str> {
    w.landed.lock().unwrap().push(q.unwrap_or_default());
    Html("<!doctype html><title>Offer</title><h1 id=landed>The offer</h1>")
}

async fn start_web(w: Arc<Web>) -> String {
    let listener = tokio::net::TcpListener::bind((lo(1), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/inbox/{id}", get(inbox))
        .route("/offer", get(offer))
        .with_state(w);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `chromedriver` on a loopback port, killed on drop.
struct Driver {
    child: Child,
    base: String,
    log: tempfile::NamedTempFile,
}

impl Driver {
    async fn start() -> Driver {
        let addr = free_addr(lo(1));
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-path={}", log.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        wait_listening("chromedriver", addr).await;
        Driver {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- chromedriver log ---\n{}", tail(self.log.path(), 40));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(driver: &Driver) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--no-proxy-server".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--user-agent={BROWSER}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {"intl.accept_languages": "fr-FR,fr"},
            },
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.base))
            .json(&caps)
            .send()
            .await
            .expect("POST /session")
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            http,
            session: format!("{}/session/{session}", driver.base),
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let r: Value = req
            .send()
            .await
            .expect("WebDriver call")
            .json()
            .await
            .unwrap();
        if r["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {r}");
        }
        r["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", Value::Null).await;
        v.as_str().unwrap_or_default().to_string()
    }

    async fn click(&self, css: &str) {
        let e = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        let id = e[ELEMENT].as_str().expect("element reference").to_string();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": js, "args": []}),
        )
        .await
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opens_clicks_and_unsubscribes() {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !common::require("chromium and chromium-driver", present) {
        return;
    }
    let web = Arc::new(Web::default());
    let shop = start_web(web.clone()).await;
    let (facteur, sink) = start("0s").await;
    let email = "eve@example.test";
    let (id, received) =
        send_and_receive(&facteur, &sink, &marketing(email, "browser", &html(&shop))).await;
    web.inbox
        .lock()
        .unwrap()
        .push((id.clone(), received.html().expect("an HTML part")));

    let driver = Driver::start().await;
    let browser = Browser::open(&driver).await;

    // Showing the message loads the pixel: an open by a person.
    browser.go(&format!("{shop}/inbox/{id}")).await;
    let opens = wait_for("the open", WAIT, || async {
        let e = events_of(&facteur, &id, "opened").await;
        if e.is_empty() {
            Err("no open".to_string())
        } else {
            Ok(e)
        }
    })
    .await;
    assert_eq!(opens[0]["data"]["machine"], false, "{opens:?}");

    // Clicking the tracked link lands on the shop's page, through facteur.
    browser.click("a#offer").await;
    let landed = format!("{shop}/offer?x=1&y=2");
    wait_for("the landing page", WAIT, || async {
        let url = browser.url().await;
        if url == landed {
            Ok(())
        } else {
            Err(url)
        }
    })
    .await;
    assert_eq!(web.landed.lock().unwrap().as_slice(), ["x=1&y=2"]);
    let h1 = browser
        .script("return document.getElementById('landed').textContent")
        .await;
    assert_eq!(h1, "The offer");
    let clicks = events_of(&facteur, &id, "clicked").await;
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert_eq!(clicks[0]["data"]["machine"], false);
    assert_eq!(clicks[0]["data"]["url"], landed.as_str());

    // Back to the message: its unsubscribe link shows facteur's page, in
    // French; showing it unsubscribes nothing, the button does.
    browser.go(&format!("{shop}/inbox/{id}")).await;
    browser.click("a#unsubscribe").await;
    wait_for("the unsubscribe page", WAIT, || async {
        let url = browser.url().await;
        if url.starts_with(&facteur.url("/u/")) {
            Ok(())
        } else {
            Err(url)
        }
    })
    .await;
    assert_eq!(
        browser.script("return document.documentElement.lang").await,
        "fr"
    );
    assert!(events_of(&facteur, &id, "unsubscribed").await.is_empty());
    browser.click("form button[type=submit]").await;
    wait_for("the confirmation", WAIT, || async {
        let status = browser
            .script(
                "const s = document.querySelector('[role=status]'); return s ? s.textContent : ''",
            )
            .await;
        let text = status.as_str().unwrap_or_default().to_string();
        if text.contains("ne recevrez plus") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    browser.close().await;

    let unsubscribed = events_of(&facteur, &id, "unsubscribed").await;
    assert_eq!(unsubscribed.len(), 1, "{unsubscribed:?}");
    let next = send_one(&facteur, &marketing(email, "next", "<p>hi</p>")).await;
    assert_eq!(next["status"], "suppressed", "{next}");
}
