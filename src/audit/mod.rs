//! Reproducibility checks on a finished run: `audit` re-runs a snapshot and compares with what
//! was recorded; `replay` compares a replayed run's snapshots with the original's.
//!
//! The journal is the record: the tree hash of every committed iteration, the sha256 of its
//! validation predictions and model files, and its score. WASI runs are deterministic, so
//! everything must match bit for bit.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::data::{TargetInfo, fingerprint};
use crate::guest_fs::GuestDir;
use crate::journal::{self, Event, IterationRecord};
use crate::policy::{self, Script, ScriptKind};
use crate::run_dir::{Manifest, RunDir};
use crate::sandbox::{Outcome, Sandbox};
use crate::scoring::{Truth, score};
use crate::snapshot::{Workspace, tag_name};

mod cv;
mod record;

pub use record::{AuditRecord, record, records};

/// One comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub recorded: String,
    pub now: String,
    pub ok: bool,
}

impl Check {
    fn new(what: impl Into<String>, recorded: impl Into<String>, now: impl Into<String>) -> Self {
        let (recorded, now) = (recorded.into(), now.into());
        Self { what: what.into(), ok: recorded == now, recorded, now }
    }

    fn flag(what: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            what: what.into(),
            recorded: "as committed".into(),
            now: if ok { "as committed".into() } else { detail },
            ok,
        }
    }
}

/// The recorded facts about one committed iteration.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub iteration: u32,
    pub commit: String,
    pub tree: String,
    pub record: IterationRecord,
}

