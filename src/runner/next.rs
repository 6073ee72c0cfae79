//! What the next iteration is and what it is told: the search's decision from the iterations
//! it may know of (and the ones in flight), the ensemble candidates, and the step context with
//! its parent's brief. Nothing here changes the run's state; the dispatcher does.

use super::lifecycle::Runner;
use crate::journal::IterationRecord;
use crate::metric::{Metric, Standing};
use crate::run_dir::RunDir;
use crate::search::{Decision, Node, Operation, Situation};
use crate::steps::{IterationBrief, ParentBrief, PendingBrief, Planned, StepContext, TaskBrief};

impl Runner {
    /// How many iterations iteration `n` may know of: those up to `n - lag` (committed before it
    /// can start; see [`crate::search::lag`]), and always every iteration that could change the
    /// split.
    pub(super) fn known(&self, n: u32) -> u32 {
        let config = &self.shared.inputs.config.loop_;
        let lag = crate::search::lag(n, config.jobs, self.drafts());
        n.saturating_sub(lag).max(config.split_iterations.min(n - 1))
    }

    /// Drafts to make before improving anything.
    fn drafts(&self) -> u32 {
        self.shared.inputs.config.search.drafts.unwrap_or_else(|| self.default_drafts())
    }

    /// The search's decision for iteration `n`, from the first `known` iterations (or the one
    /// recorded, when replaying).
    pub(super) fn decide(&self, n: u32, known: usize, last: bool) -> Decision {
        let shared = &self.shared;
        if let Some(recorded) = shared.inputs.decisions.as_ref().and_then(|d| d.get(n as usize - 1)) {
            return recorded.clone();
        }
        let config = &shared.inputs.config;
        let split = shared.split().id;
        let mut nodes: Vec<Node> = self.state.records[..known].iter().map(|r| node(r, split)).collect();
        // Iterations in flight count as nodes not yet scored: their drafts are drafts, their
        // debugs have taken their parents, their ensembles are recent.
        nodes.extend(self.pending(n, known).into_iter().map(|p| Node {
            iteration: p.iteration,
            parent: p.parent,
            operation: p.operation,
            score: None,
            tiebreak: None,
            failed: false,
            seconds: 0.0,
            infer_seconds: 0.0,
        }));
        let metric = shared.inputs.target.metric;
        let situation = Situation {
            iteration: n,
            higher_is_better: metric.higher_is_better(),
            time_left: shared.budget.loop_left(),
            seed: config.loop_.seed,
            drafts: self.drafts(),
            ensemble_every: config.search.ensemble_every,
            jobs: config.loop_.jobs,
            perfect: !metric.has_tiebreak()
                && metric.perfect().is_some_and(|p| nodes.iter().filter_map(|x| x.score).any(|s| s == p)),
        };
        let mut decision = self.policy.decide(&nodes, &situation);
        let situation = &situation;
        // The last iteration of a counted run is an ensemble of what scored, if one is worth it.
        if last
            && decision.operation != Operation::Ensemble
            && config.search.ensemble_every > 0
            && !situation.perfect
            && crate::search::new_to_ensembles(&nodes, situation.jobs, situation.drafts).1 >= 2
        {
            decision =
                Decision::new(Operation::Ensemble, None, "the last iteration: an ensemble of what scored");
        }
        decision
    }

    /// The iterations between the first `known` and `n`: started, but not to be known by `n`
    /// (they may be running). Only what the search decided for them, which is the same
    /// whatever order they finish in.
    pub(super) fn pending(&self, n: u32, known: usize) -> Vec<PendingBrief> {
        let plans = self.plans();
        (known as u32 + 1..n)
            .filter_map(|m| {
                let planned = self.planned.get(&m).cloned();
                match self.state.records.get(m as usize - 1) {
                    Some(r) => Some(PendingBrief {
                        iteration: m,
                        operation: r.operation,
                        parent: r.parent,
                        // Planned when dispatched in this session; else (resumed) what it ran.
                        planned: planned.or_else(|| {
                            (plans && r.operation != Operation::Ensemble).then(|| Planned {
                                family: r.family.clone(),
                                hyperparameters: r.hyperparameters.clone(),
                            })
                        }),
                    }),
                    None => self.decided.get(&m).map(|d| PendingBrief {
                        iteration: m,
                        operation: d.operation,
                        parent: d.parent,
                        planned,
                    }),
                }
            })
            .collect()
    }

