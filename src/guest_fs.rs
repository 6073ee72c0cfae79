//! Files in directories that agent code could write: the one place where the host reads,
//! hashes, lists or replaces them.
//!
//! A guest controls its writable mounts. It can plant symbolic links to host files (absolute,
//! or relative with `..`), swap a directory for a link, leave named pipes that block a reader,
//! or huge sparse files. Every path here is resolved by the kernel *beneath* the directory's
//! own descriptor with no symbolic link allowed anywhere on the way (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and only regular files are read. So a file read
//! through [`GuestDir`] is always one the guest wrote itself inside its own directory, never a
//! host file it pointed at.
//!
//! The runner's own files that must live in such a directory (the scripts it writes before a
//! run) are put there with [`GuestDir::replace`], which swaps in a new file without following
//! whatever the guest left under that name.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Why a file in a guest directory was not read.
#[derive(Debug, thiserror::Error)]
pub enum GuestFileError {
    #[error("`{0}` does not exist")]
    Missing(String),
    #[error(
        "`{0}` is a symbolic link or lies behind one; loop-runner does not follow links that agent code leaves"
    )]
    Link(String),
    #[error("`{name}` is not a regular file (it is a {kind})")]
    NotRegular { name: String, kind: &'static str },
    #[error("`{name}` is {size} bytes, over the {limit}-byte limit for reading it")]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error("`{0}` is not a valid relative path")]
    BadPath(String),
    #[error("`{name}` cannot be read: {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// A directory whose contents agent code could have written, opened once by descriptor.
#[derive(Debug)]
pub struct GuestDir {
    root: PathBuf,
    fd: OwnedFd,
}

/// A regular file found by [`GuestDir::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntry {
    /// Relative path, `/`-separated.
    pub rel: String,
    pub size: u64,
}

/// Something the walk saw and deliberately left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub rel: String,
    pub reason: String,
}

/// Bounds on a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    /// Entries visited before the walk gives up.
    pub max_entries: usize,
    /// Directory depth below the root.
    pub max_depth: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        Self { max_entries: 20_000, max_depth: 32 }
    }
}

