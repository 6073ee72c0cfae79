//! `loop-runner serve` against the real server on a loopback port: the API over real runs, the
//! event stream following a run in progress, the pages, the token on a non-loopback bind, and
//! run ids that try to leave the runs directory.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::server::{start, start_with};
use common::{bin, fixtures, run_dir_of, stderr};

/// One HTTP/1.1 GET; the status and the body.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = request(addr, "GET", path, headers, &[]);
    (status, body)
}

/// One HTTP/1.1 request; the status, the head and the body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // A server may answer (413) before it has read everything; the answer is what counts.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (status, head.to_string(), if chunked { dechunk(body) } else { body.to_string() })
}

fn post(addr: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let (status, _, text) = request(addr, "POST", path, &[], body);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {status} {e}: {text}")))
}

/// Polls the run's state until `done` holds for it (or the deadline).
fn wait_for(
    addr: &str,
    id: &str,
    seconds: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let detail = json(addr, &format!("/api/runs/{id}"));
        if done(&detail) {
            return detail;
        }
        assert!(Instant::now() < deadline, "run {id} did not get there in {seconds} s: {}", detail["run"]);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The run directories under `runs` (what is not hidden).
fn run_dirs(runs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(runs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn uploads(runs: &Path) -> Vec<String> {
    std::fs::read_dir(runs.join(".uploads"))
        .map(|list| {
            list.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().to_string()).collect()
        })
        .unwrap_or_default()
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
    let logs = first["logs"].as_array().unwrap();
    assert_eq!(logs.len(), first["script_runs"].as_array().unwrap().len(), "every script's output: {logs:?}");
    assert!(
        logs.iter().any(|l| l["step"] == "train" && l["script"].as_str().unwrap().ends_with("train.py")),
        "{logs:?}"
    );
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

#[test]
fn a_run_started_from_an_upload_is_a_run_like_any_other() {
    let runs = tempfile::tempdir().unwrap();
    let server = start(runs.path(), "127.0.0.1:0");
    let data = std::fs::read(fixtures().join("credit/train.csv")).unwrap();
    let (status, started) = post(
        &server.addr,
        "/api/runs?name=credit%20upload&target=Status&positive=bad&budget=5m&iterations=3&validation=holdout",
        &data,
    );
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("credit_upload-"), "{id}");
    let list = json(&server.addr, "/api/runs");
    assert_eq!(list[0]["run_id"], id.as_str(), "it is in the list at once");
    let detail = wait_for(&server.addr, &id, 300, |d| d["run"]["state"] == "finished");
    assert!(detail["run"]["test_score"].is_number(), "{}", detail["run"]);
    let dir = runs.path().join(&id);
    // The CLI knows it as well as one it started.
    let o = bin().arg("status").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin().arg("audit").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let detail = json(&server.addr, &format!("/api/runs/{id}"));
    assert_eq!(detail["audits"][0]["passed"], true, "the audit shows on the run: {}", detail["audits"]);
    assert_eq!(detail["audits"][0]["rev"], "best");

    // Predictions over HTTP are the CLI's, byte for byte (the test rows, labels and all: the
    // target column is dropped before the script sees them).
    let rows = std::fs::read(fixtures().join("credit/test.csv")).unwrap();
    let (status, head, served) =
        request(&server.addr, "POST", &format!("/api/runs/{id}/predict"), &[], &rows);
    assert_eq!(status, 200, "{served}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/csv"), "{head}");
    // By default the model the run scored on the test split (the refit, under a held-out split).
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap();
    let final_tag = format!("iter-{:04}", summary["final_iteration"].as_u64().unwrap());
    let git = std::process::Command::new("git")
        .arg("-C")
        .arg(dir.join("workspace"))
        .args(["rev-parse", &final_tag])
        .output()
        .unwrap();
    let final_commit = String::from_utf8_lossy(&git.stdout).trim().to_string();
    assert!(head.contains(&format!("x-loop-runner-commit: {final_commit}")), "{final_tag}: {head}");
    let out = tempfile::tempdir().unwrap();
    let o = bin()
        .arg("predict")
        .arg(&dir)
        .arg("--input")
        .arg(fixtures().join("credit/test.csv"))
        .arg("--output")
        .arg(out.path().join("p.csv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(served, std::fs::read_to_string(out.path().join("p.csv")).unwrap());
    assert_eq!(served.lines().count(), String::from_utf8_lossy(&rows).lines().count());
    let (status, error) = post(&server.addr, &format!("/api/runs/{id}/predict"), b"a,b\n1,2\n");
    assert_eq!(status, 422, "{error}");
    assert!(error["error"].as_str().unwrap().contains("input lacks columns"), "{error}");
    assert!(!error["error"].as_str().unwrap().contains("/tmp/"), "no server paths in errors: {error}");
}

#[test]
fn stop_is_ctrl_c_and_a_crashed_run_shows_as_interrupted_and_resumes() {
    let runs = tempfile::tempdir().unwrap();
    let server = start_with(runs.path(), "127.0.0.1:0", &["--max-running", "2"]);
    let data = std::fs::read(fixtures().join("penguins/train.csv")).unwrap();
    let (status, started) =
        post(&server.addr, "/api/runs?name=long&target=species&budget=10m&validation=holdout", &data);
    assert_eq!(status, 201, "{started}");
    let long = started["run_id"].as_str().unwrap().to_string();
    let (status, started) = post(
        &server.addr,
        "/api/runs?name=short&target=species&budget=10m&iterations=4&validation=holdout",
        &data,
    );
    assert_eq!(status, 201, "{started}");
    let short = started["run_id"].as_str().unwrap().to_string();
    let (status, refused) = post(&server.addr, "/api/runs?name=third&target=species&budget=1m", &data);
    assert_eq!(status, 429, "--max-running 2: {refused}");

    let scored = |d: &serde_json::Value| d["iterations"].as_array().is_some_and(|i| !i.is_empty());
    wait_for(&server.addr, &long, 120, |d| scored(d) && d["run"]["state"] == "running");
    let (status, stopping) = post(&server.addr, &format!("/api/runs/{long}/stop"), b"");
    assert_eq!(status, 202, "{stopping}");
    // Asked twice (a double click): still one SIGINT, so the run is not aborted but finishes.
    let (status, stopping) = post(&server.addr, &format!("/api/runs/{long}/stop"), b"");
    assert_eq!(status, 202, "{stopping}");
    let detail = wait_for(&server.addr, &long, 120, |d| d["run"]["state"] == "finished");
    assert_eq!(detail["run"]["stop_reason"], "interrupted");
    assert!(detail["run"]["test_score"].is_number(), "stopped runs are still scored: {}", detail["run"]);
    let (status, _) = post(&server.addr, &format!("/api/runs/{long}/stop"), b"");
    assert_eq!(status, 409, "a finished run cannot be stopped");

    // A run that dies (kill -9) leaves the server standing and shows as interrupted.
    wait_for(&server.addr, &short, 120, |d| scored(d));
    let dir = runs.path().join(&short);
    let pid: i32 = std::fs::read_to_string(dir.join("run.lock")).unwrap().trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let detail = wait_for(&server.addr, &short, 30, |d| d["run"]["state"] == "interrupted");
    assert!(detail["run"]["test_score"].is_null());
    let (status, refused) = post(&server.addr, &format!("/api/runs/{short}/stop"), b"");
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("resume"), "{refused}");
    let o = bin().arg("resume").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let detail = json(&server.addr, &format!("/api/runs/{short}"));
    assert_eq!(detail["run"]["state"], "finished");
    assert!(detail["run"]["test_score"].is_number());
}

#[test]
fn bad_uploads_get_a_clear_4xx_and_nothing_is_written() {
    let runs = tempfile::tempdir().unwrap();
    let server = start_with(runs.path(), "127.0.0.1:0", &["--max-upload", "64KiB", "--max-budget", "1h"]);
    let data = std::fs::read(fixtures().join("credit/train.csv")).unwrap();
    let small: Vec<u8> =
        String::from_utf8_lossy(&data).lines().take(200).collect::<Vec<_>>().join("\n").into_bytes();
    assert!(data.len() > 64 * 1024 && small.len() < 64 * 1024);
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            "/api/runs?name=c&target=Status&budget=5m".into(),
            data.clone(),
            413,
            "larger than this server accepts",
        ),
        ("/api/runs?name=c&target=Nope&budget=5m".into(), small.clone(), 422, "target column `Nope`"),
        ("/api/runs?target=Status&budget=5m".into(), small.clone(), 400, "name"),
        ("/api/runs?name=c&target=Status&budget=soon".into(), small.clone(), 400, "budget `soon`"),
        (
            "/api/runs?name=c&target=Status&budget=2h".into(),
            small.clone(),
            400,
            "more than this server allows",
        ),
        (
            "/api/runs?name=c&target=Status&budget=5m&metric=rmse&task=binary".into(),
            small.clone(),
            422,
            "does not apply",
        ),
        ("/api/runs?name=c&target=Status&budget=5m&colour=red".into(), small.clone(), 400, "colour"),
        ("/api/runs?name=c&target=Status&budget=5m".into(), Vec::new(), 400, "body is empty"),
        ("/api/runs?name=c&target=Status&budget=5m".into(), b"\xff\xfe\x00garbage".to_vec(), 422, ""),
        ("/api/runs?name=c&target=Status&budget=5m&format=parquet".into(), small.clone(), 422, "Parquet"),
        ("/api/runs/..%2F..%2Fetc/stop".into(), Vec::new(), 400, "not a run id"),
        ("/api/runs/..%2Fx/predict".into(), small.clone(), 400, "not a run id"),
        ("/api/runs/no-such-run/predict".into(), small.clone(), 404, "no run"),
    ];
    for (path, body, expected, says) in cases {
        let (status, answer) = post(&server.addr, &path, &body);
        assert_eq!(status, expected, "{path}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{path}: {answer}");
    }
    assert!(run_dirs(runs.path()).is_empty(), "no run was created: {:?}", run_dirs(runs.path()));
    assert!(uploads(runs.path()).is_empty(), "nothing was kept: {:?}", uploads(runs.path()));

    // Without the token, nothing reaches the handlers.
    let guarded = start(runs.path(), "0.0.0.0:0");
    let (status, _) = post(&guarded.addr, "/api/runs?name=c&target=Status&budget=5m", &small);
    assert_eq!(status, 401);
    let (status, _) = post(&guarded.addr, "/api/runs/x/stop", b"");
    assert_eq!(status, 401);
    assert!(run_dirs(runs.path()).is_empty() && uploads(runs.path()).is_empty());
}
