//! Entry point: parse arguments, resolve the environment once, run the command, map errors to
//! exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::args::{AgentCommand, BenchCommand, Cli, Command, SandboxCommand};
use super::printer::{LogFile, Printer, init_logging};
use super::{
    agent_cmd, bench_cmd, query_cmd, run_cmd, runs_cmd, sandbox_cmd, serve_cmd, setup_cmd, snapshot_cmd,
    sweep_cmd,
};
use crate::env::EnvironmentOptions;
use crate::error::{UserError, exit_code_for, render};

/// What every command gets: resolved once, passed down.
pub struct Context {
    /// When the command started: a run's budget counts from here.
    pub started: std::time::Instant,
    pub env: EnvironmentOptions,
    pub printer: Printer,
    pub home: PathBuf,
    pub log_file: LogFile,
}

impl Context {
    fn resolve(
        cli: &Cli,
        env: EnvironmentOptions,
        log_file: LogFile,
        started: std::time::Instant,
    ) -> anyhow::Result<Self> {
        let printer = Printer::from_process(&env, cli.global.verbose);
        let home = cli.global.home.clone().or_else(|| env.default_home()).ok_or_else(|| {
            UserError::setup("no loop-runner home directory: HOME is not set")
                .with_hint("set LOOP_RUNNER_HOME or pass --home DIR")
        })?;
        Ok(Self { started, env, printer, home, log_file })
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let started = std::time::Instant::now();
    // The process sandbox re-executes this binary as its helper; that path must not parse
    // arguments, read the environment, or start logging.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw.get(1).is_some_and(|a| a == "__sandbox-exec") && raw.len() == 4 {
        crate::sandbox::process::jail::main(&raw[2].to_string_lossy(), std::path::Path::new(&raw[3]));
    }
    let mut cli = Cli::parse();
    let env = EnvironmentOptions::from_process();
    let log_file = init_logging(&env, cli.global.verbose);
    let command = cli.command.take().unwrap_or(Command::Run(cli.run.clone()));
    if prints_only(&command) {
        quiet_on_closed_stdout();
    }
    let code = match Context::resolve(&cli, env, log_file, started).and_then(|ctx| run(&ctx, command)) {
        Ok(code) => code,
        Err(error) => {
            eprint!("{}", render(&error));
            exit_code_for(&error)
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Whether the command's work is what it prints: `status | head` may close its output early, and
/// then it has nothing left to do. Commands that run, serve or write something keep going.
fn prints_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Status(_)
            | Command::Query(_)
            | Command::Compare(_)
            | Command::SweepStatus(_)
            | Command::Agent(AgentCommand::Check(_))
    )
}

/// Ends the process as other Unix tools do when its standard output is closed (`SIGPIPE`'s
/// default action), instead of panicking in `println!` on the broken pipe.
fn quiet_on_closed_stdout() {
    // SAFETY: called once from `main` before any thread is started; restoring a signal's
    // default disposition installs no handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(ctx: &Context, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Run(args) => run_cmd::run(ctx, &args, run_cmd::Stopping::InterruptOrTerminate),
        Command::Resume(args) => run_cmd::resume(ctx, &args, run_cmd::Stopping::InterruptOrTerminate),
        Command::Status(args) => runs_cmd::status(ctx, &args),
        Command::Report(args) => runs_cmd::report(ctx, &args),
        Command::Checkout(args) => snapshot_cmd::checkout(ctx, &args),
        Command::Predict(args) => snapshot_cmd::predict(ctx, &args),
        Command::Audit(args) => snapshot_cmd::audit_cmd(ctx, &args),
        Command::Replay(args) => snapshot_cmd::replay(ctx, &args),
        Command::Sweep(args) => sweep_cmd::sweep(ctx, &args),
        Command::SweepRun(args) => sweep_cmd::sweep_run(ctx, &args),
        Command::SweepStatus(args) => sweep_cmd::status(ctx, &args),
        Command::SweepReport(args) => sweep_cmd::report(ctx, &args),
        Command::Serve(args) => serve_cmd::serve(ctx, &args),
        Command::Query(args) => query_cmd::query(ctx, &args),
        Command::Compare(args) => query_cmd::compare(ctx, &args),
        Command::Export(args) => query_cmd::export(ctx, &args),
        Command::Agent(AgentCommand::Check(args)) => agent_cmd::check(ctx, &args),
        Command::Setup(args) => setup_cmd::run(ctx, &args),
        Command::Sandbox(SandboxCommand::Run(args)) => sandbox_cmd::run(ctx, &args),
        Command::Bench(BenchCommand::Sandbox(args)) => bench_cmd::sandbox(ctx, &args),
        Command::Bench(BenchCommand::Quality(args)) => bench_cmd::quality(ctx, &args),
        Command::Bench(BenchCommand::Snapshot(args)) => bench_cmd::snapshot(ctx, &args),
        Command::Bench(BenchCommand::Tables(args)) => bench_cmd::tables(ctx, &args),
        Command::Bench(BenchCommand::Steps(args)) => bench_cmd::steps(ctx, &args),
    }
}
