//! The configurations the built-in agent can write: model families with their search spaces,
//! the data preparations, the portfolio of drafts known to do well on tabular data, and what a
//! configuration costs relative to boosting's defaults (the cost model that [`super::timing`]
//! turns into seconds).

use crate::data::{ColumnKind, Profile, TargetProfile};
use crate::steps::{CategoricalTreatment, Hyperparameter, NumericTreatment, StepContext};

/// A model family the built-in agent can write, with its search space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Family {
    pub name: &'static str,
    /// Whether numeric features should be standardized for it.
    pub scaled: bool,
    /// Whether it handles missing values itself.
    pub native_missing: bool,
    /// Parameter name, default (Python literal), and the values local search may try.
    pub space: &'static [(&'static str, &'static str, &'static [&'static str])],
    /// The parameter that sets how much work it does (iterations, trees), if any.
    pub size: Option<&'static str>,
    /// Rough cost relative to boosting with default settings, for predicting run times.
    pub cost: f64,
}

pub(super) const HGB: Family = Family {
    name: "hist_gradient_boosting",
    scaled: false,
    native_missing: true,
    space: &[
        ("learning_rate", "0.1", &["0.02", "0.05", "0.1", "0.2"]),
        ("max_iter", "100", &["100", "200", "400", "800", "1600"]),
        // The regularized end reaches stumps (an additive model), leaves of 200 rows and an L2
        // of 100, as FLAML's LightGBM space reaches 128 rows and 1,024: measured natively
        // (5-fold) on four noisy public tables (survey answers, loan defaults, remote work,
        // churn), stumps or 200-row leaves beat four-leaf trees at an L2 of 10 on three, by
        // 0.002-0.008 AUC, and an L2 of 100 did on a vote (+0.012 accuracy).
        ("max_leaf_nodes", "31", &["2", "4", "7", "15", "31", "63", "127"]),
        ("min_samples_leaf", "20", &["5", "10", "20", "50", "100", "200"]),
        ("l2_regularization", "0.0", &["0.0", "0.1", "1.0", "10.0", "100.0"]),
        // The share of features each split considers (column subsampling, as LightGBM's
        // `colsample`): decorrelates trees and regularizes on small data.
        ("max_features", "1.0", &["0.3", "0.5", "0.7", "1.0"]),
        // Whether the rounds stop when a tenth of the rows held out stops improving (the rest
        // train the model; see `refits_stopped`) or run to `max_iter`. Which is better is the
        // data's: natively (5-fold, 18 tables: four fixtures, three public tables, eleven of
        // ISLP's) the regularized portfolio entry run to its 800 rounds scored better than
        // early-stopped on 6 (concrete 4.44 -> 4.36 RMSE, cars' mpg 2.72 -> 2.60, tumours
        // 0.9907 -> 0.9932 AUC) and worse on 11 (diabetes 57.8 -> 61.5, loan defaults 0.839 ->
        // 0.823), the shallow entry better on 8 and worse on 9; a greedy ensemble of boosting's
        // three entries and the two run out beat the three alone on 12, equal on the others.
        ("early_stopping", "False", &["True", "False"]),
    ],
    size: Some("max_iter"),
    cost: 1.0,
};
/// Up to how many training rows an early-stopped boosting model is trained again on all of them
/// ([`Config::refits_stopped`]).
const STOPPED_REFIT_ROWS: usize = 2_000;
/// Random forests and extra trees share their knobs.
const FOREST_SPACE: &[(&str, &str, &[&str])] = &[
    ("n_estimators", "300", &["100", "200", "300", "500", "800"]),
    ("max_features", "'sqrt'", &["'sqrt'", "0.3", "0.5", "1.0"]),
    ("min_samples_leaf", "1", &["1", "2", "4", "8"]),
];
/// Up to how many rows a forest's cost relative to boosting stays what [`RF`] and [`ET`] say.
const FOREST_ROWS: f64 = 1200.0;
/// Forest costs are for 300 trees considering every feature at each split (a share of them
/// costs proportionally less) on up to [`FOREST_ROWS`] rows.
pub(super) const RF: Family = Family {
    name: "random_forest",
    scaled: false,
    native_missing: false,
    space: FOREST_SPACE,
    size: Some("n_estimators"),
    cost: 12.0,
};
/// Extra trees draw one threshold a feature where a random forest sorts, but a part of a
/// forest's time is not in the splits. In the sandbox (first runs of both on the same rows, 40
/// runs on eighteen tables) extra trees took a median 0.86 times a random forest's time at the
/// same share of features (26 runs; priced 0.5 at a cost of 6) and 1.1 times at twice its share
/// (14 runs of regressions, where they consider every feature and a random forest half; priced
/// 1.0). At 8 the medians are 1.29 and 0.82 times the price.
pub(super) const ET: Family = Family {
    name: "extra_trees",
    scaled: false,
    native_missing: false,
    space: FOREST_SPACE,
    size: Some("n_estimators"),
    cost: 8.0,
};
pub(super) const LOGISTIC: Family = Family {
    name: "logistic_regression",
    scaled: true,
    native_missing: false,
    space: &[("C", "1.0", &["0.01", "0.03", "0.1", "0.3", "1.0", "3.0", "10.0", "30.0", "100.0"])],
    size: None,
    cost: 0.3,
};
pub(super) const RIDGE: Family = Family {
    name: "ridge",
    scaled: true,
    native_missing: false,
    space: &[("alpha", "1.0", &["0.01", "0.1", "0.3", "1.0", "3.0", "10.0", "30.0", "100.0"])],
    size: None,
    cost: 0.2,
};
pub(super) const SVM: Family = Family {
    name: "svm",
    scaled: true,
    native_missing: false,
    space: &[
        ("C", "1.0", &["0.1", "0.3", "1.0", "3.0", "10.0", "30.0", "100.0"]),
        ("gamma", "'scale'", &["'scale'", "0.001", "0.003", "0.01", "0.03", "0.1"]),
    ],
    size: None,
    // At 1000 rows; it grows faster than the rows.
    cost: 2.0,
};
pub(super) const KNN: Family = Family {
    name: "knn",
    scaled: true,
    native_missing: false,
    space: &[
        ("n_neighbors", "10", &["3", "5", "10", "15", "25", "40"]),
        ("weights", "'distance'", &["'uniform'", "'distance'"]),
    ],
    size: None,
    cost: 0.5,
};
pub(super) const MLP: Family = Family {
    name: "mlp",
    scaled: true,
    native_missing: false,
    space: &[
        ("hidden_layer_sizes", "(128, 64)", &["(64,)", "(128,)", "(128, 64)", "(256, 128)"]),
        ("alpha", "0.0001", &["0.0001", "0.001", "0.01", "0.1", "1.0"]),
        ("learning_rate_init", "0.001", &["0.0003", "0.001", "0.003"]),
    ],
    size: None,
    cost: 3.0,
};

