//! The MPI backend of `dist` (rsmpi on MPICH). Only this file talks to MPI.

use anyhow::{anyhow, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::traits::*;

pub struct MpiWorld {
    // Dropping the universe finalises MPI; keep it for the life of the process.
    _universe: mpi::environment::Universe,
    world: mpi::topology::SimpleCommunicator,
}

impl MpiWorld {
    pub fn init() -> Result<MpiWorld> {
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| anyhow!("MPI was already initialised in this process"))?;
        let world = universe.world();
        Ok(MpiWorld { _universe: universe, world })
    }

    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }
    pub fn barrier(&self) {
        self.world.barrier();
    }

    pub fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    pub fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    pub fn all_reduce_max_i64(&self, v: i64) -> i64 {
        let mut out = 0i64;
        self.world.all_reduce_into(&v, &mut out, SystemOperation::max());
        out
    }

    fn counts(&self, local_len: usize) -> Vec<i32> {
        let n = local_len as i32;
        let mut counts = vec![0i32; self.size()];
        self.world.all_gather_into(&n, &mut counts[..]);
        counts
    }

    pub fn all_gather_varcount_f32(&self, local: &[f32]) -> Vec<f32> {
        let counts = self.counts(local.len());
        let displs: Vec<i32> = counts.iter().scan(0, |acc, &c| { let d = *acc; *acc += c; Some(d) }).collect();
        let total: i32 = counts.iter().sum();
        let mut out = vec![0f32; total as usize];
        {
            let mut part = PartitionMut::new(&mut out[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(local, &mut part);
        }
        out
    }

    pub fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        let counts = self.counts(local.len());
        let displs: Vec<i32> = counts.iter().scan(0, |acc, &c| { let d = *acc; *acc += c; Some(d) }).collect();
        let total: i32 = counts.iter().sum();
        let mut out = vec![0u8; total as usize];
        {
            let mut part = PartitionMut::new(&mut out[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(local, &mut part);
        }
        counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| out[d as usize..(d + c) as usize].to_vec())
            .collect()
    }

    pub fn broadcast_bytes(&self, root_bytes: Vec<u8>) -> Vec<u8> {
        let root = self.world.process_at_rank(0);
        let mut len = root_bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut buf = if self.rank() == 0 { root_bytes } else { vec![0u8; len as usize] };
        root.broadcast_into(&mut buf[..]);
        buf
    }

    pub fn send_i64(&self, dest: usize, v: i64) {
        self.world.process_at_rank(dest as i32).send(&v);
    }

    pub fn recv_i64(&self, src: usize) -> i64 {
        let (v, _status) = self.world.process_at_rank(src as i32).receive::<i64>();
        v
    }

    pub fn probe_any(&self) -> Option<usize> {
        self.world.any_process().immediate_probe().map(|s| s.source_rank() as usize)
    }
}
