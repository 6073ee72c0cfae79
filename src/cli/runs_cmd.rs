//! `loop-runner status RUN` and `loop-runner report RUN`.

use super::args::RunRef;
use super::dispatch::Context;
use crate::exit_code;
use crate::report::{ReportData, cost_label, leaderboard_text};
use crate::run_dir::RunDir;

pub fn status(_ctx: &Context, args: &RunRef) -> anyhow::Result<i32> {
    let dir = RunDir::open(&args.run)?;
    let data = ReportData::load(&dir)?;
    let score = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.4}"));
    println!(
        "run {} ({}): task {}, agent {}, sandbox {}",
        data.run_id,
        data.finished.as_deref().unwrap_or("not finished"),
        data.task,
        data.agent,
        data.sandbox
    );
    println!(
        "{} iterations in {:.0} s; best iteration {}: validation {} {}; test {}; agent cost {}",
        data.iterations.len(),
        data.wall_seconds,
        data.best_iteration.map_or("—".into(), |i| i.to_string()),
        data.metric,
        score(data.validation_score),
        score(data.test_score),
        cost_label(&data)
    );
    for waived in &data.sandbox_waived {
        println!("sandbox protection off: {waived}");
    }
    println!();
    print!("{}", leaderboard_text(&data, 20));
    let tree = data.tree();
    let lines = tree.lines().count();
    println!("\nsolution tree:");
    for line in tree.lines().take(60) {
        println!("  {line}");
    }
    if lines > 60 {
        println!("  ... {} more (the report has the whole tree)", lines - 60);
    }
    Ok(exit_code::SUCCESS)
}

pub fn report(ctx: &Context, args: &RunRef) -> anyhow::Result<i32> {
    let dir = RunDir::open(&args.run)?;
    crate::report::write(&dir)?;
    ctx.printer.status(&format!("wrote {}", dir.report().display()));
    for name in ["REPORT.md", "report.html", "summary.json"] {
        println!("{}", dir.report().join(name).display());
    }
    Ok(exit_code::SUCCESS)
}
