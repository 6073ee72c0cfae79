//! Export to MLflow's file-store layout (`mlruns/`): one experiment per task, one MLflow run per
//! loop-runner run, and a nested run per iteration with its params, metrics (step = iteration),
//! tags and the snapshot's files as artifacts.
//!
//! Ids are derived from the run's id, so exporting a run again replaces its MLflow runs instead
//! of adding copies, and runs of one task land in one experiment however often they are exported.

use std::path::{Path, PathBuf};

use crate::run_dir::RunDir;
use crate::tables::rows::{self, IterationRow, Millis, RunRow};

/// MLflow's run statuses (`RunStatus` in its protobuf).
const RUNNING: u8 = 1;
const FINISHED: u8 = 3;
const FAILED: u8 = 4;
const KILLED: u8 = 5;
/// MLflow refuses longer param values and tag values.
const MAX_PARAM: usize = 6000;
const MAX_TAG: usize = 8000;

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Exported {
    /// `(experiment name, experiment id)`.
    pub experiments: Vec<(String, String)>,
    /// `(loop-runner run id, MLflow run id)`.
    pub runs: Vec<(String, String)>,
    pub iterations: usize,
}

/// Writes `dirs` into the MLflow file store at `out` (created if missing).
pub fn export(dirs: &[RunDir], out: &Path) -> anyhow::Result<Exported> {
    // Every run is read before anything is written: a bad one leaves the store untouched.
    let mut all = Vec::new();
    for dir in dirs {
        let rows =
            rows::read_run(dir).map_err(|e| e.context(format!("reading run `{}`", dir.root.display())))?;
        all.push((dir, rows));
    }
    fs_err::create_dir_all(out)?;
    let out = fs_err::canonicalize(out)?;
    let mut exported = Exported::default();
    ensure_experiment(&out, "0", "Default")?;
    for (dir, rows) in &all {
        let Some(run) = &rows.run else { continue };
        let experiment = experiment_id(&out, &run.task)?;
        ensure_experiment(&out, &experiment, &run.task)?;
        if !exported.experiments.iter().any(|(_, id)| *id == experiment) {
            exported.experiments.push((run.task.clone(), experiment.clone()));
        }
        let parent = uuid(&format!("loop-runner run {}", run.run_id));
        write_parent(&out.join(&experiment), &experiment, &parent, run, &rows.iterations, dir)?;
        let workspace = crate::snapshot::Workspace::open(&dir.workspace()).ok();
        for iteration in &rows.iterations {
            let id = uuid(&format!("loop-runner run {} iteration {}", run.run_id, iteration.iteration));
            let run_dir = write_iteration(&out.join(&experiment), &experiment, &id, &parent, run, iteration)?;
            if let (Some(workspace), Some(commit)) = (&workspace, &iteration.commit) {
                let oid = workspace.resolve(commit)?;
                workspace.materialize(oid, &run_dir.join("artifacts"))?;
            }
            exported.iterations += 1;
        }
        exported.runs.push((run.run_id.clone(), parent));
    }
    Ok(exported)
}

/// One MLflow run's files.
struct RunFiles {
    dir: PathBuf,
}

impl RunFiles {
    /// A fresh run directory (an earlier export of the same run is replaced).
    fn create(experiment_dir: &Path, id: &str) -> anyhow::Result<Self> {
        let dir = experiment_dir.join(id);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        for sub in ["params", "metrics", "tags", "artifacts"] {
            fs_err::create_dir_all(dir.join(sub))?;
        }
        Ok(Self { dir })
    }

    fn meta(
        &self,
        experiment: &str,
        id: &str,
        name: &str,
        status: u8,
        start: Option<Millis>,
        end: Option<Millis>,
    ) -> anyhow::Result<()> {
        let time = |t: Option<Millis>| t.map_or("null".to_string(), |t| t.to_string());
        let text = format!(
            "artifact_uri: {}\nend_time: {}\nentry_point_name: ''\nexperiment_id: '{experiment}'\nlifecycle_stage: active\nrun_id: {id}\nrun_name: {}\nrun_uuid: {id}\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: {}\nstatus: {status}\ntags: []\nuser_id: loop-runner\n",
            file_uri(&self.dir.join("artifacts")),
            time(end),
            yaml_str(name),
            time(start),
        );
        fs_err::write(self.dir.join("meta.yaml"), text)?;
        Ok(())
    }

    fn param(&self, key: &str, value: &str) -> anyhow::Result<()> {
        fs_err::write(self.dir.join("params").join(key_name(key)), truncate(value, MAX_PARAM))?;
        Ok(())
    }

    fn tag(&self, key: &str, value: &str) -> anyhow::Result<()> {
        fs_err::write(self.dir.join("tags").join(key_name(key)), truncate(value, MAX_TAG))?;
        Ok(())
    }

    /// A metric's history: `(timestamp ms, value, step)` per line.
    fn metric(&self, key: &str, points: &[(Millis, f64, i64)]) -> anyhow::Result<()> {
        let text: String = points.iter().map(|(t, v, s)| format!("{t} {v} {s}\n")).collect();
        if !text.is_empty() {
            fs_err::write(self.dir.join("metrics").join(key_name(key)), text)?;
        }
        Ok(())
    }
}

