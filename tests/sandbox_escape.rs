//! Adversarial tests: scripts that try to escape the sandbox or exhaust the host, run against
//! both backends (WASI and the native process jail). Each would fail if the protection it names
//! broke. The last ones are specific to native processes (forks, sessions, raw sockets, mounts,
//! ptrace, /proc).

mod common;

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use common::{BACKENDS, bin, run_json, sandbox_run_on, sandbox_run_with};
use loop_runner::sandbox::{Exit, LimitKind};

const HOST_SECRET: &str = "hunter2-do-not-leak";

#[test]
fn host_files_outside_mounts_are_unreachable() {
    for backend in BACKENDS {
        let run = sandbox_run_on(
            backend,
            r#"
import os
for p in ["/etc/passwd", "/work/../etc/passwd", "../../../../etc/passwd", "/etc/shadow",
          "/usr/local/lib/../../../etc/passwd", "/etc/hostname", "/root/.bashrc", "/home"]:
    try:
        with open(p) as f:
            print("READ", p, f.read(64))
    except Exception as e:
        print("DENIED", p, type(e).__name__)
for d in ["/etc", "/root", "/home", "/work/.."]:
    try:
        print("LISTED", d, sorted(os.listdir(d)))
    except Exception as e:
        print("DENIED", d, type(e).__name__)
"#,
            &[],
        );
        let out = run.stdout();
        assert!(run.outcome.success(), "{backend}: {:?}", run.outcome);
        assert!(!out.contains("READ"), "{backend}: a host file was read:\n{out}");
        assert!(!out.contains("root:x:"), "{backend}: {out}");
        // What a listing may show: nothing of the host's /etc, /root or /home.
        for line in out.lines().filter(|l| l.starts_with("LISTED")) {
            assert!(
                !line.contains("passwd")
                    && !line.contains(".bashrc")
                    && !line.contains("'root'")
                    && !line.contains("'home'"),
                "{backend}: {line}"
            );
        }
    }
}

#[test]
fn symlinks_do_not_lead_out_of_mounts() {
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("secret.txt"), HOST_SECRET).unwrap();
    let data = tempfile::tempdir().unwrap();
    // Links the host itself left in a mounted dir, pointing outside it.
    std::os::unix::fs::symlink(secret_dir.path().join("secret.txt"), data.path().join("file_link")).unwrap();
    std::os::unix::fs::symlink(secret_dir.path(), data.path().join("dir_link")).unwrap();
    let script = r#"
import os
for p in ["/data/file_link", "/data/dir_link/secret.txt"]:
    try:
        with open(p) as f:
            print("READ", p, f.read())
    except Exception as e:
        print("DENIED", p, type(e).__name__)
# Links the guest makes itself, absolute and relative.
for target, link in [("/etc/passwd", "/work/abs_link"), ("../../../../../../etc/passwd", "/work/rel_link")]:
    try:
        os.symlink(target, link)
        with open(link) as f:
            print("READ", link, f.read())
    except Exception as e:
        print("DENIED", link, type(e).__name__)
"#;
    for backend in BACKENDS {
        let work = tempfile::tempdir().unwrap();
        let mount = format!("{}:/data", data.path().display());
        let run = sandbox_run_with(backend, work.path(), script, &["--mount", &mount]);
        let out = run.stdout();
        assert!(!out.contains("READ"), "{backend}: {out}");
        assert!(!out.contains(HOST_SECRET) && !out.contains("root:"), "{backend}: {out}");
        assert_eq!(out.matches("DENIED").count(), 4, "{backend}: {out}\n{}", run.outcome.stderr.text);
    }
}

