//! The real `multimat` binary under MPICH's `mpirun -n 2` and `-n 3`: every rank must see the
//! right world size (a binary linked to another MPI would see N copies of rank 0 of 1) and the
//! collectives must return the values every rank can predict.

use std::process::Command;

fn mpirun() -> Option<String> {
    for c in ["mpirun.mpich", "mpiexec.mpich", "mpirun"] {
        if Command::new("which").arg(c).output().map(|o| o.status.success()).unwrap_or(false) {
            return Some(c.to_string());
        }
    }
    None
}

#[test]
fn doctor_under_mpirun_sees_the_whole_world() {
    let Some(mpirun) = mpirun() else {
        panic!("mpirun (MPICH) not found: run ./scripts/bootstrap.sh");
    };
    for n in [2usize, 3] {
        let out = Command::new(&mpirun)
            .args(["-n", &n.to_string(), env!("CARGO_BIN_EXE_multimat"), "doctor", "--json"])
            .output()
            .expect("running mpirun");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "mpirun -n {n} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let mut ranks: Vec<usize> = Vec::new();
        for line in stdout.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["world_size"], n, "rank reports the wrong world size: {line}");
            assert_eq!(v["collectives_ok"], true, "{line}");
            assert_eq!(v["launcher"], "pmi", "{line}");
            ranks.push(v["rank"].as_u64().unwrap() as usize);
        }
        ranks.sort();
        assert_eq!(ranks, (0..n).collect::<Vec<_>>());
    }
}

#[test]
fn doctor_without_launcher_is_rank_zero_of_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_multimat")).args(["doctor", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["world_size"], 1);
    assert_eq!(v["rank"], 0);
}

