//! Batches of runs. A sweep file (`tasks × seeds × agents`) expands into a manifest: index →
//! a run directory with a stable id, written before anything starts. Each index is then run (or
//! resumed) on its own by `sweep-run MANIFEST I`, locally N at a time, as a Slurm job array task or
//! a Kubernetes Indexed Job pod. The run directories stay the only record of what happened.

pub mod report;
pub mod scheduler;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::journal::{self, Event};

/// `sweep.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The batch's name [default: the file's stem].
    pub name: Option<String>,
    /// Task files or globs, relative to the sweep file.
    pub tasks: Vec<String>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Each run's budget, e.g. `30m`.
    pub budget: String,
    pub iterations: Option<u32>,
    /// `builtin` or `openai` [default: builtin].
    #[serde(default = "default_agents")]
    pub agents: Vec<String>,
    /// Models for `openai` agents (one run per model).
    #[serde(default)]
    pub models: Vec<String>,
    pub sandbox: Option<String>,
    pub validation: Option<String>,
    /// A `loop-runner.toml` for every run, relative to the sweep file.
    pub config: Option<String>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

fn default_agents() -> Vec<String> {
    vec!["builtin".into()]
}

/// The manifest format this build writes.
pub const FORMAT: u32 = 1;

/// What a batch is: every run, by index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub sweep_file: PathBuf,
    pub runs: Vec<Entry>,
}

/// One run of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub index: usize,
    /// `<task>-<agent>[-<model>]-s<seed>`: stable across re-expansions of the same file.
    pub id: String,
    pub task: PathBuf,
    pub task_name: String,
    pub seed: u64,
    pub agent: String,
    pub model: Option<String>,
    pub sandbox: Option<String>,
    pub validation: Option<String>,
    pub iterations: Option<u32>,
    pub budget_seconds: f64,
    pub config: Option<PathBuf>,
    pub run_dir: PathBuf,
}

/// Where a run of the batch stands, from its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No run directory with a started journal yet.
    Pending,
    /// Started and not finished: crashed, killed, preempted, or going now. `sweep-run` resumes it.
    Unfinished,
    Finished,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Unfinished => "unfinished",
            State::Finished => "finished",
        }
    }
}

impl Entry {
    pub fn state(&self) -> Result<State, journal::JournalError> {
        let path = self.run_dir.join("journal.jsonl");
        if !path.is_file() {
            return Ok(State::Pending);
        }
        let entries = journal::read(&path)?;
        if entries.iter().any(|e| matches!(e.event, Event::RunFinished { .. })) {
            Ok(State::Finished)
        } else if entries.iter().any(|e| matches!(e.event, Event::RunStarted { .. })) {
            Ok(State::Unfinished)
        } else {
            Ok(State::Pending)
        }
    }
}

impl SweepFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = fs_err::read_to_string(path)?;
        let file: SweepFile = toml::from_str(&text).map_err(|e| {
            UserError::setup(format!("sweep file `{}`: {e}", path.display())).with_hint(
                "fields: tasks, seeds, budget, iterations, agents, models, sandbox, validation, config, name",
            )
        })?;
        Ok(file)
    }

    /// Every run, in a stable order (tasks, then agents/models, then seeds), placed under
    /// `runs_dir/<name>/`.
    pub fn expand(&self, path: &Path, runs_dir: &Path) -> anyhow::Result<Manifest> {
        let base = path.parent().unwrap_or(Path::new("."));
        let name = match &self.name {
            Some(n) => n.clone(),
            None => path.file_stem().unwrap_or_default().to_string_lossy().to_string(),
        };
        check_name(&name)?;
        let budget = crate::units::parse_duration(&self.budget)
            .map_err(|e| UserError::setup(format!("sweep file `{}`: budget: {e}", path.display())))?;
        let mut tasks = Vec::new();
        for pattern in &self.tasks {
            let full = base.join(pattern);
            let found = crate::bench::glob(&full.to_string_lossy())?;
            if found.is_empty() {
                return Err(UserError::setup(format!(
                    "sweep file `{}`: no task file matches `{pattern}`",
                    path.display()
                ))
                .into());
            }
            for task in found {
                let task = fs_err::canonicalize(&task)?;
                if !tasks.contains(&task) {
                    tasks.push(task);
                }
            }
        }
        if tasks.is_empty() || self.seeds.is_empty() || self.agents.is_empty() {
            return Err(UserError::setup(format!(
                "sweep file `{}` expands to no runs: it needs tasks, seeds and agents",
                path.display()
            ))
            .into());
        }
        let mut agents: Vec<(String, Option<String>)> = Vec::new();
        for agent in &self.agents {
            match agent.as_str() {
                "builtin" => agents.push((agent.clone(), None)),
                "openai" if self.models.is_empty() => agents.push((agent.clone(), None)),
                "openai" => agents.extend(self.models.iter().map(|m| (agent.clone(), Some(m.clone())))),
                other => {
                    return Err(UserError::setup(format!(
                        "sweep file `{}`: unknown agent `{other}` (builtin or openai)",
                        path.display()
                    ))
                    .into());
                }
            }
        }
        let check = |field: &str, value: &Option<String>, allowed: &[&str]| match value {
            Some(v) if !allowed.contains(&v.as_str()) => Err(UserError::setup(format!(
                "sweep file `{}`: {field} `{v}` is not one of {}",
                path.display(),
                allowed.join(", ")
            ))),
            _ => Ok(()),
        };
        check("sandbox", &self.sandbox, &["wasi", "process"])?;
        check("validation", &self.validation, &["auto", "holdout", "cv"])?;
        let config = match &self.config {
            Some(c) => Some(fs_err::canonicalize(base.join(c))?),
            None => None,
        };
        fs_err::create_dir_all(runs_dir)?;
        let root = fs_err::canonicalize(runs_dir)?.join(&name);
        let mut runs = Vec::new();
        for task in &tasks {
            let task_name = crate::task::Task::load(task)?.name;
            for (agent, model) in &agents {
                for seed in &self.seeds {
                    let model_part = model.as_deref().map(|m| format!("-{}", slug(m))).unwrap_or_default();
                    let id = format!("{}-{agent}{model_part}-s{seed}", slug(&task_name));
                    if runs.iter().any(|e: &Entry| e.id == id) {
                        return Err(UserError::setup(format!(
                            "sweep file `{}`: two runs would be called `{id}` (two tasks named `{task_name}`?)",
                            path.display()
                        ))
                        .into());
                    }
                    runs.push(Entry {
                        index: runs.len(),
                        run_dir: root.join(&id),
                        id,
                        task: task.clone(),
                        task_name: task_name.clone(),
                        seed: *seed,
                        agent: agent.clone(),
                        model: model.clone(),
                        sandbox: self.sandbox.clone(),
                        validation: self.validation.clone(),
                        iterations: self.iterations,
                        budget_seconds: budget.as_secs_f64(),
                        config: config.clone(),
                    });
                }
            }
        }
        Ok(Manifest { format: FORMAT, name, sweep_file: fs_err::canonicalize(path)?, runs })
    }
}

