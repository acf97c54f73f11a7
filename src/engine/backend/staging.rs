//! Host staging for batch uploads: a small pool of host buffers through which [`Gpu::upload_staged`]
//! copies batch inputs to the device.
//!
//! On `cuda` the buffers are page-locked (`cuMemHostAlloc`): a copy from pageable memory makes the
//! driver stage it through its own pinned bounce buffer and forces the caller to wait, while a
//! copy from pinned memory is a true asynchronous DMA on the engine's compute stream. The caller's
//! values are first copied into a staging buffer (so they may be dropped at once), the HtoD copy is
//! enqueued, and an event recorded behind it marks when the buffer may be written again. That is
//! what lets the pre-training prefetch thread upload batch k+1 while step k computes without
//! waiting for the GPU: on the compute stream the copy simply queues behind step k's kernels, and the
//! caching allocator hands out blocks in host order, which is stream order, so no extra
//! synchronisation is needed.
//!
//! Buffers are reused across steps instead of allocated per upload (pinned allocation costs
//! milliseconds and pins physical pages): they are kept by power-of-two size class, an upload takes
//! a buffer of its class whose last copy has finished, allocates one only when every buffer of the
//! class is still in flight and the class holds fewer than [`MAX_BUFFERS_PER_CLASS`], and otherwise
//! waits for the oldest. A training run therefore reaches a fixed number of buffers after its first
//! steps ([`StagingStats::allocations`] stops growing; `tests/device_prefetch.rs` checks it).
//! Buffers live as long as their device handle, i.e. the process (see [`super::gpu`]).
//!
//! On `cuda-sim` the same code runs with ordinary (256-byte aligned) host memory standing in for
//! pinned memory and copies that are complete when they return, so the pool's logic is tested where
//! there is no GPU.

use super::{cuda, DeviceValue, Gpu, GpuKind, GpuVec};
use anyhow::Result;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Smallest staging buffer: batch columns below this share one class.
const MIN_CLASS_BYTES: usize = 4096;

/// Buffers a size class may hold before an upload waits for the oldest copy instead of allocating:
/// a pre-training batch uploads ~15 columns and at most three batches are in flight (two queued,
/// one being prepared), so this bounds pinned memory without stalling the steady state.
pub const MAX_BUFFERS_PER_CLASS: usize = 16;

/// The class (buffer size) an upload of `bytes` uses.
fn class_bytes(bytes: usize) -> usize {
    bytes.max(MIN_CLASS_BYTES).next_power_of_two()
}

/// One staging buffer: host memory (pinned on `cuda`) and, on `cuda`, the event recorded after the
/// last copy out of it.
struct Buffer {
    /// Host address of `bytes` bytes.
    host: u64,
    bytes: usize,
    event: Option<cuda::CopyEvent>,
}

/// Counters of the staging pool, for tests and `doctor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StagingStats {
    /// Staging buffers allocated so far (never freed while the process runs).
    pub allocations: usize,
    /// Host bytes they hold.
    pub bytes: usize,
    /// Uploads that went through the pool.
    pub uploads: usize,
    /// Uploads that had to wait for an earlier copy out of their buffer (class full).
    pub waits: usize,
}

/// The pool: free buffers by class, oldest first.
#[derive(Default)]
pub struct StagingPool {
    classes: Mutex<HashMap<usize, VecDeque<Buffer>>>,
    stats: Mutex<StagingStats>,
}

impl StagingPool {
    pub fn stats(&self) -> StagingStats {
        *self.stats.lock().unwrap()
    }
}

/// How a buffer was obtained.
enum Taken {
    /// Its last copy has finished (or it is new): write at once.
    Ready(Buffer),
    /// The class is full and every copy is in flight: wait for this one's first.
    Busy(Buffer),
}