pub(super) const ALL: [Family; 8] = [HGB, RF, ET, LOGISTIC, RIDGE, SVM, KNN, MLP];

pub fn family(name: &str) -> Option<Family> {
    ALL.into_iter().find(|f| f.name == name)
}

/// The family built the same way as `name`, if any: the two forests grow their trees with the
/// same code, so one's runs on these data predict the other's time in proportion to their
/// costs far better than boosting's or a linear model's do (on 4,558 rows of 50 numbers, the
/// other families' runs put extra trees at about 13 s, a random forest's run at 43 s; it ran
/// 36 s and was cut at the end of the budget).
pub(super) fn kin(name: &str) -> Option<&'static str> {
    match name {
        "random_forest" => Some(ET.name),
        "extra_trees" => Some(RF.name),
        _ => None,
    }
}

/// How the data are prepared for a model. Recorded among the hyperparameters as `prep.*`, so
/// that what ran is on record and no preparation of a model is tried twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prep {
    pub categorical: CategoricalTreatment,
    pub numeric: NumericTreatment,
    /// Train on a random sample of at most this many rows.
    pub max_rows: Option<usize>,
    /// Model the logarithm of the target (`log1p`, predictions mapped back with `expm1`).
    pub log_target: bool,
    /// Categorical columns of many levels (see [`MANY_LEVELS`]) as codes in the order of their
    /// values rather than target-encoded.
    pub many_as_codes: bool,
}

