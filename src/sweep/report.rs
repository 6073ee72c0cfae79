//! One table across a batch: each run's scores, wall and cost, and per task and agent the mean
//! and standard deviation over seeds. Markdown for people, CSV for spreadsheets.

use super::{Entry, Manifest, State};
use crate::run_dir::RunDir;
use crate::tables::rows::{self, RunRow};

/// A run of the batch and what its directory says.
pub struct Line<'a> {
    pub entry: &'a Entry,
    pub state: State,
    pub run: Option<RunRow>,
}

pub fn lines(manifest: &Manifest) -> anyhow::Result<Vec<Line<'_>>> {
    manifest
        .runs
        .iter()
        .map(|entry| {
            let state = entry.state()?;
            let run = match state {
                State::Pending => None,
                _ => rows::read_run(&RunDir { root: entry.run_dir.clone() })?.run,
            };
            Ok(Line { entry, state, run })
        })
        .collect()
}

fn agent_label(e: &Entry) -> String {
    match &e.model {
        Some(m) => format!("{} ({m})", e.agent),
        None => e.agent.clone(),
    }
}

fn score(s: Option<f64>) -> String {
    s.map_or("—".into(), |s| format!("{s:.4}"))
}

/// Mean and sample standard deviation.
fn mean_sd(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

fn mean_sd_text(values: &[f64]) -> String {
    match mean_sd(values) {
        Some((m, sd)) if values.len() > 1 => format!("{m:.4} ± {sd:.4}"),
        Some((m, _)) => format!("{m:.4}"),
        None => "—".into(),
    }
}

pub fn markdown(manifest: &Manifest, lines: &[Line]) -> String {
    let mut out = format!("# Sweep `{}`: {} runs\n\n", manifest.name, lines.len());
    let finished = lines.iter().filter(|l| l.state == State::Finished).count();
    out.push_str(&format!(
        "{finished} finished, {} unfinished, {} pending.\n\n",
        lines.iter().filter(|l| l.state == State::Unfinished).count(),
        lines.iter().filter(|l| l.state == State::Pending).count()
    ));
    out.push_str("| task | agent | seeds | metric | validation (mean ± sd) | test (mean ± sd) | wall s (mean) | cost $ (total) |\n|---|---|---|---|---|---|---|---|\n");
    let mut groups: Vec<(String, String)> = Vec::new();
    for l in lines {
        let key = (l.entry.task_name.clone(), agent_label(l.entry));
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    for (task, agent) in &groups {
        let group: Vec<&Line> =
            lines.iter().filter(|l| &l.entry.task_name == task && &agent_label(l.entry) == agent).collect();
        let runs: Vec<&RunRow> =
            group.iter().filter(|l| l.state == State::Finished).filter_map(|l| l.run.as_ref()).collect();
        let vals: Vec<f64> = runs.iter().filter_map(|r| r.validation_score).collect();
        let tests: Vec<f64> = runs.iter().filter_map(|r| r.test_score).collect();
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_seconds).collect();
        let metric = group.iter().find_map(|l| l.run.as_ref().map(|r| r.metric.clone())).unwrap_or_default();
        out.push_str(&format!(
            "| {task} | {agent} | {}/{} | {metric} | {} | {} | {} | {:.4} |\n",
            runs.len(),
            group.len(),
            mean_sd_text(&vals),
            mean_sd_text(&tests),
            mean_sd(&walls).map_or("—".into(), |(m, _)| format!("{m:.0}")),
            runs.iter().map(|r| r.cost_usd).sum::<f64>(),
        ));
    }
    out.push_str("\n| # | run | task | agent | seed | state | validation | test | iterations | wall s | cost $ |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for l in lines {
        let r = l.run.as_ref();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            l.entry.index,
            l.entry.id,
            l.entry.task_name,
            agent_label(l.entry),
            l.entry.seed,
            l.state.name(),
            score(r.and_then(|r| r.validation_score)),
            score(r.and_then(|r| r.test_score)),
            r.map_or("—".into(), |r| r.iterations.to_string()),
            r.map_or("—".into(), |r| format!("{:.0}", r.wall_seconds)),
            r.map_or("—".into(), |r| format!("{:.4}", r.cost_usd)),
        ));
    }
    out
}

pub fn csv(lines: &[Line]) -> String {
    let mut out = String::from(
        "index,id,task,agent,model,seed,state,metric,validation_score,test_score,iterations,wall_seconds,cost_usd,run_dir\n",
    );
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
    };
    let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for l in lines {
        let r = l.run.as_ref();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            l.entry.index,
            field(&l.entry.id),
            field(&l.entry.task_name),
            field(&l.entry.agent),
            field(l.entry.model.as_deref().unwrap_or("")),
            l.entry.seed,
            l.state.name(),
            field(r.map_or("", |r| r.metric.as_str())),
            num(r.and_then(|r| r.validation_score)),
            num(r.and_then(|r| r.test_score)),
            r.map(|r| r.iterations.to_string()).unwrap_or_default(),
            num(r.map(|r| r.wall_seconds)),
            num(r.map(|r| r.cost_usd)),
            field(&l.entry.run_dir.display().to_string()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(m, 2.0);
        assert!((sd - 1.0).abs() < 1e-12);
        assert_eq!(mean_sd_text(&[0.5]), "0.5000");
        assert_eq!(mean_sd_text(&[]), "—");
    }
}
