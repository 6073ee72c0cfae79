//! Settings whose grid is no bound. How strongly a linear or kernel model is regularized, a
//! kernel's width and how many neighbours vote depend on the data's scale and noise: in 3- and
//! 5-minute runs on eight small tables the best model of such a family sat at an end of its grid
//! on four (a logistic regression's C at 100, a ridge's alpha at 0.01 or 100, a support vector
//! machine's C at 100, 3 or 40 neighbours). An improve of a model at such an end tries the next
//! value past it, a step as large as the grid's last there. The search builds on its best
//! models, so a step is stepped from again only when it scored better, and a value that ran is
//! never run again: the walk stops at the first step that does not pay, and each end costs one
//! iteration when the grid's end was right. On a table of 100 collinear spectra a ridge's
//! cross-validated RMSE natively went 0.99, 0.81, 0.66, 0.60, 0.65 from alpha 0.01 down to
//! 0.000001: the best three steps past the grid.

use super::portfolio::Config;

/// `(family, setting, open below its grid, open above it, steps past the grid at most)`. A
/// network's smallest weight decay is as good as none, so only its top is open. A support vector
/// machine's time grows with C (libsvm takes more iterations the less it may violate the
/// margin, and has no cap on them), so its C goes two steps past the grid, the others up to
/// [`FAR`], which only a walk that kept winning reaches.
const OPEN: [(&str, &str, bool, bool, i32); 6] = [
    ("logistic_regression", "C", true, true, FAR),
    ("ridge", "alpha", true, true, FAR),
    ("svm", "C", true, true, 2),
    ("svm", "gamma", true, true, FAR),
    ("knn", "n_neighbors", true, true, FAR),
    ("mlp", "alpha", false, true, FAR),
];

/// The most steps past its grid a setting goes (a ridge's alpha down to 1e-8).
const FAR: i32 = 6;

/// The settings of `config` at (or past) an open end of their grid, each with the next value
/// past it: `(setting, value)`. Neighbours stay fewer than half the `rows` (a fold of a small
/// table trains on fewer rows than the table has, and asking for more neighbours than rows
/// fails).
pub(super) fn past_the_ends(config: &Config, rows: usize) -> Vec<(&'static str, String)> {
    let family = config.family;
    OPEN.iter()
        .filter(|(f, ..)| *f == family.name)
        .filter_map(|&(_, name, below, above, steps)| {
            let (_, _, values) = family.space.iter().find(|(n, _, _)| *n == name)?;
            let current = config.param(name)?.parse::<f64>().ok()?;
            let next = next_past(values, current, below, above, steps)?;
            let too_many = name == "n_neighbors" && next.parse::<usize>().is_ok_and(|k| k >= rows / 2);
            (!too_many).then_some((name, next))
        })
        .collect()
}

/// The value one step past `current` when it is at or past an open end of `values` (ascending;
/// values that are not positive numbers, such as `'scale'`, are not part of the range), at most
/// `steps` steps past that end.
fn next_past(values: &[&str], current: f64, below: bool, above: bool, steps: i32) -> Option<String> {
    let grid: Vec<f64> = values.iter().filter_map(|v| v.parse::<f64>().ok()).filter(|v| *v > 0.0).collect();
    let whole = values.iter().all(|v| v.parse::<u64>().is_ok());
    let [lowest, second, ..] = grid[..] else { return None };
    let [.., next_to_last, highest] = grid[..] else { return None };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let (value, bound) = if above && (current > highest || close(current, highest)) {
        let step = highest / next_to_last;
        (current * step, highest * step.powi(steps))
    } else if below && (current < lowest || close(current, lowest)) {
        let step = second / lowest;
        (current / step, lowest / step.powi(steps))
    } else {
        return None;
    };
    // The values past the grid are rounded, so the bound is held to within a few percent.
    let beyond_bound = if value > current { value > bound * 1.05 } else { value < bound / 1.05 };
    if beyond_bound || !value.is_finite() {
        return None;
    }
    if whole {
        let rounded = value.round().max(1.0);
        return (!close(rounded, current)).then(|| format!("{rounded:.0}"));
    }
    Some(two_digits(value))
}

