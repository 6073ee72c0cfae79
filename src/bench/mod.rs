//! Benchmarks behind `loop-runner bench`: the same workloads in the WASI sandbox and in native
//! `python3`, reported as medians and ratios measured in one run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::sandbox::{CancellationToken, Mount, RunSpec, Sandbox};

mod steps;
pub use steps::{STEPS, StepsRow, steps};

/// One workload: a script run with the dataset path and the target column as arguments.
pub struct Workload {
    pub name: &'static str,
    pub script: &'static str,
}

/// The sandbox benchmark's workloads.
pub const SANDBOX_WORKLOADS: [Workload; 3] = [
    Workload { name: "start to first output (print)", script: "print(1)\n" },
    Workload { name: "import sklearn.ensemble", script: "import sklearn.ensemble\nprint(1)\n" },
    Workload { name: "train HistGradientBoosting on the fixture", script: TRAIN_SCRIPT },
];

const TRAIN_SCRIPT: &str = r#"import json, pickle, sys
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
df = pd.read_csv(sys.argv[1])
y = df.pop(sys.argv[2])
X = pd.get_dummies(df)
model = HistGradientBoostingClassifier(random_state=0).fit(X, y)
with open("model.pkl", "wb") as f:
    pickle.dump(model, f)
with open("metrics.json", "w") as f:
    json.dump({"train_accuracy": float(model.score(X, y))}, f)
print("ok")
"#;

/// Medians of one workload.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    /// One median per sandbox, in the order given.
    pub sandboxed: Vec<Duration>,
    pub native: Option<Duration>,
}

impl Row {
    /// Each sandbox's time over native time.
    pub fn ratios(&self) -> Vec<Option<f64>> {
        self.sandboxed.iter().map(|t| self.native.map(|n| t.as_secs_f64() / n.as_secs_f64())).collect()
    }
}

/// Runs every workload `repeat` times in each sandbox and natively, interleaved so that load on
/// the machine affects every side alike. `native` is the interpreter to compare with (`None`
/// skips it). `progress` gets a line per measurement.
pub fn sandbox(
    sandboxes: &[(&str, &dyn Sandbox)],
    native: Option<&Path>,
    data: &Path,
    target: &str,
    repeat: usize,
    progress: &dyn Fn(&str),
) -> anyhow::Result<Vec<Row>> {
    let data = fs_err::canonicalize(data)?;
    let data_dir = data.parent().expect("a file has a parent").to_path_buf();
    let data_name = data.file_name().expect("a file has a name").to_string_lossy().to_string();
    let native = native.map(resolve_python).transpose()?;
    let mut rows = Vec::new();
    for workload in &SANDBOX_WORKLOADS {
        let mut sandboxed = vec![Vec::new(); sandboxes.len()];
        let mut native_times = Vec::new();
        for i in 0..repeat.max(1) {
            for ((label, sandbox), times) in sandboxes.iter().zip(&mut sandboxed) {
                let work = tempfile::tempdir()?;
                fs_err::write(work.path().join("bench.py"), workload.script)?;
                let mounts =
                    vec![Mount::read_only(&data_dir, "/data"), Mount::read_write(work.path(), "/work")];
                let mut spec = RunSpec::new("/work/bench.py", mounts);
                spec.args = vec![format!("/data/{data_name}"), target.to_string()];
                let started = Instant::now();
                let outcome = sandbox.run(&spec, &CancellationToken::new())?;
                let took = started.elapsed();
                anyhow::ensure!(
                    outcome.success(),
                    "the {label} run of `{}` failed ({}): {}",
                    workload.name,
                    outcome.summary(),
                    outcome.stderr.text
                );
                times.push(took);
                progress(&format!("{} #{}: {label} {:.3} s", workload.name, i + 1, took.as_secs_f64()));
            }
            if let Some(python) = &native {
                let work = tempfile::tempdir()?;
                fs_err::write(work.path().join("bench.py"), workload.script)?;
                let took = native_run(python, work.path(), &data, target)?;
                native_times.push(took);
                progress(&format!("{} #{}: native {:.3} s", workload.name, i + 1, took.as_secs_f64()));
            }
        }
        rows.push(Row {
            name: workload.name.to_string(),
            sandboxed: sandboxed.iter_mut().map(|t| median(t)).collect(),
            native: (!native_times.is_empty()).then(|| median(&mut native_times)),
        });
    }
    Ok(rows)
}

