//! A real headless Chromium for tests (Debian's `chromium` and `chromium-driver`, driven over
//! WebDriver with fantoccini), shared by every crate whose tests look at the web app in a
//! browser: the web crate's page tests and the platform's end-to-end test of the connector wizard.
//! Screenshots go to `$TRIBUTARY_SCREENSHOT_DIR` (default: `screenshots/` in the system's
//! temporary directory) for CI to keep as artifacts.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::ClientBuilder;
use fantoccini::wd::WebDriverCompatibleCommand;
pub use fantoccini::{Client, Locator};
use serde_json::{Value, json};

/// chromedriver on a free port, killed when dropped (with the browser it started).
#[derive(Debug)]
pub struct Driver {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that fails before it ends its WebDriver session leaves the browser running
        // (killing chromedriver does not end it): end every process of this test's profile.
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(format!("user-data-dir={}", self.profile.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// chromedriver and a headless Chromium session (1280×900); the browser's console is kept for
/// [`console_errors`].
pub async fn start_chromium() -> (Driver, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "chromedriver is installed (scripts/install-prerequisites installs chromium-driver)",
        );
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        profile: tempfile::tempdir().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,900",
                format!("--user-data-dir={}", driver.profile.path().display()),
            ],
        }),
    );
    // Everything the console shows, read back with `console_errors`.
    capabilities.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// Where screenshots go: `$TRIBUTARY_SCREENSHOT_DIR`, else `screenshots/` in the temporary
/// directory.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("TRIBUTARY_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tributary-screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves the page as `<name>.png` in [`screenshot_dir`].
pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// chromedriver's log endpoint (from Selenium's protocol; W3C WebDriver has none): what the
/// page's console has shown since the last read, as `{level, message, source}` entries. CSP
/// violations, assets that failed to load and uncaught exceptions all land there as `SEVERE`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.expect("a session")
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// The `SEVERE` console entries since the last call (reading empties the browser's log).
pub async fn console_errors(client: &Client) -> Vec<String> {
    let entries = client.issue_cmd(BrowserLog).await.unwrap();
    entries
        .as_array()
        .expect("the browser log is a list")
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .map(|entry| format!("{}: {}", entry["source"], entry["message"]))
        .collect()
}

/// Waits until the console has reported at least one entry containing each of `wanted`, and
/// returns everything it reported meanwhile.
pub async fn wait_for_console_errors(client: &Client, wanted: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    poll(Duration::from_secs(10), async || {
        seen.extend(console_errors(client).await);
        match wanted
            .iter()
            .find(|text| !seen.iter().any(|error| error.contains(**text)))
        {
            None => Ok(()),
            Some(missing) => Err(format!(
                "the console never reported {missing:?}; it reported {seen:#?}"
            )),
        }
    })
    .await;
    seen
}

/// Runs `source` in the page (a function body: `return` gives the value).
pub async fn script(client: &Client, source: &str) -> Value {
    client.execute(source, Vec::new()).await.unwrap()
}

/// Replaces the text of the field `css`.
pub async fn fill(client: &Client, css: &str, text: &str) {
    let field = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
        .click()
        .await
        .unwrap();
}

/// Polls `probe` every 50 ms until it succeeds; after `limit`, fails with its last complaint.
pub async fn poll(limit: Duration, mut probe: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(()) => return,
            Err(complaint) => assert!(Instant::now() < deadline, "{complaint}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the page's body contains `text`.
pub async fn wait_for_text(client: &Client, text: &str) {
    poll(Duration::from_secs(10), async || {
        let body = client.source().await.unwrap();
        if body.contains(text) {
            Ok(())
        } else {
            Err(format!("{text:?} never appeared:\n{body}"))
        }
    })
    .await;
}

/// The text of the element `css`, or `None` when there is none.
pub async fn text_of(client: &Client, css: &str) -> Option<String> {
    let value = client
        .execute(
            "const element = document.querySelector(arguments[0]); \
             return element ? element.textContent : null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    value.as_str().map(str::to_owned)
}

/// Waits up to `limit` until the text of `css` satisfies `check`, without reloading the page.
pub async fn wait_for_element_within(
    client: &Client,
    limit: Duration,
    css: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) {
    poll(limit, async || {
        let text = text_of(client, css).await;
        if text.as_deref().is_some_and(&check) {
            Ok(())
        } else {
            Err(format!("{css} never showed {what}; it shows {text:?}"))
        }
    })
    .await;
}

/// Waits up to 15 s until the text of `css` satisfies `check`, without reloading the page.
pub async fn wait_for_element(
    client: &Client,
    css: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) {
    wait_for_element_within(client, Duration::from_secs(15), css, what, check).await;
}

/// Signs in on `/auth` at `base` and waits for the app.
pub async fn sign_in_as(client: &Client, base: &str, email: &str, password: &str) {
    client.goto(&format!("{base}/auth")).await.unwrap();
    fill(client, "#signin-email", email).await;
    fill(client, "#signin-password", password).await;
    click(client, "form.form button[type=submit]").await;
    wait_for_text(client, r#"<p class="workspace-name">"#).await;
}

/// The points each chart of a dashboard page draws (`data-points` of each panel).
pub async fn panel_points(client: &Client) -> Vec<u64> {
    let value = script(
        client,
        "return [...document.querySelectorAll('figure.panel')].map(f => Number(f.dataset.points))",
    )
    .await;
    serde_json::from_value(value).unwrap()
}

/// Picks a dashboard's time range (`1h`, `7d`, ...) in its range selector and waits for the
/// page drawn over it (`label`: "Last hour", "Last week").
pub async fn choose_range(client: &Client, range: &str, label: &str) {
    click(
        client,
        &format!("nav[aria-label='Time range'] a[href$='range={range}']"),
    )
    .await;
    wait_for_text(client, &format!(r#"aria-current="page">{label}</a>"#)).await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with(&format!("range={range}")),
        "the page is drawn over range={range}"
    );
}
