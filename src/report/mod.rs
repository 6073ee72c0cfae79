//! Reports, rebuilt from the journal alone: `REPORT.md`, a self-contained `report.html` with an
//! SVG plot of the validation metric per iteration, and `summary.json` for other tools.
//!
//! Reading only the journal keeps the report honest (it shows what was recorded) and lets
//! `loop-runner report RUN` rewrite it at any time.

mod model;
mod render;

pub use model::{Leader, ReportData, StepTotals, Summary};
pub use render::{cost_label, html, leaderboard_text, markdown, svg_plot};

use crate::run_dir::RunDir;

/// Writes the three report files into `report/`.
pub fn write(dir: &RunDir) -> anyhow::Result<ReportData> {
    let data = ReportData::load(dir)?;
    let out = dir.report();
    fs_err::create_dir_all(&out)?;
    crate::fsx::write_atomic(&out.join("REPORT.md"), markdown(&data).as_bytes())?;
    crate::fsx::write_atomic(&out.join("report.html"), html(&data).as_bytes())?;
    crate::fsx::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&data.summary())?.as_bytes(),
    )?;
    Ok(data)
}
