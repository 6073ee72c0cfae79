//! A headless Chromium driven over the DevTools protocol through a pipe
//! (`--remote-debugging-pipe`: commands in on fd 3, answers and events out on fd 4, each message
//! JSON ended by a NUL byte), so no WebSocket client or driver binary is needed.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

pub struct Browser {
    child: Child,
    commands: std::fs::File,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Console errors, uncaught exceptions and failed loads seen so far, on any page.
    pub errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closed as a user closes it: Chromium ends its helper processes and removes its own
        // temporary files, and the profile can be removed after it. Killed, it left both in the
        // system's temp dir (helpers still writing into the profile as it was removed).
        let mut close = serde_json::to_vec(&json!({ "id": 0, "method": "Browser.close" })).unwrap();
        close.push(0);
        if self.commands.write_all(&close).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's `chromium` (or `$LOOP_RUNNER_TEST_CHROMIUM`).
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("LOOP_RUNNER_TEST_CHROMIUM") {
        return path.into();
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    panic!(
        "the browser tests need Chromium: `apt-get install chromium` (tests/setup.sh does), or set LOOP_RUNNER_TEST_CHROMIUM"
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    pub fn launch() -> Self {
        use std::os::fd::AsRawFd;
        let profile = tempfile::tempdir().unwrap();
        let (their_in, our_out) = pipe();
        let (our_in, their_out) = pipe();
        let (r, w) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut command = Command::new(chromium());
        command
            .args([
                "--headless",
                // Root in CI: Chromium's own sandbox needs user namespaces it may not have.
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // fd 3 and 4 in the child; moved high first so neither dup2 clobbers the other.
        unsafe {
            command.pre_exec(move || {
                let (hr, hw) = (libc::fcntl(r, libc::F_DUPFD, 10), libc::fcntl(w, libc::F_DUPFD, 10));
                if hr < 0 || hw < 0 || libc::dup2(hr, 3) < 0 || libc::dup2(hw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", chromium().display()));
        drop((their_in, their_out));
        let (send, messages) = channel();
        let reader = std::fs::File::from(our_in);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                message.pop();
                let Ok(value) = serde_json::from_slice::<Value>(&message) else { continue };
                if send.send(value).is_err() {
                    return;
                }
            }
        });
        let mut browser = Self {
            child,
            commands: std::fs::File::from(our_out),
            messages,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            _profile: profile,
        };
        let targets = browser.call("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target: {targets}"))["targetId"]
            .clone();
        let attached = browser.call("Target.attachToTarget", json!({ "targetId": page, "flatten": true }));
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser
    }

    /// Sends a command (to the page once attached) and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// [`Self::call`], with the protocol's error as an `Err`.
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let message =
                self.next_message(deadline).unwrap_or_else(|| panic!("{method}: no answer in 60 s"));
            if message["id"] == id {
                return match message.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(message["result"].clone()),
                };
            }
        }
    }

    fn next_message(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(left) {
            Ok(message) => {
                self.note(&message);
                Some(message)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("Chromium went away"),
        }
    }

    /// Keeps what a user would see as an error in the console.
    fn note(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                self.errors.push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.errors.push(format!("console.error: {}", params["args"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(format!("{}: {}", params["entry"]["url"], params["entry"]["text"]));
            }
            _ => {}
        }
    }

    /// Navigates and waits for the load event; the time it took.
    pub fn open(&mut self, url: &str) -> Duration {
        let started = Instant::now();
        self.call("Page.navigate", json!({ "url": url }));
        let deadline = started + Duration::from_secs(60);
        while let Some(message) = self.next_message(deadline) {
            if message["method"] == "Page.loadEventFired" {
                return started.elapsed();
            }
        }
        panic!("{url}: no load event in 60 s");
    }

    /// Evaluates `expression` in the page (awaiting a promise), returning its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self.try_call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        )?;
        match result.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Polls `expression` until it is truthy; its value. While a page is being replaced the
    /// expression may have nowhere to run; that counts as not yet.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.try_eval(expression).unwrap_or(Value::Null);
            if !matches!(value, Value::Null | Value::Bool(false)) && value != json!(0) && value != json!("") {
                return value;
            }
            assert!(Instant::now() < deadline, "waited {timeout:?} for `{expression}`");
            // Events that arrive meanwhile are still looked at for errors.
            let pause = Instant::now() + Duration::from_millis(100);
            while self.next_message(pause).is_some() {}
        }
    }

    /// Puts `file` into the `<input type=file>` that `selector` finds.
    pub fn set_file(&mut self, selector: &str, file: &Path) {
        let document = self.call("DOM.getDocument", json!({}));
        let node = self
            .call("DOM.querySelector", json!({ "nodeId": document["root"]["nodeId"], "selector": selector }));
        self.call(
            "DOM.setFileInputFiles",
            json!({ "files": [file.display().to_string()], "nodeId": node["nodeId"] }),
        );
    }

    /// A PNG of the page, written to `path`; fails if the picture is blank (almost one colour).
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = shot["data"].as_str().unwrap().to_string();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, base64::engine::general_purpose::STANDARD.decode(&data).unwrap()).unwrap();
        // The browser decodes its own picture: the share of pixels that differ from the most
        // common colour (the background).
        let share = self.eval(&format!(
            r#"new Promise((done, fail) => {{
                const img = new Image();
                img.onload = () => {{
                  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
                  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                  const px = g.getImageData(0, 0, c.width, c.height).data;
                  const counts = new Map();
                  for (let i = 0; i < px.length; i += 4) {{ const k = (px[i] << 16) | (px[i + 1] << 8) | px[i + 2]; counts.set(k, (counts.get(k) || 0) + 1); }}
                  const top = Math.max(...counts.values());
                  done({{ share: 1 - top / (px.length / 4), colours: counts.size }});
                }};
                img.onerror = () => fail(new Error('screenshot did not decode'));
                img.src = 'data:image/png;base64,{data}';
            }})"#
        ));
        let ink = share["share"].as_f64().unwrap();
        eprintln!(
            "screenshot {}: {:.1} % of pixels drawn, {} colours",
            path.display(),
            ink * 100.0,
            share["colours"]
        );
        assert!(ink > 0.01 && share["colours"].as_u64().unwrap() > 8, "{} is blank: {share}", path.display());
    }
}
