//! The built-in agent's scripts: `train.py` and `inference.py` for a configuration, following
//! the same contract as LLM-written ones (relative paths, `model/`, `--input`/`--output`).
//!
//! Both scripts share one feature function (dates into year, month, day, weekday; identifiers
//! dropped; free text with its lengths), so inference prepares its input exactly as training
//! did. Free text is the TF-IDF of its words and word pairs: sparse for linear models, support
//! vector machines and networks, reduced to [`TEXT_DIMENSIONS`] for trees and neighbours (which
//! get dense rows where they fit).
//! Categorical columns are never expanded into one dense column per category: one-hot output is
//! sparse and capped at 32 columns per feature, trees get codes or native categories, and
//! columns with many categories (over 50 for one-hot, over [`MANY_LEVELS`] otherwise) are
//! target-encoded with cross-fitting, or given as codes (`prep.many`). A skewed regression
//! target may be modelled on its log (`prep.target`), predictions mapped back.

use super::portfolio::{Config, MANY_LEVELS, Shape, render_params};
use crate::data::ColumnKind;
use crate::steps::{CategoricalTreatment, Hyperparameter, NumericTreatment, StepContext};

/// How many dimensions free text is reduced to for trees (latent semantic analysis).
pub(super) const TEXT_DIMENSIONS: usize = 32;

/// Whether free text is reduced to [`TEXT_DIMENSIONS`] for `config`'s model: trees split on
/// dense columns, and neighbours are found far faster among dense rows.
pub(super) fn reduce_text(config: &Config) -> bool {
    !config.family.scaled || config.family.name == "knn"
}

/// Python expression building the estimator of `config`.
fn estimator(config: &Config, regression: bool) -> String {
    let params: &[Hyperparameter] = config.model_params();
    let mut kwargs: Vec<String> = params.iter().map(|p| format!("{}={}", p.name, p.value)).collect();
    if config.family.name == "hist_gradient_boosting"
        && config.prep.categorical == CategoricalTreatment::Native
    {
        kwargs.push("categorical_features=NATIVE".into());
    }
    if config.family.name == "hist_gradient_boosting" && config.param("early_stopping").is_none() {
        // scikit-learn's default ("auto") stops early above 10,000 rows, on a tenth of them held
        // out: a configuration scored on fewer rows than that (a fold, the training part of a
        // held-out split) would be another model when trained on all of them (the committed
        // model, the refit). On a table of 12,300 training rows the refit of an ensemble of such
        // boosting models scored 12.44 RMSE on the test split, the ensemble itself 12.05.
        kwargs.push("early_stopping=False".into());
    }
    let kwargs = kwargs.join(", ");
    let sep = if kwargs.is_empty() { "" } else { ", " };
    let plain = |name: &str, extra: &str| format!("{name}({kwargs}{sep}{extra})");
    // Models that predict better on a standardized target.
    let scaled_target = |inner: String| {
        format!("TransformedTargetRegressor(regressor={inner}, transformer=StandardScaler())")
    };
    match (config.family.name, regression) {
        ("hist_gradient_boosting", false) => plain("HistGradientBoostingClassifier", "random_state=SEED"),
        ("hist_gradient_boosting", true) => plain("HistGradientBoostingRegressor", "random_state=SEED"),
        ("random_forest", false) => plain("RandomForestClassifier", "n_jobs=1, random_state=SEED"),
        ("random_forest", true) => plain("RandomForestRegressor", "n_jobs=1, random_state=SEED"),
        ("extra_trees", false) => plain("ExtraTreesClassifier", "n_jobs=1, random_state=SEED"),
        ("extra_trees", true) => plain("ExtraTreesRegressor", "n_jobs=1, random_state=SEED"),
        ("logistic_regression", _) => plain("LogisticRegression", "max_iter=5000"),
        ("ridge", _) => plain("Ridge", ""),
        // Two classes: a sigmoid fitted on 3-fold decision values, which is what libsvm's
        // `probability=True` does inside with 5 folds. Natively on seven two-class tables it took
        // 0.5-0.75 of the time, with the same AUC and log loss (and on one, taxi, an AUC of 0.56
        // where libsvm's own fit turned the ranking over, 0.44). More classes keep libsvm's
        // pairwise coupling: the one-vs-rest sigmoids had a log loss of 0.71 against 0.60 on
        // three classes.
        ("svm", false) => format!(
            "(CalibratedClassifierCV({}, cv=3, ensemble=False) if y.nunique() == 2 and y.value_counts().min() >= 3 else {})",
            plain("SVC", "random_state=SEED"),
            plain("SVC", "probability=True, random_state=SEED")
        ),
        ("svm", true) => scaled_target(plain("SVR", "")),
        ("knn", false) => plain("KNeighborsClassifier", ""),
        ("knn", true) => scaled_target(plain("KNeighborsRegressor", "")),
        ("mlp", false) => plain("MLPClassifier", "max_iter=500, random_state=SEED"),
        ("mlp", true) => scaled_target(plain("MLPRegressor", "max_iter=500, random_state=SEED")),
        (other, _) => unreachable!("unknown family {other}"),
    }
}

fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn py_list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|s| py_str(s)).collect::<Vec<_>>().join(", "))
}

/// The feature function both scripts share.
const FEATURES: &str = r#"def when(values):
    """Dates and times as written: a zone or offset after the time is dropped, so that the hour
    is the local one and offsets that change with daylight saving time parse together (pandas
    refuses a column of mixed offsets); what still does not parse is missing."""
    text = values.astype("string").str.strip()
    text = text.str.replace(r"(:\d\d(?:\.\d+)?)\s*(?:Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)$", r"\1", regex=True)
    for utc in (False, True):
        try:
            t = pd.to_datetime(text, errors="coerce", format="mixed", utc=utc)
        except (ValueError, TypeError, OverflowError):
            continue
        return t.dt.tz_localize(None) if t.dt.tz is not None else t
    return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")


def number(values):
    """Numbers written as text: markers such as "?" become missing; thousands separators,
    currency and percent signs are dropped."""
    text = values.astype("string").str.strip()
    parts = text.str.extract(r"^([+-]?)[$€£¥]?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d*))?%?$")
    written = parts[0] + parts[1].str.replace(",", "") + "." + parts[2].fillna("") + "0"
    plain = pd.to_numeric(text, errors="coerce")
    return plain.fillna(pd.to_numeric(written, errors="coerce")).astype(float)


def features(df, drop, dates, numbers, text=()):
    """The columns the model sees: identifiers dropped, numbers written as text read as numbers,
    dates split into parts, free text with its length in characters and words, infinities
    missing."""
    df = df.drop(columns=[c for c in drop if c in df.columns])
    for c in text:
        if c in df.columns:
            s = df[c].astype("string")
            df[f"{c}__chars"] = s.str.len().astype(float)
            df[f"{c}__words"] = s.str.count(r"\S+").astype(float)
            df[c] = s.fillna("").astype(object)
    for c in numbers:
        if c in df.columns:
            df[c] = number(df[c])
    for c in dates:
        if c not in df.columns:
            continue
        t = when(df[c])
        # Every part, the hour too where it is always 0: the columns must not depend on the
        # rows (a batch of midnights would lack the hour the model was trained with).
        for part in ("year", "month", "day", "day_of_week", "day_of_year", "hour"):
            df[f"{c}__{part}"] = getattr(t.dt, part).astype(float)
        df = df.drop(columns=[c])
    num = df.select_dtypes("number").columns
    df[num] = df[num].replace([np.inf, -np.inf], np.nan)
    return df
"#;

