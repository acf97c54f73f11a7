//! A test harness for submitting the real `slurm/*.sh` scripts to a single-machine Slurm cluster.
//!
//! The cluster is the project's own (`scripts/local-slurm.sh start`): its own slurm.conf, state
//! directory and ports, so it runs beside any other Slurm on the host. It is started (or found
//! running) once per test binary; every client command gets `SLURM_CONF` explicitly, and `sbatch`
//! passes it on to the job (`--export=ALL` is Slurm's default), so `srun`/`scontrol` inside the
//! scripts talk to the same cluster. If the cluster cannot be started the calling test fails with
//! the script's output — the machine and CI have everything needed, so a skip would hide a fault.
//! [`gpu_cluster`] is a second one whose node advertises fake GPUs (gres), for the GPU job lines.
//!
//! Jobs are isolated per test: each runs in its own work directory (a tempdir; slurmd runs as
//! root and can read it) under a unique job name. A [`Job`] that is dropped unfinished (the test
//! failed) is cancelled. Failure messages carry `scontrol show job` and every file the job wrote
//! in its work directory (the scripts' `--output` files).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running cluster: where its configuration lives.
pub struct Cluster {
    pub conf: PathBuf,
    pub state: PathBuf,
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Start the project's local Slurm cluster once per test binary (idempotent: a running one with
/// the same configuration is reused; `local-slurm.sh` takes ≈1 s then).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let state = std::env::var_os("MULTIMAT_SLURM_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/multimat-local-slurm"));
        start(&state, 0)
    })
}

/// Fake GPUs of [`gpu_cluster`]'s node.
pub const FAKE_GPUS: usize = 4;

/// The local cluster with [`FAKE_GPUS`] fake GPUs (`LOCAL_SLURM_GPUS`): a second cluster beside
/// [`cluster`] (own state directory and ports), so neither restarts the other's daemons.
pub fn gpu_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let state = std::env::var_os("MULTIMAT_SLURM_GPU_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/multimat-local-slurm-gpu{FAKE_GPUS}")));
        start(&state, FAKE_GPUS)
    })
}

fn start(state: &Path, gpus: usize) -> Cluster {
    // The CPU and GPU clusters share the host's munged: start them one after the other (the
    // script also takes a host-wide lock for munged, for starts from different processes).
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let script = repo().join("scripts/local-slurm.sh");
    let t0 = Instant::now();
    let mut cmd = Command::new(&script);
    cmd.arg("start").env("MULTIMAT_SLURM_STATE", state).env("LOCAL_SLURM_GPUS", gpus.to_string());
    if gpus > 0 {
        // The GPU cluster keeps its default ports (6927/6928) even where the CPU one was moved.
        cmd.env_remove("MULTIMAT_SLURM_PORT");
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "could not start the local Slurm cluster with `LOCAL_SLURM_GPUS={gpus} {} start` (it needs root and Debian's \
         slurmctld, slurmd, slurm-client and munge: run ./scripts/bootstrap.sh --with-slurm):\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("[slurm harness] cluster with {gpus} fake GPUs up in {:.1} s", t0.elapsed().as_secs_f64());
    Cluster { conf: state.join("etc/slurm.conf"), state: state.to_path_buf() }
}

impl Cluster {
    /// A Slurm client command (`sbatch`, `scontrol`, …) talking to this cluster.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// `sbatch --parsable` the script from `workdir` (which becomes `SLURM_SUBMIT_DIR`) with extra
    /// sbatch options and environment variables; the job name is made unique per test process.
    pub fn submit(&self, script: &Path, workdir: &Path, name: &str, sbatch_args: &[&str], env: &[(&str, &str)]) -> Job<'_> {
        let job_name = format!("mmtest-{}-{name}", std::process::id());
        let mut c = self.cmd("sbatch");
        c.current_dir(workdir).args(["--parsable", "--job-name", &job_name]).args(sbatch_args).arg(script);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap_or_else(|e| panic!("cannot run sbatch: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sbatch {} failed: {stdout}{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // --parsable prints "JOBID" or "JOBID;CLUSTER".
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        assert!(id.parse::<u64>().is_ok(), "sbatch printed no job id: {stdout:?}");
        Job { cluster: self, id, name: job_name, workdir: workdir.to_path_buf(), finished: false }
    }
}

impl Cluster {
    /// A handle on a job submitted some other way (e.g. by a job script), by id.
    pub fn job(&self, id: &str, workdir: &Path) -> Job<'_> {
        Job { cluster: self, id: id.to_string(), name: String::new(), workdir: workdir.to_path_buf(), finished: false }
    }
}

/// A submitted job (or job array: `scontrol` lists one record per array task).
pub struct Job<'a> {
    cluster: &'a Cluster,
    pub id: String,
    pub name: String,
    pub workdir: PathBuf,
    finished: bool,
}