/// Entry names the host never takes from a guest: git would refuse or misread them.
fn forbidden_name(name: &str) -> bool {
    name.eq_ignore_ascii_case(".git")
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl GuestDir {
    /// Opens `root` (which the runner created; it must be a real directory, not a link).
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening `{}`: {e}", root.display())))?;
        Ok(Self { root: root.to_path_buf(), fd })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens `rel` for reading, if it is a regular file reached without any link.
    pub fn open_file(&self, rel: &str) -> Result<std::fs::File, GuestFileError> {
        check_rel(rel)?;
        // O_NONBLOCK: opening a named pipe must not wait for a writer.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = rustix::fs::openat2(&self.fd, rel, flags, Mode::empty(), RESOLVE)
            .map_err(|e| open_error(rel, e))?;
        let file = std::fs::File::from(fd);
        let kind =
            file.metadata().map_err(|e| GuestFileError::Io { name: rel.into(), source: e })?.file_type();
        if !kind.is_file() {
            return Err(GuestFileError::NotRegular { name: rel.into(), kind: kind_name(kind) });
        }
        Ok(file)
    }

    /// Whether `rel` is a regular file reached without any link.
    pub fn is_file(&self, rel: &str) -> bool {
        self.open_file(rel).is_ok()
    }

    /// The whole of `rel`, if it is at most `limit` bytes.
    pub fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>, GuestFileError> {
        let file = self.open_file(rel)?;
        let size = file.metadata().map_err(|e| GuestFileError::Io { name: rel.into(), source: e })?.len();
        if size > limit {
            return Err(GuestFileError::TooLarge { name: rel.into(), size, limit });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // Never more than the size seen, in case it grows.
        file.take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| GuestFileError::Io { name: rel.into(), source: e })?;
        Ok(bytes)
    }

    /// Size and sha256 of `rel`, reading at most `limit` bytes.
    pub fn sha256(&self, rel: &str, limit: u64) -> Result<(u64, String), GuestFileError> {
        let file = self.open_file(rel)?;
        let size = file.metadata().map_err(|e| GuestFileError::Io { name: rel.into(), source: e })?.len();
        if size > limit {
            return Err(GuestFileError::TooLarge { name: rel.into(), size, limit });
        }
        let sha = crate::fsx::sha256_reader(file.take(size))
            .map_err(|e| GuestFileError::Io { name: rel.into(), source: e })?;
        Ok((size, sha))
    }

    /// Every regular file below the root, breadth first, sorted by path; links, pipes, devices
    /// and names git cannot hold are passed over (and listed).
    pub fn walk(&self, limits: WalkLimits) -> (Vec<GuestEntry>, Vec<Passed>) {
        let mut files = Vec::new();
        let mut passed = Vec::new();
        let mut budget = limits.max_entries;
        let mut queue: VecDeque<(String, usize)> = VecDeque::from([(String::new(), 0)]);
        while let Some((dir_rel, depth)) = queue.pop_front() {
            let dir = if dir_rel.is_empty() {
                rustix::io::dup(&self.fd).map_err(std::io::Error::from)
            } else {
                rustix::fs::openat2(
                    &self.fd,
                    dir_rel.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    RESOLVE,
                )
                .map_err(std::io::Error::from)
            };
            let entries = dir.and_then(|fd| read_dir(&fd));
            let Ok(entries) = entries else {
                passed.push(Passed { rel: dir_rel, reason: "unreadable directory".into() });
                continue;
            };
            for (name, kind, size) in entries {
                let Some(text) = std::str::from_utf8(name.as_bytes()).ok().filter(|n| !n.contains('\\'))
                else {
                    passed.push(Passed {
                        rel: join(&dir_rel, &name.to_string_lossy()),
                        reason: "the name is not plain UTF-8".into(),
                    });
                    continue;
                };
                let rel = join(&dir_rel, text);
                if budget == 0 {
                    passed.push(Passed { rel, reason: "too many entries; the walk stopped here".into() });
                    files.sort_by(|a: &GuestEntry, b| a.rel.cmp(&b.rel));
                    return (files, passed);
                }
                budget -= 1;
                if forbidden_name(text) {
                    passed.push(Passed { rel, reason: "a name git does not allow".into() });
                    continue;
                }
                match kind {
                    Some(FileType::Directory) if depth < limits.max_depth => {
                        queue.push_back((rel, depth + 1))
                    }
                    Some(FileType::Directory) => {
                        passed.push(Passed { rel, reason: "nested too deep".into() });
                    }
                    Some(FileType::RegularFile) => files.push(GuestEntry { rel, size }),
                    Some(FileType::Symlink) => {
                        passed.push(Passed { rel, reason: "symbolic link (not followed)".into() });
                    }
                    other => passed.push(Passed {
                        rel,
                        reason: format!("not a regular file ({})", other.map_or("unknown", type_name)),
                    }),
                }
            }
        }
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        (files, passed)
    }

    /// Puts the runner's `bytes` at `rel`, replacing whatever the guest left there (a file, a
    /// link, a pipe, a directory) without following it. The parent must be a real directory
    /// below the root.
    pub fn replace(&self, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
        let io = |what: &str, e: rustix::io::Errno| {
            std::io::Error::new(e.kind(), format!("{what} `{}` in `{}`: {e}", rel, self.root.display()))
        };
        check_rel(rel).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (parent_rel, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel),
        };
        let parent = if parent_rel.is_empty() {
            rustix::io::dup(&self.fd).map_err(|e| io("opening the directory of", e))?
        } else {
            rustix::fs::openat2(
                &self.fd,
                parent_rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            )
            .map_err(|e| io("opening the directory of", e))?
        };
        remove_at(&parent, name).map_err(|e| io("removing what was at", e))?;
        let tmp = format!(".loop-runner-{}-{name}", fastrand::u64(..));
        let fd = rustix::fs::openat(
            &parent,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io("creating", e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        drop(file);
        rustix::fs::renameat(&parent, tmp.as_str(), &parent, name).map_err(|e| io("renaming into", e))
    }

    /// Removes `rel` (file, link, pipe or whole directory) without following anything.
    pub fn remove(&self, rel: &str) -> std::io::Result<()> {
        check_rel(rel).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (parent_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let parent = if parent_rel.is_empty() {
            rustix::io::dup(&self.fd)?
        } else {
            match rustix::fs::openat2(
                &self.fd,
                parent_rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            ) {
                Ok(fd) => fd,
                // No such parent (or a link where it should be): the link itself goes.
                Err(_) => return self.remove(parent_rel),
            }
        };
        remove_at(&parent, name).map_err(Into::into)
    }
}

/// Removes `name` in `dir`, recursively for a directory, never following a link.
fn remove_at(dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let entries = read_dir(&sub)
            .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))?;
        for (child, _, _) in entries {
            if let Some(child) = child.to_str() {
                remove_at(&sub, child)?;
            }
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())
    }
}

/// `(name, type, size)` of each entry of an open directory, sorted by name; the type is taken
/// without following links.
fn read_dir(fd: &OwnedFd) -> std::io::Result<Vec<(std::ffi::OsString, Option<FileType>, u64)>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
        if name == "." || name == ".." {
            continue;
        }
        let (kind, size) = match rustix::fs::statat(fd.as_fd(), name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => (Some(FileType::from_raw_mode(stat.st_mode)), stat.st_size.max(0) as u64),
            Err(_) => (None, 0),
        };
        out.push((name, kind, size));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

