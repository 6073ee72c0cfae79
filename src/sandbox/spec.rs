//! What a sandbox is asked to run ([`RunSpec`]) and what it reports back ([`Outcome`]).
//!
//! These types are shared by every backend and recorded in journals and snapshots, so they are
//! plain data with stable serde names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the guest may use a mounted directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// A host directory made visible to the guest at an absolute guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub access: Access,
}

impl Mount {
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Self { host: host.into(), guest: guest.into(), access: Access::ReadOnly }
    }

    pub fn read_write(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Self { host: host.into(), guest: guest.into(), access: Access::ReadWrite }
    }

    /// Parses the command-line form `HOST:GUEST[:ro|rw]` (read-only unless `rw`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, guest, access) = match parts.as_slice() {
            [host, guest] => (host, guest, Access::ReadOnly),
            [host, guest, "ro"] => (host, guest, Access::ReadOnly),
            [host, guest, "rw"] => (host, guest, Access::ReadWrite),
            [_, _, other] => {
                return Err(format!("unknown access `{other}` in mount `{text}`: use `ro` or `rw`"));
            }
            _ => {
                return Err(format!("mount `{text}` is not of the form HOST:GUEST[:ro|rw]"));
            }
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("mount `{text}` is not of the form HOST:GUEST[:ro|rw]"));
        }
        Ok(Self { host: PathBuf::from(host), guest: guest.to_string(), access })
    }
}

/// Resource limits for one sandboxed run. Every limit is always in force; the defaults suit a
/// training script on a small tabular dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock deadline, also enforced while the guest sleeps or waits.
    #[serde(with = "duration_ms", rename = "wall_ms")]
    pub wall: Duration,
    /// Cap on guest memory (linear memory for WASI, address space for a process).
    pub memory_bytes: u64,
    /// Bytes of stdout kept; the rest is dropped and counted, the guest is not disturbed.
    pub stdout_bytes: u64,
    /// Bytes of stderr kept, likewise.
    pub stderr_bytes: u64,
    /// Open file descriptors the guest may hold at once (beyond stdio and the mounts).
    pub open_files: u32,
    /// Total bytes the guest may write into files (work dir and /tmp together).
    pub disk_bytes: u64,
    /// Optional instruction budget (WASI fuel). Changes the compiled code, so it is off unless asked.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall: Duration::from_secs(600),
            memory_bytes: 3 << 30,
            stdout_bytes: 1 << 20,
            stderr_bytes: 1 << 20,
            open_files: 256,
            disk_bytes: 1 << 30,
            fuel: None,
        }
    }
}

/// Everything a sandbox needs to run one script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Guest path of the Python script; it must lie inside one of the mounts.
    pub script: String,
    /// Arguments after the script path (`sys.argv[1:]`).
    #[serde(default)]
    pub args: Vec<String>,
    pub mounts: Vec<Mount>,
    /// Guest working directory; defaults to the first read-write mount.
    #[serde(default)]
    pub workdir: Option<String>,
    /// The guest's whole environment besides the sandbox's own fixed variables. Nothing is
    /// inherited from the host.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    /// Seed for the guest's random source; a fixed seed makes WASI runs bit-for-bit repeatable.
    #[serde(default)]
    pub seed: u64,
    /// Host directories the guest must never see (a run's `holdout/`): no mount, and no
    /// directory a backend adds of its own (interpreter, libraries), may be one of them, lie
    /// inside one, or contain one.
    #[serde(default)]
    pub private: Vec<PathBuf>,
}

impl RunSpec {
    pub fn new(script: impl Into<String>, mounts: Vec<Mount>) -> Self {
        Self {
            script: script.into(),
            args: Vec::new(),
            mounts,
            workdir: None,
            env: BTreeMap::new(),
            limits: Limits::default(),
            seed: 0,
            private: Vec::new(),
        }
    }

