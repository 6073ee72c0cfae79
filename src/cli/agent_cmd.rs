//! `loop-runner agent check`: the first thing to run against a new server.

use std::sync::Arc;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::args::AgentCheckArgs;
use super::dispatch::Context;
use super::run_cmd::api_key;
use crate::agent::{Agent, AgentSettings, Ask, OpenAiBackend, Redactor, Transcript};
use crate::exit_code;

/// A tiny structured answer.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Check {
    /// The capital of France.
    city: String,
    /// Seven times six.
    product: u32,
}

pub fn check(_ctx: &Context, args: &AgentCheckArgs) -> anyhow::Result<i32> {
    let key = api_key(Some(&args.api_key_env), &args.base_url)?;
    let backend = OpenAiBackend::new(&args.base_url, key.as_ref(), args.timeout)
        .map_err(|e| crate::error::UserError::setup(format!("cannot set up the client: {e}")))?;
    let settings = AgentSettings {
        model: args.model.clone(),
        max_attempts: 2,
        max_http_retries: 1,
        ..AgentSettings::default()
    };
    let agent = Agent::new(
        Arc::new(backend),
        settings,
        Transcript::discard(Redactor::new(key)),
        CancellationToken::new(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let schema = crate::agent::schema_of::<Check>();
    let started = Instant::now();
    let answer = runtime.block_on(agent.ask::<Check>(
        Ask {
            step: "plan",
            iteration: 0,
            system: "Answer with JSON only.",
            prompt: "What is the capital of France, and what is seven times six?",
            schema: &schema,
            context: serde_json::Value::Null.into(),
            history_json: None,
            clock_note: None,
            shrink: None,
        },
        // Any answer that fits the schema shows what the server supports; whether the model
        // got it right is reported, not required.
        &|_: &Check| vec![],
    ));
    let took = started.elapsed();
    match answer {
        Ok(a) => {
            println!("server:      {}", args.base_url);
            println!("model:       {} (answered as `{}`)", args.model, a.model);
            println!(
                "json_schema: {}",
                if agent.prompt_mode() {
                    "not supported; loop-runner will put the schema in the prompt"
                } else {
                    "supported"
                }
            );
            let right = a.value.city.trim().eq_ignore_ascii_case("paris") && a.value.product == 42;
            println!(
                "answer:      {} / {} ({} attempt{}){}",
                a.value.city,
                a.value.product,
                a.attempts,
                if a.attempts == 1 { "" } else { "s" },
                if right { "" } else { " — not Paris / 42: a weak model for writing code" }
            );
            println!("latency:     {:.2} s", took.as_secs_f64());
            println!("tokens:      {} in, {} out", a.usage.prompt_tokens, a.usage.completion_tokens);
            Ok(exit_code::SUCCESS)
        }
        Err(e) => Err(anyhow::Error::new(e.error)
            .context(format!("the server at {} did not give a usable answer", args.base_url))),
    }
}
