//! `loop-runner bench …`: prints tables of medians and ratios.

use anyhow::Context as _;

use super::args::BenchSandboxArgs;
use super::dispatch::Context;
use super::printer::CompileProgress;
use crate::bench;
use crate::exit_code;
use crate::sandbox::Sandbox;
use crate::sandbox::wasi::{Flavor, WasiOptions, WasiSandbox};

pub fn sandbox(ctx: &Context, args: &BenchSandboxArgs) -> anyhow::Result<i32> {
    let observer = CompileProgress::new(ctx.printer);
    let mut opened = Vec::new();
    for flavor in [Flavor::Preimport, Flavor::Snapshot] {
        let options = WasiOptions { flavor, ..Default::default() };
        let sandbox = WasiSandbox::open(&ctx.home, options, &observer)
            .with_context(|| format!("opening the WASI sandbox ({})", flavor.name()))?;
        opened.push((format!("wasi-{}", flavor.name()), sandbox));
    }
    let mut sandboxes: Vec<(&str, &dyn Sandbox)> =
        opened.iter().map(|(label, s)| (label.as_str(), s as &dyn Sandbox)).collect();
    // The process jail around the same interpreter the native column runs bare.
    let process = if args.wasi_only {
        None
    } else {
        let options =
            crate::sandbox::process::ProcessOptions { python: args.python.clone(), ..Default::default() };
        Some(crate::sandbox::process::ProcessSandbox::open(&options).context("opening the process sandbox")?)
    };
    if let Some(p) = &process {
        sandboxes.push(("process", p as &dyn Sandbox));
    }
    let native = (!args.wasi_only).then_some(args.python.as_path());
    let printer = ctx.printer;
    let rows = bench::sandbox(&sandboxes, native, &args.data, &args.target, args.repeat, &|line| {
        printer.status(line)
    })?;
    print!("{}", table(&sandboxes, &rows));
    let info = opened[0].1.info();
    println!(
        "medians of {} runs each, interleaved; {} on {}; native: `{}` single-threaded",
        args.repeat,
        info.interpreter,
        info.engine,
        args.python.display()
    );
    Ok(exit_code::SUCCESS)
}

fn table(sandboxes: &[(&str, &dyn Sandbox)], rows: &[bench::Row]) -> String {
    let mut out = format!("{:<44}", "workload (seconds)");
    for (label, _) in sandboxes {
        out.push_str(&format!(" {label:>15}"));
    }
    out.push_str(&format!(" {:>8}", "native"));
    for (label, _) in sandboxes {
        out.push_str(&format!(" {:>22}", format!("{label}/native")));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&format!("{:<44}", row.name));
        for t in &row.sandboxed {
            out.push_str(&format!(" {:>15.3}", t.as_secs_f64()));
        }
        let native = row.native.map_or("-".into(), |n| format!("{:.3}", n.as_secs_f64()));
        out.push_str(&format!(" {native:>8}"));
        for r in row.ratios() {
            out.push_str(&format!(" {:>22}", r.map_or("-".into(), |r| format!("{r:.2}x"))));
        }
        out.push('\n');
    }
    out
}

/// `bench quality`: the built-in agent on every task, one budget each, in one process.
pub fn quality(ctx: &Context, args: &super::args::BenchQualityArgs) -> anyhow::Result<i32> {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::agent::Redactor;
    use crate::builtin::BuiltinBackend;
    use crate::config::{ConfigFile, Overrides, RunConfig};
    use crate::data::Dataset;
    use crate::runner::{RunInputs, Runner, Silent};
    use crate::task::Task;

    let tasks = bench::glob(&args.tasks)?;
    anyhow::ensure!(!tasks.is_empty(), "no task file matches `{}`", args.tasks);
    let references: BTreeMap<String, BTreeMap<String, f64>> = match fs_err::read_to_string(&args.references) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("reading `{}`", args.references.display()))?
        }
        Err(_) => BTreeMap::new(),
    };
    let sandbox: Arc<dyn Sandbox> = Arc::new(
        WasiSandbox::open(&ctx.home, WasiOptions::default(), &CompileProgress::new(ctx.printer))
            .context("opening the WASI sandbox")?,
    );
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let machine = super::run_cmd::machine();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut rows = Vec::new();
    for path in &tasks {
        let task = Task::load(path)?;
        let dataset = Dataset::prepare(&task)?;
        let overrides = Overrides {
            seed: args.seed,
            jobs: args.jobs,
            validation: args.validation.map(super::args::ValidationArg::method),
            machine: Some(machine),
            ..Default::default()
        };
        let config = RunConfig::resolve(&file, &overrides)?;
        let (jobs, validation) = (config.loop_.jobs, config.validation.clone());
        ctx.printer.status(&format!(
            "{}: {} for {:.0} s",
            task.name,
            dataset.target.metric,
            args.budget.as_secs_f64()
        ));
        let inputs = RunInputs {
            target: dataset.target.clone(),
            profile: dataset.profile.clone(),
            task,
            config,
            budget: Some(args.budget),
            stop_after: None,
            faults: Default::default(),
            started: std::time::Instant::now(),
            decisions: None,
        };
        let (summary, dir) = runtime.block_on(async {
            let mut runner = Runner::create(
                crate::run_dir::RunDir::create(&args.runs_dir, &inputs.task.name)?,
                &dataset,
                inputs,
                Arc::new(BuiltinBackend::default()),
                Redactor::default(),
                sandbox.clone(),
                Arc::new(Silent),
                tokio_util::sync::CancellationToken::new(),
            )?;
            let dir = runner.dir.clone();
            anyhow::Ok((runner.run().await?, dir))
        })?;
        let refs = references.get(&summary.task).cloned().unwrap_or_default();
        let report = crate::report::ReportData::load(&dir)?;
        let folds = validation.folds_for(dataset.pool.height());
        rows.push((summary, refs, report.runner_seconds, jobs, folds));
    }
    runtime.shutdown_background();
    let score = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.4}"));
    println!(
        "{:<14} {:<9} {:<9} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>6} {:>10} {:>8}",
        "task",
        "metric",
        "scored by",
        "validation",
        "test",
        "selected",
        "hgb default",
        "flaml 60s",
        "autogluon",
        "iters",
        "runner ms",
        "wall (s)"
    );
    for (s, refs, runner, jobs, folds) in &rows {
        println!(
            "{:<14} {:<9} {:<9} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>6} {:>10} {:>8.0}",
            s.task,
            s.metric,
            folds.map_or("holdout".to_string(), |k| format!("{k}-fold")),
            score(s.validation_score),
            score(s.test_score),
            score(s.selected_test_score.or(s.test_score)),
            score(refs.get("hgb_default").copied()),
            score(refs.get("flaml_60s").copied()),
            score(refs.get("autogluon_60s").copied()),
            format!("{}×{jobs}", s.iterations),
            runner.map_or("—".into(), |r| format!("{:.0}", r * 1000.0)),
            s.wall_seconds
        );
    }
    println!(
        "built-in agent, WASI sandbox, budget {:.0} s per task; iters×jobs; runner ms: the runner's own time per iteration (median); test: the final model's (a refit or bag), selected: the selected iteration's; runs in `{}`",
        args.budget.as_secs_f64(),
        args.runs_dir.display()
    );
    Ok(exit_code::SUCCESS)
}

