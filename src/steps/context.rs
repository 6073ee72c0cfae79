//! What a step knows when it asks: the task, the data profile, earlier iterations, this
//! iteration's earlier answers, and any failure to fix. One struct feeds both the prompt
//! templates and the built-in agent, so every backend sees the same facts.
//!
//! Nothing time-dependent goes in here (no clock, no remaining budget): the same run replayed
//! must produce byte-identical requests.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::outputs::{
    AnalyzeOutput, ArchitectureOutput, ExploreOutput, Hyperparameter, PlanOutput, RepresentOutput,
    ScriptOutput, SplitOutput, TrainOutput,
};
use crate::agent::HistoryJson;
use crate::data::{Profile, TargetInfo};
use crate::search::Operation;
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

/// An iteration running alongside: what the search asked of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingBrief {
    pub iteration: u32,
    pub operation: Operation,
    pub parent: Option<u32>,
    /// The configuration the built-in agent settled on for it when it was dispatched (model
    /// family and hyperparameters), so that candidates in flight together never repeat one.
    /// Not part of a request's identity: it follows the clock, as the choice does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<Planned>,
}

/// A configuration an iteration in flight is to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    pub family: String,
    pub hyperparameters: Vec<Hyperparameter>,
}

/// One earlier iteration, as later steps see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationBrief {
    pub iteration: u32,
    #[serde(default)]
    pub parent: Option<u32>,
    #[serde(default)]
    pub operation: Operation,
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
    /// Which script: `train` or `infer`.
    #[serde(default)]
    pub step: String,
    pub script: String,
    /// E.g. `exit 1`, `killed (wall-clock deadline)`, or a check of the outputs.
    pub summary: String,
    pub stderr_tail: String,
    pub stdout_tail: String,
}

/// The node an improve or debug operation builds on: its scripts, what it scored, what its
/// analysis said, and (for debug) how it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentBrief {
    pub iteration: u32,
    pub operation: Operation,
    pub status: String,
    pub family: String,
    pub hyperparameters: Vec<Hyperparameter>,
    pub representation: Option<RepresentOutput>,
    pub architecture: Option<ArchitectureOutput>,
    pub score: Option<f64>,
    pub train: Option<TrainOutput>,
    pub inference_script: String,
    pub observations: Vec<String>,
    pub next_ideas: Vec<String>,
    pub failure: Option<Failure>,
}

/// Time facts: what is left of the loop's budget when the iteration starts, and how long earlier
/// iterations' scripts ran. They are the only facts that differ between a run and its replay,
/// so requests are compared and hashed without them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    pub time_left_seconds: Option<f64>,
    /// `(iteration, seconds its scripts ran)`.
    pub runtimes: Vec<(u32, f64)>,
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
    /// What this iteration does, and the node it builds on.
    pub operation: Operation,
    pub parent: Option<ParentBrief>,
    pub profile: Profile,
    pub profile_text: String,
    pub iteration: u32,
    pub max_iterations: u32,
    #[serde(default)]
    pub history: Vec<IterationBrief>,
    pub best: Option<IterationBrief>,
    /// Printed output of earlier exploration scripts, newest last.
    pub findings: Vec<String>,
    /// The split in force (None before the first).
    pub split: Option<SplitOutput>,
    /// Whether this iteration may (re)define the split.
    pub split_open: bool,
    /// Iterations started before this one that it cannot know the outcome of (they run
    /// alongside it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingBrief>,
    /// Candidates are cross-validated over this many folds (none: a held-out split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv_folds: Option<u32>,
    pub current: CurrentSteps,
    pub failure: Option<Failure>,
    pub validation: Option<ValidationBrief>,
    /// Seed of the run, for agents that randomize deterministically.
    pub seed: u64,
    /// Time left and earlier run times (not part of a request's identity; see [`Clock`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Clock>,
}

impl StepContext {
    /// The context as JSON (what the built-in agent reads).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("contexts serialize")
    }
}

/// A step context as JSON, carried from one step of an iteration to the next: each step
/// serializes what it may have changed, and the earlier iterations, most of the context on a
/// long run, once an iteration, with their text for the request's hash and the transcript
/// ([`HistoryJson`]). Serializing them for every step made a step's cost grow with the run.
/// The clock, whose run times grow with the run too, is serialized again only when it changed.
#[derive(Debug, Default)]
pub struct ContextJson(Option<Kept>);

#[derive(Debug)]
struct Kept {
    value: Arc<serde_json::Value>,
    history: Option<Arc<HistoryJson>>,
    /// The clock in `value`.
    clock: Option<Clock>,
}

