//! Resuming a run after a crash or `kill -9`: the journal says what finished; everything else
//! is discarded and redone.
//!
//! - Iterations with `iteration_finished` are kept as they are; a started but unfinished
//!   iteration's directory is removed and the iteration runs again under the same number.
//! - git is made to agree with the journal: `iterations`, the `iter-N` tags and `best` point at
//!   the commits the journal recorded for finished iterations; anything committed after the
//!   last recorded entry becomes unreachable.
//! - The split's files are rewritten from the pool (they are a function of the recorded split).
//! - The budget counts the time of every earlier session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lifecycle::{Parts, Runner, State, session};
use super::progress::Reporter;
use super::shared::{FaultPlan, RunInputs};
use super::split;
use crate::agent::{Backend, Redactor, Spend, Usage};
use crate::config::{Overrides, RunConfig};
use crate::data::{read_table, target_labels};
use crate::error::UserError;
use crate::exit_code;
use crate::journal::{self, Entry, Event, IterationRecord, Journal};
use crate::run_dir::{Manifest, RunDir};
use crate::sandbox::Sandbox;
use crate::snapshot::Workspace;
use crate::steps::SplitOutput;

/// What the journal says about a run.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<IterationRecord>,
    /// Commits recorded for finished iterations.
    pub commits: Vec<(u32, String)>,
    /// The split in force: its id, how it was made, its cross-validation folds.
    pub split: Option<(u32, SplitOutput, Option<u32>)>,
    pub findings: Vec<(u32, String)>,
    pub spend: Spend,
    pub elapsed: Duration,
    pub finished: bool,
}

/// Reads what survived from a journal's entries.
pub fn recover(entries: &[Entry]) -> Recovered {
    let mut finished: BTreeMap<u32, IterationRecord> = BTreeMap::new();
    let mut commits: BTreeMap<u32, String> = BTreeMap::new();
    let mut findings: Vec<(u32, String)> = Vec::new();
    let mut r = Recovered::default();
    let mut session: Option<(f64, std::time::SystemTime)> = None;
    let mut last_at = None;
    for entry in entries {
        let at = humantime::parse_rfc3339(&entry.at).ok();
        match &entry.event {
            Event::Session { started_at, elapsed_before_seconds } => {
                // The session began when its command started (set-up counts); older journals
                // recorded that to the second, so the entry's own time is the fallback.
                let began = humantime::parse_rfc3339_weak(started_at).ok().or(at);
                if let Some(began) = began {
                    session = Some((*elapsed_before_seconds, began));
                }
            }
            Event::SplitMade { split_id, validation_fraction, stratify, seed, rationale, folds, .. } => {
                let split = SplitOutput {
                    validation_fraction: *validation_fraction,
                    stratify: *stratify,
                    seed: *seed,
                    rationale: rationale.clone(),
                };
                r.split = Some((*split_id, split, *folds));
            }
            Event::StepFinished { cost_usd, prompt_tokens, completion_tokens, attempts, calls, .. } => {
                r.spend.calls += u64::from(calls.unwrap_or(*attempts));
                r.spend.cost_usd += cost_usd;
                r.spend.usage +=
                    Usage { prompt_tokens: *prompt_tokens, completion_tokens: *completion_tokens };
            }
            Event::Finding { iteration, text } => findings.push((*iteration, text.clone())),
            Event::SnapshotCommitted { iteration, commit, .. } => {
                commits.insert(*iteration, commit.clone());
            }
            Event::IterationFinished { iteration, record } => {
                finished.insert(*iteration, record.clone());
            }
            Event::RunFinished { .. } => r.finished = true,
            _ => {}
        }
        last_at = at.or(last_at);
    }
    if let (Some((before, start)), Some(last)) = (session, last_at) {
        r.elapsed = Duration::from_secs_f64(before) + last.duration_since(start).unwrap_or_default();
    }
    // A commit counts only for an iteration the journal saw finish.
    r.commits = commits.into_iter().filter(|(n, _)| finished.contains_key(n)).collect();
    r.findings = findings.into_iter().filter(|(n, _)| finished.contains_key(n)).collect();
    r.records = finished.into_values().collect();
    r
}

