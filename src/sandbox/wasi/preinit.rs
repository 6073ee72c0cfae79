//! A pre-initialized interpreter: `python.wasm` with numpy, pandas and scikit-learn already
//! imported, snapshotted with wizer.
//!
//! Importing scikit-learn costs seconds in the guest; every training and inference script pays
//! it. Here the interpreter is started once (`wizer.initialize`), the imports run once (the
//! reactor's `turn` export), and linear memory and globals are written back into a new module.
//! Built at set-up, stored under the home keyed by its inputs, compiled through the same cache.
//!
//! What a snapshot freezes, and how the guest gets it back: the random state of `random` and
//! `numpy.random` is re-seeded from the (seeded) WASI random source by the bootstrap, so runs
//! still differ by seed and repeat for the same seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::{Engine, Instance, Linker, Module, Store, Val};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use super::engine::{CompileObserver, WASMTIME_VERSION};
use super::host::{FileAccounting, Host, MemoryLimiter};
use super::hostcalls;
use crate::fsx;
use crate::runtime::{Artifacts, FileRecord, mtime_ns};
use crate::sandbox::{CappedBuffer, SandboxError};

/// What runs before the snapshot: the packages agent scripts use, and their common submodules.
pub const PRELOAD: &str = "\
import json, pickle, math, random, csv, os, sys, time, warnings
import numpy, numpy.random
import pandas
import scipy, scipy.sparse, scipy.stats
import sklearn, sklearn.base, sklearn.compose, sklearn.ensemble, sklearn.impute
import sklearn.linear_model, sklearn.metrics, sklearn.model_selection, sklearn.neighbors
import sklearn.neural_network, sklearn.pipeline, sklearn.preprocessing, sklearn.svm, sklearn.tree
";

/// Bump when the build procedure changes, so old snapshots are not reused.
const FORMAT: u32 = 2;

/// Where a built snapshot is recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    format: u32,
    /// sha256 of the `python.wasm` it was built from.
    source_sha256: String,
    preload_sha256: String,
    wasmtime: String,
    file: FileRecord,
}

/// The snapshot for this runtime, if built and intact: its path and sha256.
pub(crate) fn find(home: &Path, artifacts: &Artifacts) -> Option<(PathBuf, String)> {
    let (wasm, json) = paths(home, artifacts);
    let record: Record = serde_json::from_str(&std::fs::read_to_string(&json).ok()?).ok()?;
    let meta = std::fs::metadata(&wasm).ok()?;
    if record.format != FORMAT || meta.len() != record.file.size || mtime_ns(&meta) != record.file.mtime_ns {
        return None;
    }
    Some((wasm, record.file.sha256))
}

fn paths(home: &Path, artifacts: &Artifacts) -> (PathBuf, PathBuf) {
    let source = artifacts.sha256_of("python.wasm").unwrap_or_default();
    let key = fsx::sha256_bytes(format!("{FORMAT}\n{source}\n{WASMTIME_VERSION}\n{PRELOAD}").as_bytes());
    let dir = home.join("preimport");
    (dir.join(format!("{}.wasm", &key[..32])), dir.join(format!("{}.json", &key[..32])))
}

/// Builds the snapshot (minutes, once) and returns its path and sha256.
pub(crate) fn build(
    home: &Path,
    artifacts: &Artifacts,
    engine: &Engine,
    observer: &dyn CompileObserver,
) -> Result<(PathBuf, String), SandboxError> {
    let (wasm_path, json_path) = paths(home, artifacts);
    let what = "a snapshot with numpy, pandas and scikit-learn imported";
    observer.compile_started(what);
    let started = Instant::now();
    let source = artifacts.plain_wasm();
    let bytes = fs_err::read(&source).map_err(|e| SandboxError::Io { path: source.clone(), source: e })?;
    if Some(fsx::sha256_bytes(&bytes).as_str()) != artifacts.sha256_of("python.wasm") {
        return Err(crate::runtime::RuntimeError::Corrupt {
            file: source,
            detail: "changed after it was verified".into(),
        }
        .into());
    }
    let lib_dir = artifacts.lib_dir();
    let engine = engine.clone();
    let snapshot = std::thread::Builder::new()
        .name("wasi-preinit".into())
        .stack_size(16 << 20)
        .spawn(move || snapshot(&engine, &bytes, &lib_dir))
        .map_err(|e| SandboxError::engine("starting the snapshot thread", e))?
        .join()
        .map_err(|_| {
            SandboxError::engine("building the snapshot", anyhow::anyhow!("the snapshot thread panicked"))
        })??;
    let sha256 = fsx::sha256_bytes(&snapshot);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { path, source }
    };
    fsx::write_atomic_private(&wasm_path, &snapshot).map_err(io(&wasm_path))?;
    let meta = fs_err::metadata(&wasm_path).map_err(io(&wasm_path))?;
    let record = Record {
        format: FORMAT,
        source_sha256: artifacts.sha256_of("python.wasm").unwrap_or_default().to_string(),
        preload_sha256: fsx::sha256_bytes(PRELOAD.as_bytes()),
        wasmtime: WASMTIME_VERSION.into(),
        file: FileRecord { sha256: sha256.clone(), size: meta.len(), mtime_ns: mtime_ns(&meta) },
    };
    fsx::write_atomic(&json_path, serde_json::to_string_pretty(&record).expect("serializes").as_bytes())
        .map_err(io(&json_path))?;
    observer.compile_finished(what, started.elapsed());
    Ok((wasm_path, sha256))
}

