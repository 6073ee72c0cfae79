//! The agent layer against a local OpenAI-compatible server that misbehaves on cue.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::llm::{Behaviour, Respond, Server};
use loop_runner::agent::{
    Agent, AgentError, AgentSettings, Ask, BackendError, OpenAiBackend, Price, Redactor, ReplayBackend,
    Secret, StructuredOutput, Transcript, Verdict, read_transcript,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-test-do-not-leak-0123456789";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Plan {
    family: String,
    trees: u32,
}

const GOOD: &str = r#"{"family": "random_forest", "trees": 200}"#;

fn no_rules(_: &Plan) -> Vec<String> {
    vec![]
}

fn settings() -> AgentSettings {
    AgentSettings {
        model: "test-model".into(),
        max_attempts: 3,
        max_http_retries: 3,
        backoff_base: Duration::ZERO,
        ..AgentSettings::default()
    }
}

fn agent(server: &Server, settings: AgentSettings, transcript: &Path, timeout: Duration) -> Agent {
    let backend = OpenAiBackend::new(&server.base_url(), Some(&Secret::new(KEY)), timeout).unwrap();
    let transcript = Transcript::open(transcript, Redactor::new([Secret::new(KEY)])).unwrap();
    Agent::new(Arc::new(backend), settings, transcript, CancellationToken::new())
}

fn plan_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(loop_runner::agent::schema_of::<Plan>);
    &SCHEMA
}

fn question(prompt: &str) -> Ask<'_> {
    Ask {
        step: "plan",
        iteration: 1,
        system: "You plan experiments.",
        prompt,
        schema: plan_schema(),
        context: serde_json::json!({}).into(),
        history_json: None,
        clock_note: None,
        shrink: None,
    }
}

async fn ask(agent: &Agent, prompt: &str) -> Result<Plan, AgentError> {
    agent.ask::<Plan>(question(prompt), &no_rules).await.map(|a| a.value).map_err(|e| e.error)
}

#[tokio::test]
async fn a_good_answer_is_accepted_with_strict_json_schema() {
    let server = Server::start(vec![Behaviour::Answer(GOOD.into())]);
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let answer = agent.ask::<Plan>(question("plan it"), &no_rules).await.unwrap();
    assert_eq!(answer.value, Plan { family: "random_forest".into(), trees: 200 });
    assert_eq!(answer.attempts, 1);
    assert!(answer.usage.prompt_tokens > 0);
    let sent = &server.requests()[0];
    assert_eq!(sent.body["response_format"]["type"], "json_schema");
    assert_eq!(sent.body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(sent.body["model"], "test-model");
    assert!(sent.headers.contains(&format!("Bearer {KEY}")), "the key is sent to the server");
    let records = read_transcript(&dir.path().join("t.jsonl")).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].verdict, Verdict::Accepted);
}