#[test]
fn read_only_mounts_cannot_be_changed() {
    let script = r#"
import os
try:
    os.chmod("/data/train.csv", 0o777)
except Exception:
    pass
attempts = {
    "overwrite": lambda: open("/data/train.csv", "w").write("x"),
    "append": lambda: open("/data/train.csv", "a").write("x"),
    "create": lambda: open("/data/new.txt", "w").write("x"),
    "remove": lambda: os.remove("/data/train.csv"),
    "rename": lambda: os.rename("/data/train.csv", "/data/moved.csv"),
    "mkdir": lambda: os.mkdir("/data/sub"),
    "hardlink_out": lambda: os.link("/data/train.csv", "/work/linked.csv"),
    "move_out": lambda: os.rename("/data/train.csv", "/work/stolen.csv"),
    "utime": lambda: os.utime("/data/train.csv", (0, 0)),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print("ALLOWED", name)
    except Exception as e:
        print("DENIED", name, type(e).__name__)
try:
    open("/work/linked.csv", "w").write("tampered")
except Exception:
    pass
"#;
    for backend in BACKENDS {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("train.csv"), "a,b\n1,2\n").unwrap();
        let meta_before = std::fs::metadata(data.path().join("train.csv")).unwrap();
        let work = tempfile::tempdir().unwrap();
        let mount = format!("{}:/data:ro", data.path().display());
        let run = sandbox_run_with(backend, work.path(), script, &["--mount", &mount]);
        let out = run.stdout();
        assert!(!out.contains("ALLOWED"), "{backend}: {out}\n{}", run.outcome.stderr.text);
        assert_eq!(out.matches("DENIED").count(), 9, "{backend}: {out}");
        assert_eq!(std::fs::read_to_string(data.path().join("train.csv")).unwrap(), "a,b\n1,2\n");
        let meta = std::fs::metadata(data.path().join("train.csv")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.mode(), meta.mtime()),
            (meta_before.mode(), meta_before.mtime()),
            "{backend}: metadata changed"
        );
        let names: Vec<_> = std::fs::read_dir(data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["train.csv"], "{backend}");
    }
}

#[test]
fn no_network_of_any_kind() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let script = format!(
        r#"
import socket, urllib.request
def udp_send():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"leak", ("127.0.0.1", {udp_port}))
attempts = {{
    "socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
    "udp": udp_send,
    "ipv6": lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),
    "connect": lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2),
    "dns": lambda: socket.getaddrinfo("localhost", 80),
    "dns_remote": lambda: socket.gethostbyname("pypi.org"),
    "urlopen": lambda: urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=2),
}}
for name, attempt in attempts.items():
    try:
        attempt()
        print("ALLOWED", name)
    except BaseException as e:
        print("DENIED", name, type(e).__name__)
"#
    );
    for backend in BACKENDS {
        let run = sandbox_run_on(backend, &script, &["--timeout", "30s"]);
        let out = run.stdout();
        assert!(!out.contains("ALLOWED"), "{backend}: {out}\n{}", run.outcome.stderr.text);
        assert_eq!(out.matches("DENIED").count(), 7, "{backend}: {out}\n{}", run.outcome.stderr.text);
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{backend}: the guest reached the host's loopback: {other:?}"),
        }
        let mut buf = [0u8; 16];
        assert!(udp.recv(&mut buf).is_err(), "{backend}: a UDP datagram reached the host");
    }
}

#[test]
fn no_host_environment() {
    for backend in BACKENDS {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("main.py"), "import os\nprint('ENV', sorted(os.environ.items()))\nprint(open('/proc/self/environ', 'rb').read() if os.path.exists('/proc/self/environ') else b'')\n").unwrap();
        let mut cmd = bin();
        cmd.env("LOOP_TEST_SECRET", HOST_SECRET).env("OPENAI_API_KEY", HOST_SECRET);
        cmd.args(["sandbox", "run", "--json", "--sandbox", backend, "--work"])
            .arg(work.path())
            .arg(work.path().join("main.py"));
        let run = run_json(cmd);
        let out = run.stdout();
        assert!(run.outcome.success(), "{backend}: {}", run.outcome.stderr.text);
        assert!(!out.contains(HOST_SECRET), "{backend}: {out}");
        assert!(!out.contains("LOOP_TEST_SECRET") && !out.contains("OPENAI_API_KEY"), "{backend}: {out}");
    }
}