impl Manifest {
    /// `runs_dir/<name>-manifest.json`.
    pub fn path_in(runs_dir: &Path, name: &str) -> PathBuf {
        runs_dir.join(format!("{name}-manifest.json"))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = fs_err::read_to_string(path).map_err(|e| {
            UserError::setup(format!("cannot read the sweep manifest: {e}"))
                .with_hint("`loop-runner sweep sweep.toml` writes it and prints its path")
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            UserError::setup(format!("`{}` is not a loop-runner sweep manifest: {e}", path.display()))
        })?;
        if manifest.format > FORMAT {
            return Err(UserError::setup(format!(
                "`{}` was written by a newer loop-runner (manifest format {})",
                path.display(),
                manifest.format
            ))
            .into());
        }
        Ok(manifest)
    }

    /// Writes the manifest, or checks that the one already there is the same batch (so re-running
    /// `sweep` resumes it instead of starting another).
    pub fn write_or_check(&self, path: &Path) -> anyhow::Result<()> {
        if path.is_file() {
            let existing = Self::read(path)?;
            if existing.runs != self.runs {
                return Err(UserError::setup(format!(
                    "`{}` describes a different batch than `{}` does now",
                    path.display(),
                    self.sweep_file.display()
                ))
                .with_hint("give the changed sweep another `name`, or remove the old manifest and its runs")
                .into());
            }
            return Ok(());
        }
        let part = path.with_extension("json.part");
        fs_err::write(&part, serde_json::to_string_pretty(self)?)?;
        fs_err::File::open(&part)?.sync_all()?;
        fs_err::rename(&part, path)?;
        Ok(())
    }

    pub fn entry(&self, index: usize) -> anyhow::Result<&Entry> {
        self.runs.get(index).ok_or_else(|| {
            UserError::usage(format!(
                "sweep `{}` has runs 0 to {}; there is no run {index}",
                self.name,
                self.runs.len().saturating_sub(1)
            ))
            .into()
        })
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(UserError::setup(format!(
            "sweep name `{name}`: use letters, digits, `-`, `_` and `.` (it names files and directories)"
        ))
        .into());
    }
    Ok(())
}

fn slug(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_sweep(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_sweep_expands_in_a_stable_order_with_stable_ids() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let (dir, path) = fixture_sweep(&format!(
            "tasks = [\"{0}/penguins/task.toml\", \"{0}/credit/task.toml\"]\nseeds = [1, 2]\nbudget = \"2m\"\n",
            fixtures.display()
        ));
        let m = SweepFile::load(&path).unwrap().expand(&path, &dir.path().join("runs")).unwrap();
        let ids: Vec<&str> = m.runs.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["penguins-builtin-s1", "penguins-builtin-s2", "credit-builtin-s1", "credit-builtin-s2"]
        );
        assert_eq!(m.name, "bench");
        assert!(
            m.runs
                .iter()
                .all(|e| e.budget_seconds == 120.0 && e.run_dir.ends_with(format!("bench/{}", e.id)))
        );
        let again = SweepFile::load(&path).unwrap().expand(&path, &dir.path().join("runs")).unwrap();
        assert_eq!(m, again);
        let manifest = Manifest::path_in(&dir.path().join("runs"), &m.name);
        m.write_or_check(&manifest).unwrap();
        m.write_or_check(&manifest).unwrap();
        let mut changed = m.clone();
        changed.runs.pop();
        assert!(changed.write_or_check(&manifest).is_err());
        assert_eq!(m.entry(3).unwrap().index, 3);
        assert!(m.entry(4).is_err());
        assert_eq!(m.runs[0].state().unwrap(), State::Pending);
    }

    #[test]
    fn bad_sweep_files_say_what_is_wrong() {
        let (dir, path) = fixture_sweep("tasks = [\"nope/*.toml\"]\nbudget = \"2m\"\n");
        let err = SweepFile::load(&path).unwrap().expand(&path, dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("no task file matches"), "{err:#}");
        let (_dir, path) = fixture_sweep("tasks = []\nbudget = \"2m\"\nbogus = 1\n");
        assert!(format!("{:#}", SweepFile::load(&path).unwrap_err()).contains("bogus"));
    }
}
