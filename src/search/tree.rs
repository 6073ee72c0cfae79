//! The solution tree as a policy sees it: nodes with a parent and the operation that made
//! them, and the decision a policy returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a node came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A new approach, shown a summary of the tree.
    #[default]
    Draft,
    /// The parent's scripts, score and analysis, and one idea to make it better.
    Improve,
    /// The parent's failed scripts and their error, to fix.
    Debug,
    /// Greedy ensemble selection over earlier nodes' validation predictions (made by the runner).
    Ensemble,
    /// The selected node's training on every training row, after the loop (made by the runner;
    /// not scored on validation rows).
    Refit,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Draft => "draft",
            Operation::Improve => "improve",
            Operation::Debug => "debug",
            Operation::Ensemble => "ensemble",
            Operation::Refit => "refit",
        }
    }
}

/// One iteration as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub iteration: u32,
    pub parent: Option<u32>,
    pub operation: Operation,
    /// The validation score, if it was scored on the split in force.
    pub score: Option<f64>,
    /// What orders equal scores ([`crate::metric::Standing`]).
    pub tiebreak: Option<f64>,
    /// It failed (a script or an answer), as opposed to being cut short by the budget.
    pub failed: bool,
    /// Seconds its scripts ran.
    pub seconds: f64,
    /// Seconds its inference took on every validated row (0 if unknown): what it adds to
    /// the run of an ensemble it is in.
    pub infer_seconds: f64,
}

/// What a policy knows besides the tree.
#[derive(Debug, Clone)]
pub struct Situation {
    /// The iteration being decided.
    pub iteration: u32,
    pub higher_is_better: bool,
    /// Time left for the loop, if there is a budget.
    pub time_left: Option<Duration>,
    pub seed: u64,
    /// Drafts to make before improving anything.
    pub drafts: u32,
    /// Try an ensemble of the scored nodes every this many iterations (0: never).
    pub ensemble_every: u32,
    /// Iterations that may run at once (an ensemble wants its members finished).
    pub jobs: u32,
    /// The best score is the metric's best possible value and the metric has no tie-break:
    /// no ensemble can beat it.
    pub perfect: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub operation: Operation,
    pub parent: Option<u32>,
    /// Why, in a few words (journaled and shown).
    pub reason: String,
}

impl Decision {
    pub fn new(operation: Operation, parent: Option<u32>, reason: impl Into<String>) -> Self {
        Self { operation, parent, reason: reason.into() }
    }
}

/// Grows the tree: picks the next node to expand and the operation.
pub trait Policy: Send + Sync {
    fn name(&self) -> &'static str;
    fn decide(&self, nodes: &[Node], situation: &Situation) -> Decision;
}

/// How many `Debug` operations lead down to `node` without a success in between.
pub fn debug_depth(nodes: &[Node], node: &Node) -> u32 {
    let mut depth = 0;
    let mut current = Some(node);
    while let Some(n) = current {
        if n.operation != Operation::Debug {
            break;
        }
        depth += 1;
        current = n.parent.and_then(|p| nodes.iter().find(|x| x.iteration == p));
    }
    depth
}

/// How far back what `iteration` is told of ends, with `jobs` at once and `drafts` drafts: it
/// knows the iterations up to `iteration - lag`. One at a time, 1 (all before it). The drafts
/// know all but the `jobs - 1` others in flight: their choices rest on how long the first
/// ones took. After them, `2 × jobs - 1`: as many again may finish while an older one still
/// runs, so a long one (a forest, an ensemble) does not hold the other cores idle until it
/// ends.
pub fn lag(iteration: u32, jobs: u32, drafts: u32) -> u32 {
    let jobs = jobs.max(1);
    if iteration <= drafts { jobs } else { 2 * jobs - 1 }
}