#[test]
fn doctor_says_nccl_is_not_used_on_cpu_and_cuda_sim_and_passes_there() {
    // NCCL serves only real GPUs; elsewhere the collectives go through MPI, and doctor says so
    // (under mpirun too, where a user checks a multi-rank job) without failing.
    let Some(mpirun) = mpirun() else {
        panic!("mpirun (MPICH) not found: run ./scripts/bootstrap.sh");
    };
    for device in ["cpu", "cuda-sim"] {
        let out = Command::new(&mpirun)
            .args(["-n", "2", env!("CARGO_BIN_EXE_multimat"), "doctor", "--device", device])
            .output()
            .expect("running mpirun");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "doctor --device {device} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let note = format!("NCCL: not used on {device}: collectives between ranks go through MPI");
        assert_eq!(stdout.lines().filter(|l| *l == note).count(), 2, "every rank prints the NCCL note: {stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}

/// Marks a rank of `gradient_buckets_reduce_only_when_finished`: this test binary run by mpirun.
const BUCKET_RANK: &str = "MULTIMAT_TEST_BUCKET_RANK";

/// Three parameters: two with gradients on `cuda-sim` (the device bucket) and one kept on the
/// host (the host bucket), as an encoder left on the CPU keeps them.
struct Buckets(Vec<multimat::engine::Param>);

impl multimat::engine::Module for Buckets {
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut multimat::engine::Param)) {
        self.0.iter_mut().for_each(f);
    }
}

/// One rank's side: a bucket started with `DeviceComm::start_grads_all_reduce` leaves the
/// gradients as they were and reduces nothing until `finish_grads_all_reduce`, which writes the
/// sums of the values packed at the start — whatever happened to the gradients in between —
/// bit for bit equal to `Dist::all_reduce_sum_f32` of the same values.
fn bucket_rank() {
    use multimat::dist::{DeviceComm, Dist};
    use multimat::engine::{Device, Param, Storage, Tensor};
    let dist = Dist::init().expect("MPI");
    let (rank, world) = (dist.rank(), dist.world_size());
    assert!(world > 1, "run under mpirun");
    // Values whose sums round (a missing or repeated term shows in the bits).
    let local = |p: usize, n: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + p * 3) as f32 * 0.37 + rank as f32 * 1.1) / 3.0).collect() };
    let shapes: [(&str, Vec<usize>, Device); 3] = [
        ("a", vec![5, 3], Device::CudaSim),
        ("b", vec![7], Device::Cpu),
        ("c", vec![4], Device::CudaSim),
    ];
    let mut module = Buckets(Vec::new());
    for (p, (name, shape, device)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let mut param = Param::new(*name, Tensor::zeros(shape).to_device(*device).unwrap(), false);
        param.grad = Tensor::from_vec(shape, local(p, n)).to_device(*device).unwrap();
        module.0.push(param);
    }
    let grads = |m: &Buckets| -> Vec<Vec<f32>> { m.0.iter().map(|p| p.grad.to_host().unwrap()).collect() };
    let before = grads(&module);
    // The synchronous reduction of the same values: the device bucket (a, c) and the host one (b).
    let mut device_flat: Vec<f32> = [&before[0][..], &before[2][..]].concat();
    let mut host_flat = before[1].clone();
    dist.all_reduce_sum_f32(&mut host_flat);
    dist.all_reduce_sum_f32(&mut device_flat);
    let expected = vec![device_flat[..15].to_vec(), host_flat, device_flat[15..].to_vec()];

    let comm = DeviceComm::new(&dist, Device::CudaSim).unwrap();
    let calls = |d: &Dist| d.comm_snapshot().all_reduce_f32.calls;
    let (calls0, bytes0) = (calls(&dist), dist.comm_snapshot().all_reduce_f32.bytes);
    let pending = comm.start_grads_all_reduce(&mut module).unwrap();
    assert_eq!(calls(&dist), calls0, "rank {rank}: starting a bucket reduced something");
    assert_eq!(grads(&module), before, "rank {rank}: starting a bucket changed the gradients");
    // Whatever the gradients hold now, the sums of the values packed at the start come back.
    for p in &mut module.0 {
        let shape = p.grad.shape.clone();
        let n = p.grad.numel();
        p.grad = Tensor::from_vec(&shape, vec![f32::NAN; n]).to_device(p.grad.device()).unwrap();
    }
    comm.finish_grads_all_reduce(pending, &mut module).unwrap();
    let after = grads(&module);
    for (k, (got, want)) in after.iter().zip(&expected).enumerate() {
        let same = got.iter().zip(want).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "rank {rank}, parameter {k}: {got:?} after the finish, the synchronous all-reduce gives {want:?}");
        assert_ne!(got, &before[k], "rank {rank}, parameter {k}: not reduced");
    }
    assert!(matches!(module.0[1].grad.storage, Storage::Cpu(_)), "the host gradient moved");
    let snap = dist.comm_snapshot().all_reduce_f32;
    assert_eq!((snap.calls - calls0, snap.bytes - bytes0), (2, 26 * 4), "rank {rank}: one host and one device all-reduce of 26 floats");
    println!("bucket rank {rank} of {world} ok");
}

/// The deferred gradient buckets of the GPU pre-training step, on the host path (`cuda-sim`,
/// where the MPI reduction runs at the finish), under `mpirun -n 2` and `-n 3`: this test binary
/// runs itself as the ranks.
#[test]
fn gradient_buckets_reduce_only_when_finished() {
    if std::env::var_os(BUCKET_RANK).is_some() {
        return bucket_rank();
    }
    let Some(mpirun) = mpirun() else {
        panic!("mpirun (MPICH) not found: run ./scripts/bootstrap.sh");
    };
    let me = std::env::current_exe().unwrap();
    for n in [2usize, 3] {
        let out = Command::new(&mpirun)
            .args(["-n", &n.to_string()])
            .arg(&me)
            .args(["--exact", "gradient_buckets_reduce_only_when_finished", "--nocapture", "--test-threads=1"])
            .env(BUCKET_RANK, "1")
            .output()
            .expect("running mpirun");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "mpirun -n {n} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        for r in 0..n {
            assert!(stdout.contains(&format!("bucket rank {r} of {n} ok")), "rank {r} of {n} did not finish: {stdout}");
        }
    }
}