#[tokio::test]
async fn invalid_json_then_schema_violation_then_good() {
    let server = Server::start(vec![
        Behaviour::Answer("I think a forest would be nice.".into()),
        Behaviour::Answer(r#"{"family": "random_forest", "trees": "many"}"#.into()),
        Behaviour::Answer(GOOD.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let answer = agent.ask::<Plan>(question("plan it"), &no_rules).await.unwrap();
    assert_eq!(answer.attempts, 3);
    // The problems were quoted back to the agent.
    let third = &server.requests()[2].body["messages"];
    let feedback = third.as_array().unwrap().iter().rfind(|m| m["role"] == "user").unwrap();
    assert!(feedback["content"].as_str().unwrap().contains("/trees"), "{feedback}");
    let verdicts: Vec<Verdict> =
        read_transcript(&dir.path().join("t.jsonl")).unwrap().iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts, [Verdict::Rejected, Verdict::Rejected, Verdict::Accepted]);
}

#[tokio::test]
async fn always_bad_fails_the_step_with_every_attempt() {
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Answer(r#"{"family": "svm", "trees": 3}"#.into()));
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let rule = |p: &Plan| {
        if p.family == "svm" { vec!["svm is not available".to_string()] } else { vec![] }
    };
    let err = agent.ask::<Plan>(question("plan it"), &rule).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err.error, AgentError::Invalid { ref attempts, .. } if attempts.len() == 3), "{text}");
    assert_eq!(text.matches("svm is not available").count(), 3, "{text}");
    assert!(text.contains("attempt 3"), "{text}");
    // Three paid answers were rejected: what they cost still counts.
    assert_eq!((err.spent.attempts, err.spent.calls), (3, 3));
    assert!(err.spent.usage.prompt_tokens > 0 && err.spent.usage.completion_tokens > 0, "{:?}", err.spent);
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let server = Server::start(vec![
        Behaviour::Status {
            code: 429,
            retry_after: Some(1),
            body: r#"{"error":{"message":"slow down"}}"#.into(),
        },
        Behaviour::Answer(GOOD.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let started = Instant::now();
    ask(&agent, "plan").await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "waited {:?}", started.elapsed());
    let records = read_transcript(&dir.path().join("t.jsonl")).unwrap();
    assert_eq!(records[0].verdict, Verdict::Failed);
    assert!(records[0].error.as_ref().unwrap().detail.contains("429"));
    assert_eq!((records[1].try_number, records[1].verdict), (2, Verdict::Accepted));
}

#[tokio::test]
async fn server_errors_hangs_and_truncated_bodies_are_retried() {
    let server = Server::start(vec![
        Behaviour::Status { code: 500, retry_after: None, body: "boom".into() },
        Behaviour::Hang(Duration::from_secs(10)),
        Behaviour::Truncated,
        Behaviour::Status { code: 503, retry_after: None, body: "busy".into() },
        Behaviour::Answer(GOOD.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.max_http_retries = 4;
    let agent = agent(&server, s, &dir.path().join("t.jsonl"), Duration::from_millis(500));
    let started = Instant::now();
    ask(&agent, "plan").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "the hang was cut by the timeout");
    let details: Vec<String> = read_transcript(&dir.path().join("t.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| e.detail.clone()))
        .collect();
    assert_eq!(details.len(), 4, "{details:?}");
    assert!(details[0].contains("HTTP 500"), "{details:?}");
    assert!(details[1].contains("no answer"), "{details:?}");
    assert!(details[2].contains("broke off") || details[2].contains("malformed"), "{details:?}");
}

#[tokio::test]
async fn retries_are_bounded() {
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Answer(String::new()));
    for _ in 0..10 {
        server.push(Behaviour::Status { code: 500, retry_after: None, body: "down".into() });
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let err = ask(&agent, "plan").await.unwrap_err();
    assert!(matches!(err, AgentError::Backend { source: BackendError::Transient { .. }, .. }), "{err}");
    assert_eq!(server.requests().len(), 4, "one try and three retries");
}

#[tokio::test]
async fn a_refused_json_schema_falls_back_to_the_prompt() {
    let server = Server::start(vec![
        Behaviour::RejectSchemaThenAnswer(GOOD.into()),
        Behaviour::Answer(GOOD.into()),
        Behaviour::Answer(GOOD.into()),
        Behaviour::Answer(GOOD.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    ask(&agent, "plan").await.unwrap();
    assert!(
        agent.prompt_mode_for("plan") && !agent.prompt_mode_for("train"),
        "only the refused step falls back"
    );
    assert!(agent.fallbacks()["plan"].contains("refused its schema"));
    let notices = agent.take_notices();
    assert!(
        notices.iter().any(|n| n.step == "plan" && n.text.contains("structured output is off")),
        "{notices:?}"
    );
    ask(&agent, "plan again").await.unwrap();
    let mut other = question("train it");
    other.step = "train";
    agent.ask::<Plan>(other, &no_rules).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests[0].body.get("response_format").is_some());
    for later in &requests[1..3] {
        assert!(later.body.get("response_format").is_none());
        let prompt = later.body["messages"][1]["content"].as_str().unwrap();
        assert!(prompt.contains("JSON Schema") && prompt.contains("\"trees\""), "{prompt}");
    }
    assert_eq!(
        requests[3].body["response_format"]["json_schema"]["strict"], true,
        "another step keeps json_schema"
    );
    // Forced json_schema mode does not fall back.
    let server = Server::start(vec![Behaviour::RejectSchemaThenAnswer(GOOD.into())]);
    let mut s = settings();
    s.structured = StructuredOutput::JsonSchema;
    let agent = self::agent(&server, s, &dir.path().join("t2.jsonl"), Duration::from_secs(5));
    assert!(matches!(ask(&agent, "plan").await.unwrap_err(), AgentError::Backend { .. }));
}

#[tokio::test]
async fn every_call_sets_max_tokens_and_a_cut_off_answer_gets_more_room() {
    let server = Server::start(vec![]);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    server.set_fallback(Behaviour::Custom(Box::new(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Respond::Cutoff(r#"{"family": "random_forest", "tre"#.into())
        } else {
            Respond::Answer(GOOD.into())
        }
    })));
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.step_max_tokens.insert("plan".into(), 300);
    let agent = agent(&server, s, &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let answer = agent.ask::<Plan>(question("plan"), &no_rules).await.unwrap();
    assert_eq!(answer.attempts, 2);
    let requests = server.requests();
    assert_eq!(requests[0].body["max_tokens"], 300);
    assert_eq!(requests[1].body["max_tokens"], 600, "twice the room after a cut-off");
    let note = requests[1].body["messages"].to_string();
    assert!(note.contains("cut off at the 300-token limit"), "{note}");
    let records = read_transcript(&dir.path().join("t.jsonl")).unwrap();
    assert_eq!(records[0].verdict, Verdict::Truncated);
}

#[tokio::test]
async fn a_refused_schema_keyword_is_dropped_and_structured_output_stays_on() {
    // OpenAI's strict mode refuses some keywords (e.g. `maxLength`) that grammars honour.
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Custom(Box::new(|req| {
        if req["response_format"].to_string().contains("maxLength") {
            let error = r#"{"error": {"message": "Invalid schema for response_format 'Plan': In context=('properties', 'family'), 'maxLength' is not permitted.", "type": "invalid_request_error", "param": "response_format", "code": null}}"#;
            Respond::Status(400, error.into())
        } else {
            Respond::Answer(GOOD.into())
        }
    })));
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let mut schema = plan_schema().clone();
    schema["properties"]["family"]["maxLength"] = serde_json::json!(20);
    let mut q = question("plan");
    q.schema = &schema;
    agent.ask::<Plan>(q.clone(), &no_rules).await.unwrap();
    agent.ask::<Plan>(q, &no_rules).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one refusal, then the keyword stays out");
    for r in &requests[1..] {
        assert_eq!(r.body["response_format"]["type"], "json_schema");
        assert!(!r.body.to_string().contains("maxLength"));
    }
    assert!(agent.fallbacks().is_empty());
    assert!(agent.take_notices().iter().any(|n| n.text.contains("`maxLength`")));
}

#[tokio::test]
async fn free_text_answers_get_the_schema_in_the_prompt() {
    // A server that ignores response_format.
    let server = Server::start(vec![
        Behaviour::Answer("Sure! I would use a random forest with 200 trees.".into()),
        Behaviour::Answer(GOOD.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    agent.ask::<Plan>(question("plan"), &no_rules).await.unwrap();
    let retry =
        server.requests()[1].body["messages"].as_array().unwrap().last().unwrap()["content"].to_string();
    assert!(retry.contains("JSON Schema") && retry.contains("trees"), "{retry}");
}

#[tokio::test]
async fn a_prompt_too_long_for_the_model_is_shortened_and_asked_again() {
    let server = Server::start(vec![
        Behaviour::Status {
            code: 400,
            retry_after: None,
            body: r#"{"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}"#.into(),
        },
        Behaviour::Answer(GOOD.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let shrink = |level: u32| Some(format!("a shorter prompt, level {level}"));
    let mut q = question("a very long prompt with the whole history");
    q.shrink = Some(&shrink);
    let answer = agent.ask::<Plan>(q, &no_rules).await.unwrap();
    assert_eq!(answer.attempts, 1, "a shortened prompt is not a rejected answer");
    let second = server.requests()[1].body["messages"][1]["content"].as_str().unwrap().to_string();
    assert_eq!(second, "a shorter prompt, level 1");
    // Without a way to shorten it, the step fails with the server's message.
    let server = Server::start(vec![Behaviour::Status {
        code: 400,
        retry_after: None,
        body: r#"{"error": {"message": "the request exceeds the available context size, try increasing it", "type": "exceed_context_size_error"}}"#.into(),
    }]);
    let agent = self::agent(&server, settings(), &dir.path().join("t2.jsonl"), Duration::from_secs(5));
    let err = ask(&agent, "plan").await.unwrap_err();
    assert!(
        err.to_string().contains("step `plan`") && format!("{err:?}").contains("ContextTooLong"),
        "{err:?}"
    );
}

#[tokio::test]
async fn other_client_errors_are_reported_with_the_servers_message() {
    let server = Server::start(vec![Behaviour::Status {
        code: 422,
        retry_after: None,
        body: r#"{"error": {"message": "Unsupported parameter: 'seed' is not supported with this model.", "type": "invalid_request_error"}}"#.into(),
    }]);
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(&server, settings(), &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let err = ask(&agent, "plan").await.unwrap_err();
    let AgentError::Backend { source: BackendError::Fatal { detail }, .. } = &err else { panic!("{err:?}") };
    assert!(detail.contains("HTTP 422") && detail.contains("Unsupported parameter: 'seed'"), "{detail}");
}

#[tokio::test]
async fn the_spend_cap_stops_cleanly() {
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Answer(GOOD.into()));
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.prices
        .insert("test-model".into(), Price { input_per_million: 100_000.0, output_per_million: 100_000.0 });
    s.spend_cap_usd = Some(1.0);
    let agent = agent(&server, s, &dir.path().join("t.jsonl"), Duration::from_secs(5));
    let first = agent.ask::<Plan>(question("plan"), &no_rules).await.unwrap();
    assert!(first.cost_usd > 1.0);
    let err = ask(&agent, "plan again").await.unwrap_err();
    assert!(matches!(err, AgentError::SpendCap { .. }), "{err}");
    assert!(err.hint().unwrap().contains("spend_cap_usd"));
    assert_eq!(server.requests().len(), 1, "no call after the cap");
}

#[tokio::test]
async fn replay_reproduces_answers_and_names_a_divergence() {
    let server = Server::start(vec![
        Behaviour::Answer("not json".into()),
        Behaviour::Answer(GOOD.into()),
        Behaviour::Answer(r#"{"family": "hgb", "trees": 1}"#.into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let recorded = {
        let agent = agent(&server, settings(), &path, Duration::from_secs(5));
        (ask(&agent, "first").await.unwrap(), ask(&agent, "second").await.unwrap())
    };
    let replay = |prompts: [&'static str; 2]| {
        let path = path.clone();
        async move {
            let backend = Arc::new(ReplayBackend::from_transcript(&path).unwrap());
            let agent = Agent::new(
                backend,
                settings(),
                Transcript::discard(Redactor::default()),
                CancellationToken::new(),
            );
            Ok::<_, AgentError>((ask(&agent, prompts[0]).await?, ask(&agent, prompts[1]).await?))
        }
    };
    assert_eq!(replay(["first", "second"]).await.unwrap(), recorded);
    assert_eq!(server.requests().len(), 3, "replay makes no HTTP call");
    let err = replay(["first", "second, changed"]).await.unwrap_err();
    let AgentError::Backend { source: BackendError::ReplayMismatch(divergence), .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(divergence.step, "plan");
    assert!(divergence.field.starts_with("messages[1].content"), "{}", divergence.field);
}

#[tokio::test]
async fn the_api_key_never_reaches_the_transcript_or_errors() {
    let echo = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error"}}}}"#
    );
    let server = Server::start(vec![
        Behaviour::Status { code: 500, retry_after: None, body: format!("upstream said {KEY}") },
        Behaviour::Status { code: 401, retry_after: None, body: echo },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let agent = agent(&server, settings(), &path, Duration::from_secs(5));
    let err = ask(&agent, "plan").await.unwrap_err();
    let shown = format!(
        "{err} {err:?} {}",
        std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default()
    );
    assert!(shown.contains("rejected the API key"), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("****") && !text.contains(KEY));
}

#[test]
fn agent_check_reports_what_the_server_supports() {
    let check = |server: &Server| {
        common::bin()
            .env("CHECK_KEY", KEY)
            .args([
                "agent",
                "check",
                "--base-url",
                &server.base_url(),
                "--model",
                "m",
                "--api-key-env",
                "CHECK_KEY",
            ])
            .output()
            .unwrap()
    };
    let answer = r#"{"city": "Paris", "product": 42}"#;
    let server = Server::start(vec![Behaviour::Answer(answer.into())]);
    let output = check(&server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("json_schema: supported")
            && stdout.contains("tokens:")
            && stdout.contains("latency:"),
        "{stdout}"
    );

    let server = Server::start(vec![
        Behaviour::RejectSchemaThenAnswer(answer.into()),
        Behaviour::Answer(answer.into()),
    ]);
    let stdout = String::from_utf8_lossy(&check(&server).stdout).to_string();
    assert!(stdout.contains("json_schema: not supported"), "{stdout}");

    let server = Server::start(vec![Behaviour::Status {
        code: 401,
        retry_after: None,
        body: r#"{"error":{"message":"bad key"}}"#.into(),
    }]);
    let output = check(&server);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("rejected the API key") && stderr.contains("hint:"), "{stderr}");
    assert!(!stderr.contains(KEY));
}
