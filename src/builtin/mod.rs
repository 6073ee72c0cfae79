mod portfolio;
mod ranges;
mod scripts;
mod strategy;
mod timing;

use std::sync::Arc;

use serde::Deserialize;

use crate::agent::{Backend, BackendError, BoxFuture, Reply, Request, Usage};
use crate::data::ColumnKind;
use crate::search::Operation;
use crate::steps::{
    AnalyzeOutput, ArchitectureOutput, ExploreOutput, PlanOutput, RepresentOutput, ScriptOutput, SplitOutput,
    Step, StepContext, TrainOutput,
};
pub use portfolio::families;
use portfolio::{Config, MANY_LEVELS, config_of, render_params};
use strategy::{Knowledge, choose, repair};

/// How many drafts the built-in agent has to offer: one per configuration of its portfolio
/// that these data do not make a repeat of another.
pub fn drafts(regression: bool, profile: &crate::data::Profile) -> u32 {
    portfolio::portfolio_for(regression, profile.rows, portfolio::Columns::of_profile(profile)).len() as u32
}

/// The built-in agent backend. It keeps what it took from the latest histories it was asked
/// with ([`Knowledge`]), for the next steps that ask with the same.
#[derive(Debug, Default)]
pub struct BuiltinBackend {
    known: std::sync::Mutex<Vec<(String, Arc<Knowledge>)>>,
}

/// Histories whose [`Knowledge`] is kept: one per iteration in flight, as a rule.
const KEPT_HISTORIES: usize = 8;

impl BuiltinBackend {
    /// What the earlier iterations of `request`'s context teach, for `context` (the request's
    /// context without its history): kept by the history's digest where the request carries
    /// its text, else made from the history in the request.
    fn knowledge(&self, request: &Request, context: &StepContext) -> Result<Arc<Knowledge>, String> {
        let history = request.context.get("history");
        let digest = request.history_json.as_ref().filter(|h| history.is_some_and(|v| h.matches(v)));
        let len = history.and_then(|h| h.as_array()).map_or(0, Vec::len);
        let kept = |known: &[(String, Arc<Knowledge>)], digest: &str| {
            known.iter().find(|(d, k)| d == digest && k.made_from(len, context)).map(|(_, k)| k.clone())
        };
        if let Some(digest) = digest
            && let Some(known) = kept(&self.known.lock().expect("not poisoned"), digest.sha256())
        {
            return Ok(known);
        }
        let briefs: Vec<crate::steps::IterationBrief> = match history {
            Some(h) => Deserialize::deserialize(h).map_err(|e| format!("the history: {e}"))?,
            None => Vec::new(),
        };
        let made = Arc::new(Knowledge::of(&briefs, context));
        if let Some(digest) = digest {
            let mut known = self.known.lock().expect("not poisoned");
            known.insert(0, (digest.sha256().to_string(), made.clone()));
            known.truncate(KEPT_HISTORIES);
        }
        Ok(made)
    }
}

/// `value` as a step context, without its `history` (left empty): the built-in agent reads the
/// earlier iterations once for the steps that share them ([`BuiltinBackend::knowledge`]).
fn context_without_history(value: &serde_json::Value) -> Result<StepContext, String> {
    let map = value.as_object().ok_or("the step context is not a JSON object")?;
    let fields = map.iter().filter(|(k, _)| *k != "history").map(|(k, v)| (k.as_str(), v));
    StepContext::deserialize(serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields))
        .map_err(|e| e.to_string())
}

