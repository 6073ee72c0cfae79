//! Room on the run directory's filesystem. Every iteration leaves its files in the run
//! directory and a copy of them in the run's git repository (forests of tens of megabytes each;
//! an ensemble's copies of its members only until it is committed), so an unattended run on a
//! small disk would fill it, and the commit that then fails would end the run with no final
//! model. The loop stops starting iterations instead while there is still room for those in
//! flight and for the final model, and the run ends as it does when the budget is spent.

use std::path::{Path, PathBuf};

use crate::units::human_bytes;

/// What the run needs free on its filesystem, and the largest iteration so far.
#[derive(Debug, Clone)]
pub(super) struct DiskRoom {
    root: PathBuf,
    /// Free space never to be used (`[loop] min_free_disk`).
    min_free: u64,
    /// The most bytes one iteration took when it was committed: its directory, and the copy
    /// of its work dir (what its scripts left, models above all) in git.
    largest: u64,
}

impl DiskRoom {
    pub fn new(root: &Path, min_free: u64) -> Self {
        Self { root: root.to_path_buf(), min_free, largest: 0 }
    }

    /// Takes a committed iteration's size into the estimate.
    pub fn observe(&mut self, iteration_dir: &Path) {
        let size = crate::fsx::tree_size(iteration_dir) + crate::fsx::tree_size(&iteration_dir.join("work"));
        self.largest = self.largest.max(size);
    }

    /// Bytes that must be free to start one more iteration while `in_flight` others are
    /// running or waiting to be committed, besides `min_free`: each of them may take as much as
    /// the largest so far, and so may the end of the run twice over (the final model made from
    /// the selected iteration; then the copies of both that the test split is scored with).
    pub fn needed(&self, in_flight: usize) -> u64 {
        self.min_free.saturating_add(self.largest.saturating_mul(in_flight as u64 + 3))
    }

    /// Why no further iteration may start, if there is not room for it.
    pub fn short(&self, in_flight: usize) -> Option<String> {
        let free = match free_bytes(&self.root) {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!("reading the free space of `{}`: {e}", self.root.display());
                return None;
            }
        };
        self.short_of(free, in_flight)
    }

    fn short_of(&self, free: u64, in_flight: usize) -> Option<String> {
        let needed = self.needed(in_flight);
        (free < needed).then(|| {
            let largest = if self.largest == 0 {
                String::new()
            } else {
                format!(
                    ", room for {} iteration{} as large as the largest so far ({}) and the end of the run",
                    in_flight + 1,
                    if in_flight == 0 { "" } else { "s" },
                    human_bytes(self.largest)
                )
            };
            format!(
                "disk nearly full: {} free on the filesystem of `{}`, {} needed to go on (min_free_disk {}{largest})",
                human_bytes(free),
                self.root.display(),
                human_bytes(needed),
                human_bytes(self.min_free),
            )
        })
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_every_iteration_in_flight_and_the_final_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut room = DiskRoom::new(dir.path(), 1 << 30);
        assert_eq!(room.needed(3), 1 << 30, "nothing is known of the iterations yet");
        let iteration = dir.path().join("iter-0001");
        std::fs::create_dir_all(iteration.join("work/model")).unwrap();
        std::fs::write(iteration.join("work/model/model.pkl"), vec![0u8; 3000]).unwrap();
        std::fs::write(iteration.join("metrics.json"), vec![0u8; 1000]).unwrap();
        room.observe(&iteration);
        // Its directory, and its work dir again for the copy in git.
        assert_eq!(room.needed(0), (1 << 30) + 7000 * 3);
        assert_eq!(room.needed(1), (1 << 30) + 7000 * 4);
        room.observe(&dir.path().join("missing"));
        assert_eq!(room.needed(0), (1 << 30) + 7000 * 3, "the largest is kept");

        let needed = room.needed(1);
        assert!(room.short_of(needed, 1).is_none());
        let why = room.short_of(needed - 1, 1).unwrap();
        assert!(why.contains("disk nearly full"), "{why}");
        assert!(why.contains(&dir.path().display().to_string()), "{why}");
        assert!(why.contains("min_free_disk 1.0 GiB"), "{why}");
        assert!(why.contains("2 iterations as large as the largest so far (6.8 KiB)"), "{why}");
    }

    #[test]
    fn free_space_is_read_from_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
        assert!(DiskRoom::new(dir.path(), 0).short(4).is_none());
        assert!(DiskRoom::new(dir.path(), u64::MAX).short(0).is_some());
    }
}
