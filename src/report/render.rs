//! Rendering report data as Markdown, HTML (self-contained, inline SVG) and plain text.

use super::model::{Leader, ReportData};

fn fmt_score(score: Option<f64>) -> String {
    score.map_or_else(|| "—".to_string(), |s| format!("{s:.4}"))
}

/// A leaderboard row's score, with the log loss that orders it among equal scores.
fn fmt_ranked(row: &Leader) -> String {
    match row.tiebreak {
        Some(t) => format!("{} (log loss {t:.4})", fmt_score(row.score)),
        None => fmt_score(row.score),
    }
}

fn fmt_seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// The agent's cost, marked when some calls went to a model without a price.
pub fn cost_label(data: &ReportData) -> String {
    if data.unpriced_models.is_empty() {
        format!("${:.4}", data.cost_usd)
    } else {
        format!("${:.4} + unpriced ({} without a price)", data.cost_usd, data.unpriced_models.join(", "))
    }
}

fn agent_label(data: &ReportData) -> String {
    if data.agent == "builtin" {
        "built-in agent (deterministic, offline; no LLM was used)".to_string()
    } else {
        format!("{} (model `{}`)", data.agent, data.model)
    }
}

/// The leaderboard as a fixed-width table (for `status`).
pub fn leaderboard_text(data: &ReportData, limit: usize) -> String {
    let mut out = format!(
        "{:>5}  {:<24} {:>10} {:>9}  {}\n",
        "iter", "model", data.metric, "time", "status / settings"
    );
    for row in data.leaderboard().into_iter().take(limit) {
        let mark = if Some(row.iteration) == data.best_iteration { "*" } else { " " };
        let detail = match (row.score, row.tiebreak) {
            (Some(_), Some(t)) => format!("log loss {t:.4}; {}", row.settings),
            (Some(_), None) => row.settings,
            (None, _) => row.status,
        };
        out.push_str(&format!(
            "{:>4}{mark}  {:<24} {:>10} {:>9}  {}\n",
            row.iteration,
            truncate(&row.family, 24),
            fmt_score(row.score),
            fmt_seconds(row.seconds),
            truncate(&detail, 80)
        ));
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// `REPORT.md`.
pub fn markdown(data: &ReportData) -> String {
    let mut md = format!("# loop-runner report: {}\n\n", data.task);
    md.push_str(&format!("Run `{}`", data.run_id));
    if let Some(reason) = &data.finished {
        md.push_str(&format!(", finished ({reason}) after {}", fmt_seconds(data.wall_seconds)));
    } else {
        md.push_str(", still running or interrupted");
    }
    md.push_str(".\n\n");
    md.push_str("## Result\n\n");
    md.push_str("| | |\n|---|---|\n");
    md.push_str(&format!(
        "| metric | {} ({} is better) |\n",
        data.metric,
        if data.higher_is_better { "higher" } else { "lower" }
    ));
    md.push_str(&format!(
        "| best iteration | {} |\n",
        data.best_iteration.map_or("—".into(), |i| i.to_string())
    ));
    md.push_str(&format!("| validation {} | {} |\n", data.metric, fmt_score(data.validation_score)));
    if let (Some(refit), Some(best)) = (data.final_iteration, data.best_iteration) {
        let how = data
            .iterations
            .iter()
            .find(|r| r.iteration == refit)
            .map_or("on every training row", super::model::refit_words);
        md.push_str(&format!("| final model | iteration {refit}: iteration {best} trained {how} |\n"));
        md.push_str(&format!(
            "| test {} of iteration {best} as selected | {} |\n",
            data.metric,
            fmt_score(data.test_scores.get(&best).copied().flatten())
        ));
    }
    md.push_str(&format!("| **test {}** | **{}** |\n", data.metric, fmt_score(data.test_score)));
    md.push_str(&format!("| iterations | {} |\n", data.iterations.len()));
    md.push_str(&format!("| agent | {} |\n", agent_label(data)));
    md.push_str(&format!("| sandbox | {} |\n", data.sandbox));
    md.push_str(&format!(
        "| budget | {} |\n",
        data.budget_seconds.map_or("iterations only".into(), fmt_seconds)
    ));
    md.push_str(&format!("| agent cost | {} |\n\n", cost_label(data)));
    if !data.sandbox_waived.is_empty() {
        md.push_str(
            "**Sandbox protections that were off** (layers waived with `--allow-weaker-sandbox`):\n\n",
        );
        for waived in &data.sandbox_waived {
            md.push_str(&format!("- {waived}\n"));
        }
        md.push('\n');
    }
    md.push_str("The test score comes from the final model's `inference.py` run once on the held-out test features; \
                 no agent code ever saw the test split. Every score is computed by loop-runner from the predictions.\n\n");
    if !data.test_detail.is_empty() && data.test_score.is_none() {
        md.push_str(&format!("Final evaluation: {}\n\n", data.test_detail));
    }
    md.push_str("## Validation score per iteration\n\nSee `report.html` for the plot.\n\n");
    md.push_str("## Solution tree\n\nEach iteration under the one it built on (draft: a new approach; improve, debug: from its parent; ensemble: a weighted blend of earlier iterations, made by the runner).\n\n```\n");
    md.push_str(&data.tree());
    md.push_str("```\n\n");
    md.push_str("## Leaderboard\n\n");
    let leaderboard = data.leaderboard();
    if leaderboard.iter().any(|r| r.tiebreak.is_some()) {
        md.push_str("Equal scores are ordered by the log loss of the same probabilities (shown beside them); the choice follows that order.\n\n");
    }
    md.push_str("| iteration | model | settings | score | time | status |\n|---|---|---|---|---|---|\n");
    for row in leaderboard {
        let mark = if Some(row.iteration) == data.best_iteration { " (best)" } else { "" };
        md.push_str(&format!(
            "| {}{mark} | {} | {} | {} | {} | {} |\n",
            row.iteration,
            row.family,
            row.settings.replace('|', "\\|"),
            fmt_ranked(&row),
            fmt_seconds(row.seconds),
            row.status.replace('|', "\\|").replace('\n', " ")
        ));
    }
    md.push_str("\n## Time and cost per step\n\n| step | agent calls | answers tried | agent time | script runs | script time | tokens (in/out) | cost |\n|---|---|---|---|---|---|---|---|\n");
    for (step, t) in &data.steps {
        md.push_str(&format!(
            "| {step} | {} | {} | {} | {} | {} | {}/{} | ${:.4} |\n",
            t.calls,
            t.attempts,
            fmt_seconds(t.agent_seconds),
            t.script_runs,
            fmt_seconds(t.script_seconds),
            t.prompt_tokens,
            t.completion_tokens,
            t.cost_usd
        ));
    }
    if !data.notices.is_empty() {
        md.push_str(&format!("\n## The agent's server\n\n{} notice(s):\n\n", data.notices.len()));
        for (iteration, step, text) in data.notices.iter().take(30) {
            md.push_str(&format!("- iteration {iteration}, {step}: {}\n", text.replace('\n', " ")));
        }
    }
    if let Some(runner) = data.runner_seconds {
        let wall: Vec<f64> = data.iterations.iter().map(|r| r.seconds).collect();
        let mean = wall.iter().sum::<f64>() / wall.len().max(1) as f64;
        md.push_str(&format!(
            "\nThe runner's own time per iteration (iteration wall minus the scripts', agent calls and the snapshot's commit included): median {:.0} ms ({:.1}% of a mean iteration).\n",
            runner * 1000.0,
            100.0 * runner / mean.max(1e-9)
        ));
    }
    md.push_str("\n## Environment\n\n");
    md.push_str(&format!(
        "- loop-runner {}\n- prompts sha256 `{}`\n",
        data.loop_runner_version, data.prompts_sha256
    ));
    if let Some(env) = &data.environment {
        md.push_str(&format!("\n```json\n{}\n```\n", serde_json::to_string_pretty(env).unwrap_or_default()));
    }
    md
}

/// The validation metric per iteration as an SVG line plot, the best iteration marked.
pub fn svg_plot(data: &ReportData) -> String {
    let points: Vec<(u32, f64)> = data
        .iterations
        .iter()
        .filter_map(|r| r.validation_score.map(|s| (r.iteration, s)))
        .filter(|(_, s)| s.is_finite())
        .collect();
    let (w, h, pad) = (640.0, 300.0, 48.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"validation {} per iteration\">\n",
        data.metric
    );
    svg.push_str(&format!("<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"));
    if points.is_empty() {
        svg.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"sans-serif\">no scored iteration</text>\n</svg>\n", w / 2.0, h / 2.0));
        return svg;
    }
    let max_iter = data.iterations.iter().map(|r| r.iteration).max().unwrap_or(1).max(2) as f64;
    let (mut lo, mut hi) =
        points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, s)| (lo.min(*s), hi.max(*s)));
    if (hi - lo).abs() < 1e-12 {
        lo -= 0.5;
        hi += 0.5;
    }
    let margin = (hi - lo) * 0.08;
    let (lo, hi) = (lo - margin, hi + margin);
    let x = |i: f64| pad + (i - 1.0) / (max_iter - 1.0) * (w - 2.0 * pad);
    let y = |s: f64| h - pad - (s - lo) / (hi - lo) * (h - 2.0 * pad);
    // Axes and labels.
    svg.push_str(&format!(
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/>\n",
        h - pad,
        w - pad,
        h - pad
    ));
    svg.push_str(&format!(
        "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#444\"/>\n",
        h - pad
    ));
    for (value, label_y) in [(lo + margin, y(lo + margin)), (hi - margin, y(hi - margin))] {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" font-family=\"sans-serif\">{value:.4}</text>\n",
            pad - 4.0,
            label_y + 4.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" font-family=\"sans-serif\">iteration</text>\n",
        w / 2.0,
        h - 12.0
    ));
    svg.push_str(&format!(
        "<text x=\"14\" y=\"{}\" font-size=\"12\" font-family=\"sans-serif\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">validation {}</text>\n",
        h / 2.0,
        h / 2.0,
        data.metric
    ));
    // Running best as a step line, every score as a dot.
    let mut best: Option<f64> = None;
    let mut path = String::new();
    for (i, s) in &points {
        best = Some(match best {
            None => *s,
            Some(b) => {
                if data.higher_is_better {
                    b.max(*s)
                } else {
                    b.min(*s)
                }
            }
        });
        let cmd = if path.is_empty() { "M" } else { "L" };
        path.push_str(&format!("{cmd}{:.1},{:.1} ", x(*i as f64), y(best.unwrap_or(*s))));
    }
    svg.push_str(&format!(
        "<path d=\"{}\" fill=\"none\" stroke=\"#2a7\" stroke-width=\"2\"/>\n",
        path.trim()
    ));
    for (i, s) in &points {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#36c\"><title>iteration {i}: {s:.4}</title></circle>\n",
            x(*i as f64),
            y(*s)
        ));
    }
    if let (Some(b), Some(score)) = (data.best_iteration, data.validation_score) {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"7\" fill=\"none\" stroke=\"#d33\" stroke-width=\"2.5\"><title>best: iteration {b}, {score:.4}</title></circle>\n",
            x(b as f64),
            y(score)
        ));
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#d33\" font-family=\"sans-serif\">best {score:.4}</text>\n",
            x(b as f64) + 9.0,
            y(score) - 9.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `report.html`: one self-contained page.