impl Backend for BuiltinBackend {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn complete<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Reply, BackendError>> {
        Box::pin(async move {
            let unreadable = |e: String| BackendError::Fatal {
                detail: format!("the built-in agent cannot read the step context: {e}"),
            };
            let context = context_without_history(&request.context).map_err(unreadable)?;
            let known = self.knowledge(request, &context).map_err(unreadable)?;
            let step = Step::from_name(&request.step).ok_or_else(|| BackendError::Fatal {
                detail: format!("the built-in agent has no answer for step `{}`", request.step),
            })?;
            let content = answer(step, &context, &known).map_err(|detail| BackendError::Fatal { detail })?;
            Ok(Reply {
                content,
                usage: Usage::default(),
                model: "builtin".into(),
                finish_reason: Some("stop".into()),
            })
        })
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}

/// The configuration an iteration asked with `context` will train (before any repair).
pub fn planned(context: &StepContext) -> crate::steps::Planned {
    let config = choose(context, &Knowledge::of_context(context));
    crate::steps::Planned {
        family: config.family_name().to_string(),
        hyperparameters: config.hyperparameters(),
    }
}

/// The answer to `step` as JSON text, from what the earlier iterations taught (`known`; the
/// context's own history is not read).
pub fn answer(step: Step, context: &StepContext, known: &Knowledge) -> Result<String, String> {
    let config = || choose(context, known);
    match step {
        Step::Plan => json(&plan(context, known, &config())),
        Step::Explore => json(&ExploreOutput {
            notes: "Look at missing values and at how the numeric features relate to the target.".into(),
            script: if context.iteration == 1 { scripts::explore_script(context) } else { String::new() },
        }),
        Step::Split => json(&SplitOutput {
            // Small data: a larger validation set makes the comparison of models less noisy.
            validation_fraction: if context.profile.rows < 2000 { 0.25 } else { 0.2 },
            stratify: context.task.kind != "regression",
            seed: context.seed,
            rationale: "Hold out a fifth of the rows (a quarter when there are few), keeping the class balance for classification.".into(),
        }),
        Step::Represent => json(&represent(context, &config())),
        Step::Architecture => {
            let config = config();
            json(&ArchitectureOutput {
                family: config.family_name().to_string(),
                hyperparameters: config.hyperparameters(),
                rationale: format!("{} (built-in agent).", config.why),
            })
        }
        Step::Train => {
            let config = config();
            // A script that failed in this iteration gets a repair of what was running.
            let (config, notes) = match &context.failure {
                Some(failure) => {
                    let running = context
                        .current
                        .train
                        .as_ref()
                        .and_then(|t| config_of(&t.family, &t.hyperparameters))
                        .unwrap_or_else(|| config.clone());
                    let text = format!("{}\n{}", failure.summary, failure.stderr_tail);
                    let fresh = |c: &Config| c.key() != running.key() && !known.tried(c);
                    let regression = context.task.kind == "regression";
                    let fixed = repair(&running, &text, context.profile.rows, regression, &fresh)
                        .unwrap_or(running);
                    let notes = format!("The planned configuration failed; {}.", fixed.why);
                    (fixed, notes)
                }
                None => (config.clone(), format!("{} ({})", config.family_name(), render_params(&config.hyperparameters()))),
            };
            json(&TrainOutput {
                script: scripts::train_script(context, &config),
                family: config.family_name().to_string(),
                hyperparameters: config.hyperparameters(),
                notes,
            })
        }
        Step::Infer => json(&ScriptOutput {
            script: scripts::inference_script(context),
            notes: "Loads model/ and writes predictions (and class probabilities).".into(),
        }),
        Step::Analyze => json(&analyze(context)),
    }
}

fn plan(context: &StepContext, known: &Knowledge, config: &Config) -> PlanOutput {
    let review = match known.best_per_family.first() {
        None if known.len == 0 => String::new(),
        None => "No configuration has succeeded yet.".into(),
        Some(best) => format!(
            "{} iterations so far; the best single model is {} ({}) with {} {:.4} in iteration {}.",
            known.len,
            best.family,
            render_params(&best.hyperparameters),
            context.task.metric,
            best.score.unwrap_or(f64::NAN),
            best.iteration
        ),
    };
    let what = match (context.operation, &context.parent) {
        (Operation::Improve, Some(p)) => {
            format!("Improve iteration {}: {}", config.base.unwrap_or(p.iteration), config.why)
        }
        (Operation::Debug, Some(p)) => format!("Debug iteration {}: {}", p.iteration, config.why),
        _ => format!("Draft: {}", config.why),
    };
    PlanOutput {
        review,
        plan: format!(
            "{what}; {} ({}). (built-in agent, no LLM)",
            config.family_name(),
            render_params(&config.hyperparameters())
        ),
        builds_on: config.base,
    }
}

fn represent(context: &StepContext, config: &Config) -> RepresentOutput {
    let drop_columns: Vec<String> =
        context.profile.columns(ColumnKind::Identifier).into_iter().map(str::to_string).collect();
    let dates = context.profile.columns(ColumnKind::Date);
    let many = if config.prep.many_as_codes { "as codes" } else { "target-encoded" };
    let categorical = match config.prep.categorical {
        crate::steps::CategoricalTreatment::OneHot => {
            format!("one-hot encoded (at most 32 columns each; columns with over 50 categories {many})")
        }
        crate::steps::CategoricalTreatment::Ordinal if config.prep.many_as_codes => "encoded as codes".into(),
        crate::steps::CategoricalTreatment::Ordinal => {
            format!("encoded as codes (columns with over {MANY_LEVELS} categories target-encoded)")
        }
        crate::steps::CategoricalTreatment::Native => {
            format!(
                "left to the model as native categories (columns with over {MANY_LEVELS} categories {many})"
            )
        }
    };
    let mut description = format!(
        "numeric columns {}, categorical columns {}, missing numbers {}",
        match config.prep.numeric {
            crate::steps::NumericTreatment::Standardize => "standardized",
            crate::steps::NumericTreatment::Quantile => "quantile-transformed",
            crate::steps::NumericTreatment::Spline =>
                "expanded into cubic splines with knots at their quantiles",
            crate::steps::NumericTreatment::None => "as they are",
        },
        categorical,
        if config.family.native_missing { "left to the model" } else { "filled with the median" }
    );
    if !dates.is_empty() {
        description.push_str(&format!("; dates split into year, month, day, weekday: {}", dates.join(", ")));
    }
    let text = context.profile.columns(ColumnKind::Text);
    if !text.is_empty() {
        let form = if scripts::reduce_text(config) {
            format!("reduced to {} dimensions", scripts::TEXT_DIMENSIONS)
        } else {
            "sparse".to_string()
        };
        description.push_str(&format!(
            "; free text as the TF-IDF of its words and word pairs ({form}), with its length: {}",
            text.join(", ")
        ));
    }
    if !drop_columns.is_empty() {
        description.push_str(&format!("; identifier columns dropped: {}", drop_columns.join(", ")));
    }
    if let Some(n) = config.prep.max_rows {
        description.push_str(&format!("; trained on a random sample of at most {n} rows"));
    }
    RepresentOutput {
        description,
        numeric: config.prep.numeric,
        categorical: config.prep.categorical,
        missing: if config.family.native_missing {
            crate::steps::MissingTreatment::Native
        } else {
            crate::steps::MissingTreatment::Median
        },
        drop_columns,
    }
}

fn analyze(context: &StepContext) -> AnalyzeOutput {
    let Some(validation) = &context.validation else {
        return AnalyzeOutput { observations: vec!["No validation score.".into()], next_ideas: vec![] };
    };
    let family = context.current.train.as_ref().map_or("the model", |t| t.family.as_str());
    let mut observations = vec![format!("{family} scored {} {:.4}.", context.task.metric, validation.score)];
    if let Some(best) = &context.best
        && let Some(best_score) = best.score
    {
        let better = if context.task.higher_is_better {
            validation.score > best_score
        } else {
            validation.score < best_score
        };
        observations.push(if better {
            format!("This beats the previous best ({best_score:.4}, iteration {}).", best.iteration)
        } else {
            format!("The best remains {best_score:.4} (iteration {}).", best.iteration)
        });
    }
    if !validation.details.is_empty() {
        observations.push(validation.details.lines().next().unwrap_or_default().to_string());
    }
    let next_ideas =
        vec![format!("Tune {family} further if it is among the best; otherwise try other families.")];
    AnalyzeOutput { observations, next_ideas }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{HistoryJson, OutputMode};
    use crate::steps::{Clock, Failure};

    fn request(step: &str, ctx: &StepContext, with_text: bool) -> Request {
        let context = ctx.to_value();
        Request {
            step: step.into(),
            iteration: ctx.iteration,
            attempt: 1,
            model: "builtin".into(),
            messages: vec![],
            schema_name: String::new(),
            schema: serde_json::Value::Null,
            mode: OutputMode::Prompt,
            temperature: None,
            max_tokens: None,
            seed: None,
            history_json: with_text
                .then(|| context.get("history").and_then(HistoryJson::of).map(Arc::new))
                .flatten(),
            context: Arc::new(context),
            clock_note: None,
        }
    }

    #[tokio::test]
    async fn steps_asked_with_one_history_share_what_it_teaches_and_answer_as_if_it_were_read_anew() {
        let drafts = portfolio::portfolio(false, 500);
        let history = (0..4)
            .map(|i| strategy::tests::done(i + 1, &drafts[i as usize], Some(0.8 + f64::from(i) / 100.0)));
        let mut ctx = strategy::tests::context(history.collect());
        ctx.operation = crate::search::Operation::Improve;
        ctx.parent = Some(strategy::tests::parent_of(&ctx.history[2], None));
        ctx.clock = Some(Clock {
            time_left_seconds: Some(100.0),
            runtimes: (1..=4).map(|i| (i, 0.4 * f64::from(i))).collect(),
        });
        let backend = BuiltinBackend::default();
        let steps = ["plan", "explore", "split", "represent", "architecture", "train", "infer", "analyze"];
        let expect = |step: &str, ctx: &StepContext| {
            answer(Step::from_name(step).unwrap(), ctx, &Knowledge::of_context(ctx)).unwrap()
        };
        for step in steps {
            for with_text in [true, false] {
                let reply = backend.complete(&request(step, &ctx, with_text)).await.unwrap();
                assert_eq!(reply.content, expect(step, &ctx), "{step}");
            }
        }
        assert_eq!(backend.known.lock().unwrap().len(), 1, "one history, read once");
        // The plan reads the history: what it says follows the history, not what was kept.
        assert!(expect("plan", &ctx).contains("4 iterations so far"));

        // Other run times of the same history: not taken for the kept one.
        let mut slower = ctx.clone();
        slower.clock.as_mut().unwrap().runtimes[0].1 = 400.0;
        let reply = backend.complete(&request("architecture", &slower, true)).await.unwrap();
        assert_eq!(reply.content, expect("architecture", &slower));

        // One more iteration: taught anew.
        ctx.history.push(strategy::tests::done(5, &drafts[4], None));
        ctx.iteration = 6;
        ctx.clock.as_mut().unwrap().runtimes.push((5, 1.0));
        for step in steps {
            let reply = backend.complete(&request(step, &ctx, true)).await.unwrap();
            assert_eq!(reply.content, expect(step, &ctx), "{step}");
        }
        assert!(expect("plan", &ctx).contains("5 iterations so far"));
        assert_eq!(backend.known.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_context_read_without_its_history_is_the_context_less_its_history() {
        let drafts = portfolio::portfolio(false, 500);
        let mut ctx = strategy::tests::context(vec![strategy::tests::done(1, &drafts[0], Some(0.9))]);
        ctx.clock = Some(Clock { time_left_seconds: None, runtimes: vec![(1, 0.5)] });
        let read = context_without_history(&ctx.to_value()).unwrap();
        ctx.history.clear();
        assert_eq!(read, ctx);
        assert!(context_without_history(&serde_json::json!([1])).unwrap_err().contains("not a JSON object"));
    }

    #[test]
    fn a_fallback_after_a_failure_says_which_model_it_trains() {
        // Boosting was drafted: this iteration plans a linear model.
        let first = portfolio::portfolio(false, 500).remove(0);
        let mut ctx = strategy::tests::context(vec![strategy::tests::done(1, &first, Some(0.9))]);
        let architecture: ArchitectureOutput =
            serde_json::from_str(&answer(Step::Architecture, &ctx, &Knowledge::of_context(&ctx)).unwrap())
                .unwrap();
        assert_eq!(architecture.family, "logistic_regression");
        ctx.current.architecture = Some(architecture);
        let planned: TrainOutput =
            serde_json::from_str(&answer(Step::Train, &ctx, &Knowledge::of_context(&ctx)).unwrap()).unwrap();
        assert_eq!(planned.family, "logistic_regression");
        ctx.current.train = Some(planned.clone());
        ctx.failure = Some(Failure {
            step: "train".into(),
            script: planned.script,
            summary: "exit 1".into(),
            stderr_tail: "ValueError: something odd".into(),
            stdout_tail: String::new(),
        });
        let fallback: TrainOutput =
            serde_json::from_str(&answer(Step::Train, &ctx, &Knowledge::of_context(&ctx)).unwrap()).unwrap();
        assert_eq!(fallback.family, "hist_gradient_boosting", "{}", fallback.notes);
        assert!(fallback.notes.contains("fall back"), "{}", fallback.notes);
        assert!(fallback.hyperparameters.iter().any(|h| h.name == "learning_rate"));
    }
}