/// The interpreter's absolute path, found with this process's `PATH` (the benchmark runs it
/// with a cleared environment).
fn resolve_python(python: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `{}`: {e}", python.display()))?;
    anyhow::ensure!(output.status.success(), "`{}` does not run", python.display());
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

fn native_run(python: &Path, work: &Path, data: &Path, target: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = Command::new(python)
        .arg("bench.py")
        .arg(data)
        .arg(target)
        .current_dir(work)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        // Single-threaded, like the WASI build: native BLAS/OpenMP threading is erratic on small
        // shared machines and would not compare like with like.
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()?;
    let took = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "native `{}` failed: {}\nhint: the native side needs numpy, pandas and scikit-learn \
         (`{} -m pip install scikit-learn pandas`), or pass --wasi-only",
        python.display(),
        String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or(""),
        python.display()
    );
    Ok(took)
}

/// The median (upper median for even counts).
pub fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(&mut [ms(4), ms(1), ms(2), ms(3)]), ms(3));
    }

    #[test]
    fn ratios_per_sandbox() {
        let row = Row {
            name: "x".into(),
            sandboxed: vec![Duration::from_secs(1), Duration::from_secs(4)],
            native: Some(Duration::from_secs(2)),
        };
        assert_eq!(row.ratios(), vec![Some(0.5), Some(2.0)]);
    }
}

/// Expands `*` within path components (e.g. `fixtures/*/task.toml`), sorted.
pub fn glob(pattern: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = vec![if pattern.starts_with('/') { PathBuf::from("/") } else { PathBuf::new() }];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for base in &paths {
            if !part.contains('*') {
                next.push(base.join(part));
                continue;
            }
            let dir = if base.as_os_str().is_empty() { Path::new(".") } else { base.as_path() };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().to_string();
                if wildcard(part, &name) {
                    next.push(base.join(name));
                }
            }
        }
        paths = next;
    }
    let mut found: Vec<PathBuf> = paths.into_iter().filter(|p| p.exists()).collect();
    found.sort();
    Ok(found)
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len())
                    .any(|i| name.is_char_boundary(head.len() + i) && wildcard(rest, &name[head.len() + i..]))
        }
    }
}

#[cfg(test)]
mod glob_tests {
    use super::*;

    #[test]
    fn wildcards_match_within_components() {
        assert!(wildcard("*", "anything"));
        assert!(wildcard("task*.toml", "task-a.toml"));
        assert!(!wildcard("task*.toml", "other.toml"));
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("task.toml"), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let found = glob(&format!("{}/*/task.toml", dir.path().display())).unwrap();
        assert_eq!(found, [dir.path().join("a/task.toml"), dir.path().join("b/task.toml")]);
    }
}

/// Timings of committing one large file into a fresh workspace.
#[derive(Debug, Clone)]
pub struct SnapshotTimes {
    pub bytes: u64,
    /// First commit: the large file is new.
    pub first: Duration,
    /// Second commit: the large file unchanged, a small file changed.
    pub unchanged: Duration,
    /// Third commit: the large file rewritten with other content.
    pub changed: Duration,
    /// Moving `best` to each commit and checking it out.
    pub checkouts: [Duration; 3],
    /// Objects written by the second commit (the large file must not be among them).
    pub objects_written_unchanged: usize,
}

