//! A `loop-runner serve` process for the tests (`serve`, `browser`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use super::bin;

/// A `serve` process, stopped when dropped.
pub struct Server {
    child: Child,
    /// `host:port`, through loopback.
    pub addr: String,
    pub token: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(runs: &Path, bind: &str) -> Server {
    start_with(runs, bind, &[])
}

pub fn start_with(runs: &Path, bind: &str, extra: &[&str]) -> Server {
    let mut child = bin()
        .args(["serve", "--bind", bind, "--runs-dir"])
        .arg(runs)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url =
        line.trim().strip_prefix("http://").unwrap_or_else(|| panic!("no URL printed: {line:?}")).to_string();
    let (addr, token) = match url.split_once("/?token=") {
        Some((a, t)) => (a.to_string(), Some(t.to_string())),
        None => (url, None),
    };
    // A non-loopback bind prints its wildcard address; connect through loopback.
    let addr = addr.replace("0.0.0.0", "127.0.0.1");
    Server { child, addr, token }
}
