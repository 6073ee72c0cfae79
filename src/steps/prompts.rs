//! Prompt templates (minijinja), compiled into the binary from `prompts/`. Their combined hash
//! is recorded with every run, so a change of wording is visible in audits.

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};

use super::SplitOutput;
use super::Step;
use super::context::{
    Clock, CurrentSteps, Failure, IterationBrief, ParentBrief, PendingBrief, StepContext, TaskBrief,
    ValidationBrief,
};
use crate::data::Profile;
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
    let values = minijinja::Value::from_serialize(TemplateView::new(context, extras));
    let system = env.get_template("system")?.render(&values)?;
    let prompt = env.get_template(step.name())?.render(&values)?;
    Ok((system.trim().to_string(), prompt.trim().to_string()))
}

/// The step context as templates see it. Templates show earlier iterations through the
/// memory, which is rendered to fit the model's context; `history` is only the earlier
/// iterations' numbers, enough to ask whether there are any. Converting every earlier
/// iteration for each render made a step's prompts cost time in proportion to the run's
/// length, for text nobody read. A template that reaches into `history` for more fails
/// under the strict undefined behaviour, and a field added to [`StepContext`] but not here
/// fails `the_view_shows_every_field_of_the_context`.
#[derive(serde::Serialize)]
struct TemplateView<'a> {
    task: &'a TaskBrief,
    operation: &'static str,
    parent: &'a Option<ParentBrief>,
    profile: &'a Profile,
    profile_text: &'a str,
    iteration: u32,
    max_iterations: u32,
    history: Vec<u32>,
    best: &'a Option<IterationBrief>,
    findings: &'a [String],
    split: &'a Option<SplitOutput>,
    split_open: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pending: &'a [PendingBrief],
    #[serde(skip_serializing_if = "Option::is_none")]
    cv_folds: Option<u32>,
    current: &'a CurrentSteps,
    failure: &'a Option<Failure>,
    validation: &'a Option<ValidationBrief>,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: &'a Option<Clock>,
    memory: &'a str,
    sandbox: &'a str,
}

impl<'a> TemplateView<'a> {
    fn new(c: &'a StepContext, extras: Extras<'a>) -> Self {
        Self {
            task: &c.task,
            operation: c.operation.name(),
            parent: &c.parent,
            profile: &c.profile,
            profile_text: &c.profile_text,
            iteration: c.iteration,
            max_iterations: c.max_iterations,
            history: c.history.iter().map(|h| h.iteration).collect(),
            best: &c.best,
            findings: &c.findings,
            split: &c.split,
            split_open: c.split_open,
            pending: &c.pending,
            cv_folds: c.cv_folds,
            current: &c.current,
            failure: &c.failure,
            validation: &c.validation,
            seed: c.seed,
            clock: &c.clock,
            memory: extras.memory,
            sandbox: extras.sandbox,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::sample_context;

    fn keys(value: serde_json::Value) -> Vec<String> {
        value.as_object().expect("an object").keys().cloned().collect()
    }

    #[test]
    fn the_view_shows_every_field_of_the_context() {
        let mut ctx = sample_context();
        ctx.pending = vec![PendingBrief {
            iteration: 2,
            operation: crate::search::Operation::Draft,
            parent: None,
            planned: None,
        }];
        ctx.cv_folds = Some(5);
        ctx.clock = Some(Clock { time_left_seconds: Some(60.0), runtimes: vec![] });
        let extras = Extras { memory: "m", sandbox: "s" };
        let mut view = keys(serde_json::to_value(TemplateView::new(&ctx, extras)).unwrap());
        view.retain(|k| k != "memory" && k != "sandbox");
        view.sort();
        assert_eq!(view, keys(serde_json::to_value(&ctx).unwrap()));
    }

    #[test]
    fn templates_see_whether_there_is_history_but_not_its_contents() {
        let mut ctx = sample_context();
        let first = render(Step::Plan, &ctx, Extras::default()).unwrap().1;
        assert!(first.contains("this is the first iteration"), "{first}");
        ctx.history = vec![crate::steps::IterationBrief {
            iteration: 1,
            parent: None,
            operation: crate::search::Operation::Draft,
            status: "succeeded".into(),
            family: "ridge".into(),
            hyperparameters: vec![],
            representation: None,
            score: Some(0.5),
            next_ideas: vec![],
        }];
        let later = render(Step::Plan, &ctx, Extras::default()).unwrap().1;
        assert!(!later.contains("this is the first iteration"), "{later}");
        let view = serde_json::to_value(TemplateView::new(&ctx, Extras::default())).unwrap();
        assert_eq!(view["history"], serde_json::json!([1]));
    }
}
