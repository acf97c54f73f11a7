//! The ingest hooks that attach, to an input that has a structure but no measured data, an
//! approximate (promolecular) charge density, an approximate (tight-binding) DOS, and a
//! generated structure description as the text (the physics lives in `approx`). Real data
//! always wins, and each attached modality's provenance carries its `approx::demo_data` label.

use super::Input;
use crate::approx::demo_data::{APPROX_DENSITY_SOURCE, APPROX_DOS_SOURCE, GENERATED_TEXT_SOURCE};
use anyhow::{Context, Result};

/// `input` with a promolecular charge density on `grid` attached, unless it already has a
/// density (real data wins). Fails if the input has no structure or the density cannot be built.
pub fn with_promolecular_density(input: &Input, grid: [usize; 3]) -> Result<Input> {
    if input.files.charge_density.is_some() || input.record.charge_density.is_some() {
        return Ok(input.clone());
    }
    let structure = match (&input.record.structure, &input.files.structure) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => crate::io::read_structure(p)?,
        (None, None) => anyhow::bail!("no structure to compute an approximate charge density from"),
    };
    let density = crate::approx::promolecular::promolecular_density(&structure, grid).context("computing the promolecular (approximate) charge density")?;
    let mut out = input.clone();
    out.record.charge_density = Some(density);
    out.record
        .provenance
        .sources
        .insert("charge_density".into(), String::from_utf8_lossy(APPROX_DENSITY_SOURCE).into_owned());
    Ok(out)
}

/// `input` with a tight-binding DOS ([`super::tight_binding`]) attached, unless it already has a
/// DOS (real data wins). Fails if the input has no structure or an element has no parameters.
pub fn with_tight_binding_dos(input: &Input, params: &crate::approx::tight_binding::TightBindingParams) -> Result<Input> {
    if input.files.dos.is_some() || input.record.dos.is_some() {
        return Ok(input.clone());
    }
    let structure = match (&input.record.structure, &input.files.structure) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => crate::io::read_structure(p)?,
        (None, None) => anyhow::bail!("no structure to compute an approximate (tight-binding) DOS from"),
    };
    let dos = crate::approx::tight_binding::tight_binding_dos(&structure, params).context("computing the tight-binding (approximate) DOS")?;
    let mut out = input.clone();
    out.record.dos = Some(dos);
    out.record.provenance.sources.insert("dos".into(), String::from_utf8_lossy(APPROX_DOS_SOURCE).into_owned());
    Ok(out)
}

/// `input` with `text` (made elsewhere, e.g. by robocrys) as its text under provenance
/// `source`, unless it already has one (real text wins).
pub fn with_text(input: &Input, text: &str, source: &str) -> Result<Input> {
    if input.record.text.as_ref().is_some_and(|t| !t.trim().is_empty()) {
        return Ok(input.clone());
    }
    let mut out = input.clone();
    out.record.text = Some(text.to_string());
    out.record.provenance.sources.insert("text".into(), source.into());
    Ok(out)
}

/// `input` with a generated structure description (`approx::describe`) as its text, unless it
/// already has one (real text wins). The embedding is left to `multimat embed-text`.
pub fn with_generated_text(input: &Input) -> Result<Input> {
    if input.record.text.as_ref().is_some_and(|t| !t.trim().is_empty()) {
        return Ok(input.clone());
    }
    let structure = match (&input.record.structure, &input.files.structure) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => crate::io::read_structure(p)?,
        (None, None) => anyhow::bail!("no structure to describe"),
    };
    let text = crate::approx::describe::describe(&structure).context("generating the structure description")?;
    let mut out = input.clone();
    out.record.text = Some(text);
    out.record.provenance.sources.insert("text".into(), GENERATED_TEXT_SOURCE.into());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approx::promolecular::valence_electrons;
    use crate::material::{MaterialRecord, Structure};

    fn rocksalt_nacl() -> Structure {
        let a = 5.64;
        let l = [[0.0, a / 2.0, a / 2.0], [a / 2.0, 0.0, a / 2.0], [a / 2.0, a / 2.0, 0.0]];
        Structure { lattice: l, species: vec![11, 17], frac_coords: vec![[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]] }
    }

    #[test]
    fn attached_density_counts_the_valence_electrons_and_is_labelled() {
        let s = rocksalt_nacl();
        let input = Input { id: "mp-22862".into(), record: MaterialRecord { id: "mp-22862".into(), structure: Some(s.clone()), ..Default::default() }, ..Default::default() };
        let out = with_promolecular_density(&input, [16, 16, 16]).unwrap();
        let rho = out.record.charge_density.as_ref().unwrap();
        let expected: f64 = s.species.iter().map(|&z| valence_electrons(z).unwrap()).sum();
        assert!(expected > 0.0);
        assert!((rho.electron_count() - expected).abs() / expected < 1e-3, "{} vs {expected}", rho.electron_count());
        assert!(out.record.provenance.sources["charge_density"].contains("promolecular"));
        // A record without a structure is refused with a reason, not a panic.
        let bare = Input { id: "x".into(), ..Default::default() };
        let e = with_promolecular_density(&bare, [8, 8, 8]).unwrap_err();
        assert!(format!("{e:#}").contains("no structure"));
    }

    #[test]
    fn attached_tight_binding_dos_is_labelled_and_real_data_wins() {
        use crate::approx::tight_binding::TightBindingParams;
        let s = rocksalt_nacl();
        let input = Input { id: "mp-22862".into(), record: MaterialRecord { id: "mp-22862".into(), structure: Some(s), ..Default::default() }, ..Default::default() };
        let params = TightBindingParams { kgrid: Some([4, 4, 4]), ..Default::default() };
        let out = with_tight_binding_dos(&input, &params).unwrap();
        let dos = out.record.dos.as_ref().unwrap();
        assert_eq!(dos.energies.len(), params.points);
        assert!(dos.densities_up.iter().any(|&v| v > 0.1));
        assert!(out.record.provenance.sources["dos"].contains("tight-binding"));
        // An input that already has a DOS keeps it.
        let again = with_tight_binding_dos(&out, &TightBindingParams { sigma: 0.5, ..params.clone() }).unwrap();
        assert_eq!(again.record.dos, out.record.dos);
        let bare = Input { id: "x".into(), ..Default::default() };
        assert!(format!("{:#}", with_tight_binding_dos(&bare, &params).unwrap_err()).contains("no structure"));
    }

    #[test]
    fn generated_text_describes_the_structure_and_real_text_wins() {
        let input = Input { id: "mp-22862".into(), record: MaterialRecord { id: "mp-22862".into(), structure: Some(rocksalt_nacl()), ..Default::default() }, ..Default::default() };
        let out = with_generated_text(&input).unwrap();
        let text = out.record.text.as_deref().unwrap();
        assert!(text.starts_with("NaCl crystallizes in the cubic Fm-3m"), "{text}");
        assert_eq!(out.record.provenance.sources["text"], GENERATED_TEXT_SOURCE);
        assert!(out.record.text_embedding.is_none());
        let mut real = input.clone();
        real.record.text = Some("a real description".into());
        assert_eq!(with_generated_text(&real).unwrap().record.text.as_deref(), Some("a real description"));
        let bare = Input { id: "x".into(), ..Default::default() };
        assert!(format!("{:#}", with_generated_text(&bare).unwrap_err()).contains("no structure"));
    }
}
