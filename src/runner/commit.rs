//! Recording a finished iteration as a snapshot: the runner's metadata files, the script's
//! outputs (read without following links), the runner's own copies of everything it supplies.

use super::ensemble::{MEMBER_FILES, MEMBERS, member_iterations};
use super::iteration::Finished;
use super::shared::{Shared, crash};
use crate::guest_fs::GuestDir;
use crate::journal::Event;
use crate::search::Operation;
use crate::snapshot::{Source, Tree, Workspace, tag_name};
use crate::steps;
use crate::task::Task;

/// Top-level names in a snapshot that only the runner supplies: a script's files of these
/// names never make it into a commit.
pub(super) const RUNNER_FILES: [&str; 11] = [
    "train.py",
    "inference.py",
    "explore.py",
    "steps",
    "metrics.json",
    "environment.json",
    "data.json",
    "README.md",
    "requirements.txt",
    "data",
    "input",
];

/// Writes the iteration's metadata and commits it; journals the commit.
pub(super) fn commit(
    shared: &Shared,
    workspace: &Workspace,
    finished: &Finished,
    best: bool,
) -> anyhow::Result<()> {
    let n = finished.n;
    let record = &finished.record;
    let dir = shared.dir.iteration(n);
    let split = shared.split();
    let metric = shared.inputs.target.metric;
    let metrics = serde_json::json!({
        "iteration": n,
        "metric": metric.name(),
        "validation_score": record.validation_score,
        "status": record.status,
        "family": record.family,
        "hyperparameters": record.hyperparameters,
        "operation": record.operation.name(),
        "parent": record.parent,
        "split": {
            "id": record.split_id,
            "validation_fraction": split.split.validation_fraction,
            "stratify": split.split.stratify,
            "seed": split.split.seed,
            "folds": split.folds.as_ref().map(|f| f.ranges.len()),
        },
    });
    let features = shared.dir.validation_inputs(record.split_id).join("features.csv");
    let data = serde_json::json!({
        "train": shared.fingerprint("data/train.csv", finished.train_data.as_deref().unwrap_or(&shared.dir.train_csv()))?,
        "validation_features": shared.fingerprint("input/features.csv", &features)?,
        "validation_labels": shared.fingerprint(
            &format!("holdout/validation-{}.csv", record.split_id),
            &shared.dir.validation_labels(record.split_id)
        )?,
        "target": shared.inputs.target,
    });
    let pretty =
        |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("values serialize").into_bytes();
    let guest = GuestDir::open(&shared.dir.work(n))?;
    let mut tree = Tree::new();
    // An ensemble that ran holds its members as they were committed, taken from their
    // snapshots: the same files as the copies its blend ran on, without reading and hashing
    // hundreds of megabytes of forests again, and nothing its scripts may have changed.
    let members = match record.operation {
        Operation::Ensemble if !finished.scripts.is_empty() => member_iterations(&record.hyperparameters),
        _ => vec![],
    };
    let reserved: Vec<&str> =
        RUNNER_FILES.iter().copied().chain((!members.is_empty()).then_some(MEMBERS)).collect();
    let passed = tree.guest_files(&guest, &reserved);
    if !passed.is_empty() {
        tracing::debug!(iteration = n, ?passed, "files left out of the snapshot");
    }
    // What the scripts import, the runner's and any Python the guest left (an agent's helper
    // modules) or the members hold: read only to name imports, never run.
    let mut guest_python: Vec<String> = tree
        .guest_paths()
        .filter(|p| p.ends_with(".py"))
        .filter_map(|p| guest.read(p, 1 << 20).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    for k in members {
        let tag = tag_name(k);
        let commit = workspace.resolve(&tag)?;
        for (path, oid) in workspace.blobs_under(commit, &MEMBER_FILES)? {
            if path.ends_with(".py")
                && let Some(bytes) = workspace.file(&commit.to_string(), &path)?
            {
                guest_python.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            tree.insert(format!("{MEMBERS}/{tag}/{path}"), Source::Stored(oid));
        }
    }
    let requirements = crate::requirements::requirements_txt(
        &shared.sandbox_info,
        finished
            .scripts
            .iter()
            .filter(|(name, _)| name.ends_with(".py"))
            .map(|(_, text)| text.as_str())
            .chain(guest_python.iter().map(String::as_str)),
    );
    let metadata = [
        ("requirements.txt", requirements.into_bytes()),
        ("metrics.json", pretty(&metrics)),
        ("environment.json", pretty(&environment(shared))),
        ("data.json", pretty(&data)),
        (
            "README.md",
            snapshot_readme(&shared.inputs.task, n, split.folds.as_ref().map(|f| f.ranges.len()))
                .into_bytes(),
        ),
    ];
    // Kept beside the work dir too, for the report and for people looking around.
    for (name, bytes) in &metadata {
        fs_err::write(dir.join(name), bytes)?;
    }
    for (name, bytes) in metadata {
        tree.insert(name, Source::Bytes(bytes));
    }
    for (name, text) in &finished.scripts {
        tree.insert(name.as_str(), Source::Bytes(text.clone().into_bytes()));
    }
    if let Ok(entries) = fs_err::read_dir(dir.join("steps")) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().to_string();
            tree.insert(format!("steps/{name}"), Source::Runner(entry.path()));
        }
    }
    let train = finished.train_data.clone().unwrap_or_else(|| shared.dir.train_csv());
    tree.insert("data/train.csv", Source::Runner(train.clone()));
    tree.insert("input/features.csv", Source::Runner(features));
    let score = record.validation_score.map_or_else(|| "no score".into(), |s| format!("{metric} {s:.4}"));
    let message = format!(
        "iteration {n}: {score} ({}, {}){}",
        record.family,
        record.status,
        if best { " [best]" } else { "" }
    );
    let count = shared.next_commit();
    let crash_inside = shared.inputs.faults.in_commit == Some(count);
    let committed = workspace.commit_iteration(&tree, n, &message, best, &|| {
        if crash_inside {
            crash("in the middle of a commit");
        }
    })?;
    if shared.inputs.faults.after_commit == Some(count) {
        crash("after a commit, before the journal records it");
    }
    shared.log(Event::SnapshotCommitted {
        iteration: n,
        commit: committed.commit,
        tree: committed.tree,
        tag: committed.tag,
        best,
    })?;
    Ok(())
}

