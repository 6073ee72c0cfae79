//! What every iteration of a run shares: the fixed inputs, the agent, the sandbox, the journal
//! and the budget. Iterations in flight at once hold it through an `Arc`; only the journal and
//! the current split are behind locks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::budget::Budget;
use super::progress::Reporter;
use crate::agent::Agent;
use crate::config::RunConfig;
use crate::data::{Profile, TargetInfo};
use crate::journal::{Entry, Event, Journal, JournalError};
use crate::run_dir::RunDir;
use crate::sandbox::{
    CancellationToken as SandboxCancel, Outcome, RunSpec, Sandbox, SandboxError, SandboxInfo,
};
use crate::scoring::Truth;
use crate::steps::SplitOutput;
use crate::task::Task;

/// The loop's fixed inputs.
pub struct RunInputs {
    pub task: Task,
    pub target: TargetInfo,
    pub profile: Profile,
    pub config: RunConfig,
    pub budget: Option<Duration>,
    /// Stop after this many iterations, without telling agents (replay reproduces a run that
    /// was ended by its budget).
    pub stop_after: Option<u32>,
    /// Crash points for tests of crash safety (`LOOP_RUNNER_FAULT`).
    pub faults: FaultPlan,
    /// When the command started: the budget counts from this instant, set-up included.
    pub started: Instant,
    /// The search's decisions, by iteration, to follow instead of deciding anew (replay: the
    /// original run's timing shaped them).
    pub decisions: Option<Vec<crate::search::Decision>>,
}

/// Deliberate crashes, for testing that a killed run resumes correctly. `journal:N` aborts the
/// process right after its N-th journal entry, `commit:N` in the middle of its N-th commit,
/// `committed:N` after that commit but before the journal records it, `sandbox:N` while its
/// N-th script runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub after_journal: Option<u64>,
    pub in_commit: Option<u32>,
    pub after_commit: Option<u32>,
    pub in_sandbox: Option<u32>,
}

impl FaultPlan {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut plan = FaultPlan::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, n) = part.split_once(':').ok_or_else(|| format!("fault `{part}` is not KIND:N"))?;
            let n: u64 = n.parse().map_err(|_| format!("fault `{part}`: `{n}` is not a number"))?;
            match kind {
                "journal" => plan.after_journal = Some(n),
                "commit" => plan.in_commit = Some(n as u32),
                "committed" => plan.after_commit = Some(n as u32),
                "sandbox" => plan.in_sandbox = Some(n as u32),
                other => {
                    return Err(format!(
                        "unknown fault kind `{other}` (journal, commit, committed, sandbox)"
                    ));
                }
            }
        }
        Ok(plan)
    }
}

/// Counters for [`FaultPlan`].
#[derive(Debug, Default)]
pub(super) struct FaultCounters {
    journal: AtomicU64,
    pub(super) commits: AtomicU32,
    sandbox: AtomicU32,
}

pub(super) fn crash(point: &str) -> ! {
    eprintln!("loop-runner: deliberate crash ({point})");
    std::process::abort()
}

/// The split in force and the labels its validation rows are scored against.
#[derive(Debug, Clone)]
pub(super) struct SplitState {
    pub split: SplitOutput,
    pub id: u32,
    /// The validation labels (with cross-validation: every pool row, in out-of-fold order).
    pub truth: Arc<Truth>,
    /// Cross-validation folds; `None`: a held-out split.
    pub folds: Option<Arc<CvFolds>>,
}

/// The folds candidates are cross-validated on.
#[derive(Debug)]
pub(super) struct CvFolds {
    pub dirs: Vec<crate::folds::FoldDirs>,
    /// Each fold's rows within the out-of-fold order of `SplitState::truth`.
    pub ranges: Vec<std::ops::Range<usize>>,
}

