//! Rendering the runner's progress: an indicatif status line on a terminal, one plain line per
//! event otherwise (CI, logs, `nohup`).

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::printer::Printer;
use crate::runner::{Progress, Reporter};

pub struct CliReporter {
    printer: Printer,
    bar: Option<ProgressBar>,
    state: Mutex<Line>,
}

#[derive(Default)]
struct Line {
    iteration: u32,
    step: String,
    best: Option<f64>,
    metric: String,
    left: Option<f64>,
    cost: f64,
    unpriced: bool,
}

impl CliReporter {
    pub fn new(printer: Printer) -> Self {
        let bar = printer.fancy.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { printer, bar, state: Mutex::new(Line::default()) }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => self.printer.status(line),
        }
    }

    fn redraw(&self, line: &Line) {
        if let Some(bar) = &self.bar {
            let best = line.best.map_or("-".into(), |b| format!("{b:.4}"));
            let left = line.left.map_or(String::new(), |l| format!(" · {} left", clock(l)));
            let cost = match (line.cost > 0.0, line.unpriced) {
                (_, true) => format!(" · ${:.3} + unpriced", line.cost),
                (true, false) => format!(" · ${:.3}", line.cost),
                (false, false) => String::new(),
            };
            bar.set_message(format!(
                "iteration {} · {} · best {} {best}{left}{cost}",
                line.iteration, line.step, line.metric
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Reporter for CliReporter {
    fn report(&self, event: Progress) {
        let mut line = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Progress::RunStarted { run_dir, agent, sandbox, metric, budget_seconds } => {
                line.metric = metric;
                self.say(&format!(
                    "run {run_dir}\nagent: {agent}\nsandbox: {sandbox}\nbudget: {}",
                    budget_seconds.map_or("iterations only".into(), clock)
                ));
            }
            Progress::IterationStarted { iteration } => {
                line.iteration = iteration;
                line.step = "plan".into();
            }
            Progress::Step { step, .. } => line.step = step,
            Progress::IterationFinished { iteration, status, family, score, best } => {
                let score = score.map_or_else(|| status.clone(), |s| format!("{} {s:.4}", line.metric));
                self.say(&format!(
                    "iteration {iteration:>3}: {family:<24} {score}{}",
                    if best { "  (new best)" } else { "" }
                ));
            }
            Progress::Status { best_score, metric, left_seconds, cost_usd, unpriced } => {
                line.best = best_score;
                line.metric = metric;
                line.left = left_seconds;
                line.cost = cost_usd;
                line.unpriced = unpriced;
            }
            Progress::Note(text) => self.say(&text),
            Progress::FinalEvaluation { iteration, test_score, why } => match (iteration, test_score) {
                (Some(i), Some(s)) => self.say(&format!("test {}: {s:.4} (iteration {i})", line.metric)),
                (Some(i), None) => self.say(&format!(
                    "iteration {i} could not be scored on the test split{}",
                    why.map(|w| format!(": {w}")).unwrap_or_default()
                )),
                _ => self.say("no iteration succeeded; nothing to score on the test split"),
            },
        }
        self.redraw(&line);
    }
}
