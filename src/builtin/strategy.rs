//! What the built-in agent tries. It carries out the search's operations:
//!
//! - a **draft** takes the next configuration of a portfolio of settings known to do well on
//!   tabular data (histogram gradient boosting with native categorical support, a stronger
//!   boosting setting with early stopping, tuned forests, a linear model, then kernel, neighbour
//!   and neural models where the data are small enough), skipping what would not fit the time
//!   left;
//! - an **improve** changes one or two settings of its parent, and grows the work (more boosting
//!   iterations, at a smaller learning rate when early stopping ends them; more trees) only
//!   while time allows, cheap first;
//! - a **debug** answers its parent's failure: a memory or size failure changes the encoding or
//!   trains on a sample, a timeout makes the model cheaper, anything else falls back to the most
//!   forgiving configuration.
//!
//! A configuration (model, settings and data preparation, all recorded as hyperparameters) is
//! never tried twice, failed ones included. Everything is deterministic for a seed and a
//! history.

use std::collections::BTreeSet;

use super::portfolio::{
    ALL, Columns, Config, Family, HGB, Shape, config_of, default_prep, defaults, families, family, hp,
    portfolio_for, render_params,
};
use super::timing::{Timing, median};
use crate::search::Operation;
use crate::steps::{CategoricalTreatment, Hyperparameter, IterationBrief, NumericTreatment, StepContext};

/// What the built-in agent takes from the earlier iterations: the configurations they tried, what
/// a unit of cost took on these data, the best of each family. Made once for a history and
/// shared by the steps that ask with it ([`super::BuiltinBackend`] keeps the latest): reading
/// the whole history again for each step made a step's cost grow with the run.
#[derive(Debug)]
pub struct Knowledge {
    /// How many iterations it was made from.
    pub len: usize,
    /// Every configuration tried, failed ones too.
    tried: BTreeSet<(String, String)>,
    /// The same, each at full size: a portfolio entry drafted on a sample is drafted, and its
    /// line grows the sample (see [`improve`]) instead of a second draft at full size.
    drafted: BTreeSet<(String, String)>,
    /// Seconds of a configuration of relative cost 1, from every run so far.
    pub(super) unit: Option<f64>,
    /// The same, from each family's own runs.
    pub(super) family_units: std::collections::BTreeMap<String, f64>,
    /// The best successful configuration of each family, best first.
    pub best_per_family: Vec<IterationBrief>,
    /// What besides the history it was made from (see [`Knowledge::made_from`]).
    runtimes: Vec<(u32, f64)>,
    shape: Shape,
}

impl Knowledge {
    /// What `history` teaches for `context` (whose own history is not read).
    pub fn of(history: &[IterationBrief], context: &StepContext) -> Self {
        let shape = Shape::of(context);
        let runtimes = context.clock.as_ref().map(|c| c.runtimes.clone()).unwrap_or_default();
        let key = |(family, hyperparameters): (&str, &[Hyperparameter])| {
            (family.to_string(), render_params(hyperparameters))
        };
        let briefs = || history.iter().map(|h| (h.family.as_str(), h.hyperparameters.as_slice()));
        // Each earlier run teaches what one unit of cost takes on this data; medians are robust
        // to one odd run.
        let mut all = Vec::new();
        let mut by_family: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        let seconds: std::collections::HashMap<u32, f64> = runtimes.iter().copied().collect();
        for h in history.iter().filter(|h| h.score.is_some()) {
            let Some(&secs) = seconds.get(&h.iteration) else { continue };
            let Some(cost) = config_of(&h.family, &h.hyperparameters).map(|c| c.relative_cost(shape)) else {
                continue;
            };
            if cost > 0.0 && secs > 0.0 {
                all.push(secs / cost);
                by_family.entry(h.family.clone()).or_default().push(secs / cost);
            }
        }
        Self {
            len: history.len(),
            tried: briefs().map(key).collect(),
            drafted: at_full_size(briefs()).collect(),
            unit: median(all),
            family_units: by_family.into_iter().filter_map(|(f, v)| Some((f, median(v)?))).collect(),
            best_per_family: best_per_family(history, context.task.higher_is_better),
            runtimes,
            shape,
        }
    }

    /// Whether an earlier iteration tried `config`.
    pub fn tried(&self, config: &Config) -> bool {
        self.tried.contains(&config.key())
    }

    /// What the context's own history teaches.
    pub fn of_context(context: &StepContext) -> Self {
        Self::of(&context.history, context)
    }

    /// Whether this was made for `context` from a history of `len` iterations (whose identity
    /// the caller checks): the run times and the data's size must be the same too.
    pub fn made_from(&self, len: usize, context: &StepContext) -> bool {
        self.len == len
            && self.shape == Shape::of(context)
            && context.clock.as_ref().map_or(&[][..], |c| c.runtimes.as_slice()) == self.runtimes.as_slice()
    }
}

/// The next smaller learning rate of the family's space, for an early-stopped configuration.
fn slower_learning(config: &Config) -> Option<&'static str> {
    if config.param("early_stopping") != Some("True") {
        return None;
    }
    let (_, _, rates) = config.family.space.iter().find(|(name, _, _)| *name == "learning_rate")?;
    let current: f64 = config.param("learning_rate")?.parse().ok()?;
    let smaller =
        rates.iter().filter_map(|r| Some((r.parse::<f64>().ok()?, *r))).filter(|(v, _)| *v < current);
    smaller.max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, r)| r)
}

/// Boosting's rounds follow its learning rate: a change of the rate scales the parent's rounds
/// inversely (to the nearest value of the grid, on a log scale), as a smaller step needs as
/// many more of them to learn as much. In 3- and 5-minute runs of five tables (credit,
/// diabetes and three public ones), 9 of 10 boosting improves that changed the rate alone
/// scored worse than their parents (on concrete, a rate of 0.02 for 100 rounds: 7.0 RMSE
/// against 4.6).
/// An early-stopped model's rounds are a cap that early stopping reaches or not: it is not
/// lowered with a larger rate, and a candidate that only raises it is refused (`false`): it
/// trains the same model more often than not (7 of 8 such improves scored exactly as their
/// parents, the other worse; where more rounds help, [`improve`] grows them with a smaller
/// rate). A lower cap alone stops short of where the tenth held out would stop, and
/// regularizes: 5 of 15 such improves beat their parents, as 12 of 107 other boosting improves
/// did.
fn rounds_follow_the_rate(parent: &Config, c: &mut Config) -> bool {
    let Some(size) = c.family.size else { return true };
    let number = |config: &Config, name: &str| config.param(name).and_then(|v| v.parse::<f64>().ok());
    let (Some(rate), Some(new_rate), Some(rounds), Some(new_rounds)) =
        (number(parent, "learning_rate"), number(c, "learning_rate"), number(parent, size), number(c, size))
    else {
        return true;
    };
    let stopping = c.param("early_stopping") == Some("True");
    if new_rate == rate {
        return !(stopping && new_rounds > rounds);
    }
    let wanted = rounds * rate / new_rate;
    if stopping && wanted < rounds {
        c.set(size, parent.param(size).unwrap_or_default());
        return true;
    }
    let grid = c.family.space.iter().find(|(name, _, _)| *name == size).map_or(&[][..], |(_, _, v)| *v);
    let distance = |v: &&str| v.parse::<f64>().map_or(f64::INFINITY, |v| (v / wanted).ln().abs());
    if let Some(nearest) = grid.iter().min_by(|a, b| distance(a).total_cmp(&distance(b))) {
        c.set(size, nearest);
    }
    true
}

