//! `loop-runner sweep`, `sweep-run`, `sweep-status`, `sweep-report`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::ValueEnum;

use super::args::{
    AgentArg, ManifestRef, RunArgs, RunRef, SandboxArg, SweepArgs, SweepRunArgs, ValidationArg,
};
use super::dispatch::Context;
use super::run_cmd;
use crate::error::UserError;
use crate::exit_code;
use crate::sweep::scheduler::{self, SlurmOptions};
use crate::sweep::{Manifest, State, SweepFile, report};

pub fn sweep(ctx: &Context, args: &SweepArgs) -> anyhow::Result<i32> {
    let file = SweepFile::load(&args.file)?;
    let manifest = file.expand(&args.file, &args.runs_dir)?;
    let runs_dir = fs_err::canonicalize(&args.runs_dir)?;
    let path = Manifest::path_in(&runs_dir, &manifest.name);
    manifest.write_or_check(&path)?;
    println!("{}", path.display());
    if args.k8s {
        let yaml_path = runs_dir.join(format!("{}-k8s.yaml", manifest.name));
        let parallelism = args.max_parallel.unwrap_or(manifest.runs.len());
        let yaml = scheduler::k8s_job(&manifest, &path, &runs_dir, &args.image, &args.claim, parallelism);
        fs_err::write(&yaml_path, yaml)?;
        ctx.printer.status(&format!(
            "{} runs; apply the Indexed Job with: kubectl apply -f {}",
            manifest.runs.len(),
            yaml_path.display()
        ));
        println!("{}", yaml_path.display());
        return Ok(exit_code::SUCCESS);
    }
    if args.slurm {
        return slurm(ctx, args, &manifest, &path, &runs_dir);
    }
    local(ctx, &manifest, &path, args.jobs.unwrap_or(1) as usize)
}

