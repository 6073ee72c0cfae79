//! Entry point: parse arguments, resolve the environment once, run the command, map errors to
//! exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::args::{BenchCommand, Cli, Command, SandboxCommand};
use super::printer::{Printer, init_logging};
use super::{bench_cmd, sandbox_cmd, setup_cmd};
use crate::env::EnvironmentOptions;
use crate::error::{UserError, exit_code_for, render};

/// What every command gets: resolved once, passed down.
pub struct Context {
    pub printer: Printer,
    pub home: PathBuf,
}

impl Context {
    fn resolve(cli: &Cli, env: EnvironmentOptions) -> anyhow::Result<Self> {
        let printer = Printer::from_process(&env, cli.global.verbose);
        let home = cli
            .global
            .home
            .clone()
            .or_else(|| env.default_home())
            .ok_or_else(|| {
                UserError::setup("no loop-runner home directory: HOME is not set")
                    .with_hint("set LOOP_RUNNER_HOME or pass --home DIR")
            })?;
        Ok(Self { printer, home })
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = EnvironmentOptions::from_process();
    init_logging(&env, cli.global.verbose);
    let code = match Context::resolve(&cli, env).and_then(|ctx| run(&ctx, cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprint!("{}", render(&error));
            exit_code_for(&error)
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(ctx: &Context, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Setup(args) => setup_cmd::run(ctx, &args),
        Command::Sandbox(SandboxCommand::Run(args)) => sandbox_cmd::run(ctx, &args),
        Command::Bench(BenchCommand::Sandbox(args)) => bench_cmd::sandbox(ctx, &args),
    }
}
