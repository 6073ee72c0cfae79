//! The sandbox helper: `loop-runner __sandbox-exec outer|inner PLAN`, re-executed by the runner
//! so that no isolation step runs inside the multi-threaded runner.
//!
//! outer: joins the pids cgroup, unshares user, network, PID, IPC and UTS namespaces,
//!   maps its uid to 0 inside, starts `inner` (which is PID 1 of the new namespace), waits, and
//!   reports the exit status and peak memory to the runner on a pipe ([`STATUS_FD`]).
//! inner: dies with `outer`; in a mount namespace of its own, builds a fresh root holding only the system directories, the
//!   interpreter and the spec's mounts (read-only where asked), a private /tmp, /dev/shm and
//!   /proc; pivots into it; sets rlimits; locks itself with Landlock; drops every capability;
//!   installs the seccomp filter; and execs Python. When Python (PID 1) exits, the kernel kills
//!   whatever else lives in the namespace, `setsid` escapees included. Set-up errors go to the
//!   outer helper on a pipe of their own.
//!
//! Both pipes are close-on-exec, so the script never holds either: whatever it prints or exits
//! with, it cannot pass for a failure of the jail.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Resource, Rlimit};

use super::plan::{Layer, Plan, STATUS_FD, Status};
use crate::sandbox::Access;

/// Exit code of a helper stage that could not build the jail (the report on the status pipe
/// says why; the code alone means nothing, since a script can exit with it too).
pub const SETUP_FAILED: i32 = 125;

/// The status pipe inherited as [`STATUS_FD`], made close-on-exec at once so that nothing this
/// stage starts can hold it.
fn status_pipe() -> Option<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: the parent stage put its pipe on STATUS_FD for this process alone; nothing else
    // here owns that descriptor.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(STATUS_FD) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).ok()?;
    Some(std::fs::File::from(fd))
}

/// Starts `command` with `pipe` as its [`STATUS_FD`].
fn spawn_with_status_fd(
    command: &mut std::process::Command,
    pipe: &std::os::fd::OwnedFd,
) -> std::io::Result<std::process::Child> {
    use std::os::fd::AsRawFd;
    let raw = pipe.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if raw == STATUS_FD {
                if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, STATUS_FD) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// The runner's side: starts the outer helper with a fresh status pipe, returning the child and
/// the pipe's read end.
pub fn spawn_outer(
    command: &mut std::process::Command,
) -> std::io::Result<(std::process::Child, std::fs::File)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let child = spawn_with_status_fd(command, &write)?;
    drop(write);
    Ok((child, std::fs::File::from(read)))
}

/// Entry point of the hidden subcommand. Never returns.
pub fn main(stage: &str, plan_path: &Path) -> ! {
    let plan: Plan = match std::fs::read_to_string(plan_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(e) => {
            let what = format!("reading the plan `{}`: {e}", plan_path.display());
            let mut pipe = status_pipe();
            if stage == "outer" {
                write_status(&mut pipe, &Status { setup_error: Some(what), ..Status::default() });
            } else if let Some(pipe) = pipe.as_mut() {
                let _ = pipe.write_all(what.as_bytes());
            }
            std::process::exit(SETUP_FAILED);
        }
    };
    match stage {
        "outer" => outer(&plan, plan_path),
        "inner" => inner(&plan),
        other => {
            let mut pipe = status_pipe();
            let what = format!("unknown helper stage `{other}`");
            write_status(&mut pipe, &Status { setup_error: Some(what), ..Status::default() });
            std::process::exit(SETUP_FAILED)
        }
    }
}

fn has(plan: &Plan, layer: Layer) -> bool {
    plan.layers.contains(&layer)
}

fn write_status(pipe: &mut Option<std::fs::File>, status: &Status) {
    if let (Some(pipe), Ok(text)) = (pipe.as_mut(), serde_json::to_string(status)) {
        let _ = pipe.write_all(text.as_bytes());
    }
}