/// The family and hyperparameters planned for the iterations in flight.
fn planned_in_flight(context: &StepContext) -> impl Iterator<Item = (&str, &[Hyperparameter])> {
    let planned = context.pending.iter().filter_map(|p| p.planned.as_ref());
    planned.map(|p| (p.family.as_str(), p.hyperparameters.as_slice()))
}

/// The keys of configurations at full size (see [`Knowledge::drafted`]).
fn at_full_size<'a>(
    attempts: impl Iterator<Item = (&'a str, &'a [Hyperparameter])>,
) -> impl Iterator<Item = (String, String)> {
    attempts.filter_map(|(family, hyperparameters)| config_of(family, hyperparameters)).map(|mut c| {
        c.prep.max_rows = None;
        c.key()
    })
}

/// What iteration `context` tries, for its operation and parent.
pub fn choose(context: &StepContext, known: &Knowledge) -> Config {
    let regression = context.task.kind == "regression";
    let rows = context.profile.rows;
    let in_flight: BTreeSet<(String, String)> =
        planned_in_flight(context).map(|(f, h)| (f.to_string(), render_params(h))).collect();
    let fresh = |c: &Config| {
        let key = c.key();
        !known.tried.contains(&key) && !in_flight.contains(&key)
    };
    let mut rng = draws(context, 0);
    let parent = context.parent.as_ref().and_then(|p| config_of(&p.family, &p.hyperparameters));
    let timing = Timing::of(context, known);
    let columns = Columns::of(context);
    let choice = match (context.operation, &parent) {
        (Operation::Debug, Some(parent)) => {
            let failure = context.parent.as_ref().and_then(|p| p.failure.as_ref());
            let text = failure.map(|f| format!("{}\n{}", f.summary, f.stderr_tail)).unwrap_or_default();
            repair(parent, &text, rows, regression, &fresh)
        }
        (Operation::Improve, Some(parent)) => {
            let base = context.parent.as_ref().map_or(0, |p| p.iteration);
            improve(parent, &timing, columns, &mut draws(context, base), &fresh)
        }
        _ => None,
    };
    if let Some(config) = choice {
        return config;
    }
    // A draft (or an operation whose parent the built-in agent cannot build on): the next
    // portfolio entry that fits the time left, else any untried point. Drafts running alongside
    // took the entries before it.
    let drafted: BTreeSet<(String, String)> = at_full_size(planned_in_flight(context)).collect();
    let drafts: Vec<Config> = portfolio_for(regression, rows, columns)
        .into_iter()
        .filter(|c| !known.drafted.contains(&c.key()) && !drafted.contains(&c.key()))
        .map(|c| timing.sized(c))
        .collect();
    // Drafts in flight whose configuration is not known took the first entries.
    let taken =
        context.pending.iter().filter(|p| p.operation == Operation::Draft && p.planned.is_none()).count();
    let cost = |c: &Config| c.relative_cost(timing.shape);
    let mut fitting: Vec<&Config> = drafts.iter().filter(|c| timing.fits(c)).collect();
    if timing.left.is_some() && timing.unit.is_none() {
        // Under a budget with nothing run yet: what comes first must be quick enough to learn
        // these data's pace from, which boosting on many classes (a tree per class a round) is
        // not.
        fitting.sort_by_key(|c| cost(c) > FIRST_COST);
    }
    if let Some(c) = fitting.get(taken) {
        return (*c).clone();
    }
    if let (Operation::Improve, Some(parent)) = (context.operation, &parent)
        && let Some(c) = improve_another(parent, context, known, &timing, columns, &fresh)
    {
        return c;
    }
    // No entry left fits half the time left: the cheapest entry if it is predicted to end in
    // time (after those the drafts in flight would have taken by this rule); else an untried
    // point of the spaces that fits (an entry the end of the budget cuts teaches nothing), else
    // the cheapest there is, entry or point.
    let predicted = |c: &Config| timing.seconds(c).unwrap_or_else(|| cost(c));
    let mut cheapest: Vec<&Config> = drafts.iter().collect();
    cheapest.sort_by(|a, b| predicted(a).total_cmp(&predicted(b)));
    let entry = cheapest.get(taken).or(cheapest.first()).map(|c| (*c).clone());
    if let Some(entry) = entry.as_ref().filter(|c| timing.finishes(c)) {
        return entry.clone();
    }
    let names = families(regression, rows);
    let pool: Vec<Family> = ALL.into_iter().filter(|f| names.contains(&f.name)).collect();
    let mut cheapest_point: Option<Config> = None;
    for _ in 0..200 {
        let family = pool[rng.usize(..pool.len())];
        let params: Vec<Hyperparameter> = family
            .space
            .iter()
            .map(|(name, _, values)| hp(name, values[rng.usize(..values.len())]))
            .collect();
        let c = Config::new(
            family,
            params,
            default_prep(family),
            format!("an untried point of {}'s space", family.name),
        );
        if !fresh(&c) {
            continue;
        }
        if timing.fits(&c) {
            return c;
        }
        if cheapest_point.as_ref().is_none_or(|best| predicted(&c) < predicted(best)) {
            cheapest_point = Some(c);
        }
    }
    match (entry, cheapest_point) {
        (Some(entry), Some(point)) if predicted(&entry) <= predicted(&point) => entry,
        (_, Some(mut point)) => {
            point.why = format!(
                "nothing untried fits the time left: the cheapest untried point of {}'s space",
                point.family.name
            );
            point
        }
        (Some(entry), None) => entry,
        (None, None) => first_untried(&pool, &fresh),
    }
}

/// When no untried neighbour of `parent` fits (a linear model's few settings, on a small table
/// where it wins, run out after a few dozen iterations), an improve of the best configuration
/// of another family, best family first: what the search builds on then is the best of what
/// else did well, not an untried point of whichever family a draw picks (in 5-minute runs on
/// three small tables such points took a third to two thirds of the iterations' time, on
/// families that had done worst as often as not, their portfolio settings such as a network's
/// early stopping lost: one ran 66 s where its family's drafts took 3 s).
///
/// The plan names that configuration's iteration as the base ([`Config::base`]), so the runner
/// records the improve as its child and the later steps are asked with it as the parent; its
/// draws are the same either way ([`draws`]).
fn improve_another(
    parent: &Config,
    context: &StepContext,
    known: &Knowledge,
    timing: &Timing,
    columns: Columns,
    fresh: &dyn Fn(&Config) -> bool,
) -> Option<Config> {
    known.best_per_family.iter().find_map(|best| {
        let other = config_of(&best.family, &best.hyperparameters).filter(|c| c.key() != parent.key())?;
        let mut c = improve(&other, timing, columns, &mut draws(context, best.iteration), fresh)?;
        c.why = format!(
            "no untried neighbour of its {} settings fits the time left, so build on the best {} (iteration {}): {}",
            parent.family.name, other.family.name, best.iteration, c.why
        );
        c.base = Some(best.iteration);
        Some(c)
    })
}

/// The random draws of iteration `context`'s improve of iteration `base` (0: its other draws).
/// Seeded by both, so an improve of another family's model chosen at the plan draws the same
/// settings in the steps that follow, where that model is the parent.
fn draws(context: &StepContext, base: u32) -> fastrand::Rng {
    fastrand::Rng::with_seed(
        context.seed
            ^ u64::from(context.iteration).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(base).wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
    )
}