fn write_parent(
    experiment_dir: &Path,
    experiment: &str,
    id: &str,
    run: &RunRow,
    iterations: &[IterationRow],
    dir: &RunDir,
) -> anyhow::Result<()> {
    let files = RunFiles::create(experiment_dir, id)?;
    let status = if run.state == "finished" { FINISHED } else { RUNNING };
    files.meta(experiment, id, &run.run_id, status, run.started_at, run.finished_at)?;
    let params: [(&str, Option<String>); 9] = [
        ("task", Some(run.task.clone())),
        ("metric", Some(run.metric.clone())),
        ("agent", Some(run.agent.clone())),
        ("model", Some(run.model.clone())),
        ("sandbox", Some(run.sandbox.clone())),
        ("validation", Some(run.validation.clone())),
        ("folds", run.folds.map(|f| f.to_string())),
        ("budget_seconds", run.budget_seconds.map(|b| b.to_string())),
        ("loop_runner_version", Some(run.loop_runner_version.clone())),
    ];
    for (key, value) in params {
        if let Some(value) = value {
            files.param(key, &value)?;
        }
    }
    let end = run.finished_at.or(run.started_at).unwrap_or(0);
    let last = iterations.iter().map(|i| i.iteration).max().unwrap_or(0);
    for (key, value, step) in [
        ("validation_score", run.validation_score, run.best_iteration.unwrap_or(last)),
        ("test_score", run.test_score, run.final_iteration.unwrap_or(last)),
        ("wall_seconds", Some(run.wall_seconds), last),
        ("cost_usd", Some(run.cost_usd), last),
        ("iterations", Some(run.iterations as f64), last),
        ("failed_iterations", Some(run.failed_iterations as f64), last),
    ] {
        if let Some(value) = value {
            files.metric(key, &[(end, value, step)])?;
        }
    }
    // The score curve on the parent, so MLflow plots the run's progress without opening children.
    let mut curve = Vec::new();
    let mut running_best = Vec::new();
    let mut best: Option<f64> = None;
    for i in iterations.iter().filter(|i| i.status == "succeeded") {
        let Some(score) = i.validation_score else { continue };
        let t = i.finished_at.unwrap_or(end);
        curve.push((t, score, i.iteration));
        let better = best.is_none_or(|b| if run.higher_is_better { score > b } else { score < b });
        if better {
            best = Some(score);
        }
        running_best.push((t, best.unwrap_or(score), i.iteration));
    }
    files.metric("iteration_validation_score", &curve)?;
    files.metric("best_validation_score", &running_best)?;
    let best_commit = iterations.iter().find(|i| i.is_final).and_then(|i| i.commit.clone());
    for (key, value) in [
        ("mlflow.runName", Some(run.run_id.clone())),
        ("mlflow.user", Some("loop-runner".to_string())),
        ("mlflow.source.name", Some("loop-runner".to_string())),
        ("mlflow.source.type", Some("LOCAL".to_string())),
        ("loop_runner.run_id", Some(run.run_id.clone())),
        ("loop_runner.run_dir", Some(fs_err::canonicalize(&dir.root)?.display().to_string())),
        ("loop_runner.state", Some(run.state.clone())),
        ("loop_runner.stop_reason", run.stop_reason.clone()),
        ("loop_runner.final_commit", best_commit),
        ("agent", Some(run.agent.clone())),
        ("sandbox", Some(run.sandbox.clone())),
    ] {
        if let Some(value) = value {
            files.tag(key, &value)?;
        }
    }
    let artifacts = files.dir.join("artifacts");
    for name in ["REPORT.md", "report.html", "summary.json"] {
        let source = dir.report().join(name);
        if source.is_file() {
            fs_err::copy(&source, artifacts.join(name))?;
        }
    }
    fs_err::copy(dir.journal(), artifacts.join("journal.jsonl"))?;
    Ok(())
}

