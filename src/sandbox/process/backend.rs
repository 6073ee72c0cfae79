//! [`ProcessSandbox`]: native Python behind layered isolation that fails closed.
//!
//! Opening it runs the full jail once with a probe script and checks from inside that each
//! layer holds (PID 1, no capabilities, seccomp on, no inet socket...). A layer the host lacks
//! is an error naming it, unless the user waived it with `--allow-weaker-sandbox`; the layers
//! in force are part of [`SandboxInfo`], recorded with every run and snapshot.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::jail::spawn_outer;
use super::plan::{Layer, Plan, ProcessLimits, Status};
use crate::sandbox::{
    Access, CappedBuffer, CollectLimits, Exit, LimitKind, Mount, Outcome, RunSpec, Sandbox, SandboxError,
    SandboxInfo, SandboxKind, Scratch, collect,
};

/// Options for opening the process sandbox.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    pub python: PathBuf,
    /// Layers the user accepted running without.
    pub allow_weaker: Vec<Layer>,
    /// BLAS/OpenMP threads for the script.
    pub threads: u32,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self { python: PathBuf::from("python3"), allow_weaker: vec![], threads: 1 }
    }
}

/// What the interpreter says about itself, asked with an empty environment (so no
/// `PYTHONPATH` or the like from the runner's shell can add directories).
#[derive(Debug, Clone, serde::Deserialize)]
struct Interpreter {
    executable: PathBuf,
    version: String,
    prefixes: Vec<PathBuf>,
    /// The installation's own site-packages directories, and the user's.
    site: Vec<PathBuf>,
    /// Other directories on `sys.path` (from `.pth` files, e.g. editable installs): not mounted.
    other: Vec<PathBuf>,
    packages: BTreeMap<String, String>,
    #[serde(default)]
    requires: BTreeMap<String, Vec<String>>,
}

const DESCRIBE: &str = r#"
import json, os, re, site, sys
real = lambda p: os.path.realpath(p)
try:
    from importlib import metadata
    dists = [d for d in metadata.distributions() if d.metadata["Name"]]
    packages = {d.metadata["Name"]: d.version for d in dists}
    requires = {d.metadata["Name"]: [r for r in (d.requires or []) if "extra ==" not in r] for d in dists}
except Exception:
    packages, requires = {}, {}