impl Runner {
    /// Reopens a run for `resume`. `started` is when the resuming command started.
    #[expect(clippy::too_many_arguments, reason = "the run's parts are built by the caller")]
    pub fn resume(
        dir: RunDir,
        backend: Arc<dyn Backend>,
        redactor: Redactor,
        sandbox: Arc<dyn Sandbox>,
        reporter: Arc<dyn Reporter>,
        interrupt: CancellationToken,
        faults: FaultPlan,
        config: Option<RunConfig>,
        started: std::time::Instant,
    ) -> anyhow::Result<Self> {
        let lock = dir.lock()?;
        let manifest = Manifest::read(&dir.run_json())?;
        let entries = journal::read(&dir.journal()).map_err(|e| match e {
            journal::JournalError::Newer { .. } => {
                anyhow::Error::new(UserError::setup(e.to_string()).with_code(exit_code::RESUME_REFUSED))
            }
            other => anyhow::Error::new(other),
        })?;
        let recovered = recover(&entries);
        if recovered.finished {
            return Err(UserError::setup(format!(
                "run `{}` has already finished; there is nothing to resume",
                dir.id()
            ))
            .with_hint("start a new run with `loop-runner run`, or look at it with `loop-runner status`")
            .with_code(exit_code::RESUME_REFUSED)
            .into());
        }
        for (i, record) in recovered.records.iter().enumerate() {
            if record.iteration != i as u32 + 1 {
                return Err(UserError::setup(format!(
                    "the journal of `{}` skips from iteration {i} to {}; it cannot be resumed",
                    dir.id(),
                    record.iteration
                ))
                .with_code(exit_code::RESUME_REFUSED)
                .into());
            }
        }
        let config = match config {
            Some(c) => c,
            None => RunConfig::resolve(&manifest.config, &Overrides::default())?,
        };
        // Unfinished iterations leave nothing behind.
        let next = recovered.records.len() as u32 + 1;
        if let Ok(entries) = std::fs::read_dir(dir.iterations()) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().to_string();
                let n: Option<u32> = name.strip_prefix("iter-").and_then(|n| n.parse().ok());
                if n.is_some_and(|n| n >= next) {
                    fs_err::remove_dir_all(entry.path())?;
                }
            }
        }
        let _ = fs_err::remove_dir_all(dir.root.join("final"));

        let initial = SplitOutput::initial(manifest.target.kind.is_classification(), config.loop_.seed);
        let (split_id, split_answer, folds) = match recovered.split.clone() {
            Some(recorded) => recorded,
            None => {
                let pool = crate::data::read_table(&dir.pool_csv())?;
                let (folds, _) =
                    split::initial_folds(&config.validation, &pool, &manifest.target, initial.seed);
                (1, initial, folds)
            }
        };
        let choice = crate::choice::Choice::of(manifest.target.metric, &recovered.records);
        // Only a choice on the split in force counts (a later split may not have scored yet).
        let best = choice
            .best()
            .filter(|(n, _)| recovered.records.iter().any(|r| r.iteration == *n && r.split_id == split_id));
        let workspace = Workspace::open_or_init(&dir.workspace())?;
        let recorded: Vec<(u32, git2::Oid)> = recovered
            .commits
            .iter()
            .map(|(n, c)| git2::Oid::from_str(c).map(|oid| (*n, oid)))
            .collect::<Result<_, _>>()?;
        let best_commit = best.and_then(|(n, _)| recorded.iter().find(|(i, _)| *i == n).map(|(_, c)| *c));
        workspace.reconcile(&recorded, best_commit)?;
        drop(workspace);

        let inputs = RunInputs {
            task: manifest.task,
            target: manifest.target,
            profile: manifest.profile,
            config,
            budget: manifest.budget_seconds.map(Duration::from_secs_f64),
            stop_after: manifest.stop_after,
            faults,
            started,
            decisions: None,
        };
        // The split's files are a function of the pool and the recorded split: written again.
        let (split, train_rows, validation_rows) =
            split::materialize(&dir, &inputs.target, &split_answer, split_id, folds)?;
        let mut journal = Journal::open(&dir.journal())?;
        journal.append(session(&inputs, recovered.elapsed))?;
        if recovered.split.is_none() {
            // The crash came before the first split was recorded: record it now, as `create` does.
            journal.append(Event::SplitMade {
                split_id,
                validation_fraction: split_answer.validation_fraction,
                stratify: split_answer.stratify,
                seed: split_answer.seed,
                train_rows,
                validation_rows,
                rationale: split_answer.rationale.clone(),
                folds,
            })?;
        }
        let pool_labels = if inputs.target.kind.is_classification() {
            Some(target_labels(&read_table(&dir.pool_csv())?, &inputs.target.column)?.into())
        } else {
            None
        };
        let state = State {
            records: recovered.records,
            best,
            choice,
            findings: recovered.findings,
            predictions: BTreeMap::new(),
        };
        let runner = Runner::assemble(
            Parts {
                dir,
                lock,
                inputs,
                backend,
                redactor,
                sandbox,
                reporter,
                interrupt,
                journal,
                elapsed_before: recovered.elapsed,
                split,
                pool_labels,
            },
            state,
        )?;
        runner.agent().restore_spend(recovered.spend);
        Ok(runner)
    }
}
