//! The key page end to end in headless Chromium (Debian's chromium and
//! chromium-driver, which .ci/run installs): add a user and generate a key
//! in the page, use the key against the gateway, rotate it through the
//! confirmation dialog, and see the old key refused and the new one work.
//!
//! Without chromedriver (at CHIME_GATEWAY_TEST_CHROMEDRIVER or
//! /usr/bin/chromedriver) the test is skipped, unless
//! CHIME_GATEWAY_REQUIRE_SERVICES is set. With CHIME_GATEWAY_SCREENSHOT=PATH
//! it saves a screenshot of the page (the README's picture).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chime_gateway::config::{KeySource, Secret, UpstreamAuth};
use chime_gateway::demo::write_demo_keys;
use fantoccini::{Client, ClientBuilder, Locator};
use harness::{report, Harness};
use http::StatusCode;

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver_path() -> Option<PathBuf> {
    let path = std::env::var_os("CHIME_GATEWAY_TEST_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "skipped: no chromedriver at {} (install Debian's chromium-driver or set CHIME_GATEWAY_TEST_CHROMEDRIVER)",
        path.display()
    );
    assert!(
        std::env::var_os("CHIME_GATEWAY_REQUIRE_SERVICES").is_none(),
        "{message}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
    None
}

async fn start_driver(path: PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "chromedriver never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { child, port }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let mut chrome = serde_json::json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,720"],
    });
    if std::path::Path::new("/usr/bin/chromium").exists() {
        chrome["binary"] = "/usr/bin/chromium".into();
    }
    caps.insert("goog:chromeOptions".into(), chrome);
    // chromedriver is on loopback: plain HTTP, no TLS stack needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// The value of the input `css` once it is non-empty.
async fn value_of(c: &Client, css: &str) -> String {
    let started = Instant::now();
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if let Ok(Some(v)) = el.prop("value").await {
                if !v.is_empty() {
                    return v;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{css} stayed empty"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_use_rotate_and_refuse_the_old_key_in_the_browser() {
    let Some(path) = driver_path() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = write_demo_keys(dir.path()).unwrap();
    let h = Harness::start_with(|c| {
        c.keys.source = KeySource::File(keys);
        c.upstream.auth = UpstreamAuth::Service(Secret::new("service-key-123"));
    })
    .await;
    let report = report();
    let driver = start_driver(path).await;
    let c = browser(&driver).await;
    c.goto(&format!("http://{}/", h.admin)).await.unwrap();

    // Add a user through the form.
    c.wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#add-user input[name=name]"))
        .await
        .unwrap()
        .send_keys("browser-user")
        .await
        .unwrap();
    c.find(Locator::Css("#add-user input[name=queues]"))
        .await
        .unwrap()
        .send_keys("1")
        .await
        .unwrap();
    click(&c, "#add-user button[type=submit]").await;

    // Generate a key: shown once, in the dialog.
    click(&c, "button[data-action=generate][data-user=browser-user]").await;
    let first = value_of(&c, "#new-key").await;
    click(&c, "#key-done").await;
    assert_eq!(h.get_as(&first, &report).await.status, StatusCode::OK);

    // Rotate, confirming in the dialog (the old key dies at once).
    click(&c, "button[data-action=rotate][data-user=browser-user]").await;
    let confirm = c
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#confirm-title"))
        .await
        .unwrap();
    assert!(confirm.text().await.unwrap().contains("browser-user"));
    click(&c, "#confirm-ok").await;
    let second = value_of(&c, "#new-key").await;
    assert_ne!(first, second);
    click(&c, "#key-done").await;

    assert_eq!(
        h.get_as(&first, &report).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.get_as(&second, &report).await.status, StatusCode::OK);

    // The table shows the new key's fingerprint, never a key.
    let table = c
        .find(Locator::Css("#users"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(table.contains("browser-user"), "{table}");
    assert!(!table.contains(&first) && !table.contains(&second));

    if let Some(out) = std::env::var_os("CHIME_GATEWAY_SCREENSHOT") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(out, png).unwrap();
    }
    c.close().await.unwrap();
}
