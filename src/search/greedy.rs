//! A greedy policy with exploration, in the manner of AIDE, aware of runtime and time left:
//! a few drafts first; then mostly improve the best node, sometimes the best of another line
//! (what grew from another draft), sometimes
//! debug a failed leaf; an ensemble of what scored every few iterations; when little time is
//! left, only operations whose parents ran quickly; and when less is left than an iteration
//! takes, an ensemble of what no ensemble has taken yet, drafts or not.

use std::time::Duration;

use super::tree::{Decision, Node, Operation, Policy, Situation, debug_depth, new_to_ensembles, root};
use crate::metric::Standing;

/// How many of the best models the time of an ensemble is estimated from.
const BLEND_MEMBERS: usize = 3;

/// The default policy.
#[derive(Debug, Clone)]
pub struct Greedy {
    /// Chance of improving a good node other than the best.
    pub explore: f64,
    /// Chance of debugging a failed leaf when one is worth it.
    pub debug: f64,
    /// Debug operations in a row before a failed line is given up.
    pub max_debug_depth: u32,
    /// How many of the best other lines exploration picks from.
    pub top_k: usize,
}

impl Default for Greedy {
    fn default() -> Self {
        Self { explore: 0.2, debug: 0.3, max_debug_depth: 3, top_k: 3 }
    }
}

