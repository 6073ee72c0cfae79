//! Synthetic runs for `bench tables` and tests: journals written through the real [`Journal`]
//! writer, shaped like the built-in agent's (a tree of drafts and improvements, some failures,
//! four agent steps and two scripts per iteration), without running anything.

use std::path::{Path, PathBuf};

use crate::journal::{Event, IterationRecord, Journal, OutcomeBrief};
use crate::sandbox::{Exit, LimitKind};
use crate::search::Operation;
use crate::steps::{
    CategoricalTreatment, Hyperparameter, MissingTreatment, NumericTreatment, RepresentOutput,
};

/// Writes `runs` run directories of `iterations` iterations each under `runs_dir`; returns them.
pub fn synthesize(runs_dir: &Path, runs: usize, iterations: u32, seed: u64) -> anyhow::Result<Vec<PathBuf>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut dirs = Vec::new();
    for r in 0..runs {
        let task = ["credit", "penguins", "breast_cancer"][r % 3];
        let root = runs_dir.join(format!("{task}-synthetic-{r:04}"));
        fs_err::create_dir_all(&root)?;
        fs_err::write(
            root.join("run.json"),
            serde_json::json!({"target": {"column": "y", "metric": "accuracy"}}).to_string(),
        )?;
        let mut journal = Journal::open(&root.join("journal.jsonl"))?;
        journal.append(Event::RunStarted {
            format: crate::journal::FORMAT,
            run_id: root.file_name().unwrap_or_default().to_string_lossy().to_string(),
            task: task.into(),
            budget_seconds: Some(600.0),
            max_iterations: iterations,
            agent: "builtin".into(),
            model: "builtin".into(),
            sandbox: "wasi".into(),
            sandbox_layers: vec!["wasm32-wasip1".into()],
            sandbox_waived: vec![],
            unpriced_models: vec![],
            loop_runner_version: env!("CARGO_PKG_VERSION").into(),
            prompts_sha256: "synthetic".into(),
            schemas_sha256: String::new(),
        })?;
        journal.append(Event::SplitMade {
            split_id: 0,
            validation_fraction: 0.2,
            stratify: true,
            seed,
            train_rows: 800,
            validation_rows: 200,
            rationale: "synthetic".into(),
            folds: Some(5),
        })?;
        let mut scores: Vec<(u32, f64)> = Vec::new();
        for n in 1..=iterations {
            let parent = if scores.is_empty() || rng.u8(0..4) == 0 {
                None
            } else {
                Some(scores[rng.usize(0..scores.len())])
            };
            let operation = if parent.is_some() { Operation::Improve } else { Operation::Draft };
            journal.append(Event::IterationStarted {
                iteration: n,
                parent: parent.map(|p| p.0),
                operation,
                reason: "synthetic".into(),
            })?;
            for step in ["plan", "represent", "architecture", "code"] {
                journal.append(Event::StepFinished {
                    iteration: n,
                    step: step.into(),
                    seconds: rng.f64(),
                    attempts: 1 + u32::from(rng.u8(0..10) == 0),
                    calls: Some(1),
                    cost_usd: 0.0,
                    prompt_tokens: rng.u64(500..2000),
                    completion_tokens: rng.u64(50..400),
                    ok: true,
                    detail: String::new(),
                })?;
            }
            let failed = rng.u8(0..8) == 0;
            for (step, script) in [("train", "train.py"), ("infer", "inference.py")] {
                let limit = (failed && step == "train").then_some(LimitKind::Memory);
                journal.append(Event::ScriptRun {
                    iteration: n,
                    step: step.into(),
                    script: script.into(),
                    outcome: OutcomeBrief {
                        exit: if limit.is_some() { Exit::Killed } else { Exit::Code(0) },
                        limit,
                        wall_seconds: rng.f64() * 5.0,
                        peak_memory_bytes: rng.u64(50..500) << 20,
                        stdout_dropped: 0,
                        stderr_dropped: 0,
                    },
                })?;
            }
            let family = ["hist_gradient_boosting", "random_forest", "logistic_regression"][rng.usize(0..3)];
            let base = parent.map_or(0.8, |p| p.1);
            let score = (!failed).then(|| (base + (rng.f64() - 0.4) * 0.05).clamp(0.0, 1.0));
            if let Some(s) = score {
                scores.push((n, s));
            }
            let record = IterationRecord {
                iteration: n,
                parent: parent.map(|p| p.0),
                operation,
                status: if failed { "failed at train: memory limit".into() } else { "succeeded".into() },
                family: family.into(),
                hyperparameters: vec![Hyperparameter {
                    name: "max_depth".into(),
                    value: rng.u8(2..12).to_string(),
                }],
                representation: Some(RepresentOutput {
                    description: ["one-hot", "ordinal codes", "native categoricals"][rng.usize(0..3)].into(),
                    numeric: NumericTreatment::Standardize,
                    categorical: [
                        CategoricalTreatment::OneHot,
                        CategoricalTreatment::Ordinal,
                        CategoricalTreatment::Native,
                    ][rng.usize(0..3)],
                    missing: MissingTreatment::Median,
                    drop_columns: vec![],
                }),
                split_id: 0,
                validation_score: score,
                validation_tiebreak: None,
                next_ideas: vec![],
                predictions_sha256: None,
                model_files: vec![],
                seconds: 6.0,
                cost_usd: 0.0,
                step_seconds: vec![],
                analysis_error: None,
                script_seconds: 5.0,
                infer_seconds: score.map(|_| 1.0),
            };
            journal.append(Event::IterationFinished { iteration: n, record })?;
            journal.append(Event::SnapshotCommitted {
                iteration: n,
                commit: crate::fsx::sha256_bytes(format!("{r}/{n}").as_bytes())[..40].to_string(),
                tree: crate::fsx::sha256_bytes(format!("tree {r}/{n}").as_bytes())[..40].to_string(),
                tag: crate::snapshot::tag_name(n),
                best: false,
            })?;
        }
        let best = scores.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
        journal.append(Event::FinalEvaluation {
            iteration: best.map(|b| b.0),
            test_score: best.map(|b| b.1 - 0.01),
            detail: String::new(),
            outcome: None,
        })?;
        journal.append(Event::RunFinished {
            reason: "iteration limit".into(),
            best_iteration: best.map(|b| b.0),
            validation_score: best.map(|b| b.1),
            test_score: best.map(|b| b.1 - 0.01),
            wall_seconds: 6.0 * f64::from(iterations),
            final_iteration: None,
        })?;
        dirs.push(root);
    }
    Ok(dirs)
}
