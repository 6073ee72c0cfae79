//! Every environment variable loop-runner reads, read once into [`EnvironmentOptions`].
//!
//! No other module calls `std::env::var`: the resolved values are passed down. An empty value
//! counts as unset.

use std::ffi::OsString;
use std::path::PathBuf;

/// Directory holding the WASI Python runtime and the compiled-module cache.
pub const LOOP_RUNNER_HOME: &str = "LOOP_RUNNER_HOME";
/// Log filter (tracing `EnvFilter` syntax) for the stderr log, e.g. `loop_runner=debug`.
pub const LOOP_RUNNER_LOG: &str = "LOOP_RUNNER_LOG";
/// Disables colour when set to anything (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// Set by most CI systems; progress bars are hidden when it is.
pub const CI: &str = "CI";
/// Deliberate crash points for crash-safety tests, e.g. `journal:12` or `commit:2` (see
/// `FaultPlan`). Never set it for real runs.
pub const LOOP_RUNNER_FAULT: &str = "LOOP_RUNNER_FAULT";
/// The token `serve` requires (instead of `--token`, which other users can see in `ps`).
pub const LOOP_RUNNER_SERVE_TOKEN: &str = "LOOP_RUNNER_SERVE_TOKEN";
/// The array index Slurm gives each task of a job array (`sweep-run` runs that run).
pub const SLURM_ARRAY_TASK_ID: &str = "SLURM_ARRAY_TASK_ID";
/// The index Kubernetes gives each pod of an Indexed Job.
pub const JOB_COMPLETION_INDEX: &str = "JOB_COMPLETION_INDEX";

/// Removes `name` from this process's environment and overwrites its value in the block the
/// process started with: `/proc/<pid>/environ` shows that block, and unsetting a variable alone
/// leaves it there, readable by any process of the same user that can see this one (a script in
/// a process sandbox without its PID namespace, say). Called for the API key right after it is
/// read, before any other thread starts.
pub fn scrub(name: &str) {
    let Ok(c_name) = std::ffi::CString::new(name) else { return };
    // SAFETY: the caller reads the key while the process is still single-threaded (before the
    // async runtime and any sandbox thread start), so nothing reads or changes the environment
    // concurrently. `getenv` returns a pointer to the value's bytes, which are writable: they
    // live in the block the kernel set up at exec or in memory libc owns. Only the value's own
    // `strlen` bytes are overwritten, so the string stays NUL-terminated.
    unsafe {
        let value = libc::getenv(c_name.as_ptr());
        if !value.is_null() {
            std::ptr::write_bytes(value, 0, libc::strlen(value));
        }
        std::env::remove_var(name);
    }
}

/// The environment as loop-runner sees it.
#[derive(Debug, Clone, Default)]
pub struct EnvironmentOptions {
    pub home: Option<PathBuf>,
    pub log_filter: Option<String>,
    pub no_color: bool,
    pub ci: bool,
    pub fault: Option<String>,
    pub serve_token: Option<String>,
    /// The index a cluster scheduler gave this process (Slurm array task, Kubernetes Indexed Job).
    pub scheduler_index: Option<String>,
    /// `$XDG_CACHE_HOME`, else `$HOME/.cache`: where the default home lives.
    pub cache_base: Option<PathBuf>,
}

impl EnvironmentOptions {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads through `lookup`, so tests can supply their own environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let cache_base = get("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".cache")));
        Self {
            home: get(LOOP_RUNNER_HOME).map(PathBuf::from),
            log_filter: get(LOOP_RUNNER_LOG).and_then(|v| v.into_string().ok()),
            no_color: get(NO_COLOR).is_some(),
            ci: get(CI).is_some(),
            fault: get(LOOP_RUNNER_FAULT).and_then(|v| v.into_string().ok()),
            serve_token: get(LOOP_RUNNER_SERVE_TOKEN).and_then(|v| v.into_string().ok()),
            scheduler_index: get(SLURM_ARRAY_TASK_ID)
                .or_else(|| get(JOB_COMPLETION_INDEX))
                .and_then(|v| v.into_string().ok()),
            cache_base,
        }
    }

    /// The loop-runner home: `$LOOP_RUNNER_HOME`, else `<cache>/loop-runner`.
    pub fn default_home(&self) -> Option<PathBuf> {
        self.home.clone().or_else(|| self.cache_base.as_ref().map(|c| c.join("loop-runner")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvironmentOptions {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EnvironmentOptions::from_lookup(move |name| {
            pairs.iter().find(|(k, _)| k == name).map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn home_precedence() {
        assert_eq!(env(&[("HOME", "/h")]).default_home(), Some(PathBuf::from("/h/.cache/loop-runner")));
        assert_eq!(
            env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).default_home(),
            Some(PathBuf::from("/x/loop-runner"))
        );
        assert_eq!(
            env(&[("HOME", "/h"), (LOOP_RUNNER_HOME, "/lr")]).default_home(),
            Some(PathBuf::from("/lr"))
        );
    }

    #[test]
    fn empty_means_unset() {
        let e = env(&[(LOOP_RUNNER_HOME, ""), (NO_COLOR, ""), ("HOME", "/h")]);
        assert_eq!(e.home, None);
        assert!(!e.no_color);
    }
}