impl Policy for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn decide(&self, nodes: &[Node], s: &Situation) -> Decision {
        let mut rng =
            fastrand::Rng::with_seed(s.seed ^ u64::from(s.iteration).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let better = |a: f64, b: f64| if s.higher_is_better { a > b } else { a < b };
        let drafts = nodes.iter().filter(|n| n.operation == Operation::Draft).count() as u32;
        // Scored single models (ensembles are not improved: they are remade from their members).
        let mut scored: Vec<&Node> =
            nodes.iter().filter(|n| n.score.is_some() && n.operation != Operation::Ensemble).collect();
        let standing = |n: &Node| Standing::new(n.score.unwrap_or(f64::NAN), n.tiebreak);
        scored.sort_by(|a, b| {
            Standing::rank(standing(a), standing(b), s.higher_is_better).then(a.iteration.cmp(&b.iteration))
        });
        // What fits: a parent whose scripts took more than half the time left is not built on.
        let fits = |n: &&Node| match s.time_left {
            Some(left) => Duration::from_secs_f64(n.seconds * 2.0) <= left,
            None => true,
        };
        let typical = median(scored.iter().map(|n| n.seconds));
        let time_short =
            matches!((s.time_left, typical), (Some(left), Some(t)) if left.as_secs_f64() < 3.0 * t);
        let (last_ensemble, new_since) = new_to_ensembles(nodes, s.jobs, s.drafts);
        let ensembles = s.ensemble_every > 0 && !s.perfect;
        // An ensemble runs its members' inference: about that of the few best models (it
        // seldom takes more), and a margin for checking them out.
        let blend_seconds =
            1.0 + 1.25 * scored.iter().take(BLEND_MEMBERS).map(|n| n.infer_seconds).sum::<f64>();
        // The last moment for it: after it, neither another model nor it could finish.
        let last_call = matches!(
            (s.time_left, typical),
            (Some(left), Some(t)) if (blend_seconds..t + blend_seconds).contains(&left.as_secs_f64())
        );

        // Before the budget ends, whatever stage the search is at: a run whose drafts take
        // most of its budget (large or wide data) would otherwise end without combining
        // anything.
        if ensembles && last_call && new_since >= 2 {
            return Decision::new(
                Operation::Ensemble,
                None,
                format!("little time left: an ensemble of the {} scored models", scored.len()),
            );
        }
        if drafts < s.drafts {
            return Decision::new(Operation::Draft, None, format!("draft {} of {}", drafts + 1, s.drafts));
        }
        if ensembles && new_since >= 2 && last_ensemble.is_none_or(|e| s.iteration >= e + s.ensemble_every) {
            return Decision::new(
                Operation::Ensemble,
                None,
                format!("ensemble of {} scored models", scored.len()),
            );
        }
        let fitting: Vec<&Node> = scored.iter().copied().filter(fits).collect();
        // Not the quickest: a model far behind the best gains nothing from one more try, and
        // what fits (scripts under half the time left) can still finish.
        if time_short && let Some(best) = fitting.first() {
            return Decision::new(
                Operation::Improve,
                Some(best.iteration),
                "little time left: improve the best model that fits it",
            );
        }
        // Failed leaves worth another look: not given up on, not built on already.
        let buggy: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.failed && n.operation != Operation::Ensemble)
            .filter(|n| !nodes.iter().any(|c| c.parent == Some(n.iteration)))
            .filter(|n| debug_depth(nodes, n) < self.max_debug_depth)
            .collect();
        if !buggy.is_empty() && (fitting.is_empty() || rng.f64() < self.debug) {
            let pick = buggy[rng.usize(..buggy.len())];
            return Decision::new(Operation::Debug, Some(pick.iteration), "debug a failed attempt");
        }
        let Some(best) = fitting.first() else {
            let why = if scored.is_empty() {
                "nothing scored yet: another draft"
            } else {
                "no scored model fits the time left: another draft"
            };
            return Decision::new(Operation::Draft, None, why);
        };
        if fitting.len() > 1 && rng.f64() < self.explore {
            // The best node of each other line of work (draft and its descendants), best lines
            // first: exploring there keeps different approaches alive, which is what an
            // ensemble of them gains from. With a single line, its runners-up.
            let mut lines = vec![root(nodes, best)];
            let mut others: Vec<&Node> = Vec::new();
            for n in &fitting {
                let line = root(nodes, n);
                if !lines.contains(&line) {
                    lines.push(line);
                    others.push(n);
                }
            }
            if others.is_empty() {
                others = fitting[1..].to_vec();
            }
            let pick = others[rng.usize(..self.top_k.clamp(1, others.len()))];
            if !better(pick.score.unwrap_or(f64::NAN), best.score.unwrap_or(f64::NAN)) {
                return Decision::new(
                    Operation::Improve,
                    Some(pick.iteration),
                    "explore: improve the best of another line",
                );
            }
        }
        Decision::new(Operation::Improve, Some(best.iteration), "improve the best")
    }
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tree::tests::node;

    fn situation(iteration: u32) -> Situation {
        Situation {
            iteration,
            higher_is_better: true,
            time_left: None,
            seed: 7,
            drafts: 2,
            ensemble_every: 5,
            jobs: 1,
            perfect: false,
        }
    }

    /// A scored draft whose scripts took `seconds`.
    fn timed(n: u32, score: f64, seconds: f64) -> Node {
        Node { seconds, ..node(n, None, Operation::Draft, Some(score)) }
    }

    #[test]
    fn drafts_first_then_improves_the_best_mostly() {
        let p = Greedy::default();
        assert_eq!(p.decide(&[], &situation(1)).operation, Operation::Draft);
        let nodes =
            vec![node(1, None, Operation::Draft, Some(0.7)), node(2, None, Operation::Draft, Some(0.9))];
        let mut improved_best = 0;
        for i in 3..103 {
            let d = p.decide(&nodes, &Situation { ensemble_every: 0, ..situation(i) });
            assert_eq!(d.operation, Operation::Improve);
            if d.parent == Some(2) {
                improved_best += 1;
            }
        }
        assert!((70..100).contains(&improved_best), "{improved_best} of 100 improved the best");
        assert_eq!(p.decide(&nodes, &situation(9)), p.decide(&nodes, &situation(9)), "deterministic");
    }

    #[test]
    fn exploration_goes_to_other_lines_not_the_best_lines_runners_up() {
        let p = Greedy::default();
        let nodes = vec![
            node(1, None, Operation::Draft, Some(0.7)),
            node(2, None, Operation::Draft, Some(0.9)),
            node(3, Some(2), Operation::Improve, Some(0.89)),
            node(4, Some(3), Operation::Improve, Some(0.88)),
            node(5, None, Operation::Draft, Some(0.6)),
        ];
        let mut parents = std::collections::BTreeMap::new();
        for i in 6..206 {
            let d = p.decide(&nodes, &Situation { ensemble_every: 0, ..situation(i) });
            *parents.entry(d.parent.unwrap()).or_insert(0) += 1;
        }
        assert!(!parents.contains_key(&3) && !parents.contains_key(&4), "{parents:?}");
        assert!(parents[&1] >= 5 && parents[&5] >= 5, "{parents:?}");
        assert!(parents[&2] >= 140, "{parents:?}");
    }

    #[test]
    fn ensembles_come_every_few_iterations_and_failures_get_debugged() {
        let p = Greedy::default();
        let mut nodes = vec![
            node(1, None, Operation::Draft, Some(0.7)),
            node(2, None, Operation::Draft, Some(0.9)),
            node(3, Some(2), Operation::Improve, None),
        ];
        assert_eq!(p.decide(&nodes, &situation(4)).operation, Operation::Ensemble);
        nodes.push(node(4, None, Operation::Ensemble, Some(0.92)));
        let debugs =
            (5..105).filter(|i| p.decide(&nodes, &situation(*i)).operation == Operation::Debug).count();
        assert!((15..50).contains(&debugs), "{debugs} debugs of 100");
        // A line debugged three times is given up.
        nodes.push(node(5, Some(3), Operation::Debug, None));
        nodes.push(node(6, Some(5), Operation::Debug, None));
        nodes.push(node(7, Some(6), Operation::Debug, None));
        assert!(
            (8..60).all(|i| p.decide(&nodes, &Situation { ensemble_every: 0, ..situation(i) }).operation
                != Operation::Debug)
        );
    }

    #[test]
    fn little_time_left_ends_the_drafts_with_an_ensemble_of_what_scored() {
        // Seen on 3,000 rows of 400 features, two minutes: drafts of 8 to 54 s, the budget
        // ended in the drafts, and five scored models were never combined.
        let p = Greedy::default();
        let nodes = vec![timed(1, 0.944, 54.0), timed(2, 0.852, 8.0), timed(3, 0.918, 40.0)];
        // Less time left than the typical draft (40 s) takes.
        let s = Situation { drafts: 8, time_left: Some(Duration::from_secs(30)), ..situation(4) };
        let d = p.decide(&nodes, &s);
        assert_eq!(d.operation, Operation::Ensemble, "{d:?}");
        assert!(d.reason.contains("little time left"), "{d:?}");
        // With time for another draft, the drafts go on; so they do once an ensemble (here one
        // still running) has every scored model, and when one model is all that scored.
        let more = Situation { time_left: Some(Duration::from_secs(50)), ..s.clone() };
        assert_eq!(p.decide(&nodes, &more).operation, Operation::Draft);
        let mut running = nodes.clone();
        running.push(node(4, None, Operation::Ensemble, None));
        assert_eq!(p.decide(&running, &Situation { iteration: 5, ..s.clone() }).operation, Operation::Draft);
        // With two jobs that ensemble could not take iteration 3 (running when it started):
        // with one more scored, two are new to it.
        running.push(timed(5, 0.90, 9.0));
        let two = Situation { iteration: 6, jobs: 2, ..s.clone() };
        assert_eq!(p.decide(&running, &two).operation, Operation::Ensemble);
        assert_eq!(p.decide(&running, &Situation { jobs: 1, ..two }).operation, Operation::Draft);
        assert_eq!(
            p.decide(&nodes[..1], &Situation { iteration: 2, ..s.clone() }).operation,
            Operation::Draft
        );
        // The members' inference counts. Seen on 240,000 rows: the three best took 17 s to
        // predict, and an ensemble started 12 s before the end was cut. With 22 s for it and
        // a typical iteration of 36 s, its moment is from 58 s left down to 22 s.
        let predicting = |n: u32, score: f64, seconds: f64, infer: f64| Node {
            infer_seconds: infer,
            ..timed(n, score, seconds)
        };
        let big = vec![
            predicting(1, 0.9165, 39.0, 6.4),
            predicting(2, 0.9164, 36.0, 5.2),
            predicting(3, 0.9163, 36.0, 5.3),
            predicting(4, 0.836, 13.0, 1.7),
            predicting(5, 0.903, 15.0, 2.0),
        ];
        let at = |left: u64| {
            p.decide(
                &big,
                &Situation { iteration: 6, time_left: Some(Duration::from_secs(left)), ..s.clone() },
            )
            .operation
        };
        assert_eq!(
            [at(70), at(50), at(25), at(12)],
            [Operation::Draft, Operation::Ensemble, Operation::Ensemble, Operation::Draft]
        );
        // Nor when ensembles are off, or the best score cannot be beaten.
        assert_eq!(
            p.decide(&nodes, &Situation { ensemble_every: 0, ..s.clone() }).operation,
            Operation::Draft
        );
        assert_eq!(p.decide(&nodes, &Situation { perfect: true, ..s }).operation, Operation::Draft);
    }

    #[test]
    fn little_time_left_favours_quick_parents() {
        let p = Greedy::default();
        let mut slow = node(1, None, Operation::Draft, Some(0.95));
        slow.seconds = 100.0;
        let mut quick = node(2, None, Operation::Draft, Some(0.9));
        quick.seconds = 2.0;
        let s = Situation { time_left: Some(Duration::from_secs(30)), ensemble_every: 0, ..situation(3) };
        let d = p.decide(&[slow, quick], &s);
        assert_eq!((d.operation, d.parent), (Operation::Improve, Some(2)));
    }

    #[test]
    fn little_time_left_improves_the_best_that_fits_not_the_quickest() {
        // Seen on 300,000 rows: boosting at 20 s and 0.770 fit the 55 s left, yet eight
        // improves went to a 6 s linear model at 0.746 that could not catch up.
        let p = Greedy::default();
        let nodes =
            [timed(1, 0.746, 6.0), timed(2, 0.770, 20.0), timed(3, 0.754, 150.0), timed(4, 0.755, 60.0)];
        let s = Situation { time_left: Some(Duration::from_secs(55)), ensemble_every: 0, ..situation(5) };
        for i in 5..25 {
            let d = p.decide(&nodes, &Situation { iteration: i, ..s.clone() });
            assert_eq!((d.operation, d.parent), (Operation::Improve, Some(2)), "{d:?}");
        }
        // When no scored model fits, a draft, and it says why.
        let d = p.decide(&nodes[2..], &s);
        assert_eq!(d.operation, Operation::Draft);
        assert!(d.reason.contains("fits the time left"), "{d:?}");
    }
}
