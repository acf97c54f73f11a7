//! Where a pre-training step's time goes, and how many bytes it moves: the always-on breakdown
//! behind the `timing` object of every `metrics.jsonl` line and the scaling model in
//! ARCHITECTURE.md ("Scaling model").
//!
//! A step is split into
//! - `io_wait_s`: waiting for the prefetch thread's next batch (zero when assembly keeps ahead);
//! - `all_gather_s`: gathering every rank's embeddings into the global batch (forward of the
//!   gather-with-grad), `B × D` floats per modality;
//! - `embed_grad_all_reduce_s`: the backward of that gather — summing each modality's `(B, D)`
//!   embedding gradient over ranks;
//! - `param_all_reduce_s`: the all-reduce of every parameter gradient (`N_params` floats, one
//!   flat bucket on the CPU, one per module on a GPU device); on NCCL the buckets' own time on the
//!   communication stream, most of which overlaps the backward;
//! - `f64_all_reduce_s`: SyncBN statistics (forward and backward of every BatchNorm) and the loss;
//! - `other_comm_s`: anything else (barriers, byte gathers);
//! - `compute_s`: the rest of the step — forward, loss, backward, optimizer. Of the parameter
//!   all-reduce only what the step waited for is taken out of it (on NCCL the host's wait when
//!   the buckets finish; elsewhere the all-reduce itself, which blocks).
//!
//! Collective times come from `Dist`'s counters and include waiting for the slowest rank, so on
//! a loaded machine load imbalance shows up as communication. Bytes are payload per rank (the
//! buffer reduced, the gathered result); `ring_wire_bytes` is what a ring algorithm sends per
//! rank for them: `2(p−1)/p · n` for an all-reduce of n bytes, `(p−1)/p · n` for an all-gather
//! of an n-byte result.

use crate::dist::{CommSnapshot, CommStat, Dist};
use crate::loss::Modality;
use crate::model::config::{build_encoder, EncodersConfig};
use std::time::{Duration, Instant};

/// Parameters of each modality's encoder under `encoders` (the gradient all-reduce moves all of
/// them every step; the scaling model in ARCHITECTURE.md uses the paper-size defaults).
pub fn encoder_parameter_counts(encoders: &EncodersConfig, embed_dim: usize) -> anyhow::Result<Vec<(Modality, usize)>> {
    let mut out = Vec::new();
    for m in Modality::ALL {
        let mut e = build_encoder(m, encoders, embed_dim, 0)?;
        let mut n = 0usize;
        e.visit_params(&mut |p| n += p.value.numel());
        out.push((m, n));
    }
    Ok(out)
}

fn diff(after: CommStat, before: CommStat) -> CommStat {
    CommStat { calls: after.calls - before.calls, nanos: after.nanos - before.nanos, bytes: after.bytes - before.bytes }
}

fn secs(s: CommStat) -> f64 {
    s.nanos as f64 * 1e-9
}

/// Started when a step's batch has arrived; finished after the optimizer update.
pub struct StepTimer {
    start: Instant,
    io_wait: Duration,
    before: CommSnapshot,
    param_all_reduce: CommStat,
    /// Host time spent in `param_all_reduce` calls: bounds the part of the parameter all-reduce
    /// the step waited for when the collectives overlap compute.
    param_wait: Duration,
}

/// One step's breakdown (seconds and bytes, this rank's view).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepTiming {
    pub world_size: usize,
    pub total_s: f64,
    pub io_wait_s: f64,
    pub compute_s: f64,
    pub all_gather_s: f64,
    pub embed_grad_all_reduce_s: f64,
    pub param_all_reduce_s: f64,
    pub f64_all_reduce_s: f64,
    pub other_comm_s: f64,
    pub all_gather_bytes: u64,
    pub embed_grad_all_reduce_bytes: u64,
    pub param_all_reduce_bytes: u64,
    pub f64_all_reduce_bytes: u64,
    /// Number of f64 all-reduces (one per BatchNorm forward and backward, plus the loss): the
    /// latency-bound part of SyncBN.
    pub f64_all_reduce_calls: u64,
    pub ring_wire_bytes: f64,
}

impl StepTimer {
    /// `io_wait`: how long the step waited for its batch before this call.
    pub fn start(dist: &Dist, io_wait: Duration) -> StepTimer {
        StepTimer { start: Instant::now(), io_wait, before: dist.comm_snapshot(), param_all_reduce: CommStat::default(), param_wait: Duration::ZERO }
    }

    /// Run the parameter-gradient all-reduce `reduce`, attributing its f32 all-reduce traffic to
    /// `param_all_reduce` rather than to the embedding gradients.
    pub fn param_all_reduce(&mut self, dist: &Dist, reduce: impl FnOnce()) {
        let before = dist.comm_snapshot().all_reduce_f32;
        let waiting = Instant::now();
        reduce();
        self.param_wait += waiting.elapsed();
        let d = diff(dist.comm_snapshot().all_reduce_f32, before);
        self.param_all_reduce = CommStat {
            calls: self.param_all_reduce.calls + d.calls,
            nanos: self.param_all_reduce.nanos + d.nanos,
            bytes: self.param_all_reduce.bytes + d.bytes,
        };
    }

