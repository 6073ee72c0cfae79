//! `bench steps`: what the runner spends on one iteration's agent steps as the run grows. Each
//! step renders its prompts (with the memory) and asks the built-in agent, which validates the
//! answer and appends it to a transcript on disk, exactly as in a run; only the journal and the
//! iteration's files are left out. The history is synthetic: `n` earlier iterations made from
//! the built-in agent's own answers, so they are as large as real ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{Agent, AgentSettings, Redactor, StepOutput, Transcript};
use crate::builtin::BuiltinBackend;
use crate::data::Dataset;
use crate::search::Operation;
use crate::steps::schemas::{SchemaFacts, Schemas};
use crate::steps::{
    AnalyzeOutput, ArchitectureOutput, Clock, ContextJson, IterationBrief, PlanOutput, RepresentOutput,
    ScriptOutput, Step, StepContext, TaskBrief, TrainOutput, ValidationBrief,
};
use crate::task::Task;

/// The steps of an iteration once the data are explored and the split is made: those of every
/// iteration after the first few, whatever its operation.
pub const STEPS: [Step; 6] =
    [Step::Plan, Step::Represent, Step::Architecture, Step::Train, Step::Infer, Step::Analyze];

/// Medians for one history length.
pub struct StepsRow {
    pub history: usize,
    /// Per step, in [`STEPS`] order.
    pub steps: Vec<Duration>,
    pub iteration: Duration,
}

/// What the prompts say of the sandbox (its length matters, not its words).
const SANDBOX: &str =
    "CPython 3.15 compiled to WebAssembly, with numpy, pandas and scikit-learn; one thread; no network.";

/// Times an iteration's steps `repeat` times after each of `histories` earlier iterations.
pub fn steps(task: &Task, histories: &[usize], repeat: usize) -> anyhow::Result<Vec<StepsRow>> {
    let dataset = Dataset::prepare(task)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let transcript = Transcript::open(&dir.path().join("transcript.jsonl"), Redactor::default())?;
    let settings: AgentSettings = AgentSettings::default();
    let agent = Agent::new(Arc::new(BuiltinBackend::default()), settings, transcript, Default::default());
    let features: Vec<String> = dataset.profile.features.iter().map(|c| c.name.clone()).collect();
    let schemas = Schemas::for_task(&SchemaFacts { features, packages: Default::default() });
    let base = StepContext {
        task: TaskBrief::new(task, &dataset.target),
        operation: Operation::Draft,
        parent: None,
        profile_text: dataset.profile.render(),
        profile: dataset.profile.clone(),
        iteration: 1,
        max_iterations: 1_000_000,
        history: vec![],
        best: None,
        findings: vec![],
        split: None,
        split_open: false,
        pending: vec![],
        cv_folds: Some(5),
        current: Default::default(),
        failure: None,
        validation: None,
        seed: 0,
        clock: Some(Clock { time_left_seconds: Some(3600.0), runtimes: vec![] }),
    };
    let once = |ctx: &StepContext| runtime.block_on(iteration(&agent, &schemas, ctx));
    // The iteration's own answers make the synthetic history's briefs.
    let (_, template) = once(&base)?;
    let mut rows = Vec::new();
    for &n in histories {
        let mut ctx = base.clone();
        ctx.history = (1..=n as u32).map(|i| brief(i, &template)).collect();
        let higher = ctx.task.higher_is_better;
        ctx.best = ctx
            .history
            .iter()
            .filter_map(|h| Some((h.score?, h)))
            .max_by(|(a, _), (b, _)| if higher { a.total_cmp(b) } else { b.total_cmp(a) })
            .map(|(_, h)| h.clone());
        ctx.iteration = n as u32 + 1;
        ctx.clock = Some(Clock {
            time_left_seconds: Some(3600.0),
            runtimes: (1..=n as u32).map(|i| (i, 1.0 + f64::from(i % 7) / 10.0)).collect(),
        });
        let mut per_step: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
        let mut totals = Vec::new();
        for _ in 0..repeat.max(1) {
            let (times, _) = once(&ctx)?;
            totals.push(times.iter().sum());
            for (all, t) in per_step.iter_mut().zip(times) {
                all.push(t);
            }
        }
        rows.push(StepsRow {
            history: n,
            steps: per_step.iter_mut().map(|t| super::median(t)).collect(),
            iteration: super::median(&mut totals),
        });
    }
    Ok(rows)
}

