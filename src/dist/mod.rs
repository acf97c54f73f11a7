//! Distribution, launcher-agnostic: who am I (rank, world size, local rank), and the collectives
//! the trainer, the ingest and the screen need — with a single-process fallback of the same API,
//! so every command runs unchanged without a launcher (rank 0 of 1).
//!
//! Discovery reads the launcher's environment (Slurm `SLURM_PROCID/NTASKS/LOCALID`, MPICH/Hydra
//! `PMI_RANK/PMI_SIZE/MPI_LOCALRANKID`, PMIx `PMIX_RANK`, Open MPI `OMPI_COMM_WORLD_*`) and, when
//! MPI is initialised, cross-checks it against `MPI_Comm_size`/`MPI_Comm_rank`. A mismatch (the
//! classic "binary linked to one MPI, launched by another" failure, which silently runs N copies
//! of rank 0 of 1) stops the program with a message saying what to fix.

pub mod device_comm;
#[cfg(feature = "mpi")]
mod multi_node;
mod nccl;

pub use device_comm::{nccl_self_check, DeviceComm, PendingGrads};

/// The NCCL this process would use for multi-GPU collectives, as `major.minor.patch`, or why it
/// cannot be loaded (`multimat doctor --device cuda` prints it before a multi-GPU job).
pub fn nccl_version() -> Result<String> {
    Ok(nccl_version_string(nccl::load()?.version))
}

/// NCCL's version code as text: `major·10000 + minor·100 + patch` since NCCL 2.9,
/// `major·1000 + minor·100 + patch` before it.
fn nccl_version_string(code: i32) -> String {
    if code >= 2_09_00 {
        format!("{}.{}.{}", code / 10000, (code / 100) % 100, code % 100)
    } else {
        format!("{}.{}.{}", code / 1000, (code / 100) % 10, code % 100)
    }
}

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// This process's place in the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
}

impl Topology {
    pub fn single() -> Self {
        Topology { rank: 0, world_size: 1, local_rank: 0 }
    }
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }
    /// The half-open slice `[start, end)` of `n` items this rank owns under a contiguous,
    /// balanced split (the first `n % world` ranks get one extra).
    pub fn share(&self, n: usize) -> std::ops::Range<usize> {
        split_range(n, self.world_size, self.rank)
    }
}

/// Contiguous balanced split of `0..n` into `parts`, part `index`.
/// This machine's host name (from the kernel; "unknown" where it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

pub fn split_range(n: usize, parts: usize, index: usize) -> std::ops::Range<usize> {
    let base = n / parts;
    let extra = n % parts;
    let start = index * base + index.min(extra);
    let len = base + usize::from(index < extra);
    start..start + len
}

/// What the launcher's environment says, and which variables said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LauncherEnv {
    pub topology: Topology,
    /// e.g. "slurm", "pmi", "pmix", "openmpi", or "none".
    pub source: &'static str,
}

