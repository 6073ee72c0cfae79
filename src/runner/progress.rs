//! Progress events for whoever displays the run. The runner emits them; the CLI renders them
//! (a bar on a terminal, lines otherwise).

/// Something worth showing.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    RunStarted {
        run_dir: String,
        agent: String,
        sandbox: String,
        metric: String,
        budget_seconds: Option<f64>,
    },
    IterationStarted {
        iteration: u32,
    },
    Step {
        iteration: u32,
        step: String,
    },
    IterationFinished {
        iteration: u32,
        status: String,
        family: String,
        score: Option<f64>,
        best: bool,
    },
    Status {
        best_score: Option<f64>,
        metric: String,
        left_seconds: Option<f64>,
        cost_usd: f64,
        /// Some calls went to a model without a price: the cost is a lower bound.
        unpriced: bool,
    },
    Note(String),
    FinalEvaluation {
        iteration: Option<u32>,
        test_score: Option<f64>,
        /// Why there is no test score, in a line (the journal and the report have the rest).
        why: Option<String>,
    },
}

/// Receives progress.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Progress);
}

/// Shows nothing.
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Progress) {}
}