/// One `scontrol show job -o` record, as key → value.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub fields: std::collections::BTreeMap<String, String>,
}

impl JobRecord {
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }
    pub fn state(&self) -> &str {
        self.get("JobState")
    }
    /// The batch script's exit code ("0:0" → 0).
    pub fn exit_code(&self) -> Option<i32> {
        self.get("ExitCode").split(':').next()?.parse().ok()
    }
    pub fn restarts(&self) -> u32 {
        self.get("Restarts").parse().unwrap_or(0)
    }
    fn is_finished(&self) -> bool {
        matches!(
            self.state(),
            "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY" | "BOOT_FAIL" | "DEADLINE" | "PREEMPTED"
        )
    }
}

/// Parse `scontrol show job -o` output: one line per job, `Key=Value` pairs separated by spaces.
/// Values with spaces occur only in free-text fields we do not read, which then parse into junk
/// keys harmlessly.
pub fn parse_records(text: &str) -> Vec<JobRecord> {
    text.lines()
        .filter(|l| l.contains("JobId="))
        .map(|l| JobRecord {
            fields: l
                .split_whitespace()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect(),
        })
        .collect()
}

impl Job<'_> {
    /// Every record of this job (several for an array), or empty if Slurm has forgotten it.
    pub fn records(&self) -> Vec<JobRecord> {
        let out = self.cluster.run("scontrol", &["show", "job", "-o", &self.id]);
        parse_records(&String::from_utf8_lossy(&out.stdout))
    }

    /// Poll until every record is in a final state (requeued jobs pass through PENDING and are
    /// not final); fails the test with [`Job::diagnostics`] after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Vec<JobRecord> {
        let t0 = Instant::now();
        loop {
            let recs = self.records();
            if !recs.is_empty() && recs.iter().all(JobRecord::is_finished) {
                self.finished = true;
                return recs;
            }
            if t0.elapsed() > timeout {
                panic!("job {} ({}) did not finish within {:?}\n{}", self.id, self.name, timeout, self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Wait, then require every record COMPLETED with exit code 0.
    pub fn wait_completed(&mut self, timeout: Duration) -> Vec<JobRecord> {
        let recs = self.wait(timeout);
        for r in &recs {
            assert!(
                r.state() == "COMPLETED" && r.exit_code() == Some(0),
                "job {} ended {} with exit code {}\n{}",
                r.get("JobId"),
                r.state(),
                r.get("ExitCode"),
                self.diagnostics()
            );
        }
        recs
    }

    /// Send a signal to the job's steps (not the batch shell), as `--signal=USR1@N` does.
    pub fn signal_steps(&self, signal: &str) {
        let out = self.cluster.run("scancel", &["--signal", signal, &self.id]);
        assert!(
            out.status.success(),
            "scancel --signal={signal} {} failed: {}\n{}",
            self.id,
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
    }

    /// Send a signal to the batch shell only (`scancel --batch`), of array task `array_task` or of
    /// the whole job, as `--signal=B:USR1@N` does: for a script that runs its program itself
    /// rather than in a job step, and passes the signal on.
    pub fn signal_batch(&self, signal: &str, array_task: Option<usize>) {
        let target = match array_task {
            Some(t) => format!("{}_{t}", self.id),
            None => self.id.clone(),
        };
        let out = self.cluster.run("scancel", &["--batch", "--signal", signal, &target]);
        assert!(
            out.status.success(),
            "scancel --batch --signal={signal} {target} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
    }

    /// `scontrol show job` and every regular file directly in the work directory (the job's
    /// `--output`/`--error` files, logs), for failure messages.
    pub fn diagnostics(&self) -> String {
        let out = self.cluster.run("scontrol", &["show", "job", &self.id]);
        let mut s = format!(
            "---- scontrol show job {}\n{}{}",
            self.id,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.workdir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            if matches!(f.extension().and_then(|e| e.to_str()), Some("out" | "err" | "log")) {
                s += &format!("---- {}\n{}\n", f.display(), std::fs::read_to_string(&f).unwrap_or_else(|e| e.to_string()));
            }
        }
        s += &format!("---- cluster logs: {}\n", self.cluster.state.join("log").display());
        s
    }

    /// The text of all `*.out` files in the work directory, concatenated in name order.
    pub fn output(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.workdir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("out"))
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
    }
}

impl Drop for Job<'_> {
    /// A job the test did not see finish (it panicked) is cancelled so it cannot outlive the test.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.cluster.cmd("scancel").arg(&self.id).output();
        }
    }
}