fn outer(plan: &Plan, plan_path: &Path) -> ! {
    let mut report = status_pipe();
    let fail = |report: &mut Option<std::fs::File>, what: &str, e: &dyn std::fmt::Display| -> ! {
        write_status(report, &Status { setup_error: Some(format!("{what}: {e}")), ..Status::default() });
        std::process::exit(SETUP_FAILED)
    };
    // Die with the runner, which enforces the wall-time limit and cancellation by killing this
    // process: a runner killed with SIGKILL (or by the OOM killer) could no longer do that, and
    // the script would run on beside a resumed run, in the same work dir. Set before the check,
    // so that a runner dying in between is seen either way.
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        fail(&mut report, "setting the parent-death signal", &e);
    }
    if rustix::process::getppid().map(|p| p.as_raw_pid() as u32) != Some(plan.runner) {
        std::process::exit(SETUP_FAILED);
    }
    if let Some(cgroup) = &plan.cgroup
        && let Err(e) = std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
    {
        fail(&mut report, "joining the pids cgroup (layer cgroup-pids)", &e);
    }
    let mut flags = rustix::thread::UnshareFlags::empty();
    // The mount namespace is the inner helper's own: pivoting the root moves it for every
    // process in the namespace, and this one must keep seeing the runner's files.
    for (layer, flag) in [
        (Layer::UserNamespace, rustix::thread::UnshareFlags::NEWUSER),
        (Layer::NetworkNamespace, rustix::thread::UnshareFlags::NEWNET),
        (Layer::PidNamespace, rustix::thread::UnshareFlags::NEWPID),
    ] {
        if has(plan, layer) {
            flags |= flag;
        }
    }
    if has(plan, Layer::MountNamespace) || has(plan, Layer::PidNamespace) {
        flags |= rustix::thread::UnshareFlags::NEWIPC | rustix::thread::UnshareFlags::NEWUTS;
    }
    // SAFETY: this process is single-threaded (the helper starts no thread) and FILES is not
    // among the flags, so no other thread can observe a changed descriptor table.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(flags) } {
        fail(&mut report, "unsharing namespaces (layers user-, mount-, network-, pid-namespace)", &e);
    }
    if has(plan, Layer::UserNamespace) {
        let maps = [
            ("/proc/self/setgroups", "deny".to_string()),
            ("/proc/self/uid_map", format!("0 {} 1", plan.uid)),
            ("/proc/self/gid_map", format!("0 {} 1", plan.gid)),
        ];
        for (file, text) in maps {
            if let Err(e) = std::fs::write(file, text) {
                fail(&mut report, &format!("writing {file} (layer user-namespace)"), &e);
            }
        }
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&mut report, "finding the helper binary", &e));
    let (setup_read, setup_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .unwrap_or_else(|e| fail(&mut report, "making the set-up pipe", &e));
    let mut command = std::process::Command::new(exe);
    command.args(["__sandbox-exec", "inner"]).arg(plan_path).env_clear();
    let child = spawn_with_status_fd(&mut command, &setup_write);
    drop(setup_write);
    let mut child = child.unwrap_or_else(|e| fail(&mut report, "starting the inner helper", &e));
    // The inner helper's end closes when it execs Python (or exits), so this returns early.
    let mut setup_error = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(setup_read), &mut setup_error);
    let status = child.wait().unwrap_or_else(|e| fail(&mut report, "waiting for the script", &e));
    // SAFETY: `getrusage` only writes into the zeroed struct we pass.
    let max_rss_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) == 0 {
            u64::try_from(usage.ru_maxrss).unwrap_or(0)
        } else {
            0
        }
    };
    let out = Status {
        code: status.code(),
        signal: status.signal(),
        max_rss_kib,
        setup_error: (!setup_error.is_empty()).then_some(setup_error),
    };
    write_status(&mut report, &out);
    std::process::exit(status.code().unwrap_or(128 + status.signal().unwrap_or(9)));
}

fn inner(plan: &Plan) -> ! {
    // Inherited from the outer helper; it stays usable after the root changes and closes when
    // Python is executed.
    let mut setup = status_pipe();
    let mut fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        if let Some(f) = setup.as_mut() {
            let _ = write!(f, "{what}: {e}");
        }
        std::process::exit(SETUP_FAILED)
    };
    // Die with the outer helper (which the runner kills on timeout).
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        fail("setting the parent-death signal", &e);
    }
    if has(plan, Layer::MountNamespace)
        && let Err(e) = unshare_mounts().and_then(|()| build_root(plan))
    {
        fail("building the file system view (layer mount-namespace)", &e);
    }
    // A session of its own: no terminal, no signals aimed at the runner's process group.
    if let Err(e) = rustix::process::setsid() {
        fail("starting a new session", &e);
    }
    if let Err(e) = std::env::set_current_dir(&plan.workdir) {
        fail(&format!("entering the working directory `{}`", plan.workdir), &e);
    }
    if has(plan, Layer::Rlimits)
        && let Err(e) = set_rlimits(plan)
    {
        fail("setting rlimits (layer rlimits)", &e);
    }
    if let Err(e) = rustix::thread::set_no_new_privs(true) {
        fail("setting no_new_privs", &e);
    }
    if has(plan, Layer::Landlock)
        && let Err(e) = landlock(plan)
    {
        fail("enforcing Landlock (layer landlock)", &e);
    }
    if has(plan, Layer::NoCapabilities)
        && let Err(e) = drop_capabilities()
    {
        fail("dropping capabilities (layer no-capabilities)", &e);
    }
    if has(plan, Layer::Seccomp)
        && let Err(e) = seccomp()
    {
        fail("installing the seccomp filter (layer seccomp)", &e);
    }
    let error = std::process::Command::new(&plan.python).args(&plan.argv).env_clear().envs(&plan.env).exec();
    fail(&format!("starting `{}`", plan.python.display()), &error)
}

fn unshare_mounts() -> std::io::Result<()> {
    // SAFETY: single-threaded, and FILES is not among the flags.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.map_err(Into::into)
}

