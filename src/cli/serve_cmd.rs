//! `loop-runner serve`.

use super::args::ServeArgs;
use super::dispatch::Context;
use crate::error::UserError;
use crate::exit_code;
use crate::serve::{LaunchConfig, ServeConfig, serve as serve_runs};

pub fn serve(ctx: &Context, args: &ServeArgs) -> anyhow::Result<i32> {
    if !args.runs_dir.is_dir() {
        return Err(UserError::setup(format!(
            "the runs directory `{}` does not exist",
            args.runs_dir.display()
        ))
        .with_hint("pass --runs-dir DIR, where `loop-runner run` puts runs")
        .into());
    }
    let given = args.token.as_ref().or(ctx.env.serve_token.as_ref());
    let token = match (given, args.bind.ip().is_loopback()) {
        (Some(t), _) if t.len() < 16 => {
            return Err(UserError::usage("a token must have at least 16 characters").into());
        }
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => {
            let mut bytes = [0u8; 16];
            std::io::Read::read_exact(&mut fs_err::File::open("/dev/urandom")?, &mut bytes)?;
            Some(hex::encode(bytes))
        }
    };
    if let Some(config) = &args.config {
        // Checked now rather than at the first started run.
        crate::config::ConfigFile::load(config)?;
    }
    let launch = LaunchConfig {
        exe: std::env::current_exe()?,
        run_config: args.config.as_ref().map(std::path::absolute).transpose()?,
        max_upload: args.max_upload,
        max_running: args.max_running as usize,
        max_budget: args.max_budget,
    };
    let open_sandbox = super::run_cmd::sandbox_opener(ctx);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let printer = ctx.printer;
    let shown = token.clone();
    let runs_dir = args.runs_dir.clone();
    runtime.block_on(serve_runs(
        ServeConfig { runs_dir: args.runs_dir.clone(), bind: args.bind, token, launch, open_sandbox },
        move |addr| {
            let query = shown.as_ref().map(|t| format!("/?token={t}")).unwrap_or_default();
            printer.status(&format!("serving the runs in {} on http://{addr}{query}", runs_dir.display()));
            if shown.is_some() {
                printer
                    .status("every request needs the token: `Authorization: Bearer TOKEN` or `?token=TOKEN`");
            }
            println!("http://{addr}{query}");
        },
    ))?;
    Ok(exit_code::SUCCESS)
}