    /// Whether iterations in flight carry what the agent plans to train in them: only the
    /// built-in agent's plan can be known when an iteration is dispatched.
    pub(super) fn plans(&self) -> bool {
        self.shared.agent.backend_name() == "builtin"
    }

    /// Drafts before improving: the built-in agent drafts each family of its portfolio once; an
    /// LLM five times. By the agent the run was made with, so that a replay (whose agent reads
    /// the transcript) tells each iteration of the same ones (see [`crate::search::lag`]).
    pub(super) fn default_drafts(&self) -> u32 {
        let shared = &self.shared;
        if shared.inputs.config.agent.backend == crate::config::BackendKind::Builtin {
            crate::builtin::drafts(
                shared.inputs.target.kind == crate::task::TaskKind::Regression,
                &shared.inputs.profile,
            )
        } else {
            5
        }
    }

    /// Scored single models among the first `known` iterations on the split in force that an
    /// ensemble may take, best first: the best ones, and the best of each model family besides
    /// (a search that improves mostly its best model fills the top with its variants, and a
    /// blend gains most from models that err differently).
    pub(super) fn ensemble_candidates(&self, known: usize) -> Vec<(u32, Option<f64>)> {
        let split = self.shared.split().id;
        let metric = self.shared.inputs.target.metric;
        let mut scored: Vec<&IterationRecord> = self.state.records[..known]
            .iter()
            .filter(|r| r.succeeded() && r.split_id == split)
            .filter(|r| !matches!(r.operation, Operation::Ensemble | Operation::Refit))
            .collect();
        let nan = crate::metric::Standing::new(f64::NAN, None);
        scored.sort_by(|a, b| {
            metric
                .rank(a.standing().unwrap_or(nan), b.standing().unwrap_or(nan))
                .then(a.iteration.cmp(&b.iteration))
        });
        let mut families = std::collections::BTreeSet::new();
        scored
            .into_iter()
            .enumerate()
            .filter(|(rank, r)| families.insert(r.family.as_str()) || *rank < MAX_ENSEMBLE_CANDIDATES)
            .map(|(_, r)| (r.iteration, r.validation_score))
            .collect()
    }

    /// What an improve or debug operation is shown of `parent` ([`parent_brief`]).
    pub(super) fn parent_brief(&self, parent: u32) -> Option<ParentBrief> {
        let record = self.state.records.get(parent as usize - 1)?;
        Some(parent_brief(&brief(record), &self.dir))
    }

    /// The context iteration `n` is asked with: the first `known` iterations, no later ones.
    pub(super) fn context(&self, n: u32, known: usize, decision: &Decision) -> StepContext {
        let shared = &self.shared;
        let split = shared.split();
        let history: Vec<IterationBrief> = self.state.records[..known].iter().map(brief).collect();
        let metric = shared.inputs.target.metric;
        let best = best_on_split(&self.state.records[..known], split.id, metric).map(brief);
        let config = &shared.inputs.config.loop_;
        StepContext {
            task: TaskBrief::new(&shared.inputs.task, &shared.inputs.target),
            operation: decision.operation,
            parent: decision.parent.and_then(|p| self.parent_brief(p)),
            profile_text: shared.inputs.profile.render(),
            profile: shared.inputs.profile.clone(),
            iteration: n,
            max_iterations: config.max_iterations,
            history,
            best,
            findings: self
                .state
                .findings
                .iter()
                .filter(|(i, _)| *i as usize <= known)
                .map(|(_, t)| t.clone())
                .collect(),
            // A split changes only in a draft of the first iterations, and folds never.
            split_open: n <= config.split_iterations
                && decision.operation == Operation::Draft
                && split.folds.is_none(),
            cv_folds: split.folds.as_ref().map(|f| f.ranges.len() as u32),
            pending: self.pending(n, known),
            split: Some(split.split),
            current: Default::default(),
            failure: None,
            validation: None,
            seed: config.seed,
            clock: Some(crate::steps::Clock {
                time_left_seconds: shared.budget.loop_left().map(|d| d.as_secs_f64()),
                runtimes: self.state.records[..known]
                    .iter()
                    .map(|r| (r.iteration, r.script_seconds))
                    .collect(),
            }),
        }
    }
}

