//! The real `slurm/*.sh` scripts submitted with `sbatch` to a single-machine Slurm cluster
//! (`scripts/local-slurm.sh`, started once per test binary by `common/slurm.rs`): a 2-task
//! pre-training job preempted with `scancel --signal=USR1`, requeued by the script, finishes with
//! the same weights as an uninterrupted 2-task job — on the CPU, and with the GPU lines on a
//! second local cluster whose node has fake GPUs (one task per GPU, ranks on `cuda-sim`; a job
//! with fewer GPUs than tasks is refused); a job whose config is wrong fails once, with
//! the reason in its log, instead of being requeued; `slurm/screen.sh` as a 2- and a 3-task job
//! writes the same CSV, byte for byte, as the serial `multimat-screen`; `slurm/finetune-sweep.sh`
//! as a 4-task array (plus the aggregation job it submits) completes the grid and writes the same
//! table as a serial sweep; with its GPU lines (one fake GPU per task, `cuda-sim`) and one task
//! preempted with USR1 to its batch shell and requeued, it writes the serial `cuda-sim` sweep's
//! table, and the stopped run continues from its saved state to the uninterrupted run's result.

mod common;
#[path = "finetune_common/mod.rs"]
mod finetune_common;
#[path = "common/slurm.rs"]
mod slurm;

use common::{bin, write_config};
use slurm::{cluster, gpu_cluster, repo};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Steps of the pre-training jobs. Each step must take long enough that `scancel --signal`
/// (controller → slurmd → step, a few hundred ms) lands mid-run on a quiet machine: with all four
/// modalities a step takes ~0.1–0.2 s there (a crystal + text step took 22 ms, and a 90-step run
/// finished before the signal arrived in a clean CI run).
const STEPS: usize = 45;
/// Steps of the GPU (`cuda-sim`) pre-training jobs: a simulated step is several times slower
/// than a CPU one (≈1 s against 0.1–0.2 s on a quiet machine), so few steps still leave the
/// signal landing mid-run.
const GPU_STEPS: usize = 6;

