//! `loop-runner run` (and the bare `loop-runner --budget 6h`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::args::{AgentArg, RunArgs, SandboxArg, ValidationArg};
use super::dispatch::Context;
use super::printer::{CompileProgress, Printer};
use super::progress::CliReporter;
use crate::agent::{Backend, OpenAiBackend, Redactor, ReplayBackend, Secret};
use crate::builtin::BuiltinBackend;
use crate::config::{AgentConfig, BackendKind, ConfigFile, Overrides, RunConfig, SandboxChoice};
use crate::data::Dataset;
use crate::error::UserError;
use crate::exit_code;
use crate::report::Summary;
use crate::run_dir::{Manifest, RunDir};
use crate::runner::{RunInputs, Runner};
use crate::sandbox::Sandbox;
use crate::sandbox::wasi::{WasiOptions, WasiSandbox};
use crate::task::Task;

/// Which signals end a run gracefully (stop the loop, evaluate, report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopping {
    /// Ctrl-C and SIGTERM: what `kill`, `timeout`, and a stopping container send before they kill.
    InterruptOrTerminate,
    /// Ctrl-C only. A sweep's task leaves SIGTERM to end it at once: there it comes from a
    /// scheduler that preempts or requeues it (Slurm, Kubernetes), and a run that finished as
    /// interrupted would count as done instead of being resumed.
    InterruptOnly,
}

pub fn run(ctx: &Context, args: &RunArgs, stopping: Stopping) -> anyhow::Result<i32> {
    if args.budget.is_none() && args.iterations.is_none() {
        return Err(UserError::usage(
            "give the run a limit: --budget DURATION (e.g. --budget 6h) and/or --iterations N",
        )
        .with_hint("loop-runner never runs unbounded; the budget also covers the final test evaluation")
        .into());
    }
    let task_path = args.task.clone().unwrap_or_else(|| PathBuf::from("task.toml"));
    let task = Task::load(&task_path)?;
    let config = resolve_config(args, &task_path)?;
    let dataset = Dataset::prepare(&task)?;
    let (backend, redactor) = backend(&config.agent, args.transcript.as_deref())?;
    let sandbox = open_sandbox_for(ctx, &config.sandbox, &args.backend)?;
    let inputs = RunInputs {
        target: dataset.target.clone(),
        profile: dataset.profile.clone(),
        task,
        config,
        budget: args.budget,
        stop_after: None,
        faults: faults(ctx)?,
        started: ctx.started,
        decisions: None,
    };
    drive(ctx, stopping, |interrupt, reporter| {
        let dir = match &args.run_dir {
            Some(root) => RunDir::create_at(root).map_err(|e| {
                UserError::setup(format!("cannot create the run directory `{}`: {e}", root.display()))
                    .with_hint("--run-dir names a directory that does not exist yet; `resume` continues an existing run")
            })?,
            None => RunDir::create(&args.runs_dir, &inputs.task.name)?,
        };
        Runner::create(dir, &dataset, inputs, backend, redactor, sandbox, reporter, interrupt)
    })
}

/// `loop-runner resume RUN`: continue a crashed or killed run with what is left of its budget.
pub fn resume(ctx: &Context, args: &super::args::RunRef, stopping: Stopping) -> anyhow::Result<i32> {
    let dir = RunDir::open(&args.run)?;
    let manifest = Manifest::read(&dir.run_json())?;
    let config = RunConfig::resolve(&manifest.config, &Overrides::default())?;
    if config.agent.backend == BackendKind::Replay {
        return Err(UserError::setup("a replay run cannot be resumed; run `loop-runner replay` again")
            .with_code(exit_code::RESUME_REFUSED)
            .into());
    }
    let (backend, redactor) = backend(&config.agent, None)?;
    let sandbox = open_sandbox_for(ctx, &config.sandbox, &Default::default())?;
    let faults = faults(ctx)?;
    drive(ctx, stopping, |interrupt, reporter| {
        Runner::resume(
            dir,
            backend,
            redactor,
            sandbox,
            reporter,
            interrupt,
            faults,
            Some(config),
            ctx.started,
        )
    })
}

/// The sandbox a run's configuration names.
pub fn open_sandbox_for(
    ctx: &Context,
    config: &crate::config::SandboxConfig,
    args: &super::args::SandboxBackendArgs,
) -> anyhow::Result<Arc<dyn Sandbox>> {
    open_sandbox_with(&ctx.home, ctx.printer, config, args)
}

