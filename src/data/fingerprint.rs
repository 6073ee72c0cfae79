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

/// One version of a file on the host: path, size, modification time and inode. Caches of
/// what a file hashes to are keyed by it, so a rewritten file is hashed again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileStamp {
    path: std::path::PathBuf,
    bytes: u64,
    mtime: (i64, i64),
    inode: u64,
}

impl FileStamp {
    pub fn of(path: &Path, meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            path: path.to_path_buf(),
            bytes: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            inode: meta.ino(),
        }
    }
}

/// Hashes `path`, recording it as `name`.
pub fn fingerprint(name: impl Into<String>, path: &Path) -> std::io::Result<Fingerprint> {
    let bytes = fs_err::metadata(path)?.len();
    Ok(Fingerprint { name: name.into(), sha256: fsx::sha256_file(path)?, bytes })
}
