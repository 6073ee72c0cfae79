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
        let options = WasiOptions {
            flavor,
            ..Default::default()
        };
        let sandbox = WasiSandbox::open(&ctx.home, options, &observer)
            .with_context(|| format!("opening the WASI sandbox ({})", flavor.name()))?;
        opened.push((format!("wasi-{}", flavor.name()), sandbox));
    }
    let sandboxes: Vec<(&str, &dyn Sandbox)> = opened
        .iter()
        .map(|(label, s)| (label.as_str(), s as &dyn Sandbox))
        .collect();
    let native = (!args.wasi_only).then_some(args.python.as_path());
    let printer = ctx.printer;
    let rows = bench::sandbox(
        &sandboxes,
        native,
        &args.data,
        &args.target,
        args.repeat,
        &|line| printer.status(line),
    )?;
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
        let native = row
            .native
            .map_or("-".into(), |n| format!("{:.3}", n.as_secs_f64()));
        out.push_str(&format!(" {native:>8}"));
        for r in row.ratios() {
            out.push_str(&format!(
                " {:>22}",
                r.map_or("-".into(), |r| format!("{r:.2}x"))
            ));
        }
        out.push('\n');
    }
    out
}
