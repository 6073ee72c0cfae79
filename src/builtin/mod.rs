mod scripts;
mod strategy;

use serde::Deserialize;

use crate::agent::{Backend, BackendError, BoxFuture, Reply, Request, Usage};
use crate::data::ColumnKind;
use crate::search::Operation;
use crate::steps::{
    AnalyzeOutput, ArchitectureOutput, ExploreOutput, PlanOutput, RepresentOutput, ScriptOutput, SplitOutput,
    Step, StepContext, TrainOutput,
};
pub use strategy::families;
use strategy::{Config, best_per_family, choose, config_of, render_params, repair};

/// How many drafts the built-in agent has to offer: one per configuration of its portfolio
/// that these data do not make a repeat of another.
pub fn drafts(regression: bool, profile: &crate::data::Profile) -> u32 {
    strategy::portfolio_for(regression, profile.rows, strategy::Columns::of_profile(profile)).len() as u32
}

/// The built-in agent backend.
#[derive(Debug, Default)]
pub struct BuiltinBackend;

impl Backend for BuiltinBackend {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn complete<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Reply, BackendError>> {
        Box::pin(async move {
            // Read in place: the context holds every earlier iteration.
            let context =
                StepContext::deserialize(request.context.as_ref()).map_err(|e| BackendError::Fatal {
                    detail: format!("the built-in agent cannot read the step context: {e}"),
                })?;
            let step = Step::from_name(&request.step).ok_or_else(|| BackendError::Fatal {
                detail: format!("the built-in agent has no answer for step `{}`", request.step),
            })?;
            let content = answer(step, &context).map_err(|detail| BackendError::Fatal { detail })?;
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
    let config = choose(context);
    crate::steps::Planned {
        family: config.family_name().to_string(),
        hyperparameters: config.hyperparameters(),
    }
}

/// The answer to `step` as JSON text.
pub fn answer(step: Step, context: &StepContext) -> Result<String, String> {
    let config = choose(context);
    match step {
        Step::Plan => json(&plan(context, &config)),
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
        Step::Represent => json(&represent(context, &config)),
        Step::Architecture => json(&ArchitectureOutput {
            family: config.family_name().to_string(),
            hyperparameters: config.hyperparameters(),
            rationale: format!("{} (built-in agent).", config.why),
        }),
        Step::Train => {
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
                    let tried: Vec<String> = context
                        .history
                        .iter()
                        .map(|h| render_params(&h.hyperparameters))
                        .chain(std::iter::once(render_params(&running.hyperparameters())))
                        .collect();
                    let regression = context.task.kind == "regression";
                    let fixed = repair(&running, &text, context.profile.rows, regression, &|c: &Config| {
                        !tried.contains(&render_params(&c.hyperparameters()))
                    })
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

fn plan(context: &StepContext, config: &Config) -> PlanOutput {
    let review = match best_per_family(context).first() {
        None if context.history.is_empty() => String::new(),
        None => "No configuration has succeeded yet.".into(),
        Some(best) => format!(
            "{} iterations so far; the best single model is {} ({}) with {} {:.4} in iteration {}.",
            context.history.len(),
            best.family,
            render_params(&best.hyperparameters),
            context.task.metric,
            best.score.unwrap_or(f64::NAN),
            best.iteration
        ),
    };
    let what = match (context.operation, &context.parent) {
        (Operation::Improve, Some(p)) => format!("Improve iteration {}: {}", p.iteration, config.why),
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
    }
}

fn represent(context: &StepContext, config: &Config) -> RepresentOutput {
    let drop_columns: Vec<String> =
        context.profile.columns(ColumnKind::Identifier).into_iter().map(str::to_string).collect();
    let dates = context.profile.columns(ColumnKind::Date);
    let categorical = match config.prep.categorical {
        crate::steps::CategoricalTreatment::OneHot => {
            "one-hot encoded (at most 32 columns each; columns with over 50 categories target-encoded)"
        }
        crate::steps::CategoricalTreatment::Ordinal => "encoded as codes",
        crate::steps::CategoricalTreatment::Native => {
            "left to the model as native categories (codes for columns with over 250 categories)"
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
    use crate::steps::Failure;

    #[test]
    fn a_fallback_after_a_failure_says_which_model_it_trains() {
        // Boosting was drafted: this iteration plans a linear model.
        let first = strategy::portfolio(false, 500).remove(0);
        let mut ctx = strategy::tests::context(vec![strategy::tests::done(1, &first, Some(0.9))]);
        let architecture: ArchitectureOutput =
            serde_json::from_str(&answer(Step::Architecture, &ctx).unwrap()).unwrap();
        assert_eq!(architecture.family, "logistic_regression");
        ctx.current.architecture = Some(architecture);
        let planned: TrainOutput = serde_json::from_str(&answer(Step::Train, &ctx).unwrap()).unwrap();
        assert_eq!(planned.family, "logistic_regression");
        ctx.current.train = Some(planned.clone());
        ctx.failure = Some(Failure {
            step: "train".into(),
            script: planned.script,
            summary: "exit 1".into(),
            stderr_tail: "ValueError: something odd".into(),
            stdout_tail: String::new(),
        });
        let fallback: TrainOutput = serde_json::from_str(&answer(Step::Train, &ctx).unwrap()).unwrap();
        assert_eq!(fallback.family, "hist_gradient_boosting", "{}", fallback.notes);
        assert!(fallback.notes.contains("fall back"), "{}", fallback.notes);
        assert!(fallback.hyperparameters.iter().any(|h| h.name == "learning_rate"));
    }
}
