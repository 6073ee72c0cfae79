//! Semantic checks on answers, beyond their schema. A failed check is quoted back to the agent.

use super::outputs::{
    ArchitectureOutput, ExploreOutput, PlanOutput, RepresentOutput, ScriptOutput, SplitOutput, TrainOutput,
};
use crate::search::Operation;

/// Largest script accepted (an agent pasting data into code is a mistake).
const MAX_SCRIPT_BYTES: usize = 200_000;

/// A plan may name another base than its `parent` only in an improve, and only a scored model
/// it was shown (`bases`): the iteration is recorded as that one's child and shown its code.
pub fn plan(answer: &PlanOutput, operation: Operation, parent: Option<u32>, bases: &[u32]) -> Vec<String> {
    let Some(base) = answer.builds_on.filter(|b| Some(*b) != parent) else { return Vec::new() };
    if operation != Operation::Improve {
        return vec![format!(
            "builds_on is for an improve, and this iteration is a {}: give null",
            operation.name()
        )];
    }
    if bases.contains(&base) {
        return Vec::new();
    }
    let shown: Vec<String> = bases.iter().rev().take(20).map(u32::to_string).collect();
    vec![format!(
        "builds_on names iteration {base}, which is not a scored model shown above: give null (the iteration named) or one of {}",
        if shown.is_empty() { "none".to_string() } else { shown.join(", ") }
    )]
}

pub fn explore(answer: &ExploreOutput) -> Vec<String> {
    script_size(&answer.script)
}

pub fn split(answer: &SplitOutput) -> Vec<String> {
    let mut problems = Vec::new();
    if !(0.1..=0.4).contains(&answer.validation_fraction) {
        problems.push(format!("validation_fraction {} is outside 0.1..=0.4", answer.validation_fraction));
    }
    problems
}

pub fn represent(answer: &RepresentOutput, features: &[String], target: &str) -> Vec<String> {
    let columns: Vec<&str> = features.iter().map(String::as_str).collect();
    let mut problems = Vec::new();
    for dropped in &answer.drop_columns {
        if dropped == target {
            problems.push(format!("`{dropped}` is the target, not a feature column"));
        } else if !columns.contains(&dropped.as_str()) {
            problems.push(format!(
                "drop_columns names `{dropped}`, which is not a column (columns: {})",
                columns.join(", ")
            ));
        }
    }
    if !columns.is_empty() && columns.iter().all(|c| answer.drop_columns.iter().any(|d| d == c)) {
        problems.push("drop_columns would drop every feature".into());
    }
    problems
}

pub fn architecture(answer: &ArchitectureOutput) -> Vec<String> {
    let mut problems = Vec::new();
    if answer.family.trim().is_empty() {
        problems.push("family is empty".into());
    }
    let mut names: Vec<&str> = answer.hyperparameters.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    let mut repeated: Vec<&str> = names.windows(2).filter(|p| p[0] == p[1]).map(|p| p[0]).collect();
    repeated.dedup();
    for name in repeated {
        problems.push(format!("hyperparameter `{name}` is given more than once"));
    }
    problems
}

pub fn train(answer: &TrainOutput) -> Vec<String> {
    let mut problems = script_size(&answer.script);
    if answer.family.trim().is_empty() {
        problems.push("family is empty: name the model family this script trains".into());
    }
    if answer.script.trim().is_empty() {
        problems.push("script is empty".into());
    }
    if !answer.script.contains("train.csv") {
        problems.push("train.py must read data/train.csv".into());
    }
    if !answer.script.contains("model") {
        problems.push("train.py must save the model under model/".into());
    }
    problems
}

pub fn infer(answer: &ScriptOutput) -> Vec<String> {
    let mut problems = script_size(&answer.script);
    if answer.script.trim().is_empty() {
        problems.push("script is empty".into());
    }
    if answer.script.contains("train.csv") {
        problems.push("inference.py must not read the training file (data/train.csv)".into());
    }
    for flag in ["--input", "--output"] {
        if !answer.script.contains(flag) {
            problems.push(format!("inference.py must accept `{flag}`"));
        }
    }
    problems
}

fn script_size(script: &str) -> Vec<String> {
    if script.len() > MAX_SCRIPT_BYTES {
        vec![format!("the script is {} bytes; keep it under {MAX_SCRIPT_BYTES}", script.len())]
    } else {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(text: &str) -> ScriptOutput {
        ScriptOutput { script: text.into(), notes: String::new() }
    }

    #[test]
    fn inference_must_not_read_training_data() {
        let bad = infer(&script("import pandas as pd\npd.read_csv('data/train.csv')\n# --input --output"));
        assert!(bad.iter().any(|p| p.contains("must not read the training file")), "{bad:?}");
        assert!(infer(&script("x")).len() == 2);
        assert!(infer(&script("argparse --input --output")).is_empty());
    }

    #[test]
    fn splits_are_bounded() {
        let s = |f| SplitOutput { validation_fraction: f, stratify: true, seed: 0, rationale: String::new() };
        assert!(split(&s(0.2)).is_empty());
        assert!(!split(&s(0.01)).is_empty());
        assert!(!split(&s(0.9)).is_empty());
    }

    #[test]
    fn a_plan_builds_on_another_model_only_in_an_improve_and_only_on_one_it_was_shown() {
        let p = |builds_on| PlanOutput { review: String::new(), plan: "p".into(), builds_on };
        assert!(plan(&p(None), Operation::Draft, None, &[]).is_empty());
        assert!(plan(&p(Some(3)), Operation::Improve, Some(1), &[1, 3]).is_empty());
        let unknown = plan(&p(Some(4)), Operation::Improve, Some(1), &[1, 3]);
        assert!(unknown[0].contains("iteration 4") && unknown[0].contains("3, 1"), "{unknown:?}");
        let draft = plan(&p(Some(3)), Operation::Draft, None, &[1, 3]);
        assert!(draft[0].contains("a draft"), "{draft:?}");
        assert!(!plan(&p(Some(3)), Operation::Debug, Some(2), &[1, 3]).is_empty());
        // Naming the parent it was given is saying nothing new.
        assert!(plan(&p(Some(2)), Operation::Debug, Some(2), &[1, 3]).is_empty());
    }
}
