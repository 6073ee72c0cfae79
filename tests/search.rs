//! The search through the real binary: the solution tree in the journal, deterministic with
//! parallel iterations, kept by resume and replay; ensembles committed as snapshots that audit
//! bit for bit and run outside loop-runner; the budget holding with iterations in flight.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{bin, fixtures, records, run_dir_of, stderr};
use loop_runner::journal::{self, Event, IterationRecord};
use loop_runner::search::Operation;
use loop_runner::snapshot::Workspace;

/// `(iteration, tree hash)` of every commit the journal recorded.
fn trees(dir: &Path) -> Vec<(u32, String)> {
    journal::read(&dir.join("journal.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::SnapshotCommitted { iteration, tree, .. } => Some((iteration, tree)),
            _ => None,
        })
        .collect()
}

fn run(task: &Path, runs: &Path, extra: &[&str]) -> Output {
    bin().arg("run").arg("--task").arg(task).arg("--runs-dir").arg(runs).args(extra).output().unwrap()
}

/// What a record says of the node: its place in the tree and what it ran.
fn shape(r: &IterationRecord) -> (u32, Option<u32>, Operation, String, String, Option<u64>) {
    let params: Vec<String> = r.hyperparameters.iter().map(|h| format!("{}={}", h.name, h.value)).collect();
    (
        r.iteration,
        r.parent,
        r.operation,
        r.family.clone(),
        params.join(","),
        r.validation_score.map(f64::to_bits),
    )
}

#[test]
fn two_jobs_give_the_same_tree_for_the_same_seed() {
    let task = fixtures().join("credit/task.toml");
    let config = tempfile::tempdir().unwrap();
    let config_path = config.path().join("c.toml");
    std::fs::write(&config_path, "[search]\ndrafts = 4\nensemble_every = 4\n").unwrap();
    let args =
        ["--iterations", "12", "--jobs", "2", "--seed", "3", "--config", config_path.to_str().unwrap()];
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run(&task, a.path(), &args);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = run(&task, b.path(), &args);
    assert!(second.status.success(), "{}", stderr(&second));
    let (da, db) = (run_dir_of(&first), run_dir_of(&second));
    let (ra, rb) = (records(&da), records(&db));
    assert_eq!(ra.len(), 13, "twelve, and the bag made of the best");
    assert_eq!(ra.iter().map(shape).collect::<Vec<_>>(), rb.iter().map(shape).collect::<Vec<_>>());
    assert_eq!(trees(&da), trees(&db), "the same snapshots, bit for bit");
    // Commits in iteration order, whatever order the iterations finished in.
    let order: Vec<u32> = trees(&da).iter().map(|(i, _)| *i).collect();
    assert_eq!(order, (1..=13).collect::<Vec<_>>());
    // A tree, not a list: drafts, then operations on parents, an ensemble among them.
    assert!(ra[..4].iter().all(|r| r.operation == Operation::Draft && r.parent.is_none()));
    assert!(ra.iter().any(|r| r.operation == Operation::Improve && r.parent.is_some()));
    assert!(ra.iter().any(|r| r.operation == Operation::Ensemble));
    // A draft was told of the iterations up to n - 2 (the other in flight unknown), any later
    // iteration of those up to n - 3 (and one that may have finished while an older one ran),
    // and every iteration of the first, which may change the split.
    let transcript = loop_runner::agent::read_transcript(&da.join("transcript.jsonl")).unwrap();
    let plans: Vec<_> = transcript.iter().filter(|r| r.step == "plan").collect();
    assert!(plans.len() >= 8, "{}", plans.len());
    for record in plans {
        // The transcript keeps the history as its length and digest.
        let told = record.request.context["history"]["iterations"].as_u64().unwrap() as u32;
        let n = record.iteration;
        let lag = if n <= 4 { 2 } else { 3 };
        assert_eq!(told, n.saturating_sub(lag).max(1).min(n - 1), "iteration {n}");
    }
    let status = bin().arg("status").arg(&da).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("solution tree:") && text.contains(" improve "), "{text}");
}

