//! `multimat doctor`: what this process sees — launcher, rank/world/local rank, MPI collectives
//! checked end to end — and, with `--device cuda[:N]` or `--device cuda-sim`, the GPU stack
//! (device, driver, NVRTC, cuBLAS, cuDNN) with every kernel compiled and every GPU op run once against
//! its CPU reference. On `cuda` NCCL is checked too (a one-rank all-reduce of f32 and f64 on the
//! GPU); on `cpu` and `cuda-sim` it says NCCL is not used there (collectives go through MPI). Run it under the same launcher as the real job (`srun multimat doctor
//! --device cuda`, `mpirun -n 4 multimat doctor`) before spending GPU hours.

use crate::dist::Dist;
use crate::engine::backend::{self, Device, GpuKind};
use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  multimat doctor\n  multimat doctor --device cuda-sim")]
pub struct Args {
    /// Print one JSON line per rank instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also check a GPU device: `cuda`, `cuda:N` (a real GPU) or `cuda-sim` (the GPU code run on
    /// the CPU). Prints one line per op with its largest error and tolerance; exits non-zero on
    /// any failure.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

/// Versions and the kernel compilation of a GPU device; `Err` when the device cannot be used.
fn gpu_report(device: Device) -> Result<Vec<String>> {
    let g = backend::gpu(device)?;
    let mut lines = Vec::new();
    match &g.kind {
        GpuKind::Sim(_) => lines.push(
            "cuda-sim: kernels/*.cu compiled as C++ and executed on the CPU; GEMMs by the CPU GEMM from cuBLAS descriptors; \
             3-D convolutions by the CPU conv3d from cuDNN descriptors"
                .into(),
        ),
        GpuKind::Cuda(c) => {
            let (maj, min) = c.compute_capability;
            lines.push(format!("GPU {device}: {} (sm_{maj}{min})", c.name()?));
            if let Some((dm, dn)) = backend::cuda::driver_version() {
                lines.push(format!("CUDA driver API {dm}.{dn}"));
            }
            lines.push(format!("cuBLAS {}", c.cublas_version()?));
            lines.push(match c.cudnn_version() {
                Some(v) => format!("cuDNN {v} (3-D convolutions, deterministic algorithms only)"),
                None => "cuDNN: libcudnn.so.9 not found (the charge-density ResNeXt needs it: put nvidia-cudnn-cu13's lib directory on LD_LIBRARY_PATH)".into(),
            });
        }
    }
    // Compile every kernel family for the device (a real GPU), or for the two CI targets on the
    // simulator when NVRTC is at hand (it needs no GPU).
    match backend::nvrtc::load() {
        Ok(nvrtc) => {
            lines.push(nvrtc.describe());
            let archs: Vec<String> = match &g.kind {
                GpuKind::Cuda(c) => vec![format!("sm_{}{}", c.compute_capability.0, c.compute_capability.1)],
                GpuKind::Sim(_) => backend::nvrtc::CI_ARCHS.iter().map(|a| a.to_string()).collect(),
            };
            for arch in &archs {
                let compiled = nvrtc.compile_all(arch)?;
                lines.push(format!("compiled {} kernel files for {arch}", compiled.len()));
            }
        }
        Err(e) if matches!(g.kind, GpuKind::Sim(_)) => lines.push(format!("NVRTC not available ({e:#}); kernels not compiled for a GPU")),
        Err(e) => return Err(e),
    }
    Ok(lines)
}

/// The NCCL line of `device`, and whether it reports a failure. On `cuda` NCCL, when it loads, is
/// checked on the GPU (a missing NCCL is no failure: one rank per job does not need it); on `cpu`
/// and `cuda-sim` the collectives between ranks go through MPI.
fn nccl_report(device: Device) -> (String, bool) {
    if !matches!(device, Device::Cuda(_)) {
        return (format!("NCCL: not used on {device}: collectives between ranks go through MPI"), false);
    }
    match crate::dist::nccl_version() {
        Err(e) => (format!("NCCL: {e:#} (needed only with several ranks on GPUs)"), false),
        Ok(v) => match crate::dist::nccl_self_check(device) {
            Ok(line) => (format!("{line} (collectives between GPU ranks)"), false),
            Err(e) => (format!("FAIL NCCL {v} on {device}: {e:#}"), true),
        },
    }
}

/// Runs every GPU op check on `device`, printing one line each; the number of failures.
fn check_ops(device: Device) -> usize {
    let mut failed = 0;
    for (name, r) in crate::engine::gpu::checks::run_all(device) {
        match r {
            Ok(c) => {
                let verdict = if c.passed() { "ok" } else { "FAIL" };
                failed += !c.passed() as usize;
                println!("  {verdict:4} {name}: max |Δ| {:.3e}, worst Δ/tolerance {:.3} (tolerance {:.0e} + {:.0e}·|ref|)", c.max_abs_err, c.worst_ratio, c.abs, c.rel);
            }
            Err(e) => {
                failed += 1;
                println!("  FAIL {name}: {e:#}");
            }
        }
    }
    failed
}

pub fn run(args: Args) -> Result<()> {
    let dist = Dist::init()?;
    let (rank, size) = (dist.rank(), dist.world_size());

    // Collectives, checked with values every rank can predict.
    let mut sum = vec![rank as f32 + 1.0; 3];
    dist.all_reduce_sum_f32(&mut sum);
    let expect_sum = (size * (size + 1) / 2) as f32;
    let gathered = dist.all_gather_f32(&vec![rank as f32; rank + 1]);
    let expect_gather: Vec<f32> = (0..size).flat_map(|r| vec![r as f32; r + 1]).collect();
    let max = dist.all_reduce_max_i64(rank as i64);
    let hosts = dist.all_gather_bytes(crate::dist::hostname().as_bytes());
    let collectives_ok = sum.iter().all(|&s| s == expect_sum) && gathered == expect_gather && max == size as i64 - 1;

    let line = serde_json::json!({
        "rank": rank, "world_size": size, "local_rank": dist.topology.local_rank,
        "launcher": dist.launcher, "mpi_compiled": cfg!(feature = "mpi"),
        "cuda_compiled": true, "cuda_driver": backend::cuda::driver_present(),
        "collectives_ok": collectives_ok, "host_memory": crate::engine::host_memory::describe(),
        "hosts": hosts.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect::<Vec<_>>(),
    });
    if args.json {
        println!("{line}");
    } else {
        println!(
            "rank {rank}/{size} (local {}) via {}; MPI {}; collectives {}",
            dist.topology.local_rank,
            dist.launcher,
            if cfg!(feature = "mpi") { "compiled in" } else { "not compiled" },
            if collectives_ok { "ok" } else { "WRONG" }
        );
        println!("host memory: {}", crate::engine::host_memory::describe());
    }
    if !collectives_ok {
        bail!("collectives returned wrong values on rank {rank}");
    }
    let (nccl_line, nccl_failed) = nccl_report(args.device);
    if args.device.is_gpu() {
        for line in gpu_report(args.device)? {
            println!("{line}");
        }
        println!("{nccl_line}");
        println!("GPU ops on {} vs the CPU reference:", args.device);
        let failed = check_ops(args.device);
        if failed > 0 {
            bail!("{failed} GPU op check(s) failed on {}", args.device);
        }
    } else if !args.json {
        println!("{nccl_line}");
    }
    if nccl_failed {
        bail!("the NCCL check failed on {}: {nccl_line}", args.device);
    }
    Ok(())
}
