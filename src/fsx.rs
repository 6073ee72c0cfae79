//! File-system helpers shared by every module: hashing and atomic replacement of the runner's
//! own files. Files agent code could have written are read through [`crate::guest_fs`] instead.
//! Errors carry the path (via `fs_err`).

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// sha256 of everything `reader` yields, as lowercase hex.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// sha256 of a file's contents, as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_reader(fs_err::File::open(path)?)
}

/// sha256 of bytes, as lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 of `value`'s compact JSON, as lowercase hex: the same as hashing
/// `serde_json::to_string(value)`, without holding the text.
pub fn sha256_json(value: &impl serde::Serialize) -> String {
    let mut hasher = Sha256::new();
    let mut out = io::BufWriter::with_capacity(1 << 16, &mut hasher);
    serde_json::to_writer(&mut out, value).expect("JSON serializes into a hash");
    out.flush().expect("a hash takes every byte");
    drop(out);
    hex::encode(hasher.finalize())
}

/// Bytes in regular files under `dir`, links not followed.
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, fsync'd, then
/// renamed over the target. A reader sees the old content or the new one, never a mix, and a
/// crash leaves at most a stray temporary file. The file is readable by others (0644).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] for files only this user may read (0600), such as compiled code caches.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(|e| {
        io::Error::new(e.kind(), format!("creating a temporary file in `{}`: {e}", dir.display()))
    })?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| {
        io::Error::new(e.error.kind(), format!("replacing `{}`: {}", path.display(), e.error))
    })?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename or creation in `dir` durable. Best effort: not every file system supports it.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(sha256_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let value = serde_json::json!({"b": [1, 2.5, null], "a": "x\"y"});
        assert_eq!(sha256_json(&value), sha256_bytes(value.to_string().as_bytes()));
    }

    #[test]
    fn write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }
}