/// Commits an iteration holding a `bytes`-sized model file three times (new, unchanged,
/// changed) and times each commit.
pub fn snapshot(bytes: u64) -> anyhow::Result<SnapshotTimes> {
    use std::io::Write;

    use crate::snapshot::Workspace;
    let root = tempfile::tempdir()?;
    let ws = Workspace::open_or_init(&root.path().join("workspace"))?;
    let iter = root.path().join("iter");
    fs_err::create_dir_all(iter.join("model"))?;
    let write_model = |seed: u64| -> anyhow::Result<()> {
        // Incompressible bytes: the worst case for git's zlib.
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut file = std::io::BufWriter::new(fs_err::File::create(iter.join("model/weights.bin"))?);
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            rng.fill(&mut chunk[..n]);
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.flush()?;
        Ok(())
    };
    write_model(1)?;
    fs_err::write(iter.join("train.py"), "print(1)\n")?;
    let objects = || count_objects(&root.path().join("workspace/.git/objects"));
    // Commit first, then move `best` (which also checks the files out), timed apart.
    let timed = |n: u32| -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let guest = crate::guest_fs::GuestDir::open(&iter)?;
        let mut tree = crate::snapshot::Tree::new();
        tree.guest_files(&guest, &[]);
        let committed = ws.commit_iteration(&tree, n, "bench", false, &|| {})?;
        let commit = started.elapsed();
        let started = Instant::now();
        ws.set_best(git2::Oid::from_str(&committed.commit)?)?;
        Ok((commit, started.elapsed()))
    };
    let (first, first_checkout) = timed(1)?;
    fs_err::write(iter.join("train.py"), "print(2)\n")?;
    let before = objects();
    let (unchanged, unchanged_checkout) = timed(2)?;
    let objects_written_unchanged = objects() - before;
    write_model(2)?;
    let (changed, changed_checkout) = timed(3)?;
    Ok(SnapshotTimes {
        bytes,
        first,
        unchanged,
        changed,
        checkouts: [first_checkout, unchanged_checkout, changed_checkout],
        objects_written_unchanged,
    })
}

fn count_objects(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().len() == 2)
                .map(|e| std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// What `bench tables` measured.
pub struct TablesTimes {
    pub iterations: usize,
    pub steps: usize,
    pub script_runs: usize,
    /// Median wall time of each measured operation.
    pub times: Vec<(String, Duration)>,
}

/// The example queries `bench tables` times (the README's).
pub const TABLE_QUERIES: [(&str, &str); 3] = [
    (
        "query: improved on the parent by > 0.02",
        "SELECT c.run_id, c.iteration, p.representation AS before, c.representation AS after, \
         c.family, c.validation_score - p.validation_score AS gain \
         FROM iterations c JOIN iterations p ON c.run_id = p.run_id AND c.parent = p.iteration \
         WHERE c.validation_score - p.validation_score > 0.02 ORDER BY gain DESC",
    ),
    (
        "query: what failed iterations had in common",
        "SELECT i.failed_step, s.limit_hit, i.family, count(*) AS n \
         FROM iterations i LEFT JOIN script_runs s \
         ON s.run_id = i.run_id AND s.iteration = i.iteration AND s.step = i.failed_step \
         WHERE i.status = 'failed' GROUP BY ALL ORDER BY n DESC",
    ),
    (
        "query: cost per point of AUC by model",
        "SELECT i.family, sum(i.cost_usd) AS usd, max(i.validation_score) AS best_auc, \
         sum(i.cost_usd) / (100 * (max(i.validation_score) - 0.5)) AS usd_per_point \
         FROM iterations i JOIN runs r ON r.run_id = i.run_id \
         WHERE r.metric = 'roc_auc' GROUP BY i.family ORDER BY usd_per_point",
    ),
];

/// Loads the runs under `runs_dir` into tables, writes them in each format, runs the example
/// queries; `repeat` times each, medians reported.
pub fn tables(runs_dir: &Path, repeat: usize) -> anyhow::Result<TablesTimes> {
    let dirs = crate::tables::find_runs(&[], runs_dir)?;
    let out = tempfile::tempdir()?;
    let mut measured: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut record = |name: &str, time: Duration| match measured.iter_mut().find(|m| m.0 == name) {
        Some(m) => m.1.push(time),
        None => measured.push((name.to_string(), vec![time])),
    };
    let mut shape = (0, 0, 0);
    for _ in 0..repeat {
        let t = Instant::now();
        let tables = crate::tables::Tables::load(&dirs)?;
        record(&format!("load {} journals into the tables", dirs.len()), t.elapsed());
        shape = (tables.iterations.height(), tables.steps.height(), tables.script_runs.height());
        for format in
            [crate::tables::Format::Parquet, crate::tables::Format::Arrow, crate::tables::Format::Csv]
        {
            let t = Instant::now();
            crate::tables::write_tables(&tables, out.path(), format)?;
            record(&format!("write the five tables as {}", format.extension()), t.elapsed());
        }
        for (name, sql) in TABLE_QUERIES {
            let t = Instant::now();
            tables.query(sql)?;
            record(name, t.elapsed());
        }
    }
    Ok(TablesTimes {
        iterations: shape.0,
        steps: shape.1,
        script_runs: shape.2,
        times: measured.into_iter().map(|(name, mut times)| (name, median(&mut times))).collect(),
    })
}
