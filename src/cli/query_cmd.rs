//! `loop-runner query`, `compare` and `export`: provenance tables for people and other tools.

use std::io::Write;

use polars::prelude::*;

use super::args::{CompareArgs, ExportArgs, ExportFormat, QueryArgs};
use super::dispatch::Context;
use crate::exit_code;
use crate::run_dir::RunDir;
use crate::tables::{self, Format, Tables};

pub fn query(_ctx: &Context, args: &QueryArgs) -> anyhow::Result<i32> {
    if args.schema {
        print!("{}", tables::describe());
        return Ok(exit_code::SUCCESS);
    }
    let sql = args.sql.as_deref().unwrap_or_default();
    let dirs = tables::find_runs(&args.runs, &args.runs_dir)?;
    let tables = Tables::load(&dirs)?;
    let mut result = tables::with_text_times(&tables.query(sql)?)?;
    let mut out = std::io::stdout().lock();
    if args.csv {
        CsvWriter::new(&mut out).include_header(true).finish(&mut result)?;
    } else if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&json_rows(&result))?)?;
    } else {
        write!(out, "{}", text_table(&result))?;
        writeln!(out, "({} row{})", result.height(), if result.height() == 1 { "" } else { "s" })?;
    }
    Ok(exit_code::SUCCESS)
}

pub fn compare(_ctx: &Context, args: &CompareArgs) -> anyhow::Result<i32> {
    let dirs = args.runs.iter().map(|p| Ok(RunDir::open(p)?)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut runs = Vec::new();
    for dir in &dirs {
        let rows = tables::rows::read_run(dir)
            .map_err(|e| e.context(format!("reading run `{}`", dir.root.display())))?;
        runs.extend(rows.run);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(exit_code::SUCCESS);
    }
    let score = |s: Option<f64>| s.map_or("—".to_string(), |s| format!("{s:.4}"));
    type Line<'a> = (&'a str, &'a dyn Fn(&tables::rows::RunRow) -> String);
    let lines: [Line; 14] = [
        ("task", &|r| r.task.clone()),
        ("metric", &|r| r.metric.clone()),
        ("agent", &|r| {
            if r.model == r.agent { r.agent.clone() } else { format!("{} ({})", r.agent, r.model) }
        }),
        ("sandbox", &|r| r.sandbox.clone()),
        ("validation", &|r| r.folds.map_or(r.validation.clone(), |k| format!("{k}-fold cv"))),
        ("state", &|r| r.stop_reason.clone().map_or(r.state.clone(), |why| format!("{}: {why}", r.state))),
        ("best iteration", &|r| r.best_iteration.map_or("—".into(), |i| i.to_string())),
        ("validation score", &|r| score(r.validation_score)),
        ("final iteration", &|r| r.final_iteration.map_or("—".into(), |i| i.to_string())),
        ("test score", &|r| score(r.test_score)),
        ("iterations", &|r| format!("{} ({} failed)", r.iterations, r.failed_iterations)),
        ("wall", &|r| format!("{:.0} s", r.wall_seconds)),
        ("spend", &|r| format!("${:.4}", r.cost_usd)),
        ("tokens", &|r| format!("{} in, {} out", r.prompt_tokens, r.completion_tokens)),
    ];
    let mut columns = vec![Column::new("".into(), lines.iter().map(|(name, _)| *name).collect::<Vec<_>>())];
    for (i, run) in runs.iter().enumerate() {
        let name = format!("{}#{}", run.run_id, i + 1);
        let name = if runs.iter().filter(|r| r.run_id == run.run_id).count() > 1 {
            name
        } else {
            run.run_id.clone()
        };
        columns.push(Column::new(name.into(), lines.iter().map(|(_, f)| f(run)).collect::<Vec<_>>()));
    }
    let frame = DataFrame::new(lines.len(), columns)?;
    print!("{}", text_table(&frame));
    Ok(exit_code::SUCCESS)
}

pub fn export(ctx: &Context, args: &ExportArgs) -> anyhow::Result<i32> {
    let dirs = tables::find_runs(&args.runs, &args.runs_dir)?;
    let started = std::time::Instant::now();
    let format = match args.format {
        ExportFormat::Mlflow => {
            let exported = crate::mlflow::export(&dirs, &args.out)?;
            ctx.printer.status(&format!(
                "exported {} run(s) with {} iteration(s) into {} experiment(s) in {:.1} s",
                exported.runs.len(),
                exported.iterations,
                exported.experiments.len(),
                started.elapsed().as_secs_f64()
            ));
            for (name, id) in &exported.experiments {
                println!("experiment {id}: {name}");
            }
            for (run, id) in &exported.runs {
                println!("run {id}: {run}");
            }
            return Ok(exit_code::SUCCESS);
        }
        ExportFormat::Parquet => Format::Parquet,
        ExportFormat::Arrow => Format::Arrow,
        ExportFormat::Csv => Format::Csv,
    };
    let tables = Tables::load(&dirs)?;
    let written = tables::write_tables(&tables, &args.out, format)?;
    ctx.printer.status(&format!(
        "exported {} run(s) ({} iterations) in {:.2} s",
        tables.runs.height(),
        tables.iterations.height(),
        started.elapsed().as_secs_f64()
    ));
    for path in written {
        println!("{}", path.display());
    }
    Ok(exit_code::SUCCESS)
}

/// A cell as text, nulls empty (timestamps are text already: [`tables::with_text_times`]).
fn cell(value: AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float64(f) => format!("{f}"),
        AnyValue::Float32(f) => format!("{f}"),
        other => other.to_string(),
    }
}

fn json_value(value: AnyValue<'_>) -> serde_json::Value {
    match value {
        AnyValue::Null => serde_json::Value::Null,
        AnyValue::Boolean(b) => b.into(),
        AnyValue::Int8(v) => v.into(),
        AnyValue::Int16(v) => v.into(),
        AnyValue::Int32(v) => v.into(),
        AnyValue::Int64(v) => v.into(),
        AnyValue::UInt8(v) => v.into(),
        AnyValue::UInt16(v) => v.into(),
        AnyValue::UInt32(v) => v.into(),
        AnyValue::UInt64(v) => v.into(),
        AnyValue::Float32(v) => {
            serde_json::Number::from_f64(v.into()).map_or(serde_json::Value::Null, Into::into)
        }
        AnyValue::Float64(v) => serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
        other => cell(other).into(),
    }
}

fn json_rows(frame: &DataFrame) -> Vec<serde_json::Value> {
    (0..frame.height())
        .map(|row| {
            let object: serde_json::Map<String, serde_json::Value> = frame
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), c.get(row).map_or(serde_json::Value::Null, json_value)))
                .collect();
            serde_json::Value::Object(object)
        })
        .collect()
}

/// Every row, columns aligned, long cells cut at 60 characters. (Polars' own display keeps only
/// the first and last rows unless process-wide environment variables say otherwise.)
fn text_table(frame: &DataFrame) -> String {
    const WIDEST: usize = 60;
    let columns = frame.columns();
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|c| c.name().to_string()).collect()];
    for row in 0..frame.height() {
        grid.push(
            columns
                .iter()
                .map(|c| {
                    let text = c.get(row).map(cell).unwrap_or_default().replace(['\n', '\t'], " ");
                    if text.chars().count() > WIDEST {
                        format!("{}…", text.chars().take(WIDEST - 1).collect::<String>())
                    } else {
                        text
                    }
                })
                .collect(),
        );
    }
    let widths: Vec<usize> =
        (0..columns.len()).map(|i| grid.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (n, row) in grid.iter().enumerate() {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}