/// The first untried point of the families' spaces, cheapest family first, in the order of
/// each space's values: random draws missed every untried point only when nearly all are
/// taken, and a configuration is never tried twice.
fn first_untried(pool: &[Family], fresh: &dyn Fn(&Config) -> bool) -> Config {
    let mut families = pool.to_vec();
    families.sort_by(|a, b| a.cost.total_cmp(&b.cost));
    for family in families {
        let sizes: Vec<usize> = family.space.iter().map(|(_, _, values)| values.len()).collect();
        let mut digits = vec![0; sizes.len()];
        loop {
            let params =
                family.space.iter().zip(&digits).map(|((name, _, values), &i)| hp(name, values[i])).collect();
            let c = Config::new(
                family,
                params,
                default_prep(family),
                format!("an untried point of {}'s space", family.name),
            );
            if fresh(&c) {
                return c;
            }
            // The next combination, the last setting changing fastest.
            let Some(d) = (0..digits.len()).rev().find(|&d| digits[d] + 1 < sizes[d]) else { break };
            digits[d] += 1;
            digits[d + 1..].iter_mut().for_each(|i| *i = 0);
        }
    }
    // Every point of every space ran (tens of thousands of iterations): the defaults of the
    // first family on ever larger samples, one of which the finite history has not seen.
    let family = pool[0];
    let mut c = Config::new(
        family,
        defaults(family, false),
        default_prep(family),
        "every point of the spaces was tried",
    );
    for rows in 1.. {
        c.prep.max_rows = Some(rows);
        if fresh(&c) {
            break;
        }
    }
    c
}

/// The most a first draft may cost, relative to boosting's defaults on two classes, while no
/// run has shown how long a unit takes: boosting's defaults up to three classes.
const FIRST_COST: f64 = 3.0;

/// One or two settings of `parent` changed; work grows only while time allows.
fn improve(
    parent: &Config,
    timing: &Timing,
    columns: Columns,
    rng: &mut fastrand::Rng,
    fresh: &dyn Fn(&Config) -> bool,
) -> Option<Config> {
    let family = parent.family;
    // A model trained on a sample gains most from more of the rows: four times as many (all of
    // them where that is most), else twice as many, as the time left allows.
    if let Some(sample) = parent.prep.max_rows.filter(|&m| m < timing.shape.rows) {
        for grown in [sample * 4, sample * 2] {
            let mut c = parent.clone();
            c.prep.max_rows = (grown < timing.shape.rows).then_some(grown);
            c.why = match c.prep.max_rows {
                Some(n) => format!("train {} on more of the rows: a sample of {n}", family.name),
                None => format!("train {} on all the rows", family.name),
            };
            if fresh(&c) && timing.fits(&c) {
                return Some(c);
            }
        }
    }
    // A setting at an end of its grid that the data may want past it: the next value there.
    for (name, value) in super::ranges::past_the_ends(parent, timing.shape.rows) {
        let mut c = parent.clone();
        c.why = format!(
            "take {}'s {name} past the end of the range tried ({} to {value})",
            family.name,
            parent.param(name).unwrap_or_default()
        );
        c.set(name, &value);
        if fresh(&c) && timing.fits(&c) {
            return Some(c);
        }
    }
    for attempt in 0..60 {
        let mut c = parent.clone();
        c.why = format!("improve iteration's {} by changing its settings", family.name);
        // Grow the parent's work now and then when there is room (cheap first, as FLAML does).
        if let Some(size) = family.size
            && attempt < 5
            && timing.roomy(parent)
            && rng.f64() < 0.35
            && let Some(values) = family.space.iter().find(|(n, _, _)| *n == size).map(|(_, _, v)| *v)
        {
            let current = c.param(size).unwrap_or_default().to_string();
            if let Some(i) = values.iter().position(|v| *v == current)
                && i + 1 < values.len()
            {
                c.set(size, values[i + 1]);
                c.why = format!("give {} more {} (there is time)", family.name, size);
                // Early stopping often ends boosting before its last round, and then more
                // rounds alone train the same model (20 of 38 such improves in the 2- and
                // 5-minute runs measured; 7 of 63 iterations of a credit-scoring run). A
                // smaller step with more rounds trains another model either way.
                if let Some(slower) = slower_learning(&c) {
                    c.set("learning_rate", slower);
                    c.why = format!("boost more rounds at a smaller learning rate ({slower}; there is time)");
                }
                if fresh(&c) && timing.fits(&c) {
                    return Some(c);
                }
                continue;
            }
        }
        let changes = if family.space.len() > 1 && rng.bool() { 2 } else { 1 };
        for _ in 0..changes {
            let (name, _, values) = family.space[rng.usize(..family.space.len())];
            c.set(name, values[rng.usize(..values.len())]);
        }
        if !rounds_follow_the_rate(parent, &mut c) {
            continue;
        }
        // Now and then the data preparation changes instead: a linear model's numbers as they
        // are (standardized) or as splines, any model's categories.
        if attempt % 7 == 3 && columns.numeric && matches!(family.name, "logistic_regression" | "ridge") {
            c.prep.numeric = match c.prep.numeric {
                NumericTreatment::Spline => NumericTreatment::Standardize,
                _ => NumericTreatment::Spline,
            };
        }
        if attempt % 7 == 1 && columns.many_levels && !family.scaled {
            // Codes in the order of the values are something only a tree can split on.
            c.prep.many_as_codes = !c.prep.many_as_codes;
        }
        if attempt % 7 == 5 && columns.log_target {
            c.prep.log_target = !c.prep.log_target;
        }
        if attempt % 7 == 6 && columns.categorical {
            c.prep.categorical = match (family.name, c.prep.categorical) {
                ("hist_gradient_boosting", CategoricalTreatment::Native) => CategoricalTreatment::Ordinal,
                ("hist_gradient_boosting", _) => CategoricalTreatment::Native,
                (_, CategoricalTreatment::OneHot) => CategoricalTreatment::Ordinal,
                _ => CategoricalTreatment::OneHot,
            };
        }
        if fresh(&c) && timing.fits(&c) {
            return Some(c);
        }
    }
    None
}

/// Whether a failure looks like running out of memory or address space (e.g. a dense one-hot
/// of a column with many categories exceeding the 4 GiB of wasm32).
fn memory_failure(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "memoryerror",
        "memory cap",
        "array is too big",
        "unable to allocate",
        "cannot allocate",
        "out of memory",
        "bad_alloc",
    ]
    .iter()
    .any(|m| t.contains(m))
}

fn time_failure(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("wall-clock") || t.contains("deadline") || t.contains("cpu time")
}

/// A configuration that answers `parent`'s failure, not tried before.
pub fn repair(
    parent: &Config,
    failure: &str,
    rows: usize,
    regression: bool,
    fresh: &dyn Fn(&Config) -> bool,
) -> Option<Config> {
    let mut options = Vec::new();
    if memory_failure(failure) || time_failure(failure) {
        let mut c = parent.clone();
        if memory_failure(failure) && c.prep.categorical == CategoricalTreatment::OneHot {
            // One column per category is what usually blows up: encode categories as codes.
            c.prep.categorical = CategoricalTreatment::Ordinal;
            c.why = "the one-hot encoding ran out of memory: encode categories as codes".into();
            options.push(c.clone());
        }
        if time_failure(failure)
            && let Some(size) = parent.family.size
            && let Some(v) = parent.param(size).and_then(|v| v.parse::<u64>().ok())
        {
            let mut cheaper = parent.clone();
            cheaper.set(size, &(v / 2).max(25).to_string());
            cheaper.why = format!("the run hit its time limit: half the {size}");
            options.push(cheaper);
        }
        // Then fewer rows: half as many as before, each time it fails again.
        let mut sample = rows.min(parent.prep.max_rows.unwrap_or(rows)) / 2;
        while sample >= 2_000 {
            let mut smaller = c.clone();
            smaller.prep.max_rows = Some(sample);
            smaller.why = format!(
                "the run ran out of {}: train on a sample of {sample} rows",
                if memory_failure(failure) { "memory" } else { "time" }
            );
            options.push(smaller);
            sample /= 2;
        }
    }
    // Anything else: the most forgiving configuration, then its variants.
    let mut safe = Config::new(
        HGB,
        defaults(HGB, regression),
        default_prep(HGB),
        "fall back to gradient boosting with defaults, which handles missing values and categories itself",
    );
    options.push(safe.clone());
    safe.prep.categorical = CategoricalTreatment::Ordinal;
    safe.why = "fall back to gradient boosting with categories as codes".into();
    options.push(safe.clone());
    safe.prep.max_rows = Some((rows / 2).max(2_000));
    options.push(safe);
    options.into_iter().find(|c| fresh(c))
}