/// Categorical columns with more levels than this are target-encoded (cross-fitted) unless
/// `prep.many` says codes, whatever the preparation of the others (one-hot encoding stops at
/// fewer: the scripts' `MANY`).
pub const MANY_LEVELS: usize = 250;

/// One configuration to try.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub family: Family,
    pub params: Vec<Hyperparameter>,
    pub prep: Prep,
    /// Why it was chosen (for the plan and the notes).
    pub why: String,
    /// The iteration an improve changes when it is not the operation's parent.
    pub base: Option<u32>,
}

impl Config {
    pub(super) fn new(
        family: Family,
        params: Vec<Hyperparameter>,
        prep: Prep,
        why: impl Into<String>,
    ) -> Self {
        Self { family, params, prep, why: why.into(), base: None }
    }

    pub fn family_name(&self) -> &'static str {
        self.family.name
    }

    /// The model's settings and the data preparation, as recorded.
    pub fn hyperparameters(&self) -> Vec<Hyperparameter> {
        let mut all = self.params.clone();
        let cat = match self.prep.categorical {
            CategoricalTreatment::OneHot => "'one_hot'",
            CategoricalTreatment::Ordinal => "'ordinal'",
            CategoricalTreatment::Native => "'native'",
        };
        all.push(Hyperparameter { name: "prep.categorical".into(), value: cat.into() });
        let numeric = match self.prep.numeric {
            NumericTreatment::Quantile => Some("'quantile'"),
            NumericTreatment::Spline => Some("'spline'"),
            NumericTreatment::None | NumericTreatment::Standardize => None,
        };
        if let Some(value) = numeric {
            all.push(Hyperparameter { name: "prep.numeric".into(), value: value.into() });
        }
        if let Some(n) = self.prep.max_rows {
            all.push(Hyperparameter { name: "prep.max_rows".into(), value: n.to_string() });
        }
        if self.prep.log_target {
            all.push(Hyperparameter { name: "prep.target".into(), value: "'log'".into() });
        }
        if self.prep.many_as_codes {
            all.push(Hyperparameter { name: "prep.many".into(), value: "'codes'".into() });
        }
        all
    }

    /// The model's own settings (what goes into the estimator).
    pub fn model_params(&self) -> &[Hyperparameter] {
        &self.params
    }

    pub(super) fn key(&self) -> (String, String) {
        (self.family.name.to_string(), render_params(&self.hyperparameters()))
    }

    /// Run time relative to boosting with default settings on data of the same rows and
    /// features and two classes: the family's own cost, scaled by how much work its settings ask
    /// for (trees or boosting rounds, the share of features a forest's split considers; a kernel
    /// machine grows with the square of the rows, so more than linearly) and by the classes.
    pub(super) fn relative_cost(&self, shape: Shape) -> f64 {
        let Shape { rows, features, classes } = shape;
        // The rows the model learns from: what grows faster than the rows grows with these.
        let learned = self.prep.max_rows.map_or(rows, |m| m.min(rows)) as f64;
        let size = self.family.size.and_then(|s| self.param(s)).and_then(|v| v.parse::<f64>().ok());
        let default =
            self.family.size.and_then(|s| default_of(self.family, s)).and_then(|v| v.parse::<f64>().ok());
        let mut scale = match (size, default) {
            (Some(s), Some(d)) if d > 0.0 => s / d,
            _ => 1.0,
        };
        if self.param("early_stopping") == Some("True") {
            // It stops when the held-out loss stops improving, long before its last round as a
            // rule.
            scale = scale.min(3.0);
            if self.refits_stopped(shape) {
                // A second fit, on every row, for the rounds the first ran.
                scale *= 2.0;
            }
        }
        if matches!(self.family.name, "random_forest" | "extra_trees") {
            // Relative to considering every feature at each split.
            let p = features.max(1) as f64;
            let share = match self.param("max_features").map(|v| v.trim_matches('\'')) {
                Some("sqrt") => p.sqrt() / p,
                Some("log2") => p.log2().max(1.0) / p,
                Some(v) => v.parse::<f64>().map_or(1.0, |f| f.clamp(0.0, 1.0)),
                None => 1.0,
            };
            scale *= share.max(0.05);
            // Fully grown trees: their splits sort the rows at every level, and there are more
            // levels the more rows there are, where boosting's trees stay small and bin the
            // values once. In multiples of what the share of features alone predicts, in the
            // sandbox: the square root of the rows over 1,200, within 0.8 to 1.6 of the times
            // on four tables of 34,500 to 192,000 rows (the most on a regression: fully grown,
            // its trees end in single rows). Natively (one thread, the fit and prediction
            // alone) it grows faster: medians of seven tables 3.7 at 8,000 rows and 8.4 at
            // 32,000, regressions up to 13.8.
            scale *= (learned / FOREST_ROWS).sqrt().max(1.0);
        }
        if self.family.name == "svm" {
            scale *= (learned / 1000.0).max(0.25);
            if classes == 2 {
                // Calibrated on three folds rather than libsvm's five (see the scripts).
                scale *= 0.6;
            }
        }
        if self.family.name == "knn" {
            // Each prediction is measured against every training row, and the rows predicted
            // grow with the data too: natively (one thread, dense rows) neighbours took a
            // quarter of boosting's time on 2,000 rows, half on 8,000, 3-5 times on 32,000-48,000.
            // The validation rows it predicts are all of them whatever the sample, so its
            // cost on a sample is the full data's times the sample's share, once.
            scale *= (rows as f64 / 4000.0).max(0.5);
        }
        if classes > 2 && matches!(self.family.name, "hist_gradient_boosting" | "logistic_regression") {
            // A tree, or a row of coefficients, for each class: natively on 1,000 rows of 100
            // classes boosting took 16 times as long as on two, a logistic regression 23 times.
            scale *= classes as f64 / 2.0;
        }
        if self.prep.numeric == NumericTreatment::Spline {
            // Seven basis columns for each number.
            scale *= SPLINE_COST;
        }
        let sampled = self.prep.max_rows.map_or(1.0, |m| (m as f64 / rows.max(1) as f64).min(1.0));
        self.family.cost * scale * sampled
    }

    /// Whether the model, once early stopping has found its rounds on the tenth of the rows it
    /// holds out, is trained again on every row for as many (`train.py` does both). Natively
    /// (5-fold, the two early-stopped boosting settings of the portfolio) the cross-validated
    /// score improved on tables of up to 1,615 rows (by 2,000 of 78,000 RMSE on 745 rows of house
    /// prices, 0.2 of 4.7 on 824 of concrete strengths, 0.0013 AUC on 455 of tumours, 0.0034 on
    /// 1,615 of cell images; 0.002 RMSE worse once, equal on penguins), and on 3,563 rows of loan
    /// defaults it did not (+0.0009 and -0.0006 AUC), where in a 5-minute run the second fit cost
    /// a third of the iterations.
    pub(super) fn refits_stopped(&self, shape: Shape) -> bool {
        let learned = self.prep.max_rows.map_or(shape.rows, |m| m.min(shape.rows));
        self.family.name == HGB.name
            && self.param("early_stopping") == Some("True")
            && learned <= STOPPED_REFIT_ROWS
    }

    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }

    pub(super) fn set(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|p| p.name == name) {
            Some(p) => p.value = value.to_string(),
            None => self.params.push(Hyperparameter { name: name.into(), value: value.into() }),
        }
    }
}

