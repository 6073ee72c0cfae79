//! Adversarial tests: scripts that try to escape the sandbox or exhaust the host. Each one would
//! fail if the protection it names broke.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{bin, run_json, sandbox_run, sandbox_run_in};
use loop_runner::sandbox::{Exit, LimitKind};

const HOST_SECRET: &str = "hunter2-do-not-leak";

#[test]
fn host_files_outside_mounts_are_unreachable() {
    let run = sandbox_run(
        r#"
import os
for p in ["/etc/passwd", "/work/../etc/passwd", "../../../../etc/passwd", "/proc/self/environ",
          "/usr/local/lib/../../../etc/passwd", "/etc/hostname"]:
    try:
        with open(p) as f:
            print("READ", p, f.read(64))
    except Exception as e:
        print("DENIED", p, type(e).__name__)
for d in ["/", "/etc", "/proc", "/work/.."]:
    try:
        print("LISTED", d, os.listdir(d))
    except Exception as e:
        print("DENIED", d, type(e).__name__)
"#,
        &[],
    );
    let out = run.stdout();
    assert!(run.outcome.success(), "{:?}", run.outcome);
    assert!(!out.contains("READ"), "a host file was read:\n{out}");
    assert!(!out.contains("root:"), "{out}");
    assert!(!out.contains("LISTED /work/.."), "{out}");
    assert_eq!(out.matches("DENIED").count(), 10, "{out}");
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
# Links the guest makes itself, absolute (refused outright) and relative (made, but dead ends).
for target, link in [("/etc/passwd", "/work/abs_link"), ("../../../../../../etc/passwd", "/work/rel_link")]:
    try:
        os.symlink(target, link)
        with open(link) as f:
            print("READ", link, f.read())
    except Exception as e:
        print("DENIED", link, type(e).__name__)
"#;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("main.py"), script).unwrap();
    let mut cmd = bin();
    cmd.args(["sandbox", "run", "--json", "--work"])
        .arg(work.path())
        .arg("--mount")
        .arg(format!("{}:/data", data.path().display()))
        .arg(work.path().join("main.py"));
    let run = run_json(cmd);
    let out = run.stdout();
    assert!(!out.contains("READ"), "{out}");
    assert!(!out.contains(HOST_SECRET) && !out.contains("root:"), "{out}");
    assert_eq!(out.matches("DENIED").count(), 4, "{out}\n{}", run.outcome.stderr.text);
}

#[test]
fn read_only_mounts_cannot_be_changed() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("train.csv"), "a,b\n1,2\n").unwrap();
    let mode_before = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(data.path().join("train.csv")).unwrap().permissions().mode()
    };
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
    "stdlib": lambda: open("/usr/local/lib/python315.zip", "ab").write(b"x"),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print("ALLOWED", name)
    except Exception as e:
        print("DENIED", name, type(e).__name__)
# Even if a link existed, writing through it must not reach the host file.
try:
    open("/work/linked.csv", "w").write("tampered")
except Exception:
    pass
"#;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("main.py"), script).unwrap();
    let mut cmd = bin();
    cmd.args(["sandbox", "run", "--json", "--work"])
        .arg(work.path())
        .arg("--mount")
        .arg(format!("{}:/data:ro", data.path().display()))
        .arg(work.path().join("main.py"));
    let run = run_json(cmd);
    let out = run.stdout();
    assert!(!out.contains("ALLOWED"), "{out}\n{}", run.outcome.stderr.text);
    assert_eq!(out.matches("DENIED").count(), 9, "{out}");
    assert_eq!(std::fs::read_to_string(data.path().join("train.csv")).unwrap(), "a,b\n1,2\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.path().join("train.csv")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, mode_before & 0o777, "chmod reached the host");
    let names: Vec<_> = std::fs::read_dir(data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["train.csv"]);
}

#[test]
fn no_network_of_any_kind() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        r#"
import socket, urllib.request
attempts = {{
    "socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
    "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
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
    let run = sandbox_run(&script, &["--timeout", "30s"]);
    let out = run.stdout();
    assert!(!out.contains("ALLOWED"), "{out}\n{}", run.outcome.stderr.text);
    assert_eq!(out.matches("DENIED").count(), 6, "{out}\n{}", run.outcome.stderr.text);
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the guest reached the host's loopback: {other:?}"),
    }
}

#[test]
fn no_host_environment_and_no_processes() {
    let work = tempfile::tempdir().unwrap();
    let script = r#"
import os, subprocess
print("ENV", sorted(os.environ.items()))
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
"#;
    std::fs::write(work.path().join("main.py"), script).unwrap();
    let mut cmd = bin();
    cmd.env("LOOP_TEST_SECRET", HOST_SECRET).env("OPENAI_API_KEY", HOST_SECRET);
    cmd.args(["sandbox", "run", "--json", "--work"]).arg(work.path()).arg(work.path().join("main.py"));
    let run = run_json(cmd);
    let out = run.stdout();
    assert!(!out.contains(HOST_SECRET), "{out}");
    assert!(!out.contains("LOOP_TEST_SECRET") && !out.contains("OPENAI_API_KEY"), "{out}");
    assert!(!out.contains("ALLOWED"), "{out}\n{}", run.outcome.stderr.text);
    assert_eq!(out.matches("DENIED").count(), 4, "{out}\n{}", run.outcome.stderr.text);
}