/// Everything the journal recorded about committed, finished iterations, by iteration.
pub fn recorded_iterations(dir: &RunDir) -> anyhow::Result<Vec<Recorded>> {
    let entries = journal::read(&dir.journal())?;
    let mut commits = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for e in &entries {
        match &e.event {
            Event::SnapshotCommitted { iteration, commit, tree, .. } => {
                commits.insert(*iteration, (commit.clone(), tree.clone()));
            }
            Event::IterationFinished { iteration, record } => {
                if let Some((commit, tree)) = commits.get(iteration) {
                    out.retain(|r: &Recorded| r.iteration != *iteration);
                    out.push(Recorded {
                        iteration: *iteration,
                        commit: commit.clone(),
                        tree: tree.clone(),
                        record: record.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Audits the snapshot `rev` (default `best`) of a run.
pub fn audit(
    dir: &RunDir,
    rev: &str,
    retrain: bool,
    sandbox: &Arc<dyn Sandbox>,
) -> anyhow::Result<Vec<Check>> {
    let manifest = Manifest::read(&dir.run_json())?;
    let workspace = Workspace::open_or_init(&dir.workspace())?;
    let commit = workspace.resolve(rev)?;
    let recorded = recorded_iterations(dir)?;
    let Some(rec) = recorded.iter().find(|r| r.commit == commit.to_string()) else {
        anyhow::bail!("`{rev}` ({commit}) is not a commit the journal recorded: the history was rewritten");
    };
    let mut checks = vec![Check::new(
        format!("snapshot tree of {}", tag_name(rec.iteration)),
        &rec.tree,
        workspace.tree_id(commit)?,
    )];
    if rev == "best" {
        let drift = worktree_drift(&workspace, commit, &dir.workspace())?;
        checks.push(Check::flag("workspace working tree", drift.is_empty(), drift.join(", ")));
    }
    let work = tempfile::Builder::new().prefix("loop-runner-audit-").tempdir()?;
    let root = work.path().join("work");
    workspace.materialize(commit, &root)?;
    if !root.join("inference.py").is_file() {
        return Err(crate::error::UserError::usage(format!(
            "{} made no model ({}): its snapshot has no scripts to run",
            tag_name(rec.iteration),
            rec.record.status
        ))
        .with_hint(format!(
            "audit an iteration that was scored; `loop-runner status {}` lists them",
            dir.root.display()
        ))
        .into());
    }

    // Data fingerprints: the snapshot's copies and the run's private labels of the split the
    // snapshot was scored on.
    let data: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(root.join("data.json"))?)?;
    let target: TargetInfo = serde_json::from_value(data["target"].clone())?;
    let metrics: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(root.join("metrics.json"))?)?;
    let folds = metrics["split"]["folds"].as_u64().map(|k| k as u32);
    let labels = match dir.validation_labels(rec.record.split_id) {
        path if path.is_file() => path,
        _ => dir.legacy_validation_labels(),
    };
    for (key, path) in [
        ("train", root.join("data/train.csv")),
        ("validation_features", root.join("input/features.csv")),
        ("validation_labels", labels.clone()),
    ] {
        let now = fingerprint(key, &path).map(|f| f.sha256).unwrap_or_else(|e| format!("unreadable: {e}"));
        let recorded = data[key]["sha256"].as_str().unwrap_or_default();
        checks.push(Check::new(
            format!("data {} sha256", data[key]["name"].as_str().unwrap_or(key)),
            recorded,
            now,
        ));
    }

    // The sandbox it ran in.
    let environment: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(root.join("environment.json"))?)?;
    let info = sandbox.info();
    let recorded_kind = environment["sandbox"]["kind"].as_str().unwrap_or("(none)").to_string();
    checks.push(Check::new("sandbox kind", &recorded_kind, info.kind.to_string()));
    if info.kind == crate::sandbox::SandboxKind::Wasi {
        checks.push(Check::new(
            "sandbox module sha256",
            environment["sandbox"]["module_sha256"].as_str().unwrap_or("(none)"),
            info.module_sha256.clone().unwrap_or_else(|| "(none)".into()),
        ));
    } else {
        checks.push(Check::new(
            "interpreter",
            environment["sandbox"]["interpreter"].as_str().unwrap_or("(none)"),
            &info.interpreter,
        ));
        let recorded: std::collections::BTreeMap<String, String> =
            serde_json::from_value(environment["sandbox"]["packages"].clone()).unwrap_or_default();
        let changed: Vec<String> = recorded
            .iter()
            .filter(|(name, version)| info.packages.get(*name) != Some(version))
            .map(|(name, version)| {
                format!("{name} {version} -> {}", info.packages.get(name).map_or("missing", String::as_str))
            })
            .collect();
        checks.push(Check::flag("python packages", changed.is_empty(), changed.join(", ")));
        checks.push(Check::new(
            "isolation layers",
            environment["sandbox"]["layers"]
                .as_array()
                .map(|l| l.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            info.layers.join(","),
        ));
    }

    let config = crate::config::RunConfig::resolve(&manifest.config, &Default::default())?;
    // The snapshot's data, moved out of its work dir so each script sees only what its kind may.
    let data_dir = work.path().join("data");
    let input_dir = work.path().join("input");
    fs_err::rename(root.join("data"), &data_dir)?;
    fs_err::rename(root.join("input"), &input_dir)?;
    let private = [dir.holdout()];
    let run_seeing = |kind: ScriptKind, visible: &Path| -> anyhow::Result<Outcome> {
        let spec = policy::spec(
            &Script { kind, work: &root, visible },
            &config.sandbox,
            config.loop_.seed,
            &private,
        );
        Ok(sandbox.run(&spec, &CancellationToken::new())?)
    };
    let run = |kind: ScriptKind| run_seeing(kind, if kind.learns() { &data_dir } else { &input_dir });
    // A refit has no validation score: retraining it is what can be checked (and its test score).
    let refit = rec.record.operation == crate::search::Operation::Refit;
    if retrain || refit {
        fs_err::remove_dir_all(root.join("model"))?;
        let outcome = run(ScriptKind::AuditTrain)?;
        checks.push(Check::new("train.py (retrained)", "exit 0", outcome.summary()));
        let model = policy::model_files(&outcome);
        for (path, sha) in &rec.record.model_files {
            let now =
                model.iter().find(|(p, _)| p == path).map_or("(missing)".to_string(), |(_, s)| s.clone());
            checks.push(Check::new(format!("{} (retrained)", path.trim_start_matches("/work/")), sha, now));
        }
        if model.len() != rec.record.model_files.len() {
            checks.push(Check::new(
                "model file count",
                rec.record.model_files.len().to_string(),
                model.len().to_string(),
            ));
        }
    }
    let kind = ScriptKind::AuditInfer;
    let predictions = kind.predictions().expect("inference predicts");
    let _ = fs_err::remove_file(root.join(predictions));
    let outcome = run(kind)?;
    checks.push(Check::new("inference.py", "exit 0", outcome.summary()));
    if refit {
        // A refit has no validation score (a bag's members are the folds' own models, retrained
        // above): nothing is left to score it on.
    } else if let Some(folds) = folds {
        // The score came from the folds; the committed model has seen every row, so its own
        // predictions here only show that it runs.
        let audit = cv::CvAudit {
            sandbox,
            config: &config,
            root: &root,
            data_dir: &data_dir,
            input_dir: &input_dir,
            target: &target,
            labels: &labels,
            folds,
            seed: metrics["split"]["seed"].as_u64().unwrap_or(config.loop_.seed),
            record: &rec.record,
            private: &private,
            scratch: work.path(),
        };
        checks.extend(audit.checks()?);
    } else {
        checks.extend(holdout_checks(&root, &rec.record, &labels, &target)?);
    }
    if let Some(recorded) = recorded_test_score(dir, rec.iteration)? {
        let now = test_score(dir, &root, &target, &run_seeing)?;
        checks.push(Check::new(format!("test {}", target.metric), recorded, now));
    }
    Ok(checks)
}

/// The checks of a snapshot scored on a held-out split: its predictions of the validation
/// features (just made in `root`) and their score.
fn holdout_checks(
    root: &Path,
    record: &IterationRecord,
    labels: &Path,
    target: &TargetInfo,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    let predictions = ScriptKind::AuditInfer.predictions().expect("inference predicts");
    let guest = GuestDir::open(root)?;
    let now = guest
        .sha256(predictions, u64::MAX)
        .map(|(_, sha)| sha)
        .unwrap_or_else(|e| format!("(not read: {e})"));
    checks.push(Check::new(
        "validation predictions sha256",
        record.predictions_sha256.clone().unwrap_or_default(),
        now,
    ));
    let truth = Truth::from_csv(labels, target).map_err(anyhow::Error::msg)?;
    let scored = score(&guest, predictions, target, &truth);
    let now = scored.as_ref().map(|s| format_score(s.score)).unwrap_or_else(|e| e.clone());
    checks.push(Check::new(
        format!("validation {}", target.metric),
        record.validation_score.map(format_score).unwrap_or_default(),
        now,
    ));
    checks.extend(tiebreak_check(record, scored.ok().and_then(|s| s.tiebreak)));
    Ok(checks)
}

/// The check of the recorded tie-break ([`crate::metric::Standing`]), if the run recorded one:
/// it decides between equal scores, so it is reproduced like them.
fn tiebreak_check(record: &IterationRecord, now: Option<f64>) -> Option<Check> {
    let recorded = record.validation_tiebreak?;
    Some(Check::new(
        "validation log loss (orders equal scores)",
        format_score(recorded),
        now.map_or_else(|| "(none)".into(), format_score),
    ))
}

/// The test score the run recorded for `iteration`, as [`format_score`] writes it (the last
/// final evaluation of it, if any was scored).
fn recorded_test_score(dir: &RunDir, iteration: u32) -> anyhow::Result<Option<String>> {
    Ok(journal::read(&dir.journal())?
        .into_iter()
        .filter_map(|e| match e.event {
            Event::FinalEvaluation { iteration: Some(i), test_score, .. } if i == iteration => {
                Some(test_score)
            }
            _ => None,
        })
        .next_back()
        .flatten()
        .map(format_score))
}

/// The snapshot in `root` run on the run's test features, scored against its test labels (both
/// the runner's; the snapshot never holds them).
fn test_score(
    dir: &RunDir,
    root: &Path,
    target: &TargetInfo,
    run: &dyn Fn(ScriptKind, &Path) -> anyhow::Result<Outcome>,
) -> anyhow::Result<String> {
    let input = tempfile::Builder::new().prefix("loop-runner-audit-test-").tempdir()?;
    let test = crate::data::read_table(&dir.test_csv())?;
    crate::data::write_csv(&test.drop(&target.column)?, &input.path().join("features.csv"))?;
    let kind = ScriptKind::FinalTest;
    let predictions = kind.predictions().expect("the final test predicts");
    let _ = fs_err::remove_file(root.join(predictions));
    let outcome = run(kind, input.path())?;
    if !outcome.success() {
        return Ok(format!("inference.py on the test features: {}", outcome.summary()));
    }
    let truth = Truth::from_csv(&dir.test_csv(), target).map_err(anyhow::Error::msg)?;
    Ok(score(&GuestDir::open(root)?, predictions, target, &truth)
        .map(|s| format_score(s.score))
        .unwrap_or_else(|e| e))
}

/// Scores are compared exactly; 17 significant digits show every bit of an f64.
fn format_score(score: f64) -> String {
    format!("{score:.17e}")
}

/// Files in the working tree that differ from `commit` (modified, missing, or added).
fn worktree_drift(workspace: &Workspace, commit: git2::Oid, root: &Path) -> anyhow::Result<Vec<String>> {
    let files = workspace.files(commit)?;
    let mut drift = Vec::new();
    for (path, blob) in &files {
        match std::fs::read(root.join(path)) {
            Ok(bytes) => {
                if git2::Oid::hash_object(git2::ObjectType::Blob, &bytes)?.to_string() != *blob {
                    drift.push(format!("{path} modified"));
                }
            }
            Err(_) => drift.push(format!("{path} missing")),
        }
    }
    let mut present = Vec::new();
    list_files(root, String::new(), &mut present)?;
    for path in present {
        if !files.iter().any(|(p, _)| *p == path) {
            drift.push(format!("{path} added"));
        }
    }
    Ok(drift)
}

fn list_files(dir: &Path, prefix: String, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if prefix.is_empty() && name == ".git" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_files(&entry.path(), format!("{prefix}{name}/"), out)?;
        } else {
            out.push(format!("{prefix}{name}"));
        }
    }
    Ok(())
}

/// Compares a replayed run's snapshots with the original's, iteration by iteration.
pub fn compare_runs(original: &RunDir, replayed: &RunDir) -> anyhow::Result<Vec<Check>> {
    let a = recorded_iterations(original)?;
    let b = recorded_iterations(replayed)?;
    let wa = Workspace::open_or_init(&original.workspace())?;
    let wb = Workspace::open_or_init(&replayed.workspace())?;
    let mut checks = Vec::new();
    for ra in &a {
        let Some(rb) = b.iter().find(|r| r.iteration == ra.iteration) else {
            checks.push(Check::new(format!("{} tree", tag_name(ra.iteration)), &ra.tree, "(not reproduced)"));
            continue;
        };
        let mut check = Check::new(format!("{} tree", tag_name(ra.iteration)), &ra.tree, &rb.tree);
        if !check.ok {
            let fa = wa.files(git2::Oid::from_str(&ra.commit)?)?;
            let fb = wb.files(git2::Oid::from_str(&rb.commit)?)?;
            let first = fa
                .iter()
                .find(|x| !fb.contains(x))
                .map(|(p, _)| p.clone())
                .or_else(|| fb.iter().find(|x| !fa.contains(x)).map(|(p, _)| p.clone()))
                .unwrap_or_default();
            check.now = format!("{} (first differing file: {first})", rb.tree);
        }
        checks.push(check);
    }
    Ok(checks)
}

/// A fixed-width table of checks.
pub fn render(checks: &[Check]) -> String {
    let mut out = format!("{:<40} {:<8} {}\n", "check", "result", "recorded / now");
    for c in checks {
        let result = if c.ok { "ok" } else { "MISMATCH" };
        if c.ok {
            out.push_str(&format!("{:<40} {:<8} {}\n", c.what, result, c.recorded));
        } else {
            out.push_str(&format!("{:<40} {:<8} {} / {}\n", c.what, result, c.recorded, c.now));
        }
    }
    out
}
