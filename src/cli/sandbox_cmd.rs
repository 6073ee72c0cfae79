//! `loop-runner sandbox run`: one script, run the way the loop runs it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::args::{LimitArgs, SandboxArg, SandboxBackendArgs, SandboxRunArgs};
use super::dispatch::Context;
use super::printer::{CompileProgress, human_bytes};
use crate::error::UserError;
use crate::exit_code;
use crate::sandbox::process::{Layer, ProcessOptions, ProcessSandbox};
use crate::sandbox::wasi::{EngineOptions, WasiOptions, WasiSandbox};
use crate::sandbox::{CancellationToken, Limits, Mount, Outcome, RunSpec, Sandbox};

const WORK_GUEST: &str = "/work";

impl LimitArgs {
    pub fn to_limits(&self) -> Limits {
        Limits {
            wall: self.timeout,
            memory_bytes: self.memory,
            stdout_bytes: self.output_cap,
            stderr_bytes: self.output_cap,
            open_files: self.open_files,
            disk_bytes: self.disk,
            fuel: self.fuel,
        }
    }
}

pub fn run(ctx: &Context, args: &SandboxRunArgs) -> anyhow::Result<i32> {
    let script = fs_err::canonicalize(&args.script)
        .map_err(|e| UserError::usage(format!("cannot read the script `{}`: {e}", args.script.display())))?;
    let mut mounts = Vec::new();
    for mount in &args.mounts {
        let host = fs_err::canonicalize(&mount.host).map_err(|e| {
            UserError::usage(format!("mount `{}` is not accessible: {e}", mount.host.display()))
                .with_hint("the HOST part of `--mount HOST:GUEST` must be an existing directory")
        })?;
        mounts.push(Mount { host, ..mount.clone() });
    }
    let temp_work;
    let work = match &args.work {
        Some(dir) => {
            fs_err::create_dir_all(dir)?;
            fs_err::canonicalize(dir)?
        }
        None => {
            temp_work = tempfile::Builder::new().prefix("loop-runner-work-").tempdir()?;
            temp_work.path().to_path_buf()
        }
    };
    if mounts.iter().any(|m| m.guest.trim_end_matches('/') == WORK_GUEST) {
        return Err(UserError::usage(format!(
            "`{WORK_GUEST}` is the work dir; mount elsewhere or use --work"
        ))
        .into());
    }
    mounts.push(Mount::read_write(&work, WORK_GUEST));
    let guest_script = guest_path_of(&script, &mounts).map_or_else(
        || -> anyhow::Result<String> {
            let name = script.file_name().context("the script has no file name")?;
            fs_err::copy(&script, work.join(name))?;
            Ok(format!("{WORK_GUEST}/{}", name.to_string_lossy()))
        },
        Ok,
    )?;

    let limits = args.limits.to_limits();
    let sandbox: Box<dyn Sandbox> = match args.backend.sandbox.unwrap_or(SandboxArg::Wasi) {
        SandboxArg::Wasi => {
            let options = WasiOptions {
                engine: EngineOptions { fuel: limits.fuel.is_some() },
                flavor: args.flavor.into(),
            };
            Box::new(
                WasiSandbox::open(&ctx.home, options, &CompileProgress::new(ctx.printer))
                    .context("opening the WASI sandbox")?,
            )
        }
        SandboxArg::Process => Box::new(
            ProcessSandbox::open(&process_options(&args.backend, None)?)
                .context("opening the process sandbox")?,
        ),
    };
    let mut spec = RunSpec::new(guest_script, mounts);
    spec.args = args.args.clone();
    spec.limits = limits;
    spec.seed = args.seed;
    spec.env = args.env.iter().cloned().collect();
    let cancel = CancellationToken::new();
    let outcome = sandbox.run(&spec, &cancel).context("running the script")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", render_outcome(&outcome));
    }
    Ok(if outcome.success() { exit_code::SUCCESS } else { exit_code::EXPERIMENT_FAILED })
}

/// Process-sandbox options from the command line, over the config file's.
pub fn process_options(
    args: &SandboxBackendArgs,
    config: Option<&crate::config::SandboxConfig>,
) -> anyhow::Result<ProcessOptions> {
    let mut options = ProcessOptions::default();
    if let Some(c) = config {
        if let Some(p) = &c.python {
            options.python = p.clone();
        }
        options.allow_weaker = c.allow_weaker.clone();
        options.threads = c.threads;
    }
    if let Some(p) = &args.python {
        options.python = p.clone();
    }
    for name in &args.allow_weaker_sandbox {
        let layer = Layer::parse(name.trim()).map_err(UserError::usage)?;
        if !options.allow_weaker.contains(&layer) {
            options.allow_weaker.push(layer);
        }
    }
    Ok(options)
}

/// The guest path of a host file inside one of the mounts.
fn guest_path_of(host: &Path, mounts: &[Mount]) -> Option<String> {
    mounts.iter().find_map(|m| {
        let rel: PathBuf = host.strip_prefix(&m.host).ok()?.to_path_buf();
        Some(format!("{}/{}", m.guest.trim_end_matches('/'), rel.to_string_lossy()))
    })
}

/// The human form of an outcome.
pub fn render_outcome(outcome: &Outcome) -> String {
    let mut out = String::new();
    for (name, captured) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        if captured.text.is_empty() && captured.dropped_bytes == 0 {
            continue;
        }
        out.push_str(&format!("--- {name}"));
        if captured.dropped_bytes > 0 {
            out.push_str(&format!(" (truncated: {} dropped)", human_bytes(captured.dropped_bytes)));
        }
        out.push('\n');
        out.push_str(&captured.text);
        if !captured.text.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "--- {} after {:.2} s, peak memory {}\n",
        outcome.summary(),
        outcome.wall.as_secs_f64(),
        human_bytes(outcome.peak_memory_bytes)
    ));
    let others: Vec<String> =
        outcome.limits_hit.iter().filter(|k| Some(**k) != outcome.limit).map(ToString::to_string).collect();
    if !others.is_empty() {
        out.push_str(&format!("limits reached: {}\n", others.join(", ")));
    }
    for file in &outcome.files {
        out.push_str(&format!(
            "wrote {}  {}  sha256:{}\n",
            file.path,
            human_bytes(file.size),
            &file.sha256[..16]
        ));
    }
    for skipped in &outcome.skipped {
        out.push_str(&format!("skipped {}: {}\n", skipped.path, skipped.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Access;

    #[test]
    fn script_inside_a_mount_keeps_its_guest_path() {
        let mounts = [Mount { host: "/h/data".into(), guest: "/data/".into(), access: Access::ReadOnly }];
        assert_eq!(guest_path_of(Path::new("/h/data/sub/s.py"), &mounts).as_deref(), Some("/data/sub/s.py"));
        assert_eq!(guest_path_of(Path::new("/elsewhere/s.py"), &mounts), None);
    }
}
