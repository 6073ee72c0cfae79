//! sha256 fingerprints of data files, recorded with every run and snapshot.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsx;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The name under which the file is recorded (e.g. `data/train.csv`, or a source path).
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Hashes `path`, recording it as `name`.
pub fn fingerprint(name: impl Into<String>, path: &Path) -> std::io::Result<Fingerprint> {
    let bytes = fs_err::metadata(path)?.len();
    Ok(Fingerprint { name: name.into(), sha256: fsx::sha256_file(path)?, bytes })
}