    /// Refuses `host` (a mount or a backend's own directory) if it would expose a private
    /// directory. Paths are compared after resolving links.
    pub fn check_not_private(&self, host: &std::path::Path) -> Result<(), super::SandboxError> {
        let resolve = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let host_real = resolve(host);
        for private in &self.private {
            let private_real = resolve(private);
            if host_real.starts_with(&private_real) || private_real.starts_with(&host_real) {
                return Err(super::SandboxError::ExposesPrivate {
                    mount: host.to_path_buf(),
                    private: private.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks what every backend requires: absolute, normalized, distinct guest paths that do
    /// not cover `reserved` (a backend's own directories), existing host directories, and the
    /// script inside a mount. `covers` says whether a guest path would hide a reserved one.
    pub fn check_mounts(&self, reserved: &[&str]) -> Result<(), super::SandboxError> {
        use super::SandboxError;
        let invalid = |msg: String| Err(SandboxError::InvalidSpec(msg));
        let mut seen: Vec<&str> = Vec::new();
        for mount in &self.mounts {
            let guest = mount.guest.trim_end_matches('/');
            if !mount.guest.starts_with('/') || guest.split('/').any(|part| part == "..") {
                return invalid(format!("guest path `{}` must be absolute and normalized", mount.guest));
            }
            if guest.is_empty() {
                return invalid("mounting over `/` is not allowed".into());
            }
            let clashes = |r: &str| {
                guest == r || guest.starts_with(&format!("{r}/")) || r.starts_with(&format!("{guest}/"))
            };
            if let Some(r) = reserved.iter().find(|r| clashes(r)) {
                return invalid(format!(
                    "guest path `{guest}` would cover `{r}`, which the sandbox reserves"
                ));
            }
            if seen.contains(&guest) {
                return invalid(format!("guest path `{guest}` is mounted twice"));
            }
            seen.push(guest);
            if !mount.host.is_dir() {
                return Err(SandboxError::MountMissing { path: mount.host.clone() });
            }
            self.check_not_private(&mount.host)?;
        }
        if !self
            .mounts
            .iter()
            .any(|m| self.script.starts_with(&format!("{}/", m.guest.trim_end_matches('/'))))
        {
            return invalid(format!("script `{}` is not inside any mount", self.script));
        }
        Ok(())
    }

    /// The guest working directory: the explicit one, else the first writable mount, else `/`.
    pub fn effective_workdir(&self) -> String {
        if let Some(dir) = &self.workdir {
            return dir.clone();
        }
        self.mounts
            .iter()
            .find(|m| m.access == Access::ReadWrite)
            .map(|m| m.guest.clone())
            .unwrap_or_else(|| "/".to_string())
    }
}

/// A limit that stopped the guest or refused one of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    WallTime,
    Memory,
    Fuel,
    OpenFiles,
    Disk,
    Stdout,
    Stderr,
    /// Not a resource limit: the caller cancelled the run (Ctrl-C or the run's budget ended).
    Cancelled,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::WallTime => "wall-clock deadline",
            LimitKind::Memory => "memory cap",
            LimitKind::Fuel => "fuel (instruction budget)",
            LimitKind::OpenFiles => "open-file cap",
            LimitKind::Disk => "disk-write cap",
            LimitKind::Stdout => "stdout cap",
            LimitKind::Stderr => "stderr cap",
            LimitKind::Cancelled => "cancellation",
        })
    }
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// The script returned or called `sys.exit`.
    Code(i32),
    /// The guest was stopped from outside (deadline, fuel, cancellation).
    Killed,
    /// The guest trapped (a WebAssembly trap or a signal for a native process).
    Crashed(String),
}

/// Captured bytes of one output stream, truncated to its cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The kept bytes, decoded lossily as UTF-8.
    pub text: String,
    /// Bytes the guest wrote beyond the cap, dropped.
    pub dropped_bytes: u64,
}

/// A regular file the guest left in a writable mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// Guest path, e.g. `/work/model.pkl`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Something in a writable mount that the host deliberately did not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    pub path: String,
    pub reason: String,
}

