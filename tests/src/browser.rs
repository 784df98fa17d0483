//! A real headless browser (Debian's `chromium`) driven over the Chrome DevTools Protocol on
//! a pipe (`--remote-debugging-pipe`: JSON messages separated by NUL bytes on descriptors 3
//! and 4), so no websocket client or WebDriver server is needed. Every event is recorded, so a
//! test can check afterwards which requests a page made.
//!
//! ```text
//! test ──stdin (fd 3)──► chromium ──stdout (fd 4)──► reader thread ─► answers by id
//!                                                                  └► events (recorded)
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, Sender<Value>>>>;

/// A running headless chromium; killed on drop.
pub struct Browser {
    child: Child,
    input: Mutex<ChildStdin>,
    next_id: AtomicU64,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("pid", &self.child.id()).finish_non_exhaustive()
    }
}

/// The chromium binary: `$CHROMIUM`, else `chromium` on the `PATH`.
pub fn binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

/// Whether a chromium binary can be run here.
pub fn available() -> bool {
    Command::new(binary()).arg("--version").output().is_ok_and(|o| o.status.success())
}

impl Browser {
    /// Starts headless chromium with a fresh profile, background networking off.
    pub fn start() -> Result<Self, String> {
        let profile = tempfile::tempdir().map_err(|e| format!("profile directory: {e}"))?;
        // The shell moves our pipes to descriptors 3 (commands in) and 4 (answers out).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg(binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--metrics-recording-only",
                "--hide-scrollbars",
                "--mute-audio",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary()))?;
        let input = child.stdin.take().ok_or("no stdin pipe")?;
        let output = child.stdout.take().ok_or("no stdout pipe")?;
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (pending_r, events_r) = (Arc::clone(&pending), Arc::clone(&events));
        std::thread::spawn(move || {
            let mut reader = BufReader::new(output);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                if message.last() == Some(&0) {
                    message.pop();
                }
                if let Ok(value) = serde_json::from_slice::<Value>(&message) {
                    match value.get("id").and_then(Value::as_u64) {
                        Some(id) => {
                            if let Some(tx) = pending_r.lock().expect("pending").remove(&id) {
                                let _ = tx.send(value);
                            }
                        }
                        None => events_r.lock().expect("events").push(value),
                    }
                }
                message.clear();
            }
        });
        let browser = Self {
            child,
            input: Mutex::new(input),
            next_id: AtomicU64::new(1),
            pending,
            events,
            _profile: profile,
        };
        browser.call(None, "Browser.getVersion", json!({}))?;
        Ok(browser)
    }

    /// Sends one command (to a page's `session`, or to the browser) and waits for its result.
    pub fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (tx, rx): (Sender<Value>, Receiver<Value>) = channel();
        self.pending.lock().expect("pending").insert(id, tx);
        let mut wire = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        wire.push(0);
        {
            let mut input = self.input.lock().expect("input");
            input.write_all(&wire).and_then(|()| input.flush()).map_err(|e| format!("{method}: {e}"))?;
        }
        let answer = rx.recv_timeout(CALL_TIMEOUT).map_err(|_| format!("{method}: no answer in time"))?;
        if let Some(error) = answer.get("error") {
            return Err(format!("{method}: {error}"));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Opens a new tab and attaches to it, with the page, network, runtime and log events on.
    pub fn new_page(&self) -> Result<Page<'_>, String> {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached =
            self.call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))?;
        let session = attached["sessionId"].as_str().ok_or("no sessionId")?.to_owned();
        let page = Page { browser: self, session };
        for domain in ["Page", "Network", "Runtime", "Log"] {
            page.call(&format!("{domain}.enable"), json!({}))?;
        }
        Ok(page)
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call(None, "Browser.close", json!({}));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
#[derive(Debug)]
pub struct Page<'b> {
    browser: &'b Browser,
    session: String,
}

impl Page<'_> {
    /// A command to this tab.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.browser.call(Some(&self.session), method, params)
    }

    /// Loads `url` and waits for its `load` event.
    pub fn navigate(&self, url: &str) -> Result<(), String> {
        let seen = self.events().len();
        self.call("Page.navigate", json!({ "url": url }))?;
        self.wait_event("Page.loadEventFired", seen, Duration::from_secs(20)).map(|_| ())
    }

    /// The events of this tab so far.
    pub fn events(&self) -> Vec<Value> {
        self.browser
            .events()
            .into_iter()
            .filter(|e| e.get("sessionId").and_then(Value::as_str) == Some(self.session.as_str()))
            .collect()
    }

    /// Waits for an event called `method` after the first `seen` events of this tab.
    fn wait_event(&self, method: &str, seen: usize, timeout: Duration) -> Result<Value, String> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().skip(seen).find(|e| e["method"] == method) {
                return Ok(e);
            }
            if Instant::now() >= until {
                return Err(format!("no {method} within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value as JSON;
    /// an exception is an error with its description.
    pub fn eval(&self, expression: &str) -> Result<Value, String> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {}", details["exception"]["description"]));
        }
        Ok(result["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Waits until `expression` is truthy in the page (checked every 50 ms), up to `timeout`;
    /// returns its value.
    pub fn wait_for(&self, expression: &str, timeout: Duration) -> Result<Value, String> {
        let until = Instant::now() + timeout;
        loop {
            let value = self.eval(expression)?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return Ok(value);
            }
            if Instant::now() >= until {
                return Err(format!("{expression} still {value} after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Emulates a screen of `width`×`height` CSS pixels (`mobile`: a phone's viewport rules).
    pub fn viewport(&self, width: u32, height: u32, mobile: bool) -> Result<(), String> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .map(|_| ())
    }

    /// Saves a PNG screenshot of the whole page to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        use base64::Engine;
        let shot =
            self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true }))?;
        let data = shot["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The URL of every request this tab has made so far.
    pub fn requested_urls(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_owned))
            .collect()
    }
}