impl Gpu {
    /// Host values → a new device buffer, through a staging buffer of this device's pool: on
    /// `cuda` a pinned buffer and an asynchronous copy on the engine's compute stream (the call returns
    /// once the values are in the staging buffer, not when they reach the GPU); on `cuda-sim`
    /// the same steps with host memory. Results are those of [`Gpu::upload`].
    pub fn upload_staged<T: DeviceValue>(self: &std::sync::Arc<Self>, host: &[T]) -> Result<GpuVec<T>> {
        let v = self.uninit::<T>(host.len())?;
        let bytes = std::mem::size_of_val(host);
        if bytes == 0 {
            return Ok(v);
        }
        let class = class_bytes(bytes);
        let buf = match self.take_staging(class)? {
            Taken::Ready(b) => b,
            Taken::Busy(b) => {
                if let (GpuKind::Cuda(c), Some(ev)) = (&self.kind, &b.event) {
                    c.wait_event(ev)?;
                }
                self.staging.stats.lock().unwrap().waits += 1;
                b
            }
        };
        debug_assert!(buf.bytes >= bytes, "a staging buffer of class {} for {bytes} B", buf.bytes);
        // SAFETY: the buffer holds `class ≥ bytes` bytes and no copy out of it is pending (its
        // event completed above), so nothing else reads or writes it.
        unsafe { std::ptr::copy_nonoverlapping(host.as_ptr() as *const u8, buf.host as *mut u8, bytes) };
        let copied = match &self.kind {
            GpuKind::Sim(_) => {
                // SAFETY: `v` holds `host.len()` values, i.e. `bytes` bytes; the buffer as above.
                unsafe { std::ptr::copy_nonoverlapping(buf.host as *const u8, v.ptr as *mut u8, bytes) };
                Ok(())
            }
            GpuKind::Cuda(c) => c.htod_pinned(v.ptr, buf.host, bytes, buf.event.as_ref().expect("pinned buffers carry an event")),
        };
        // The buffer goes back even after a failed copy (its event then says nothing is pending).
        self.staging.classes.lock().unwrap().entry(class).or_default().push_back(buf);
        copied?;
        self.staging.stats.lock().unwrap().uploads += 1;
        Ok(v)
    }

    /// The counters of this device's staging pool.
    pub fn staging_stats(&self) -> StagingStats {
        self.staging.stats()
    }

    /// A free buffer of `class` bytes: the oldest whose copy has finished, else a new one while
    /// the class has room, else the oldest (busy).
    fn take_staging(&self, class: usize) -> Result<Taken> {
        {
            let mut classes = self.staging.classes.lock().unwrap();
            let free = classes.entry(class).or_default();
            let mut ready = None;
            for (i, b) in free.iter().enumerate() {
                let done = match (&self.kind, &b.event) {
                    (GpuKind::Cuda(c), Some(ev)) => c.event_done(ev)?,
                    _ => true,
                };
                if done {
                    ready = Some(i);
                    break;
                }
            }
            if let Some(i) = ready {
                return Ok(Taken::Ready(free.remove(i).expect("index from the scan")));
            }
            // Buffers taken by another thread's upload right now are not in `free`; they come
            // back within that upload, so counting only these keeps the bound approximate but
            // never lets a class grow without limit.
            if free.len() >= MAX_BUFFERS_PER_CLASS {
                return Ok(Taken::Busy(free.pop_front().expect("a full class")));
            }
        }
        let (host, event) = match &self.kind {
            GpuKind::Sim(m) => (m.alloc_host(class), None),
            GpuKind::Cuda(c) => {
                let (host, ev) = c.alloc_pinned(class)?;
                (host, Some(ev))
            }
        };
        let mut s = self.staging.stats.lock().unwrap();
        s.allocations += 1;
        s.bytes += class;
        Ok(Taken::Ready(Buffer { host, bytes: class, event }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backend::{gpu, Device};

    #[test]
    fn classes_are_powers_of_two_from_4_kib() {
        assert_eq!(class_bytes(1), 4096);
        assert_eq!(class_bytes(4096), 4096);
        assert_eq!(class_bytes(4097), 8192);
        assert_eq!(class_bytes(3 << 20), 4 << 20);
    }

    #[test]
    fn staged_uploads_equal_plain_uploads_and_reuse_their_buffers() {
        let g = gpu(Device::CudaSim).unwrap();
        let a: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5 - 7.0).collect();
        let b: Vec<u32> = (0..100).collect();
        let before = g.staging_stats();
        for _ in 0..3 {
            assert_eq!(g.download(&g.upload_staged(&a).unwrap()).unwrap(), a);
            assert_eq!(g.download(&g.upload_staged(&b).unwrap()).unwrap(), b);
            assert!(g.upload_staged::<f32>(&[]).unwrap().is_empty());
        }
        // Other tests of this binary share the device (and its pool), so the count of buffers is
        // checked where nothing else runs: tests/device_prefetch.rs.
        assert!(g.staging_stats().uploads - before.uploads >= 6);
    }
}
