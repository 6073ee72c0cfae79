//! `checkout`, `predict`, `audit` and `replay`: using and checking a run's snapshots.

use std::path::PathBuf;
use std::sync::Arc;

use super::args::{AuditArgs, CheckoutArgs, PredictArgs, ReplayArgs};
use super::dispatch::Context;
use super::run_cmd::{drive, open_sandbox_for};
use crate::agent::{Redactor, ReplayBackend};
use crate::audit::{audit, compare_runs, render};
use crate::config::RunConfig;
use crate::data::{Dataset, read_table};
use crate::error::UserError;
use crate::exit_code;
use crate::journal::{self, Event};
use crate::run_dir::{Manifest, RunDir};
use crate::runner::{RunInputs, Runner};
use crate::snapshot::Workspace;

pub fn checkout(_ctx: &Context, args: &CheckoutArgs) -> anyhow::Result<i32> {
    let dir = RunDir::open(&args.run)?;
    if args.dir.exists() && fs_err::read_dir(&args.dir)?.next().is_some() {
        return Err(UserError::usage(format!("`{}` exists and is not empty", args.dir.display())).into());
    }
    let workspace = Workspace::open_or_init(&dir.workspace())?;
    let commit = workspace.resolve(&args.rev)?;
    workspace.materialize(commit, &args.dir)?;
    println!("{}", args.dir.display());
    Ok(exit_code::SUCCESS)
}

pub fn predict(ctx: &Context, args: &PredictArgs) -> anyhow::Result<i32> {
    let dir = RunDir::open(&args.run)?;
    let predictions =
        crate::predict::predict(&dir, &args.rev, &args.input, &args.input.display().to_string(), |config| {
            open_sandbox_for(ctx, config, &Default::default())
        })?;
    fs_err::write(&args.output, &predictions.csv)?;
    ctx.printer
        .status(&format!("{} predictions from `{}` ({})", predictions.rows, args.rev, predictions.commit));
    println!("{}", args.output.display());
    Ok(exit_code::SUCCESS)
}

pub fn audit_cmd(ctx: &Context, args: &AuditArgs) -> anyhow::Result<i32> {
    let dir = RunDir::open(&args.run)?;
    let manifest = Manifest::read(&dir.run_json())?;
    let config = RunConfig::resolve(&manifest.config, &Default::default())?;
    // The sandbox the run recorded, so the re-run can match bit for bit.
    let sandbox = open_sandbox_for(ctx, &config.sandbox, &Default::default())?;
    let checks = audit(&dir, &args.rev, args.retrain, &sandbox)?;
    if let Err(e) = crate::audit::record(&dir, &args.rev, args.retrain, &checks) {
        tracing::warn!("the audit's result could not be recorded in `{}`: {e}", dir.audits().display());
    }
    print!("{}", render(&checks));
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        println!("audit passed: {} checks match", checks.len());
        Ok(exit_code::SUCCESS)
    } else {
        println!("audit FAILED: {failed} of {} checks differ", checks.len());
        Ok(exit_code::EXPERIMENT_FAILED)
    }
}

pub fn replay(ctx: &Context, args: &ReplayArgs) -> anyhow::Result<i32> {
    let original = RunDir::open(&args.run)?;
    let manifest = Manifest::read(&original.run_json())?;
    let mut config = RunConfig::resolve(&manifest.config, &Default::default())?;
    // Replayed errors need no waiting.
    config.agent.settings.backoff_base = std::time::Duration::ZERO;
    let entries = journal::read(&original.journal())?;
    let iterations =
        entries.iter().filter(|e| matches!(e.event, Event::IterationFinished { .. })).count() as u32;
    // The search's decisions as the original run made them (its timing shaped them).
    let mut decisions = std::collections::BTreeMap::new();
    for e in &entries {
        if let Event::IterationStarted { iteration, parent, operation, reason } = &e.event {
            decisions.insert(*iteration, crate::search::Decision::new(*operation, *parent, reason.clone()));
        }
    }
    let backend = ReplayBackend::from_transcript(&original.transcript())
        .map_err(|e| UserError::setup(format!("cannot read the transcript: {e}")))?;
    let dataset = Dataset {
        target: manifest.target.clone(),
        pool: read_table(&original.pool_csv())?,
        test: read_table(&original.test_csv())?,
        dropped_rows: manifest.dropped_rows_without_target,
        unseen_classes: Vec::new(),
        profile: manifest.profile.clone(),
    };
    let inputs = RunInputs {
        task: manifest.task.clone(),
        target: manifest.target.clone(),
        profile: manifest.profile.clone(),
        config,
        budget: None,
        stop_after: Some(iterations),
        faults: Default::default(),
        started: ctx.started,
        decisions: Some(decisions.into_values().collect()),
    };
    let sandbox = open_sandbox_for(ctx, &inputs.config.sandbox, &Default::default())?;
    let runs_dir = args
        .runs_dir
        .clone()
        .unwrap_or_else(|| original.root.parent().map(PathBuf::from).unwrap_or_default());
    let new_dir = std::cell::RefCell::new(None);
    let code = drive(ctx, super::run_cmd::Stopping::InterruptOrTerminate, |interrupt, reporter| {
        let runner = Runner::create(
            RunDir::create(&runs_dir, &inputs.task.name)?,
            &dataset,
            inputs,
            Arc::new(backend),
            Redactor::default(),
            sandbox,
            reporter,
            interrupt,
        )?;
        *new_dir.borrow_mut() = Some(runner.dir.clone());
        Ok(runner)
    })?;
    let replayed = new_dir.into_inner().expect("the run was created");
    let divergence = journal::read(&replayed.journal())?.into_iter().find_map(|e| match e.event {
        Event::StepFinished { ok: false, detail, .. } if detail.contains("replay") => Some(detail),
        _ => None,
    });
    let checks = compare_runs(&original, &replayed)?;
    eprintln!();
    print!("{}", render(&checks));
    if let Some(detail) = &divergence {
        println!("{detail}");
    }
    if divergence.is_none() && checks.iter().all(|c| c.ok) && code != exit_code::INTERRUPTED {
        println!("replay reproduced all {iterations} iterations: every snapshot tree is identical");
        Ok(exit_code::SUCCESS)
    } else {
        println!("replay DIVERGED");
        Ok(exit_code::EXPERIMENT_FAILED)
    }
}