/// The best scored iteration of `records` on split `split`, as the choice orders them: equal
/// scores by their tie-break, else the earlier one.
fn best_on_split(records: &[IterationRecord], split: u32, metric: Metric) -> Option<&IterationRecord> {
    records
        .iter()
        .filter(|r| r.split_id == split && r.succeeded())
        .filter_map(|r| r.standing().map(|s| (r, s)))
        .fold(None::<(&IterationRecord, Standing)>, |best, (r, s)| match best {
            Some(b) if !metric.ahead(s, b.1) => Some(b),
            _ => Some((r, s)),
        })
        .map(|(r, _)| r)
}

/// How many of the best candidates an ensemble selection looks at (with the best of each
/// family besides).
const MAX_ENSEMBLE_CANDIDATES: usize = 20;

/// A record as the search sees it; only scores on the split in force count.
pub(super) fn node(r: &IterationRecord, split: u32) -> Node {
    Node {
        iteration: r.iteration,
        parent: r.parent,
        operation: r.operation,
        score: if r.split_id == split && r.succeeded() { r.validation_score } else { None },
        tiebreak: r.validation_tiebreak,
        // A refit is the runner's; there is nothing for an agent to debug in it.
        failed: r.status.starts_with("failed") && r.operation != Operation::Refit,
        seconds: r.script_seconds,
        infer_seconds: r.infer_seconds.unwrap_or(0.0),
    }
}

/// What an improve or debug operation is shown of iteration `parent` (as its history has it):
/// the runner's own records of it (its answers, its scripts as run, how it failed). An improve
/// whose plan builds on another model than its parent is shown that one's.
pub(super) fn parent_brief(parent: &IterationBrief, dir: &RunDir) -> ParentBrief {
    let steps = dir.iteration(parent.iteration).join("steps");
    fn load<T: serde::de::DeserializeOwned>(path: std::path::PathBuf) -> Option<T> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }
    let analysis: Option<crate::steps::AnalyzeOutput> = load(steps.join("analyze.json"));
    let infer: Option<crate::steps::ScriptOutput> = load(steps.join("infer.json"));
    ParentBrief {
        iteration: parent.iteration,
        operation: parent.operation,
        status: parent.status.clone(),
        family: parent.family.clone(),
        hyperparameters: parent.hyperparameters.clone(),
        representation: parent.representation.clone(),
        architecture: load(steps.join("architecture.json")),
        score: parent.score,
        train: load(steps.join("train.json")),
        inference_script: infer.map(|i| i.script).unwrap_or_default(),
        observations: analysis.as_ref().map(|a| a.observations.clone()).unwrap_or_default(),
        next_ideas: analysis.map(|a| a.next_ideas).unwrap_or_default(),
        failure: load(steps.join("failure.json")),
    }
}

pub(super) fn brief(r: &IterationRecord) -> IterationBrief {
    IterationBrief {
        iteration: r.iteration,
        parent: r.parent,
        operation: r.operation,
        status: r.status.clone(),
        family: r.family.clone(),
        hyperparameters: r.hyperparameters.clone(),
        representation: r.representation.clone(),
        score: r.validation_score,
        next_ideas: r.next_ideas.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(n: u32, split: u32, score: f64, tiebreak: Option<f64>) -> IterationRecord {
        IterationRecord {
            split_id: split,
            validation_tiebreak: tiebreak,
            ..IterationRecord::for_tests(n, Some(score))
        }
    }

    #[test]
    fn the_best_the_agent_is_told_of_is_the_one_the_choice_ranks_first() {
        let best =
            |records: &[IterationRecord]| best_on_split(records, 1, Metric::Accuracy).map(|r| r.iteration);
        // Equal accuracy: the surer one, not the first to get there.
        let tied =
            [scored(1, 1, 1.0, Some(0.3)), scored(2, 1, 1.0, Some(0.05)), scored(3, 1, 0.9, Some(0.01))];
        assert_eq!(best(&tied), Some(2));
        // Without tie-breaks the earlier stays; another split's score does not count.
        let plain = [scored(1, 1, 1.0, None), scored(2, 1, 1.0, None), scored(3, 2, 1.0, Some(0.0))];
        assert_eq!(best(&plain), Some(1));
        let mut failed = scored(4, 1, 1.0, Some(0.0));
        failed.status = "failed at infer: x".into();
        assert_eq!(best(&[scored(1, 1, 0.5, None), failed]), Some(1));
    }
}