#[test]
fn the_wasi_guest_cannot_start_processes() {
    let run = sandbox_run_on(
        "wasi",
        r#"
import os, subprocess
for name, attempt in {
    "subprocess": lambda: subprocess.run(["/bin/sh", "-c", "echo hi"]),
    "system": lambda: os.system("echo hi") == 0 or (_ for _ in ()).throw(OSError("failed")),
    "fork": lambda: os.fork(),
    "exec": lambda: os.execv("/bin/sh", ["sh"]),
}.items():
    try:
        attempt()
        print("ALLOWED", name)
    except BaseException as e:
        print("DENIED", name, type(e).__name__)
"#,
        &[],
    );
    assert!(!run.stdout().contains("ALLOWED"), "{}", run.stdout());
    assert_eq!(run.stdout().matches("DENIED").count(), 4, "{}", run.stdout());
}

#[test]
fn deadline_stops_a_spin_loop_and_a_sleep() {
    for backend in BACKENDS {
        for script in ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"] {
            let run = sandbox_run_on(backend, script, &["--timeout", "2s"]);
            let o = &run.outcome;
            assert_eq!(o.exit, Exit::Killed, "{backend} {script}: {o:?}");
            assert_eq!(o.limit, Some(LimitKind::WallTime), "{backend} {script}");
            assert!(
                o.wall >= Duration::from_millis(1900) && o.wall < Duration::from_secs(5),
                "{backend} {script}: {:?}",
                o.wall
            );
            assert_eq!(run.output.status.code(), Some(1));
        }
    }
}

#[test]
fn memory_cap_stops_a_memory_bomb() {
    for backend in BACKENDS {
        let run = sandbox_run_on(
            backend,
            "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n",
            &["--memory", "256MiB"],
        );
        let o = &run.outcome;
        assert_eq!(o.exit, Exit::Code(1), "{backend}: {o:?}");
        assert_eq!(o.limit, Some(LimitKind::Memory), "{backend}");
        assert!(o.stderr.text.contains("MemoryError"), "{backend}: {}", o.stderr.text);
        assert!(o.peak_memory_bytes <= 256 << 20, "{backend}: {}", o.peak_memory_bytes);
        assert!(o.peak_memory_bytes > 100 << 20, "{backend}: {}", o.peak_memory_bytes);
    }
}

#[test]
fn output_flood_is_truncated_and_counted() {
    for backend in BACKENDS {
        let run = sandbox_run_on(
            backend,
            "import sys\nsys.stdout.write('x' * 10_000_000)\nsys.stderr.write('e' * 300_000)\nprint('done', file=sys.stderr)\n",
            &["--output-cap", "64KiB"],
        );
        let o = &run.outcome;
        assert!(o.success(), "{backend}: a flood is not a failure: {o:?}");
        assert_eq!(o.stdout.text.len(), 65536, "{backend}");
        assert_eq!(o.stdout.dropped_bytes, 10_000_000 - 65536, "{backend}");
        assert_eq!(o.stderr.dropped_bytes, 300_000 + 5 - 65536, "{backend}");
        assert!(
            o.limits_hit.contains(&LimitKind::Stdout) && o.limits_hit.contains(&LimitKind::Stderr),
            "{backend}"
        );
    }
}

#[test]
fn open_files_are_capped() {
    for backend in BACKENDS {
        let run = sandbox_run_on(
            backend,
            r#"
import errno
files = []
try:
    for i in range(5000):
        files.append(open(f"/tmp/f{i}", "w"))
    print("OPENED", len(files))
except OSError as e:
    print("STOPPED", len(files), errno.errorcode[e.errno])
"#,
            &["--open-files", "100"],
        );
        let out = run.stdout().trim();
        assert!(out.starts_with("STOPPED"), "{backend}: {out}\n{}", run.outcome.stderr.text);
        let n: usize = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        // The WASI cap counts the script's own descriptors exactly; a native process also holds
        // the interpreter's few dozen, so its cap is the request plus that allowance.
        let expected = if backend == "wasi" { 90..=100 } else { 90..=170 };
        assert!(expected.contains(&n), "{backend}: {out}");
        assert!(out.ends_with("EMFILE"), "{backend}: {out}");
    }
}

