//! The wasmtime engine for the WASI Python, and its on-disk cache of compiled modules.
//!
//! Compiling `python.wasm` takes minutes and gigabytes; loading a cached `.cwasm` takes
//! milliseconds. Cache entries are keyed by the wasm's sha256, the wasmtime version and the
//! engine's compatibility hash (which covers settings such as fuel), written atomically, and
//! guarded by a lock file so that concurrent processes compile once.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, InstancePre, Linker, Module};

use super::host::Host;
use super::hostcalls;
use crate::fsx;
use crate::sandbox::SandboxError;

/// The wasmtime version this build embeds (part of every cache key).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Epoch tick: the granularity of deadline checks and cancellation while wasm runs.
const TICK: Duration = Duration::from_millis(10);
/// CPython's deep C recursion (e.g. unpickling) traps with wasmtime's 512 KiB default.
const MAX_WASM_STACK: usize = 8 << 20;
/// Fiber stacks must hold the wasm stack plus room for host functions.
const ASYNC_STACK: usize = 16 << 20;

/// Options that change the compiled code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Instruction metering (needed for `Limits::fuel`); costs about 8% and its own cache entry.
    pub fuel: bool,
}

/// Called around the one-time compile so the caller can show progress.
pub trait CompileObserver {
    fn compile_started(&self, what: &str);
    fn compile_finished(&self, what: &str, took: Duration);
}

/// An observer that shows nothing.
pub struct Quiet;

impl CompileObserver for Quiet {
    fn compile_started(&self, _: &str) {}
    fn compile_finished(&self, _: &str, _: Duration) {}
}

/// A configured engine with a module loaded and linked, ready to instantiate.
pub struct WasiEngine {
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<Host>,
    pub(crate) options: EngineOptions,
    pub(crate) module_sha256: String,
    _ticker: Ticker,
}

impl WasiEngine {
    /// Builds the engine and loads `wasm` (sha256 `sha256`) through the cache in `cache_dir`.
    pub fn load(
        wasm: &Path,
        sha256: &str,
        cache_dir: &Path,
        options: EngineOptions,
        observer: &dyn CompileObserver,
    ) -> Result<Self, SandboxError> {
        let engine = new_engine(options)?;
        let module = cached_module(&engine, wasm, sha256, cache_dir, observer)?;
        let mut linker = Linker::new(&engine);
        hostcalls::add_to_linker(&mut linker)
            .map_err(|e| SandboxError::engine("linking the WASI host functions", e))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::engine(format!("linking `{}`", wasm.display()), e))?;
        let ticker = Ticker::start(engine.clone());
        Ok(Self { engine, pre, options, module_sha256: sha256.to_string(), _ticker: ticker })
    }
}

pub(crate) fn new_engine(options: EngineOptions) -> Result<Engine, SandboxError> {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_exceptions(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        .consume_fuel(options.fuel)
        .parallel_compilation(true);
    // See `memory`: copied-in memories on huge pages instead of copy-on-write images.
    config.memory_init_cow(false).with_host_memory(std::sync::Arc::new(super::memory::HugePageMemories));
    Engine::new(&config).map_err(|e| SandboxError::engine("configuring wasmtime", e))
}

/// The cache file name for `sha256` under this engine's configuration.
pub(crate) fn cache_key(engine: &Engine, sha256: &str) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let short = sha256.get(..32).unwrap_or(sha256);
    format!("{short}-wasmtime{WASMTIME_VERSION}-{:016x}", hasher.finish())
}

