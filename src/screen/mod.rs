//! Exact top-k cosine-similarity screening: blocked GEMM fused with per-query bounded heaps,
//! streaming over candidates, deterministic tie-break by material id.

/// Entry point of the `multimat-screen` binary.
pub fn cli_main() -> anyhow::Result<()> {
    anyhow::bail!("multimat-screen is not implemented yet in this build")
}