impl ContextJson {
    /// `ctx` as [`StepContext::to_value`] has it, and its history's text. The history is
    /// serialized again only if its length or its last iteration differ from what was
    /// serialized (an iteration's history does not change between its steps).
    pub fn of(&mut self, ctx: &mut StepContext) -> (Arc<serde_json::Value>, Option<Arc<HistoryJson>>) {
        let same_history = |value: &serde_json::Value| {
            value.get("history").and_then(|h| h.as_array()).is_some_and(|h| {
                h.len() == ctx.history.len()
                    && h.last().and_then(|b| b.get("iteration")).and_then(|i| i.as_u64())
                        == ctx.history.last().map(|b| u64::from(b.iteration))
            })
        };
        match &mut self.0 {
            Some(kept) if same_history(&kept.value) => {
                let same_clock = kept.clock.is_some() && kept.clock == ctx.clock;
                let history = std::mem::take(&mut ctx.history);
                let clock = if same_clock { ctx.clock.take() } else { None };
                let rest = ctx.to_value();
                ctx.history = history;
                if same_clock {
                    ctx.clock = clock;
                }
                let serde_json::Value::Object(rest) = rest else { unreachable!("a context is an object") };
                // Unique once the previous step's request is dropped: edited in place.
                let map = Arc::make_mut(&mut kept.value).as_object_mut().expect("a context is an object");
                map.retain(|k, _| k == "history" || (same_clock && k == "clock") || rest.contains_key(k));
                for (k, v) in rest.into_iter().filter(|(k, _)| k != "history") {
                    map.insert(k, v);
                }
                if !same_clock {
                    kept.clock = ctx.clock.clone();
                }
                (kept.value.clone(), kept.history.clone())
            }
            _ => {
                let value = ctx.to_value();
                let history = value.get("history").and_then(HistoryJson::of).map(Arc::new);
                let kept = self.0.insert(Kept { value: Arc::new(value), history, clock: ctx.clock.clone() });
                (kept.value.clone(), kept.history.clone())
            }
        }
    }
}

/// A small context for tests: a binary task on 500 rows, nothing tried yet.
#[cfg(test)]
pub(crate) fn sample_context() -> StepContext {
    use crate::data::TargetProfile;
    StepContext {
        task: TaskBrief {
            name: "t".into(),
            description: String::new(),
            target: "y".into(),
            kind: "binary".into(),
            metric: "roc_auc".into(),
            higher_is_better: true,
            classes: vec!["a".into(), "b".into()],
            positive: Some("b".into()),
        },
        operation: Operation::Draft,
        parent: None,
        profile: Profile {
            rows: 500,
            target: "y".into(),
            target_profile: TargetProfile::Classes { counts: vec![] },
            features: vec![],
        },
        profile_text: String::new(),
        iteration: 1,
        max_iterations: 100,
        history: vec![],
        best: None,
        findings: vec![],
        split: None,
        split_open: false,
        cv_folds: None,
        pending: vec![],
        current: CurrentSteps::default(),
        failure: None,
        validation: None,
        seed: 0,
        clock: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(i: u32) -> IterationBrief {
        IterationBrief {
            iteration: i,
            parent: None,
            operation: Operation::Draft,
            status: "succeeded".into(),
            family: "ridge".into(),
            hyperparameters: vec![],
            representation: None,
            score: Some(f64::from(i)),
            next_ideas: vec![],
        }
    }

    #[test]
    fn the_kept_json_is_the_context_after_every_change() {
        let mut ctx = sample_context();
        ctx.history = (1..=3).map(brief).collect();
        ctx.cv_folds = Some(5);
        let mut json = ContextJson::default();
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        ctx.current.plan = Some(PlanOutput { review: "r".into(), plan: "p".into(), builds_on: None });
        ctx.cv_folds = None;
        ctx.clock = Some(Clock { time_left_seconds: Some(3.0), runtimes: vec![(1, 0.5)] });
        let (held, text) = json.of(&mut ctx);
        assert_eq!(text.as_deref(), HistoryJson::of(&held["history"]).as_ref());
        assert_eq!(*held, ctx.to_value());
        ctx.validation = Some(ValidationBrief { score: 1.0, details: String::new() });
        // Still held elsewhere: the next one is a copy, and the held one is left as it was.
        let (next, _) = json.of(&mut ctx);
        assert_eq!(*next, ctx.to_value());
        assert_ne!(*held, *next);
        // The same clock is kept; another one is serialized.
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        ctx.clock.as_mut().unwrap().runtimes.push((2, 0.25));
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        ctx.clock.as_mut().unwrap().time_left_seconds = Some(1.0);
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        ctx.clock = None;
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        ctx.clock = Some(Clock { time_left_seconds: None, runtimes: vec![] });
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        assert!(ctx.clock.is_some(), "the context is left as it was");
        // A different history is serialized again.
        ctx.history.push(brief(4));
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        ctx.history.pop();
        assert_eq!(*json.of(&mut ctx).0, ctx.to_value());
        assert_eq!(ctx.history.len(), 3);
    }
}