/// How much a spline basis of the numbers adds to a model's work (seven columns for one).
const SPLINE_COST: f64 = 5.0;

/// A linear model on a spline basis of the numbers: additive in smooth functions of them. The
/// basis has seven times the columns, so it starts more regularized than the plain model.
fn additive(linear: Family, regression: bool) -> Config {
    let mut params = defaults(linear, regression);
    for p in &mut params {
        match p.name.as_str() {
            "C" => p.value = "0.1".into(),
            "alpha" => p.value = "10.0".into(),
            _ => {}
        }
    }
    let prep = Prep { numeric: NumericTreatment::Spline, ..default_prep(linear) };
    Config::new(linear, params, prep, "a linear model on cubic splines of the numbers (an additive model)")
}

fn default_of(family: Family, name: &str) -> Option<&'static str> {
    family.space.iter().find(|(n, _, _)| *n == name).map(|(_, d, _)| *d)
}

pub(super) fn hp(name: &str, value: &str) -> Hyperparameter {
    Hyperparameter { name: name.into(), value: value.into() }
}

pub fn defaults(family: Family, regression: bool) -> Vec<Hyperparameter> {
    family
        .space
        .iter()
        .map(|(name, default, _)| {
            // A forest regressor considers every feature by default, as scikit-learn does.
            let value = if regression && *name == "max_features" { "1.0" } else { default };
            hp(name, value)
        })
        .collect()
}

