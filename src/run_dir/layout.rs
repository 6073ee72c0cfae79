//! The run directory and what lives where.
//!
//! ```text
//! runs/<run-id>/
//!   run.json            resolved task and configuration (no secrets)
//!   journal.jsonl       events (source of truth)
//!   transcript.jsonl    every agent request and response (secrets redacted)
//!   log.jsonl           tracing log
//!   data/train.csv      agent-visible training rows, mounted read-only into the sandbox
//!   inputs/validation-S/ validation features of split S (no labels), mounted for inference
//!   folds/split-S/fold-F/ cross-validation: fold F's training rows (data/) and held-out
//!                       features (input/), mounted for that fold's scripts
//!   refit/data/         every training row, for the refit after the loop
//!   holdout/            validation labels of every split and the test split: never mounted
//!   iterations/iter-N/  each iteration: `work/` is the script's writable /work; next to it
//!                       the runner's own files (the agent's answers in `steps/`, metrics,
//!                       environment), which no script can reach
//!   workspace/          the git repository (branch `best` checked out)
//!   report/             REPORT.md, report.html, summary.json
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Creates `runs_dir/<task>-<UTC timestamp>[-N]` with its subdirectories.
    pub fn create(runs_dir: &Path, task_name: &str) -> std::io::Result<Self> {
        fs_err::create_dir_all(runs_dir)?;
        Self::create_at(&Self::fresh_root(runs_dir, task_name, |p| p.exists()))
    }

    /// `runs_dir/<task>-<UTC timestamp>[-N]`, the first for which `taken` is false.
    pub fn fresh_root(runs_dir: &Path, task_name: &str, taken: impl Fn(&Path) -> bool) -> PathBuf {
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect::<String>()
            .replace('T', "-");
        let name: String = task_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let mut root = runs_dir.join(format!("{name}-{stamp}"));
        let mut n = 1;
        while taken(&root) {
            n += 1;
            root = runs_dir.join(format!("{name}-{stamp}-{n}"));
        }
        root
    }

    /// Creates the run directory exactly at `root` (its parent is created if missing; `root`
    /// itself must not exist).
    pub fn create_at(root: &Path) -> std::io::Result<Self> {
        if let Some(parent) = root.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::create_dir(root)?;
        let dir = Self { root: root.to_path_buf() };
        for sub in [dir.data(), dir.root.join("inputs"), dir.holdout(), dir.iterations(), dir.report()] {
            fs_err::create_dir_all(sub)?;
        }
        Ok(dir)
    }

    /// An existing run directory.
    pub fn open(path: &Path) -> Result<Self, crate::error::UserError> {
        let dir = Self { root: path.to_path_buf() };
        if !dir.journal().is_file() {
            return Err(crate::error::UserError::setup(format!(
                "`{}` is not a loop-runner run directory (no journal.jsonl)",
                path.display()
            ))
            .with_hint("pass the directory `loop-runner run` printed, e.g. runs/credit-20261123-101500"));
        }
        Ok(dir)
    }

    pub fn id(&self) -> String {
        self.root.file_name().unwrap_or_default().to_string_lossy().to_string()
    }
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal.jsonl")
    }
    pub fn transcript(&self) -> PathBuf {
        self.root.join("transcript.jsonl")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("log.jsonl")
    }
    pub fn run_json(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn train_csv(&self) -> PathBuf {
        self.data().join("train.csv")
    }
    /// The validation features of split `split_id` (`features.csv`), the only data inference
    /// scripts see.
    pub fn validation_inputs(&self, split_id: u32) -> PathBuf {
        self.root.join("inputs").join(format!("validation-{split_id}"))
    }
    /// The training rows a refit trains on (`train.csv`: training and validation rows together).
    pub fn refit_data(&self) -> PathBuf {
        self.root.join("refit").join("data")
    }
    /// The cross-validation folds of split `split_id` (see [`crate::folds`]).
    pub fn folds(&self, split_id: u32) -> PathBuf {
        self.root.join("folds").join(format!("split-{split_id}"))
    }
    pub fn holdout(&self) -> PathBuf {
        self.root.join("holdout")
    }
    /// The validation labels of split `split_id`. Every split's labels are kept, so a snapshot
    /// made on an earlier split can still be audited.
    pub fn validation_labels(&self, split_id: u32) -> PathBuf {
        self.holdout().join(format!("validation-{split_id}.csv"))
    }
    /// Where runs written before per-split files kept the (single) validation labels.
    pub fn legacy_validation_labels(&self) -> PathBuf {
        self.holdout().join("validation.csv")
    }
    pub fn test_csv(&self) -> PathBuf {
        self.holdout().join("test.csv")
    }
    pub fn pool_csv(&self) -> PathBuf {
        self.holdout().join("pool.csv")
    }
    pub fn iterations(&self) -> PathBuf {
        self.root.join("iterations")
    }
    /// Iteration `n`'s directory (the runner's files; the script's are in [`Self::work`]).
    pub fn iteration(&self, n: u32) -> PathBuf {
        self.iterations().join(crate::snapshot::tag_name(n))
    }
    /// Iteration `n`'s scratch directory, mounted read-write at `/work`.
    pub fn work(&self, n: u32) -> PathBuf {
        self.iteration(n).join("work")
    }
    pub fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report")
    }
}