#[test]
fn deadline_stops_a_spin_loop_and_a_sleep() {
    for script in ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"] {
        let run = sandbox_run(script, &["--timeout", "2s"]);
        let o = &run.outcome;
        assert_eq!(o.exit, Exit::Killed, "{script}: {o:?}");
        assert_eq!(o.limit, Some(LimitKind::WallTime), "{script}");
        assert!(
            o.wall >= Duration::from_millis(1900) && o.wall < Duration::from_secs(5),
            "{script}: {:?}",
            o.wall
        );
        assert_eq!(run.output.status.code(), Some(1));
    }
}

#[test]
fn memory_cap_stops_a_memory_bomb() {
    let run = sandbox_run(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n",
        &["--memory", "256MiB"],
    );
    let o = &run.outcome;
    assert_eq!(o.exit, Exit::Code(1), "{o:?}");
    assert_eq!(o.limit, Some(LimitKind::Memory));
    assert!(o.stderr.text.contains("MemoryError"), "{}", o.stderr.text);
    assert!(o.peak_memory_bytes <= 256 << 20, "{}", o.peak_memory_bytes);
    assert!(o.peak_memory_bytes > 128 << 20, "{}", o.peak_memory_bytes);
}

#[test]
fn output_flood_is_truncated_and_counted() {
    let run = sandbox_run(
        "import sys\nsys.stdout.write('x' * 10_000_000)\nsys.stderr.write('e' * 300_000)\nprint('done', file=sys.stderr)\n",
        &["--output-cap", "64KiB"],
    );
    let o = &run.outcome;
    assert!(o.success(), "a flood is not a failure: {o:?}");
    assert_eq!(o.stdout.text.len(), 65536);
    assert_eq!(o.stdout.dropped_bytes, 10_000_000 - 65536);
    assert_eq!(o.stderr.dropped_bytes, 300_000 + 5 - 65536);
    assert!(o.limits_hit.contains(&LimitKind::Stdout) && o.limits_hit.contains(&LimitKind::Stderr));
}

#[test]
fn open_files_are_capped() {
    let run = sandbox_run(
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
    assert!(out.starts_with("STOPPED"), "{out}\n{}", run.outcome.stderr.text);
    let n: usize = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((90..=100).contains(&n), "{out}");
    assert!(out.ends_with("EMFILE"), "{out}");
    assert!(run.outcome.limits_hit.contains(&LimitKind::OpenFiles));
}

#[test]
fn disk_writes_are_capped() {
    let work = tempfile::tempdir().unwrap();
    let run = sandbox_run_in(
        work.path(),
        r#"
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
"#,
        &["--disk", "10MiB"],
    );
    let out = run.stdout();
    assert!(!out.contains("ALLOWED"), "{out}\n{}", run.outcome.stderr.text);
    // One file filling up is refused as too large; the next file finds the budget spent.
    assert!(out.contains("STOPPED fill_work EFBIG") || out.contains("STOPPED fill_work ENOSPC"), "{out}");
    assert!(out.contains("STOPPED fill_tmp ENOSPC"), "{out}");
    assert!(
        out.contains("STOPPED sparse_seek EFBIG") && out.contains("STOPPED sparse_truncate EFBIG"),
        "{out}"
    );
    let on_disk: u64 = walk_sizes(work.path());
    assert!(on_disk <= (10 << 20) + 4096, "{on_disk} bytes on the host");
    assert!(run.outcome.limits_hit.contains(&LimitKind::Disk));
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
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("secret.txt"), HOST_SECRET).unwrap();
    let work = tempfile::tempdir().unwrap();
    // A relative path from the work dir to the secret: the guest cannot follow it, but a careless
    // host that follows links while reading outputs would.
    let depth = work.path().components().count();
    let to_secret = format!("{}{}", "../".repeat(depth), secret_dir.path().join("secret.txt").display());
    let script = format!(
        "import os\nos.symlink('../../../../../../etc/passwd', '/work/passwd')\nos.symlink('{to_secret}', '/work/secret')\nos.mkdir('/work/sub')\nos.symlink('../secret', '/work/sub/chain')\nopen('/work/real.txt', 'w').write('ok')\n"
    );
    let run = sandbox_run_in(work.path(), &script, &[]);
    let o = &run.outcome;
    assert!(o.success(), "{o:?}");
    assert!(std::fs::symlink_metadata(work.path().join("secret")).unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read_to_string(work.path().join("secret")).unwrap(),
        HOST_SECRET,
        "the planted link is live on the host"
    );
    let paths: Vec<&str> = o.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/work/main.py", "/work/real.txt"]);
    let skipped: Vec<&str> = o.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, ["/work/passwd", "/work/secret", "/work/sub/chain"]);
    assert!(o.skipped.iter().all(|s| s.reason.contains("symbolic link")));
}
