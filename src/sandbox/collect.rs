//! Reading back what a guest left in its writable mounts, without trusting it.
//!
//! The guest controls these directories: it can plant symbolic links to host files, named pipes,
//! huge sparse files or millions of entries. The walk goes through [`crate::guest_fs`]: it never
//! follows a link, reads only regular files, and bounds how much it reads.

use super::spec::{Access, Mount, SkippedEntry, WrittenFile};
use crate::guest_fs::{GuestDir, WalkLimits};

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

/// Lists and hashes the regular files in every read-write mount, through [`GuestDir`]: no link
/// is followed, nothing but regular files is read.
pub fn collect(mounts: &[Mount], limits: CollectLimits) -> (Vec<WrittenFile>, Vec<SkippedEntry>) {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut bytes_left = limits.max_total_bytes;
    let mut entries_left = limits.max_entries;
    for mount in mounts.iter().filter(|m| m.access == Access::ReadWrite) {
        let guest_root = mount.guest.trim_end_matches('/');
        let dir = match GuestDir::open(&mount.host) {
            Ok(dir) => dir,
            Err(_) => {
                skipped.push(SkippedEntry { path: guest_root.into(), reason: "unreadable directory".into() });
                continue;
            }
        };
        let (found, passed) = dir.walk(WalkLimits { max_entries: entries_left, ..WalkLimits::default() });
        entries_left = entries_left.saturating_sub(found.len() + passed.len());
        for p in passed {
            skipped.push(SkippedEntry { path: format!("{guest_root}/{}", p.rel), reason: p.reason });
        }
        for entry in found {
            let path = format!("{guest_root}/{}", entry.rel);
            if entry.size > limits.max_file_bytes {
                skipped.push(SkippedEntry {
                    path,
                    reason: format!(
                        "{} bytes, over the {} byte read limit (not read)",
                        entry.size, limits.max_file_bytes
                    ),
                });
                continue;
            }
            if entry.size > bytes_left {
                skipped.push(SkippedEntry {
                    path,
                    reason: "the total read limit for outputs is used up (not read)".into(),
                });
                continue;
            }
            match dir.sha256(&entry.rel, limits.max_file_bytes) {
                Ok((size, sha256)) => {
                    bytes_left -= size.min(bytes_left);
                    files.push(WrittenFile { path, size, sha256 });
                }
                Err(e) => skipped.push(SkippedEntry { path, reason: e.to_string() }),
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    (files, skipped)
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