/// `bench snapshot`: commit times for a large model file.
pub fn snapshot(_ctx: &Context, args: &super::args::BenchSnapshotArgs) -> anyhow::Result<i32> {
    let t = bench::snapshot(args.size)?;
    let mib = t.bytes as f64 / (1 << 20) as f64;
    println!("an iteration with a {mib:.0} MiB model file (incompressible) in the run's git workspace:");
    println!("{:<24} {:>10} {:>22}", "", "commit (s)", "move best + checkout (s)");
    for (name, commit, checkout) in [
        ("new file", t.first, t.checkouts[0]),
        ("file unchanged", t.unchanged, t.checkouts[1]),
        ("file changed", t.changed, t.checkouts[2]),
    ] {
        println!("{name:<24} {:>10.3} {:>22.3}", commit.as_secs_f64(), checkout.as_secs_f64());
    }
    println!(
        "objects written by the commit with the file unchanged: {} (the tree, the commit, train.py)",
        t.objects_written_unchanged
    );
    Ok(exit_code::SUCCESS)
}

pub fn tables(ctx: &Context, args: &super::args::BenchTablesArgs) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir()?;
    let spinner = ctx.printer.spinner(&format!(
        "writing {} synthetic runs of {} iterations through the journal writer",
        args.runs, args.iterations
    ));
    crate::tables::synth::synthesize(dir.path(), args.runs, args.iterations, 7)?;
    spinner.finish_and_clear();
    let t = bench::tables(dir.path(), args.repeat.max(1))?;
    println!(
        "{} runs x {} iterations: {} iteration rows, {} step rows, {} script-run rows (median of {})",
        args.runs,
        args.iterations,
        t.iterations,
        t.steps,
        t.script_runs,
        args.repeat.max(1)
    );
    for (name, time) in &t.times {
        println!("{name:<52} {:>8.3} s", time.as_secs_f64());
    }
    Ok(exit_code::SUCCESS)
}

pub fn steps(ctx: &Context, args: &super::args::BenchStepsArgs) -> anyhow::Result<i32> {
    let task = crate::task::Task::load(&args.task)?;
    let spinner = ctx.printer.spinner(&format!(
        "timing an iteration's agent steps after {} earlier iterations",
        args.history.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    ));
    let rows = bench::steps(&task, &args.history, args.repeat)?;
    spinner.finish_and_clear();
    let mut header = format!("{:>8}", "history");
    for step in bench::STEPS {
        header.push_str(&format!(" {:>12}", step.name()));
    }
    println!("{header} {:>10} {:>22}", "iteration", "per earlier iteration");
    let first = rows.first().map(|r| (r.history, r.iteration));
    for row in &rows {
        let mut line = format!("{:>8}", row.history);
        for t in &row.steps {
            line.push_str(&format!(" {:>9.2} ms", t.as_secs_f64() * 1e3));
        }
        let slope = first.filter(|(n, _)| row.history > *n).map_or("-".to_string(), |(n, t)| {
            let grown = row.iteration.as_secs_f64() - t.as_secs_f64();
            format!("{:.2} µs", grown * 1e6 / (row.history - n) as f64)
        });
        println!("{line} {:>7.2} ms {slope:>22}", row.iteration.as_secs_f64() * 1e3);
    }
    println!(
        "medians of {} iterations each: prompts rendered with the memory, the built-in agent asked, answers validated and appended to a transcript on disk ({}); `{}`",
        args.repeat.max(1),
        task.name,
        args.task.display()
    );
    Ok(exit_code::SUCCESS)
}
