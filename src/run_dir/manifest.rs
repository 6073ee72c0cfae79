//! `run.json`: everything needed to resume or replay a run except secrets and the data itself
//! (which lives next to it).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::ConfigFile;
use crate::data::{Profile, TargetInfo};
use crate::task::Task;

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub task: Task,
    pub target: TargetInfo,
    pub profile: Profile,
    pub budget_seconds: Option<f64>,
    /// Stop after this many iterations without it being visible to agents (replay).
    pub stop_after: Option<u32>,
    /// The resolved configuration, as a config file.
    pub config: ConfigFile,
    pub dropped_rows_without_target: usize,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self, crate::error::UserError> {
        let text = fs_err::read_to_string(path)
            .map_err(|e| crate::error::UserError::setup(format!("cannot read the run's manifest: {e}")))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| crate::error::UserError::setup(format!("`{}` is damaged: {e}", path.display())))?;
        if manifest.format > FORMAT {
            return Err(crate::error::UserError::setup(format!(
                "`{}` was written by a newer loop-runner (format {})",
                path.display(),
                manifest.format
            ))
            .with_code(crate::exit_code::RESUME_REFUSED));
        }
        Ok(manifest)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::fsx::write_atomic(
            path,
            serde_json::to_string_pretty(self).expect("manifests serialize").as_bytes(),
        )
    }
}
