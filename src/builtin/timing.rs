//! How long a configuration will take on these data, learned from the runs so far, and what
//! fits the time left: the built-in agent's clock.

use super::portfolio::{Config, Prep, Shape};
use super::strategy::Knowledge;
use crate::steps::StepContext;

/// What the clock allows: the time left, and what a unit of cost takes on this data, learned
/// from the runs so far (per family where that family ran: a family's cost relative to
/// boosting varies with the data more than within the family).
pub(super) struct Timing {
    pub(super) left: Option<f64>,
    /// Seconds of a configuration of relative cost 1, from every run so far.
    pub(super) unit: Option<f64>,
    /// The same, from each family's own runs.
    pub(super) family_units: std::collections::BTreeMap<String, f64>,
    pub(super) shape: Shape,
}

impl Timing {
    pub(super) fn of(context: &StepContext, known: &Knowledge) -> Self {
        let mut timing =
            Self { left: None, unit: None, family_units: Default::default(), shape: Shape::of(context) };
        if let Some(clock) = &context.clock {
            timing.left = clock.time_left_seconds;
            timing.unit = known.unit;
            timing.family_units = known.family_units.clone();
        }
        timing
    }

    /// Predicted seconds of `config`, if anything has run yet: from its family's own runs,
    /// else its kin's, else every run's.
    pub(super) fn seconds(&self, config: &Config) -> Option<f64> {
        let unit = self.own_unit(config.family.name).or(self.unit)?;
        Some(unit * config.relative_cost(self.shape))
    }

    /// What a unit of cost takes for `family`, learned from its own runs or its kin's.
    fn own_unit(&self, family: &str) -> Option<f64> {
        let kin = super::portfolio::kin(family);
        self.family_units.get(family).or_else(|| self.family_units.get(kin?)).copied()
    }

    /// Whether `config` is predicted to take at most half the time left.
    pub(super) fn fits(&self, config: &Config) -> bool {
        self.within(config, 0.5)
    }

    /// Whether `config` is predicted to end before the time left does (a prediction can be
    /// off by more than the margin [`Timing::fits`] keeps).
    pub(super) fn finishes(&self, config: &Config) -> bool {
        self.within(config, 1.0)
    }

    fn within(&self, config: &Config, share: f64) -> bool {
        match (self.left, self.seconds(config)) {
            (Some(left), Some(secs)) => secs <= left * share,
            _ => true,
        }
    }

    /// `config`, on a sample of the rows when its family has not run on these data yet and
    /// its time, predicted from the other families' runs, could be too long for half the time
    /// left were it [`UNSEEN_MARGIN`] times the prediction: halved until it fits, never below
    /// [`MIN_SAMPLE`] rows. Cheap first, as FLAML does with its sample size; once the family
    /// (or its kin) has run, its own unit predicts the full size, and improves grow the sample.
    pub(super) fn sized(&self, mut config: Config) -> Config {
        if self.own_unit(config.family.name).is_some() || config.prep.max_rows.is_some() {
            return config;
        }
        let Some(left) = self.left else { return config };
        let all = self.shape.rows;
        // Some families' work grows faster than the rows (see `Config::relative_cost`).
        let worst = |rows: usize| {
            let sample = Config { prep: Prep { max_rows: Some(rows), ..config.prep }, ..config.clone() };
            self.seconds(&sample).map(|secs| secs * UNSEEN_MARGIN)
        };
        let mut rows = all;
        while worst(rows).is_some_and(|w| w > left / 2.0) && rows / 2 >= MIN_SAMPLE {
            rows /= 2;
        }
        if rows < all {
            config.prep.max_rows = Some(rows);
            config.why = format!(
                "{}, on a sample of {rows} rows: how long {} takes on these data is not known yet",
                config.why, config.family.name
            );
        }
        config
    }

    /// Whether there is time to grow work (ten times what the parent took is left).
    pub(super) fn roomy(&self, config: &Config) -> bool {
        match (self.left, self.seconds(config)) {
            (Some(left), Some(secs)) => secs * 10.0 <= left,
            _ => true,
        }
    }
}

/// How far a family's time on these data can be from what the other families' runs predict
/// before it has run itself. On 192,000 training rows a random forest's first 100 trees took
/// 175 s where the runs of boosting and a linear model predicted 17, when a forest's cost did
/// not yet grow with the depth of its trees; the margin was ten then. Now that it does,
/// forests' first runs in the sandbox (four tables of 34,500 to 192,000 rows) took 0.8 to 1.6
/// times their prediction, and ten times the prediction put the first forest on a sample it
/// did far worse on (0.714 AUC on 19,200 of 38,400 rows of flight delays, 0.740 on all of
/// them, in twice the time): the margin is for what no cost says.
const UNSEEN_MARGIN: f64 = 3.0;

/// The smallest sample a configuration is first tried on: fewer rows say little of how a model
/// does on many.
const MIN_SAMPLE: usize = 10_000;

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}
