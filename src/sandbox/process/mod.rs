//! The process backend: native `python3` behind user, mount, network and PID namespaces,
//! rlimits, a pids cgroup, Landlock, seccomp and dropped capabilities, applied by a re-executed
//! helper (never inside the multi-threaded runner). Fails closed: a missing layer is an error
//! unless explicitly waived.

mod backend;
pub mod jail;
mod plan;

pub use backend::{ProcessOptions, ProcessSandbox};
pub use plan::Layer;
