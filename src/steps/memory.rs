//! The run's memory as prompts show it, within a token budget: the best few iterations in
//! detail, every other one in a line (newest first), and the latest exploration finding once.
//! What does not fit is counted, not shown, so a prompt stays bounded however long the run.

use super::context::{IterationBrief, StepContext};

/// Iterations shown in detail.
const BEST_IN_DETAIL: usize = 3;
/// Characters of a failure's cause, and of a finding, that a line or section keeps.
const CAUSE: usize = 160;
const FINDING: usize = 1500;

/// The memory text, at most `budget` tokens as `count` measures them.
pub fn render(ctx: &StepContext, budget: usize, count: &dyn Fn(&str) -> usize) -> String {
    if budget == 0 || (ctx.history.is_empty() && ctx.findings.is_empty()) {
        return String::new();
    }
    let higher = ctx.task.higher_is_better;
    let mut scored: Vec<&IterationBrief> =
        ctx.history.iter().filter(|h| h.score.is_some() && h.status == "succeeded").collect();
    scored.sort_by(|a, b| {
        let (x, y) = (a.score.unwrap_or(f64::NAN), b.score.unwrap_or(f64::NAN));
        (if higher { y.total_cmp(&x) } else { x.total_cmp(&y) }).then(a.iteration.cmp(&b.iteration))
    });
    let best: Vec<u32> = scored.iter().take(BEST_IN_DETAIL).map(|h| h.iteration).collect();
    let mut out = String::new();
    let mut used = 0;
    let mut push = |out: &mut String, text: String| -> bool {
        let cost = count(&text);
        if used + cost > budget {
            return false;
        }
        used += cost;
        out.push_str(&text);
        true
    };
    if !best.is_empty() {
        push(
            &mut out,
            format!(
                "Best so far ({}, {} is better):\n",
                ctx.task.metric,
                if higher { "higher" } else { "lower" }
            ),
        );
        for h in scored.iter().take(BEST_IN_DETAIL) {
            let mut text = format!("- {}\n", line(h));
            if let Some(r) = &h.representation {
                text.push_str(&format!("  representation: {}\n", clip(&r.description, 400)));
            }
            if !h.next_ideas.is_empty() {
                text.push_str(&format!(
                    "  its analysis suggested: {}\n",
                    clip(&h.next_ideas.join("; "), 400)
                ));
            }
            if !push(&mut out, text) {
                break;
            }
        }
    }
    let others: Vec<&IterationBrief> =
        ctx.history.iter().rev().filter(|h| !best.contains(&h.iteration)).collect();
    if !others.is_empty() {
        let mut shown = 0;
        if push(&mut out, "Other iterations, newest first:\n".into()) {
            for h in &others {
                if !push(&mut out, format!("- {}\n", line(h))) {
                    break;
                }
                shown += 1;
            }
        }
        let hidden = others.len() - shown;
        if hidden > 0 {
            let failed = others[shown..].iter().filter(|h| h.status.starts_with("failed")).count();
            out.push_str(&format!(
                "- ({hidden} older iterations not shown: {failed} failed, {} scored)\n",
                hidden - failed
            ));
        }
    }
    if let Some(latest) = ctx.findings.last() {
        push(&mut out, format!("Latest exploration finding:\n{}\n", clip(latest, FINDING)));
    }
    out
}

/// One iteration in a line: what it did, with what, and how it ended.
pub fn line(h: &IterationBrief) -> String {
    let how = match (h.operation, h.parent) {
        (op, Some(p)) => format!("{} of {p}", op.name()),
        (op, None) => op.name().to_string(),
    };
    let params: Vec<String> =
        h.hyperparameters.iter().take(6).map(|p| format!("{}={}", p.name, p.value)).collect();
    let more = if h.hyperparameters.len() > 6 { ", …" } else { "" };
    let outcome = match h.score {
        Some(s) if h.status == "succeeded" => format!("{s:.5}"),
        _ => clip(&h.status, CAUSE),
    };
    format!("iteration {} ({how}): {} ({}{more}) → {outcome}", h.iteration, h.family, params.join(", "))
}

fn clip(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Operation;
    use crate::steps::Hyperparameter;

    fn brief(i: u32, score: Option<f64>) -> IterationBrief {
        IterationBrief {
            iteration: i,
            parent: (i > 1).then_some(i - 1),
            operation: if i > 1 { Operation::Improve } else { Operation::Draft },
            status: if score.is_some() {
                "succeeded".into()
            } else {
                "failed at train: MemoryError: array is too big".into()
            },
            family: "random_forest".into(),
            hyperparameters: vec![Hyperparameter { name: "n_estimators".into(), value: "300".into() }],
            representation: None,
            score,
            next_ideas: vec!["deeper trees".into()],
        }
    }

    #[test]
    fn memory_stays_within_its_budget_however_long_the_run() {
        let mut ctx = crate::steps::sample_context();
        let count = |t: &str| t.len().div_ceil(4);
        let mut sizes = Vec::new();
        for n in [1usize, 10, 50, 500] {
            ctx.history = (1..=n as u32)
                .map(|i| brief(i, if i % 5 == 0 { None } else { Some(0.5 + f64::from(i) / 1e4) }))
                .collect();
            let text = render(&ctx, 400, &count);
            assert!(count(&text) <= 400 + 40, "{n} iterations: {} tokens", count(&text));
            sizes.push(count(&text));
            if n >= 50 {
                assert!(text.contains("older iterations not shown"), "{text}");
            }
        }
        assert!(sizes[3] <= 440);
        let text = render(&ctx, 400, &count);
        assert!(text.starts_with("Best so far"), "{text}");
        assert!(text.contains("iteration 499 (improve of 498)"), "the best is shown first: {text}");
        assert_eq!(render(&ctx, 0, &count), "");
    }
}
