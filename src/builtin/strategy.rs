//! What the built-in agent tries next: first each model family once with sensible defaults,
//! then an ensemble of the best families, then local search around the best configurations
//! (mostly the best family, sometimes the runner-up). Deterministic for a seed and a history.

use std::collections::BTreeMap;

use crate::steps::{Hyperparameter, IterationBrief, StepContext};

/// A model family the built-in agent can write, with its search space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    /// Whether numeric features should be standardized for it.
    pub scaled: bool,
    /// Whether it handles missing values itself.
    pub native_missing: bool,
    /// Parameter name, default (Python literal), and the values local search may try.
    pub space: &'static [(&'static str, &'static str, &'static [&'static str])],
}

const HGB: Family = Family {
    name: "hist_gradient_boosting",
    scaled: false,
    native_missing: true,
    space: &[
        ("learning_rate", "0.1", &["0.02", "0.05", "0.1", "0.2"]),
        ("max_iter", "100", &["100", "200", "400", "800"]),
        ("max_leaf_nodes", "31", &["7", "15", "31", "63"]),
        ("min_samples_leaf", "20", &["5", "10", "20", "50"]),
        ("l2_regularization", "0.0", &["0.0", "0.1", "1.0", "10.0"]),
    ],
};
/// Random forests and extra trees share their knobs.
const FOREST_SPACE: &[(&str, &str, &[&str])] = &[
    ("n_estimators", "300", &["200", "300", "500"]),
    ("max_features", "'sqrt'", &["'sqrt'", "0.3", "0.5", "1.0"]),
    ("min_samples_leaf", "1", &["1", "2", "4", "8"]),
];
const RF: Family =
    Family { name: "random_forest", scaled: false, native_missing: false, space: FOREST_SPACE };
const ET: Family = Family { name: "extra_trees", scaled: false, native_missing: false, space: FOREST_SPACE };
const LOGISTIC: Family = Family {
    name: "logistic_regression",
    scaled: true,
    native_missing: false,
    space: &[("C", "1.0", &["0.01", "0.03", "0.1", "0.3", "1.0", "3.0", "10.0", "30.0", "100.0"])],
};
const RIDGE: Family = Family {
    name: "ridge",
    scaled: true,
    native_missing: false,
    space: &[("alpha", "1.0", &["0.01", "0.1", "0.3", "1.0", "3.0", "10.0", "30.0", "100.0"])],
};
const SVM: Family = Family {
    name: "svm",
    scaled: true,
    native_missing: false,
    space: &[
        ("C", "1.0", &["0.1", "0.3", "1.0", "3.0", "10.0", "30.0", "100.0"]),
        ("gamma", "'scale'", &["'scale'", "0.001", "0.003", "0.01", "0.03", "0.1"]),
    ],
};
const KNN: Family = Family {
    name: "knn",
    scaled: true,
    native_missing: false,
    space: &[
        ("n_neighbors", "5", &["3", "5", "7", "11", "15", "21", "31"]),
        ("weights", "'uniform'", &["'uniform'", "'distance'"]),
    ],
};
const MLP: Family = Family {
    name: "mlp",
    scaled: true,
    native_missing: false,
    space: &[
        ("hidden_layer_sizes", "(100,)", &["(64,)", "(100,)", "(128, 64)", "(64, 64)"]),
        ("alpha", "0.0001", &["0.0001", "0.001", "0.01", "0.1", "1.0"]),
        ("learning_rate_init", "0.001", &["0.001", "0.003"]),
    ],
};

/// The pseudo-family that soft-votes (or averages) the best configurations of other families.
pub const ENSEMBLE: &str = "ensemble";

/// Families in the order they are first tried.
pub fn families(regression: bool, rows: usize) -> Vec<Family> {
    let linear = if regression { RIDGE } else { LOGISTIC };
    let mut all = vec![HGB, RF, linear, ET, SVM, KNN, MLP];
    // Kernel SVMs scale quadratically; on large data they would eat the budget.
    if rows > 10_000 {
        all.retain(|f| f.name != "svm");
    }
    all
}

pub fn family(name: &str) -> Option<Family> {
    [HGB, RF, ET, LOGISTIC, RIDGE, SVM, KNN, MLP].into_iter().find(|f| f.name == name)
}

/// One configuration to try.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Single {
        family: Family,
        params: Vec<Hyperparameter>,
    },
    /// Members: family and parameters of each.
    Ensemble {
        members: Vec<(Family, Vec<Hyperparameter>)>,
    },
    /// Everything is tried and no neighbour is new: repeat the best.
    Exhausted {
        family: Family,
        params: Vec<Hyperparameter>,
    },
}