#[test]
fn the_tree_survives_a_crash_and_a_replay() {
    let task = fixtures().join("penguins/task.toml");
    let runs = tempfile::tempdir().unwrap();
    let crashed = bin()
        .env("LOOP_RUNNER_FAULT", "journal:60")
        .args(["run", "--iterations", "10", "--jobs", "2", "--task"])
        .arg(&task)
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let dir = run_dir_of(&crashed);
    let before = records(&dir);
    assert!(!before.is_empty() && before.len() < 10, "{} finished before the crash", before.len());
    let resumed = bin().arg("resume").arg(&dir).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let after = records(&dir);
    assert_eq!(after.len(), 11, "ten, and the bag made of the best");
    assert_eq!(after[..before.len()], before[..], "finished iterations are kept as they were");
    assert!(
        after.iter().skip(7).any(|r| r.operation != Operation::Draft),
        "the search went on after the drafts"
    );
    let replays = tempfile::tempdir().unwrap();
    let replay = bin().arg("replay").arg(&dir).arg("--runs-dir").arg(replays.path()).output().unwrap();
    let out = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "{out}{}", stderr(&replay));
    assert!(out.contains("replay reproduced all 11 iterations"), "{out}");
}

#[test]
fn an_ensemble_is_a_snapshot_that_audits_bit_for_bit_and_runs_outside_loop_runner() {
    let task = fixtures().join("credit/task.toml");
    let runs = tempfile::tempdir().unwrap();
    let config = runs.path().join("c.toml");
    std::fs::write(&config, "[search]\ndrafts = 3\nensemble_every = 2\n").unwrap();
    let output =
        run(&task, runs.path(), &["--iterations", "5", "--jobs", "1", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let ensemble = records(&dir)
        .into_iter()
        .find(|r| r.operation == Operation::Ensemble && r.succeeded())
        .expect("an ensemble was made and scored");
    assert!(ensemble.hyperparameters.len() >= 2, "{:?}", ensemble.hyperparameters);
    assert!(
        ensemble.model_files.iter().any(|(p, _)| p.starts_with("/work/members/")),
        "{:?}",
        ensemble.model_files
    );
    let tag = format!("iter-{:04}", ensemble.iteration);
    let audit = bin().arg("audit").arg(&dir).arg(&tag).arg("--retrain").output().unwrap();
    let out = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{out}");
    assert!(out.contains("members/") && out.contains("(retrained)"), "{out}");
    // Its members are the files of their own snapshots, blob for blob; the copies its blend ran
    // on left its work directory once it was committed.
    let workspace = Workspace::open(&dir.join("workspace")).unwrap();
    let files = |tag: &str| workspace.files(workspace.resolve(tag).unwrap()).unwrap();
    let own = files(&tag);
    for member in &ensemble.hyperparameters {
        let theirs = files(&member.name);
        let kept: Vec<_> = theirs
            .iter()
            .filter(|(p, _)| p.starts_with("model/") || p == "train.py" || p == "inference.py")
            .collect();
        assert!(kept.iter().any(|(p, _)| p.starts_with("model/")), "{theirs:?}");
        for (path, blob) in kept {
            let path = format!("members/{}/{path}", member.name);
            assert!(own.contains(&(path.clone(), blob.clone())), "{path} in {own:?}");
        }
    }
    let work = dir.join("iterations").join(&tag).join("work");
    assert!(work.join("model/ensemble.json").is_file() && !work.join("members").exists());
    // A plain checkout runs with an ordinary Python: retrain the members, predict.
    let checkout = tempfile::tempdir().unwrap();
    let snap = checkout.path().join("s");
    let o = bin().arg("checkout").arg(&dir).arg(&tag).arg(&snap).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let python = |args: &[&str]| {
        Command::new("python3").current_dir(&snap).args(args).env("OMP_NUM_THREADS", "1").output().unwrap()
    };
    let trained = python(&["train.py"]);
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let predicted = python(&["inference.py", "--input", "input/features.csv", "--output", "out.csv"]);
    assert!(predicted.status.success(), "{}", String::from_utf8_lossy(&predicted.stderr));
    let rows = std::fs::read_to_string(snap.join("out.csv")).unwrap().lines().count();
    let inputs = std::fs::read_to_string(snap.join("input/features.csv")).unwrap().lines().count();
    assert_eq!(rows, inputs);
}

#[test]
fn the_budget_holds_with_iterations_in_flight() {
    let task = fixtures().join("credit/task.toml");
    let runs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = run(&task, runs.path(), &["--budget", "25s", "--jobs", "2"]);
    let took = started.elapsed();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(took < Duration::from_millis(25_500), "a 25 s budget took {took:?}");
    let dir = run_dir_of(&output);
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    let reason = entries.iter().find_map(|e| match &e.event {
        Event::RunFinished { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason.as_deref(), Some("budget spent"));
}

/// Every line of a CSV file but the header.
fn rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().skip(1).map(str::to_string).collect()
}

#[test]
fn cross_validation_scores_the_mean_of_the_folds_on_rows_the_model_never_saw() {
    let task = fixtures().join("penguins/task.toml");
    let runs = tempfile::tempdir().unwrap();
    let output = run(&task, runs.path(), &["--iterations", "3", "--jobs", "1", "--validation", "cv"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    let folds = entries.iter().find_map(|e| match &e.event {
        Event::SplitMade { folds, .. } => Some(*folds),
        _ => None,
    });
    assert_eq!(folds, Some(Some(5)));
    // The labels, keyed by the rest of the row, from the pool of training rows.
    let pool = std::fs::read_to_string(dir.join("holdout/pool.csv")).unwrap();
    let header: Vec<&str> = pool.lines().next().unwrap().split(',').collect();
    let target = header.iter().position(|c| *c == "species").unwrap();
    let mut label_of = std::collections::HashMap::new();
    for line in pool.lines().skip(1) {
        let mut fields: Vec<&str> = line.split(',').collect();
        let label = fields.remove(target).to_string();
        label_of.entry(fields.join(",")).or_insert_with(Vec::new).push(label);
    }
    let record = records(&dir).into_iter().find(|r| r.iteration == 1).unwrap();
    let mut accuracies = Vec::new();
    let mut seen = 0;
    for f in 1..=5 {
        let fold = dir.join(format!("folds/split-1/fold-{f}"));
        let features = rows(&fold.join("input/features.csv"));
        let predicted = rows(&dir.join(format!("iterations/iter-0001/out-of-fold/fold-{f}.csv")));
        assert_eq!(features.len(), predicted.len());
        // The fold's rows are not among the rows its model was trained on.
        let trained: std::collections::HashSet<String> = rows(&fold.join("data/train.csv"))
            .into_iter()
            .map(|l| {
                let mut fields: Vec<&str> = l.split(',').collect();
                fields.remove(target);
                fields.join(",")
            })
            .collect();
        assert!(features.iter().all(|row| !trained.contains(row)), "fold {f} was trained on its own rows");
        let right = features
            .iter()
            .zip(&predicted)
            .filter(|(row, p)| label_of[*row].contains(&p.split(',').next().unwrap().to_string()))
            .count();
        accuracies.push(right as f64 / features.len() as f64);
        seen += features.len();
    }
    assert_eq!(seen, pool.lines().count() - 1, "every pool row is predicted once");
    let mean = accuracies.iter().sum::<f64>() / 5.0;
    let score = record.validation_score.unwrap();
    assert!((score - mean).abs() < 1e-12, "recorded {score}, the folds give {mean} ({accuracies:?})");
    // Every snapshot that holds a model audits; one that holds none says so.
    for r in records(&dir) {
        let tag = format!("iter-{:04}", r.iteration);
        let audit = bin().arg("audit").arg(&dir).arg(&tag).output().unwrap();
        let out = String::from_utf8_lossy(&audit.stdout);
        if r.succeeded() || r.operation == Operation::Refit {
            assert!(audit.status.success(), "{tag}: {out}{}", stderr(&audit));
        } else {
            assert!(!audit.status.success(), "{tag}: {out}");
            assert!(stderr(&audit).contains("made no model"), "{tag}: {}", stderr(&audit));
        }
    }
}

#[test]
fn a_refit_retrains_the_choice_on_every_training_row_and_audits() {
    let task = fixtures().join("credit/task.toml");
    let runs = tempfile::tempdir().unwrap();
    let config = runs.path().join("c.toml");
    std::fs::write(&config, "[validation]\nmethod = \"holdout\"\nrefit = true\n").unwrap();
    let output =
        run(&task, runs.path(), &["--iterations", "3", "--jobs", "1", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let all = records(&dir);
    let refit = all.last().unwrap();
    assert_eq!(refit.operation, Operation::Refit);
    assert_eq!(refit.iteration, 4);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap();
    let best = summary["best_iteration"].as_u64().unwrap() as u32;
    assert_eq!(refit.parent, Some(best));
    assert_eq!(summary["final_iteration"], 4);
    assert!(summary["test_score"].as_f64().is_some() && summary["selected_test_score"].as_f64().is_some());
    // Trained on the pool: the training rows and the validation rows together.
    let snap = tempfile::tempdir().unwrap();
    let checkout = snap.path().join("s");
    let o = bin().arg("checkout").arg(&dir).arg("iter-0004").arg(&checkout).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let pool = rows(&dir.join("holdout/pool.csv"));
    let trained = rows(&checkout.join("data/train.csv"));
    assert_eq!(trained.len(), pool.len());
    let parent = rows(&dir.join("data/train.csv"));
    assert!(parent.len() < pool.len());
    let audit = bin().arg("audit").arg(&dir).arg("iter-0004").output().unwrap();
    let out = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{out}{}", stderr(&audit));
}

#[test]
fn under_cross_validation_the_final_model_is_a_bag_of_the_fold_models() {
    let task = fixtures().join("penguins/task.toml");
    let runs = tempfile::tempdir().unwrap();
    let output = run(&task, runs.path(), &["--iterations", "3", "--jobs", "1", "--validation", "cv"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let bag = records(&dir).last().unwrap().clone();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap();
    assert_eq!(bag.operation, Operation::Refit);
    assert!(bag.hyperparameters.iter().any(|h| h.name == "bagged"), "{:?}", bag.hyperparameters);
    assert_eq!(bag.parent, summary["best_iteration"].as_u64().map(|b| b as u32));
    assert_eq!(summary["final_iteration"], bag.iteration);
    assert!(summary["test_score"].is_number() && summary["selected_test_score"].is_number());
    for f in 1..=5 {
        let prefix = format!("/work/members/fold-{f}/model/");
        assert!(
            bag.model_files.iter().any(|(p, _)| p.starts_with(&prefix)),
            "{prefix}: {:?}",
            bag.model_files
        );
    }

    let tag = format!("iter-{:04}", bag.iteration);
    let snap = tempfile::tempdir().unwrap();
    let checkout = snap.path().join("s");
    let o = bin().arg("checkout").arg(&dir).arg(&tag).arg(&checkout).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Each member trains on exactly the rows its cross-validation fold trained on.
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkout.join("steps/bag.json")).unwrap()).unwrap();
    let pool = rows(&checkout.join("data/train.csv"));
    let mut covered = 0;
    for (f, held) in spec["held_out"].as_array().unwrap().iter().enumerate() {
        let held: std::collections::BTreeSet<usize> =
            held.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
        covered += held.len();
        let kept: Vec<String> =
            pool.iter().enumerate().filter(|(i, _)| !held.contains(i)).map(|(_, r)| r.clone()).collect();
        let fold = rows(&dir.join(format!("folds/split-1/fold-{}/data/train.csv", f + 1)));
        assert_eq!(kept, fold, "fold {}", f + 1);
    }
    assert_eq!(covered, pool.len(), "every row is held out by exactly one fold");

    // Outside loop-runner: retrain with plain Python, and the bag's predictions are the mean
    // of its members' own.
    let python = |dir: &Path, args: &[&str]| {
        let o =
            Command::new("python3").current_dir(dir).args(args).env("OMP_NUM_THREADS", "1").output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    python(&checkout, &["train.py"]);
    python(&checkout, &["inference.py", "--input", "input/features.csv", "--output", "bag.csv"]);
    let table = |path: &Path| -> Vec<Vec<String>> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    let blended = table(&checkout.join("bag.csv"));
    let mut sums = vec![vec![0.0f64; blended[0].len() - 1]; blended.len() - 1];
    for f in 1..=5 {
        let member = checkout.join(format!("members/fold-{f}"));
        python(&member, &["inference.py", "--input", "../../input/features.csv", "--output", "m.csv"]);
        let own = table(&member.join("m.csv"));
        assert_eq!(own[0], blended[0], "the same columns");
        for (i, row) in own.iter().skip(1).enumerate() {
            for (j, v) in row.iter().skip(1).enumerate() {
                sums[i][j] += v.parse::<f64>().unwrap() / 5.0;
            }
        }
    }
    for (i, row) in blended.iter().skip(1).enumerate() {
        for (j, v) in row.iter().skip(1).enumerate() {
            assert!((v.parse::<f64>().unwrap() - sums[i][j]).abs() < 1e-9, "row {i} column {j}");
        }
    }

    let audit = bin().arg("audit").arg(&dir).arg(&tag).output().unwrap();
    let out = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{out}{}", stderr(&audit));
    assert!(out.contains("members/fold-5/model/") && out.contains("(retrained)"), "{out}");
}