fn open_sandbox_with(
    home: &Path,
    printer: Printer,
    config: &crate::config::SandboxConfig,
    args: &super::args::SandboxBackendArgs,
) -> anyhow::Result<Arc<dyn Sandbox>> {
    match config.kind {
        SandboxChoice::Wasi => Ok(Arc::new(
            WasiSandbox::open(home, WasiOptions::default(), &CompileProgress::new(printer))
                .context("opening the WASI sandbox")?,
        )),
        SandboxChoice::Process => Ok(Arc::new(
            crate::sandbox::process::ProcessSandbox::open(&super::sandbox_cmd::process_options(
                args,
                Some(config),
            )?)
            .context("opening the process sandbox")?,
        )),
    }
}

/// Opens runs' recorded sandboxes for a long-lived process (`serve`), each configuration once.
pub fn sandbox_opener(ctx: &Context) -> crate::serve::SandboxOpener {
    let home = ctx.home.clone();
    let printer = ctx.printer;
    let opened = std::sync::Mutex::new(std::collections::HashMap::<String, Arc<dyn Sandbox>>::new());
    Arc::new(move |config| {
        let key = serde_json::to_string(config)?;
        let mut opened = opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sandbox) = opened.get(&key) {
            return Ok(sandbox.clone());
        }
        let sandbox = open_sandbox_with(&home, printer, config, &Default::default())?;
        opened.insert(key, sandbox.clone());
        Ok(sandbox)
    })
}

pub fn open_sandbox(ctx: &Context) -> anyhow::Result<Arc<dyn Sandbox>> {
    Ok(Arc::new(
        WasiSandbox::open(&ctx.home, WasiOptions::default(), &CompileProgress::new(ctx.printer))
            .context("opening the WASI sandbox")?,
    ))
}

/// Runs a loop to its end on a runtime of its own, with Ctrl-C (and SIGTERM) handling and
/// progress.
pub fn drive(
    ctx: &Context,
    stopping: Stopping,
    make: impl FnOnce(CancellationToken, Arc<dyn crate::runner::Reporter>) -> anyhow::Result<Runner>,
) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let printer = ctx.printer;
    let result = runtime.block_on(async {
        let interrupt = CancellationToken::new();
        watch_interrupts(interrupt.clone(), printer, stopping);
        let reporter = Arc::new(CliReporter::new(printer));
        let mut runner = make(interrupt.clone(), reporter.clone())?;
        println!("{}", runner.dir.root.display());
        ctx.log_file.open(&runner.dir.log()).context("opening the run's log file")?;
        let summary = runner.run().await;
        reporter.finish();
        let summary = summary?;
        print_summary(printer, &runner.dir.root, &summary);
        anyhow::Ok((summary, interrupt.is_cancelled()))
    });
    runtime.shutdown_background();
    let (summary, interrupted) = result?;
    Ok(if interrupted {
        exit_code::INTERRUPTED
    } else if summary.test_score.is_some() {
        exit_code::SUCCESS
    } else {
        exit_code::EXPERIMENT_FAILED
    })
}

/// The crash points a test asked for (`LOOP_RUNNER_FAULT`).
pub fn faults(ctx: &Context) -> anyhow::Result<crate::runner::FaultPlan> {
    match &ctx.env.fault {
        None => Ok(Default::default()),
        Some(text) => Ok(crate::runner::FaultPlan::parse(text)
            .map_err(|e| UserError::usage(format!("LOOP_RUNNER_FAULT: {e}")))?),
    }
}

fn resolve_config(args: &RunArgs, task_path: &Path) -> anyhow::Result<RunConfig> {
    let default_file = task_path.parent().unwrap_or(Path::new(".")).join("loop-runner.toml");
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None if default_file.is_file() => ConfigFile::load(&default_file)?,
        None => ConfigFile::default(),
    };
    let overrides = Overrides {
        backend: args.agent.map(|a| match a {
            AgentArg::Builtin => BackendKind::Builtin,
            AgentArg::Openai => BackendKind::Openai,
            AgentArg::Replay => BackendKind::Replay,
        }),
        base_url: args.base_url.clone(),
        model: args.model.clone(),
        max_iterations: args.iterations,
        jobs: args.jobs,
        min_free_disk: args.min_free_disk,
        validation: args.validation.map(ValidationArg::method),
        machine: Some(machine()),
        sandbox: args.backend.sandbox.map(|s| match s {
            SandboxArg::Wasi => SandboxChoice::Wasi,
            SandboxArg::Process => SandboxChoice::Process,
        }),
        seed: args.seed,
    };
    Ok(RunConfig::resolve(&file, &overrides)?)
}

/// This machine's cores and available memory (`MemAvailable` of /proc/meminfo).
pub(super) fn machine() -> crate::config::Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kib| kib * 1024);
    crate::config::Machine { cores, memory_available }
}