fn write_iteration(
    experiment_dir: &Path,
    experiment: &str,
    id: &str,
    parent: &str,
    run: &RunRow,
    i: &IterationRow,
) -> anyhow::Result<PathBuf> {
    let files = RunFiles::create(experiment_dir, id)?;
    let status = match i.status.as_str() {
        "failed" => FAILED,
        "cut" => KILLED,
        _ => FINISHED,
    };
    let name = crate::snapshot::tag_name(i.iteration as u32);
    files.meta(experiment, id, &name, status, i.started_at.or(i.finished_at), i.finished_at)?;
    files.param("family", &i.family)?;
    files.param("operation", &i.operation)?;
    files.param("split_id", &i.split_id.to_string())?;
    if let Some(p) = i.parent {
        files.param("parent_iteration", &p.to_string())?;
    }
    let representation = [
        ("representation", &i.representation),
        ("numeric", &i.numeric),
        ("categorical", &i.categorical),
        ("missing", &i.missing),
        ("drop_columns", &i.drop_columns),
    ];
    for (key, value) in representation {
        if let Some(value) = value {
            files.param(key, value)?;
        }
    }
    let hyperparameters: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&i.hyperparameters).unwrap_or_default();
    for (key, value) in &hyperparameters {
        files.param(&format!("hp.{key}"), value.as_str().unwrap_or_default())?;
    }
    let t = i.finished_at.or(run.started_at).unwrap_or(0);
    let step = i.iteration;
    for (key, value) in [
        ("validation_score", i.validation_score),
        ("test_score", i.test_score),
        ("seconds", Some(i.seconds)),
        ("script_seconds", Some(i.script_seconds)),
        ("runner_seconds", Some(i.runner_seconds)),
        ("cost_usd", Some(i.cost_usd)),
        ("prompt_tokens", Some(i.prompt_tokens as f64)),
        ("completion_tokens", Some(i.completion_tokens as f64)),
    ] {
        if let Some(value) = value {
            files.metric(key, &[(t, value, step)])?;
        }
    }
    for (key, value) in [
        ("mlflow.parentRunId", Some(parent.to_string())),
        ("mlflow.runName", Some(name.clone())),
        ("mlflow.user", Some("loop-runner".to_string())),
        ("mlflow.source.name", Some("loop-runner".to_string())),
        ("mlflow.source.type", Some("LOCAL".to_string())),
        ("loop_runner.run_id", Some(run.run_id.clone())),
        ("loop_runner.iteration", Some(i.iteration.to_string())),
        ("loop_runner.status", Some(i.status.clone())),
        ("loop_runner.failed_step", i.failed_step.clone()),
        ("loop_runner.status_detail", i.status_detail.clone()),
        ("loop_runner.reason", Some(i.reason.clone()).filter(|r| !r.is_empty())),
        ("loop_runner.commit", i.commit.clone()),
        ("loop_runner.best", Some(i.is_best.to_string())),
        ("loop_runner.final", Some(i.is_final.to_string())),
        ("agent", Some(run.agent.clone())),
        ("sandbox", Some(run.sandbox.clone())),
    ] {
        if let Some(value) = value {
            files.tag(key, &value)?;
        }
    }
    Ok(files.dir)
}

/// The id of the experiment named `name` in `out`, or a new one derived from the name.
fn experiment_id(out: &Path, name: &str) -> anyhow::Result<String> {
    let wanted = format!("name: {}", yaml_str(name));
    for entry in fs_err::read_dir(out)?.filter_map(Result::ok) {
        let meta = entry.path().join("meta.yaml");
        if let Ok(text) = std::fs::read_to_string(&meta)
            && text.lines().any(|l| l == wanted)
        {
            return Ok(entry.file_name().to_string_lossy().to_string());
        }
    }
    let hash = crate::fsx::sha256_bytes(format!("loop-runner experiment {name}").as_bytes());
    // MLflow's own ids are positive decimal integers.
    let id = u64::from_str_radix(&hash[..15], 16).expect("hex digits") + 1;
    Ok(id.to_string())
}

fn ensure_experiment(out: &Path, id: &str, name: &str) -> anyhow::Result<()> {
    let dir = out.join(id);
    if dir.join("meta.yaml").is_file() {
        return Ok(());
    }
    fs_err::create_dir_all(&dir)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let text = format!(
        "artifact_location: {}\ncreation_time: {now}\nexperiment_id: '{id}'\nlast_update_time: {now}\nlifecycle_stage: active\nname: {}\n",
        file_uri(&dir),
        yaml_str(name)
    );
    fs_err::write(dir.join("meta.yaml"), text)?;
    Ok(())
}

/// 32 hex digits, as MLflow's run ids.
fn uuid(seed: &str) -> String {
    crate::fsx::sha256_bytes(seed.as_bytes())[..32].to_string()
}

/// A YAML single-quoted scalar.
fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace(['\n', '\r'], " ").replace('\'', "''"))
}

fn file_uri(path: &Path) -> String {
    let text = path.display().to_string().replace('%', "%25").replace(' ', "%20");
    format!("file://{text}")
}

/// A param, metric or tag key as a single safe file name: MLflow's characters (letters, digits,
/// `_ - . space`), anything else as `_`, and no `..`.
fn key_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ') { c } else { '_' })
        .collect();
    while name.contains("..") {
        name = name.replace("..", "_.");
    }
    if name.is_empty() || name.starts_with('.') || name.starts_with(' ') {
        name.insert(0, '_');
    }
    name
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_leave_their_directory() {
        assert_eq!(key_name("hp.max_depth"), "hp.max_depth");
        assert_eq!(key_name("../../etc/passwd"), "_.__._etc_passwd");
        assert_eq!(key_name(".."), "_.");
        assert_eq!(key_name(""), "_");
        assert_eq!(key_name("a/b"), "a_b");
        assert!(!key_name("x/..").contains('/'));
    }

    #[test]
    fn yaml_strings_are_quoted() {
        assert_eq!(yaml_str("it's: [x]\n"), "'it''s: [x] '");
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