/// The tiny four-modality pre-training configuration, trained for `steps` steps.
fn pretrain_config(dir: &Path, out: &Path, steps: usize) -> std::path::PathBuf {
    let cfg = write_config(dir, out, &format!("max_steps = {steps}\ncheckpoint_every = 100"));
    let text = std::fs::read_to_string(&cfg).unwrap().replace("epochs = 4", "epochs = 15");
    assert!(text.contains("epochs = 15"), "the shared test configuration changed: {text}");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn metric_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl")).map(|s| s.lines().count()).unwrap_or(0)
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

/// Submits `slurm/pretrain.sh` twice to `slurm` with `sbatch_args` and `env` (besides CONFIG and
/// MULTIMAT): one job runs straight, the other is sent USR1 once it has logged a step, checkpoints,
/// is requeued by the script and resumes. Returns the preempted job's log after checking that it
/// ends bit-identical to the straight one (weights, optimiser state, logged losses).
fn preempt_and_requeue_matches_straight(slurm: &'static slurm::Cluster, steps: usize, timeout: Duration, sbatch_args: &[&str], env: &[(&str, &str)]) -> String {
    let root = tempfile::tempdir().unwrap();
    let script = repo().join("slurm/pretrain.sh");

    // Both jobs run at once (the local node advertises more CPUs, and GPUs, than the two 2-task
    // jobs need).
    let mut jobs = Vec::new();
    for name in ["straight", "preempted"] {
        let work = root.path().join(name);
        let out = work.join("run");
        let cfg = pretrain_config(&work, &out, steps);
        let mut job_env = vec![("CONFIG", cfg.to_str().unwrap()), ("MULTIMAT", bin())];
        job_env.extend_from_slice(env);
        let job = slurm.submit(&script, &work, name, sbatch_args, &job_env);
        jobs.push((job, out));
    }
    let (mut preempted, pre_out) = jobs.pop().unwrap();
    let (mut straight, straight_out) = jobs.pop().unwrap();

    // Preempt once a step is logged (every rank has installed its handlers by then), as
    // Slurm does `--signal=USR1@120` before the time limit.
    let t0 = Instant::now();
    while metric_lines(&pre_out) < 1 {
        let recs = preempted.records();
        assert!(
            t0.elapsed() < timeout && !recs.iter().any(|r| r.state() != "PENDING" && r.state() != "RUNNING"),
            "the pre-training job did not start training\n{}",
            preempted.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    preempted.signal_steps("USR1");

    let s = straight.wait_completed(timeout);
    assert_eq!(s[0].restarts(), 0, "{}", straight.diagnostics());
    let p = preempted.wait_completed(timeout);
    let log = preempted.output();
    assert_eq!(p[0].restarts(), 1, "the preempted job must have been requeued once\n{}", preempted.diagnostics());
    assert!(log.contains("requeueing job"), "the script did not requeue after exit 75\n{log}");
    assert!(log.contains("restart 1"), "the requeued job did not run again\n{log}");

    // The preempted run checkpointed at its stop step, then resumed from it to the end.
    let mut stops: Vec<String> = std::fs::read_dir(pre_out.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && *n != format!("step-{steps:08}.json"))
        .collect();
    stops.sort();
    assert_eq!(stops.len(), 1, "expected exactly one preemption checkpoint before the end, found {stops:?}\n{log}");

    // Same rank count, same data order, same reduction order: the resumed job must be bit-identical
    // to the uninterrupted one, optimiser state included, and must have logged the same losses.
    let final_ckpt = format!("checkpoints/step-{steps:08}.safetensors");
    let a = common::checkpoint_bytes(&straight_out.join(&final_ckpt));
    let b = common::checkpoint_bytes(&pre_out.join(&final_ckpt));
    assert!(a == b, "weights and optimiser state after {steps} steps differ between the preempted+requeued job and the uninterrupted one\n{log}");
    assert_eq!(losses(&pre_out), losses(&straight_out), "the requeued job must log the same losses");
    log
}

#[test]
fn pretrain_job_preempted_with_usr1_is_requeued_and_ends_with_the_uninterrupted_weights() {
    // The time-outs only guard against a hang: on 2 busy cores (the whole suite, or other builds)
    // a job that takes 20 s alone has taken over 150 s.
    let log = preempt_and_requeue_matches_straight(cluster(), STEPS, Duration::from_secs(600), &[], &[]);
    assert!(log.contains("device cpu (0 GPUs per node)"), "a job without GPUs trains on the CPU\n{log}");
}

/// The GPU lines of `slurm/pretrain.sh` on a node with fake GPUs (gres): one task per GPU
/// (`--gpus-per-node=2 --ntasks-per-node=2`), the ranks on `cuda-sim` (the fake GPUs cannot run
/// CUDA), so the step's collectives take the device path (`dist::DeviceComm`). Preempted and
/// requeued, the job ends bit-identical to an uninterrupted one.
#[test]
fn gpu_pretrain_job_preempted_with_usr1_is_requeued_and_ends_with_the_uninterrupted_weights() {
    let log = preempt_and_requeue_matches_straight(
        gpu_cluster(),
        GPU_STEPS,
        Duration::from_secs(600),
        &["--gpus-per-node=2", "--ntasks-per-node=2"],
        &[("DEVICE", "cuda-sim")],
    );
    assert!(log.contains("device cuda-sim (2 GPUs per node)"), "the job did not see its 2 GPUs\n{log}");
}

/// A job that asks for fewer GPUs than tasks per node is refused before it trains (and is not
/// requeued), saying what to request.
#[test]
fn gpu_pretrain_job_with_more_tasks_than_gpus_fails_with_the_reason() {
    let slurm = gpu_cluster();
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("short");
    let cfg = pretrain_config(&work, &work.join("run"), GPU_STEPS);
    let mut job = slurm.submit(
        &repo().join("slurm/pretrain.sh"),
        &work,
        "short-of-gpus",
        &["--gpus-per-node=1", "--ntasks-per-node=2"],
        &[("CONFIG", cfg.to_str().unwrap()), ("MULTIMAT", bin())],
    );
    let recs = job.wait(Duration::from_secs(60));
    assert_eq!(recs[0].exit_code(), Some(2), "{}", job.diagnostics());
    assert_eq!(recs[0].restarts(), 0, "{}", job.diagnostics());
    let log = job.output();
    assert!(log.contains("2 tasks per node but 1 GPUs"), "{log}");
}

#[test]
fn pretrain_job_with_a_bad_config_fails_once_with_the_reason_in_its_log() {
    let slurm = cluster();
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("bad");
    let cfg = pretrain_config(&work, &work.join("run"), STEPS);
    let text = std::fs::read_to_string(&cfg).unwrap().replace("batch_size = 24", "batch_size = 1000");
    std::fs::write(&cfg, text).unwrap();
    let mut job = slurm.submit(
        &repo().join("slurm/pretrain.sh"),
        &work,
        "bad-config",
        &[],
        &[("CONFIG", cfg.to_str().unwrap()), ("MULTIMAT", bin())],
    );
    let recs = job.wait(Duration::from_secs(120));
    // An error that would recur must not be requeued (only exit 75 is); the job fails with it.
    assert_eq!(recs[0].state(), "FAILED", "{}", job.diagnostics());
    assert_ne!(recs[0].exit_code(), Some(0), "{}", job.diagnostics());
    assert_eq!(recs[0].restarts(), 0, "{}", job.diagnostics());
    let log = job.output();
    assert!(log.contains("fewer than one batch"), "the job log must say why it failed:\n{log}");
    assert!(!log.contains("requeueing"), "{log}");
}

const SCREEN: &str = env!("CARGO_BIN_EXE_multimat-screen");

fn gen_embeddings(path: &Path, n: usize, seed: u64, prefix: &str) {
    // Lattice vectors with exact duplicate rows under other ids: exact similarity ties, which
    // straddle the ranks' candidate ranges and must be broken by id, not by rank.
    let out = Command::new(SCREEN)
        .args(["gen-random", "--out", path.to_str().unwrap(), "-n", &n.to_string(), "--dim", "8"])
        .args(["--seed", &seed.to_string(), "--kind", "lattice", "--duplicates", "0.2", "--id-prefix", prefix])
        .output()
        .unwrap();
    assert!(out.status.success(), "gen-random: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn screen_job_on_two_and_three_tasks_writes_the_serial_csv() {
    let slurm = cluster();
    let root = tempfile::tempdir().unwrap();
    let (q, c) = (root.path().join("q.h5"), root.path().join("c.h5"));
    gen_embeddings(&q, 40, 11, "q-");
    gen_embeddings(&c, 3000, 12, "mp-");
    let serial = root.path().join("serial.csv");
    let out = Command::new(SCREEN)
        .args(["--queries", q.to_str().unwrap(), "--candidates", c.to_str().unwrap(), "-k", "12", "-q"])
        .args(["--out", serial.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "serial screen: {}", String::from_utf8_lossy(&out.stderr));
    let expected = std::fs::read(&serial).unwrap();
    assert_eq!(String::from_utf8_lossy(&expected).lines().count(), 1 + 40 * 12);

    // The script's own task count (2), and 3 tasks from the command line; both at once.
    let mut jobs = Vec::new();
    for (tasks, sbatch_args) in [(2usize, &[][..]), (3, &["--ntasks=3"][..])] {
        let work = root.path().join(format!("tasks{tasks}"));
        std::fs::create_dir_all(&work).unwrap();
        let csv = work.join("hits.csv");
        let job = slurm.submit(
            &repo().join("slurm/screen.sh"),
            &work,
            &format!("screen{tasks}"),
            sbatch_args,
            &[
                ("QUERIES", q.to_str().unwrap()),
                ("CANDIDATES", c.to_str().unwrap()),
                ("K", "12"),
                ("OUT", csv.to_str().unwrap()),
                ("SCREEN", SCREEN),
            ],
        );
        jobs.push((tasks, job, csv));
    }
    for (tasks, mut job, csv) in jobs {
        job.wait_completed(Duration::from_secs(120));
        // Rank 0 reports the MPI world it merged: proof that srun gave MPICH one world of
        // `tasks` ranks, not `tasks` independent serial screens writing the same file.
        let log = job.output();
        assert!(log.contains(&format!("{tasks} ranks: local screen seconds per rank")), "not a {tasks}-rank MPI world:\n{log}");
        let got = std::fs::read(&csv).unwrap_or_else(|e| panic!("{}: {e}\n{}", csv.display(), job.diagnostics()));
        assert!(got == expected, "{tasks}-task screen job's CSV differs from the serial one\n{log}");
    }
}

#[test]
fn finetune_sweep_array_of_four_tasks_aggregates_into_the_serial_table() {
    let slurm = cluster();
    let root = tempfile::tempdir().unwrap();
    // 2 variants × 2 learning rates × 2 seeds of tiny fine-tuning runs (tests/finetune_common).
    let serial_cfg = finetune_common::write_sweep(&root.path().join("serial"), &root.path().join("serial/out"));
    let work = root.path().join("array");
    let array_cfg = finetune_common::write_sweep(&work, &work.join("out"));
    let mut array = slurm.submit(
        &repo().join("slurm/finetune-sweep.sh"),
        &work,
        "sweep",
        &[],
        &[("CONFIG", array_cfg.to_str().unwrap()), ("MULTIMAT", finetune_common::bin())],
    );
    // The serial reference runs while the array does.
    let out = std::process::Command::new(finetune_common::bin()).args(["sweep", "--config"]).arg(&serial_cfg).output().unwrap();
    assert!(out.status.success(), "serial sweep: {}", String::from_utf8_lossy(&out.stderr));

    let tasks = array.wait_completed(Duration::from_secs(150));
    assert_eq!(tasks.len(), 4, "the script asks for a 4-task array\n{}", array.diagnostics());
    let log = array.output();
    // "[sweep…] done <run id> (…)": 8 lines naming 8 distinct runs.
    let done: Vec<&str> = log.lines().filter_map(|l| l.split("] done ").nth(1)?.split(' ').next()).collect();
    let distinct: std::collections::BTreeSet<&str> = done.iter().copied().collect();
    assert!(done.len() == 8 && distinct.len() == 8, "each of the 8 runs exactly once over the array: {done:?}\n{log}");

    // Task 0 submitted the aggregation job (afterany on the array) and logged
    // "submitted aggregation job <id> (…)". It must run after the array and succeed.
    let agg_id = log
        .lines()
        .filter_map(|l| l.split("submitted aggregation job ").nth(1)?.split_whitespace().next())
        .find(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no aggregation job id in the array's log\n{log}"))
        .to_string();
    let mut agg = slurm.job(&agg_id, &work);
    agg.wait_completed(Duration::from_secs(60));

    for f in ["table.csv", "table.md"] {
        let a = std::fs::read_to_string(root.path().join("serial/out").join(f)).unwrap();
        let b = std::fs::read_to_string(work.join("out").join(f)).unwrap_or_else(|e| panic!("{f}: {e}\n{log}"));
        assert_eq!(a, b, "{f} of the Slurm array differs from the serial sweep's");
    }
}

/// `result.json` of a sweep run without the wall-clock time.
fn result_without_time(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("result.json")).unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("wall_s");
    v
}

/// The GPU lines of `slurm/finetune-sweep.sh` on the node with fake GPUs: a 2-task array with one
/// GPU per task (`--gpus=1`), the runs on `cuda-sim`. Task 0 is sent USR1 (to its batch shell, as
/// `--signal=B:USR1@120` does) as soon as its first run has started: that run saves its state
/// after its current step, the task starts no further run, exits 75 and the script requeues it;
/// the requeued task resumes the run, then runs the rest of its share. The table equals the serial
/// `multimat sweep --device cuda-sim` table byte for byte (one device, deterministic runs), and
/// the stopped run's result.json equals the uninterrupted serial run's.
#[test]
fn gpu_sweep_array_with_a_preempted_task_writes_the_serial_cuda_sim_table() {
    let slurm = gpu_cluster();
    let root = tempfile::tempdir().unwrap();
    let serial_cfg = finetune_common::write_sweep(&root.path().join("serial"), &root.path().join("serial/out"));
    let work = root.path().join("array");
    let array_cfg = finetune_common::write_sweep(&work, &work.join("out"));
    // Batches of 4 (27 steps over 3 epochs, ≈1 s per run on a quiet machine instead of ≈0.3 s),
    // so the signal, which reaches the run through slurmctld, slurmd and the batch shell, lands
    // while the first run trains.
    let longer = ["optim.batch_size=4".to_string(), "optim.epochs=3".to_string()];
    let plan = multimat::sweep::plan(&multimat::sweep::SweepConfig::load(&array_cfg, &longer).unwrap()).unwrap();
    // Task t of 2 runs plan.runs[k] for k mod 2 = t: task 0 starts with runs[0], then runs[2].
    let (first, second) = (&plan.runs[0], &plan.runs[2]);
    let mut array = slurm.submit(
        &repo().join("slurm/finetune-sweep.sh"),
        &work,
        "gpu-sweep",
        &["--array=0-1", "--gpus=1"],
        &[("CONFIG", array_cfg.to_str().unwrap()), ("MULTIMAT", finetune_common::bin()), ("DEVICE", "cuda-sim"), ("AGGREGATE_JOB", "0"), ("EXTRA_ARGS", "--set optim.batch_size=4 --set optim.epochs=3")],
    );
    // The sweep's handler is installed before its first run writes run.json; the run then polls
    // the flag after every step, so a signal from here on stops it after its first step at the latest.
    let t0 = Instant::now();
    while !first.dir.join("run.json").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120) && !array.records().iter().any(|r| r.state() != "PENDING" && r.state() != "RUNNING"),
            "array task 0 did not start its first run\n{}",
            array.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    array.signal_batch("USR1", Some(0));
    // The serial reference on the same device runs while the array does.
    let out = Command::new(finetune_common::bin()).args(["sweep", "--device", "cuda-sim", "--set", &longer[0], "--set", &longer[1], "--config"])
        .arg(&serial_cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "serial cuda-sim sweep: {}", String::from_utf8_lossy(&out.stderr));

    let tasks = array.wait_completed(Duration::from_secs(400));
    let log = array.output();
    let task0 = tasks.iter().find(|r| r.get("ArrayTaskId") == "0").unwrap_or_else(|| panic!("no array task 0\n{}", array.diagnostics()));
    assert_eq!(task0.restarts(), 1, "the preempted task must have been requeued once\n{}", array.diagnostics());
    assert!(log.contains("device cuda-sim (1 GPUs)"), "each task sees its one GPU and trains on cuda-sim\n{log}");
    assert!(log.contains(&format!("] stopped {}", first.id)) && log.contains("state saved"), "the first run did not save its state\n{log}");
    assert!(log.contains("requeueing job"), "the script did not requeue after exit 75\n{log}");
    assert!(log.contains("resuming from"), "the requeued task did not continue the stopped run from its state\n{log}");
    // Started twice (stopped, resumed), and the next run of the task only once: after the requeue.
    let starts = |id: &str| log.lines().filter(|l| l.contains(&format!("] run {id} "))).count();
    assert_eq!((starts(&first.id), starts(&second.id)), (2, 1), "no run may start after the signal\n{log}");
    assert!(!first.dir.join("resume").exists(), "the saved state is removed once the run is complete");

    for f in ["table.csv", "table.md"] {
        let a = std::fs::read_to_string(root.path().join("serial/out").join(f)).unwrap();
        let b = std::fs::read_to_string(work.join("out").join(f)).unwrap_or_else(|e| panic!("{f}: {e}\n{log}"));
        assert_eq!(a, b, "{f} of the GPU array differs from the serial cuda-sim sweep's");
    }
    let serial_first = root.path().join("serial/out/runs").join(&first.id);
    assert_eq!(result_without_time(&first.dir), result_without_time(&serial_first), "the preempted+requeued run ends differently from the uninterrupted one");
    let run_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(first.dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["device"], "cuda-sim", "run.json records the device");
}