prefixes = sorted({real(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
sites = list(getattr(site, "getsitepackages", lambda: [])())
user = getattr(site, "getusersitepackages", lambda: None)()
if user and site.ENABLE_USER_SITE:
    sites.append(user)
sites = [real(p) for p in sites if os.path.isdir(p)]
inside = lambda p: any(p == q or p.startswith(q + os.sep) for q in prefixes + sites)
print(json.dumps({
    "executable": real(sys.executable),
    "version": sys.version.split()[0],
    "prefixes": prefixes,
    "site": sites,
    "other": [real(p) for p in sys.path if p and os.path.isdir(p) and not inside(real(p))],
    "packages": packages,
    "requires": {name: [re.match(r"[A-Za-z0-9._-]*", r).group(0) for r in reqs] for name, reqs in requires.items()},
}))
"#;

/// Run inside the jail when opening: each line a fact the layers must make true.
const PROBE: &str = r#"
import os, socket, sys
facts = {"pid": os.getpid()}
status = open("/proc/self/status").read()
for key in ("CapEff", "CapPrm", "NoNewPrivs", "Seccomp"):
    facts[key] = [l.split(":")[1].strip() for l in status.splitlines() if l.startswith(key + ":")][0]
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    facts["inet"] = "allowed"
except OSError:
    facts["inet"] = "denied"
try:
    open("/etc/hostname").read()
    facts["outside"] = "readable"
except OSError:
    facts["outside"] = "denied"
print(repr(facts))
"#;

pub struct ProcessSandbox {
    python: PathBuf,
    system: Vec<PathBuf>,
    /// Site-packages outside the prefixes (the user's), put on `PYTHONPATH` in the jail.
    extra_paths: Vec<PathBuf>,
    layers: Vec<Layer>,
    threads: u32,
    info: SandboxInfo,
}

impl ProcessSandbox {
    /// Finds the interpreter, builds the jail once, and checks every layer from inside it.
    pub fn open(options: &ProcessOptions) -> Result<Self, SandboxError> {
        let interpreter = describe(&options.python)?;
        let mut system: Vec<PathBuf> =
            ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/localtime"]
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect();
        for p in interpreter.prefixes.iter().chain(&interpreter.site) {
            if !system.iter().any(|s| p.starts_with(s)) {
                system.push(p.clone());
            }
        }
        if let Some(dir) = interpreter.executable.parent()
            && !system.iter().any(|s| dir.starts_with(s))
        {
            system.push(dir.to_path_buf());
        }
        if !interpreter.other.is_empty() {
            tracing::info!(
                left_out = ?interpreter.other,
                "directories on the interpreter's sys.path outside its installation are not mounted"
            );
        }
        // Site-packages outside the prefixes (the user's) are found through PYTHONPATH, since
        // HOME inside the jail is /tmp.
        let extra_paths: Vec<PathBuf> = interpreter
            .site
            .iter()
            .filter(|p| !interpreter.prefixes.iter().any(|pre| p.starts_with(pre)))
            .cloned()
            .collect();
        let mut sandbox = Self {
            python: interpreter.executable.clone(),
            system,
            extra_paths,
            layers: Layer::ALL.to_vec(),
            threads: options.threads.max(1),
            info: SandboxInfo {
                kind: SandboxKind::Process,
                interpreter: format!(
                    "CPython {} ({})",
                    interpreter.version,
                    interpreter.executable.display()
                ),
                packages: interpreter.packages.clone(),
                requires: interpreter.requires.clone(),
                module_sha256: None,
                module_flavor: None,
                engine: format!("native {}", std::env::consts::ARCH),
                layers: vec![],
                waived: vec![],
            },
        };
        if !std::path::Path::new("/sys/fs/cgroup/pids").is_dir() {
            sandbox.waive(Layer::CgroupPids, "the cgroup v1 pids controller is not mounted", options)?;
        }
        loop {
            match sandbox.probe() {
                Ok(()) => break,
                Err(ProbeFailure::Layer(layer, why)) => sandbox.waive(layer, &why, options)?,
                Err(ProbeFailure::Other(e)) => return Err(e),
            }
        }
        sandbox.info.layers = sandbox.layers.iter().map(|l| l.name().to_string()).collect();
        sandbox.info.waived = Layer::ALL
            .into_iter()
            .filter(|l| !sandbox.layers.contains(l))
            .map(|l| l.consequence().to_string())
            .collect();
        Ok(sandbox)
    }

    /// Drops `layer` if the user allowed it; otherwise the error that names it.
    fn waive(&mut self, layer: Layer, why: &str, options: &ProcessOptions) -> Result<(), SandboxError> {
        if options.allow_weaker.contains(&layer) && self.layers.contains(&layer) {
            tracing::warn!(layer = layer.name(), why, "running without a sandbox layer, as allowed");
            self.layers.retain(|l| *l != layer);
            return Ok(());
        }
        Err(SandboxError::LayerUnavailable { layer: layer.name().to_string(), detail: why.to_string() })
    }

    /// Runs the probe script in the jail and checks its facts against the layers.
    fn probe(&self) -> Result<(), ProbeFailure> {
        let work = tempfile::tempdir()
            .map_err(|e| ProbeFailure::Other(SandboxError::Io { path: std::env::temp_dir(), source: e }))?;
        fs_err::write(work.path().join("probe.py"), PROBE)
            .map_err(|e| ProbeFailure::Other(SandboxError::Io { path: work.path().into(), source: e }))?;
        let mut spec = RunSpec::new("/work/probe.py", vec![Mount::read_write(work.path(), "/work")]);
        spec.limits.wall = Duration::from_secs(30);
        let outcome = match self.execute(&spec, &CancellationToken::new()) {
            Ok(o) => o,
            Err(SandboxError::Setup(detail)) => {
                let layer = Layer::ALL
                    .into_iter()
                    .find(|l| detail.contains(&format!("layer {}", l.name())) || detail.contains(l.name()));
                return Err(match layer {
                    Some(layer) => ProbeFailure::Layer(layer, detail),
                    None => ProbeFailure::Other(SandboxError::Setup(detail)),
                });
            }
            Err(SandboxError::LayerUnavailable { layer, detail }) if Layer::parse(&layer).is_ok() => {
                return Err(ProbeFailure::Layer(Layer::parse(&layer).expect("checked"), detail));
            }
            Err(e) => return Err(ProbeFailure::Other(e)),
        };
        if !outcome.success() {
            return Err(ProbeFailure::Other(SandboxError::Setup(format!(
                "the probe script failed in the jail: {}\n{}",
                outcome.summary(),
                outcome.stderr.text
            ))));
        }
        let facts = outcome.stdout.text.trim().to_string();
        let expect = |layer: Layer, fact: &str| -> Result<(), ProbeFailure> {
            if self.layers.contains(&layer) && !facts.contains(fact) {
                return Err(ProbeFailure::Layer(
                    layer,
                    format!("not in force inside the jail (expected {fact} in {facts})"),
                ));
            }
            Ok(())
        };
        expect(Layer::PidNamespace, "'pid': 1,")?;
        expect(Layer::NoCapabilities, "'CapEff': '0000000000000000'")?;
        expect(Layer::Seccomp, "'Seccomp': '2'")?;
        expect(Layer::Seccomp, "'inet': 'denied'")?;
        expect(Layer::MountNamespace, "'outside': 'denied'")?;
        Ok(())
    }

    /// Builds the plan, runs the helper, and gathers the outcome.
    fn execute(&self, spec: &RunSpec, cancel: &CancellationToken) -> Result<Outcome, SandboxError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::Io { path, source }
        };
        let scratch = Scratch::new("loop-runner-jail-").map_err(io(&std::env::temp_dir()))?;
        let root = scratch.path().join("root");
        fs_err::create_dir(&root).map_err(io(&root))?;
        let cgroup = if self.layers.contains(&Layer::CgroupPids) {
            Some(Cgroup::create(scratch.path())?)
        } else {
            None
        };
        let mut env: BTreeMap<String, String> = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", "/tmp"),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("MPLBACKEND", "Agg"),
            ("MPLCONFIGDIR", "/tmp"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
            env.insert(var.into(), self.threads.to_string());
        }
        env.insert("PYTHONHASHSEED".into(), (spec.seed % 4_294_967_295).to_string());
        if !self.extra_paths.is_empty() {
            let joined: Vec<String> = self.extra_paths.iter().map(|p| p.display().to_string()).collect();
            env.insert("PYTHONPATH".into(), joined.join(":"));
        }
        env.extend(spec.env.clone());
        let mut argv = vec![spec.script.clone()];
        argv.extend(spec.args.iter().cloned());
        let l = &spec.limits;
        let plan = Plan {
            layers: self.layers.clone(),
            python: self.python.clone(),
            argv,
            env,
            workdir: spec.effective_workdir(),
            mounts: spec
                .mounts
                .iter()
                .map(|m| Mount { guest: m.guest.trim_end_matches('/').to_string(), ..m.clone() })
                .collect(),
            system: self.system.clone(),
            limits: ProcessLimits {
                address_space: l.memory_bytes,
                cpu_seconds: l.wall.as_secs() + 2,
                file_size: l.disk_bytes,
                // Python itself holds a few dozen descriptors.
                open_files: u64::from(l.open_files) + 64,
                tmp_bytes: l.disk_bytes.max(1 << 20),
            },
            cgroup: cgroup.as_ref().map(|c| c.path.clone()),
            root,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            runner: std::process::id(),
        };
        let plan_path = scratch.path().join("plan.json");
        fs_err::write(&plan_path, serde_json::to_string(&plan).expect("plans serialize"))
            .map_err(io(&plan_path))?;
        let helper = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
        let started = Instant::now();
        let mut command = Command::new(&helper);
        command
            .args(["__sandbox-exec", "outer"])
            .arg(&plan_path)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, status_pipe) = spawn_outer(&mut command).map_err(io(&helper))?;
        // The helper's report arrives on a pipe only the helpers hold (the script's copy is
        // closed when Python starts), read to its end while the script runs.
        let status_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = (&status_pipe).take(1 << 20).read_to_string(&mut text);
            text
        });
        let stdout = CappedBuffer::new(l.stdout_bytes);
        let stderr = CappedBuffer::new(l.stderr_bytes);
        let readers = [
            pump(child.stdout.take().expect("piped"), stdout.clone()),
            pump(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let deadline = started + l.wall;
        let disk_roots: Vec<PathBuf> =
            spec.mounts.iter().filter(|m| m.access == Access::ReadWrite).map(|m| m.host.clone()).collect();
        let disk_before: u64 = disk_roots.iter().map(|r| crate::fsx::tree_size(r)).sum();
        let mut stopped_by = None;
        let mut last_disk_check = Instant::now();
        let status = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(status) => break status.map_err(io(&helper))?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(SandboxError::Setup("lost the sandbox helper".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stopped_by.is_none() {
                if cancel.is_cancelled() {
                    stopped_by = Some(LimitKind::Cancelled);
                } else if Instant::now() >= deadline {
                    stopped_by = Some(LimitKind::WallTime);
                } else if last_disk_check.elapsed() > Duration::from_millis(200) {
                    // Bytes written into the work dirs: polled, so it can overshoot by what a
                    // script writes in a fifth of a second (each single file is capped exactly).
                    last_disk_check = Instant::now();
                    let now: u64 = disk_roots.iter().map(|r| crate::fsx::tree_size(r)).sum();
                    if now.saturating_sub(disk_before) > l.disk_bytes {
                        stopped_by = Some(LimitKind::Disk);
                    }
                }
                if stopped_by.is_some() {
                    // The helper's death kills PID 1 of the namespace, and with it every process.
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_raw(pid as i32).expect("a child pid is positive"),
                        rustix::process::Signal::KILL,
                    );
                }
            }
        };
        let _ = waiter.join();
        for reader in readers {
            let _ = reader.join();
        }
        let wall = started.elapsed();
        let report: Status =
            serde_json::from_str(&status_reader.join().unwrap_or_default()).unwrap_or_default();
        if let Some(detail) = report.setup_error {
            return Err(SandboxError::Setup(detail));
        }
        let exit = match (stopped_by, report.code.or(status.code()), report.signal) {
            (Some(_), _, _) => Exit::Killed,
            (None, Some(code), _) => Exit::Code(code),
            (None, None, Some(signal)) => Exit::Crashed(format!("signal {signal}")),
            (None, None, None) => Exit::Crashed("unknown".into()),
        };
        let err = stderr.snapshot().text;
        let mut limits_hit: Vec<LimitKind> = Vec::new();
        let signal = report.signal.or_else(|| report.code.filter(|c| *c > 128).map(|c| c - 128));
        if err.contains("MemoryError") || err.contains("Cannot allocate memory") {
            limits_hit.push(LimitKind::Memory);
        }
        if err.contains("Too many open files") {
            limits_hit.push(LimitKind::OpenFiles);
        }
        if err.contains("File too large") || signal == Some(libc::SIGXFSZ) || err.contains("No space left") {
            limits_hit.push(LimitKind::Disk);
        }
        if signal == Some(libc::SIGXCPU) {
            limits_hit.push(LimitKind::WallTime);
        }
        if stdout.dropped() > 0 {
            limits_hit.push(LimitKind::Stdout);
        }
        if stderr.dropped() > 0 {
            limits_hit.push(LimitKind::Stderr);
        }
        if let Some(kind) = stopped_by {
            limits_hit.push(kind);
        }
        limits_hit.sort();
        limits_hit.dedup();
        let limit = match (&exit, stopped_by) {
            (_, Some(kind)) => Some(kind),
            (Exit::Code(0), None) => None,
            _ => limits_hit.iter().copied().find(|k| {
                matches!(k, LimitKind::Memory | LimitKind::Disk | LimitKind::OpenFiles | LimitKind::WallTime)
            }),
        };
        drop(cgroup);
        let (files, skipped) = collect(&spec.mounts, CollectLimits::for_disk_cap(l.disk_bytes));
        // Python ignores SIGXFSZ and a script may catch the error: a file that reached the cap is
        // the evidence left behind.
        let written: u64 = files.iter().map(|f| f.size).sum::<u64>().saturating_sub(disk_before);
        if files.iter().any(|f| f.size >= l.disk_bytes) || written >= l.disk_bytes {
            limits_hit.push(LimitKind::Disk);
            limits_hit.sort();
            limits_hit.dedup();
        }
        Ok(Outcome {
            exit,
            limit,
            limits_hit,
            wall,
            peak_memory_bytes: report.max_rss_kib * 1024,
            stdout: stdout.snapshot(),
            stderr: stderr.snapshot(),
            files,
            skipped,
        })
    }
}