/// What happened when a script ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit: Exit,
    /// The limit that ended the run, or that refused a request before the guest failed.
    pub limit: Option<LimitKind>,
    /// Every limit that refused something, even if the guest carried on.
    pub limits_hit: Vec<LimitKind>,
    #[serde(with = "duration_ms", rename = "wall_ms")]
    pub wall: Duration,
    pub peak_memory_bytes: u64,
    pub stdout: Captured,
    pub stderr: Captured,
    pub files: Vec<WrittenFile>,
    pub skipped: Vec<SkippedEntry>,
}

impl Outcome {
    /// True when the script exited 0 and no limit stopped it.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0) && self.limit.is_none()
    }

    /// A short human description, e.g. "exit 1 (memory cap)".
    pub fn summary(&self) -> String {
        let exit = match &self.exit {
            Exit::Code(code) => format!("exit {code}"),
            Exit::Killed => "killed".to_string(),
            Exit::Crashed(why) => format!("crashed: {why}"),
        };
        match self.limit {
            Some(limit) => format!("{exit} ({limit})"),
            None => exit,
        }
    }

    /// Looks up a written file by guest path.
    pub fn file(&self, guest_path: &str) -> Option<&WrittenFile> {
        self.files.iter().find(|f| f.path == guest_path)
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_parse_forms() {
        assert_eq!(Mount::parse("data:/data").unwrap(), Mount::read_only("data", "/data"));
        assert_eq!(Mount::parse("w:/work:rw").unwrap(), Mount::read_write("w", "/work"));
        assert_eq!(Mount::parse("d:/d:ro").unwrap(), Mount::read_only("d", "/d"));
        assert!(Mount::parse("d:/d:xx").unwrap_err().contains("unknown access"));
        assert!(Mount::parse("nothing").is_err());
        assert!(Mount::parse(":/x").is_err());
    }

    #[test]
    fn workdir_defaults_to_first_writable_mount() {
        let spec =
            RunSpec::new("/work/a.py", vec![Mount::read_only("d", "/data"), Mount::read_write("w", "/work")]);
        assert_eq!(spec.effective_workdir(), "/work");
    }

    #[test]
    fn no_mount_may_contain_or_lie_inside_a_private_directory() {
        let run = tempfile::tempdir().unwrap();
        for sub in ["holdout/deep", "data", "iterations/iter-0001/work"] {
            std::fs::create_dir_all(run.path().join(sub)).unwrap();
        }
        let spec = |host: &std::path::Path| {
            let mut spec = RunSpec::new("/work/a.py", vec![Mount::read_write(host, "/work")]);
            spec.private = vec![run.path().join("holdout")];
            spec
        };
        let work = run.path().join("iterations/iter-0001/work");
        assert!(spec(&work).check_mounts(&[]).is_ok());
        for exposing in
            [run.path().to_path_buf(), run.path().join("holdout"), run.path().join("holdout/deep")]
        {
            let err = spec(&exposing).check_mounts(&[]).unwrap_err();
            assert!(
                matches!(err, super::super::SandboxError::ExposesPrivate { .. }),
                "{}: {err}",
                exposing.display()
            );
            assert!(err.to_string().contains("holdout"), "{err}");
        }
        // Through a link to the run directory, too.
        let link = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(run.path(), link.path().join("r")).unwrap();
        assert!(spec(&link.path().join("r")).check_not_private(&link.path().join("r")).is_err());
    }

    #[test]
    fn outcome_summary_names_the_limit() {
        let outcome = Outcome {
            exit: Exit::Killed,
            limit: Some(LimitKind::WallTime),
            limits_hit: vec![LimitKind::WallTime],
            wall: Duration::from_secs(2),
            peak_memory_bytes: 0,
            stdout: Captured::default(),
            stderr: Captured::default(),
            files: vec![],
            skipped: vec![],
        };
        assert_eq!(outcome.summary(), "killed (wall-clock deadline)");
        assert!(!outcome.success());
    }
}