/// A fresh root on tmpfs: system paths and mounts bound in, everything else absent.
fn build_root(plan: &Plan) -> std::io::Result<()> {
    let root = &plan.root;
    rustix::mount::mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE)?;
    rustix::mount::mount("tmpfs", root, "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(c"mode=0755"))?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let bind = |host: &Path, target: &Path, read_only: bool| -> std::io::Result<()> {
        if host.is_dir() {
            fs_err::create_dir_all(target)?;
        } else {
            if let Some(parent) = target.parent() {
                fs_err::create_dir_all(parent)?;
            }
            fs_err::write(target, b"")?;
        }
        rustix::mount::mount_bind_recursive(host, target)?;
        if read_only {
            rustix::mount::mount_remount(
                target,
                MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID,
                c"",
            )?;
        }
        Ok(())
    };
    for path in &plan.system {
        if path.exists() {
            bind(path, &inside(path), true)?;
        }
    }
    for dev in ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"] {
        bind(Path::new(dev), &inside(Path::new(dev)), false)?;
    }
    let size = |bytes: u64| std::ffi::CString::new(format!("size={bytes},mode=1777")).expect("no NUL");
    for dir in ["/tmp", "/dev/shm"] {
        let target = inside(Path::new(dir));
        fs_err::create_dir_all(&target)?;
        rustix::mount::mount(
            "tmpfs",
            &target,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(size(plan.limits.tmp_bytes).as_c_str()),
        )?;
    }
    for mount in &plan.mounts {
        bind(&mount.host, &inside(Path::new(&mount.guest)), mount.access == Access::ReadOnly)?;
    }
    let proc = inside(Path::new("/proc"));
    fs_err::create_dir_all(&proc)?;
    rustix::mount::mount(
        "proc",
        &proc,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )?;
    let old = root.join(".old-root");
    fs_err::create_dir_all(&old)?;
    rustix::process::pivot_root(root, &old)?;
    std::env::set_current_dir("/")?;
    rustix::mount::unmount("/.old-root", UnmountFlags::DETACH)?;
    fs_err::remove_dir("/.old-root")?;
    // The root itself read-only: the script writes only where a mount allows it.
    rustix::mount::mount_remount(
        "/",
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        c"",
    )?;
    Ok(())
}

fn set_rlimits(plan: &Plan) -> std::io::Result<()> {
    let l = &plan.limits;
    let set = |resource, value: u64| {
        rustix::process::setrlimit(resource, Rlimit { current: Some(value), maximum: Some(value) })
    };
    set(Resource::As, l.address_space)?;
    // The soft limit sends SIGXCPU; the hard limit a second later SIGKILL.
    rustix::process::setrlimit(
        Resource::Cpu,
        Rlimit { current: Some(l.cpu_seconds), maximum: Some(l.cpu_seconds + 1) },
    )?;
    set(Resource::Fsize, l.file_size)?;
    set(Resource::Nofile, l.open_files)?;
    set(Resource::Core, 0)?;
    Ok(())
}

fn landlock(plan: &Plan) -> Result<(), String> {
    use landlock::{
        ABI, Access as _, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let mut read: Vec<PathBuf> = plan.system.iter().filter(|p| p.exists()).cloned().collect();
    read.extend(["/proc", "/dev/zero", "/dev/random", "/dev/urandom"].map(PathBuf::from));
    let mut write: Vec<PathBuf> = ["/tmp", "/dev/shm", "/dev/null", "/dev/full"].map(PathBuf::from).to_vec();
    for m in &plan.mounts {
        match m.access {
            Access::ReadOnly => read.push(PathBuf::from(&m.guest)),
            Access::ReadWrite => write.push(PathBuf::from(&m.guest)),
        }
    }
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(&read, AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(&write, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| e.to_string())?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(format!("Landlock is only partly enforced ({:?})", status.ruleset));
    }
    Ok(())
}

fn drop_capabilities() -> Result<(), String> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    for cap in CapabilitySet::all().iter() {
        // Capabilities this kernel does not know are not in the bounding set anyway.
        let _ = rustix::thread::remove_capability_from_bounding_set(cap);
    }
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).map_err(|e| e.to_string())?;
    let now = rustix::thread::capabilities(None).map_err(|e| e.to_string())?;
    if !now.effective.is_empty() || !now.permitted.is_empty() {
        return Err(format!("capabilities remain: {now:?}"));
    }
    Ok(())
}

/// Syscalls that fail with EPERM: socket families that reach networks, and everything that
/// could undo or escape the jail.
fn seccomp() -> Result<(), String> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
        TargetArch,
    };
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        return Err("seccomp filters are built for x86_64 and aarch64 only".into());
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let domain = |family: i32| -> Result<SeccompRule, String> {
        let cond = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, family as u64)
            .map_err(|e| e.to_string())?;
        SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
    };
    let families = [libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK, libc::AF_PACKET];
    for call in [libc::SYS_socket, libc::SYS_socketpair] {
        rules.insert(call, families.iter().map(|f| domain(*f)).collect::<Result<_, _>>()?);
    }
    for call in [
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_kexec_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
    ] {
        rules.insert(call, vec![]);
    }
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
            .map_err(|e| e.to_string())?;
    let program: seccompiler::BpfProgram =
        filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
    seccompiler::apply_filter(&program).map_err(|e| e.to_string())
}