impl Choice {
    pub fn family_name(&self) -> &'static str {
        match self {
            Choice::Single { family, .. } | Choice::Exhausted { family, .. } => family.name,
            Choice::Ensemble { .. } => ENSEMBLE,
        }
    }

    /// The hyperparameters as reported in the architecture step.
    pub fn hyperparameters(&self) -> Vec<Hyperparameter> {
        match self {
            Choice::Single { params, .. } | Choice::Exhausted { params, .. } => params.clone(),
            Choice::Ensemble { members } => members
                .iter()
                .map(|(f, p)| Hyperparameter { name: f.name.to_string(), value: render_params(p) })
                .collect(),
        }
    }

    /// Whether numeric features are standardized (for the representation answer).
    pub fn scaled(&self) -> bool {
        match self {
            Choice::Single { family, .. } | Choice::Exhausted { family, .. } => family.scaled,
            Choice::Ensemble { members } => members.iter().any(|(f, _)| f.scaled),
        }
    }

    pub fn native_missing(&self) -> bool {
        match self {
            Choice::Single { family, .. } | Choice::Exhausted { family, .. } => family.native_missing,
            Choice::Ensemble { .. } => false,
        }
    }
}

pub fn defaults(family: Family, regression: bool) -> Vec<Hyperparameter> {
    family
        .space
        .iter()
        .map(|(name, default, _)| {
            // A forest regressor considers every feature by default, as scikit-learn does.
            let value = if regression && *name == "max_features" { "1.0" } else { default };
            Hyperparameter { name: name.to_string(), value: value.to_string() }
        })
        .collect()
}

pub fn render_params(params: &[Hyperparameter]) -> String {
    params.iter().map(|p| format!("{}={}", p.name, p.value)).collect::<Vec<_>>().join(", ")
}

