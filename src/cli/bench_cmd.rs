//! `loop-runner bench …`: prints tables of medians and ratios.

use anyhow::Context as _;

use super::args::BenchSandboxArgs;
use super::dispatch::Context;
use super::printer::CompileProgress;
use crate::bench;
use crate::exit_code;
use crate::sandbox::wasi::{WasiOptions, WasiSandbox};

pub fn sandbox(ctx: &Context, args: &BenchSandboxArgs) -> anyhow::Result<i32> {
    let sandbox = WasiSandbox::open(
        &ctx.home,
        WasiOptions::default(),
        &CompileProgress::new(ctx.printer),
    )
    .context("opening the WASI sandbox")?;
    let native = (!args.wasi_only).then_some(args.python.as_path());
    let printer = ctx.printer;
    let rows = bench::sandbox(
        &sandbox,
        native,
        &args.data,
        &args.target,
        args.repeat,
        &|line| printer.status(line),
    )?;
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "workload", "wasi (s)", "native (s)", "ratio"
    );
    for row in &rows {
        println!(
            "{:<44} {:>12.3} {:>12} {:>8}",
            row.name,
            row.wasi.as_secs_f64(),
            row.native
                .map_or("-".into(), |n| format!("{:.3}", n.as_secs_f64())),
            row.ratio().map_or("-".into(), |r| format!("{r:.2}x")),
        );
    }
    println!(
        "medians of {} runs; wasi {}",
        args.repeat,
        sandbox_label(&sandbox)
    );
    Ok(exit_code::SUCCESS)
}

fn sandbox_label(sandbox: &WasiSandbox) -> String {
    use crate::sandbox::Sandbox;
    let info = sandbox.info();
    format!(
        "{} on {} ({})",
        info.interpreter,
        info.engine,
        info.module_flavor.unwrap_or_default()
    )
}
