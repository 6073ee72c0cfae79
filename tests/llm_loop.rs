//! The LLM path through the real loop, against scripted OpenAI-compatible servers: strict
//! structured output stays on for every step, prompts build on earlier code and stay bounded
//! however long the run, and a dead server pauses the run and then ends it cleanly.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::llm::{Behaviour, Respond, Server};
use common::scripted::{PENGUINS_INFER, PENGUINS_TRAIN, answer, step_of};
use common::{bin, fixtures, run_dir_of, stderr};
use loop_runner::agent::strict_problems;
use loop_runner::journal::{self, Event};
use serde_json::Value;

fn run(server: &Server, runs: &Path, config: &str, extra: &[&str]) -> Output {
    let config_path = runs.join("loop-runner.toml");
    std::fs::write(&config_path, config).unwrap();
    bin()
        .args(["run", "--agent", "openai", "--base-url", &server.base_url(), "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs)
        .arg("--config")
        .arg(&config_path)
        .args(extra)
        .output()
        .unwrap()
}

/// What OpenAI's strict mode would say of a request's schema (nothing if it is acceptable).
fn strict_refusal(request: &Value) -> Option<String> {
    let format = &request["response_format"];
    if format["type"] != "json_schema" {
        return Some("no json_schema response_format".into());
    }
    if format["json_schema"]["strict"] != true {
        return Some("strict is not true".into());
    }
    if request["max_tokens"].as_u64().is_none() && request["max_completion_tokens"].as_u64().is_none() {
        return Some("no max_tokens".into());
    }
    let problems = strict_problems(&format["json_schema"]["schema"]);
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[test]
fn strict_structured_output_stays_on_for_a_whole_run() {
    // The server refuses anything OpenAI's strict mode would refuse (a 400 naming the rule).
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Custom(Box::new(|req| match strict_refusal(req) {
        Some(why) => Respond::Status(
            400,
            serde_json::json!({"error": {"message": format!("Invalid schema for response_format: {why}"), "type": "invalid_request_error"}}).to_string(),
        ),
        None => Respond::Answer(answer(req, PENGUINS_TRAIN, PENGUINS_INFER)),
    })));
    let runs = tempfile::tempdir().unwrap();
    let output = run(
        &server,
        runs.path(),
        "[agent]\nmodel = \"gpt-4o-mini\"\n",
        &["--iterations", "7", "--budget", "10m"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let requests = server.requests();
    for r in &requests {
        assert_eq!(strict_refusal(&r.body), None, "{}", r.body);
    }
    let dir = run_dir_of(&output);
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    let notices: Vec<&Event> =
        entries.iter().map(|e| &e.event).filter(|e| matches!(e, Event::AgentNotice { .. })).collect();
    assert!(notices.is_empty(), "{notices:?}");
    // Seven iterations: five drafts, then improves that were shown their parent's script, and
    // every request told the time left.
    let operations: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::IterationStarted { operation, .. } => Some(operation.name().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(&operations[..5], ["draft"; 5]);
    assert!(operations[5..].iter().any(|o| o == "improve" || o == "ensemble"), "{operations:?}");
    let improve_plans: Vec<&Value> = requests
        .iter()
        .map(|r| &r.body)
        .filter(|b| step_of(b) == "plan" && b["messages"].to_string().contains(": improve iteration"))
        .collect();
    for plan in &improve_plans {
        assert!(plan["messages"].to_string().contains("Its train.py"), "{plan}");
        assert!(
            plan["messages"].to_string().contains("pickle.dump((model, cat)"),
            "the parent's code is shown"
        );
    }
    for r in &requests {
        let last =
            r.body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
        assert!(last.starts_with("Time: "), "{last}");
    }
    // The schemas' hash is on record, like the prompts'.
    assert!(
        matches!(&entries[0].event, Event::RunStarted { schemas_sha256, .. } if schemas_sha256.len() == 64)
    );
}

#[test]
fn prompts_stay_bounded_however_long_the_run() {
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| answer(req, PENGUINS_TRAIN, PENGUINS_INFER))));
    let runs = tempfile::tempdir().unwrap();
    // A model with a small context: 3072 tokens, answers of at most 1024.
    let config = "[agent]\nmodel = \"small-local-model\"\ncontext_tokens = 3072\nmax_tokens = 1024\n[search]\nensemble_every = 0\n";
    let output = run(&server, runs.path(), config, &["--iterations", "50"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    // Prompt tokens of each iteration's plan request (the server counts characters / 4; the
    // runner budgets with 3 bytes a token, so it errs on the small side).
    let records = loop_runner::agent::read_transcript(&dir.join("transcript.jsonl")).unwrap();
    let plan_tokens: Vec<(u32, u64)> = records
        .iter()
        .filter(|r| r.step == "plan" && r.attempt == 1)
        .filter_map(|r| Some((r.iteration, r.reply.as_ref()?.usage.prompt_tokens)))
        .collect();
    let at = |i: u32| plan_tokens.iter().find(|(n, _)| *n == i).map(|(_, t)| *t).unwrap();
    eprintln!(
        "plan prompt tokens at iterations 1, 10, 50: {}, {}, {}; {} requests for 50 iterations",
        at(1),
        at(10),
        at(50),
        records.len()
    );
    for (i, tokens) in &plan_tokens {
        assert!(*tokens <= 3072 - 1024, "iteration {i}: {tokens} prompt tokens for a 3072-token model");
    }
    let late: Vec<u64> = plan_tokens.iter().filter(|(i, _)| *i >= 30).map(|(_, t)| *t).collect();
    let spread = late.iter().max().unwrap() - late.iter().min().unwrap();
    assert!(spread < 200, "the prompt kept growing after iteration 30: {late:?}");
    let plan50 = records.iter().find(|r| r.step == "plan" && r.iteration == 50).unwrap();
    assert!(plan50.request.messages[1].content.contains("older iterations not shown"));
}

#[test]
fn a_dead_server_pauses_the_run_and_then_ends_it_cleanly() {
    let server = Server::start(vec![]);
    server
        .set_fallback(Behaviour::Custom(Box::new(|_| Respond::Status(503, "upstream connect error".into()))));
    let runs = tempfile::tempdir().unwrap();
    let config = "[agent]\nmodel = \"m\"\nmax_http_retries = 1\nbreaker_failures = 2\nbreaker_pauses = 2\nbreaker_pause = \"300ms\"\n";
    let started = Instant::now();
    let output = run(&server, runs.path(), config, &["--budget", "10m"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(took < Duration::from_secs(60), "{took:?}");
    let dir = run_dir_of(&output);
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    let finished = entries.iter().filter(|e| matches!(e.event, Event::IterationFinished { .. })).count();
    assert!((2..=5).contains(&finished), "{finished} iterations against a dead server");
    let pauses = entries
        .iter()
        .filter(|e| matches!(&e.event, Event::AgentNotice { step, .. } if step == "breaker"))
        .count();
    assert_eq!(pauses, 2);
    let reason = entries.iter().find_map(|e| match &e.event {
        Event::RunFinished { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let reason = reason.expect("the run finished, with its report");
    assert!(reason.contains("agent failed") && reason.contains("503"), "{reason}");
    assert!(dir.join("report/REPORT.md").is_file());
    assert!(stderr(&output).contains("pausing"), "{}", stderr(&output));
}

#[test]
fn a_run_whose_every_script_fails_stops_and_says_why() {
    // The agent's training script always fails the same way (as a script that trips over the
    // data does, however often it is asked to fix it), after a while of its own, so that with two
    // at once a later iteration often ends before an earlier one.
    const FAILING: &str = r#"import os, pickle, random, time
import pandas as pd
df = pd.read_csv("data/train.csv")
time.sleep(random.random() * 0.4)
raise ValueError("Mixed timezones detected \x1b[2J in column 'when'")
os.makedirs("model", exist_ok=True)
pickle.dump(None, open("model/model.pkl", "wb"))
"#;
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Custom(Box::new(|req| {
        Respond::Answer(answer(req, FAILING, PENGUINS_INFER))
    })));
    let runs = tempfile::tempdir().unwrap();
    let config = "[agent]\nmodel = \"m\"\n[loop]\nfix_attempts = 1\nfailures_in_a_row = 4\n";
    let started = Instant::now();
    let output = run(&server, runs.path(), config, &["--budget", "10m", "--jobs", "2"]);
    let took = started.elapsed();
    // Nothing scored: no final model, a non-zero exit, and the run ended long before its budget.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(took < Duration::from_secs(120), "{took:?}");
    let dir = run_dir_of(&output);
    let records = common::records(&dir);
    let failed = records.iter().filter(|r| r.status.starts_with("failed")).count();
    // Two were in flight when the fourth failure ended: they finish, nothing more starts.
    assert!((4..=5).contains(&failed) && failed == records.len(), "{records:?}");
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    let reason = entries
        .iter()
        .find_map(|e| match &e.event {
            Event::RunFinished { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("the run finished, with its report");
    assert!(reason.contains("iterations in a row failed"), "{reason}");
    // The error is named, its terminal escape blanked, and where to look is said.
    assert!(reason.contains("(ValueError: Mixed timezones detected  [2J in column 'when')"), "{reason}");
    assert!(reason.contains("/logs`") && reason.contains("failures_in_a_row"), "{reason}");
    assert!(stderr(&output).contains("the run stops"), "{}", stderr(&output));
    assert!(dir.join("report/REPORT.md").is_file());
}

#[test]
fn an_improve_may_build_on_another_scored_model_and_is_recorded_as_its_child() {
    // The plan of an improve first names an iteration that does not exist, then a scored draft
    // other than the one the search named.
    fn named(text: &str) -> u32 {
        let at = text.find(": improve iteration ").unwrap() + ": improve iteration ".len();
        text[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
    }
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| {
        let text = req["messages"].to_string();
        if step_of(req) != "plan" || !text.contains(": improve iteration ") {
            return answer(req, PENGUINS_TRAIN, PENGUINS_INFER);
        }
        let base = match (text.contains("builds_on names iteration 99"), named(&text)) {
            (false, _) => 99,
            (true, 2) => 3,
            (true, _) => 2,
        };
        serde_json::json!({"review": "", "plan": "The same change on another draft.", "builds_on": base})
            .to_string()
    })));
    let runs = tempfile::tempdir().unwrap();
    let config = "[agent]\nmodel = \"m\"\n[search]\nensemble_every = 0\n";
    let output = run(&server, runs.path(), config, &["--iterations", "7", "--jobs", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let decided: std::collections::BTreeMap<u32, Option<u32>> = journal::read(&dir.join("journal.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::IterationStarted { iteration, parent, .. } => Some((iteration, parent)),
            _ => None,
        })
        .collect();
    let transcript = loop_runner::agent::read_transcript(&dir.join("transcript.jsonl")).unwrap();
    let improves: Vec<_> = common::records(&dir)
        .into_iter()
        .filter(|r| r.operation == loop_runner::search::Operation::Improve)
        .collect();
    assert_eq!(improves.len(), 2, "{improves:?}");
    for r in improves {
        let n = r.iteration;
        let (named, base) = (decided[&n].unwrap(), r.parent.unwrap());
        assert_eq!(base, if named == 2 { 3 } else { 2 }, "iteration {n} is recorded as a child of its base");
        assert!(r.succeeded(), "{r:?}");
        let plans: Vec<_> = transcript.iter().filter(|t| t.iteration == n && t.step == "plan").collect();
        assert!(
            plans[0].problems.iter().any(|p| p.contains("builds_on names iteration 99")),
            "an iteration that is not a scored model is refused: {:?}",
            plans[0].problems
        );
        let train = transcript.iter().find(|t| t.iteration == n && t.step == "train").unwrap();
        let prompt = &train.request.messages[1].content;
        assert!(prompt.contains(&format!("Start from iteration {base}'s train.py")), "{prompt}");
    }
}
