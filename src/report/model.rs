//! What a report shows, gathered from the journal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journal::{self, Event, IterationRecord};
use crate::run_dir::RunDir;

/// The machine-readable result of a run (`report/summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub task: String,
    pub metric: String,
    pub best_iteration: Option<u32>,
    pub validation_score: Option<f64>,
    /// The final model's test score: the refit's when there is one, else the best iteration's.
    pub test_score: Option<f64>,
    /// The final model: a refit of the best iteration, or the best iteration itself.
    #[serde(default)]
    pub final_iteration: Option<u32>,
    /// With a refit: the best iteration's own test score, for comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_test_score: Option<f64>,
    pub iterations: u32,
    pub wall_seconds: f64,
    pub agent: String,
    pub sandbox: String,
    /// Sandbox protections that were off (waived layers), in words; absent when none were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox_waived: Vec<String>,
}

/// Totals of one step across the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTotals {
    pub calls: u32,
    pub attempts: u32,
    pub agent_seconds: f64,
    pub script_runs: u32,
    pub script_seconds: f64,
    pub cost_usd: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One row of the leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leader {
    pub iteration: u32,
    pub family: String,
    pub settings: String,
    pub score: Option<f64>,
    /// The log loss that orders it among rows of the same score ([`crate::metric::Standing`]),
    /// shown only where another row has that score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiebreak: Option<f64>,
    pub seconds: f64,
    pub status: String,
    pub split_id: u32,
}

/// Everything the report needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportData {
    pub run_id: String,
    pub task: String,
    pub metric: String,
    pub higher_is_better: bool,
    pub agent: String,
    pub model: String,
    pub sandbox: String,
    pub loop_runner_version: String,
    pub prompts_sha256: String,
    pub budget_seconds: Option<f64>,
    pub iterations: Vec<IterationRecord>,
    pub best_iteration: Option<u32>,
    pub validation_score: Option<f64>,
    /// The final model's test score (see [`Summary::test_score`]).
    pub test_score: Option<f64>,
    pub test_detail: String,
    /// The refit that is the final model, if any.
    #[serde(default)]
    pub final_iteration: Option<u32>,
    /// Test scores by iteration: the final model's and, with a refit, the selected one's.
    #[serde(default)]
    pub test_scores: BTreeMap<u32, Option<f64>>,
    pub finished: Option<String>,
    pub wall_seconds: f64,
    pub steps: BTreeMap<String, StepTotals>,
    pub cost_usd: f64,
    /// Models called without a price: `cost_usd` leaves their calls out.
    pub unpriced_models: Vec<String>,
    /// Sandbox protections that were off, in words.
    pub sandbox_waived: Vec<String>,
    /// What the run said about the agent's server: `(iteration, step, text)` (structured
    /// output turned off for a step, a refused schema keyword, a shortened prompt, a pause).
    #[serde(default)]
    pub notices: Vec<(u32, String, String)>,
    /// Runner's own time per iteration (wall minus scripts), median, in seconds.
    #[serde(default)]
    pub runner_seconds: Option<f64>,
    pub environment: Option<serde_json::Value>,
}

impl ReportData {
    pub fn load(dir: &RunDir) -> anyhow::Result<Self> {
        let entries = journal::read(&dir.journal())?;
        Ok(Self::from_entries(dir, &entries))
    }

