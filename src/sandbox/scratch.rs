//! Scratch directories of script runs, under the system's temporary directory: a WASI guest's
//! `/tmp`, the process jail's root and plan. Dropping one removes it, but a runner killed with
//! SIGKILL (or the machine's OOM killer) drops nothing, and whatever a script had written to its
//! `/tmp` (up to its disk cap, gigabytes) would stay behind for good. Each scratch directory
//! therefore holds a `lock` file, locked (`flock`) for as long as its owner lives; the kernel
//! releases the lock when the owner dies, however it dies. The first scratch directory a process
//! makes with a prefix sweeps away the unlocked ones with that prefix: those of dead runs. The
//! lock sits beside what scripts see (they get a subdirectory), never inside it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{FlockOperation, flock};

const LOCK: &str = "lock";
/// How old an empty scratch directory without a lock must be to be swept: its maker puts a
/// file in it at once.
const EMPTY_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A scratch directory, locked while it lives and removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
    _lock: File,
}

impl Scratch {
    /// A new `<temp>/<prefix><random>/`, locked; the first one a process makes with `prefix`
    /// sweeps away those of dead owners first.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let root = std::env::temp_dir();
        sweep_once(&root, prefix);
        Self::new_in(&root, prefix)
    }

    fn new_in(root: &Path, prefix: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(root)?;
        // Locked under another name first: a sweep in another process that found `lock` before
        // this one held it would take the directory for a dead run's and remove it.
        let making = dir.path().join(format!("{LOCK}.new"));
        let lock = File::create(&making)?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
        std::fs::rename(&making, dir.path().join(LOCK))?;
        Ok(Self { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new directory `name` inside, for what a script may see.
    pub fn subdir(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.path().join(name);
        fs_err::create_dir(&path)?;
        Ok(path)
    }
}

/// [`sweep`] of `root`, once per process and prefix.
fn sweep_once(root: &Path, prefix: &str) {
    static SWEPT: Mutex<BTreeSet<(PathBuf, String)>> = Mutex::new(BTreeSet::new());
    let first =
        SWEPT.lock().unwrap_or_else(|p| p.into_inner()).insert((root.to_path_buf(), prefix.to_string()));
    if first {
        let removed = sweep(root, prefix);
        if removed > 0 {
            tracing::info!("removed {removed} scratch directories of runs that were killed ({prefix}*)");
        }
    }
}

/// Removes the directories `<root>/<prefix>*` of this user whose lock no process holds, and
/// says how many. A directory without a lock file is left alone (its owner may be about to
/// make it, or it is not one of ours) unless it is empty and older than [`EMPTY_AGE`]: what a
/// runner killed while making or removing one leaves (the lock already unlinked, the
/// directory not yet).
fn sweep(root: &Path, prefix: &str) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    let me = rustix::process::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        // Not followed: a link with our prefix is not a scratch directory.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let Ok(lock) = File::open(entry.path().join(LOCK)) else {
            let old = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > EMPTY_AGE);
            // `remove_dir` removes nothing but an empty directory.
            if old && std::fs::remove_dir(entry.path()).is_ok() {
                removed += 1;
            }
            continue;
        };
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        // Its owner is gone. (`remove_dir_all` does not follow links inside.)
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!("removing the scratch directory `{}`: {e}", entry.path().display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_no_process_holds_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let live = Scratch::new_in(root.path(), "lr-test-").unwrap();
        std::fs::write(live.subdir("tmp").unwrap().join("f"), "x").unwrap();
        // A dead owner's: its lock file is there, and nobody holds it.
        let dead = root.path().join("lr-test-dead");
        std::fs::create_dir_all(dead.join("tmp/deep")).unwrap();
        std::fs::write(dead.join(LOCK), "").unwrap();
        std::fs::write(dead.join("tmp/deep/big"), vec![0u8; 4096]).unwrap();
        // Being made (its lock not yet in place), another prefix, and a link with the prefix.
        let unlocked = root.path().join("lr-test-making");
        std::fs::create_dir(&unlocked).unwrap();
        std::fs::write(unlocked.join("lock.new"), "").unwrap();
        let other = root.path().join("other-dead");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(LOCK), "").unwrap();
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join(LOCK), "").unwrap();
        std::os::unix::fs::symlink(target.path(), root.path().join("lr-test-link")).unwrap();
        // Empty: left by an owner killed while removing it (long ago), or just made.
        let emptied = root.path().join("lr-test-emptied");
        std::fs::create_dir(&emptied).unwrap();
        let long_ago = std::time::SystemTime::now() - 2 * EMPTY_AGE;
        File::open(&emptied).unwrap().set_modified(long_ago).unwrap();
        let fresh = root.path().join("lr-test-fresh");
        std::fs::create_dir(&fresh).unwrap();
        let full = root.path().join("lr-test-full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("f"), "").unwrap();
        File::open(&full).unwrap().set_modified(long_ago).unwrap();

        assert_eq!(sweep(root.path(), "lr-test-"), 2);
        assert!(!emptied.exists(), "an old empty one goes");
        assert!(
            fresh.is_dir() && full.join("f").is_file(),
            "a new empty one, or one with files in it, stays"
        );
        assert!(!dead.exists());
        assert!(live.path().join("tmp/f").is_file(), "a live owner's scratch stays");
        assert!(live.path().join(LOCK).is_file() && !live.path().join("lock.new").exists());
        assert!(unlocked.is_dir() && other.is_dir());
        assert!(target.path().join(LOCK).is_file(), "a link is not followed");

        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "dropping removes it");
    }
}
