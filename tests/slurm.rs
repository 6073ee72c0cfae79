//! A sweep on a real Slurm: a single-node cluster (munged, slurmctld and slurmd from Debian's
//! packages, a minimal slurm.conf written here, everything under a temporary directory) runs a
//! 2 tasks × 2 seeds batch as a job array; one array task is killed mid-run and requeued, and
//! resumes its run from the journal with the budget counted across both attempts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, fixtures, stderr};
use loop_runner::journal::{self, Event};

/// The daemons, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(which(program));
        cmd.env("SLURM_CONF", self.conf());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A program on PATH or in /usr/sbin (daemons live there, which a user's PATH may leave out).
fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is missing: this test needs Debian's slurm-wlm and munge (.ci/run installs them)"
            )
        })
}

fn start_cluster() -> Cluster {
    for program in ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "squeue"] {
        which(program);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["state", "spool", "log", "munge"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let socket = d.join("munge/munge.sock");
    let munge = Command::new(which("munged"))
        .arg("--foreground")
        .arg("--force")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", d.join("munge/munged.pid").display()))
        .arg(format!("--log-file={}", d.join("log/munged.log").display()))
        .arg(format!("--seed-file={}", d.join("munge/munged.seed").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("munged starts");
    let (ctl, node) = (free_port(), free_port());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::fs::write(
        d.join("slurm.conf"),
        format!(
            "ClusterName=looprunner\nSlurmctldHost=localhost\nSlurmUser=root\nSlurmdUser=root\n\
             AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={socket}\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldPort={ctl}\nSlurmdPort={node}\n\
             SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\n\
             JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\nMpiDefault=none\n\
             NodeName=lrnode NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
             PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            socket = socket.display(),
            d = d.display(),
        ),
    )
    .unwrap();
    let mut cluster = Cluster { dir, daemons: vec![munge] };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "munged did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let conf = cluster.conf();
    for (program, extra) in [("slurmctld", vec!["-D", "-i"]), ("slurmd", vec!["-D", "-N", "lrnode"])] {
        let child = cluster
            .cmd(program)
            .args(&extra)
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        cluster.daemons.push(child);
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = cluster.run("sinfo", &["-h", "-o", "%t"]);
        if String::from_utf8_lossy(&o.stdout).trim() == "idle" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never became idle: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            std::fs::read_to_string(cluster.dir.path().join("log/slurmctld.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster
}

fn events(run: &Path) -> Vec<Event> {
    journal::read(&run.join("journal.jsonl"))
        .map(|v| v.into_iter().map(|e| e.event).collect())
        .unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_sweep_runs_as_a_job_array_and_a_killed_task_resumes_when_requeued() {
    let cluster = start_cluster();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("cluster.toml");
    std::fs::write(
        &file,
        format!(
            "tasks = [\"{0}/penguins/task.toml\", \"{0}/breast_cancer/task.toml\"]\nseeds = [1, 2]\n\
             budget = \"40s\"\niterations = 60\nvalidation = \"holdout\"\n",
            fixtures().display()
        ),
    )
    .unwrap();
    let runs = work.path().join("runs");
    let submitted = Instant::now();
    let o = bin()
        .args(["sweep", "--slurm", "--max-parallel", "2", "--runs-dir"])
        .arg(&runs)
        .arg(&file)
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let job = String::from_utf8_lossy(&o.stdout).lines().last().unwrap().trim().to_string();
    assert!(job.parse::<u64>().is_ok(), "sbatch's job id: {job}");
    let manifest = std::fs::canonicalize(&runs).unwrap().join("cluster-manifest.json");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let dirs: Vec<PathBuf> =
        m["runs"].as_array().unwrap().iter().map(|r| PathBuf::from(r["run_dir"].as_str().unwrap())).collect();

    // Task 0 is killed once its run has finished an iteration, then requeued.
    wait_for("run 0's first iteration", Duration::from_secs(120), || {
        events(&dirs[0]).iter().any(|e| matches!(e, Event::IterationFinished { .. }))
    });
    let first_iteration = submitted.elapsed();
    let task = format!("{job}_0");
    let o = cluster.run("scancel", &["--signal=KILL", &task]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for("task 0 to end", Duration::from_secs(60), || {
        let o = cluster.run("squeue", &["-h", "-j", &task, "-o", "%T"]);
        String::from_utf8_lossy(&o.stdout).trim().is_empty()
    });
    assert!(
        !events(&dirs[0]).iter().any(|e| matches!(e, Event::RunFinished { .. })),
        "killed before it finished"
    );
    let o = cluster.run("scontrol", &["requeue", &task]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Slurm holds a requeued job back for a while; start it when a slot is free.
    let o = cluster.run("scontrol", &["update", &format!("jobid={task}"), "StartTime=now"]);
    assert!(o.status.success(), "{}", stderr(&o));

    wait_for("every run to finish", Duration::from_secs(420), || {
        dirs.iter().all(|d| events(d).iter().any(|e| matches!(e, Event::RunFinished { .. })))
    });
    for run in &dirs {
        assert!(run.join("report/summary.json").is_file(), "{}", run.display());
    }
    let sessions: Vec<f64> = events(&dirs[0])
        .iter()
        .filter_map(|e| match e {
            Event::Session { elapsed_before_seconds, .. } => Some(*elapsed_before_seconds),
            _ => None,
        })
        .collect();
    assert_eq!(sessions.len(), 2, "started, killed, resumed after the requeue");
    assert!(sessions[1] > 0.0, "the budget counts the first attempt: {sessions:?}");
    for run in &dirs[1..] {
        let n = events(run).iter().filter(|e| matches!(e, Event::Session { .. })).count();
        assert_eq!(n, 1, "{}: ran once", run.display());
    }
    let out = runs.join("cluster-slurm");
    assert!(out.join(format!("{job}_0.out")).is_file(), "the array task's log");

    let o = bin().arg("sweep-report").arg(&manifest).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("4 finished, 0 unfinished, 0 pending."), "{md}");
    eprintln!(
        "submit to run 0's first iteration: {:.1} s; whole batch with a kill and requeue: {:.1} s",
        first_iteration.as_secs_f64(),
        submitted.elapsed().as_secs_f64()
    );
}