pub fn html(data: &ReportData) -> String {
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>loop-runner: {task}</title>\n<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}th{{background:#f4f4f4}}.best{{background:#eef8ee}}code,pre{{background:#f6f6f6}}</style></head><body>\n<h1>{task}</h1>\n",
        task = escape(&data.task)
    );
    page.push_str(&format!(
        "<p>Run <code>{}</code> · agent: {} · sandbox: {} · {}</p>\n",
        escape(&data.run_id),
        escape(&agent_label(data)),
        escape(&data.sandbox),
        escape(&data.finished.clone().map_or("not finished".into(), |r| format!(
            "finished ({r}) after {}",
            fmt_seconds(data.wall_seconds)
        )))
    ));
    page.push_str(&format!(
        "<table><tr><th>best iteration</th><td>{}</td></tr><tr><th>validation {m}</th><td>{}</td></tr><tr><th>test {m}</th><td><b>{}</b></td></tr><tr><th>iterations</th><td>{}</td></tr><tr><th>agent cost</th><td>{}</td></tr></table>\n",
        data.best_iteration.map_or("—".into(), |i| i.to_string()),
        fmt_score(data.validation_score),
        fmt_score(data.test_score),
        data.iterations.len(),
        escape(&cost_label(data)),
        m = escape(&data.metric)
    ));
    if !data.sandbox_waived.is_empty() {
        page.push_str("<h2>Sandbox protections that were off</h2>\n<ul>\n");
        for waived in &data.sandbox_waived {
            page.push_str(&format!("<li>{}</li>\n", escape(waived)));
        }
        page.push_str("</ul>\n");
    }
    page.push_str("<h2>Validation score per iteration</h2>\n");
    page.push_str(&svg_plot(data));
    page.push_str("<p>Dots: each iteration's validation score. Line: best so far. Red ring: the best iteration, scored on the test split.</p>\n");
    page.push_str(&format!("<h2>Solution tree</h2>\n<pre>{}</pre>\n", escape(&data.tree())));
    page.push_str("<h2>Leaderboard</h2>\n<table><tr><th>iteration</th><th>model</th><th>settings</th><th>score</th><th>time</th><th>status</th></tr>\n");
    for row in data.leaderboard() {
        let class = if Some(row.iteration) == data.best_iteration { " class=\"best\"" } else { "" };
        page.push_str(&format!(
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            row.iteration,
            escape(&row.family),
            escape(&row.settings),
            fmt_ranked(&row),
            fmt_seconds(row.seconds),
            escape(&row.status)
        ));
    }
    page.push_str("</table>\n<h2>Time and cost per step</h2>\n<table><tr><th>step</th><th>agent calls</th><th>agent time</th><th>script runs</th><th>script time</th><th>tokens in/out</th><th>cost</th></tr>\n");
    for (step, t) in &data.steps {
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>${:.4}</td></tr>\n",
            escape(step),
            t.calls,
            fmt_seconds(t.agent_seconds),
            t.script_runs,
            fmt_seconds(t.script_seconds),
            t.prompt_tokens,
            t.completion_tokens,
            t.cost_usd
        ));
    }
    page.push_str("</table>\n");
    if !data.notices.is_empty() {
        page.push_str("<h2>The agent's server</h2>\n<ul>\n");
        for (iteration, step, text) in data.notices.iter().take(30) {
            page.push_str(&format!("<li>iteration {iteration}, {}: {}</li>\n", escape(step), escape(text)));
        }
        page.push_str("</ul>\n");
    }
    page.push_str("<h2>Environment</h2>\n");
    page.push_str(&format!(
        "<p>loop-runner {} · prompts sha256 <code>{}</code></p>\n",
        escape(&data.loop_runner_version),
        escape(&data.prompts_sha256)
    ));
    if let Some(env) = &data.environment {
        page.push_str(&format!(
            "<pre>{}</pre>\n",
            escape(&serde_json::to_string_pretty(env).unwrap_or_default())
        ));
    }
    page.push_str("</body></html>\n");
    page
}
