//! Prompt templates (minijinja), compiled into the binary from `prompts/`. Their combined hash
//! is recorded with every run, so a change of wording is visible in audits.

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};

use super::Step;
use super::context::StepContext;
use crate::fsx;

const TEMPLATES: [(&str, &str); 9] = [
    ("system", include_str!("../../prompts/system.j2")),
    ("plan", include_str!("../../prompts/plan.j2")),
    ("explore", include_str!("../../prompts/explore.j2")),
    ("split", include_str!("../../prompts/split.j2")),
    ("represent", include_str!("../../prompts/represent.j2")),
    ("architecture", include_str!("../../prompts/architecture.j2")),
    ("train", include_str!("../../prompts/train.j2")),
    ("infer", include_str!("../../prompts/infer.j2")),
    ("analyze", include_str!("../../prompts/analyze.j2")),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A template that reaches for a missing field is a bug, not an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(false);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("prompt templates parse");
        }
        env
    })
}

/// What prompts show besides the step context: the run's memory (rendered to fit the model's
/// context) and the sandbox the scripts run in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    pub memory: &'a str,
    pub sandbox: &'a str,
}

/// The system prompt and the step's prompt, rendered from `context` and `extras`.
pub fn render(
    step: Step,
    context: &StepContext,
    extras: Extras<'_>,
) -> Result<(String, String), minijinja::Error> {
    let env = environment();
    let mut values = serde_json::to_value(context).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::BadSerialization, format!("the step context: {e}"))
    })?;
    if let Some(map) = values.as_object_mut() {
        map.insert("memory".into(), extras.memory.into());
        map.insert("sandbox".into(), extras.sandbox.into());
        map.insert("operation".into(), context.operation.name().into());
    }
    let system = env.get_template("system")?.render(&values)?;
    let prompt = env.get_template(step.name())?.render(&values)?;
    Ok((system.trim().to_string(), prompt.trim().to_string()))
}

/// sha256 over every template, in order.
pub fn prompts_hash() -> String {
    let mut all = String::new();
    for (name, source) in TEMPLATES {
        all.push_str(name);
        all.push('\0');
        all.push_str(source);
        all.push('\0');
    }
    fsx::sha256_bytes(all.as_bytes())
}
