//! `multimat bench …`: every throughput measurement of the project in one place, one file per
//! subject (engine GEMM and Transformer block, 3-D convolutions, encoders vs PyTorch, BERT text
//! embedding, contrastive losses, ingest, lattice sums, the cuda-sim executor, streamed vs in-memory training data), plus the process counters they share.
//!
//! The counters read Linux's `/proc/self`: CPU time (user + system over all threads) barely moves
//! when other processes share the cores, so benchmarks print it beside wall time on shared
//! machines; the peak resident set size (VmHWM) is the memory figure users compare with PyTorch.

pub mod conv3d;
pub mod cuda_sim;
pub mod encoders;
pub mod engine;
pub mod ingest;
pub mod lattice_sums;
pub mod loss;
pub mod stream;
pub mod text;

/// CPU seconds (user + system, all threads) this process has used so far, from /proc/self/stat
/// (Linux, USER_HZ = 100 ticks per second); None where unavailable.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the ")" that closes the command name, token 0 is field 3 (state), so utime (field 14)
    // and stime (field 15) are tokens 11 and 12.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
}

/// Peak resident set size of this process (VmHWM), MiB; None off Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak-RSS counter (Linux ≥ 4.0: writing 5 to clear_refs); best effort.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work_and_rss_is_reported() {
        let t0 = super::process_cpu_seconds().expect("/proc/self/stat is readable on Linux");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 150 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let t1 = super::process_cpu_seconds().unwrap();
        assert!(t1 >= t0 && t1 - t0 < 60.0, "{t0} → {t1}");
        assert!(super::peak_rss_mib().unwrap() > 1.0);
    }
}