pub(super) fn default_prep(family: Family) -> Prep {
    let categorical = match family.name {
        "hist_gradient_boosting" => CategoricalTreatment::Native,
        "random_forest" | "extra_trees" => CategoricalTreatment::Ordinal,
        _ => CategoricalTreatment::OneHot,
    };
    Prep {
        categorical,
        numeric: if family.scaled { NumericTreatment::Standardize } else { NumericTreatment::None },
        max_rows: None,
        log_target: false,
        many_as_codes: false,
    }
}

pub fn render_params(params: &[Hyperparameter]) -> String {
    params.iter().map(|p| format!("{}={}", p.name, p.value)).collect::<Vec<_>>().join(", ")
}

/// The drafts, best bets first, for data of this kind and size.
pub fn portfolio(regression: bool, rows: usize) -> Vec<Config> {
    let big = rows > 50_000;
    let forest = |family: Family| {
        let mut params = defaults(family, regression);
        let mut set = |name: &str, value: &str| {
            params.iter_mut().find(|p| p.name == name).expect("a forest setting").value = value.into();
        };
        // A first pass of 100 trees: improves grow forests that earn it while time allows.
        set("n_estimators", "100");
        if regression && family.name == "random_forest" {
            // Half the features per split (Breiman suggests a third for regression): as good
            // as a rule, and half the work of all of them.
            set("max_features", "0.5");
        }
        if big {
            // Shallower-leaved trees on a lot of rows: the first pass should be quick.
            set("min_samples_leaf", "2");
        }
        Config::new(
            family,
            params,
            default_prep(family),
            format!("{} with settings that do well across tabular data", family.name),
        )
    };
    let linear = if regression { RIDGE } else { LOGISTIC };
    // Cheap first, as FLAML does: what is quick to learn comes before the forests.
    let mut all = vec![
        Config::new(
            HGB,
            defaults(HGB, regression),
            default_prep(HGB),
            "gradient boosting with its defaults and native categories",
        ),
        Config::new(linear, defaults(linear, regression), default_prep(linear), "a regularized linear model"),
        additive(linear, regression),
        Config::new(
            HGB,
            vec![
                hp("learning_rate", "0.05"),
                hp("max_iter", "800"),
                hp("max_leaf_nodes", "15"),
                hp("min_samples_leaf", "20"),
                hp("l2_regularization", "1.0"),
                hp("max_features", "0.5"),
                hp("early_stopping", "True"),
                hp("n_iter_no_change", "50"),
            ],
            default_prep(HGB),
            "regularized gradient boosting: slower learning, half the features per split, early stopping",
        ),
        // Measured natively (5-fold, twenty tables: the fixtures and public ones): best of
        // boosting's defaults, the regularized entry above and this on thirteen, chiefly noisy
        // classifications (loan defaults, churn, survey answers); far behind where interactions
        // matter (house prices, a panel of wages), where the ensembles leave it out.
        Config::new(
            HGB,
            vec![
                hp("learning_rate", "0.1"),
                hp("max_iter", "400"),
                hp("max_leaf_nodes", "4"),
                hp("min_samples_leaf", "20"),
                hp("l2_regularization", "10.0"),
                hp("max_features", "1.0"),
                hp("early_stopping", "True"),
                hp("n_iter_no_change", "20"),
            ],
            default_prep(HGB),
            "shallow gradient boosting: four leaves a tree, strong L2, early stopping (on noisy data \
             few interactions generalize)",
        ),
        forest(RF),
        forest(ET),
    ];
    if rows <= 10_000 {
        all.push(Config::new(
            SVM,
            defaults(SVM, regression),
            default_prep(SVM),
            "an RBF support vector machine",
        ));
    }
    if rows <= 100_000 {
        all.push(Config::new(
            KNN,
            defaults(KNN, regression),
            default_prep(KNN),
            "distance-weighted nearest neighbours",
        ));
    }
    if rows <= 200_000 {
        let mut mlp = defaults(MLP, regression);
        mlp.push(hp("early_stopping", "True"));
        all.push(Config::new(MLP, mlp, default_prep(MLP), "a small neural network with early stopping"));
    }
    all
}