#[test]
fn disk_writes_are_capped() {
    let script = r#"
import errno, os
def attempt(name, f):
    try:
        f()
        print("ALLOWED", name)
    except OSError as e:
        print("STOPPED", name, errno.errorcode[e.errno])
def fill(path):
    with open(path, "wb") as f:
        for _ in range(1000):
            f.write(b"x" * (1 << 20))
attempt("fill_work", lambda: fill("/work/big.bin"))
attempt("fill_tmp", lambda: fill("/tmp/big.bin"))
def sparse_seek():
    with open("/work/sparse.bin", "wb") as f:
        f.seek(1 << 40)
        f.write(b"x")
def sparse_truncate():
    with open("/work/sparse2.bin", "wb") as f:
        f.truncate(1 << 40)
attempt("sparse_seek", sparse_seek)
attempt("sparse_truncate", sparse_truncate)
"#;
    for backend in BACKENDS {
        let work = tempfile::tempdir().unwrap();
        let run = sandbox_run_with(backend, work.path(), script, &["--disk", "10MiB"]);
        let out = run.stdout();
        assert!(!out.contains("ALLOWED"), "{backend}: {out}\n{}", run.outcome.stderr.text);
        assert!(
            out.contains("STOPPED fill_work EFBIG") || out.contains("STOPPED fill_work ENOSPC"),
            "{backend}: {out}"
        );
        assert!(
            out.contains("STOPPED fill_tmp ENOSPC") || out.contains("STOPPED fill_tmp EFBIG"),
            "{backend}: {out}"
        );
        assert!(
            out.contains("STOPPED sparse_seek EFBIG") && out.contains("STOPPED sparse_truncate EFBIG"),
            "{backend}: {out}"
        );
        let on_disk = walk_sizes(work.path());
        assert!(on_disk <= (10 << 20) + 4096, "{backend}: {on_disk} bytes on the host");
        assert!(run.outcome.limits_hit.contains(&LimitKind::Disk), "{backend}: {:?}", run.outcome.limits_hit);
    }
}

fn walk_sizes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() { walk_sizes(&e.path()) } else { meta.len() }
        })
        .sum()
}

#[test]
fn planted_links_in_the_work_dir_are_not_followed_by_the_host() {
    for backend in BACKENDS {
        let secret_dir = tempfile::tempdir().unwrap();
        std::fs::write(secret_dir.path().join("secret.txt"), HOST_SECRET).unwrap();
        let work = tempfile::tempdir().unwrap();
        // A relative path from the work dir to the secret: the guest cannot follow it, but a
        // careless host that follows links while reading outputs would.
        let depth = work.path().components().count();
        let to_secret = format!("{}{}", "../".repeat(depth), secret_dir.path().join("secret.txt").display());
        let script = format!(
            "import os\nos.symlink('../../../../../../etc/passwd', '/work/passwd')\nos.symlink('{to_secret}', '/work/secret')\nos.mkdir('/work/sub')\nos.symlink('../secret', '/work/sub/chain')\nopen('/work/real.txt', 'w').write('ok')\n"
        );
        let run = sandbox_run_with(backend, work.path(), &script, &[]);
        let o = &run.outcome;
        assert!(o.success(), "{backend}: {o:?}");
        assert_eq!(
            std::fs::read_to_string(work.path().join("secret")).unwrap(),
            HOST_SECRET,
            "the planted link is live on the host"
        );
        let paths: Vec<&str> = o.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/work/main.py", "/work/real.txt"], "{backend}");
        let skipped: Vec<&str> = o.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["/work/passwd", "/work/secret", "/work/sub/chain"], "{backend}");
    }
}

// Native processes only.

/// Processes whose command line holds `marker`, anywhere on the host.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok().map(|c| (e.file_name(), c)))
        .filter(|(_, c)| String::from_utf8_lossy(c).contains(marker))
        .map(|(pid, _)| pid.to_string_lossy().to_string())
        .collect()
}

#[test]
fn a_fork_bomb_is_bounded_and_setsid_escapees_die_with_the_script() {
    let marker = format!("escapee-{}", std::process::id());
    let script = format!(
        r#"
import os, sys, time
# Daemons that leave the session and process group, and would outlive a plain killpg.
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
        os._exit(0)
forks = 0
try:
    while forks < 100000:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        forks += 1
    print("UNBOUNDED", forks)
except OSError as e:
    print("BOUNDED", forks, e.errno)
"#
    );
    let run = sandbox_run_on("process", &script, &["--timeout", "60s"]);
    let out = run.stdout().trim().to_string();
    assert!(out.starts_with("BOUNDED"), "{out}\n{}", run.outcome.stderr.text);
    let forks: u32 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(forks < 600, "{out}");
    // The script returned: every process of its namespace is gone, escapees included.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_with(&marker), Vec::<String>::new(), "escapees survived");
}

