//! Reading back what a guest left in its writable mounts, without trusting it.
//!
//! The guest controls these directories: it can plant symbolic links to host files, named pipes,
//! huge sparse files or millions of entries. The walk never follows a link, opens regular files
//! with `O_NOFOLLOW`, and bounds how much it reads.

use std::collections::VecDeque;
use std::path::Path;

use super::spec::{Access, Mount, SkippedEntry, WrittenFile};
use crate::fsx;

/// Bounds on the walk.
#[derive(Debug, Clone, Copy)]
pub struct CollectLimits {
    /// A file larger than this is not read (it can only be sparse or pre-existing junk).
    pub max_file_bytes: u64,
    /// Total bytes hashed across all files.
    pub max_total_bytes: u64,
    /// Entries visited before the walk gives up.
    pub max_entries: usize,
}

impl CollectLimits {
    /// Bounds derived from the run's disk-write cap.
    pub fn for_disk_cap(disk_bytes: u64) -> Self {
        Self {
            max_file_bytes: disk_bytes.max(1 << 20),
            max_total_bytes: disk_bytes.saturating_mul(2).max(1 << 20),
            max_entries: 20_000,
        }
    }
}

/// Lists and hashes the regular files in every read-write mount.
pub fn collect(mounts: &[Mount], limits: CollectLimits) -> (Vec<WrittenFile>, Vec<SkippedEntry>) {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut budget = Budget { bytes: limits.max_total_bytes, entries: limits.max_entries };
    for mount in mounts.iter().filter(|m| m.access == Access::ReadWrite) {
        walk(&mount.host, mount.guest.trim_end_matches('/'), limits, &mut budget, &mut files, &mut skipped);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    (files, skipped)
}

struct Budget {
    bytes: u64,
    entries: usize,
}

fn walk(
    root: &Path,
    guest_root: &str,
    limits: CollectLimits,
    budget: &mut Budget,
    files: &mut Vec<WrittenFile>,
    skipped: &mut Vec<SkippedEntry>,
) {
    let mut queue = VecDeque::from([(root.to_path_buf(), guest_root.to_string())]);
    while let Some((dir, guest_dir)) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            skipped.push(SkippedEntry { path: guest_dir, reason: "unreadable directory".into() });
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let guest_path = format!("{guest_dir}/{}", entry.file_name().to_string_lossy());
            if budget.entries == 0 {
                skipped
                    .push(SkippedEntry { path: guest_path, reason: "too many entries; walk stopped".into() });
                return;
            }
            budget.entries -= 1;
            // `DirEntry::file_type` does not follow links.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                skipped
                    .push(SkippedEntry { path: guest_path, reason: "symbolic link (not followed)".into() });
            } else if kind.is_dir() {
                queue.push_back((entry.path(), guest_path));
            } else if kind.is_file() {
                match hash_file(&entry.path(), limits, budget) {
                    Ok((size, sha256)) => files.push(WrittenFile { path: guest_path, size, sha256 }),
                    Err(reason) => skipped.push(SkippedEntry { path: guest_path, reason }),
                }
            } else {
                skipped.push(SkippedEntry { path: guest_path, reason: "not a regular file".into() });
            }
        }
    }
}

fn hash_file(path: &Path, limits: CollectLimits, budget: &mut Budget) -> Result<(u64, String), String> {
    let file = fsx::open_no_follow(path).map_err(|e| format!("unreadable: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("unreadable: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let size = meta.len();
    if size > limits.max_file_bytes {
        return Err(format!("{size} bytes, over the {} byte read limit (not read)", limits.max_file_bytes));
    }
    if size > budget.bytes {
        return Err("the total read limit for outputs is used up (not read)".into());
    }
    budget.bytes -= size;
    use std::io::Read;
    // Read at most the size seen, in case the file grows under us.
    let sha = fsx::sha256_reader(file.take(size)).map_err(|e| format!("unreadable: {e}"))?;
    Ok((size, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_files_and_skips_links_and_readonly_mounts() {
        let work = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("model.bin"), b"abc").unwrap();
        std::fs::create_dir(work.path().join("sub")).unwrap();
        std::fs::write(work.path().join("sub/x.txt"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", work.path().join("evil")).unwrap();
        std::fs::write(data.path().join("train.csv"), b"a,b\n").unwrap();
        let mounts = [Mount::read_only(data.path(), "/data"), Mount::read_write(work.path(), "/work")];
        let (files, skipped) = collect(&mounts, CollectLimits::for_disk_cap(1 << 20));
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/work/model.bin", "/work/sub/x.txt"]);
        assert_eq!(files[0].sha256, crate::fsx::sha256_bytes(b"abc"));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].path, "/work/evil");
    }

    #[test]
    fn oversized_files_are_not_read() {
        let work = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(work.path().join("sparse")).unwrap();
        f.set_len(10 << 30).unwrap();
        let (files, skipped) =
            collect(&[Mount::read_write(work.path(), "/work")], CollectLimits::for_disk_cap(1 << 20));
        assert!(files.is_empty());
        assert!(skipped[0].reason.contains("not read"), "{skipped:?}");
    }
}