    /// The report of journal entries already read from `dir`'s journal.
    pub fn from_entries(dir: &RunDir, entries: &[journal::Entry]) -> Self {
        let mut data = ReportData {
            run_id: dir.id(),
            task: String::new(),
            metric: String::new(),
            higher_is_better: true,
            agent: String::new(),
            model: String::new(),
            sandbox: String::new(),
            loop_runner_version: String::new(),
            prompts_sha256: String::new(),
            budget_seconds: None,
            iterations: Vec::new(),
            best_iteration: None,
            validation_score: None,
            test_score: None,
            test_detail: String::new(),
            final_iteration: None,
            test_scores: BTreeMap::new(),
            finished: None,
            wall_seconds: 0.0,
            steps: BTreeMap::new(),
            cost_usd: 0.0,
            unpriced_models: Vec::new(),
            sandbox_waived: Vec::new(),
            notices: Vec::new(),
            runner_seconds: None,
            environment: None,
        };
        data.metric = metric_of(dir).unwrap_or_default();
        data.higher_is_better =
            data.metric.parse::<crate::metric::Metric>().map(|m| m.higher_is_better()).unwrap_or(true);
        let mut choice = data.metric.parse::<crate::metric::Metric>().ok().map(crate::choice::Choice::new);
        let mut current_split = 0;
        let mut details: std::collections::BTreeMap<u32, String> = Default::default();
        for entry in entries {
            match &entry.event {
                Event::RunStarted {
                    task,
                    agent,
                    model,
                    sandbox,
                    loop_runner_version,
                    prompts_sha256,
                    budget_seconds,
                    sandbox_waived,
                    unpriced_models,
                    ..
                } => {
                    data.sandbox_waived = sandbox_waived.clone();
                    data.unpriced_models = unpriced_models.clone();
                    data.task = task.clone();
                    data.agent = agent.clone();
                    data.model = model.clone();
                    data.sandbox = sandbox.clone();
                    data.loop_runner_version = loop_runner_version.clone();
                    data.prompts_sha256 = prompts_sha256.clone();
                    data.budget_seconds = *budget_seconds;
                }
                Event::SplitMade { split_id, .. } => current_split = *split_id,
                Event::StepFinished {
                    step,
                    seconds,
                    attempts,
                    cost_usd,
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    let t = data.steps.entry(step.clone()).or_default();
                    t.calls += 1;
                    t.attempts += attempts;
                    t.agent_seconds += seconds;
                    t.cost_usd += cost_usd;
                    t.prompt_tokens += prompt_tokens;
                    t.completion_tokens += completion_tokens;
                    data.cost_usd += cost_usd;
                }
                Event::ScriptRun { step, outcome, .. } => {
                    let t = data.steps.entry(step.clone()).or_default();
                    t.script_runs += 1;
                    t.script_seconds += outcome.wall_seconds;
                }
                Event::IterationFinished { record, .. } => {
                    if let Some(choice) = &mut choice {
                        choice.observe(record);
                    }
                    data.iterations.retain(|r| r.iteration != record.iteration);
                    data.iterations.push(record.clone());
                }
                Event::AgentNotice { iteration, step, text } => {
                    data.notices.push((*iteration, step.clone(), text.clone()));
                }
                Event::FinalEvaluation { iteration, test_score, detail, .. } => {
                    if let Some(i) = iteration {
                        data.test_scores.insert(*i, *test_score);
                        details.insert(*i, detail.clone());
                    }
                    // Until the run says which was the final model: the first evaluated.
                    if data.test_scores.len() <= 1 {
                        data.test_score = *test_score;
                        data.test_detail = detail.clone();
                    }
                }
                Event::RunFinished { reason, wall_seconds, final_iteration, .. } => {
                    data.finished = Some(reason.clone());
                    data.wall_seconds = *wall_seconds;
                    data.final_iteration = *final_iteration;
                }
                _ => {}
            }
        }
        // The choice on the split in force (none yet, when a new split has no score).
        let split_of = |n: u32| data.iterations.iter().find(|r| r.iteration == n).map(|r| r.split_id);
        let best = choice.and_then(|c| c.best()).filter(|(n, _)| split_of(*n) == Some(current_split));
        data.best_iteration = best.map(|b| b.0);
        if let Some(f) = data.final_iteration.or(data.best_iteration)
            && let Some(score) = data.test_scores.get(&f)
        {
            data.test_score = *score;
            data.test_detail = details.remove(&f).unwrap_or_default();
        }
        let mut overhead: Vec<f64> = data
            .iterations
            .iter()
            .filter(|r| r.script_seconds > 0.0)
            .map(|r| (r.seconds - r.script_seconds).max(0.0))
            .collect();
        overhead.sort_by(f64::total_cmp);
        data.runner_seconds = overhead.get(overhead.len() / 2).copied();
        data.validation_score = best.map(|b| b.1);
        if let Some(n) = data.best_iteration.or(data.iterations.last().map(|r| r.iteration)) {
            data.environment = std::fs::read_to_string(dir.iteration(n).join("environment.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        }
        if data.finished.is_none() {
            data.wall_seconds = data.iterations.iter().map(|r| r.seconds).sum();
        }
        data
    }

    /// `summary.json`.
    pub fn summary(&self) -> Summary {
        Summary {
            task: self.task.clone(),
            metric: self.metric.clone(),
            best_iteration: self.best_iteration,
            validation_score: self.validation_score,
            test_score: self.test_score,
            final_iteration: self.final_iteration.or(self.best_iteration),
            selected_test_score: self
                .final_iteration
                .and(self.best_iteration)
                .and_then(|b| self.test_scores.get(&b).copied().flatten()),
            iterations: self.iterations.len() as u32,
            wall_seconds: self.wall_seconds,
            agent: self.agent.clone(),
            sandbox: self.sandbox.clone(),
            sandbox_waived: self.sandbox_waived.clone(),
        }
    }

    /// The solution tree: each iteration under the one it built on.
    pub fn tree(&self) -> String {
        let nodes: Vec<crate::search::Node> = self
            .iterations
            .iter()
            .map(|r| crate::search::Node {
                iteration: r.iteration,
                parent: r.parent,
                operation: r.operation,
                score: r.validation_score.filter(|_| r.succeeded()),
                tiebreak: r.validation_tiebreak,
                failed: r.status.starts_with("failed"),
                seconds: r.script_seconds,
                infer_seconds: r.infer_seconds.unwrap_or(0.0),
            })
            .collect();
        let family = |n: &crate::search::Node| {
            let Some(r) = self.iterations.iter().find(|r| r.iteration == n.iteration) else {
                return String::new();
            };
            if n.operation == crate::search::Operation::Ensemble {
                let members: Vec<String> = r
                    .hyperparameters
                    .iter()
                    .map(|h| {
                        format!(
                            "{}×{}",
                            h.name.trim_start_matches("iter-").trim_start_matches('0'),
                            h.value.split('/').next().unwrap_or("")
                        )
                    })
                    .collect();
                if members.is_empty() { String::new() } else { format!("of {}", members.join(", ")) }
            } else if n.operation == crate::search::Operation::Refit {
                format!("{} {}", r.family, refit_words(r))
            } else {
                r.family.clone()
            }
        };
        crate::search::render(&nodes, self.best_iteration, &|s| format!("{s:.4}"), &family)
    }

    /// Iterations, best first (unscored last, by iteration).
    pub fn leaderboard(&self) -> Vec<Leader> {
        let mut rows: Vec<Leader> = self
            .iterations
            .iter()
            .map(|r| Leader {
                iteration: r.iteration,
                family: r.family.clone(),
                settings: r
                    .hyperparameters
                    .iter()
                    .map(|h| format!("{}={}", h.name, h.value))
                    .collect::<Vec<_>>()
                    .join(", "),
                score: r.validation_score,
                tiebreak: r.validation_tiebreak,
                seconds: r.seconds,
                status: match (r.operation, r.parent) {
                    (crate::search::Operation::Refit, Some(p)) => {
                        format!("{}: refit of {p} {} (no validation score)", r.status, refit_words(r))
                    }
                    _ => r.status.clone(),
                },
                split_id: r.split_id,
            })
            .collect();
        let higher = self.higher_is_better;
        let standing = |r: &Leader| r.score.map(|s| crate::metric::Standing::new(s, r.tiebreak));
        rows.sort_by(|a, b| match (standing(a), standing(b)) {
            (Some(x), Some(y)) => {
                crate::metric::Standing::rank(x, y, higher).then(a.iteration.cmp(&b.iteration))
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.iteration.cmp(&b.iteration),
        });
        let key = |r: &Leader| r.score.map(|s| (r.split_id, s.to_bits()));
        let mut counts = std::collections::HashMap::new();
        for k in rows.iter().filter_map(key) {
            *counts.entry(k).or_insert(0usize) += 1;
        }
        for row in &mut rows {
            if key(row).is_none_or(|k| counts[&k] < 2) {
                row.tiebreak = None;
            }
        }
        rows
    }
}

/// The metric, from `run.json` (the journal names the task, not its metric).
fn metric_of(dir: &RunDir) -> Option<String> {
    let text = std::fs::read_to_string(dir.run_json()).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["target"]["metric"].as_str().map(str::to_string)
}

/// How a refit was made: bagged over the cross-validation folds, or trained on every row.
pub fn refit_words(record: &crate::journal::IterationRecord) -> &'static str {
    if record.hyperparameters.iter().any(|h| h.name == "bagged") {
        "bagged over the cross-validation folds"
    } else {
        "on every training row"
    }
}
