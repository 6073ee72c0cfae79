//! The built-in agent's scripts: `train.py` and `inference.py` for a configuration, following
//! the same contract as LLM-written ones (relative paths, `model/`, `--input`/`--output`).

use super::strategy::{Choice, Family, render_params};
use crate::steps::{
    CategoricalTreatment, Hyperparameter, MissingTreatment, NumericTreatment, RepresentOutput, StepContext,
};

/// Python expression building the estimator of `family` with `params`.
fn estimator(family: Family, params: &[Hyperparameter], regression: bool) -> String {
    let kwargs = params.iter().map(|p| format!("{}={}", p.name, p.value)).collect::<Vec<_>>().join(", ");
    let sep = if kwargs.is_empty() { "" } else { ", " };
    let plain = |name: &str, extra: &str| format!("{name}({kwargs}{sep}{extra})");
    // Models that predict better on a standardized target.
    let scaled_target = |inner: String| {
        format!("TransformedTargetRegressor(regressor={inner}, transformer=StandardScaler())")
    };
    match (family.name, regression) {
        ("hist_gradient_boosting", false) => plain("HistGradientBoostingClassifier", "random_state=SEED"),
        ("hist_gradient_boosting", true) => plain("HistGradientBoostingRegressor", "random_state=SEED"),
        ("random_forest", false) => plain("RandomForestClassifier", "n_jobs=1, random_state=SEED"),
        ("random_forest", true) => plain("RandomForestRegressor", "n_jobs=1, random_state=SEED"),
        ("extra_trees", false) => plain("ExtraTreesClassifier", "n_jobs=1, random_state=SEED"),
        ("extra_trees", true) => plain("ExtraTreesRegressor", "n_jobs=1, random_state=SEED"),
        ("logistic_regression", _) => plain("LogisticRegression", "max_iter=5000"),
        ("ridge", _) => plain("Ridge", ""),
        ("svm", false) => plain("SVC", "probability=True, random_state=SEED"),
        ("svm", true) => scaled_target(plain("SVR", "")),
        ("knn", false) => plain("KNeighborsClassifier", ""),
        ("knn", true) => scaled_target(plain("KNeighborsRegressor", "")),
        ("mlp", false) => plain("MLPClassifier", "max_iter=500, early_stopping=True, random_state=SEED"),
        ("mlp", true) => {
            scaled_target(plain("MLPRegressor", "max_iter=500, early_stopping=True, random_state=SEED"))
        }
        (other, _) => unreachable!("unknown family {other}"),
    }
}

fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn scaling(numeric: NumericTreatment) -> &'static str {
    match numeric {
        NumericTreatment::None => "none",
        NumericTreatment::Standardize => "standardize",
        NumericTreatment::Quantile => "quantile",
    }
}

