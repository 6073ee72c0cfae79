//! The typed answer of each agent step. Their JSON Schemas (from schemars, doc comments
//! included) are what LLMs are asked to fill; every field is required so strict structured
//! output applies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Instructions for this iteration, from the results of earlier ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanOutput {
    /// What earlier iterations showed, in a few sentences ("" in the first iteration).
    pub review: String,
    /// What this iteration will try and why.
    pub plan: String,
    /// In an improve: the iteration whose code this one changes when it is not the one named
    /// (another scored model shown above is the better base); null otherwise.
    pub builds_on: Option<u32>,
}

/// Data exploration: notes, and optionally a script to run on the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExploreOutput {
    /// What to look for, or what is already known from the profile.
    pub notes: String,
    /// Python run as `python explore.py` next to `data/train.csv`; its printed output is kept as
    /// findings for later steps. Empty to skip.
    pub script: String,
}

/// How to hold out validation rows from the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitOutput {
    /// Fraction of the training rows held out for validation (0.1 to 0.4).
    pub validation_fraction: f64,
    /// Keep the class balance on both sides (classification only).
    pub stratify: bool,
    /// Seed of the split.
    pub seed: u64,
    /// Why this split.
    pub rationale: String,
}

impl SplitOutput {
    /// The split a run starts with, before any agent has chosen one.
    pub fn initial(classification: bool, seed: u64) -> Self {
        Self { validation_fraction: 0.2, stratify: classification, seed, rationale: "default".into() }
    }
}

/// Scaling of numeric columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NumericTreatment {
    None,
    Standardize,
    Quantile,
    /// A cubic spline basis of each column, knots at its quantiles (a linear model on it is a GAM).
    Spline,
}

/// Encoding of categorical columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CategoricalTreatment {
    OneHot,
    Ordinal,
    /// Leave categories to the model (histogram gradient boosting's native support).
    Native,
}

/// Filling of missing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingTreatment {
    Median,
    Mean,
    /// Leave missing values to the model (histogram gradient boosting handles them).
    Native,
}

/// Feature encoding and transformations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepresentOutput {
    /// The representation in words, including any engineered features.
    pub description: String,
    pub numeric: NumericTreatment,
    pub categorical: CategoricalTreatment,
    pub missing: MissingTreatment,
    /// Feature columns to leave out (must exist; never the target).
    pub drop_columns: Vec<String>,
}

/// One hyperparameter, value written as Python would (e.g. `0.1`, `'sqrt'`, `(64, 64)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameter {
    pub name: String,
    pub value: String,
}

/// Model family and hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureOutput {
    /// Model family, e.g. `hist_gradient_boosting`, `random_forest`, `logistic_regression`.
    pub family: String,
    pub hyperparameters: Vec<Hyperparameter>,
    /// Why this model.
    pub rationale: String,
}

/// `train.py`, and the model it trains (recorded as what ran: a fix may change the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainOutput {
    /// The complete Python source.
    pub script: String,
    /// The model family this script trains: the architecture step's, unless this answer
    /// changes it (say so in `notes`).
    pub family: String,
    /// The hyperparameters this script actually uses.
    pub hyperparameters: Vec<Hyperparameter>,
    /// Anything worth knowing about it.
    pub notes: String,
}

/// A script (`inference.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptOutput {
    /// The complete Python source.
    pub script: String,
    /// Anything worth knowing about it.
    pub notes: String,
}

/// What the validation predictions show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeOutput {
    pub observations: Vec<String>,
    /// Ideas for later iterations.
    pub next_ideas: Vec<String>,
}