/// The best successful configuration of each family, best first.
fn best_per_family(history: &[IterationBrief], higher: bool) -> Vec<IterationBrief> {
    let mut best: std::collections::BTreeMap<&str, &IterationBrief> = std::collections::BTreeMap::new();
    for h in history {
        let (Some(score), true) = (h.score, family(&h.family).is_some()) else { continue };
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

#[cfg(test)]
pub(crate) mod tests {
    use super::super::portfolio::*;
    use super::*;
    use crate::data::{ColumnKind, TargetProfile};

    /// The choice with what the context's own history teaches.
    fn choose(context: &StepContext) -> Config {
        super::choose(context, &Knowledge::of_context(context))
    }

    /// Every configuration tried, or planned for an iteration in flight.
    fn tried(context: &StepContext) -> BTreeSet<(String, String)> {
        let planned = planned_in_flight(context).map(|(f, h)| (f.to_string(), render_params(h)));
        Knowledge::of_context(context).tried.into_iter().chain(planned).collect()
    }

    use crate::steps::{Clock, Failure, ParentBrief};

    pub(crate) fn context(history: Vec<IterationBrief>) -> StepContext {
        let mut ctx = crate::steps::sample_context();
        ctx.iteration = history.len() as u32 + 1;
        ctx.history = history;
        ctx
    }

    pub(crate) fn done(iteration: u32, config: &Config, score: Option<f64>) -> IterationBrief {
        IterationBrief {
            iteration,
            parent: None,
            operation: Operation::Draft,
            status: if score.is_some() { "succeeded".into() } else { "failed at train: exit 1".into() },
            family: config.family.name.into(),
            hyperparameters: config.hyperparameters(),
            representation: None,
            score,
            next_ideas: vec![],
        }
    }

    pub(crate) fn parent_of(brief: &IterationBrief, failure: Option<&str>) -> ParentBrief {
        ParentBrief {
            iteration: brief.iteration,
            operation: brief.operation,
            status: brief.status.clone(),
            family: brief.family.clone(),
            hyperparameters: brief.hyperparameters.clone(),
            representation: None,
            architecture: None,
            score: brief.score,
            train: None,
            inference_script: String::new(),
            observations: vec![],
            next_ideas: vec![],
            failure: failure.map(|text| Failure {
                step: "train".into(),
                script: String::new(),
                summary: "exit 1".into(),
                stderr_tail: text.into(),
                stdout_tail: String::new(),
            }),
        }
    }

    /// The shape of data of two classes.
    fn two_classes(rows: usize, features: usize) -> Shape {
        Shape { rows, features, classes: 2 }
    }

    #[test]
    fn with_many_classes_the_first_draft_is_not_boosting() {
        let with_classes = |k: usize| {
            let mut ctx = context(vec![]);
            let counts = (0..k).map(|i| (format!("c{i}"), 10)).collect();
            ctx.profile.target_profile = crate::data::TargetProfile::Classes { counts };
            ctx.clock = Some(Clock { time_left_seconds: Some(300.0), runtimes: vec![] });
            ctx
        };
        assert_eq!(choose(&with_classes(3)).family.name, "hist_gradient_boosting");
        let mut unhurried = with_classes(100);
        unhurried.clock = None;
        assert_eq!(choose(&unhurried).family.name, "hist_gradient_boosting");
        for k in [10, 100] {
            let first = choose(&with_classes(k));
            assert!(first.relative_cost(Shape::of(&with_classes(k))) <= FIRST_COST, "{k}: {first:?}");
        }
        // A tree a class a round.
        let boost = &portfolio(false, 1000)[0];
        let ten = Shape { classes: 10, ..two_classes(1000, 5) };
        assert!((boost.relative_cost(ten) - 5.0 * boost.relative_cost(two_classes(1000, 5))).abs() < 1e-9);
    }

    #[test]
    fn drafts_walk_the_portfolio_and_never_repeat() {
        let mut history = Vec::new();
        // (The sample profile has no columns: the drafts are those that differ without any.)
        let portfolio = portfolio_for(false, 500, Columns::of(&context(vec![])));
        for (i, expected) in portfolio.iter().enumerate() {
            let c = choose(&context(history.clone()));
            assert_eq!(&c, expected, "draft {i}");
            history.push(done(i as u32 + 1, &c, Some(0.8)));
        }
        let next = choose(&context(history.clone()));
        assert!(
            !tried(&context(history.clone())).contains(&next.key()),
            "a new configuration after the portfolio"
        );
    }

    #[test]
    fn an_early_stopped_booster_grows_by_a_smaller_learning_rate() {
        let boosting = |c: &Config| c.family == HGB && c.param("early_stopping") == Some("True");
        for stopping in portfolio(false, 500).into_iter().filter(boosting) {
            let history = vec![done(1, &stopping, Some(0.85))];
            let rate = |c: &Config| c.param("learning_rate").unwrap().parse::<f64>().unwrap();
            let rounds = |c: &Config| c.param("max_iter").unwrap().parse::<f64>().unwrap();
            let mut grown = 0;
            for i in 0..100u32 {
                let mut ctx = context(history.clone());
                ctx.iteration = 2 + i;
                ctx.operation = Operation::Improve;
                ctx.parent = Some(parent_of(&history[0], None));
                let c = choose(&ctx);
                if c.why.starts_with("boost more rounds") {
                    grown += 1;
                    assert!(rounds(&c) > rounds(&stopping) && rate(&c) < rate(&stopping), "{c:?}");
                }
            }
            assert!(grown > 0, "the parent's work grows now and then");
        }
        assert_eq!(slower_learning(&portfolio(false, 500)[0]), None, "without early stopping");
    }

    #[test]
    fn boostings_rounds_follow_a_change_of_its_learning_rate() {
        let rate = |c: &Config| c.param("learning_rate").unwrap().parse::<f64>().unwrap();
        let rounds = |c: &Config| c.param("max_iter").unwrap().parse::<f64>().unwrap();
        let boosting = portfolio(true, 800).into_iter().filter(|c| c.family == HGB);
        let mut scaled = 0;
        for base in boosting {
            for c in improves_of(&context(vec![]), &base) {
                // The rule is the candidate's: whether it stops early (which an improve changes
                // now and then).
                let stopping = c.param("early_stopping") == Some("True");
                if rate(&c) == rate(&base) {
                    assert!(!stopping || rounds(&c) <= rounds(&base), "a cap raised alone: {c:?}");
                    continue;
                }
                if stopping && rate(&c) > rate(&base) {
                    assert_eq!(rounds(&c), rounds(&base), "a cap kept for a larger rate: {c:?}");
                    continue;
                }
                // As much learning as the parent's, to within half a step of the grid (whose
                // values are twice apart), unless at an end of it.
                scaled += 1;
                let learning = rate(&c) * rounds(&c) / (rate(&base) * rounds(&base));
                let at_an_end = [100.0, 1600.0].contains(&rounds(&c));
                assert!((0.7..=1.42).contains(&learning) || at_an_end, "{c:?} after {base:?}");
            }
        }
        assert!(scaled > 0, "some improves change the rate");
        // Another family's settings are left as they are.
        let forest = portfolio(true, 800).into_iter().find(|c| c.family.name == "random_forest").unwrap();
        let mut c = forest.clone();
        c.set("n_estimators", "800");
        assert!(rounds_follow_the_rate(&forest, &mut c));
        assert_eq!(c.param("n_estimators"), Some("800"));
    }

    #[test]
    fn whether_boosting_stops_early_is_a_setting_improves_change() {
        let stops = |c: &Config| c.param("early_stopping") == Some("True");
        let boosting: Vec<Config> = portfolio(true, 800).into_iter().filter(|c| c.family == HGB).collect();
        let (stopping, running): (Vec<&Config>, Vec<&Config>) = boosting.iter().partition(|c| stops(c));
        assert!(!stopping.is_empty() && !running.is_empty());
        for (bases, now) in [(stopping, true), (running, false)] {
            for base in bases {
                let improves = n_improves_of(&context(vec![]), base, 40);
                let changed = improves.iter().filter(|c| stops(c) != now).count();
                // One or two of seven settings drawn afresh, the same value half the time.
                assert!(
                    (2..=12).contains(&changed),
                    "{changed} of 40 improves of {base:?} changed whether it stops early"
                );
            }
        }
    }

    #[test]
    fn improve_changes_the_parent_and_never_repeats_a_configuration() {
        let base = &portfolio(false, 500)[0];
        let mut history = vec![done(1, base, Some(0.9))];
        for i in 2..80u32 {
            let mut ctx = context(history.clone());
            ctx.operation = Operation::Improve;
            ctx.parent = Some(parent_of(&history[0], None));
            let c = choose(&ctx);
            assert_eq!(
                c.family.name, "hist_gradient_boosting",
                "improves stay in the parent's family while untried points remain"
            );
            history.push(done(i, &c, Some(0.85)));
        }
        let mut keys: Vec<String> = history.iter().map(|h| render_params(&h.hyperparameters)).collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total, "a configuration ran twice");
    }

    #[test]
    fn an_improve_takes_a_setting_at_the_end_of_its_range_past_it() {
        let entries = portfolio(false, 500);
        let mut linear = entries.iter().find(|c| c.family.name == "logistic_regression").unwrap().clone();
        linear.set("C", "100.0");
        let best = done(1, &linear, Some(0.95));
        let mut ctx = context(vec![best.clone()]);
        ctx.operation = Operation::Improve;
        ctx.parent = Some(parent_of(&best, None));
        let c = choose(&ctx);
        assert_eq!((c.family.name, c.param("C")), ("logistic_regression", Some("330.0")), "{c:?}");
        assert!(c.why.contains("past the end of the range tried (100.0 to 330.0)"), "{}", c.why);
        // Inside the range, the settings change as before.
        linear.set("C", "1.0");
        let inside = done(1, &linear, Some(0.95));
        ctx.history = vec![inside.clone()];
        ctx.parent = Some(parent_of(&inside, None));
        assert!(!choose(&ctx).why.contains("past the end"));
    }

    #[test]
    fn an_exhausted_parent_hands_its_improves_to_the_best_of_another_family() {
        let entries = portfolio(false, 500);
        let entry = |name: &str| entries.iter().find(|c| c.family.name == name).unwrap();
        let linear = done(1, entry("logistic_regression"), Some(0.95));
        // Every entry of the portfolio drafted (those not yet drafted come first).
        let mut history = vec![
            linear.clone(),
            done(2, entry("random_forest"), Some(0.80)),
            done(3, entry("mlp"), Some(0.90)),
        ];
        for c in &entries {
            if !history.iter().any(|h| h.hyperparameters == c.hyperparameters() && h.family == c.family.name)
            {
                history.push(done(history.len() as u32 + 1, c, Some(0.6)));
            }
        }
        let first = history.len() as u32 + 1;
        let mut elsewhere = Vec::new();
        for i in first..first + 65 {
            let mut ctx = context(history.clone());
            ctx.operation = Operation::Improve;
            ctx.parent = Some(parent_of(&linear, None));
            let c = choose(&ctx);
            if c.family.name != "logistic_regression" {
                // The best other family's line with its portfolio settings kept, then (once its
                // neighbours are hard to find) the next best's; never a point of whichever
                // family a draw picks, such as the worst.
                let from = match c.family.name {
                    "mlp" => 3,
                    "random_forest" => 2,
                    _ => panic!("iteration {i} left the best lines: {c:?}"),
                };
                assert!(c.why.contains(&format!("(iteration {from})")), "{}", c.why);
                let plan = super::super::plan(&ctx, &Knowledge::of_context(&ctx), &c);
                assert_eq!(plan.builds_on, Some(from), "the plan names the iteration built on");
                // The steps after the plan, asked with that iteration as the parent, train
                // the same configuration.
                let base = history.iter().find(|h| h.iteration == from).unwrap();
                ctx.parent = Some(parent_of(base, None));
                let after = choose(&ctx);
                assert_eq!((after.key(), after.base), (c.key(), None), "iteration {i}");
                if from == 3 {
                    assert_eq!(c.param("early_stopping"), Some("True"), "iteration {i}: {c:?}");
                }
                elsewhere.push(c.family.name);
            }
            history.push(done(i, &c, Some(0.5)));
        }
        assert!(
            elsewhere.len() >= 20,
            "the linear model's settings ran out after {} improves",
            65 - elsewhere.len()
        );
        assert!(elsewhere[..15].iter().all(|f| *f == "mlp"), "{elsewhere:?}");
    }

    #[test]
    fn candidates_in_flight_together_never_repeat_a_configuration() {
        let planned = |i: u32, op: Operation, c: &Config| crate::steps::PendingBrief {
            iteration: i,
            operation: op,
            parent: None,
            planned: Some(crate::steps::Planned {
                family: c.family.name.into(),
                hyperparameters: c.hyperparameters(),
            }),
        };
        // Drafts: whatever entry one in flight took (here the third, as a clock that skipped
        // the second would make it), the next draft takes another.
        let portfolio = portfolio(false, 500);
        let mut ctx = context(vec![done(1, &portfolio[0], Some(0.8))]);
        ctx.iteration = 3;
        ctx.pending = vec![planned(2, Operation::Draft, &portfolio[2])];
        let next = choose(&ctx);
        assert_ne!(next.key(), portfolio[2].key(), "the draft in flight's configuration again");
        assert_eq!(next, portfolio[1]);
        // Improves of one parent, all in flight at once: every one differs.
        let base = done(1, &portfolio[0], Some(0.9));
        let mut pending = Vec::new();
        for i in 2..40u32 {
            let mut ctx = context(vec![base.clone()]);
            ctx.iteration = i;
            ctx.operation = Operation::Improve;
            ctx.parent = Some(parent_of(&base, None));
            ctx.pending = pending.clone();
            let c = choose(&ctx);
            assert!(!tried(&ctx).contains(&c.key()), "iteration {i} repeats one in flight: {c:?}");
            pending.push(planned(i, Operation::Improve, &c));
        }
    }

    #[test]
    fn a_memory_failure_changes_the_encoding_then_samples_and_never_retries_the_same() {
        let mut linear =
            portfolio(false, 327_000).into_iter().find(|c| c.family.name == "logistic_regression").unwrap();
        linear.prep.categorical = CategoricalTreatment::OneHot;
        let failed = done(1, &linear, None);
        let mut history = vec![failed.clone()];
        let mut seen = vec![render_params(&failed.hyperparameters)];
        let mut ctx = context(history.clone());
        ctx.profile.rows = 327_000;
        ctx.operation = Operation::Debug;
        ctx.parent = Some(parent_of(&failed, Some("numpy.core._exceptions.MemoryError: array is too big")));
        let first = choose(&ctx);
        assert_eq!(first.prep.categorical, CategoricalTreatment::Ordinal, "{first:?}");
        // The repair fails the same way: the next repair trains on a sample, and so on.
        for i in 2..6u32 {
            let brief = done(i, &choose(&ctx), None);
            assert!(!seen.contains(&render_params(&brief.hyperparameters)), "tried twice: {brief:?}");
            seen.push(render_params(&brief.hyperparameters));
            history.push(brief.clone());
            ctx.history = history.clone();
            ctx.parent = Some(parent_of(&brief, Some("MemoryError: array is too big")));
        }
        assert!(seen.iter().any(|s| s.contains("prep.max_rows=")), "{seen:?}");
    }

    #[test]
    fn drafts_that_would_not_fit_the_time_left_are_skipped() {
        let portfolio = portfolio(false, 500);
        let first = done(1, &portfolio[0], Some(0.9));
        let mut ctx = context(vec![first]);
        // The first boosting draft took 10 s and 12 s are left: only what is predicted to take
        // at most 6 s may be drafted (the linear model), not the regularized boosting next.
        ctx.clock = Some(Clock { time_left_seconds: Some(12.0), runtimes: vec![(1, 10.0)] });
        let c = choose(&ctx);
        let rows = ctx.profile.rows;
        let features = ctx.profile.features.len();
        assert!(c.relative_cost(two_classes(rows, features)) * 10.0 <= 6.0, "{c:?}");
    }

    #[test]
    fn at_the_end_of_the_budget_the_cheapest_untried_configuration_never_a_repeat() {
        let portfolio = portfolio(false, 500);
        let history: Vec<IterationBrief> =
            portfolio.iter().enumerate().map(|(i, c)| done(i as u32 + 1, c, Some(0.8))).collect();
        let mut ctx = context(history);
        // Each run took a minute a unit of its cost; one second is left: nothing fits.
        let shape = Shape::of(&ctx);
        let runtimes = portfolio
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32 + 1, 60.0 * c.relative_cost(shape)))
            .collect();
        ctx.clock = Some(Clock { time_left_seconds: Some(1.0), runtimes });
        let timing = Timing::of(&ctx, &Knowledge::of_context(&ctx));
        let c = choose(&ctx);
        assert!(!tried(&ctx).contains(&c.key()), "a configuration already run: {c:?}");
        assert!(!timing.fits(&c));
        // The cheapest family there is (each ran at the same pace), not boosting's defaults
        // again.
        let (rows, features) = (ctx.profile.rows, ctx.profile.features.len());
        let cheapest_family = families(false, 500)
            .iter()
            .filter_map(|n| family(n))
            .map(|f| f.cost)
            .fold(f64::INFINITY, f64::min);
        assert!(c.relative_cost(two_classes(rows, features)) <= cheapest_family * 1.0001, "{c:?}");
    }

    #[test]
    fn the_first_untried_point_is_found_when_only_one_is_left() {
        let target = Config::new(RIDGE, vec![hp("alpha", "30.0")], default_prep(RIDGE), "");
        let only = target.key();
        let c = first_untried(&[HGB, RIDGE], &|c: &Config| c.key() == only);
        assert_eq!(c.key(), only);
        // Nothing of the spaces left: a sample size not seen.
        let c = first_untried(&[RIDGE], &|c: &Config| c.prep.max_rows == Some(3));
        assert_eq!(c.prep.max_rows, Some(3));
    }

    #[test]
    fn categories_of_many_levels_are_drafted_as_codes_too() {
        let with_levels = |unique: usize| {
            let mut ctx = context(vec![]);
            ctx.profile.features = vec![crate::data::ColumnProfile {
                name: "tail".into(),
                dtype: "str".into(),
                kind: ColumnKind::Categorical,
                missing: 0,
                unique,
                min: None,
                max: None,
                mean: None,
                top: vec![],
                written_as: None,
            }];
            ctx
        };
        let as_codes = |ctx: &StepContext| {
            portfolio_for(false, 500, Columns::of(ctx))
                .into_iter()
                .filter(|c| c.prep.many_as_codes)
                .collect::<Vec<_>>()
        };
        assert!(as_codes(&with_levels(MANY_LEVELS)).is_empty());
        let many = with_levels(MANY_LEVELS + 1);
        let drafts = as_codes(&many);
        assert_eq!(drafts.len(), 1, "{drafts:?}");
        assert_eq!(drafts[0].family.name, "hist_gradient_boosting");
        // After the forests, boosting's defaults otherwise.
        let all = portfolio_for(false, 500, Columns::of(&many));
        let at = all.iter().position(|c| c.prep.many_as_codes).unwrap();
        assert_eq!(all[at - 1].family.name, "extra_trees", "{all:?}");
        assert!(all[..at].iter().any(|c| c.family.name == "random_forest"), "{all:?}");
        assert_eq!(drafts[0].model_params(), all[0].model_params());
        // On record, read back, and in the script.
        let recorded = drafts[0].hyperparameters();
        assert!(render_params(&recorded).contains("prep.many='codes'"), "{recorded:?}");
        assert!(config_of("hist_gradient_boosting", &recorded).unwrap().prep.many_as_codes);
        let script = super::super::scripts::train_script(&many, &drafts[0]);
        assert!(script.contains("MANY_CODES = True"));
        assert!(super::super::scripts::train_script(&many, &all[0]).contains("MANY_CODES = False"));
        // Improves of a tree switch between the two now and then, only where such columns
        // are; a linear model's never (codes in the order of the values are for trees to split).
        let improved = |ctx: &StepContext, base: &Config| {
            improves_of(ctx, base).iter().filter(|c| c.prep.many_as_codes).count()
        };
        assert!(improved(&many, &all[0]) > 0);
        assert_eq!(improved(&with_levels(MANY_LEVELS), &all[0]), 0);
        assert_eq!(all[1].family.name, "logistic_regression");
        assert_eq!(improved(&many, &all[1]), 0);
    }

    #[test]
    fn a_skewed_never_negative_target_is_also_modelled_on_its_log() {
        let regression = |min: f64, mean: f64, median: f64| {
            let mut ctx = context(vec![]);
            ctx.task.kind = "regression".into();
            ctx.task.metric = "rmse".into();
            ctx.task.higher_is_better = false;
            ctx.profile.target_profile = TargetProfile::Range { min, max: 1000.0, mean, median, std: 100.0 };
            ctx
        };
        let logged = |ctx: &StepContext| {
            portfolio_for(true, 500, Columns::of(ctx))
                .into_iter()
                .filter(|c| c.prep.log_target)
                .collect::<Vec<_>>()
        };
        // Prices, wages, counts: never negative, the mean well right of the median.
        let skewed = regression(0.0, 120.0, 90.0);
        let drafts = logged(&skewed);
        assert_eq!(drafts.len(), 1, "{drafts:?}");
        assert_eq!(drafts[0].family.name, "hist_gradient_boosting");
        // Symmetric, negative values, or classes: never.
        assert!(logged(&regression(0.0, 100.0, 99.0)).is_empty());
        assert!(logged(&regression(-5.0, 120.0, 90.0)).is_empty());
        assert!(!Columns::of(&context(vec![])).log_target);
        // On record, read back, and in the script.
        let recorded = drafts[0].hyperparameters();
        assert!(render_params(&recorded).contains("prep.target='log'"), "{recorded:?}");
        assert!(config_of("hist_gradient_boosting", &recorded).unwrap().prep.log_target);
        let script = super::super::scripts::train_script(&skewed, &drafts[0]);
        assert!(script.contains("LOG_TARGET = True"));
        // After the cheap entries, before the regularized boosting.
        let all = portfolio_for(true, 500, Columns::of(&skewed));
        let at = all.iter().position(|c| c.prep.log_target).unwrap();
        assert!(at >= 2 && all[..at].iter().all(|c| c.family.cost <= 1.0), "{all:?}");
        assert_eq!(all[at + 1].param("early_stopping"), Some("True"), "{all:?}");
        // Improves switch a model to the log of the target now and then, and back.
        let improves = n_improves_of(&skewed, &all[0], 40);
        let improved_on_log = improves.iter().filter(|c| c.prep.log_target).count();
        assert!(improved_on_log > 0, "{improves:?}");
        assert!(improved_on_log < improves.len(), "{improves:?}");
    }

    /// Fourteen improves of `base` (scored 50, as is every improve), in the data of `ctx`.
    fn improves_of(ctx: &StepContext, base: &Config) -> Vec<Config> {
        n_improves_of(ctx, base, 14)
    }

    /// `n` improves of `base`, as [`improves_of`].
    fn n_improves_of(ctx: &StepContext, base: &Config, n: u32) -> Vec<Config> {
        let base = done(1, base, Some(50.0));
        let mut history = vec![base.clone()];
        for i in 2..n + 2 {
            let mut ctx = ctx.clone();
            ctx.history = history.clone();
            ctx.iteration = i;
            ctx.operation = Operation::Improve;
            ctx.parent = Some(parent_of(&base, None));
            history.push(done(i, &choose(&ctx), Some(50.0)));
        }
        history[1..].iter().filter_map(|h| config_of(&h.family, &h.hyperparameters)).collect()
    }

    #[test]
    fn splines_of_the_numbers_are_a_draft_and_an_improve_of_linear_models_on_record() {
        let portfolio = portfolio(true, 500);
        let additive =
            portfolio.iter().find(|c| c.prep.numeric == NumericTreatment::Spline).expect("a draft");
        assert_eq!(additive.family.name, "ridge");
        let recorded = additive.hyperparameters();
        assert!(render_params(&recorded).contains("prep.numeric='spline'"), "{recorded:?}");
        let back = config_of("ridge", &recorded).unwrap();
        assert_eq!(
            (back.family, &back.params, back.prep),
            (additive.family, &additive.params, additive.prep)
        );
        // Improves of a plain linear model turn to splines now and then, and back.
        let plain =
            portfolio.iter().find(|c| c.family.name == "ridge" && c.prep.numeric != NumericTreatment::Spline);
        let base = done(1, plain.unwrap(), Some(50.0));
        let mut history = vec![base.clone()];
        let mut numbers_only = context(vec![]).profile;
        numbers_only.features = vec![crate::data::ColumnProfile {
            name: "x".into(),
            dtype: "float64".into(),
            kind: ColumnKind::Numeric,
            missing: 0,
            unique: 500,
            min: Some(0.0),
            max: Some(1.0),
            mean: Some(0.5),
            top: vec![],
            written_as: None,
        }];
        for i in 2..30u32 {
            let mut ctx = context(history.clone());
            ctx.profile = numbers_only.clone();
            ctx.task.kind = "regression".into();
            ctx.operation = Operation::Improve;
            ctx.parent = Some(parent_of(&base, None));
            history.push(done(i, &choose(&ctx), Some(50.0)));
        }
        // (Once the ridge's space is used up, drafts of other families follow.)
        let recorded: Vec<String> = history
            .iter()
            .filter(|h| h.family == "ridge")
            .map(|h| render_params(&h.hyperparameters))
            .collect();
        assert_eq!(recorded.len(), 16, "every alpha, plain and on splines: {recorded:?}");
        assert!(recorded.iter().any(|r| r.contains("'spline'")), "{recorded:?}");
        // Without a categorical column, never a change of how categories are encoded: it would
        // only rename the same model.
        assert!(recorded.iter().all(|r| r.contains("prep.categorical='one_hot'")), "{recorded:?}");
        // Data without a number draft no additive model: it would be the linear one again.
        let mut categories_only = numbers_only.clone();
        categories_only.features[0].kind = ColumnKind::Categorical;
        categories_only.features[0].unique = 3;
        let spline = |c: &Config| c.prep.numeric == NumericTreatment::Spline;
        let with = portfolio_for(true, 500, Columns::of_profile(&numbers_only));
        let without = portfolio_for(true, 500, Columns::of_profile(&categories_only));
        assert!(with.iter().any(spline) && !without.iter().any(spline));
        assert_eq!(without.len() + 1, with.len());
        assert_eq!(crate::builtin::drafts(true, &categories_only) as usize, without.len());
    }

    #[test]
    fn a_family_not_run_yet_on_many_rows_starts_on_a_sample_that_improves_grow() {
        // Boosting, the linear model and regularized boosting ran, each at 20 s a unit of cost;
        // 200 s are left. On the 240,000 rows train.py sees (300,000 less the fifth held out
        // for validation) the forest is predicted at over 1,000 s: fully grown trees cost more
        // than the rows. It starts on the largest halved sample whose three-fold prediction fits
        // half the time left: 15,000 rows (18 s predicted).
        let rows = 240_000;
        let held_out = |history: Vec<IterationBrief>| {
            let mut ctx = context(history);
            ctx.profile.rows = 300_000;
            ctx.split = Some(crate::steps::SplitOutput {
                validation_fraction: 0.2,
                stratify: true,
                seed: 0,
                rationale: String::new(),
            });
            ctx
        };
        let entries = portfolio(false, rows);
        let ran: Vec<&Config> = entries.iter().take_while(|c| c.family.name != "random_forest").collect();
        let history: Vec<IterationBrief> =
            ran.iter().enumerate().map(|(i, c)| done(i as u32 + 1, c, Some(0.8))).collect();
        let unit = 20.0;
        let runtimes: Vec<(u32, f64)> = ran
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32 + 1, unit * c.relative_cost(two_classes(rows, 0))))
            .collect();
        let mut ctx = held_out(history.clone());
        ctx.clock = Some(Clock { time_left_seconds: Some(200.0), runtimes: runtimes.clone() });
        let forest = choose(&ctx);
        assert_eq!(forest.family.name, "random_forest", "{forest:?}");
        assert_eq!(forest.prep.max_rows, Some(15_000), "{forest:?}");
        assert!(forest.why.contains("sample of 15000 rows"), "{}", forest.why);

        // It ran (slower than predicted): the next draft is another entry, not the same forest
        // at full size.
        let mut history = history;
        history.push(done(history.len() as u32 + 1, &forest, Some(0.79)));
        let mut runtimes = runtimes;
        runtimes.push((history.len() as u32, 100.0));
        let mut ctx = held_out(history.clone());
        ctx.clock = Some(Clock { time_left_seconds: Some(100_000.0), runtimes });
        let next = choose(&ctx);
        assert_ne!(next.family.name, "random_forest", "{next:?}");

        // Improving the sampled forest grows its sample first: four times the rows, then all.
        ctx.operation = Operation::Improve;
        ctx.parent = Some(parent_of(history.last().unwrap(), None));
        let grown = choose(&ctx);
        assert_eq!((grown.family.name, grown.prep.max_rows), ("random_forest", Some(60_000)), "{grown:?}");
        assert_eq!(grown.params, forest.params, "only the sample changes");
        let mut sampled_more = history.last().unwrap().clone();
        sampled_more.iteration += 1;
        sampled_more.hyperparameters = grown.hyperparameters();
        ctx.parent = Some(parent_of(&sampled_more, None));
        assert_eq!(choose(&ctx).prep.max_rows, None, "then all the rows");
        // With too little time to grow it, an improve keeps the sample.
        if let Some(clock) = ctx.clock.as_mut() {
            clock.time_left_seconds = Some(250.0);
        }
        ctx.parent = Some(parent_of(history.last().unwrap(), None));
        let kept = choose(&ctx);
        assert_eq!((kept.family.name, kept.prep.max_rows), ("random_forest", Some(15_000)), "{kept:?}");

        // Fewer rows than two of the smallest sample: never a sample, however little time.
        let small = 19_999;
        let mut ctx = context(vec![done(1, &portfolio(false, small)[0], Some(0.8))]);
        ctx.profile.rows = small;
        ctx.clock = Some(Clock { time_left_seconds: Some(5.0), runtimes: vec![(1, 20.0)] });
        for _ in 0..3 {
            let c = choose(&ctx);
            assert_eq!(c.prep.max_rows, None, "{c:?}");
            ctx.history.push(done(ctx.history.len() as u32 + 1, &c, Some(0.8)));
        }
    }

    #[test]
    fn predicted_times_follow_the_work_asked_for_and_each_familys_own_runs() {
        let forest = |family: Family, features: &str, trees: &str| {
            let mut c = Config::new(family, defaults(family, false), default_prep(family), "");
            c.set("max_features", features);
            c.set("n_estimators", trees);
            c
        };
        let (rows, features) = (1000, 100);
        let all = forest(RF, "1.0", "300").relative_cost(two_classes(rows, features));
        assert!(
            (forest(RF, "'sqrt'", "300").relative_cost(two_classes(rows, features)) - all / 10.0).abs()
                < 1e-9
        );
        assert!(
            (forest(RF, "1.0", "100").relative_cost(two_classes(rows, features)) - all / 3.0).abs() < 1e-9
        );
        let svm = Config::new(SVM, defaults(SVM, false), default_prep(SVM), "");
        assert!(svm.relative_cost(two_classes(4000, 10)) > 3.9 * svm.relative_cost(two_classes(1000, 10)));
        // Neighbours: every row predicted against every row trained on.
        let knn = Config::new(KNN, defaults(KNN, false), default_prep(KNN), "");
        let plain = Config::new(HGB, defaults(HGB, false), default_prep(HGB), "");
        let relative =
            |rows| knn.relative_cost(two_classes(rows, 10)) / plain.relative_cost(two_classes(rows, 10));
        assert!(relative(2000) <= 0.25 && relative(40_000) >= 4.0, "{} {}", relative(2000), relative(40_000));
        // On half the rows, half the comparisons: every validation row is still predicted.
        let mut half = knn.clone();
        half.prep.max_rows = Some(20_000);
        let sampled =
            half.relative_cost(two_classes(40_000, 10)) / plain.relative_cost(two_classes(40_000, 10));
        assert!((sampled - relative(40_000) / 2.0).abs() < 1e-9, "{sampled}");
        // Fully grown trees: as the share of features alone says up to 1,200 rows, then more
        // (in the sandbox about five times as much on 32,000 rows); a sample of them costs what
        // its own rows do, not a share of all the rows' cost.
        let trees = forest(RF, "1.0", "100");
        let relative =
            |rows| trees.relative_cost(two_classes(rows, 10)) / plain.relative_cost(two_classes(rows, 10));
        assert!((relative(1000) - relative(1200)).abs() < 1e-9 && relative(1000) == 4.0);
        assert!((4.5..6.0).contains(&(relative(32_000) / relative(1000))), "{}", relative(32_000));
        let mut sampled = trees.clone();
        sampled.prep.max_rows = Some(32_000);
        let on_sample = sampled.relative_cost(two_classes(64_000, 10));
        assert!((on_sample - trees.relative_cost(two_classes(32_000, 10)) / 2.0).abs() < 1e-9, "{on_sample}");
        let mut boost = Config::new(HGB, defaults(HGB, false), default_prep(HGB), "");
        boost.set("max_iter", "1600");
        boost.set("early_stopping", "True");
        assert_eq!(
            boost.relative_cost(two_classes(3_000, features)),
            3.0,
            "an early-stopped run is not priced at its last round"
        );
        assert_eq!(
            boost.relative_cost(two_classes(rows, features)),
            6.0,
            "on fewer rows it is trained a second time on all of them"
        );

        // Boosting took 10 s; a forest took 60 s where its cost predicted 30: the next forest is
        // predicted from the forest, not from boosting.
        let first = Config::new(HGB, defaults(HGB, false), default_prep(HGB), "");
        let grown = forest(RF, "1.0", "100");
        let mut ctx = context(vec![done(1, &first, Some(0.8)), done(2, &grown, Some(0.8))]);
        let unit_rf = 60.0 / grown.relative_cost(two_classes(ctx.profile.rows, ctx.profile.features.len()));
        ctx.clock = Some(Clock { time_left_seconds: Some(1000.0), runtimes: vec![(1, 10.0), (2, 60.0)] });
        let timing = Timing::of(&ctx, &Knowledge::of_context(&ctx));
        let next = forest(RF, "1.0", "200");
        let predicted = timing.seconds(&next).unwrap();
        let expected =
            unit_rf * next.relative_cost(two_classes(ctx.profile.rows, ctx.profile.features.len()));
        assert!((predicted - expected).abs() < 1e-6, "{predicted} vs {expected}");
        assert!((predicted - 120.0).abs() < 1e-6, "{predicted}");
        // Extra trees have not run: the forest's runs predict them (at their own cost, two
        // thirds of a random forest's), not boosting's.
        let kin = forest(ET, "1.0", "100");
        let predicted = timing.seconds(&kin).unwrap();
        assert!((predicted - 40.0).abs() < 1e-6, "{predicted}");
    }

    #[test]
    fn an_untried_point_that_fits_the_time_left_comes_before_an_entry_that_would_not_end_in_it() {
        let portfolio = portfolio(false, 500);
        let mut ctx = context(Vec::new());
        let shape = Shape::of(&ctx);
        let quick = |c: &Config| c.relative_cost(shape) < 1.0;
        // Boosting's defaults and every quick entry ran, each at 10 s a unit of cost.
        let ran: Vec<&Config> =
            portfolio.iter().enumerate().filter(|(i, c)| *i == 0 || quick(c)).map(|(_, c)| c).collect();
        ctx.history = ran.iter().enumerate().map(|(i, c)| done(i as u32 + 1, c, Some(0.8))).collect();
        let runtimes: Vec<(u32, f64)> =
            ran.iter().enumerate().map(|(i, c)| (i as u32 + 1, 10.0 * c.relative_cost(shape))).collect();
        // 8 s are left: what is predicted to take at most 4 s fits, and none of the entries left
        // would even end in time (each is predicted at 10 s or more).
        ctx.clock = Some(Clock { time_left_seconds: Some(8.0), runtimes: runtimes.clone() });
        let timing = Timing::of(&ctx, &Knowledge::of_context(&ctx));
        let left: Vec<&Config> = portfolio.iter().filter(|c| !tried(&ctx).contains(&c.key())).collect();
        assert!(!left.is_empty() && left.iter().all(|c| !timing.finishes(c)), "{left:?}");
        let c = choose(&ctx);
        assert!(timing.fits(&c), "{c:?}");
        assert!(!tried(&ctx).contains(&c.key()), "a configuration already run: {c:?}");
        // 15 s are left: still nothing fits half of it, but the cheapest entry left (10 s) is
        // predicted to end in time, and goes before a point off the portfolio.
        ctx.clock = Some(Clock { time_left_seconds: Some(15.0), runtimes });
        let timing = Timing::of(&ctx, &Knowledge::of_context(&ctx));
        assert!(left.iter().all(|c| !timing.fits(c)), "{left:?}");
        let c = choose(&ctx);
        assert!(left.iter().any(|e| e.key() == c.key()) && timing.finishes(&c), "{c:?}");
    }
}
