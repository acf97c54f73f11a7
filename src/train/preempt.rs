//! Preemption: Slurm sends SIGUSR1 (`--signal=USR1@…`) or SIGTERM before killing a job. The
//! handler only sets a flag; the training loop polls it once per step, all ranks agree (max over
//! ranks) on the step to stop after, one checkpoint is written atomically, and the process exits
//! with [`REQUEUE_EXIT_CODE`], which `slurm/pretrain.sh` turns into `scontrol requeue`.

use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit code meaning "checkpointed because of a signal; requeue me".
pub const REQUEUE_EXIT_CODE: i32 = 75; // EX_TEMPFAIL

/// A flag raised by SIGUSR1 or SIGTERM (the default: one nobody raises).
#[derive(Clone, Debug)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
}

impl StopSignal {
    /// Install handlers for SIGUSR1 and SIGTERM (the process keeps running; the loop decides).
    pub fn install() -> Result<StopSignal> {
        let flag = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&flag))?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&flag))?;
        Ok(StopSignal { flag })
    }

    /// A flag nobody raises (tests, library use).
    pub fn never() -> StopSignal {
        StopSignal { flag: Arc::new(AtomicBool::new(false)) }
    }

    pub fn raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub fn raise(&self) {
        self.flag.store(true, Ordering::Relaxed)
    }

    /// True on every rank if any rank has been signalled (one small all-reduce per step).
    pub fn agreed(&self, dist: &crate::dist::Dist) -> bool {
        dist.all_reduce_max_i64(i64::from(self.raised())) > 0
    }
}

impl Default for StopSignal {
    fn default() -> StopSignal {
        StopSignal::never()
    }
}