/// The agent backend, and a redactor for the secrets it holds.
pub fn backend(
    agent: &AgentConfig,
    transcript: Option<&Path>,
) -> anyhow::Result<(Arc<dyn Backend>, Redactor)> {
    match agent.backend {
        BackendKind::Builtin => Ok((Arc::new(BuiltinBackend::default()), Redactor::default())),
        BackendKind::Replay => {
            let path = transcript.ok_or_else(|| {
                UserError::usage("--agent replay needs --transcript PATH (a run's transcript.jsonl)")
            })?;
            let backend = ReplayBackend::from_transcript(path)
                .map_err(|e| UserError::setup(format!("cannot read the transcript: {e}")))?;
            Ok((Arc::new(backend), Redactor::default()))
        }
        BackendKind::Openai => {
            let key = api_key(agent.api_key_env.as_deref(), &agent.base_url)?;
            let backend = OpenAiBackend::new(&agent.base_url, key.as_ref(), agent.timeout)
                .map_err(|e| UserError::setup(format!("cannot set up the OpenAI client: {e}")))?;
            Ok((Arc::new(backend), Redactor::new(key)))
        }
    }
}

/// Reads the key from the variable the config names, then removes it from this process's
/// environment (see [`crate::env::scrub`]). OpenAI's own API needs one; local servers usually
/// do not.
pub fn api_key(var: Option<&str>, base_url: &str) -> Result<Option<Secret>, UserError> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => {
            crate::env::scrub(var);
            Ok(Some(Secret::new(value)))
        }
        _ if base_url.contains("api.openai.com") => {
            Err(UserError::setup(format!("the API key variable `{var}` (named by `api_key_env`) is not set"))
                .with_hint(format!(
                    "export {var}=..., or point --base-url at a local OpenAI-compatible server"
                )))
        }
        _ => {
            tracing::warn!("`{var}` is not set; calling {base_url} without an API key");
            Ok(None)
        }
    }
}

/// First Ctrl-C (or SIGTERM, where it counts): stop the loop, then evaluate and report.
/// Second: exit at once.
fn watch_interrupts(interrupt: CancellationToken, printer: Printer, stopping: Stopping) {
    tokio::spawn(async move {
        let mut term = match stopping {
            Stopping::InterruptOrTerminate => terminate_signal(),
            Stopping::InterruptOnly => None,
        };
        let Some(what) = stop_signal(&mut term).await else { return };
        let again = if term.is_some() { "Ctrl-C or SIGTERM" } else { "Ctrl-C" };
        printer.status(&format!(
            "{what}: finishing with the final evaluation and the report ({again} again to abort now)"
        ));
        interrupt.cancel();
        if stop_signal(&mut term).await.is_some() {
            printer.status("aborted; the journal and every finished iteration are saved (`loop-runner resume` continues)");
            std::process::exit(exit_code::INTERRUPTED);
        }
    });
}

/// A handler for SIGTERM; `None` (SIGTERM then ends the process at once) where it cannot be
/// installed.
pub(super) fn terminate_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::terminate())
        .inspect_err(|e| tracing::warn!("SIGTERM will end the process at once: {e}"))
        .ok()
}

/// The next Ctrl-C, or SIGTERM where `term` listens for it, named as the status line says it;
/// `None` when Ctrl-C cannot be waited for.
pub(super) async fn stop_signal(term: &mut Option<tokio::signal::unix::Signal>) -> Option<&'static str> {
    let terminated = async {
        match term.as_mut() {
            Some(t) => t.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.ok().map(|()| "interrupted"),
        Some(()) = terminated => Some("terminated (SIGTERM)"),
    }
}

fn print_summary(printer: Printer, dir: &Path, summary: &Summary) {
    for waived in &summary.sandbox_waived {
        printer.status(&format!("sandbox protection that was off: {waived}"));
    }
    let score = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.4}"));
    let refit = match (summary.final_iteration, summary.best_iteration) {
        (Some(f), Some(b)) if f != b => format!(
            "\nfinal model: iteration {f}, iteration {b} {}: test {} {} (as selected: {})",
            if dir.join("iterations").join(crate::snapshot::tag_name(f)).join("steps/bag.json").is_file() {
                "bagged over the cross-validation folds"
            } else {
                "trained on every training row"
            },
            summary.metric,
            score(summary.test_score),
            score(summary.selected_test_score)
        ),
        _ => String::new(),
    };
    let best_test = if refit.is_empty() { summary.test_score } else { summary.selected_test_score };
    printer.status(&format!(
        "done: {} iterations in {:.0} s; best iteration {}: validation {} {}, test {} {}{refit}\nreport: {}",
        summary.iterations,
        summary.wall_seconds,
        summary.best_iteration.map_or("—".into(), |i| i.to_string()),
        summary.metric,
        score(summary.validation_score),
        summary.metric,
        score(best_test),
        dir.join("report").join("REPORT.md").display()
    ));
}
