//! `loop-runner serve` against the real server on a loopback port: the API over real runs, the
//! event stream following a run in progress, the pages, the token on a non-loopback bind, and
//! run ids that try to leave the runs directory.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{bin, fixtures, run_dir_of, stderr};

/// A `serve` process, stopped when dropped.
struct Server {
    child: Child,
    addr: String,
    token: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(runs: &Path, bind: &str) -> Server {
    let mut child = bin()
        .args(["serve", "--bind", bind, "--runs-dir"])
        .arg(runs)
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

/// One HTTP/1.1 GET; the status and the body.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(body) } else { body.to_string() })
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

fn json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path, &[]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn finished_run(runs: &Path) -> PathBuf {
    let o = bin()
        .args(["run", "--iterations", "5", "--validation", "holdout", "--sandbox", "process", "--task"])
        .arg(fixtures().join("breast_cancer/task.toml"))
        .arg("--runs-dir")
        .arg(runs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    run_dir_of(&o)
}

#[test]
fn the_api_serves_runs_iterations_diffs_and_its_openapi_document() {
    let runs = tempfile::tempdir().unwrap();
    let run = finished_run(runs.path());
    let id = run.file_name().unwrap().to_string_lossy().to_string();
    let server = start(runs.path(), "127.0.0.1:0");
    assert!(server.token.is_none(), "loopback needs no token");

    let list = json(&server.addr, "/api/runs");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["run_id"], id.as_str());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report/summary.json")).unwrap()).unwrap();
    assert_eq!(list[0]["test_score"], summary["test_score"]);

    let detail = json(&server.addr, &format!("/api/runs/{id}"));
    let records = common::records(&run);
    assert_eq!(detail["iterations"].as_array().unwrap().len(), records.len());
    assert!(
        detail["tree"].as_str().unwrap().contains("iteration")
            || !detail["tree"].as_str().unwrap().is_empty()
    );
    assert!(detail["current"].is_null(), "a finished run is doing nothing");

    let first = json(&server.addr, &format!("/api/runs/{id}/iterations/1"));
    assert!(first["files"]["train.py"].as_str().unwrap().contains("import"));
    assert!(first["answers"].as_object().unwrap().contains_key("architecture"));
    assert!(first["script_runs"].as_array().unwrap().iter().any(|s| s["step"] == "train"));
    // An iteration with a parent comes with the diff against it.
    let child = records.iter().find(|r| r.parent.is_some()).expect("the ensemble or refit has a parent");
    let with_parent = json(&server.addr, &format!("/api/runs/{id}/iterations/{}", child.iteration));
    assert_eq!(with_parent["diff"]["against"], child.parent.unwrap());
    assert!(with_parent["diff"]["patch"].as_str().unwrap().contains("diff --git"), "{with_parent}");

    let (status, svg) = get(&server.addr, &format!("/api/runs/{id}/plot.svg"), &[]);
    assert_eq!(status, 200);
    assert!(svg.starts_with("<svg") && svg.contains("circle"), "{svg}");
    let doc = json(&server.addr, "/openapi.json");
    assert!(doc["paths"]["/api/runs/{id}/events"].is_object());

    for (path, expected) in [
        (format!("/api/runs/{id}/iterations/99"), 404),
        ("/api/runs/no-such-run".to_string(), 404),
        ("/api/runs/..".to_string(), 400),
        ("/api/runs/.hidden".to_string(), 400),
        ("/api/runs/..%2F..%2Fetc".to_string(), 400),
        ("/runs/..%2Fholdout".to_string(), 400),
    ] {
        let (status, body) = get(&server.addr, &path, &[]);
        assert_eq!(status, expected, "{path}: {body}");
    }
    // Pages load and name what they will fetch.
    for path in ["/".to_string(), format!("/runs/{id}"), format!("/runs/{id}/iterations/1")] {
        let started = Instant::now();
        let (status, html) = get(&server.addr, &path, &[]);
        assert_eq!(status, 200, "{path}");
        assert!(html.contains("<script>") && html.contains("/api/"), "{path}");
        eprintln!("{path}: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
}

#[test]
fn a_non_loopback_bind_requires_the_token_on_every_request() {
    let runs = tempfile::tempdir().unwrap();
    let server = start(runs.path(), "0.0.0.0:0");
    let token = server.token.clone().expect("a token is generated and printed");
    assert!(token.len() >= 32);
    for path in ["/api/runs", "/", "/openapi.json", "/api/runs/x/events"] {
        let (status, _) = get(&server.addr, path, &[]);
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) = get(&server.addr, path, &[("Authorization", "Bearer wrong-token-wrong-token")]);
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let bearer = format!("Bearer {token}");
    let (status, body) = get(&server.addr, "/api/runs", &[("Authorization", &bearer)]);
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _) = get(&server.addr, &format!("/?token={token}"), &[]);
    assert_eq!(status, 200);
}

#[test]
fn the_event_stream_follows_a_run_in_progress() {
    let runs = tempfile::tempdir().unwrap();
    let mut run = bin()
        .args([
            "run",
            "--budget",
            "5m",
            "--iterations",
            "12",
            "--validation",
            "holdout",
            "--sandbox",
            "process",
            "--task",
        ])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(run.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let dir = PathBuf::from(line.trim());
    let id = dir.file_name().unwrap().to_string_lossy().to_string();
    let server = start(runs.path(), "127.0.0.1:0");

    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(stream, "GET /api/runs/{id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut kind = String::new();
    let mut latencies = Vec::new();
    let mut seen_finished = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let entry: serde_json::Value = serde_json::from_str(data).unwrap();
            if kind == "iteration_finished" {
                // Written at `at`; seen here now.
                let at = humantime::parse_rfc3339(entry["at"].as_str().unwrap()).unwrap();
                if let Ok(late) = std::time::SystemTime::now().duration_since(at) {
                    latencies.push(late.as_secs_f64());
                }
                seen_finished += 1;
            }
            if kind == "run_finished" {
                break;
            }
        }
    }
    assert!(run.wait().unwrap().success());
    let records = common::records(&dir);
    assert_eq!(seen_finished, records.len(), "every iteration_finished arrived, once");
    // The first ones may be old news (written before the stream opened); the rest arrive live.
    let live: Vec<f64> = latencies.iter().copied().skip(2).collect();
    assert!(!live.is_empty());
    let mut sorted = live.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "iteration finished -> event received: median {:.0} ms, max {:.0} ms over {} events",
        median * 1000.0,
        sorted.last().unwrap() * 1000.0,
        sorted.len()
    );
    assert!(median < 2.0, "events arrive within a poll or two: {live:?}");
}