fn check_rel(rel: &str) -> Result<(), GuestFileError> {
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(GuestFileError::BadPath(rel.into()));
    }
    Ok(())
}

fn open_error(rel: &str, e: rustix::io::Errno) -> GuestFileError {
    match e {
        rustix::io::Errno::NOENT => GuestFileError::Missing(rel.into()),
        // ELOOP: a link on the way; EXDEV: a path escaping the directory or crossing a mount.
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR => {
            GuestFileError::Link(rel.into())
        }
        other => GuestFileError::Io { name: rel.into(), source: other.into() },
    }
}

fn kind_name(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "named pipe"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "device"
    } else if kind.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

fn type_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "directory",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Symlink => "symbolic link",
        _ => "special file",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn dir_with_traps() -> (tempfile::TempDir, tempfile::TempDir) {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret.csv"), "prediction\nSECRET\n").unwrap();
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        std::fs::write(w.join("ok.csv"), "prediction\na\n").unwrap();
        std::fs::create_dir(w.join("model")).unwrap();
        std::fs::write(w.join("model/m.bin"), [1u8, 2, 3]).unwrap();
        symlink(host.path().join("secret.csv"), w.join("abs.csv")).unwrap();
        let depth = w.components().count() + 2;
        let relative = format!("{}{}", "../".repeat(depth), host.path().join("secret.csv").display());
        symlink(relative, w.join("rel.csv")).unwrap();
        symlink(host.path(), w.join("hostdir")).unwrap();
        symlink("/proc/self/environ", w.join("environ")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, w.join("pipe"), FileType::Fifo, Mode::from_raw_mode(0o644), 0)
            .unwrap();
        (host, work)
    }

    #[test]
    fn links_pipes_and_escapes_are_never_read() {
        let (_host, work) = dir_with_traps();
        let dir = GuestDir::open(work.path()).unwrap();
        assert_eq!(dir.read("ok.csv", 1 << 20).unwrap(), b"prediction\na\n");
        for rel in ["abs.csv", "rel.csv", "hostdir/secret.csv", "environ"] {
            let err = dir.read(rel, 1 << 20).unwrap_err();
            assert!(matches!(err, GuestFileError::Link(_)), "{rel}: {err}");
            assert!(!err.to_string().contains("SECRET"));
        }
        assert!(matches!(dir.read("pipe", 1 << 20), Err(GuestFileError::NotRegular { .. })));
        assert!(matches!(dir.read("model", 1 << 20), Err(GuestFileError::NotRegular { .. })));
        assert!(matches!(dir.read("../x", 1 << 20), Err(GuestFileError::BadPath(_))));
        assert!(matches!(dir.read("/etc/passwd", 1 << 20), Err(GuestFileError::BadPath(_))));
        assert!(matches!(dir.read("ok.csv", 3), Err(GuestFileError::TooLarge { .. })));
        assert!(matches!(dir.read("none.csv", 3), Err(GuestFileError::Missing(_))));
    }

    #[test]
    fn walks_only_regular_files() {
        let (_host, work) = dir_with_traps();
        let dir = GuestDir::open(work.path()).unwrap();
        std::fs::create_dir(work.path().join(".git")).unwrap();
        let (files, passed) = dir.walk(WalkLimits::default());
        let names: Vec<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(names, ["model/m.bin", "ok.csv"]);
        let passed: Vec<&str> = passed.iter().map(|p| p.rel.as_str()).collect();
        for rel in [".git", "abs.csv", "environ", "hostdir", "pipe", "rel.csv"] {
            assert!(passed.contains(&rel), "{rel} not passed over: {passed:?}");
        }
    }

    #[test]
    fn replace_swaps_links_and_directories_without_following_them() {
        let (host, work) = dir_with_traps();
        let dir = GuestDir::open(work.path()).unwrap();
        dir.replace("abs.csv", b"mine").unwrap();
        assert_eq!(std::fs::read(work.path().join("abs.csv")).unwrap(), b"mine");
        assert_eq!(std::fs::read_to_string(host.path().join("secret.csv")).unwrap(), "prediction\nSECRET\n");
        dir.replace("model", b"now a file").unwrap();
        assert_eq!(std::fs::read(work.path().join("model")).unwrap(), b"now a file");
        assert!(dir.replace("hostdir/secret.csv", b"x").is_err(), "a link as parent is refused");
        assert_eq!(std::fs::read_to_string(host.path().join("secret.csv")).unwrap(), "prediction\nSECRET\n");
        dir.remove("hostdir").unwrap();
        assert!(host.path().join("secret.csv").exists(), "removing a link leaves its target");
        assert!(!work.path().join("hostdir").exists());
    }
}
