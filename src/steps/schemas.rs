//! The JSON Schema of each step's answer, made for the task at hand.
//!
//! The base comes from the Rust type the answer is read into (schemars), normalized to the
//! subset OpenAI's strict mode accepts: every object closed and every property required, no
//! `oneOf`/`allOf`/`not`/`if`, enums as `enum`, references inlined. Then the step's rules go in
//! wherever JSON Schema can say them, so constrained decoders (OpenAI strict mode, llama.cpp and
//! vLLM grammars) produce valid answers instead of the runner rejecting them: the split's
//! fraction range, the task's actual feature columns, the model families the sandbox offers,
//! and lengths on free text. [`crate::agent::strict_problems`] checks a schema against OpenAI's
//! rules.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::agent::schema_of;

use super::Step;
use super::outputs::{
    AnalyzeOutput, ArchitectureOutput, ExploreOutput, PlanOutput, RepresentOutput, ScriptOutput, SplitOutput,
    TrainOutput,
};

/// Model families every sandbox offers (scikit-learn), and the escape hatches.
const SKLEARN_FAMILIES: [&str; 24] = [
    "hist_gradient_boosting",
    "gradient_boosting",
    "random_forest",
    "extra_trees",
    "adaboost",
    "decision_tree",
    "logistic_regression",
    "linear_regression",
    "ridge",
    "lasso",
    "elastic_net",
    "sgd",
    "svm",
    "linear_svm",
    "knn",
    "naive_bayes",
    "mlp",
    "gaussian_process",
    "discriminant_analysis",
    "bagging",
    "stacking",
    "voting",
    "ensemble",
    "other",
];

/// Families that need a package the sandbox may or may not have.
const PACKAGE_FAMILIES: [(&str, &str); 3] =
    [("xgboost", "xgboost"), ("lightgbm", "lightgbm"), ("catboost", "catboost")];

/// More distinct enum values than this across a schema breaks OpenAI's limits: a feature list
/// that long is checked by the runner's rules instead.
const MAX_ENUM_VALUES: usize = 500;
/// Lengths of free text, in characters.
const SHORT_TEXT: u64 = 800;
const LIST_ITEM: u64 = 300;
const SCRIPT: u64 = 40_000;
const EXPLORE_SCRIPT: u64 = 8_000;

/// What a task's schemas are made from.
#[derive(Debug, Clone, Default)]
pub struct SchemaFacts {
    /// Feature columns (the target excluded).
    pub features: Vec<String>,
    /// Installed packages of the sandbox (name to version), for the families it offers.
    pub packages: BTreeMap<String, String>,
}

impl SchemaFacts {
    /// The model families this sandbox offers.
    pub fn families(&self) -> Vec<String> {
        let mut families: Vec<String> = SKLEARN_FAMILIES.iter().map(|s| s.to_string()).collect();
        for (family, package) in PACKAGE_FAMILIES {
            if self.packages.keys().any(|p| p.eq_ignore_ascii_case(package)) {
                families.insert(families.len() - 4, family.to_string());
            }
        }
        families
    }
}

/// Every step's schema for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Schemas {
    by_step: BTreeMap<&'static str, Value>,
}

impl Schemas {
    pub fn for_task(facts: &SchemaFacts) -> Self {
        let mut by_step = BTreeMap::new();
        for step in Step::ALL {
            let mut schema = base_for(step);
            constrain(step, &mut schema, facts);
            by_step.insert(step.name(), schema);
        }
        Self { by_step }
    }

    pub fn get(&self, step: Step) -> &Value {
        &self.by_step[step.name()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.by_step.iter().map(|(k, v)| (*k, v))
    }

    /// sha256 over every schema, recorded with the run like the prompts' hash.
    pub fn hash(&self) -> String {
        crate::fsx::sha256_bytes(serde_json::to_string(&self.by_step).expect("schemas serialize").as_bytes())
    }
}

fn base_for(step: Step) -> Value {
    match step {
        Step::Plan => schema_of::<PlanOutput>(),
        Step::Explore => schema_of::<ExploreOutput>(),
        Step::Split => schema_of::<SplitOutput>(),
        Step::Represent => schema_of::<RepresentOutput>(),
        Step::Architecture => schema_of::<ArchitectureOutput>(),
        Step::Train => schema_of::<TrainOutput>(),
        Step::Infer => schema_of::<ScriptOutput>(),
        Step::Analyze => schema_of::<AnalyzeOutput>(),
    }
}

fn property<'a>(schema: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut current = schema;
    for key in path {
        current = if *key == "[]" {
            current.get_mut("items")?
        } else {
            current.get_mut("properties")?.get_mut(*key)?
        };
    }
    current.as_object_mut()
}

fn set(schema: &mut Value, path: &[&str], key: &str, value: Value) {
    if let Some(p) = property(schema, path) {
        p.insert(key.into(), value);
    }
}