/// What the scripts ran on (recorded in every snapshot).
pub(super) fn environment(shared: &Shared) -> serde_json::Value {
    let limits = &shared.inputs.config.sandbox;
    let agent = &shared.inputs.config.agent;
    serde_json::json!({
        "sandbox": shared.sandbox_info,
        "limits": { "script_timeout_seconds": limits.script_timeout.as_secs_f64(), "memory_bytes": limits.memory_bytes, "disk_bytes": limits.disk_bytes },
        "seed": shared.inputs.config.loop_.seed,
        "loop_runner_version": env!("CARGO_PKG_VERSION"),
        "prompts_sha256": steps::prompts_hash(),
        "schemas_sha256": shared.schemas.hash(),
        "agent": { "backend": agent.backend.name(), "model": agent.settings.model, "models": agent.settings.models },
    })
}

fn snapshot_readme(task: &Task, n: u32, folds: Option<usize>) -> String {
    let validation = match folds {
        Some(k) => format!(
            "The validation score in `metrics.json` is the mean over {k}-fold cross-validation of the rows in\n`data/train.csv` (`loop-runner audit` repeats it); the model in `model/` was trained on all of them,\nand `input/features.csv` holds those same rows' features, in fold order."
        ),
        None => {
            "`metrics.json` has the validation score the runner computed on the rows of `input/features.csv`."
                .into()
        }
    };
    format!(
        "# {name}: iteration {n}\n\nA loop-runner snapshot. To reproduce it in a fresh virtualenv:\n\n    pip install -r requirements.txt                   # the sandbox's versions of what the scripts import\n    python train.py                                   # reads data/train.csv, writes model/\n    python inference.py --input input/features.csv --output predictions.csv\n\n{validation}\n`environment.json` has the sandbox it ran in; `data.json` the sha256 of every data file; `steps/` the\nagent's answers.\n",
        name = task.name
    )
}