/// The drafts for these data: the portfolio without what their columns make the same as an
/// entry before it (splines of the numbers, on data without numbers, are the linear model),
/// with boosting on the log of a skewed target after the cheap entries, and with boosting on
/// categories of many levels as codes after the forests.
pub fn portfolio_for(regression: bool, rows: usize, columns: Columns) -> Vec<Config> {
    let mut all = portfolio(regression, rows);
    all.retain(|c| columns.numeric || c.prep.numeric != NumericTreatment::Spline);
    if columns.many_levels {
        // Natively, boosting's defaults on four public tables with such columns: flight delays
        // (tail numbers, 4,000 levels, whose order follows the fleets) 17.38 RMSE as codes
        // against 17.29 target-encoded; loan rates (job titles) 1.327 against 1.331; art's
        // years (artists) 4.17 against 3.73; reviews (products) equal. (Codes had won on
        // flights while the encoder took whole-minute delays for classes.) Which wins is the
        // data's, so both are drafts. After the forests: one draft more before them cost a
        // 2-minute run on one core its random forest (art's years: 3.71 RMSE on the test
        // split against 3.61).
        let after_forests =
            all.iter().rposition(|c| kin(c.family.name).is_some()).map_or(all.len(), |p| p + 1);
        all.insert(
            after_forests,
            Config::new(
                HGB,
                defaults(HGB, regression),
                Prep { many_as_codes: true, ..default_prep(HGB) },
                "gradient boosting with its defaults, categories of many levels as codes in the \
                 order of their values rather than target-encoded",
            ),
        );
    }
    if columns.log_target {
        // Before the regularized boosting: right after the cheap entries.
        let at = all.iter().skip(1).position(|c| c.family.name == HGB.name).map_or(all.len(), |p| p + 1);
        all.insert(
            at,
            Config::new(
                HGB,
                defaults(HGB, regression),
                Prep { log_target: true, ..default_prep(HGB) },
                "gradient boosting with its defaults on the log of the target (it is skewed): errs \
                 differently from the model of the target itself, which the ensembles use",
            ),
        );
    }
    all
}

/// Families the built-in agent tries for data like this (for the number of drafts).
pub fn families(regression: bool, rows: usize) -> Vec<&'static str> {
    portfolio(regression, rows).iter().map(|c| c.family.name).collect()
}