/// `train.py` for `choice` under `represent`.
pub fn train_script(context: &StepContext, choice: &Choice, represent: &RepresentOutput) -> String {
    let regression = context.task.kind == "regression";
    let missing = match represent.missing {
        MissingTreatment::Median => "median",
        MissingTreatment::Mean => "mean",
        MissingTreatment::Native => "native",
    };
    let encoding = match represent.categorical {
        CategoricalTreatment::OneHot => "one_hot",
        CategoricalTreatment::Ordinal => "ordinal",
    };
    let model = match choice {
        Choice::Single { family, params } | Choice::Exhausted { family, params } => format!(
            "Pipeline([(\"pre\", preprocessor({}, {})), (\"model\", {})])",
            py_str(scaling(represent.numeric)),
            py_str(missing),
            estimator(*family, params, regression)
        ),
        Choice::Ensemble { members } => {
            let parts: Vec<String> = members
                .iter()
                .enumerate()
                .map(|(i, (family, params))| {
                    format!(
                        "        (\"m{i}_{}\", Pipeline([(\"pre\", preprocessor({}, \"median\")), (\"model\", {})])),",
                        family.name,
                        py_str(if family.scaled { "standardize" } else { "none" }),
                        estimator(*family, params, regression)
                    )
                })
                .collect();
            let voter = if regression {
                "VotingRegressor(estimators=[\n"
            } else {
                "VotingClassifier(voting=\"soft\", estimators=[\n"
            };
            format!("{voter}{}\n    ])", parts.join("\n"))
        }
    };
    let drop: Vec<String> = represent.drop_columns.iter().map(|c| py_str(c)).collect();
    format!(
        r#""""Iteration {iteration}: {family} ({params}).

Written by the loop-runner built-in agent (no LLM). Representation: {description}
Run: python train.py   (reads data/train.csv, writes model/)
"""
import json
import os
import pickle

import pandas as pd
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, HistGradientBoostingClassifier,
                              HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor,
                              VotingClassifier, VotingRegressor)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, QuantileTransformer, StandardScaler
from sklearn.svm import SVC, SVR

TARGET = {target}
DROP = [{drop}]
ENCODING = {encoding}
SEED = {seed}

df = pd.read_csv("data/train.csv")
y = df.pop(TARGET)
X = df.drop(columns=[c for c in DROP if c in df.columns])
categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
numeric = [c for c in X.columns if c not in categorical]
X[categorical] = X[categorical].astype(object)


def preprocessor(scale, missing):
    steps = []
    if missing != "native":
        steps.append(("impute", SimpleImputer(strategy=missing)))
    if scale == "standardize":
        steps.append(("scale", StandardScaler()))
    elif scale == "quantile":
        steps.append(("scale", QuantileTransformer(n_quantiles=min(1000, len(X)), output_distribution="normal", random_state=SEED)))
    if ENCODING == "one_hot":
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    return ColumnTransformer([
        ("num", Pipeline(steps) if steps else "passthrough", numeric),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]), categorical),
    ])


model = {model}
model.fit(X, y)
os.makedirs("model", exist_ok=True)
with open("model/model.pkl", "wb") as f:
    pickle.dump(model, f)
meta = {{"target": TARGET, "features": list(X.columns), "categorical": categorical,
        "classes": [str(c) for c in getattr(model, "classes_", [])]}}
with open("model/meta.json", "w") as f:
    json.dump(meta, f, indent=2)
print(f"trained {family} on {{len(X)}} rows, {{len(X.columns)}} features")
"#,
        iteration = context.iteration,
        family = choice.family_name(),
        params = render_params(&choice.hyperparameters()),
        description = represent.description,
        target = py_str(&context.task.target),
        drop = drop.join(", "),
        encoding = py_str(encoding),
        seed = context.seed,
    )
}

/// `inference.py`: the same for every configuration (everything it needs is in `model/`).
pub fn inference_script(context: &StepContext) -> String {
    let probabilities = if context.task.kind == "regression" {
        ""
    } else {
        "\nproba = model.predict_proba(X)\nfor i, c in enumerate(model.classes_):\n    out[f\"proba_{c}\"] = proba[:, i]\n"
    };
    format!(
        r#""""Predict with the model saved by train.py.

Run: python inference.py --input FEATURES.csv --output PREDICTIONS.csv
"""
import argparse
import json
import pickle

import pandas as pd

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()

with open("model/model.pkl", "rb") as f:
    model = pickle.load(f)
with open("model/meta.json") as f:
    meta = json.load(f)
X = pd.read_csv(args.input)
missing = [c for c in meta["features"] if c not in X.columns]
if missing:
    raise SystemExit(f"input lacks columns: {{missing}}")
X = X[meta["features"]]
X[meta["categorical"]] = X[meta["categorical"]].astype(object)
out = pd.DataFrame({{"prediction": model.predict(X)}}){probabilities}
out.to_csv(args.output, index=False)
print(f"wrote {{len(out)}} predictions")
"#
    )
}

/// `explore.py` for the first iteration: sizes, missing values, how features relate to the target.
pub fn explore_script(context: &StepContext) -> String {
    let relation = if context.task.kind == "regression" {
        "rel = num.corrwith(y).abs().sort_values(ascending=False)\nprint(\"|correlation| with the target:\")\nprint(rel.head(10).round(3).to_string())"
    } else {
        "means = num.groupby(y).mean().T\nspread = (means.max(axis=1) - means.min(axis=1)) / (num.std() + 1e-12)\nprint(\"features whose class means differ most (in standard deviations):\")\nprint(spread.sort_values(ascending=False).head(10).round(3).to_string())"
    };
    format!(
        "import pandas as pd\n\ndf = pd.read_csv(\"data/train.csv\")\ny = df.pop({target})\nprint(f\"{{len(df)}} rows, {{df.shape[1]}} features\")\nshare = df.isna().mean().sort_values(ascending=False)\nprint(\"missing share:\", share[share > 0].round(3).to_dict())\nnum = df.select_dtypes(\"number\")\nif len(num.columns):\n    {relation}\n",
        target = py_str(&context.task.target),
        relation = relation.replace('\n', "\n    ")
    )
}
