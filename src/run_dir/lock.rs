//! `run.lock`: held (an exclusive `flock`) by the one process driving a run, with its pid inside.
//!
//! It keeps two processes from driving the same run (a second `resume` while the first is still
//! going), and it is how other processes tell a run in progress from one that was interrupted:
//! the kernel drops the lock when its holder dies, however it dies, so a lock that can be taken
//! means nobody is running the run. `serve` stops a run by sending its holder SIGINT (the same as
//! Ctrl-C), and only while the lock is held, so a recycled pid is never signalled.

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use super::RunDir;
use crate::error::UserError;

/// Held while the run is driven; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunDir {
    pub fn lock_path(&self) -> std::path::PathBuf {
        self.root.join("run.lock")
    }

    /// Takes the run's lock, or says which process holds it.
    pub fn lock(&self) -> Result<RunLock, UserError> {
        let path = self.lock_path();
        let mut file = open(&path).map_err(|e| {
            UserError::setup(format!("cannot open the run's lock file `{}`: {e}", path.display()))
        })?;
        // Others look at the lock (a shared lock for an instant, see `driver`): a few retries
        // keep such a look from being taken for a second driver.
        let taken = (0..50).any(|attempt| {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive).is_ok()
        });
        if !taken {
            let holder = read_pid(&mut file).map_or("another process".into(), |pid| format!("process {pid}"));
            return Err(UserError::setup(format!("run `{}` is being driven by {holder}", self.id()))
                .with_hint("wait for it to finish, or stop it (Ctrl-C there, or `kill -INT PID`)")
                .with_code(crate::exit_code::RESUME_REFUSED));
        }
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(|e| UserError::setup(format!("cannot write `{}`: {e}", path.display())))?;
        Ok(RunLock { _file: file })
    }

    /// The pid driving the run, if any process holds its lock now.
    pub fn driver(&self) -> Option<u32> {
        let mut file = std::fs::File::open(self.lock_path()).ok()?;
        if flock(file.as_fd(), FlockOperation::NonBlockingLockShared).is_ok() {
            // Nobody holds it exclusively: the run is not being driven.
            return None;
        }
        // A holder that has not written its pid yet is still a holder.
        Some(read_pid(&mut file).unwrap_or(0))
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

fn read_pid(file: &mut std::fs::File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_driver_at_a_time_and_others_can_tell() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir { root: dir.path().to_path_buf() };
        assert_eq!(run.driver(), None, "no lock file yet");
        let lock = run.lock().unwrap();
        assert_eq!(run.driver(), Some(std::process::id()));
        let err = run.lock().unwrap_err();
        assert!(err.to_string().contains(&format!("process {}", std::process::id())), "{err}");
        drop(lock);
        assert_eq!(run.driver(), None, "released with the lock");
        let _again = run.lock().unwrap();
    }
}
