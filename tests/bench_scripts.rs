//! Every script in `benches/` runs at tiny sizes and still parses what it runs: the screen vs
//! faiss comparison (faiss-cpu is in the test virtualenv, so the peer really runs and its
//! results are compared with ours), the encoder and text benches with `SKIP_TORCH=1` (multimat's
//! side measured and tabulated from its JSON; PyTorch is not in the test virtualenv because
//! PyPI's wheel pulls ≈ 4 GB of CUDA libraries), and the scaling model on a real shard. Nothing
//! here asserts a time.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The test virtualenv's Python (`scripts/test.sh` sets MULTIMAT_PYTHON; bootstrap makes it).
fn python() -> PathBuf {
    let p = std::env::var_os("MULTIMAT_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".cache/venv/bin/python"));
    assert!(p.is_file(), "{} is missing: run ./scripts/bootstrap.sh", p.display());
    p
}

/// Run `cmd` in the repository root; its stdout, or a failure with everything it printed.
fn run(mut cmd: Command, what: &str) -> String {
    let o = cmd.current_dir(root()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    out
}

/// The table row of `key` in a whitespace-aligned table: its fields.
fn row<'a>(text: &'a str, first: &str, second: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == first && f[1] == second)
        .unwrap_or_else(|| panic!("no row {first} {second} in:\n{text}"))
}

#[test]
fn screen_vs_faiss_runs_both_and_they_agree() {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("benches/screen_vs_faiss.sh")
        .env("PYTHON", python())
        .env("BIN", env!("CARGO_BIN_EXE_multimat-screen"))
        .args(["--sizes", "200x2000", "--threads", "1", "--peak-n", "256", "--data"])
        .arg(data.path());
    let out = run(cmd, "benches/screen_vs_faiss.sh");
    for tool in ["multimat", "faiss"] {
        let f = row(&out, "200x2000", tool);
        let queries_per_s: f64 = f[4].parse().unwrap();
        assert!(queries_per_s.is_nan() || queries_per_s > 0.0, "{out}");
    }
    let diff: f64 = out
        .split("largest rank-by-rank similarity difference ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no agreement line:\n{out}"));
    assert!(diff < 1e-5, "multimat and faiss disagree on similarities by {diff}:\n{out}");
}

#[test]
fn encoder_bench_runs_every_workload_without_the_torch_peer() {
    let mut cmd = Command::new("bash");
    cmd.arg("benches/encoders_vs_torch.sh")
        .env("SKIP_TORCH", "1")
        .env("PY", python())
        .env("BIN", env!("CARGO_BIN_EXE_multimat"))
        .env("BATCH", "2")
        .env("REPEATS", "1")
        .env("SGEMM", "128")
        .env("THREADS", "2");
    let out = run(cmd, "benches/encoders_vs_torch.sh");
    for w in ["potnet", "cgcnn", "dos", "text", "resnext_small", "full"] {
        let f = row(&out, w, "2");
        let per_s: f64 = f[2].parse().unwrap();
        assert!(per_s > 0.0, "{w}: {out}");
    }
    assert!(out.contains("PyTorch peer skipped"), "{out}");
}

#[test]
fn text_bench_runs_without_the_torch_peer() {
    let mut cmd = Command::new("bash");
    cmd.arg("benches/text_vs_torch.sh")
        .env("SKIP_TORCH", "1")
        .env("PYTHON", python())
        .env("BIN", env!("CARGO_BIN_EXE_multimat"))
        .args(["--minilm-texts", "2", "--base-texts", "1", "--seq-len", "32", "--batch-size", "1"]);
    let out = run(cmd, "benches/text_vs_torch.sh");
    for model in ["MiniLM-L6", "BERT-base"] {
        let line = out.lines().rev().find(|l| l.starts_with(model)).unwrap_or_else(|| panic!("no {model} row:\n{out}"));
        let texts_per_s: f64 = line.split_whitespace().rev().nth(2).unwrap().parse().unwrap();
        assert!(texts_per_s > 0.0, "{line}");
    }
}