impl ProcessSandbox {
    /// The interpreter's directories are bound into every jail: none of them may expose a
    /// private directory, or contain a directory the spec mounts (it would show what lies next
    /// to it, e.g. the run's other files).
    fn check_system_paths(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        for path in self.system.iter().chain(&self.extra_paths) {
            spec.check_not_private(path)?;
            let real = resolve(path);
            if let Some(mount) = spec.mounts.iter().find(|m| resolve(&m.host).starts_with(&real)) {
                return Err(SandboxError::ExposesPrivate {
                    mount: path.clone(),
                    private: mount.host.clone(),
                });
            }
        }
        Ok(())
    }
}

enum ProbeFailure {
    Layer(Layer, String),
    Other(SandboxError),
}

impl Sandbox for ProcessSandbox {
    fn info(&self) -> SandboxInfo {
        self.info.clone()
    }

    fn run(&self, spec: &RunSpec, cancel: &CancellationToken) -> Result<Outcome, SandboxError> {
        if spec.limits.fuel.is_some() {
            return Err(SandboxError::InvalidSpec("fuel limits need the WASI sandbox".into()));
        }
        let mut reserved: Vec<&str> = vec!["/tmp", "/proc", "/dev"];
        reserved.extend(self.system.iter().filter_map(|p| p.to_str()));
        spec.check_mounts(&reserved)?;
        self.check_system_paths(spec)?;
        self.execute(spec, cancel)
    }
}

