//! The loop's steps: typed answers, the context they are asked with, prompt templates and
//! semantic checks. The runner drives them; this module decides what is asked and what is
//! acceptable, nothing more.

mod context;
pub mod memory;
mod outputs;
mod prompts;
pub mod rules;
pub mod schemas;

#[cfg(test)]
pub(crate) use context::sample_context;
pub use context::{
    Clock, ContextJson, CurrentSteps, Failure, IterationBrief, ParentBrief, PendingBrief, Planned,
    StepContext, TaskBrief, ValidationBrief,
};
pub use outputs::{
    AnalyzeOutput, ArchitectureOutput, CategoricalTreatment, ExploreOutput, Hyperparameter, MissingTreatment,
    NumericTreatment, PlanOutput, RepresentOutput, ScriptOutput, SplitOutput, TrainOutput,
};
pub use prompts::{Extras, prompts_hash, render};

/// An agent step (the runner's own `evaluate` is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Plan,
    Explore,
    Split,
    Represent,
    Architecture,
    Train,
    Infer,
    Analyze,
}

/// Step names, as used in config (`agent.models`) and transcripts.
pub const STEP_NAMES: [&str; 8] =
    ["plan", "explore", "split", "represent", "architecture", "train", "infer", "analyze"];

impl Step {
    pub const ALL: [Step; 8] = [
        Step::Plan,
        Step::Explore,
        Step::Split,
        Step::Represent,
        Step::Architecture,
        Step::Train,
        Step::Infer,
        Step::Analyze,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Plan => "plan",
            Step::Explore => "explore",
            Step::Split => "split",
            Step::Represent => "represent",
            Step::Architecture => "architecture",
            Step::Train => "train",
            Step::Infer => "infer",
            Step::Analyze => "analyze",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}
