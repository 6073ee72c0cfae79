//! How errors reach the user: the exit code they map to and the hints printed after them.
//!
//! Modules return their own `thiserror` types; the CLI wraps them in `anyhow` with context. At the
//! top, [`exit_code_for`] and [`hints_for`] walk the whole cause chain, so a typed error keeps its
//! meaning however deeply it was wrapped.

use crate::agent::AgentError;
use crate::exit_code;
use crate::runtime::RuntimeError;
use crate::sandbox::SandboxError;

/// A problem the user can fix, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    pub exit_code: i32,
}

impl UserError {
    /// A configuration or input problem (exit code [`exit_code::SETUP`]).
    pub fn setup(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, exit_code: exit_code::SETUP }
    }

    /// Bad command-line usage (exit code [`exit_code::USAGE`]).
    pub fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, exit_code: exit_code::USAGE }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_code(mut self, code: i32) -> Self {
        self.exit_code = code;
        self
    }
}

/// Whether `cause` says the disk is full: an I/O error of that kind, or a git error quoting
/// one (libgit2's errors, and the snapshot's over them, keep only the text). No other text is
/// read: a message may quote what a script printed.
fn disk_full(cause: &(dyn std::error::Error + 'static)) -> bool {
    const ENOSPC: &str = "No space left on device";
    if let Some(e) = cause.downcast_ref::<std::io::Error>() {
        e.kind() == std::io::ErrorKind::StorageFull
    } else if let Some(e) = cause.downcast_ref::<crate::snapshot::SnapshotError>() {
        e.context.contains(ENOSPC) || e.source.message().contains(ENOSPC)
    } else {
        cause.downcast_ref::<git2::Error>().is_some_and(|e| e.message().contains(ENOSPC))
    }
}

const DISK_FULL_HINT: &str = "the disk is full: free space on it and run the command again (`loop-runner resume RUN` continues a run from its last finished iteration; `--min-free-disk` keeps room for a run's own files)";

/// The exit code for an error: that of the first cause that has one.
pub fn exit_code_for(error: &anyhow::Error) -> i32 {
    if error.chain().any(disk_full) {
        // Not a bug, whatever failed to write: the machine's (fixable) state.
        return exit_code::SETUP;
    }
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<UserError>() {
            return e.exit_code;
        }
        if cause.downcast_ref::<RuntimeError>().is_some()
            || cause.downcast_ref::<AgentError>().is_some()
            || cause.downcast_ref::<crate::journal::JournalError>().is_some()
        {
            return exit_code::SETUP;
        }
        if let Some(e) = cause.downcast_ref::<SandboxError>() {
            return match e {
                SandboxError::Engine { .. } => exit_code::INTERNAL,
                _ => exit_code::SETUP,
            };
        }
    }
    exit_code::INTERNAL
}

/// Every hint found along the cause chain, outermost first, without repeats.
pub fn hints_for(error: &anyhow::Error) -> Vec<String> {
    let mut hints: Vec<String> = Vec::new();
    for cause in error.chain() {
        let hint = if let Some(e) = cause.downcast_ref::<UserError>() {
            e.hint.clone()
        } else if let Some(e) = cause.downcast_ref::<RuntimeError>() {
            e.hint()
        } else if let Some(e) = cause.downcast_ref::<SandboxError>() {
            e.hint()
        } else if let Some(e) = cause.downcast_ref::<AgentError>() {
            e.hint()
        } else {
            None
        };
        if let Some(hint) = hint
            && !hints.contains(&hint)
        {
            hints.push(hint);
        }
    }
    if error.chain().any(disk_full) {
        hints.push(DISK_FULL_HINT.into());
    }
    hints
}

/// Renders an error the way the CLI prints it: the message, each distinct cause, then hints.
pub fn render(error: &anyhow::Error) -> String {
    let mut out = format!("error: {error}\n");
    let mut last = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        // `#[error(transparent)]` and `{source}` in messages repeat the inner text.
        if !last.contains(&text) {
            out.push_str(&format!("  caused by: {text}\n"));
        }
        last = text;
    }
    for hint in hints_for(error) {
        out.push_str(&format!("hint: {hint}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn typed_errors_keep_their_code_and_hint_through_context() {
        let err = anyhow::Error::new(RuntimeError::NotInstalled { dir: PathBuf::from("/x") })
            .context("opening the WASI sandbox");
        assert_eq!(exit_code_for(&err), exit_code::SETUP);
        let text = render(&err);
        assert!(text.starts_with("error: opening the WASI sandbox\n"), "{text}");
        assert!(text.contains("caused by: the WASI Python runtime is not installed"), "{text}");
        assert!(text.contains("hint: run `loop-runner setup`"), "{text}");
    }

    #[test]
    fn a_full_disk_is_the_machines_state_not_a_bug() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let err = anyhow::Error::new(io).context("writing the journal");
        assert_eq!(exit_code_for(&err), exit_code::SETUP);
        assert!(render(&err).contains("hint: the disk is full"), "{}", render(&err));
        // As libgit2 reports it, through the snapshot's error: only the text is left.
        let snapshot = crate::snapshot::SnapshotError {
            path: PathBuf::from("/r/workspace"),
            context: "writing files".into(),
            source: git2::Error::from_str("failed to write `/r/model.pkl`: No space left on device"),
        };
        let err = anyhow::Error::new(snapshot).context("committing iteration 16");
        assert_eq!(exit_code_for(&err), exit_code::SETUP);
        assert_eq!(hints_for(&err).len(), 1);
        // A message that only quotes the words (a script's output, say) is not a full disk.
        let quoted = anyhow::anyhow!("train.py failed: OSError: No space left on device");
        assert_eq!(exit_code_for(&quoted), exit_code::INTERNAL);
    }

    #[test]
    fn unknown_errors_are_internal() {
        assert_eq!(exit_code_for(&anyhow::anyhow!("boom")), exit_code::INTERNAL);
    }
}