/// Read rank/size/local rank from launcher variables in `env` (a snapshot of the environment, so
/// this is testable). Slurm wins when it describes a multi-task step; otherwise PMI/PMIx/Open MPI.
/// Inconsistent variables (rank ≥ size, unparsable numbers, two launchers disagreeing) are errors.
pub fn discover_from(env: &BTreeMap<String, String>) -> Result<LauncherEnv> {
    let get = |k: &str| -> Result<Option<usize>> {
        match env.get(k) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("launcher variable {k}={v:?} is not a non-negative integer")),
        }
    };
    // (launcher, topology, whether it named the local rank itself)
    let mut found: Vec<(&'static str, Topology, bool)> = Vec::new();
    let candidates: [(&'static str, &str, &str, &[&str]); 4] = [
        ("slurm", "SLURM_PROCID", "SLURM_NTASKS", &["SLURM_LOCALID"]),
        ("pmi", "PMI_RANK", "PMI_SIZE", &["MPI_LOCALRANKID", "PMI_LOCAL_RANK"]),
        ("pmix", "PMIX_RANK", "PMIX_SIZE", &["PMIX_LOCAL_RANK"]),
        ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", &["OMPI_COMM_WORLD_LOCAL_RANK"]),
    ];
    for (name, rank_var, size_var, local_vars) in candidates {
        let (rank, size) = (get(rank_var)?, get(size_var)?);
        // `sbatch` exports SLURM_PROCID=0 and SLURM_NTASKS for the batch script itself; that is
        // a real (rank 0) description, so accept any consistent pair.
        if let (Some(rank), Some(size)) = (rank, size) {
            if size == 0 || rank >= size {
                bail!("launcher variables inconsistent: {rank_var}={rank} but {size_var}={size}");
            }
            let mut local_rank = None;
            for lv in local_vars {
                if let Some(l) = get(lv)? {
                    local_rank = Some(l);
                    break;
                }
            }
            found.push((name, Topology { rank, world_size: size, local_rank: local_rank.unwrap_or(0) }, local_rank.is_some()));
        }
    }
    // A job step under `srun` sets both SLURM_* and PMI_*; they must agree when both describe
    // more than one process. (A batch script under `mpirun` inside an allocation legitimately has
    // SLURM_NTASKS of the allocation and PMI_* of mpirun: prefer the MPI launcher's view then.)
    let mpi_like: Vec<_> = found.iter().filter(|(n, _, _)| *n != "slurm").collect();
    let slurm = found.iter().find(|(n, _, _)| *n == "slurm");
    if let Some((name, topo, has_local)) = mpi_like.first() {
        for (other, t, _) in &mpi_like[1..] {
            if t.rank != topo.rank || t.world_size != topo.world_size {
                bail!(
                    "launcher variables disagree: {name} says rank {}/{} but {other} says rank {}/{}",
                    topo.rank, topo.world_size, t.rank, t.world_size
                );
            }
        }
        let mut topology = *topo;
        // `srun --mpi=pmi2` sets PMI_RANK/PMI_SIZE but no PMI local rank; the step's
        // SLURM_LOCALID is then the one to trust (a GPU per rank depends on it).
        if !has_local {
            if let Some((_, s, true)) = slurm {
                if env.contains_key("SLURM_STEP_ID") && s.rank == topo.rank && s.world_size == topo.world_size {
                    topology.local_rank = s.local_rank;
                }
            }
        }
        return Ok(LauncherEnv { topology, source: name });
    }
    if let Some((_, topo, _)) = slurm {
        // Inside `sbatch` without `srun`, SLURM_NTASKS is the allocation's task count but only
        // this one process runs; SLURM_STEP_ID distinguishes a real job step.
        if env.contains_key("SLURM_STEP_ID") || topo.world_size == 1 {
            return Ok(LauncherEnv { topology: *topo, source: "slurm" });
        }
        return Ok(LauncherEnv { topology: Topology::single(), source: "none" });
    }
    Ok(LauncherEnv { topology: Topology::single(), source: "none" })
}

/// The collective backend: one process, or an MPI world.
enum Backend {
    Single,
    #[cfg(feature = "mpi")]
    Mpi(multi_node::MpiWorld),
}

/// Cumulative count, wall time and payload bytes of one kind of collective in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommStat {
    pub calls: u64,
    pub nanos: u64,
    /// Payload: the buffer reduced, or the gathered result, in bytes (not the bytes on the wire,
    /// which depend on the algorithm; see `train::step_timing`).
    pub bytes: u64,
}

/// [`CommStat`] per kind of collective, for step-time breakdowns (`train::step_timing`).
/// The time of a collective includes waiting for the slowest rank to arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommSnapshot {
    pub all_gather: CommStat,
    pub all_reduce_f32: CommStat,
    /// f64 sums: SyncBN statistics and the loss.
    pub all_reduce_f64: CommStat,
    /// Barriers, byte gathers and broadcasts, integer reductions.
    pub other: CommStat,
}

const COMM_KINDS: usize = 4;
const GATHER: usize = 0;
const REDUCE_F32: usize = 1;
const REDUCE_F64: usize = 2;
const OTHER: usize = 3;

/// Always-on counters: three relaxed atomic adds per collective, negligible next to one.
#[derive(Default)]
struct CommCounters([[AtomicU64; 3]; COMM_KINDS]);

/// A handle to the job: topology plus collectives. Create one per process with [`Dist::init`]
/// and pass it down; dropping it finalises MPI.
pub struct Dist {
    pub topology: Topology,
    pub launcher: &'static str,
    backend: Backend,
    counters: CommCounters,
}

impl Dist {
    /// Single process, no MPI, whatever the environment says.
    pub fn single() -> Dist {
        Dist { topology: Topology::single(), launcher: "none", backend: Backend::Single, counters: CommCounters::default() }
    }

