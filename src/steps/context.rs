//! What a step knows when it asks: the task, the data profile, earlier iterations, this
//! iteration's earlier answers, and any failure to fix. One struct feeds both the prompt
//! templates and the built-in agent, so every backend sees the same facts.
//!
//! Nothing time-dependent goes in here (no clock, no remaining budget): the same run replayed
//! must produce byte-identical requests.

use serde::{Deserialize, Serialize};

use super::outputs::{
    AnalyzeOutput, ArchitectureOutput, ExploreOutput, Hyperparameter, PlanOutput, RepresentOutput,
    ScriptOutput, SplitOutput, TrainOutput,
};
use crate::data::{Profile, TargetInfo};
use crate::task::Task;

/// The task as agents see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBrief {
    pub name: String,
    pub description: String,
    pub target: String,
    /// `binary`, `multiclass` or `regression`.
    pub kind: String,
    pub metric: String,
    pub higher_is_better: bool,
    pub classes: Vec<String>,
    pub positive: Option<String>,
}

impl TaskBrief {
    pub fn new(task: &Task, target: &TargetInfo) -> Self {
        Self {
            name: task.name.clone(),
            description: task.description.clone().unwrap_or_default(),
            target: target.column.clone(),
            kind: target.kind.name().into(),
            metric: target.metric.name().into(),
            higher_is_better: target.metric.higher_is_better(),
            classes: target.classes.clone(),
            positive: target.positive.clone(),
        }
    }
}

/// One earlier iteration, as later steps see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationBrief {
    pub iteration: u32,
    /// `succeeded`, or what failed.
    pub status: String,
    pub family: String,
    pub hyperparameters: Vec<Hyperparameter>,
    pub representation: Option<RepresentOutput>,
    pub score: Option<f64>,
    pub next_ideas: Vec<String>,
}

/// A script that failed, for the agent to fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub script: String,
    /// E.g. `exit 1`, `killed (wall-clock deadline)`, or a check of the outputs.
    pub summary: String,
    pub stderr_tail: String,
    pub stdout_tail: String,
}

/// Validation results for the analysis step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationBrief {
    pub score: f64,
    /// Per-class or residual summary computed by the runner.
    pub details: String,
}

/// This iteration's answers so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CurrentSteps {
    pub plan: Option<PlanOutput>,
    pub explore: Option<ExploreOutput>,
    pub represent: Option<RepresentOutput>,
    pub architecture: Option<ArchitectureOutput>,
    pub train: Option<TrainOutput>,
    pub infer: Option<ScriptOutput>,
    pub analyze: Option<AnalyzeOutput>,
}

/// Everything a step is asked with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepContext {
    pub task: TaskBrief,
    pub profile: Profile,
    pub profile_text: String,
    pub iteration: u32,
    pub max_iterations: u32,
    pub history: Vec<IterationBrief>,
    pub best: Option<IterationBrief>,
    /// Printed output of earlier exploration scripts, newest last.
    pub findings: Vec<String>,
    /// The split in force (None before the first).
    pub split: Option<SplitOutput>,
    /// Whether this iteration may (re)define the split.
    pub split_open: bool,
    pub current: CurrentSteps,
    pub failure: Option<Failure>,
    pub validation: Option<ValidationBrief>,
    /// Seed of the run, for agents that randomize deterministically.
    pub seed: u64,
}

impl StepContext {
    /// The context as JSON (what the built-in agent reads).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("contexts serialize")
    }
}