fn cached_module(
    engine: &Engine,
    wasm: &Path,
    sha256: &str,
    cache_dir: &Path,
    observer: &dyn CompileObserver,
) -> Result<Module, SandboxError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { path, source }
    };
    create_private_dir(cache_dir).map_err(io(cache_dir))?;
    let key = cache_key(engine, sha256);
    let cwasm = cache_dir.join(format!("{key}.cwasm"));
    if let Some(module) = try_load(engine, &cwasm) {
        return Ok(module);
    }
    // Serialize compiles across processes: the loser of the race waits, then loads.
    let lock_path = cache_dir.join(format!("{key}.lock"));
    let lock = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| SandboxError::Io { path: lock_path.clone(), source: e.into() })?;
    if let Some(module) = try_load(engine, &cwasm) {
        return Ok(module);
    }
    let what = wasm.file_name().unwrap_or_default().to_string_lossy().to_string();
    observer.compile_started(&what);
    let started = Instant::now();
    let bytes = fs_err::read(wasm).map_err(io(wasm))?;
    if fsx::sha256_bytes(&bytes) != sha256 {
        return Err(crate::runtime::RuntimeError::Corrupt {
            file: wasm.to_path_buf(),
            detail: "changed after it was verified".into(),
        }
        .into());
    }
    let module = Module::new(engine, &bytes)
        .map_err(|e| SandboxError::engine(format!("compiling `{}`", wasm.display()), e))?;
    drop(bytes);
    let serialized =
        module.serialize().map_err(|e| SandboxError::engine("serializing the compiled module", e))?;
    fsx::write_atomic_private(&cwasm, &serialized).map_err(io(&cwasm))?;
    observer.compile_finished(&what, started.elapsed());
    Ok(module)
}

fn try_load(engine: &Engine, cwasm: &Path) -> Option<Module> {
    if !is_private_file(cwasm) {
        return None;
    }
    // SAFETY: `deserialize_file` trusts its input to be wasmtime's own output. The cache dir is
    // created 0700 by us, files are written only by `cached_module` (atomically) and checked to
    // be regular files owned by this user, and no sandbox ever mounts the loop-runner home.
    match unsafe { Module::deserialize_file(engine, cwasm) } {
        Ok(module) => Some(module),
        Err(error) => {
            tracing::warn!(path = %cwasm.display(), %error, "ignoring an unusable compiled module; recompiling");
            None
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    Ok(())
}

fn is_private_file(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            meta.is_file() && meta.uid() == rustix::process::getuid().as_raw() && meta.mode() & 0o022 == 0
        }
        Err(_) => false,
    }
}

/// Advances the engine's epoch every [`TICK`] so running guests yield to the deadline timer.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasi-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Where compiled modules live under the loop-runner home.
pub fn module_cache_dir(home: &Path) -> PathBuf {
    home.join("modules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_fuel_and_hash() {
        let plain = new_engine(EngineOptions { fuel: false }).unwrap();
        let fuel = new_engine(EngineOptions { fuel: true }).unwrap();
        let sha = "ab".repeat(32);
        assert_ne!(cache_key(&plain, &sha), cache_key(&fuel, &sha));
        assert_ne!(cache_key(&plain, &sha), cache_key(&plain, &"cd".repeat(32)));
        assert_eq!(cache_key(&plain, &sha), cache_key(&new_engine(EngineOptions::default()).unwrap(), &sha));
    }

    /// Counts compiles.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl CompileObserver for Count {
        fn compile_started(&self, _: &str) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn compile_finished(&self, _: &str, _: Duration) {}
    }

    /// The smallest valid module: the header alone.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn concurrent_loads_compile_once_and_share_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("m.wasm");
        std::fs::write(&wasm, EMPTY_MODULE).unwrap();
        let sha = fsx::sha256_bytes(EMPTY_MODULE);
        let cache = dir.path().join("cache");
        let engine = new_engine(EngineOptions::default()).unwrap();
        let count = Count::default();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| cached_module(&engine, &wasm, &sha, &cache, &count).map(|_| ())))
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let entries: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_damaged_cache_entry_is_recompiled_and_a_changed_wasm_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("m.wasm");
        std::fs::write(&wasm, EMPTY_MODULE).unwrap();
        let sha = fsx::sha256_bytes(EMPTY_MODULE);
        let cache = dir.path().join("cache");
        let engine = new_engine(EngineOptions::default()).unwrap();
        let count = Count::default();
        cached_module(&engine, &wasm, &sha, &cache, &count).unwrap();
        let cwasm = cache.join(format!("{}.cwasm", cache_key(&engine, &sha)));
        fsx::write_atomic_private(&cwasm, b"garbage").unwrap();
        cached_module(&engine, &wasm, &sha, &cache, &count).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "recompiled after damage");
        std::fs::remove_file(&cwasm).unwrap();
        let err = cached_module(&engine, &wasm, &"00".repeat(32), &cache, &count).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
