//! What a cluster's scheduler runs: an sbatch script for a Slurm job array, and a Kubernetes
//! Indexed Job. Both run `loop-runner sweep-run MANIFEST`, which takes its index from the
//! scheduler (`SLURM_ARRAY_TASK_ID`, `JOB_COMPLETION_INDEX`) and runs or resumes that run.

use std::path::Path;

use super::Manifest;

/// `sbatch` options given on the command line.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// Slurm's `--time` [default: the run's budget plus 10 minutes].
    pub time: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub mem: Option<String>,
    /// At most this many array tasks at once (`%K`).
    pub max_parallel: Option<usize>,
}

/// The job array's script: task `i` runs or resumes run `i`. A requeued task (after preemption,
/// a node failure or `scontrol requeue`) resumes from its journal; the budget counts across
/// attempts because the journal does. Slurm sends SIGINT two minutes before the time limit, which
/// a run treats as Ctrl-C: it evaluates what it has and writes its report.
pub fn sbatch_script(
    manifest: &Manifest,
    manifest_path: &Path,
    exe: &Path,
    home: &Path,
    logs: &Path,
    o: &SlurmOptions,
) -> String {
    let last = manifest.runs.len().saturating_sub(1);
    let limit = o.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
    let longest = manifest.runs.iter().map(|e| e.budget_seconds).fold(0.0, f64::max);
    let time = o.time.clone().unwrap_or_else(|| {
        let minutes = (longest / 60.0).ceil() as u64 + 10;
        format!("{}:{:02}:00", minutes / 60, minutes % 60)
    });
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name=loop-runner-{}", manifest.name),
        format!("#SBATCH --array=0-{last}{limit}"),
        format!("#SBATCH --time={time}"),
        format!("#SBATCH --output={}/%A_%a.out", logs.display()),
        "#SBATCH --open-mode=append".into(),
        "#SBATCH --requeue".into(),
        "#SBATCH --signal=B:INT@120".into(),
    ];
    if let Some(p) = &o.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    if let Some(c) = o.cpus_per_task {
        lines.push(format!("#SBATCH --cpus-per-task={c}"));
    }
    if let Some(m) = &o.mem {
        lines.push(format!("#SBATCH --mem={m}"));
    }
    lines.extend([
        String::new(),
        format!(
            "# loop-runner sweep `{}`: {} runs; manifest {}",
            manifest.name,
            manifest.runs.len(),
            manifest_path.display()
        ),
        "# Each task runs (or, requeued, resumes) the run of its array index.".into(),
        format!("export LOOP_RUNNER_HOME={}", shell_quote(&home.display().to_string())),
        "export CI=1".into(),
        format!(
            "exec {} sweep-run {}",
            shell_quote(&exe.display().to_string()),
            shell_quote(&manifest_path.display().to_string())
        ),
        String::new(),
    ]);
    lines.join("\n")
}

/// `kubectl apply -f` this: an Indexed Job whose pod `i` runs or resumes run `i`, with the runs
/// directory on a persistent volume claim mounted at the same path as here (the manifest names
/// run directories by absolute path; task files must be reachable in the pod at their paths too).
pub fn k8s_job(
    manifest: &Manifest,
    manifest_path: &Path,
    runs_dir: &Path,
    image: &str,
    claim: &str,
    parallelism: usize,
) -> String {
    let name = format!("loop-runner-{}", manifest.name.to_ascii_lowercase().replace(['_', '.'], "-"));
    let runs = runs_dir.display().to_string();
    format!(
        r#"# loop-runner sweep `{sweep}`: {n} runs. Pod i runs (or, restarted, resumes) run i of the manifest.
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: loop-runner
spec:
  completionMode: Indexed
  completions: {n}
  parallelism: {parallelism}
  backoffLimitPerIndex: 3
  template:
    metadata:
      labels:
        app.kubernetes.io/name: loop-runner
    spec:
      restartPolicy: Never
      containers:
        - name: loop-runner
          image: {image}
          command: ["loop-runner", "sweep-run", {manifest}]
          env:
            - name: LOOP_RUNNER_HOME
              value: {home}
            - name: CI
              value: "1"
          volumeMounts:
            - name: runs
              mountPath: {runs_q}
      volumes:
        - name: runs
          persistentVolumeClaim:
            claimName: {claim}
"#,
        sweep = manifest.name,
        n = manifest.runs.len(),
        parallelism = parallelism.max(1),
        image = yaml_quote(image),
        manifest = yaml_quote(&manifest_path.display().to_string()),
        home = yaml_quote(&format!("{runs}/.loop-runner-home")),
        runs_q = yaml_quote(&runs),
        claim = yaml_quote(claim),
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn yaml_quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Entry;

    fn manifest(n: usize) -> Manifest {
        Manifest {
            format: 1,
            name: "night".into(),
            sweep_file: "/x/night.toml".into(),
            runs: (0..n)
                .map(|i| Entry {
                    index: i,
                    id: format!("t-builtin-s{i}"),
                    task: "/x/task.toml".into(),
                    task_name: "t".into(),
                    seed: i as u64,
                    agent: "builtin".into(),
                    model: None,
                    sandbox: None,
                    validation: None,
                    iterations: None,
                    budget_seconds: 1800.0,
                    config: None,
                    run_dir: format!("/runs/night/t-builtin-s{i}").into(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_sbatch_script_is_a_job_array_over_the_manifest() {
        let o = SlurmOptions { max_parallel: Some(2), cpus_per_task: Some(4), ..Default::default() };
        let text = sbatch_script(
            &manifest(4),
            Path::new("/runs/night-manifest.json"),
            Path::new("/bin/loop-runner"),
            Path::new("/home/lr"),
            Path::new("/runs/night-slurm"),
            &o,
        );
        assert!(text.contains("#SBATCH --array=0-3%2\n"), "{text}");
        assert!(text.contains("#SBATCH --time=0:40:00\n"), "budget + 10 minutes: {text}");
        assert!(text.contains("#SBATCH --cpus-per-task=4\n"));
        assert!(text.contains("#SBATCH --requeue\n"));
        assert!(
            text.trim_end().ends_with("exec '/bin/loop-runner' sweep-run '/runs/night-manifest.json'"),
            "{text}"
        );
    }

    #[test]
    fn quoting_keeps_paths_whole() {
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(yaml_quote("a \"b\""), r#""a \"b\"""#);
    }
}
