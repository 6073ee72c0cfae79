//! What the runner hands the sandbox helper: everything needed to build the jail and exec
//! Python, as one JSON file. The helper reads nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sandbox::Mount;

/// An isolation layer. Each is verified when the sandbox opens; a missing one is an error
/// unless the user accepted running without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// New user namespace; nothing runs as real root with capabilities.
    UserNamespace,
    /// New network namespace: no interface but a downed loopback.
    NetworkNamespace,
    /// New mount namespace with a fresh root holding only what the script needs.
    MountNamespace,
    /// New PID namespace: the whole tree dies with the script.
    PidNamespace,
    /// Address space, CPU time, file size, open files, no core dumps.
    Rlimits,
    /// cgroup v1 `pids` controller: bounds fork bombs.
    CgroupPids,
    /// Landlock: file system, TCP and signal/abstract-socket scoping.
    Landlock,
    /// seccomp: no inet/netlink/packet sockets, ptrace, mount, unshare, bpf, io_uring...
    Seccomp,
    /// All capabilities dropped, bounding set cleared, no_new_privs.
    NoCapabilities,
}

impl Layer {
    pub const ALL: [Layer; 9] = [
        Layer::UserNamespace,
        Layer::NetworkNamespace,
        Layer::MountNamespace,
        Layer::PidNamespace,
        Layer::Rlimits,
        Layer::CgroupPids,
        Layer::Landlock,
        Layer::Seccomp,
        Layer::NoCapabilities,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layer::UserNamespace => "user-namespace",
            Layer::NetworkNamespace => "network-namespace",
            Layer::MountNamespace => "mount-namespace",
            Layer::PidNamespace => "pid-namespace",
            Layer::Rlimits => "rlimits",
            Layer::CgroupPids => "cgroup-pids",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::NoCapabilities => "no-capabilities",
        }
    }

    /// What is unprotected when this layer is waived, in words for the run's summary and report.
    pub fn consequence(self) -> &'static str {
        match self {
            Layer::UserNamespace => {
                "user-namespace: the script runs as the runner's own user, not as an unprivileged user of its own"
            }
            Layer::NetworkNamespace => {
                "network-namespace: only seccomp and Landlock keep the script off the network (UDP is not covered by Landlock)"
            }
            Layer::MountNamespace => {
                "mount-namespace: the script sees the host's file system wherever Landlock allows reading"
            }
            Layer::PidNamespace => {
                "pid-namespace: the script sees the host's processes, can read /proc/<pid>/environ of processes of the same user (loop-runner removes the API key from its own), and processes it detaches with setsid can outlive it"
            }
            Layer::Rlimits => {
                "rlimits: memory, CPU time, file size and open files are not capped by the kernel (the wall-clock deadline still holds)"
            }
            Layer::CgroupPids => {
                "cgroup-pids: a fork bomb is bounded only by the PID namespace and the user's process limit"
            }
            Layer::Landlock => {
                "landlock: file access is confined by the mount namespace alone, TCP by seccomp alone"
            }
            Layer::Seccomp => {
                "seccomp: socket, ptrace, mount and other system calls are not filtered (the namespaces still apply)"
            }
            Layer::NoCapabilities => {
                "no-capabilities: the script keeps capabilities inside its namespaces and could remount read-only mounts writable"
            }
        }
    }

    pub fn parse(name: &str) -> Result<Layer, String> {
        Layer::ALL.into_iter().find(|l| l.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Layer::ALL.iter().map(|l| l.name()).collect();
            format!("unknown sandbox layer `{name}`; layers are: {}", names.join(", "))
        })
    }
}

/// Resource limits as the helper applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessLimits {
    pub address_space: u64,
    pub cpu_seconds: u64,
    pub file_size: u64,
    pub open_files: u64,
    pub tmp_bytes: u64,
}

/// The helper's instructions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Layers to apply (the ones verified, minus those the user waived and the host lacks).
    pub layers: Vec<Layer>,
    pub python: PathBuf,
    /// Arguments after the interpreter: the script's guest path and its arguments.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub mounts: Vec<Mount>,
    /// Host paths made visible read-only at the same path (interpreter, libraries).
    pub system: Vec<PathBuf>,
    pub limits: ProcessLimits,
    /// The pids cgroup to join (created by the runner).
    pub cgroup: Option<PathBuf>,
    /// An empty host directory to build the new root on.
    pub root: PathBuf,
    /// The runner's uid and gid, mapped to 0 inside the user namespace.
    pub uid: u32,
    pub gid: u32,
    /// The runner's pid: the outer helper dies with it.
    pub runner: u32,
}

/// The descriptor on which each helper stage reports to its parent: the outer helper's
/// [`Status`] to the runner, the inner helper's set-up errors to the outer one. It is
/// close-on-exec in both, so the script never holds it and cannot forge either report.
pub const STATUS_FD: i32 = 3;

/// What the outer helper reports (as JSON on [`STATUS_FD`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub max_rss_kib: u64,
    /// Set when building the jail failed (before Python ran).
    pub setup_error: Option<String>,
}
