//! The LLM path against a real OpenAI-compatible server: llama.cpp's own (xllamacpp, from PyPI)
//! serving SmolLM2-135M-Instruct on loopback with one thread. The model is far too small to
//! write good code; what is tested is the client and the loop against a real server: structured
//! output stays on for the whole run, every complete answer fits its schema (the server's
//! grammar and the runner's schemas agree), and the run ends by itself with a report.
//! `tests/setup.sh` installs the server and the model.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, fixtures};
use loop_runner::agent::{OutputMode, Verdict, read_transcript};
use loop_runner::journal::{self, Event};

const SERVE: &str = r#"
import sys, time
import xllamacpp as x
p = x.CommonParams()
p.model.path = sys.argv[1]
p.hostnames = ["127.0.0.1"]
p.port = int(sys.argv[2])
p.n_ctx = 4096
p.n_parallel = 1
p.cpuparams.n_threads = 1
p.cpuparams_batch.n_threads = 1
server = x.Server(p)
print("listening", flush=True)
while True:
    time.sleep(3600)
"#;

/// The llama.cpp server, stopped when dropped.
struct Llama {
    child: Child,
    port: u16,
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_llama() -> Llama {
    let cache = common::test_cache();
    let python = cache.join("llama/venv/bin/python");
    let model = cache.join("llama/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        python.is_file() && model.is_file(),
        "llama.cpp's server or its model is missing under {}: run tests/setup.sh",
        cache.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(&python)
        .args(["-c", SERVE])
        .arg(&model)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening"), "the server did not start: {line:?}");
    let server = Llama { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the llama.cpp server did not listen on port {port} within a minute");
}

#[test]
fn a_real_llama_cpp_server_drives_the_loop_with_structured_output_on() {
    let server = start_llama();
    let base_url = format!("http://127.0.0.1:{}/v1", server.port);

    let check =
        bin().args(["agent", "check", "--base-url", &base_url, "--model", "smollm2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(stdout.contains("json_schema: supported"), "{stdout}");

    // A small model in a 4096-token context: bounded answers, few attempts.
    let runs = tempfile::tempdir().unwrap();
    let config = runs.path().join("loop-runner.toml");
    std::fs::write(
        &config,
        "[agent]\nmodel = \"smollm2\"\ncontext_tokens = 4096\nmax_tokens = 512\nmax_tokens_cap = 512\nmax_attempts = 2\ntimeout = \"120s\"\n[loop]\nfix_attempts = 1\n",
    )
    .unwrap();
    let output = bin()
        .args(["run", "--agent", "openai", "--base-url", &base_url, "--iterations", "2", "--budget", "4m"])
        // A held-out split: the split step, with its schema, is asked too.
        .args(["--validation", "holdout"])
        .arg("--config")
        .arg(&config)
        .arg("--task")
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The model writes poor scripts: the run may end without a scored model (exit 1), but it
    // ends by itself, not by a crash or a refused setup.
    assert!(matches!(output.status.code(), Some(0 | 1)), "{stderr}");
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).lines().next().unwrap());
    assert!(dir.join("report/REPORT.md").is_file());
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    assert!(entries.iter().any(|e| matches!(e.event, Event::RunFinished { .. })));
    let notices: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::AgentNotice { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert!(notices.iter().all(|n| !n.contains("structured output is off")), "{notices:?}");
    let records = read_transcript(&dir.join("transcript.jsonl")).unwrap();
    // How far an iteration gets depends on what the model writes; each one that started asked
    // the server (both, unless a slow machine spent the budget first).
    let asked: std::collections::BTreeSet<u32> = records.iter().map(|r| r.iteration).collect();
    let reason = entries.iter().find_map(|e| match &e.event {
        Event::RunFinished { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let expected: &[u32] = if reason.as_deref() == Some("iterations done") { &[1, 2] } else { &[1] };
    assert!(
        expected.iter().all(|i| asked.contains(i)),
        "{} calls, iterations {asked:?}, {reason:?}",
        records.len()
    );
    for r in &records {
        assert_eq!(r.request.mode, OutputMode::JsonSchema { strict: true }, "call {}", r.seq);
        assert!(r.request.max_tokens.is_some());
        // Every complete answer fits its schema; only the runner's own rules may reject one.
        if r.verdict == Verdict::Rejected {
            for problem in &r.problems {
                let schema_problem = problem.starts_with("at `")
                    || problem.starts_with("at the top level")
                    || problem.contains("not a JSON object")
                    || problem.contains("does not fit the expected shape");
                assert!(!schema_problem, "call {} ({}): {problem}", r.seq, r.step);
            }
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap();
    eprintln!(
        "llama.cpp run: {} calls, {} iterations, {:.0} s; summary {summary}",
        records.len(),
        summary["iterations"],
        summary["wall_seconds"].as_f64().unwrap_or_default()
    );
}