/// The configuration a history brief records, if the built-in agent can run it.
pub fn config_of(brief_family: &str, hyperparameters: &[Hyperparameter]) -> Option<Config> {
    let family = family(brief_family)?;
    let mut prep = default_prep(family);
    let mut params = Vec::new();
    for h in hyperparameters {
        match h.name.as_str() {
            "prep.categorical" => {
                prep.categorical = match h.value.trim_matches('\'') {
                    "one_hot" => CategoricalTreatment::OneHot,
                    "native" => CategoricalTreatment::Native,
                    _ => CategoricalTreatment::Ordinal,
                }
            }
            "prep.numeric" => {
                prep.numeric = match h.value.trim_matches('\'') {
                    "spline" => NumericTreatment::Spline,
                    _ => NumericTreatment::Quantile,
                }
            }
            "prep.max_rows" => prep.max_rows = h.value.parse().ok(),
            "prep.target" => prep.log_target = h.value.trim_matches('\'') == "log",
            "prep.many" => prep.many_as_codes = h.value.trim_matches('\'') == "codes",
            _ => params.push(h.clone()),
        }
    }
    Some(Config::new(family, params, prep, String::new()))
}

/// Pearson's median skewness of a target from which its logarithm is modelled too. Measured
/// with boosting's defaults, 5-fold, on eleven public regression tables: averaging the models
/// of the target and of its log cut the RMSE on nine of the ten above this (by 0.1-6.6%; +0.2%
/// on the tenth) and the one below it (earnings with 14% zeros, -0.49) lost 15%; on the
/// diabetes fixture (0.48) it was equal (+0.1%). The runner's ensembles weigh such a model by
/// what it adds.
const SKEWED: f64 = 0.25;

/// What a configuration's cost depends on besides its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// The rows `train.py` sees ([`training_rows`]), which a sample is a part of.
    pub(super) rows: usize,
    pub(super) features: usize,
    /// Classes of a classification; 0 for a regression.
    pub(super) classes: usize,
}

impl Shape {
    pub(super) fn of(context: &StepContext) -> Self {
        let classes = match &context.profile.target_profile {
            crate::data::TargetProfile::Classes { counts } => counts.len(),
            crate::data::TargetProfile::Range { .. } => 0,
        };
        Self { rows: training_rows(context), features: context.profile.features.len(), classes }
    }
}

/// The rows a training script sees: the data less the validation rows held out (under
/// cross-validation a fold's training sees most of them and the committed model all).
fn training_rows(context: &StepContext) -> usize {
    let rows = context.profile.rows;
    match (&context.split, context.cv_folds) {
        (Some(split), None) => (rows as f64 * (1.0 - split.validation_fraction)).round() as usize,
        _ => rows,
    }
}

/// Which kinds of feature columns the data have: a preparation of a kind the data lack changes
/// nothing but the record, so an improve never spends a run on it. And whether a model of the
/// target's logarithm is worth a try.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub(super) numeric: bool,
    pub(super) categorical: bool,
    /// A regression target that is never negative and skewed to the right (prices, wages,
    /// counts): modelling its log errs differently, often less, on large values.
    pub(super) log_target: bool,
    /// A categorical column of more than [`MANY_LEVELS`] levels.
    pub(super) many_levels: bool,
}

impl Columns {
    pub(super) fn of(context: &StepContext) -> Self {
        Self::of_profile(&context.profile)
    }

    pub fn of_profile(profile: &Profile) -> Self {
        let has = |kind| profile.features.iter().any(|c| c.kind == kind);
        let log_target = match profile.target_profile {
            // Pearson's median skewness (the profile keeps no third moment): above a quarter
            // the mean sits well to the right of the median.
            TargetProfile::Range { min, mean, median, std, .. } => {
                min >= 0.0 && std > 0.0 && 3.0 * (mean - median) / std >= SKEWED
            }
            TargetProfile::Classes { .. } => false,
        };
        Self {
            // Dates become numbers (year, month, ...), free text its lengths.
            numeric: has(ColumnKind::Numeric) || has(ColumnKind::Date) || has(ColumnKind::Text),
            categorical: has(ColumnKind::Categorical),
            log_target,
            many_levels: profile
                .features
                .iter()
                .any(|c| c.kind == ColumnKind::Categorical && c.unique > MANY_LEVELS),
        }
    }
}