/// The step's rules, where JSON Schema can say them.
fn constrain(step: Step, schema: &mut Value, facts: &SchemaFacts) {
    let text = |schema: &mut Value, path: &[&str], max: u64| set(schema, path, "maxLength", json!(max));
    let list = |schema: &mut Value, path: &[&str], items: u64| {
        set(schema, path, "maxItems", json!(items));
        let mut item = path.to_vec();
        item.push("[]");
        set(schema, &item, "maxLength", json!(LIST_ITEM));
    };
    let hyperparameters = |schema: &mut Value| {
        set(schema, &["hyperparameters"], "maxItems", json!(20));
        set(schema, &["hyperparameters", "[]", "name"], "maxLength", json!(80));
        set(schema, &["hyperparameters", "[]", "value"], "maxLength", json!(300));
    };
    let families = |schema: &mut Value| set(schema, &["family"], "enum", json!(facts.families()));
    match step {
        Step::Plan => {
            text(schema, &["review"], SHORT_TEXT);
            text(schema, &["plan"], SHORT_TEXT);
        }
        Step::Explore => {
            text(schema, &["notes"], SHORT_TEXT);
            text(schema, &["script"], EXPLORE_SCRIPT);
        }
        Step::Split => {
            // The allowed fractions as an enum: grammar-constrained decoders (llama.cpp) enforce
            // enums of numbers exactly, but not bounds on fractional numbers.
            set(schema, &["validation_fraction"], "enum", json!([0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]));
            set(schema, &["seed"], "minimum", json!(0));
            text(schema, &["rationale"], SHORT_TEXT);
        }
        Step::Represent => {
            text(schema, &["description"], SHORT_TEXT);
            // A feature list cannot name the target: only the features are allowed.
            if !facts.features.is_empty() && facts.features.len() <= MAX_ENUM_VALUES {
                set(schema, &["drop_columns", "[]"], "enum", json!(facts.features));
            }
            set(schema, &["drop_columns"], "maxItems", json!(facts.features.len().saturating_sub(1)));
        }
        Step::Architecture => {
            families(schema);
            hyperparameters(schema);
            text(schema, &["rationale"], SHORT_TEXT);
        }
        Step::Train => {
            families(schema);
            hyperparameters(schema);
            text(schema, &["script"], SCRIPT);
            text(schema, &["notes"], SHORT_TEXT);
        }
        Step::Infer => {
            text(schema, &["script"], SCRIPT);
            text(schema, &["notes"], SHORT_TEXT);
        }
        Step::Analyze => {
            list(schema, &["observations"], 10);
            list(schema, &["next_ideas"], 10);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{strict_problems, without};

    fn facts() -> SchemaFacts {
        SchemaFacts {
            features: vec!["age".into(), "income".into(), "home".into()],
            packages: BTreeMap::from([("xgboost".to_string(), "2.1".to_string())]),
        }
    }

    #[test]
    fn every_step_schema_satisfies_openai_strict_rules() {
        let schemas = Schemas::for_task(&facts());
        for (step, schema) in schemas.iter() {
            assert_eq!(strict_problems(schema), Vec::<String>::new(), "{step}: {schema:#}");
        }
        // The check itself catches what OpenAI refuses.
        let bad = json!({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}, "b": {"type": "integer", "format": "uint32"}}, "required": ["a"]});
        let problems = strict_problems(&bad);
        for expected in [
            "`oneOf` is not permitted",
            "additionalProperties",
            "$.b: every property must be required",
            "numeric `format`",
        ] {
            assert!(problems.iter().any(|p| p.contains(expected)), "{expected}: {problems:?}");
        }
    }

    #[test]
    fn the_rules_are_in_the_schemas() {
        let schemas = Schemas::for_task(&facts());
        let split = schemas.get(Step::Split);
        assert_eq!(
            split["properties"]["validation_fraction"]["enum"],
            json!([0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
        );
        let represent = schemas.get(Step::Represent);
        assert_eq!(
            represent["properties"]["drop_columns"]["items"]["enum"],
            json!(["age", "income", "home"])
        );
        // An enum documented per variant became a plain `enum`.
        let categorical = &represent["properties"]["categorical"];
        assert_eq!(categorical["enum"], json!(["one_hot", "ordinal", "native"]));
        assert!(categorical["description"].as_str().unwrap().contains("native: Leave categories"));
        let families =
            schemas.get(Step::Architecture)["properties"]["family"]["enum"].as_array().unwrap().clone();
        assert!(families.contains(&json!("xgboost")) && !families.contains(&json!("lightgbm")));
        assert!(schemas.get(Step::Train)["properties"]["script"]["maxLength"].as_u64().is_some());
        // Every answer the validators accept must fit: a valid split validates.
        let validator = jsonschema::validator_for(split).unwrap();
        assert!(
            validator
                .is_valid(&json!({"validation_fraction": 0.2, "stratify": true, "seed": 0, "rationale": ""}))
        );
        assert!(
            !validator
                .is_valid(&json!({"validation_fraction": 2, "stratify": true, "seed": 0, "rationale": ""}))
        );
        let rv = jsonschema::validator_for(represent).unwrap();
        let target = json!({"description": "", "numeric": "none", "categorical": "native", "missing": "native", "drop_columns": ["y"]});
        assert!(!rv.is_valid(&target), "the target is not a feature");
    }

    #[test]
    fn schemas_differ_by_task_and_keywords_can_be_dropped() {
        let a = Schemas::for_task(&facts());
        let b = Schemas::for_task(&SchemaFacts { features: vec!["x".into()], ..facts() });
        assert_ne!(a.hash(), b.hash());
        let stripped = without(a.get(Step::Train), &["maxLength".to_string()]);
        assert!(!stripped.to_string().contains("maxLength"));
        assert!(stripped.to_string().contains("maxItems"));
    }
}