    /// Discover the topology and start MPI when a launcher started several processes. Refuses to
    /// run when the launcher's view and MPI's disagree, or when several processes were launched
    /// but this build has no MPI.
    pub fn init() -> Result<Dist> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let launcher = discover_from(&env)?;
        if launcher.topology.world_size == 1 {
            return Ok(Dist { topology: launcher.topology, launcher: launcher.source, backend: Backend::Single, counters: CommCounters::default() });
        }
        #[cfg(feature = "mpi")]
        {
            let world = multi_node::MpiWorld::init()?;
            let (rank, size) = (world.rank(), world.size());
            if rank != launcher.topology.rank || size != launcher.topology.world_size {
                bail!(
                    "the launcher ({}) started rank {} of {} but MPI reports rank {} of {}: this binary \
                     is linked against a different MPI than the launcher (use MPICH's mpirun, or \
                     `srun --mpi=pmi2`; rebuild with `cargo clean -p mpi-sys` if mpicc changed)",
                    launcher.source, launcher.topology.rank, launcher.topology.world_size, rank, size
                );
            }
            Ok(Dist { topology: launcher.topology, launcher: launcher.source, backend: Backend::Mpi(world), counters: CommCounters::default() })
        }
        #[cfg(not(feature = "mpi"))]
        {
            bail!(
                "the launcher ({}) started {} processes but this multimat was built without the `mpi` \
                 feature; rebuild with default features or run one process",
                launcher.source, launcher.topology.world_size
            )
        }
    }

    pub fn rank(&self) -> usize {
        self.topology.rank
    }
    pub fn world_size(&self) -> usize {
        self.topology.world_size
    }
    pub fn is_root(&self) -> bool {
        self.topology.is_root()
    }

    fn record(&self, kind: usize, since: Instant, bytes: usize) {
        self.record_duration(kind, since.elapsed(), bytes);
    }

    /// Counts one collective that took `took` (measured elsewhere, e.g. by GPU events).
    fn record_duration(&self, kind: usize, took: Duration, bytes: usize) {
        let c = &self.counters.0[kind];
        c[0].fetch_add(1, Ordering::Relaxed);
        c[1].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        c[2].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Totals of this process's collectives so far; subtract two snapshots for an interval.
    pub fn comm_snapshot(&self) -> CommSnapshot {
        let get = |k: usize| {
            let c = &self.counters.0[k];
            CommStat { calls: c[0].load(Ordering::Relaxed), nanos: c[1].load(Ordering::Relaxed), bytes: c[2].load(Ordering::Relaxed) }
        };
        CommSnapshot { all_gather: get(GATHER), all_reduce_f32: get(REDUCE_F32), all_reduce_f64: get(REDUCE_F64), other: get(OTHER) }
    }

    pub fn barrier(&self) {
        let t = Instant::now();
        self.barrier_untimed();
        self.record(OTHER, t, 0);
    }

    fn barrier_untimed(&self) {
        match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.barrier(),
        }
    }

    /// Element-wise sum over ranks, in place, identical on every rank.
    pub fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        let t = Instant::now();
        self.all_reduce_sum_f32_untimed(buf);
        self.record(REDUCE_F32, t, std::mem::size_of_val(buf));
    }

    fn all_reduce_sum_f32_untimed(&self, buf: &mut [f32]) {
        let _ = &buf; // untouched by a single process
        match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.all_reduce_sum_f32(buf),
        }
    }

    pub fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let t = Instant::now();
        self.all_reduce_sum_f64_untimed(buf);
        self.record(REDUCE_F64, t, std::mem::size_of_val(buf));
    }

    fn all_reduce_sum_f64_untimed(&self, buf: &mut [f64]) {
        let _ = &buf; // untouched by a single process
        match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.all_reduce_sum_f64(buf),
        }
    }

    /// Maximum over ranks of one integer (used to agree on a stop step after a signal).
    pub fn all_reduce_max_i64(&self, v: i64) -> i64 {
        let t = Instant::now();
        let out = match &self.backend {
            Backend::Single => v,
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.all_reduce_max_i64(v),
        };
        self.record(OTHER, t, 8);
        out
    }

    /// Concatenate every rank's slice in rank order (slices may differ in length).
    pub fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        let t = Instant::now();
        let out = match &self.backend {
            Backend::Single => local.to_vec(),
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.all_gather_varcount_f32(local),
        };
        self.record(GATHER, t, std::mem::size_of_val(&out[..]));
        out
    }

    /// Every rank's bytes, in rank order, on every rank (for ids, JSON summaries, hit lists).
    pub fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        let t = Instant::now();
        let out = match &self.backend {
            Backend::Single => vec![local.to_vec()],
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.all_gather_bytes(local),
        };
        self.record(OTHER, t, out.iter().map(Vec::len).sum());
        out
    }

    /// Point-to-point: send one integer to rank `dest` (the sweep's work dispatcher). A single
    /// process has nobody to talk to, so this is an error there rather than a silent no-op.
    pub fn send_i64(&self, dest: usize, v: i64) -> Result<()> {
        let _ = (dest, v);
        match &self.backend {
            Backend::Single => bail!("send_i64: a single process has no rank {dest} to send to"),
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => {
                w.send_i64(dest, v);
                Ok(())
            }
        }
    }

    /// Point-to-point: receive one integer from rank `src` (blocking).
    pub fn recv_i64(&self, src: usize) -> Result<i64> {
        let _ = src;
        match &self.backend {
            Backend::Single => bail!("recv_i64: a single process has no rank {src} to receive from"),
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => Ok(w.recv_i64(src)),
        }
    }

    /// Non-blocking: the rank of some process with a message waiting for this one, if any
    /// (receive it with `recv_i64`). Always `None` in a single process.
    pub fn probe_any(&self) -> Option<usize> {
        match &self.backend {
            Backend::Single => None,
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.probe_any(),
        }
    }

    /// Root's bytes on every rank.
    pub fn broadcast_bytes(&self, root_bytes: Vec<u8>) -> Vec<u8> {
        let t = Instant::now();
        let out = match &self.backend {
            Backend::Single => root_bytes,
            #[cfg(feature = "mpi")]
            Backend::Mpi(w) => w.broadcast_bytes(root_bytes),
        };
        self.record(OTHER, t, out.len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn nccl_version_codes_of_both_schemes_read_as_versions() {
        assert_eq!(nccl_version_string(22703), "2.27.3");
        assert_eq!(nccl_version_string(21805), "2.18.5");
        assert_eq!(nccl_version_string(2708), "2.7.8");
    }

    #[test]
    fn no_launcher_is_rank_zero_of_one() {
        let l = discover_from(&env(&[("HOME", "/root")])).unwrap();
        assert_eq!(l.topology, Topology::single());
        assert_eq!(l.source, "none");
    }

    #[test]
    fn srun_step_with_pmi_and_slurm_agreeing() {
        let l = discover_from(&env(&[
            ("SLURM_PROCID", "2"), ("SLURM_NTASKS", "4"), ("SLURM_LOCALID", "1"), ("SLURM_STEP_ID", "0"),
            ("PMI_RANK", "2"), ("PMI_SIZE", "4"),
        ]))
        .unwrap();
        // srun's PMI-2 names no local rank: SLURM_LOCALID of the same step supplies it.
        assert_eq!(l.topology, Topology { rank: 2, world_size: 4, local_rank: 1 });
        // A PMI local rank, when given, wins.
        let l = discover_from(&env(&[
            ("SLURM_PROCID", "2"), ("SLURM_NTASKS", "4"), ("SLURM_LOCALID", "1"), ("SLURM_STEP_ID", "0"),
            ("PMI_RANK", "2"), ("PMI_SIZE", "4"), ("MPI_LOCALRANKID", "0"),
        ]))
        .unwrap();
        assert_eq!(l.topology.local_rank, 0);
    }

    #[test]
    fn mpich_hydra_variables() {
        let l = discover_from(&env(&[("PMI_RANK", "1"), ("PMI_SIZE", "3"), ("MPI_LOCALRANKID", "1")])).unwrap();
        assert_eq!(l.topology, Topology { rank: 1, world_size: 3, local_rank: 1 });
        assert_eq!(l.source, "pmi");
    }

    #[test]
    fn batch_script_without_srun_is_single_process() {
        // sbatch --ntasks=4 runs the script once; only srun starts the 4 tasks.
        let l = discover_from(&env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_JOB_ID", "7")])).unwrap();
        assert_eq!(l.topology, Topology::single());
    }

    #[test]
    fn inconsistent_variables_are_refused() {
        assert!(discover_from(&env(&[("PMI_RANK", "3"), ("PMI_SIZE", "3")])).is_err());
        assert!(discover_from(&env(&[("PMI_RANK", "x"), ("PMI_SIZE", "3")])).is_err());
        let e = discover_from(&env(&[("PMI_RANK", "0"), ("PMI_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")]));
        assert!(format!("{:#}", e.unwrap_err()).contains("disagree"));
    }

    #[test]
    fn balanced_split_covers_everything_once() {
        for n in [0, 1, 7, 100] {
            for parts in 1..5 {
                let mut covered = 0;
                let mut next = 0;
                for i in 0..parts {
                    let r = split_range(n, parts, i);
                    assert_eq!(r.start, next);
                    next = r.end;
                    covered += r.len();
                }
                assert_eq!(covered, n);
            }
        }
    }
}