    pub fn finish(self, dist: &Dist) -> StepTiming {
        let window = self.start.elapsed().as_secs_f64();
        let now = dist.comm_snapshot();
        let gather = diff(now.all_gather, self.before.all_gather);
        let reduce_f32 = diff(now.all_reduce_f32, self.before.all_reduce_f32);
        let embed = diff(reduce_f32, self.param_all_reduce);
        let f64s = diff(now.all_reduce_f64, self.before.all_reduce_f64);
        let other = diff(now.other, self.before.other);
        // An overlapped collective counts its own time, not the step's: only what the host
        // waited for leaves the compute time.
        let param_waited = secs(self.param_all_reduce).min(self.param_wait.as_secs_f64());
        let comm = secs(gather) + secs(reduce_f32) - secs(self.param_all_reduce) + param_waited + secs(f64s) + secs(other);
        let p = dist.world_size() as f64;
        let ring = (p - 1.0) / p;
        StepTiming {
            world_size: dist.world_size(),
            total_s: window + self.io_wait.as_secs_f64(),
            io_wait_s: self.io_wait.as_secs_f64(),
            compute_s: (window - comm).max(0.0),
            all_gather_s: secs(gather),
            embed_grad_all_reduce_s: secs(embed),
            param_all_reduce_s: secs(self.param_all_reduce),
            f64_all_reduce_s: secs(f64s),
            other_comm_s: secs(other),
            all_gather_bytes: gather.bytes,
            embed_grad_all_reduce_bytes: embed.bytes,
            param_all_reduce_bytes: self.param_all_reduce.bytes,
            f64_all_reduce_bytes: f64s.bytes,
            f64_all_reduce_calls: f64s.calls,
            ring_wire_bytes: ring * gather.bytes as f64 + 2.0 * ring * (reduce_f32.bytes + f64s.bytes) as f64,
        }
    }
}

impl StepTiming {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "world_size": self.world_size,
            "total_s": self.total_s,
            "io_wait_s": self.io_wait_s,
            "compute_s": self.compute_s,
            "all_gather_s": self.all_gather_s,
            "embed_grad_all_reduce_s": self.embed_grad_all_reduce_s,
            "param_all_reduce_s": self.param_all_reduce_s,
            "f64_all_reduce_s": self.f64_all_reduce_s,
            "other_comm_s": self.other_comm_s,
            "all_gather_bytes": self.all_gather_bytes,
            "embed_grad_all_reduce_bytes": self.embed_grad_all_reduce_bytes,
            "param_all_reduce_bytes": self.param_all_reduce_bytes,
            "f64_all_reduce_bytes": self.f64_all_reduce_bytes,
            "f64_all_reduce_calls": self.f64_all_reduce_calls,
            "ring_wire_bytes": self.ring_wire_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_size_parameter_counts() {
        // The text MLP 768→512→512→128 (weights + biases) counted by hand, as a check that the
        // walk sees every parameter once; the other encoders' totals are printed for the note.
        let counts = encoder_parameter_counts(&EncodersConfig::default(), 128).unwrap();
        let text = counts.iter().find(|(m, _)| *m == Modality::Text).unwrap().1;
        assert_eq!(text, 768 * 512 + 512 + 512 * 512 + 512 + 512 * 128 + 128);
        let total: usize = counts.iter().map(|c| c.1).sum();
        eprintln!("paper-size encoders: {counts:?}, total {total} parameters ({:.1} MB of f32 gradients)", total as f64 * 4e-6);
        assert!(counts.iter().all(|c| c.1 > 0));
    }

    #[test]
    fn single_process_step_counts_payload_and_attributes_the_param_reduce() {
        let dist = Dist::single();
        let mut timer = StepTimer::start(&dist, Duration::from_millis(3));
        let _ = dist.all_gather_f32(&[0.0; 10]); // 40 B gathered
        dist.all_reduce_sum_f32(&mut [0.0; 5]); // embedding gradient, 20 B
        let mut flat = vec![0.0f32; 100];
        timer.param_all_reduce(&dist, || dist.all_reduce_sum_f32(&mut flat)); // 400 B
        dist.all_reduce_sum_f64(&mut [0.0; 2]); // SyncBN, 16 B
        let t = timer.finish(&dist);
        assert_eq!((t.all_gather_bytes, t.embed_grad_all_reduce_bytes, t.param_all_reduce_bytes, t.f64_all_reduce_bytes), (40, 20, 400, 16));
        assert_eq!(t.f64_all_reduce_calls, 1);
        assert_eq!(t.ring_wire_bytes, 0.0, "one rank sends nothing");
        assert!(t.io_wait_s >= 0.003 && t.total_s >= t.io_wait_s + t.compute_s);
    }
}