/// Writes the job array's script and submits it (unless `--no-submit`). The WASI runtime is set up
/// and its module compiled here, once, so array tasks do not race to do it on a shared disk.
fn slurm(
    ctx: &Context,
    args: &SweepArgs,
    manifest: &Manifest,
    path: &Path,
    runs_dir: &Path,
) -> anyhow::Result<i32> {
    if manifest.runs.iter().any(|e| e.sandbox.as_deref() != Some("process")) {
        run_cmd::open_sandbox(ctx)?;
    }
    let dir = runs_dir.join(format!("{}-slurm", manifest.name));
    fs_err::create_dir_all(&dir)?;
    let exe = fs_err::canonicalize(std::env::current_exe()?)?;
    let options = SlurmOptions {
        partition: args.partition.clone(),
        time: args.time.clone(),
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        max_parallel: args.max_parallel,
    };
    let script = scheduler::sbatch_script(manifest, path, &exe, &ctx.home, &dir, &options);
    let script_path = dir.join("sbatch.sh");
    fs_err::write(&script_path, script)?;
    if args.no_submit {
        ctx.printer.status(&format!("submit it with: sbatch {}", script_path.display()));
        println!("{}", script_path.display());
        return Ok(exit_code::SUCCESS);
    }
    let output =
        std::process::Command::new("sbatch").arg("--parsable").arg(&script_path).output().map_err(|e| {
            UserError::setup(format!("cannot run `sbatch`: {e}")).with_hint(format!(
                "is Slurm installed here? `--no-submit` writes {} without submitting",
                script_path.display()
            ))
        })?;
    if !output.status.success() {
        return Err(UserError::setup(format!(
            "sbatch refused the job array: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
        .into());
    }
    let job =
        String::from_utf8_lossy(&output.stdout).trim().split(';').next().unwrap_or_default().to_string();
    // Every submission of this batch, newest last: `sweep-status` asks Slurm about them.
    let mut jobs = std::fs::read_to_string(dir.join("jobs")).unwrap_or_default();
    jobs.push_str(&format!("{job}\n"));
    fs_err::write(dir.join("jobs"), jobs)?;
    ctx.printer.status(&format!("submitted {} runs as Slurm job array {job}", manifest.runs.len()));
    println!("{job}");
    Ok(exit_code::SUCCESS)
}

/// Runs the manifest here, `jobs` at a time, each child pinned to its share of the CPUs this
/// process may use. Finished runs are skipped, unfinished ones resumed. Ctrl-C is passed on to
/// every run (each evaluates what it has and writes its report) and nothing new starts.
fn local(ctx: &Context, manifest: &Manifest, path: &Path, jobs: usize) -> anyhow::Result<i32> {
    let cpus = allowed_cpus();
    let per = (cpus.len() / jobs).max(1);
    let mut todo: Vec<usize> = Vec::new();
    for e in &manifest.runs {
        match e.state()? {
            State::Finished => ctx.printer.status(&format!("[{}] {}: finished already", e.index, e.id)),
            _ => todo.push(e.index),
        }
    }
    let logs = path.with_file_name(format!("{}-logs", manifest.name));
    fs_err::create_dir_all(&logs)?;
    let exe = std::env::current_exe()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let total = todo.len();
    let interrupted = runtime.block_on(async {
        let mut todo = todo.into_iter();
        let mut running: tokio::task::JoinSet<(usize, usize, std::io::Result<std::process::ExitStatus>)> = Default::default();
        let mut pids: Vec<(usize, u32)> = Vec::new();
        let mut free: Vec<usize> = (0..jobs).rev().collect();
        let mut stopping = false;
        let mut done = 0;
        let mut term = run_cmd::terminate_signal();
        loop {
            while !stopping && let Some(slot) = free.pop() {
                let Some(index) = todo.next() else {
                    free.push(slot);
                    break;
                };
                let entry = &manifest.runs[index];
                let mine: Vec<String> =
                    (0..per).map(|k| cpus[(slot * per + k) % cpus.len()].to_string()).collect();
                let log_path = logs.join(format!("{index}.log"));
                let log = std::fs::File::create(&log_path)
                    .map_err(|e| anyhow::anyhow!("creating `{}`: {e}", log_path.display()))?;
                let mut child = tokio::process::Command::new(&exe)
                    .arg("sweep-run")
                    .arg("--home")
                    .arg(&ctx.home)
                    .arg(path)
                    .arg(index.to_string())
                    .arg("--cpus")
                    .arg(mine.join(","))
                    .arg("--parent")
                    .arg(std::process::id().to_string())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    // Its own process group: a terminal's Ctrl-C reaches the sweep, which passes it
                    // on once, rather than every run twice.
                    .process_group(0)
                    .spawn()?;
                let pid = child.id().unwrap_or_default();
                pids.push((index, pid));
                ctx.printer.status(&format!("[{index}] {}: started on CPUs {} (log {})", entry.id, mine.join(","), log_path.display()));
                running.spawn(async move { (index, slot, child.wait().await) });
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                Some(joined) = running.join_next() => {
                    let (index, slot, status) = joined?;
                    free.push(slot);
                    pids.retain(|(i, _)| *i != index);
                    done += 1;
                    let entry = &manifest.runs[index];
                    let outcome = match (&status, entry.state()) {
                        (_, Ok(State::Finished)) => "finished".to_string(),
                        (Ok(s), _) => format!("stopped unfinished ({s})"),
                        (Err(e), _) => format!("could not be waited for: {e}"),
                    };
                    ctx.printer.status(&format!("[{index}] {}: {outcome} ({done}/{total})", entry.id));
                }
                Some(what) = run_cmd::stop_signal(&mut term), if !stopping => {
                    stopping = true;
                    ctx.printer.status(&format!("{what}: each running run evaluates what it has and writes its report; nothing new starts (run the sweep again to go on)"));
                    for (_, pid) in &pids {
                        if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
                        }
                    }
                }
            }
        }
        anyhow::Ok(stopping)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    let lines = report::lines(manifest)?;
    let finished = lines.iter().filter(|l| l.state == State::Finished).count();
    ctx.printer.status(&format!(
        "{finished} of {} runs finished; `loop-runner sweep-report {}` tabulates them",
        lines.len(),
        path.display()
    ));
    Ok(if interrupted {
        exit_code::INTERRUPTED
    } else if finished == lines.len() {
        exit_code::SUCCESS
    } else {
        exit_code::EXPERIMENT_FAILED
    })
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU).filter(|c| set.is_set(*c)).collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

pub fn sweep_run(ctx: &Context, args: &SweepRunArgs) -> anyhow::Result<i32> {
    let manifest = Manifest::read(&args.manifest)?;
    let index = match (args.index, &ctx.env.scheduler_index) {
        (Some(i), _) => i,
        (None, Some(text)) => text
            .parse()
            .map_err(|_| UserError::usage(format!("the scheduler's index `{text}` is not a number")))?,
        (None, None) => {
            return Err(UserError::usage(
                "which run? give its index, or run under Slurm or Kubernetes, which set it",
            )
            .into());
        }
    };
    let entry = manifest.entry(index)?;
    if let Some(parent) = args.parent {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .map_err(|e| UserError::setup(format!("cannot tie run {index} to its sweep: {e}")))?;
        if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent) {
            return Err(UserError::setup(format!("the sweep that started run {index} is gone")).into());
        }
    }
    if !args.cpus.is_empty() {
        // Before any thread starts, so every thread and sandbox of the run inherits it (and the
        // run's default --jobs counts only these CPUs).
        let mut set = rustix::thread::CpuSet::new();
        for cpu in &args.cpus {
            set.set(*cpu);
        }
        rustix::thread::sched_setaffinity(None, &set)
            .map_err(|e| UserError::setup(format!("cannot pin run {index} to CPUs {:?}: {e}", args.cpus)))?;
    }
    match entry.state()? {
        State::Finished => {
            ctx.printer.status(&format!(
                "run {index} ({}) is finished: {}",
                entry.id,
                entry.run_dir.display()
            ));
            println!("{}", entry.run_dir.display());
            Ok(exit_code::SUCCESS)
        }
        State::Unfinished => {
            ctx.printer.status(&format!("resuming run {index} ({})", entry.id));
            run_cmd::resume(ctx, &RunRef { run: entry.run_dir.clone() }, run_cmd::Stopping::InterruptOnly)
        }
        State::Pending => {
            // A directory without a started journal holds nothing finished (a kill during set-up).
            if entry.run_dir.exists() {
                fs_err::remove_dir_all(&entry.run_dir)?;
            }
            let known = |what: &str, v: &str| {
                UserError::setup(format!("manifest run {index}: {what} `{v}` is not known"))
            };
            let validation = entry
                .validation
                .as_deref()
                .map(|v| ValidationArg::from_str(v, true).map_err(|_| known("validation", v)))
                .transpose()?;
            let sandbox = entry
                .sandbox
                .as_deref()
                .map(|v| SandboxArg::from_str(v, true).map_err(|_| known("sandbox", v)))
                .transpose()?;
            let agent = AgentArg::from_str(&entry.agent, true).map_err(|_| known("agent", &entry.agent))?;
            let mut run = RunArgs {
                task: Some(entry.task.clone()),
                budget: Some(Duration::from_secs_f64(entry.budget_seconds)),
                iterations: entry.iterations,
                run_dir: Some(entry.run_dir.clone()),
                validation,
                agent: Some(agent),
                config: entry.config.clone(),
                model: entry.model.clone(),
                seed: Some(entry.seed),
                ..Default::default()
            };
            run.backend.sandbox = sandbox;
            ctx.printer.status(&format!("starting run {index} ({})", entry.id));
            run_cmd::run(ctx, &run, run_cmd::Stopping::InterruptOnly)
        }
    }
}

pub fn status(ctx: &Context, args: &ManifestRef) -> anyhow::Result<i32> {
    let manifest = Manifest::read(&args.manifest)?;
    let lines = report::lines(&manifest)?;
    let slurm = slurm_states(&args.manifest, &manifest.name);
    let score = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.4}"));
    println!(
        "{:>3}  {:<36} {:<11} {:>10} {:>10} {:>5} {:>7}  slurm",
        "#", "run", "state", "validation", "test", "iters", "wall s"
    );
    for l in &lines {
        let r = l.run.as_ref();
        println!(
            "{:>3}  {:<36} {:<11} {:>10} {:>10} {:>5} {:>7}  {}",
            l.entry.index,
            l.entry.id,
            l.state.name(),
            score(r.and_then(|r| r.validation_score)),
            score(r.and_then(|r| r.test_score)),
            r.map_or("—".into(), |r| r.iterations.to_string()),
            r.map_or("—".into(), |r| format!("{:.0}", r.wall_seconds)),
            slurm.get(&l.entry.index).map_or("", String::as_str)
        );
    }
    let finished = lines.iter().filter(|l| l.state == State::Finished).count();
    ctx.printer.status(&format!("{finished} of {} runs finished", lines.len()));
    Ok(exit_code::SUCCESS)
}

/// Slurm's state of each array task of this batch's latest submission, from `sacct` (which
/// remembers finished tasks) or else `squeue`; empty where neither is installed.
fn slurm_states(manifest_path: &Path, name: &str) -> std::collections::BTreeMap<usize, String> {
    let mut states = std::collections::BTreeMap::new();
    let jobs = manifest_path.with_file_name(format!("{name}-slurm")).join("jobs");
    let Some(job) = std::fs::read_to_string(jobs).ok().and_then(|t| t.lines().last().map(str::to_string))
    else {
        return states;
    };
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd).args(args).output().ok().filter(|o| o.status.success())
    };
    let text = run("sacct", &["-j", &job, "-n", "-P", "-X", "-o", "JobID,State"])
        .or_else(|| run("squeue", &["-j", &job, "-h", "-r", "-o", "%i|%T"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for line in text.lines() {
        let Some((id, state)) = line.split_once('|') else { continue };
        if let Some(index) = id.split('_').nth(1).and_then(|i| i.parse().ok()) {
            states.insert(index, format!("{id} {state}"));
        }
    }
    states
}

pub fn report(ctx: &Context, args: &ManifestRef) -> anyhow::Result<i32> {
    let manifest = Manifest::read(&args.manifest)?;
    let lines = report::lines(&manifest)?;
    let md = report::markdown(&manifest, &lines);
    let base: PathBuf = args.manifest.with_file_name(format!("{}-report", manifest.name));
    fs_err::write(base.with_extension("md"), &md)?;
    fs_err::write(base.with_extension("csv"), report::csv(&lines))?;
    print!("{md}");
    ctx.printer.status(&format!(
        "wrote {} and {}",
        base.with_extension("md").display(),
        base.with_extension("csv").display()
    ));
    Ok(exit_code::SUCCESS)
}
