//! The run's workspace: a git repository (git2) holding every iteration as a commit.
//!
//! Commits are built straight from files on disk (blob, tree, commit) without an index, so an
//! iteration's scratch directory never has to live inside the repository. Each iteration is a
//! commit on branch `iterations` (parent: the previous iteration), tagged `iter-NNNN`; branch
//! `best` points at the best one, and the working tree is kept checked out at `best`, so
//! `git checkout best` (or just looking in the directory) gives scripts that run.
//!
//! Tree contents depend only on file contents, so a replayed run reproduces tree hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{FileMode, Oid, Repository, Signature};

use crate::guest_fs::{GuestDir, Passed, WalkLimits};

const ITERATIONS: &str = "refs/heads/iterations";
const BEST: &str = "refs/heads/best";

#[derive(Debug, thiserror::Error)]
#[error("git workspace `{}`: {context}", path.display())]
pub struct SnapshotError {
    pub path: PathBuf,
    pub context: String,
    #[source]
    pub source: git2::Error,
}

/// Where a file of a new snapshot comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Bytes the runner holds (scripts, metadata).
    Bytes(Vec<u8>),
    /// A file the runner wrote itself (e.g. the training rows).
    Runner(PathBuf),
    /// A file a script wrote, by its path in [`Tree::guest`] (read without following links).
    Guest(String),
    /// A file of an earlier snapshot, by its blob (an ensemble's members as they were
    /// committed): nothing to read or hash.
    Stored(Oid),
}

/// The files of a snapshot: what a script left in its work directory, then the runner's own
/// files, which win over any file of the same name.
#[derive(Debug, Default)]
pub struct Tree<'a> {
    guest: Option<&'a GuestDir>,
    files: BTreeMap<String, Source>,
}

impl<'a> Tree<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes every regular file under `dir` except those whose first path component is in
    /// `reserved` (names the runner supplies); returns what was passed over and why.
    pub fn guest_files(&mut self, dir: &'a GuestDir, reserved: &[&str]) -> Vec<Passed> {
        self.guest = Some(dir);
        let (files, mut passed) = dir.walk(WalkLimits::default());
        for file in files {
            let top = file.rel.split('/').next().unwrap_or_default();
            if reserved.contains(&top) {
                passed.push(Passed { rel: file.rel, reason: "the runner supplies this file".into() });
            } else {
                self.files.insert(file.rel.clone(), Source::Guest(file.rel));
            }
        }
        passed
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: impl Into<String>, source: Source) {
        self.files.insert(path.into(), source);
    }

    /// The paths of the files a script wrote.
    pub fn guest_paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().filter(|(_, s)| matches!(s, Source::Guest(_))).map(|(p, _)| p.as_str())
    }
}

/// A committed iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub commit: String,
    pub tree: String,
    pub tag: String,
}

/// What git says about a snapshot commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMeta {
    pub message: String,
    pub files: u64,
    pub bytes: u64,
}

pub struct Workspace {
    repo: Repository,
    path: PathBuf,
    /// Blobs of the runner's own files by (path, size, modification time, inode): the training
    /// rows are committed with every iteration, and hashing tens of megabytes each time is waste.
    runner_blobs: std::cell::RefCell<std::collections::HashMap<crate::data::FileStamp, Oid>>,
}

/// The tag of an iteration.
pub fn tag_name(iteration: u32) -> String {
    format!("iter-{iteration:04}")
}

impl Workspace {
    /// Opens the repository at `path`, creating it (HEAD on `best`) if needed.
    pub fn open_or_init(path: &Path) -> Result<Self, SnapshotError> {
        let err = |context: &str| {
            let context = context.to_string();
            let path = path.to_path_buf();
            move |source| SnapshotError { path, context, source }
        };
        let repo = match Repository::open(path) {
            Ok(repo) => repo,
            Err(_) => {
                let repo = Repository::init(path).map_err(err("creating the repository"))?;
                repo.set_head(BEST).map_err(err("pointing HEAD at `best`"))?;
                repo
            }
        };
        Ok(Self { repo, path: path.to_path_buf(), runner_blobs: Default::default() })
    }