/// `value` to two significant digits, written as a float (`330.0`, `0.0033`).
fn two_digits(value: f64) -> String {
    let exponent = value.log10().floor() as i32 - 1;
    let rounded = (value / 10f64.powi(exponent)).round() * 10f64.powi(exponent);
    let decimals = (-exponent).max(1) as usize;
    let text = format!("{rounded:.decimals$}");
    let trimmed = text.trim_end_matches('0');
    if trimmed.ends_with('.') { format!("{trimmed}0") } else { trimmed.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: [&str; 9] = ["0.01", "0.03", "0.1", "0.3", "1.0", "3.0", "10.0", "30.0", "100.0"];

    #[test]
    fn a_setting_at_an_open_end_steps_past_it_up_to_its_bound() {
        assert_eq!(next_past(&C, 100.0, true, true, 2).as_deref(), Some("330.0"));
        assert_eq!(next_past(&C, 330.0, true, true, 2).as_deref(), Some("1100.0"));
        assert_eq!(next_past(&C, 1100.0, true, true, 2), None, "two steps past the grid at most");
        assert_eq!(next_past(&C, 1100.0, true, true, 6).as_deref(), Some("3700.0"));
        assert_eq!(next_past(&C, 0.01, true, true, 2).as_deref(), Some("0.0033"));
        assert_eq!(next_past(&C, 0.0033, true, true, 2).as_deref(), Some("0.0011"));
        assert_eq!(next_past(&C, 0.0011, true, true, 2), None);
        assert_eq!(next_past(&C, 1.0, true, true, 2), None, "inside the grid");
        assert_eq!(next_past(&C, 100.0, true, false, 2), None, "closed above");
    }

    #[test]
    fn whole_numbers_stay_whole_and_words_are_not_part_of_a_range() {
        let k = ["3", "5", "10", "15", "25", "40"];
        assert_eq!(next_past(&k, 3.0, true, true, 2).as_deref(), Some("2"));
        assert_eq!(next_past(&k, 2.0, true, true, 2).as_deref(), Some("1"));
        assert_eq!(next_past(&k, 1.0, true, true, 2), None, "no fewer than one neighbour");
        assert_eq!(next_past(&k, 40.0, true, true, 2).as_deref(), Some("64"));
        assert_eq!(next_past(&k, 64.0, true, true, 2).as_deref(), Some("102"));
        assert_eq!(next_past(&k, 102.0, true, true, 2), None);
        let gamma = ["'scale'", "0.001", "0.003", "0.01", "0.03", "0.1"];
        assert_eq!(next_past(&gamma, 0.1, true, true, 2).as_deref(), Some("0.33"));
        assert_eq!(next_past(&gamma, 0.001, true, true, 2).as_deref(), Some("0.00033"));
    }

    #[test]
    fn only_the_settings_open_for_the_family_are_taken_past_their_ends() {
        use super::super::portfolio::{KNN, MLP, RIDGE, SVM, default_prep, hp};
        let ridge = Config::new(RIDGE, vec![hp("alpha", "100.0")], default_prep(RIDGE), "");
        assert_eq!(past_the_ends(&ridge, 500), vec![("alpha", "330.0".to_string())]);
        let decay = |v: &str| Config::new(MLP, vec![hp("alpha", v)], default_prep(MLP), "");
        assert_eq!(past_the_ends(&decay("1.0"), 500), vec![("alpha", "10.0".to_string())]);
        assert!(
            past_the_ends(&decay("0.0001"), 500).is_empty(),
            "a network's weight decay is open above only"
        );
        let tiny = Config::new(RIDGE, vec![hp("alpha", "0.00001")], default_prep(RIDGE), "");
        assert_eq!(past_the_ends(&tiny, 500), vec![("alpha", "0.000001".to_string())]);
        let svm = Config::new(SVM, vec![hp("C", "1100.0"), hp("gamma", "'scale'")], default_prep(SVM), "");
        assert!(past_the_ends(&svm, 500).is_empty(), "an SVM's C goes two steps past its grid");
        let neighbours = Config::new(KNN, vec![hp("n_neighbors", "40")], default_prep(KNN), "");
        assert_eq!(past_the_ends(&neighbours, 500), vec![("n_neighbors", "64".to_string())]);
        assert!(past_the_ends(&neighbours, 120).is_empty(), "64 neighbours among a fold's rows of 120");
    }
}
