//! The built-in agent: a deterministic, offline [`Backend`] that answers every step from the
//! step context (data profile, earlier results) without an LLM. It makes loop-runner usable
//! with no API key, and testable. It says what it is in every script it writes.
//!
//! Its answers go through the same schema validation, transcript and replay as an LLM's.

mod scripts;
mod strategy;

use crate::agent::{Backend, BackendError, BoxFuture, Reply, Request, Usage};
use crate::data::ColumnKind;
use crate::steps::{
    AnalyzeOutput, ArchitectureOutput, CategoricalTreatment, ExploreOutput, MissingTreatment,
    NumericTreatment, PlanOutput, RepresentOutput, ScriptOutput, SplitOutput, Step, StepContext, TrainOutput,
};
use strategy::{Choice, best_per_family, choose, render_params};
pub use strategy::{ENSEMBLE, families};

/// The built-in agent backend.
#[derive(Debug, Default)]
pub struct BuiltinBackend;

impl Backend for BuiltinBackend {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn complete<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Reply, BackendError>> {
        Box::pin(async move {
            let context: StepContext =
                serde_json::from_value(request.context.clone()).map_err(|e| BackendError::Fatal {
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

/// The answer to `step` as JSON text.
pub fn answer(step: Step, context: &StepContext) -> Result<String, String> {
    let choice = choose(context);
    match step {
        Step::Plan => json(&plan(context, &choice)),
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
        Step::Represent => json(&represent(context, &choice)),
        Step::Architecture => json(&ArchitectureOutput {
            family: choice.family_name().to_string(),
            hyperparameters: choice.hyperparameters(),
            rationale: rationale(&choice),
        }),
        Step::Train => {
            let representation =
                context.current.represent.clone().unwrap_or_else(|| represent(context, &choice));
            // A failing script gets the most forgiving configuration instead.
            let choice = if context.failure.is_some() { safe_choice(context) } else { choice };
            let representation =
                if context.failure.is_some() { safe_representation(context) } else { representation };
            json(&TrainOutput {
                script: scripts::train_script(context, &choice, &representation),
                family: choice.family_name().to_string(),
                hyperparameters: choice.hyperparameters(),
                notes: if context.failure.is_some() {
                    format!(
                        "The planned configuration failed; falling back to {} with defaults ({}).",
                        choice.family_name(),
                        render_params(&choice.hyperparameters())
                    )
                } else {
                    format!("{} ({})", choice.family_name(), render_params(&choice.hyperparameters()))
                },
            })
        }
        Step::Infer => json(&ScriptOutput {
            script: scripts::inference_script(context),
            notes: "Loads model/ and writes predictions (and class probabilities).".into(),
        }),
        Step::Analyze => json(&analyze(context)),
    }
}

fn plan(context: &StepContext, choice: &Choice) -> PlanOutput {
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
    let plan = match choice {
        Choice::Single { family, params } if context.history.iter().all(|h| h.family != family.name) => {
            format!(
                "Try {} with default settings ({}) to see how this family does.",
                family.name,
                render_params(params)
            )
        }
        Choice::Single { family, params } => {
            format!("Refine {} around its best settings: {}.", family.name, render_params(params))
        }
        Choice::Ensemble { members } => format!(
            "Average the predictions of the best configurations of {}.",
            members.iter().map(|(f, _)| f.name).collect::<Vec<_>>().join(", ")
        ),
        Choice::Exhausted { family, .. } => {
            format!("Every nearby setting has been tried; re-run the best {} configuration.", family.name)
        }
    };
    PlanOutput { review, plan: format!("{plan} (built-in agent, no LLM)") }
}

fn represent(context: &StepContext, choice: &Choice) -> RepresentOutput {
    // Identifier-like text columns (nearly one value per row) carry no signal that generalizes.
    let rows = context.profile.rows.max(1);
    let drop_columns: Vec<String> = context
        .profile
        .features
        .iter()
        .filter(|c| c.kind == ColumnKind::Categorical && c.unique * 2 > rows && c.unique > 50)
        .map(|c| c.name.clone())
        .collect();
    let numeric = if choice.scaled() { NumericTreatment::Standardize } else { NumericTreatment::None };
    let missing = if choice.native_missing() { MissingTreatment::Native } else { MissingTreatment::Median };
    let mut description = format!(
        "numeric columns {}, categorical columns one-hot encoded after filling with the most frequent value, missing numbers {}",
        if choice.scaled() { "standardized" } else { "as they are" },
        if choice.native_missing() { "left to the model" } else { "filled with the median" }
    );
    if !drop_columns.is_empty() {
        description.push_str(&format!("; identifier-like columns dropped: {}", drop_columns.join(", ")));
    }
    RepresentOutput { description, numeric, categorical: CategoricalTreatment::OneHot, missing, drop_columns }
}

fn safe_choice(context: &StepContext) -> Choice {
    let regression = context.task.kind == "regression";
    let family = strategy::family("hist_gradient_boosting").expect("a known family");
    Choice::Single { family, params: strategy::defaults(family, regression) }
}

fn safe_representation(context: &StepContext) -> RepresentOutput {
    let mut r = represent(context, &safe_choice(context));
    r.numeric = NumericTreatment::None;
    r.missing = MissingTreatment::Median;
    r
}

fn rationale(choice: &Choice) -> String {
    match choice {
        Choice::Ensemble { .. } => "Soft voting over diverse models usually beats each of them.".into(),
        _ => "Chosen by the built-in agent's search: each family once, then local search around the best."
            .into(),
    }
}

fn analyze(context: &StepContext) -> AnalyzeOutput {
    let Some(validation) = &context.validation else {
        return AnalyzeOutput { observations: vec!["No validation score.".into()], next_ideas: vec![] };
    };
    let family = context.current.architecture.as_ref().map_or("the model", |a| a.family.as_str());
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
        // Gradient boosting was tried: this iteration plans a random forest.
        let hgb = strategy::family("hist_gradient_boosting").unwrap();
        let tried = strategy::tests::done(1, hgb.name, strategy::defaults(hgb, false), 0.9);
        let mut ctx = strategy::tests::context(vec![tried]);
        let architecture: ArchitectureOutput =
            serde_json::from_str(&answer(Step::Architecture, &ctx).unwrap()).unwrap();
        ctx.current.architecture = Some(architecture);
        let planned: TrainOutput = serde_json::from_str(&answer(Step::Train, &ctx).unwrap()).unwrap();
        assert_eq!(planned.family, "random_forest");
        ctx.failure = Some(Failure {
            script: planned.script,
            summary: "exit 1".into(),
            stderr_tail: String::new(),
            stdout_tail: String::new(),
        });
        let fallback: TrainOutput = serde_json::from_str(&answer(Step::Train, &ctx).unwrap()).unwrap();
        assert_eq!(fallback.family, "hist_gradient_boosting");
        assert!(fallback.notes.contains("falling back"), "{}", fallback.notes);
        assert!(fallback.hyperparameters.iter().any(|h| h.name == "learning_rate"));
    }
}