#[test]
fn raw_sockets_mounts_ptrace_and_the_runners_proc_are_out_of_reach() {
    // A process holding a secret in its environment, standing in for the runner.
    let mut holder =
        std::process::Command::new("sleep").arg("30").env("LOOP_TEST_SECRET", HOST_SECRET).spawn().unwrap();
    let pid = holder.id();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("x.csv"), "a\n").unwrap();
    let script = format!(
        r#"
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def check(name, f):
    try:
        result = f()
        print("ALLOWED", name, result)
    except BaseException as e:
        print("DENIED", name, type(e).__name__, e)
def raw():
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def packet():
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
def netlink():
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
def remount():
    # MS_REMOUNT | MS_BIND: make the read-only mount writable again.
    if libc.mount(None, b"/data", None, 32 | 4096, None) != 0:
        raise OSError(ctypes.get_errno(), "mount failed")
    open("/data/x.csv", "w").write("tampered")
def ptrace():
    # PTRACE_ATTACH to the runner's pid and to the script's parent.
    for target in ({pid}, os.getppid()):
        if libc.ptrace(16, target, None, None) == 0:
            return target
    raise OSError(ctypes.get_errno(), "ptrace failed")
def environ():
    return open("/proc/{pid}/environ", "rb").read()
def unshare():
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare failed")
for name, f in [("raw", raw), ("packet", packet), ("netlink", netlink), ("remount", remount),
                ("ptrace", ptrace), ("environ", environ), ("unshare", unshare)]:
    check(name, f)
"#
    );
    let work = tempfile::tempdir().unwrap();
    let mount = format!("{}:/data:ro", data.path().display());
    let run = sandbox_run_with("process", work.path(), &script, &["--mount", &mount]);
    let _ = holder.kill();
    let _ = holder.wait();
    let out = run.stdout();
    assert!(!out.contains("ALLOWED"), "{out}\n{}", run.outcome.stderr.text);
    assert_eq!(out.matches("DENIED").count(), 7, "{out}\n{}", run.outcome.stderr.text);
    assert!(!out.contains(HOST_SECRET));
    assert_eq!(std::fs::read_to_string(data.path().join("x.csv")).unwrap(), "a\n");
}

#[test]
fn a_missing_layer_fails_closed_unless_waived() {
    // As an unprivileged user the pids cgroup cannot be created: every other layer still works.
    let available =
        std::process::Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        available && rustix::process::getuid().is_root(),
        "this test needs root and setpriv (util-linux)"
    );
    let work = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(work.path().join("main.py"), "print('ran')\n").unwrap();
    std::fs::set_permissions(work.path().join("main.py"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The build directory may sit where the unprivileged user cannot reach (e.g. under /root).
    let binary = home.path().join("loop-runner");
    std::fs::copy(env!("CARGO_BIN_EXE_loop-runner"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&binary)
            .env_clear()
            .env("HOME", home.path())
            .env("LOOP_RUNNER_HOME", home.path())
            .args(["sandbox", "run", "--sandbox", "process", "--python", "/usr/bin/python3", "--work"])
            .arg(work.path().join("w"))
            .args(extra)
            .arg(work.path().join("main.py"))
            .output()
            .unwrap()
    };
    std::fs::create_dir(work.path().join("w")).unwrap();
    std::fs::set_permissions(work.path().join("w"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = run(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{err}");
    assert!(
        err.contains("sandbox layer `cgroup-pids` is unavailable")
            && err.contains("--allow-weaker-sandbox cgroup-pids"),
        "{err}"
    );
    let waived = run(&["--allow-weaker-sandbox", "cgroup-pids"]);
    assert!(waived.status.success(), "{}", String::from_utf8_lossy(&waived.stderr));
    assert!(String::from_utf8_lossy(&waived.stdout).contains("ran"));
}
