//! How the CPU backend's tensor memory goes back to the C allocator, set once at process start.
//!
//! A training step allocates and frees the same large activation and gradient buffers every
//! step (PotNet at batch 360: hundreds of tensors of 10–170 MB). glibc's default serves every
//! block above its dynamic mmap threshold with a fresh `mmap` and returns it with `munmap` on
//! free, so each step the kernel zero-fills every page again. Measured on PotNet at batch 360
//! (`multimat bench encoders --batch 360 --repeats 3 --only potnet`, 2 threads, idle machine,
//! alternated twice): with glibc's defaults 45–46 s of system time beside 64 s of user time for
//! the warm-up + 3 timed steps, 16.6 M minor page faults (4.2 M every step), a 17.3–17.8 s step.
//! Serving large blocks from the heap and never trimming it keeps the pages the previous step
//! touched: 8–9 s of system time, 1.67 M faults (all in the warm-up step, none after), a
//! 10.5–10.9 s step (1.63× the materials/s), for 5.5 % more peak resident memory (6130 → 6470
//! MiB: the heap holds the step's high-water mark, which the training loop returns to every step
//! anyway).
//!
//! One limit of glibc remains: a block above 64 MiB asked for by a thread other than the main one
//! still gets its own mmap (a thread's arena grows in heaps of at most 64 MiB). The training and
//! inference loops allocate their activations on the main thread.
//!
//! Only the binaries call [`keep_freed_memory_for_reuse`]; a library user keeps their own
//! allocator settings. Anyone who sets glibc's malloc tunables (`GLIBC_TUNABLES=glibc.malloc.…`)
//! or `MULTIMAT_DEFAULT_MALLOC=1` keeps glibc's defaults. Off glibc (musl, other systems) nothing
//! changes.

/// What [`keep_freed_memory_for_reuse`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMemoryPolicy {
    /// Large blocks come from the heap and freed memory stays with the process.
    KeepFreedMemory,
    /// The user asked for glibc's defaults (or set malloc tunables themselves).
    UserDefaults,
    /// Not glibc, or glibc refused the settings: the allocator's defaults.
    AllocatorDefaults,
}

/// Tells glibc to serve large blocks from the heap (no per-block `mmap`) and never to give the
/// heap's free top back to the system, so tensors freed in one step are reused by the next
/// without page faults. Call once, first thing in `main`, before threads start.
pub fn keep_freed_memory_for_reuse() -> HostMemoryPolicy {
    let user_tunables = std::env::var("GLIBC_TUNABLES").map(|v| v.contains("glibc.malloc.")).unwrap_or(false);
    let opted_out = std::env::var("MULTIMAT_DEFAULT_MALLOC").map(|v| v == "1").unwrap_or(false);
    let policy = if user_tunables || opted_out { HostMemoryPolicy::UserDefaults } else { apply() };
    let _ = POLICY.set(policy); // the first call's outcome is the process's setting
    policy
}

static POLICY: std::sync::OnceLock<HostMemoryPolicy> = std::sync::OnceLock::new();

/// One line for `multimat doctor`: how this process's freed tensor memory is handled.
pub fn describe() -> &'static str {
    match POLICY.get() {
        Some(HostMemoryPolicy::KeepFreedMemory) => "freed tensor memory kept for the next step (glibc: no per-block mmap, no trim; MULTIMAT_DEFAULT_MALLOC=1 for glibc's defaults)",
        Some(HostMemoryPolicy::UserDefaults) => "glibc's malloc settings as the environment gives them (MULTIMAT_DEFAULT_MALLOC=1 or GLIBC_TUNABLES)",
        Some(HostMemoryPolicy::AllocatorDefaults) | None => "the C allocator's defaults",
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> HostMemoryPolicy {
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate.
    // M_MMAP_MAX = 0: no block is served by its own mmap (a block too large for a thread's arena
    // falls back to the main heap). M_TRIM_THRESHOLD = -1 disables trimming (mallopt(3)); the
    // largest positive value, 2 GiB, is not enough: PotNet at batch 360 frees a 6 GiB heap top
    // every step, and any top above the threshold went back to the system and was faulted in again.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1 };
    if ok {
        HostMemoryPolicy::KeepFreedMemory
    } else {
        HostMemoryPolicy::AllocatorDefaults
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> HostMemoryPolicy {
    HostMemoryPolicy::AllocatorDefaults
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn minor_faults() -> i64 {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        u.ru_minflt
    }

    /// Allocates, fills and frees a 32 MiB tensor-sized buffer on this thread; the minor page
    /// faults that took. (32 MiB: above glibc's largest dynamic mmap threshold, so with its
    /// defaults every such block is a fresh mmap, and small enough for this test thread's arena.)
    fn faults_of_one_large_tensor() -> i64 {
        let before = minor_faults();
        let v = vec![1.0f32; 8 << 20];
        std::hint::black_box(&v);
        drop(v);
        minor_faults() - before
    }

    #[test]
    fn a_freed_large_tensor_is_reused_without_page_faults() {
        assert_eq!(keep_freed_memory_for_reuse(), HostMemoryPolicy::KeepFreedMemory);
        assert!(describe().starts_with("freed tensor memory kept"), "{}", describe());
        let pages = (32 << 20) / 4096;
        let first = faults_of_one_large_tensor();
        let again = faults_of_one_large_tensor();
        // The first buffer may fault its pages in (or reuse what an earlier test freed); the same
        // size again must reuse the kept pages. With glibc's defaults the second buffer is a
        // fresh mmap and faults all `pages` again.
        assert!(again < pages / 20,
            "{again} faults for a second 32 MiB buffer of {pages} pages (the first took {first}): the freed memory went back to the system");
    }
}