#[test]
fn scaling_model_reads_a_real_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shards");
    let cifs = root().join("../shared/data/mp-multimodal/cif");
    let mut ingest = Command::new(env!("CARGO_BIN_EXE_multimat"));
    ingest.args(["ingest", "--quiet", "--limit", "4", "--structures"]).arg(&cifs).arg("--out").arg(&out);
    run(ingest, "ingest");
    let mut cmd = Command::new(python());
    cmd.args(["benches/scaling_model.py", "--params", "1000000", "--shard"]).arg(out.join("shard-r000-00000.h5"));
    let text = run(cmd, "benches/scaling_model.py");
    assert!(text.contains("graph size measured on 4 materials"), "{text}");
    for gpus in [1, 8, 64, 512] {
        assert!(text.lines().any(|l| l.starts_with(&format!("| {gpus} |"))), "no row for {gpus} GPUs:\n{text}");
    }
}

#[test]
fn gpu_check_runs_end_to_end_on_the_simulator_device() {
    let mut cmd = Command::new("bash");
    cmd.arg("scripts/gpu-check.sh")
        .env("GPU_CHECK_DEVICE", "cuda-sim")
        .env("MULTIMAT_BIN", env!("CARGO_BIN_EXE_multimat"))
        .env("MULTIMAT_SCREEN_BIN", env!("CARGO_BIN_EXE_multimat-screen"))
        .env("SCREEN_Q", "20")
        .env("SCREEN_N", "300")
        .env("SCREEN_BENCH_Q", "16")
        .env("SCREEN_BENCH_N", "500")
        .env("SCREEN_BLOCK", "128")
        .env("SCREEN_REPEAT", "1")
        .env("PY", python())
        .env("SKIP_TORCH", "1")
        .env("STEP_BATCH", "8")
        .env("BATCH", "2")
        .env("DOS_BATCH", "2")
        .env("REPEATS", "1")
        .env("THREADS", "2")
        .env("FULL_BATCH", "2")
        .env("WORKLOADS", "potnet cgcnn dos text resnext_small")
        .env("RESNEXT50_BATCH", "2")
        .env("GRID", "8");
    let out = run(cmd, "scripts/gpu-check.sh");
    assert!(out.contains("doctor --device cuda-sim"), "{out}");
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step ") && l.contains("relative difference")).collect();
    assert_eq!(steps.len(), 2, "two compared steps:\n{out}");
    assert!(out.contains("-> identical"), "the device run twice must give the same checkpoint:\n{out}");
    // `multimat bench encoders --device cuda-sim` runs every workload, the ResNeXt included (the
    // four-modality `full` step in its own step 3a, at FULL_BATCH).
    for w in ["potnet", "cgcnn", "dos", "text", "resnext_small", "full"] {
        let f = row(&out, w, "2");
        assert!(f[2].parse::<f64>().unwrap() > 0.0, "{w}: {out}");
    }
    // Step 3b: the ResNeXt-50 step runs on the device (its cuDNN descriptors on the simulator;
    // batch 2 on an 8³ grid: the deepest stages see 1³ volumes, and BN needs two values).
    let f = row(&out, "resnext50", "2");
    assert!(f[2].parse::<f64>().unwrap() > 0.0, "resnext50: {out}");
    // Step 4: the screen's CSV on the device equals the CPU's, and the bench reports its rate.
    assert!(out.contains("screen CSV, 20 queries x 300 candidates, k = 10: cuda-sim and cpu -> identical"), "{out}");
    let result = out.lines().find(|l| l.starts_with("RESULT screen_s=")).unwrap_or_else(|| panic!("no screen bench RESULT line:\n{out}"));
    assert!(result.contains("device=cuda-sim") && result.contains("fraction_of_gemm_peak="), "{result}");
}