/// `train.py` for `config`.
pub fn train_script(context: &StepContext, config: &Config) -> String {
    let regression = context.task.kind == "regression";
    let drop = context.profile.columns(ColumnKind::Identifier);
    let dates = context.profile.columns(ColumnKind::Date);
    let encoding = match config.prep.categorical {
        CategoricalTreatment::OneHot => "one_hot",
        CategoricalTreatment::Ordinal => "ordinal",
        CategoricalTreatment::Native => "native",
    };
    let numeric = match (config.prep.numeric, config.family.scaled) {
        (NumericTreatment::Quantile, _) => "quantile",
        (NumericTreatment::Spline, _) => "spline",
        (NumericTreatment::Standardize, _) | (_, true) => "standardize",
        _ => "none",
    };
    let impute = if config.family.native_missing { "native" } else { "median" };
    format!(
        r#""""Iteration {iteration}: {family} ({params}).

Written by the loop-runner built-in agent (no LLM): {why}.
Run: python train.py   (reads data/train.csv, writes model/)
"""
import json
import os
import pickle

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, HistGradientBoostingClassifier,
                              HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (OneHotEncoder, OrdinalEncoder, QuantileTransformer, SplineTransformer,
                                   StandardScaler, TargetEncoder)
from sklearn.svm import SVC, SVR

TARGET = {target}
DROP = {drop}
DATES = {dates}
NUMBERS = {numbers}
TEXT = {text}
ENCODING = {encoding}
NUMERIC = {numeric}
IMPUTE = {impute}
MAX_ROWS = {max_rows}
REFIT_STOPPED = {refit_stopped}
LOG_TARGET = {log_target}
SEED = {seed}
# Categorical columns with more distinct values than this are never one-hot encoded.
MANY = 50
MANY_LEVELS = {many_levels}
TARGET_TYPE = {target_type}
MANY_CODES = {many_codes}
# Free text is the TF-IDF of its words and word pairs (those in two rows or more, the most
# frequent 20,000), sparse for the models that take it so; trees get it reduced to this many
# dimensions (latent semantic analysis), as they split on dense columns.
TFIDF = dict(ngram_range=(1, 2), min_df=2, max_features=20000, sublinear_tf=True, dtype=np.float32)
REDUCE_TEXT = {reduce_text}
TEXT_DIMENSIONS = {text_dimensions}
DENSE = {dense}
DENSE_BYTES = 2**28


{features}

df = pd.read_csv("data/train.csv")
if MAX_ROWS is not None and len(df) > MAX_ROWS:
    df = df.sample(n=MAX_ROWS, random_state=SEED)
y = df.pop(TARGET)
X = features(df, DROP, DATES, NUMBERS, TEXT)
# A column without a single value here carries nothing, and boosting cannot bin it; inference
# keeps the columns the model was trained with.
X = X.loc[:, X.notna().any()]
# Nor does text without a word that two rows share. Its words alone (a sixth of the work of
# words and pairs) tell that, and whether there are more than a reduction keeps.
text = []
for c in [c for c in TEXT if c in X.columns]:
    try:
        size = len(CountVectorizer(min_df=2, binary=True).fit(X[c]).vocabulary_)
    except ValueError:
        size = 0
    if size:
        text.append((c, size))
    else:
        X = X.drop(columns=[c])
categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c]) and c not in TEXT]
numeric = [c for c in X.columns if c not in categorical and c not in TEXT]
X[categorical] = X[categorical].astype(object)
levels = {{c: X[c].nunique() for c in categorical}}
# Categories of high cardinality are target-encoded (cross-fitted): one column per level
# explodes, and codes of thousands of levels carry an order a tree can use only where the
# values' order means something (MANY_CODES: tail numbers follow fleets, zip codes regions).
few = [c for c in categorical if levels[c] <= (MANY_LEVELS if ENCODING != "one_hot" else MANY)]
many = [c for c in categorical if c not in few]
if MANY_CODES:
    by_level = Pipeline([("fill", SimpleImputer(strategy="most_frequent")), ("encode", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))])
else:
    # TARGET_TYPE: a regression's target is continuous even when its values are whole numbers,
    # which the encoder would otherwise take for classes (one column a value: on flight delays,
    # 38,400 rows, 14 times the training time and a worse model).
    by_level = Pipeline([("fill", SimpleImputer(strategy="most_frequent")), ("encode", TargetEncoder(target_type=TARGET_TYPE, random_state=SEED))])

steps = []
if IMPUTE != "native":
    steps.append(("impute", SimpleImputer(strategy="median")))
if NUMERIC == "standardize":
    steps.append(("scale", StandardScaler()))
elif NUMERIC == "quantile":
    steps.append(("scale", QuantileTransformer(n_quantiles=min(1000, len(X)), output_distribution="normal", random_state=SEED)))
elif NUMERIC == "spline":
    # Knots at quantiles (evenly spaced after a uniform quantile map, so that a column of few
    # distinct values gets no repeated knots): each number's effect becomes a smooth curve.
    steps.append(("rank", QuantileTransformer(n_quantiles=min(1000, len(X)), output_distribution="uniform", random_state=SEED)))
    steps.append(("spline", SplineTransformer(n_knots=5, degree=3)))
    steps.append(("scale", StandardScaler()))
num = Pipeline(steps) if steps else "passthrough"
fill = SimpleImputer(strategy="most_frequent")
codes = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
if ENCODING == "one_hot":
    parts = [
        ("few", Pipeline([("fill", fill), ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=32, sparse_output=True))]), few),
        ("many", by_level, many),
    ]
elif ENCODING == "native":
    native = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    parts = [("few", native, few), ("many", by_level, many)]
else:
    parts = [("few", Pipeline([("fill", fill), ("encode", codes)]), few), ("many", by_level, many)]
for i, (c, size) in enumerate(text):
    words = TfidfVectorizer(**TFIDF)
    if REDUCE_TEXT and size > TEXT_DIMENSIONS:
        words = Pipeline([("words", words), ("reduce", TruncatedSVD(TEXT_DIMENSIONS, random_state=SEED))])
    parts.append((f"text{{i}}", words, c))
# Native categories are the columns right after the numeric ones.
NATIVE = list(range(len(numeric), len(numeric) + len(few))) or None
# Neighbours are found by distances to every training row, several times slower between
# sparse rows than dense ones (one-hot categories, 25,600 rows: 6.5 s against 1.3 s natively,
# one thread), so they get dense rows where those fit in DENSE_BYTES; trees need them.
width = (len(numeric) * (7 if NUMERIC == "spline" else 1) + len(many)
         + sum(min(levels[c], 32) if ENCODING == "one_hot" else 1 for c in few)
         + sum(min(size, TEXT_DIMENSIONS) if REDUCE_TEXT else size for _, size in text))
dense = (REDUCE_TEXT and text) or (DENSE and len(X) * width * 8 <= DENSE_BYTES)
pre = ColumnTransformer([("num", num, numeric)] + parts, sparse_threshold=0.0 if dense else 0.3)

model = Pipeline([("pre", pre), ("model", {model})]){holdout}
if LOG_TARGET:
    # The log of a skewed, never negative target; predictions are mapped back.
    model = TransformedTargetRegressor(regressor=model, func=np.log1p, inverse_func=np.expm1, check_inverse=False)
model.fit(X, y)
# Early stopping finds its rounds on a tenth of the rows held out, which the model then never
# learns from. On small data that tenth is missed, so the model is trained again on every row
# for the rounds it ran, patience included (REFIT_STOPPED: decided on the data's rows, so that
# the folds' models and the committed one are the same kind of model).
fitted = (model.regressor_ if LOG_TARGET else model).named_steps["model"]
if REFIT_STOPPED and fitted.early_stopping is True:
    rounds = fitted.n_iter_
    (model.regressor if LOG_TARGET else model).named_steps["model"].set_params(early_stopping=False, max_iter=rounds)
    model.fit(X, y)
    print(f"early stopping ran {{rounds}} rounds; trained again on all {{len(X)}} rows for as many")
os.makedirs("model", exist_ok=True)
with open("model/model.pkl", "wb") as f:
    pickle.dump(model, f)
meta = {{"target": TARGET, "drop": DROP, "dates": DATES, "numbers": NUMBERS, "text": TEXT, "columns": list(X.columns), "categorical": categorical,
        "classes": [str(c) for c in getattr(model, "classes_", [])]}}
with open("model/meta.json", "w") as f:
    json.dump(meta, f, indent=2)
print(f"trained {family} on {{len(X)}} rows, {{len(X.columns)}} features")
"#,
        iteration = context.iteration,
        family = config.family_name(),
        params = render_params(&config.hyperparameters()),
        why = config.why,
        target = py_str(&context.task.target),
        drop = py_list(&drop),
        dates = py_list(&dates),
        numbers = py_list(&context.profile.numbers_as_text()),
        text = py_list(&context.profile.columns(ColumnKind::Text)),
        // Trees (the families without scaled inputs) split on dense columns; neighbours are
        // near in the reduced text's few dimensions as well, and far faster found there.
        reduce_text = if reduce_text(config) { "True" } else { "False" },
        dense = if config.family.name == "knn" { "True" } else { "False" },
        text_dimensions = TEXT_DIMENSIONS,
        encoding = py_str(encoding),
        numeric = py_str(numeric),
        impute = py_str(impute),
        max_rows = config.prep.max_rows.map_or("None".to_string(), |n| n.to_string()),
        refit_stopped = if config.refits_stopped(Shape::of(context)) { "True" } else { "False" },
        log_target = if config.prep.log_target { "True" } else { "False" },
        many_levels = MANY_LEVELS,
        target_type = py_str(if regression { "continuous" } else { "auto" }),
        many_codes = if config.prep.many_as_codes { "True" } else { "False" },
        seed = context.seed,
        features = FEATURES.trim_end(),
        model = estimator(config, regression),
        holdout = if regression { "" } else { STRATIFIABLE },
    )
}

/// For classifiers: early stopping holds out a stratified share of the training rows, which
/// scikit-learn refuses when a class has a single row or there are more classes than rows held
/// out. Such data train without it, capped at the rounds early stopping is assumed to take.
const STRATIFIABLE: &str = r#"
learner = model.named_steps["model"]
stops = getattr(learner, "early_stopping", False)
if stops == "auto":
    stops = len(X) > 10000
counts = y.value_counts()
held = int(np.ceil(len(y) * getattr(learner, "validation_fraction", 0.1)))
if stops is True and (counts.min() < 2 or held < len(counts) or len(y) - held < len(counts)):
    learner.set_params(early_stopping=False, max_iter=min(learner.max_iter, 300))
    print(f"early stopping off: class {counts.idxmin()!r} has {counts.min()} rows, {held} rows would be held out for {len(counts)} classes")"#;

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

import numpy as np
import pandas as pd


{features}

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()

with open("model/model.pkl", "rb") as f:
    model = pickle.load(f)
with open("model/meta.json") as f:
    meta = json.load(f)
text = meta.get("text", [])
X = features(pd.read_csv(args.input), meta["drop"], meta["dates"], meta.get("numbers", []), text)
missing = [c for c in meta["columns"] if c not in X.columns]
if missing:
    raise SystemExit(f"input lacks columns: {{missing}}")
X = X[meta["columns"]]
# What the model learned as numbers stays numbers: new rows may carry a marker ("?", "n/a") or
# a thousands separator the training rows never had.
for c in X.columns.difference(meta["categorical"] + text):
    if not pd.api.types.is_numeric_dtype(X[c]):
        X[c] = number(X[c])
X[meta["categorical"]] = X[meta["categorical"]].astype(object)
out = pd.DataFrame({{"prediction": model.predict(X)}}){probabilities}
out.to_csv(args.output, index=False)
print(f"wrote {{len(out)}} predictions")
"#,
        features = FEATURES.trim_end(),
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

#[cfg(test)]
mod tests {
    use super::super::portfolio::{HGB, portfolio};
    use super::super::strategy::tests::context;
    use super::*;

    #[test]
    fn neighbours_get_dense_rows_and_reduced_text_as_trees_do() {
        let ctx = context(vec![]);
        let line = |c: &Config, name: &str| {
            let script = train_script(&ctx, c);
            let prefix = format!("{name} = ");
            script.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string)).expect(name)
        };
        for c in portfolio(false, 20_000) {
            let knn = c.family.name == "knn";
            let trees = !c.family.scaled;
            assert_eq!(line(&c, "DENSE"), if knn { "True" } else { "False" }, "{c:?}");
            assert_eq!(line(&c, "REDUCE_TEXT"), if knn || trees { "True" } else { "False" }, "{c:?}");
        }
    }

    #[test]
    fn a_regressions_target_is_encoded_as_continuous_even_in_whole_numbers() {
        let mut ctx = context(vec![]);
        let line = |ctx: &StepContext| {
            let script = train_script(ctx, &portfolio(false, 20_000)[0]);
            assert!(script.contains("TargetEncoder(target_type=TARGET_TYPE,"), "the encoder is told");
            script
                .lines()
                .find_map(|l| l.strip_prefix("TARGET_TYPE = ").map(str::to_string))
                .expect("TARGET_TYPE")
        };
        assert_eq!(line(&ctx), r#""auto""#, "a classification's classes are found by the encoder");
        ctx.task.kind = "regression".into();
        assert_eq!(line(&ctx), r#""continuous""#);
    }

    #[test]
    fn only_early_stopped_boosting_on_small_data_is_trained_again_on_every_row() {
        let mut ctx = context(vec![]);
        let line = |ctx: &StepContext, c: &Config| {
            let script = train_script(ctx, c);
            script
                .lines()
                .find_map(|l| l.strip_prefix("REFIT_STOPPED = ").map(str::to_string))
                .expect("REFIT_STOPPED")
        };
        let all = portfolio(false, 1000);
        let stopping = |c: &&Config| c.param("early_stopping") == Some("True");
        assert!(all.iter().filter(|c| c.family == HGB).any(|c| stopping(&c)));
        for c in &all {
            let expected = c.family == HGB && stopping(&c);
            assert_eq!(line(&ctx, c), if expected { "True" } else { "False" }, "{c:?}");
        }
        // Decided on the data's rows: a fold's model and the committed one are trained alike.
        ctx.profile.rows = 50_000;
        assert!(all.iter().all(|c| line(&ctx, c) == "False"));
    }

    #[test]
    fn boosting_stops_early_only_where_its_configuration_says_so() {
        let ctx = context(vec![]);
        let boosting: Vec<Config> =
            portfolio(false, 20_000).into_iter().filter(|c| c.family == HGB).collect();
        let (stopping, not): (Vec<&Config>, Vec<&Config>) =
            boosting.iter().partition(|c| c.param("early_stopping") == Some("True"));
        assert!(!stopping.is_empty() && !not.is_empty());
        let model = |c: &Config| {
            let script = train_script(&ctx, c);
            script.lines().find(|l| l.starts_with("model = Pipeline(")).expect("the model's line").to_string()
        };
        for c in stopping {
            let line = model(c);
            assert!(line.contains("early_stopping=True") && !line.contains("early_stopping=False"), "{line}");
        }
        // Not scikit-learn's "auto", which would stop early on every row but not on a fold.
        for c in not {
            assert!(model(c).contains("early_stopping=False"), "{}", model(c));
        }
    }
}