/// One iteration's steps: how long each took, and the iteration as a brief.
async fn iteration(
    agent: &Agent,
    schemas: &Schemas,
    base: &StepContext,
) -> anyhow::Result<(Vec<Duration>, IterationBrief)> {
    let mut ctx = base.clone();
    let mut times = Vec::new();
    let mut json = ContextJson::default();
    let plan: PlanOutput = step(agent, schemas, Step::Plan, &mut ctx, &mut json, &mut times).await?;
    ctx.current.plan = Some(plan);
    let represent: RepresentOutput =
        step(agent, schemas, Step::Represent, &mut ctx, &mut json, &mut times).await?;
    ctx.current.represent = Some(represent.clone());
    let architecture: ArchitectureOutput =
        step(agent, schemas, Step::Architecture, &mut ctx, &mut json, &mut times).await?;
    ctx.current.architecture = Some(architecture.clone());
    let train: TrainOutput = step(agent, schemas, Step::Train, &mut ctx, &mut json, &mut times).await?;
    ctx.current.train = Some(train);
    let infer: ScriptOutput = step(agent, schemas, Step::Infer, &mut ctx, &mut json, &mut times).await?;
    ctx.current.infer = Some(infer);
    ctx.validation = Some(ValidationBrief { score: 55.0, details: "residuals: mean 0.4, sd 55.1".into() });
    let analyze: AnalyzeOutput = step(agent, schemas, Step::Analyze, &mut ctx, &mut json, &mut times).await?;
    let brief = IterationBrief {
        iteration: ctx.iteration,
        parent: None,
        operation: ctx.operation,
        status: "succeeded".into(),
        family: architecture.family,
        hyperparameters: architecture.hyperparameters,
        representation: Some(represent),
        score: Some(55.0),
        next_ideas: analyze.next_ideas,
    };
    Ok((times, brief))
}

async fn step<T: StepOutput>(
    agent: &Agent,
    schemas: &Schemas,
    step: Step,
    ctx: &mut StepContext,
    json: &mut ContextJson,
    times: &mut Vec<Duration>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let context = json.of(ctx);
    let answer =
        crate::runner::ask_agent::<T>(agent, schemas.get(step), SANDBOX, step, ctx, context, &|_| vec![])
            .await?
            .map_err(|e| anyhow::anyhow!("the built-in agent failed at {}: {}", step.name(), e.error))?;
    times.push(started.elapsed());
    Ok(answer.value)
}

/// Earlier iteration `i`, like `template` but with its own number, score and now and then a
/// failure, so that the agent's choices see a varied history.
fn brief(i: u32, template: &IterationBrief) -> IterationBrief {
    let failed = i.is_multiple_of(9);
    IterationBrief {
        iteration: i,
        status: if failed { "failed at train: exit 1".into() } else { "succeeded".into() },
        score: (!failed).then(|| 50.0 + f64::from(i % 37) / 3.0),
        ..template.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_timed_at_every_history_length() {
        let task =
            Task::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/penguins/task.toml"))
                .unwrap();
        let rows = steps(&task, &[0, 20], 1).unwrap();
        assert_eq!(rows.iter().map(|r| r.history).collect::<Vec<_>>(), [0, 20]);
        for row in &rows {
            assert_eq!(row.steps.len(), STEPS.len());
            assert_eq!(row.iteration, row.steps.iter().sum::<Duration>());
        }
    }
}
