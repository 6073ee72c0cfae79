//! Documented process exit codes. Other tools (and users' CI) rely on these: keep them stable.

/// Everything worked (for `audit`: everything matched).
pub const SUCCESS: i32 = 0;
/// The experiment itself failed: a sandboxed script failed or was stopped by a limit, a run
/// produced no valid iteration, or an audit found a mismatch.
pub const EXPERIMENT_FAILED: i32 = 1;
/// Bad command-line usage (also what clap exits with).
pub const USAGE: i32 = 2;
/// Setup or configuration problem: missing runtime, bad task file or data, unavailable sandbox
/// layer, unreachable LLM endpoint, a full disk. Nothing ran (or nothing was lost).
pub const SETUP: i32 = 3;
/// A run refused to resume (for example its journal belongs to a newer loop-runner).
pub const RESUME_REFUSED: i32 = 4;
/// The run was interrupted (Ctrl-C); what finished is saved.
pub const INTERRUPTED: i32 = 130;
/// A bug in loop-runner.
pub const INTERNAL: i32 = 101;