/// The configuration for this iteration.
pub fn choose(context: &StepContext) -> Choice {
    let regression = context.task.kind == "regression";
    let candidates = families(regression, context.profile.rows);
    let tried: Vec<&str> = context.history.iter().map(|h| h.family.as_str()).collect();
    if let Some(next) = candidates.iter().find(|f| !tried.contains(&f.name)) {
        return Choice::Single { family: *next, params: defaults(*next, regression) };
    }
    let ranked = best_per_family(context);
    let seen: Vec<(String, String)> =
        context.history.iter().map(|h| (h.family.clone(), render_params(&h.hyperparameters))).collect();
    // Ensembles of the best configurations: first the top three, then, every fourth iteration,
    // the top three, five or all families with whatever is best by then. Averaging diverse models
    // is the surest way past the winner's curse of picking one model on a small validation set.
    let since_exploration = context.history.len().saturating_sub(candidates.len());
    if ranked.len() >= 2 && (!tried.contains(&ENSEMBLE) || since_exploration.is_multiple_of(4)) {
        let sizes = [3, 5, ranked.len()];
        let k = sizes[(since_exploration / 4) % sizes.len()].min(ranked.len()).max(2);
        let members: Vec<(Family, Vec<Hyperparameter>)> = ranked
            .iter()
            .take(k)
            .filter_map(|b| Some((family(&b.family)?, b.hyperparameters.clone())))
            .collect();
        let choice = Choice::Ensemble { members };
        if !seen.contains(&(ENSEMBLE.to_string(), render_params(&choice.hyperparameters()))) {
            return choice;
        }
    }
    let Some(best) = ranked.first() else {
        // Nothing has worked: the most forgiving family again.
        return Choice::Single { family: HGB, params: defaults(HGB, regression) };
    };
    let mut rng = fastrand::Rng::with_seed(
        context.seed ^ u64::from(context.iteration).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let unseen = |fam: Family, params: &[Hyperparameter]| {
        !seen.contains(&(fam.name.to_string(), render_params(params)))
    };
    // Mostly near the best single family; sometimes the runner-up first. When a family's
    // neighbourhood is used up, the next family in the ranking takes over, so no configuration
    // is run twice while an untried one remains.
    let mut order: Vec<&IterationBrief> = ranked.iter().collect();
    if order.len() > 1 && rng.f64() < 0.25 {
        order.swap(0, 1);
    }
    for base in order {
        let Some(fam) = family(&base.family) else { continue };
        for _ in 0..40 {
            let params = neighbour(fam, &base.hyperparameters, &mut rng);
            if unseen(fam, &params) {
                return Choice::Single { family: fam, params };
            }
        }
    }
    // Every neighbourhood is spent: any untried point of any family's space.
    for fam in &candidates {
        for _ in 0..40 {
            let params: Vec<Hyperparameter> = fam
                .space
                .iter()
                .map(|(name, _, values)| Hyperparameter {
                    name: name.to_string(),
                    value: values[rng.usize(..values.len())].to_string(),
                })
                .collect();
            if unseen(*fam, &params) {
                return Choice::Single { family: *fam, params };
            }
        }
    }
    match family(&best.family) {
        Some(fam) => Choice::Exhausted { family: fam, params: best.hyperparameters.clone() },
        None => Choice::Single { family: HGB, params: defaults(HGB, regression) },
    }
}

/// The best successful configuration of each single family, best first.
pub fn best_per_family(context: &StepContext) -> Vec<IterationBrief> {
    let higher = context.task.higher_is_better;
    let mut best: BTreeMap<&str, &IterationBrief> = BTreeMap::new();
    for h in &context.history {
        let (Some(score), true) = (h.score, family(&h.family).is_some()) else {
            continue;
        };
        let better = match best.get(h.family.as_str()).and_then(|b| b.score) {
            None => true,
            Some(current) => {
                if higher {
                    score > current
                } else {
                    score < current
                }
            }
        };
        if better {
            best.insert(&h.family, h);
        }
    }
    let mut ranked: Vec<IterationBrief> = best.into_values().cloned().collect();
    ranked.sort_by(|a, b| {
        let (x, y) = (a.score.unwrap_or(f64::NAN), b.score.unwrap_or(f64::NAN));
        if higher { y.total_cmp(&x) } else { x.total_cmp(&y) }.then(a.iteration.cmp(&b.iteration))
    });
    ranked
}

/// Changes one or two parameters of `params` to other values from the family's space.
fn neighbour(family: Family, params: &[Hyperparameter], rng: &mut fastrand::Rng) -> Vec<Hyperparameter> {
    let mut out: Vec<Hyperparameter> = family
        .space
        .iter()
        .map(|(name, default, _)| {
            let value = params.iter().find(|p| p.name == *name).map_or(*default, |p| p.value.as_str());
            Hyperparameter { name: name.to_string(), value: value.to_string() }
        })
        .collect();
    let changes = if family.space.len() > 1 && rng.bool() { 2 } else { 1 };
    for _ in 0..changes {
        let i = rng.usize(..family.space.len());
        let values = family.space[i].2;
        out[i].value = values[rng.usize(..values.len())].to_string();
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::{Profile, TargetProfile};
    use crate::steps::{CurrentSteps, TaskBrief};

    pub(crate) fn context(history: Vec<IterationBrief>) -> StepContext {
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
            profile: Profile {
                rows: 500,
                target: "y".into(),
                target_profile: TargetProfile::Classes { counts: vec![] },
                features: vec![],
            },
            profile_text: String::new(),
            iteration: history.len() as u32 + 1,
            max_iterations: 100,
            history,
            best: None,
            findings: vec![],
            split: None,
            split_open: false,
            current: CurrentSteps::default(),
            failure: None,
            validation: None,
            seed: 0,
        }
    }

    pub(crate) fn done(
        iteration: u32,
        family: &str,
        params: Vec<Hyperparameter>,
        score: f64,
    ) -> IterationBrief {
        IterationBrief {
            iteration,
            status: "succeeded".into(),
            family: family.into(),
            hyperparameters: params,
            representation: None,
            score: Some(score),
            next_ideas: vec![],
        }
    }

    #[test]
    fn explores_every_family_then_ensembles_then_searches_near_the_best() {
        let mut history = Vec::new();
        let order: Vec<&str> = families(false, 500).iter().map(|f| f.name).collect();
        for (i, name) in order.iter().enumerate() {
            let choice = choose(&context(history.clone()));
            assert_eq!(choice.family_name(), *name);
            let score = if *name == "random_forest" { 0.9 } else { 0.8 - i as f64 * 0.01 };
            history.push(done(i as u32 + 1, name, choice.hyperparameters(), score));
        }
        let ensemble = choose(&context(history.clone()));
        let Choice::Ensemble { members } = &ensemble else { panic!("{ensemble:?}") };
        assert_eq!(members[0].0.name, "random_forest");
        assert_eq!(members.len(), 3);
        history.push(done(9, ENSEMBLE, ensemble.hyperparameters(), 0.85));
        let next = choose(&context(history.clone()));
        assert!(matches!(next, Choice::Single { .. }));
        assert_eq!(next, choose(&context(history.clone())), "deterministic");
        let seen: Vec<String> = history.iter().map(|h| render_params(&h.hyperparameters)).collect();
        assert!(!seen.contains(&render_params(&next.hyperparameters())), "a new configuration");
    }

    #[test]
    fn no_configuration_runs_twice_while_others_are_untried() {
        let mut history: Vec<IterationBrief> = Vec::new();
        for i in 0..150u32 {
            let choice = choose(&context(history.clone()));
            assert!(!matches!(choice, Choice::Exhausted { .. }), "exhausted after {i} iterations");
            // k-NN scores best, so its small space is searched first and used up early.
            let score = if choice.family_name() == "knn" { 0.95 } else { 0.8 + f64::from(i % 7) / 100.0 };
            history.push(done(i + 1, choice.family_name(), choice.hyperparameters(), score));
        }
        let mut seen: Vec<(String, String)> =
            history.iter().map(|h| (h.family.clone(), render_params(&h.hyperparameters))).collect();
        let total = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), total, "a configuration ran twice");
    }

    #[test]
    fn lower_is_better_ranks_the_other_way() {
        let mut ctx = context(vec![
            done(1, "ridge", defaults(RIDGE, true), 50.0),
            done(2, "random_forest", defaults(RF, true), 40.0),
        ]);
        ctx.task.higher_is_better = false;
        assert_eq!(best_per_family(&ctx)[0].family, "random_forest");
    }
}