fn describe(python: &Path) -> Result<Interpreter, SandboxError> {
    let unavailable = |detail: String| SandboxError::LayerUnavailable { layer: "python".into(), detail };
    // PATH only: `python3` may be a launcher (pyenv's shim) that finds the real interpreter
    // through it. Nothing in PATH changes sys.path.
    let output = Command::new(python)
        .args(["-c", DESCRIBE])
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| unavailable(format!("cannot run `{}`: {e}", python.display())))?;
    if !output.status.success() {
        return Err(unavailable(format!(
            "`{}` failed: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| unavailable(format!("`{}` did not describe itself: {e}", python.display())))
}

/// Copies a pipe into a capped buffer until it closes.
fn pump(mut pipe: impl Read + Send + 'static, buffer: CappedBuffer) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buffer.push(&chunk[..n]),
            }
        }
    })
}

/// A pids cgroup (v1) for one run, removed when dropped.
struct Cgroup {
    path: PathBuf,
}

/// Processes one script may have at once (its own threads count).
const MAX_PIDS: u32 = 512;

impl Cgroup {
    fn create(scratch: &Path) -> Result<Self, SandboxError> {
        let name = scratch.file_name().unwrap_or_default().to_string_lossy().to_string();
        let path = PathBuf::from("/sys/fs/cgroup/pids/loop-runner").join(name);
        let setup = |e: std::io::Error| SandboxError::LayerUnavailable {
            layer: Layer::CgroupPids.name().into(),
            detail: format!("creating `{}`: {e}", path.display()),
        };
        fs_err::create_dir_all(&path).map_err(setup)?;
        fs_err::write(path.join("pids.max"), MAX_PIDS.to_string()).map_err(setup)?;
        Ok(Self { path })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once the namespace is gone; a busy cgroup is retried briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