impl SplitState {
    /// The fold ranges scores are averaged over (none: one held-out set).
    pub fn ranges(&self) -> &[std::ops::Range<usize>] {
        self.folds.as_deref().map_or(&[], |f| &f.ranges)
    }
}

/// A run's shared parts.
pub(super) struct Shared {
    pub dir: RunDir,
    pub inputs: RunInputs,
    pub agent: Agent,
    pub sandbox: Arc<dyn Sandbox>,
    pub sandbox_info: SandboxInfo,
    pub journal: Mutex<Journal>,
    pub reporter: Arc<dyn Reporter>,
    pub budget: Budget,
    pub interrupt: CancellationToken,
    /// Cancelled at an interrupt, at the loop's deadline, or when the loop must stop; agent
    /// calls and scripts obey it.
    pub loop_cancel: CancellationToken,
    pub faults: FaultCounters,
    pub split: Mutex<SplitState>,
    /// The pool's class labels (classification), for checking splits an agent proposes.
    pub pool_labels: Option<Arc<[String]>>,
    /// Every step's answer schema, made for this task and sandbox.
    pub schemas: crate::steps::schemas::Schemas,
    /// The sandbox as prompts describe it.
    pub sandbox_brief: String,
    /// sha256 fingerprints of the runner's data files, by (path, size, mtime, inode): they are
    /// recorded with every commit and change only with the split.
    pub fingerprints: Mutex<std::collections::HashMap<crate::data::FileStamp, crate::data::Fingerprint>>,
}

impl Shared {
    /// Appends to the journal (durably) before anything acts on the event.
    pub fn log(&self, event: Event) -> Result<Entry, JournalError> {
        let entry = self.journal.lock().unwrap_or_else(|p| p.into_inner()).append(event)?;
        let count = self.faults.journal.fetch_add(1, Ordering::SeqCst) + 1;
        if self.inputs.faults.after_journal == Some(count) {
            crash("after a journal entry");
        }
        Ok(entry)
    }

    /// Directories no script may see.
    pub fn private(&self) -> Vec<PathBuf> {
        vec![self.dir.holdout()]
    }

    pub fn split(&self) -> SplitState {
        self.split.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why the loop is stopping, when a step was cut short.
    pub fn stop_reason(&self) -> super::StopReason {
        if self.interrupt.is_cancelled() { super::StopReason::Interrupted } else { super::StopReason::Budget }
    }

    /// Runs a script on a blocking thread (the sandbox call blocks until the guest is done).
    pub async fn sandbox_run(
        &self,
        spec: RunSpec,
        cancel: SandboxCancel,
    ) -> Result<Outcome, SandboxRunError> {
        let count = self.faults.sandbox.fetch_add(1, Ordering::SeqCst) + 1;
        if self.inputs.faults.in_sandbox == Some(count) {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                crash("during a sandbox run");
            });
        }
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.run(&spec, &cancel))
            .await
            .map_err(|e| SandboxRunError::Thread(e.to_string()))?
            .map_err(SandboxRunError::Sandbox)
    }

    /// The fingerprint of a data file of the runner's, recorded as `name` (hashed once per
    /// version of the file).
    pub fn fingerprint(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> std::io::Result<crate::data::Fingerprint> {
        let meta = fs_err::metadata(path)?;
        let key = crate::data::FileStamp::of(path, &meta);
        let mut cache = self.fingerprints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = cache.get(&key).filter(|f| f.name == name) {
            return Ok(f.clone());
        }
        let f = crate::data::fingerprint(name, path)?;
        cache.insert(key, f.clone());
        Ok(f)
    }

    /// The commit counter, for the `commit:N` and `committed:N` crash points.
    pub fn next_commit(&self) -> u32 {
        self.faults.commits.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A script could not be run at all.
#[derive(Debug, thiserror::Error)]
pub(super) enum SandboxRunError {
    #[error("the sandbox thread failed: {0}")]
    Thread(String),
    #[error(transparent)]
    Sandbox(SandboxError),
}
