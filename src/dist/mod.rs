//! Distribution, launcher-agnostic: who am I (rank, world size, local rank), collectives, and a
//! single-process fallback with the same API so every command runs unchanged without a launcher.
//! (Filled in by the MPI/Slurm issue; until then every process is rank 0 of 1.)

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
}