/// The last ensemble in `nodes` (one still running included), and how many scored single
/// models it could not take: those after it, and those still running when it started (see
/// [`lag`]).
pub fn new_to_ensembles(nodes: &[Node], jobs: u32, drafts: u32) -> (Option<u32>, usize) {
    let last = nodes.iter().filter(|n| n.operation == Operation::Ensemble).map(|n| n.iteration).max();
    let known_to_it = last.map_or(0, |e| e.saturating_sub(lag(e, jobs, drafts)));
    let new = nodes
        .iter()
        .filter(|n| n.score.is_some() && n.operation != Operation::Ensemble && n.iteration > known_to_it)
        .count();
    (last, new)
}

/// The draft `node` descends from (itself for a root): the line of work it belongs to.
pub fn root(nodes: &[Node], node: &Node) -> u32 {
    let mut current = node;
    // Bounded by the node count, so a malformed parent chain cannot loop.
    for _ in 0..nodes.len() {
        match current.parent.and_then(|p| nodes.iter().find(|x| x.iteration == p)) {
            Some(parent) => current = parent,
            None => break,
        }
    }
    current.iteration
}

/// Renders the tree as indented lines (children under their parent), for status and reports.
/// `describe` says what a node is (e.g. its model family).
pub fn render(
    nodes: &[Node],
    best: Option<u32>,
    fmt_score: &dyn Fn(f64) -> String,
    describe: &dyn Fn(&Node) -> String,
) -> String {
    struct Show<'a> {
        best: Option<u32>,
        fmt: &'a dyn Fn(f64) -> String,
        describe: &'a dyn Fn(&Node) -> String,
    }
    fn walk(nodes: &[Node], parent: Option<u32>, depth: usize, show: &Show<'_>, out: &mut String) {
        for node in nodes.iter().filter(|n| n.parent == parent) {
            let outcome = match (node.score, node.failed) {
                (Some(s), _) => (show.fmt)(s),
                (None, true) => "failed".into(),
                (None, false) => "no score".into(),
            };
            let mark = if Some(node.iteration) == show.best { "  ← best" } else { "" };
            let what = (show.describe)(node);
            let what = if what.is_empty() { String::new() } else { format!(" {what}") };
            out.push_str(&format!(
                "{}{} {}{what} → {outcome}{mark}\n",
                "  ".repeat(depth),
                node.iteration,
                node.operation.name()
            ));
            walk(nodes, Some(node.iteration), depth + 1, show, out);
        }
    }
    let mut out = String::new();
    // Nodes whose parent is unknown (not in the list) are shown as roots.
    let known: Vec<u32> = nodes.iter().map(|n| n.iteration).collect();
    let orphans: Vec<Node> = nodes
        .iter()
        .filter(|n| n.parent.is_some_and(|p| !known.contains(&p)))
        .map(|n| Node { parent: None, ..n.clone() })
        .collect();
    let mut all: Vec<Node> =
        nodes.iter().filter(|n| !orphans.iter().any(|o| o.iteration == n.iteration)).cloned().collect();
    all.extend(orphans);
    all.sort_by_key(|n| n.iteration);
    walk(&all, None, 0, &Show { best, fmt: fmt_score, describe }, &mut out);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node(
        iteration: u32,
        parent: Option<u32>,
        operation: Operation,
        score: Option<f64>,
    ) -> Node {
        Node {
            iteration,
            parent,
            operation,
            score,
            tiebreak: None,
            failed: score.is_none(),
            seconds: 1.0,
            infer_seconds: 0.0,
        }
    }

    #[test]
    fn the_tree_renders_children_under_parents() {
        let nodes = [
            node(1, None, Operation::Draft, Some(0.8)),
            node(2, None, Operation::Draft, None),
            node(3, Some(1), Operation::Improve, Some(0.85)),
            node(4, Some(2), Operation::Debug, Some(0.7)),
        ];
        let text = render(&nodes, Some(3), &|s| format!("{s:.2}"), &|_| String::new());
        assert_eq!(text, "1 draft → 0.80\n  3 improve → 0.85  ← best\n2 draft → failed\n  4 debug → 0.70\n");
        assert_eq!(debug_depth(&nodes, &nodes[3]), 1);
        assert_eq!([root(&nodes, &nodes[2]), root(&nodes, &nodes[3]), root(&nodes, &nodes[0])], [1, 2, 1]);
    }
}