    /// Opens an existing repository (never creates one).
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let repo = Repository::open(path).map_err(|source| SnapshotError {
            path: path.to_path_buf(),
            context: "opening the repository".into(),
            source,
        })?;
        Ok(Self { repo, path: path.to_path_buf(), runner_blobs: Default::default() })
    }

    /// A commit's message, and the number and total size of its files.
    pub fn commit_meta(&self, commit: &str) -> Result<CommitMeta, SnapshotError> {
        let oid = Oid::from_str(commit).map_err(self.err(format!("`{commit}` is not a commit id")))?;
        let c = self.repo.find_commit(oid).map_err(self.err("reading a commit"))?;
        let tree = c.tree().map_err(self.err("reading a tree"))?;
        let odb = self.repo.odb().map_err(self.err("opening the object database"))?;
        let (mut files, mut bytes) = (0u64, 0u64);
        tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                files += 1;
                bytes += odb.read_header(entry.id()).map_or(0, |(size, _)| size as u64);
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(self.err("walking a tree"))?;
        Ok(CommitMeta { message: c.message().unwrap_or_default().trim_end().to_string(), files, bytes })
    }

    /// The bytes of `path` in `commit`, if it has that file.
    pub fn file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, SnapshotError> {
        let oid = Oid::from_str(commit).map_err(self.err(format!("`{commit}` is not a commit id")))?;
        let tree = self.repo.find_commit(oid).and_then(|c| c.tree()).map_err(self.err("reading a commit"))?;
        let Ok(entry) = tree.get_path(Path::new(path)) else { return Ok(None) };
        let Ok(blob) = self.repo.find_blob(entry.id()) else { return Ok(None) };
        Ok(Some(blob.content().to_vec()))
    }

    /// A unified diff of the scripts and metadata (`*.py`, `*.json`, `*.txt`, `*.md`) from `old`
    /// to `new`; models and data are left out (reading them to find they are binary is the
    /// slow part).
    pub fn diff(&self, old: &str, new: &str) -> Result<String, SnapshotError> {
        let tree = |rev: &str| -> Result<git2::Tree<'_>, SnapshotError> {
            let oid = Oid::from_str(rev).map_err(self.err(format!("`{rev}` is not a commit id")))?;
            self.repo.find_commit(oid).and_then(|c| c.tree()).map_err(self.err("reading a commit"))
        };
        let (a, b) = (tree(old)?, tree(new)?);
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&a), Some(&b), None)
            .map_err(self.err("diffing two snapshots"))?;
        let mut out = String::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            let prefix = match line.origin() {
                c @ ('+' | '-' | ' ') => c.to_string(),
                _ => String::new(),
            };
            out.push_str(&prefix);
            out.push_str(&String::from_utf8_lossy(line.content()));
            true
        })
        .map_err(self.err("printing a diff"))?;
        Ok(out)
    }

    fn err(&self, context: impl Into<String>) -> impl FnOnce(git2::Error) -> SnapshotError + '_ {
        let context = context.into();
        move |source| SnapshotError { path: self.path.clone(), context, source }
    }

    /// Commits `files` as iteration `iteration`; moves `best` there when `best` is true.
    pub fn commit_iteration(
        &self,
        files: &Tree<'_>,
        iteration: u32,
        message: &str,
        best: bool,
        between: &dyn Fn(),
    ) -> Result<Committed, SnapshotError> {
        let tree_oid = self.tree_of(files).map_err(self.err(format!("storing iteration {iteration}")))?;
        let tree = self.repo.find_tree(tree_oid).map_err(self.err("reading the new tree"))?;
        let signature =
            Signature::now("loop-runner", "loop-runner@localhost").map_err(self.err("signing"))?;
        let parent = self.repo.refname_to_id(ITERATIONS).ok().and_then(|id| self.repo.find_commit(id).ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let commit = self
            .repo
            .commit(Some(ITERATIONS), &signature, &signature, message, &tree, &parents)
            .map_err(self.err(format!("committing iteration {iteration}")))?;
        // Crash-test hook: the commit and `iterations` are written, the tag and `best` not yet.
        between();
        let tag = tag_name(iteration);
        self.repo
            .reference(&format!("refs/tags/{tag}"), commit, true, message)
            .map_err(self.err(format!("tagging {tag}")))?;
        if best {
            self.set_best(commit)?;
        }
        Ok(Committed { commit: commit.to_string(), tree: tree_oid.to_string(), tag })
    }

    /// Points `best` at `commit` and checks it out.
    pub fn set_best(&self, commit: Oid) -> Result<(), SnapshotError> {
        self.repo.reference(BEST, commit, true, "best iteration").map_err(self.err("moving `best`"))?;
        self.repo.set_head(BEST).map_err(self.err("pointing HEAD at `best`"))?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.force().remove_untracked(true);
        self.repo.checkout_head(Some(&mut checkout)).map_err(self.err("checking out `best`"))
    }

    /// Makes the repository agree with the journal after a crash: `iterations` at the last
    /// recorded commit, exactly the recorded tags, `best` at the recorded best (checked out).
    /// Commits the journal never recorded become unreachable.
    pub fn reconcile(&self, recorded: &[(u32, Oid)], best: Option<Oid>) -> Result<(), SnapshotError> {
        match recorded.last() {
            Some((_, last)) => {
                self.repo
                    .reference(ITERATIONS, *last, true, "resume")
                    .map_err(self.err("resetting `iterations`"))?;
            }
            None => {
                if let Ok(mut r) = self.repo.find_reference(ITERATIONS) {
                    r.delete().map_err(self.err("removing `iterations`"))?;
                }
            }
        }
        let names: Vec<String> = self
            .repo
            .tag_names(Some("iter-*"))
            .map_err(self.err("listing tags"))?
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        for name in names {
            if !recorded.iter().any(|(n, _)| tag_name(*n) == name) {
                self.repo.tag_delete(&name).map_err(self.err(format!("removing tag {name}")))?;
            }
        }
        for (n, oid) in recorded {
            self.repo
                .reference(&format!("refs/tags/{}", tag_name(*n)), *oid, true, "resume")
                .map_err(self.err("restoring a tag"))?;
        }
        match best {
            Some(oid) => self.set_best(oid),
            None => {
                if let Ok(mut r) = self.repo.find_reference(BEST) {
                    r.delete().map_err(self.err("removing `best`"))?;
                }
                Ok(())
            }
        }
    }

    /// Every `iter-*` tag and the commit it names, sorted.
    pub fn tags(&self) -> Result<Vec<(String, String)>, SnapshotError> {
        let names = self.repo.tag_names(Some("iter-*")).map_err(self.err("listing tags"))?;
        let mut out = Vec::new();
        for name in names.iter().flatten() {
            let oid = self.resolve(name)?;
            out.push((name.to_string(), oid.to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// The commits on `iterations`, oldest first.
    pub fn history(&self) -> Result<Vec<String>, SnapshotError> {
        let Ok(tip) = self.repo.refname_to_id(ITERATIONS) else {
            return Ok(vec![]);
        };
        let mut walk = self.repo.revwalk().map_err(self.err("walking history"))?;
        walk.push(tip).map_err(self.err("walking history"))?;
        let mut commits: Vec<String> = walk.filter_map(Result::ok).map(|o| o.to_string()).collect();
        commits.reverse();
        Ok(commits)
    }

    /// The commit `best` points at.
    pub fn best(&self) -> Option<Oid> {
        self.repo.refname_to_id(BEST).ok()
    }

    /// Resolves a revision (`best`, `iter-0003`, a commit id) to a commit.
    pub fn resolve(&self, rev: &str) -> Result<Oid, SnapshotError> {
        let object = self.repo.revparse_single(rev).map_err(self.err(format!("resolving `{rev}`")))?;
        let commit = object.peel_to_commit().map_err(self.err(format!("`{rev}` is not a commit")))?;
        Ok(commit.id())
    }

    /// The tree id of a commit.
    pub fn tree_id(&self, commit: Oid) -> Result<String, SnapshotError> {
        let c = self.repo.find_commit(commit).map_err(self.err("reading a commit"))?;
        Ok(c.tree_id().to_string())
    }

    /// Writes the files of `commit` into `dest` (which must not exist or be empty).
    pub fn materialize(&self, commit: Oid, dest: &Path) -> Result<(), SnapshotError> {
        let c = self.repo.find_commit(commit).map_err(self.err("reading a commit"))?;
        let tree = c.tree().map_err(self.err("reading a tree"))?;
        self.write_tree(&tree, dest)
    }

    /// Writes only the entries `names` (top-level files or directories) of `commit` into `dest`.
    pub fn materialize_only(&self, commit: Oid, dest: &Path, names: &[&str]) -> Result<(), SnapshotError> {
        let c = self.repo.find_commit(commit).map_err(self.err("reading a commit"))?;
        let tree = c.tree().map_err(self.err("reading a tree"))?;
        let io = |e: std::io::Error| SnapshotError {
            path: dest.to_path_buf(),
            context: format!("writing files: {e}"),
            source: git2::Error::from_str("io"),
        };
        fs_err::create_dir_all(dest).map_err(io)?;
        for name in names {
            let Some(entry) = tree.get_name(name) else { continue };
            match entry.kind() {
                Some(git2::ObjectType::Tree) => {
                    let sub = self.repo.find_tree(entry.id()).map_err(self.err("reading a tree"))?;
                    self.write_tree(&sub, &dest.join(name))?;
                }
                Some(git2::ObjectType::Blob) => {
                    let blob = self.repo.find_blob(entry.id()).map_err(self.err("reading a file"))?;
                    fs_err::write(dest.join(name), blob.content()).map_err(io)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn write_tree(&self, tree: &git2::Tree, dest: &Path) -> Result<(), SnapshotError> {
        let io = |e: std::io::Error| SnapshotError {
            path: dest.to_path_buf(),
            context: format!("writing files: {e}"),
            source: git2::Error::from_str("io"),
        };
        fs_err::create_dir_all(dest).map_err(io)?;
        for entry in tree.iter() {
            let name = entry.name().unwrap_or_default();
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                continue;
            }
            let path = dest.join(name);
            match entry.kind() {
                Some(git2::ObjectType::Tree) => {
                    let sub = self.repo.find_tree(entry.id()).map_err(self.err("reading a tree"))?;
                    self.write_tree(&sub, &path)?;
                }
                Some(git2::ObjectType::Blob) => {
                    let blob = self.repo.find_blob(entry.id()).map_err(self.err("reading a file"))?;
                    fs_err::write(&path, blob.content()).map_err(io)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `(path, blob)` of every file of `commit` under the top-level entries `names`.
    pub fn blobs_under(&self, commit: Oid, names: &[&str]) -> Result<Vec<(String, Oid)>, SnapshotError> {
        let under = |path: &str| names.contains(&path.split('/').next().unwrap_or_default());
        let files = self.files(commit)?.into_iter().filter(|(path, _)| under(path));
        files
            .map(|(path, id)| Ok((path, Oid::from_str(&id).map_err(self.err("reading a blob id"))?)))
            .collect()
    }

    /// Every `(repository path, blob id)` of a commit, sorted.
    pub fn files(&self, commit: Oid) -> Result<Vec<(String, String)>, SnapshotError> {
        let c = self.repo.find_commit(commit).map_err(self.err("reading a commit"))?;
        let tree = c.tree().map_err(self.err("reading a tree"))?;
        let mut files = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                files.push((format!("{root}{}", entry.name().unwrap_or_default()), entry.id().to_string()));
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(self.err("walking a tree"))?;
        files.sort();
        Ok(files)
    }

    /// Stores every file of `files` and builds the tree.
    fn tree_of(&self, files: &Tree<'_>) -> Result<Oid, git2::Error> {
        let mut entries = Vec::new();
        for (rel, source) in &files.files {
            let oid = match source {
                Source::Bytes(bytes) => self.repo.blob(bytes)?,
                Source::Runner(host) => {
                    let file = fs_err::File::open(host).map_err(|e| git2::Error::from_str(&e.to_string()))?;
                    let meta = file.metadata().map_err(|e| git2::Error::from_str(&e.to_string()))?;
                    let key = crate::data::FileStamp::of(host, &meta);
                    let known = self.runner_blobs.borrow().get(&key).copied();
                    match known.filter(|oid| self.repo.odb().is_ok_and(|odb| odb.exists(*oid))) {
                        Some(oid) => oid,
                        None => {
                            let oid = self.store_blob(file.into_parts().0)?;
                            self.runner_blobs.borrow_mut().insert(key, oid);
                            oid
                        }
                    }
                }
                Source::Guest(rel) => {
                    let dir = files.guest.ok_or_else(|| git2::Error::from_str("no guest directory"))?;
                    let file = dir.open_file(rel).map_err(|e| git2::Error::from_str(&e.to_string()))?;
                    self.store_blob(file)?
                }
                Source::Stored(oid) => *oid,
            };
            entries.push((rel.clone(), oid));
        }
        self.build_tree(&entries, "")
    }

    /// Stores an open file as a blob, unless the same content is stored already. Files from
    /// [`FAST_BLOB`] on are written as loose objects by the runner: deflated at zlib's fastest
    /// level (libgit2 always uses the default level, two to three times slower on pickled
    /// models for about a fifth less size: 10-25 ms of a commit for a 1 MB forest), and from
    /// [`LARGE_BLOB`] on held as a stored (uncompressed) zlib stream: deflating hundreds of
    /// megabytes would cost seconds per commit. Any git reads such objects.
    fn store_blob(&self, mut file: std::fs::File) -> Result<Oid, git2::Error> {
        use std::io::{Read, Seek};
        let io = |e: std::io::Error| git2::Error::from_str(&e.to_string());
        let size = file.metadata().map_err(io)?.len();
        if size < FAST_BLOB {
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut file).take(size).read_to_end(&mut bytes).map_err(io)?;
            return self.repo.blob(&bytes);
        }
        // The open file, by descriptor: the same inode that was checked, whatever its name is now.
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)));
        let oid = Oid::hash_file(git2::ObjectType::Blob, &by_fd)?;
        if self.repo.odb()?.exists(oid) {
            return Ok(oid);
        }
        file.rewind().map_err(io)?;
        let level = if size < LARGE_BLOB { flate2::Compression::fast() } else { flate2::Compression::none() };
        write_loose_object(&self.repo.path().join("objects"), oid, file, size, level)
            .map_err(|e| git2::Error::from_str(&format!("writing a {size}-byte file into git: {e}")))?;
        Ok(oid)
    }

    /// A tree for the entries under `prefix` (entries sorted by path).
    fn build_tree(&self, entries: &[(String, Oid)], prefix: &str) -> Result<Oid, git2::Error> {
        let mut builder = self.repo.treebuilder(None)?;
        let mut i = 0;
        while i < entries.len() {
            let rest = &entries[i].0[prefix.len()..];
            match rest.split_once('/') {
                None => {
                    builder.insert(rest, entries[i].1, FileMode::Blob.into())?;
                    i += 1;
                }
                Some((sub, _)) => {
                    let sub_prefix = format!("{prefix}{sub}/");
                    let end = entries[i..]
                        .iter()
                        .position(|e| !e.0.starts_with(&sub_prefix))
                        .map_or(entries.len(), |p| i + p);
                    let oid = self.build_tree(&entries[i..end], &sub_prefix)?;
                    builder.insert(sub, oid, FileMode::Tree.into())?;
                    i = end;
                }
            }
        }
        builder.write()
    }
}

/// Files from this size on are deflated at the fastest level (see [`Workspace::store_blob`]).
const FAST_BLOB: u64 = 64 << 10;
/// Files from this size on skip zlib compression.
const LARGE_BLOB: u64 = 8 << 20;

/// Writes `file` as the loose object `oid`: `zlib("blob <size>\0" + content)` at `level`, via
/// a temporary file renamed into place.
fn write_loose_object(
    objects: &Path,
    oid: Oid,
    file: std::fs::File,
    size: u64,
    level: flate2::Compression,
) -> std::io::Result<()> {
    use std::io::Write;
    let hex = oid.to_string();
    let dir = objects.join(&hex[..2]);
    fs_err::create_dir_all(&dir)?;
    let tmp = tempfile::Builder::new().prefix(".tmp-obj-").tempfile_in(&dir)?;
    {
        let mut encoder = flate2::write::ZlibEncoder::new(std::io::BufWriter::new(tmp.as_file()), level);
        encoder.write_all(format!("blob {size}\0").as_bytes())?;
        let copied = std::io::copy(&mut std::io::Read::take(file, size), &mut encoder)?;
        if copied != size {
            return Err(std::io::Error::other(format!(
                "the file shrank while it was stored ({copied} of {size} bytes)"
            )));
        }
        encoder.finish()?.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(&hex[2..])).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_commit_and_best_is_checked_out() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open_or_init(&root.path().join("workspace")).unwrap();
        let iter = root.path().join("iter");
        std::fs::create_dir_all(iter.join("model/sub")).unwrap();
        std::fs::create_dir_all(iter.join("data")).unwrap();
        std::fs::write(iter.join("train.py"), "print(1)\n").unwrap();
        std::fs::write(iter.join("model/sub/w.bin"), [1u8, 2, 3]).unwrap();
        // A script's own copy of a file the runner supplies does not make it into the snapshot.
        std::fs::write(iter.join("data/train.csv"), "forged\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", iter.join("link")).unwrap();
        let data = root.path().join("train.csv");
        std::fs::write(&data, "a,b\n").unwrap();
        let guest = GuestDir::open(&iter).unwrap();
        fn tree<'a>(guest: &'a GuestDir, data: &Path) -> Tree<'a> {
            let mut tree = Tree::new();
            let passed = tree.guest_files(guest, &["data"]);
            assert!(passed.iter().any(|p| p.rel == "link"), "{passed:?}");
            tree.insert("data/train.csv", Source::Runner(data.to_path_buf()));
            tree
        }
        let first = ws.commit_iteration(&tree(&guest, &data), 1, "iter 1", true, &|| {}).unwrap();
        assert_eq!(first.tag, "iter-0001");
        let checked_out = root.path().join("workspace");
        assert_eq!(std::fs::read_to_string(checked_out.join("train.py")).unwrap(), "print(1)\n");
        assert_eq!(std::fs::read(checked_out.join("model/sub/w.bin")).unwrap(), [1, 2, 3]);
        assert_eq!(std::fs::read_to_string(checked_out.join("data/train.csv")).unwrap(), "a,b\n");
        assert!(!checked_out.join("link").exists(), "links are not committed");
        std::fs::write(iter.join("train.py"), "print(2)\n").unwrap();
        let second = ws.commit_iteration(&tree(&guest, &data), 2, "iter 2", false, &|| {}).unwrap();
        assert_ne!(first.tree, second.tree);
        assert_eq!(ws.best().unwrap().to_string(), first.commit, "best did not move");
        assert_eq!(std::fs::read_to_string(checked_out.join("train.py")).unwrap(), "print(1)\n");
        assert_eq!(ws.resolve("iter-0002").unwrap().to_string(), second.commit);
        let files = ws.files(ws.resolve("best").unwrap()).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["data/train.csv", "model/sub/w.bin", "train.py"]);
        // Same content, same tree: what replay relies on.
        std::fs::write(iter.join("train.py"), "print(1)\n").unwrap();
        let third = ws.commit_iteration(&tree(&guest, &data), 3, "iter 3", false, &|| {}).unwrap();
        assert_eq!(third.tree, first.tree);
        // A model-sized file is deflated by the runner, and reads back intact.
        let medium: Vec<u8> = (0..(FAST_BLOB * 3)).map(|i| (i % 7) as u8).collect();
        std::fs::write(iter.join("model/medium.bin"), &medium).unwrap();
        let medium_commit = ws.commit_iteration(&tree(&guest, &data), 4, "iter 4", false, &|| {}).unwrap();
        let oid = ws
            .files(Oid::from_str(&medium_commit.commit).unwrap())
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "model/medium.bin")
            .unwrap()
            .1;
        let object = ws.repo.path().join("objects").join(&oid[..2]).join(&oid[2..]);
        let stored = std::fs::metadata(&object)
            .map(|m| m.len())
            .unwrap_or_else(|e| panic!("{}: {e}", object.display()));
        assert!(stored < medium.len() as u64 / 10, "deflated: {stored} bytes for {}", medium.len());
        assert_eq!(ws.repo.find_blob(Oid::from_str(&oid).unwrap()).unwrap().content(), &medium[..]);
        std::fs::remove_file(iter.join("model/medium.bin")).unwrap();
        // A large file takes the uncompressed path and reads back intact.
        let big: Vec<u8> = (0..(LARGE_BLOB + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(iter.join("model/big.bin"), &big).unwrap();
        let fourth = ws.commit_iteration(&tree(&guest, &data), 5, "iter 5", true, &|| {}).unwrap();
        assert_eq!(std::fs::read(checked_out.join("model/big.bin")).unwrap(), big);
        let git_fsck =
            std::process::Command::new("git").arg("-C").arg(&checked_out).args(["fsck", "--strict"]).output();
        if let Ok(o) = git_fsck {
            assert!(o.status.success(), "git fsck: {}", String::from_utf8_lossy(&o.stderr));
        }
        assert_ne!(fourth.tree, first.tree);
        let out = root.path().join("out");
        ws.materialize(ws.resolve("iter-0002").unwrap(), &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("train.py")).unwrap(), "print(2)\n");
    }
}