/// Instruments, initializes, imports, snapshots. Runs on a thread with a large stack.
fn snapshot(engine: &Engine, wasm: &[u8], lib_dir: &Path) -> Result<Vec<u8>, SandboxError> {
    let mut wizer = Wizer::new();
    wizer.init_func("wizer.initialize");
    let (cx, instrumented) = wizer.instrument(wasm).map_err(fail("instrumenting python.wasm"))?;
    let module =
        Module::new(engine, &instrumented).map_err(fail("compiling the instrumented python.wasm"))?;
    drop(instrumented);
    let mut linker = Linker::new(engine);
    hostcalls::add_to_linker(&mut linker).map_err(fail("linking the WASI host functions"))?;
    let tmp = tempfile::tempdir().map_err(|e| SandboxError::Io { path: std::env::temp_dir(), source: e })?;
    let stdout = CappedBuffer::new(1 << 16);
    let stderr = CappedBuffer::new(1 << 16);
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&["/usr/local/bin/python.wasm"]);
    wasi.envs(&super::backend::BASE_ENV);
    wasi.stdout(super::pipe::CappedPipe(stdout.clone()));
    wasi.stderr(super::pipe::CappedPipe(stderr.clone()));
    wasi.allow_blocking_current_thread(true);
    // The same preopens, in the same order, as every run: the guest's libc may remember them.
    wasi.preopened_dir(lib_dir, super::backend::STDLIB_GUEST, FsPerms::ReadOnly)
        .map_err(fail("opening the stdlib"))?;
    wasi.preopened_dir(tmp.path(), super::backend::TMP_GUEST, FsPerms::ReadWrite)
        .map_err(fail("opening /tmp"))?;
    let host = Host {
        wasi: wasi.build_p1(),
        memory: MemoryLimiter::new(4 << 30),
        files: FileAccounting::new(1024, 1 << 30),
    };
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.memory);
    store.epoch_deadline_async_yield_and_update(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(fail("starting an event loop"))?;
    let snapshot = runtime.block_on(async {
        let instance: Instance = linker.instantiate_async(&mut store, &module).await?;
        for export in ["_initialize", "wizer.initialize"] {
            instance.get_typed_func::<(), ()>(&mut store, export)?.call_async(&mut store, ()).await?;
        }
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "host_alloc")?;
        let turn = instance.get_typed_func::<(i32, i32), i32>(&mut store, "turn")?;
        let len = i32::try_from(PRELOAD.len())?;
        let ptr = alloc.call_async(&mut store, len).await?;
        let memory =
            instance.get_memory(&mut store, "memory").ok_or_else(|| anyhow::anyhow!("no memory export"))?;
        memory.write(&mut store, ptr as u32 as usize, PRELOAD.as_bytes())?;
        let status = turn.call_async(&mut store, (ptr, len)).await?;
        if status != 0 {
            anyhow::bail!(
                "the pre-import turn returned {status}: {}{}",
                stdout.snapshot().text,
                stderr.snapshot().text
            );
        }
        // `wizer.initialize` ends by resetting libc's table of preopened dirs; the imports above
        // filled it with this build's dirs. Reset it again so each run finds its own mounts.
        instance.get_typed_func::<(), ()>(&mut store, "wizer.initialize")?.call_async(&mut store, ()).await?;
        let mut state = State { store: &mut store, instance };
        Ok(wizer.snapshot(&cx, &mut state).await?)
    });
    snapshot.map_err(|e: anyhow::Error| SandboxError::engine("pre-importing packages", e))
}

fn fail<E: Into<anyhow::Error>>(context: &str) -> impl FnOnce(E) -> SandboxError {
    let context = context.to_string();
    move |e| SandboxError::engine(context, e)
}

/// Reads globals and memories of the initialized instance for wizer.
struct State<'a> {
    store: &'a mut Store<Host>,
    instance: Instance,
}

impl InstanceState for State<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let global = self.instance.get_global(&mut *self.store, name).expect("wizer exported this global");
        match global.get(&mut *self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => panic!("wizer cannot snapshot a global of type {:?}", other.ty(&*self.store)),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self.instance.get_memory(&mut *self.store, name).expect("wizer exported this memory");
        contents(memory.data(&*self.store));
    }
}
