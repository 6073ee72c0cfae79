//! Running untrusted Python scripts under limits.
//!
//! One trait ([`Sandbox`]) with a WebAssembly backend ([`wasi`], the default) and a native one
//! ([`process`]). A sandbox reads nothing from
//! the host beyond what the [`RunSpec`] mounts, passes no host environment, and reports an
//! [`Outcome`] for every script it starts, whatever the script does. It knows nothing about
//! experiments, agents or budgets: callers turn those into limits and a cancellation token.

mod backend;
mod capture;
mod collect;
pub mod process;
mod scratch;
mod spec;
pub mod wasi;

pub use backend::{Sandbox, SandboxError, SandboxInfo, SandboxKind};
pub use capture::CappedBuffer;
pub use collect::{CollectLimits, collect};
pub(crate) use scratch::Scratch;
pub use spec::{
    Access, Captured, Exit, LimitKind, Limits, Mount, Outcome, RunSpec, SkippedEntry, WrittenFile,
};
pub use tokio_util::sync::CancellationToken;
