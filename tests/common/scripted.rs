//! A scripted "LLM" for end-to-end runs: answers each step of the loop with fixed JSON, and
//! with the train/inference scripts a test supplies.
#![allow(dead_code)]

use serde_json::{Value, json};

/// A train.py for the penguins fixture (logistic regression on one-hot features).
pub const PENGUINS_TRAIN: &str = r#"import os, pickle
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

df = pd.read_csv("data/train.csv")
y = df.pop("species")
cat = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
num = [c for c in df.columns if c not in cat]
df[cat] = df[cat].astype(object)
pre = ColumnTransformer([
    ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
    ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), cat),
])
model = make_pipeline(pre, LogisticRegression(max_iter=2000)).fit(df, y)
os.makedirs("model", exist_ok=True)
pickle.dump((model, cat), open("model/model.pkl", "wb"))
"#;

/// The matching inference.py.
pub const PENGUINS_INFER: &str = r#"import argparse, pickle
import pandas as pd

p = argparse.ArgumentParser()
p.add_argument("--input")
p.add_argument("--output")
a = p.parse_args()
model, cat = pickle.load(open("model/model.pkl", "rb"))
X = pd.read_csv(a.input)
X[cat] = X[cat].astype(object)
out = pd.DataFrame({"prediction": model.predict(X)})
for i, c in enumerate(model.classes_):
    out[f"proba_{c}"] = model.predict_proba(X)[:, i]
out.to_csv(a.output, index=False)
"#;

/// Which step a request is for, from its schema's name, or (in prompt mode, where the schema is
/// in the prompt) from the schema's properties.
pub fn step_of(request: &Value) -> &'static str {
    let schema = request["response_format"]["json_schema"]["name"].as_str().unwrap_or_default();
    if schema.is_empty() {
        let text = request["messages"].to_string();
        let has = |key: &str| text.contains(&format!("\\\"{key}\\\""));
        return if has("review") {
            "plan"
        } else if has("next_ideas") {
            "analyze"
        } else if has("validation_fraction") {
            "split"
        } else if has("drop_columns") {
            "represent"
        } else if has("rationale") {
            "architecture"
        } else if has("family") {
            "train"
        } else if has("notes") && text.contains("explore.py") {
            "explore"
        } else {
            "infer"
        };
    }
    match schema {
        "PlanOutput" => "plan",
        "ExploreOutput" => "explore",
        "SplitOutput" => "split",
        "RepresentOutput" => "represent",
        "ArchitectureOutput" => "architecture",
        "AnalyzeOutput" => "analyze",
        "TrainOutput" => "train",
        "ScriptOutput" => "infer",
        _ => "unknown",
    }
}

/// A valid answer for each step, with the given scripts.
pub fn answer(request: &Value, train: &str, infer: &str) -> String {
    let value = match step_of(request) {
        "plan" => json!({"review": "", "plan": "Fit a regularized linear model.", "builds_on": null}),
        "explore" => json!({"notes": "The profile is enough.", "script": ""}),
        "split" => {
            json!({"validation_fraction": 0.2, "stratify": true, "seed": 0, "rationale": "a fifth"})
        }
        "represent" => {
            json!({"description": "scaled numbers, one-hot categories", "numeric": "standardize", "categorical": "one_hot", "missing": "median", "drop_columns": []})
        }
        "architecture" => {
            json!({"family": "logistic_regression", "hyperparameters": [{"name": "C", "value": "1.0"}], "rationale": "simple"})
        }
        "train" => {
            json!({"script": train, "family": "logistic_regression", "hyperparameters": [{"name": "C", "value": "1.0"}], "notes": ""})
        }
        "infer" => json!({"script": infer, "notes": ""}),
        "analyze" => json!({"observations": ["fine"], "next_ideas": ["more features"]}),
        other => panic!("no scripted answer for step {other}: {request}"),
    };
    value.to_string()
}
