//! `multimat plot`: the paper's figures as PNG files — training curves from `metrics.jsonl`,
//! retrieval bars (Fig. 3A), mean best nMAE vs n (Fig. 3B), target-vs-candidate DOS overlays
//! (Fig. 3C) and 2-D UMAP maps of crystal embeddings (Fig. 4).
//!
//! Drawing uses `plotters` (bitmap backend + `ab_glyph` text, DejaVu Sans from Debian
//! `fonts-dejavu-core`, as `multimat demo` does). `inputs` parses the JSON/JSONL inputs,
//! `labels` derives point colours from shards (moyo crystal systems, targets, DOS at E_F),
//! `figures` draws, `umap` reduces dimensions.

pub mod figures;
pub mod inputs;
pub mod labels;
pub mod umap;

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::sync::OnceLock;

/// The TTF every figure is drawn with; plotters' `ab_glyph` backend has no font lookup.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Register DejaVu Sans as plotters' "sans-serif" once per process, or say how to install it.
pub fn register_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT_PATH).map_err(|e| {
            format!("figures are drawn with {FONT_PATH} ({e}): run ./scripts/bootstrap.sh (installs Debian fonts-dejavu-core)")
        })?;
        // plotters keeps a &'static font: leak the bytes once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT_PATH}: not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Render a `(width, height)` PNG to `path` atomically: `draw` paints into a plotters bitmap
/// backend whose file is a `.png`-named temporary beside the final path (the backend picks the
/// encoder from the extension), then `crate::atomic::write_with` renames it into place.
pub fn write_png<F>(path: &Path, size: (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(&plotters::drawing::DrawingArea<plotters::prelude::BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
{
    use plotters::prelude::*;
    register_font()?;
    crate::atomic::write_with(path, |tmp| {
        let png_tmp = tmp.with_file_name(format!("{}.png", tmp.file_name().unwrap_or_default().to_string_lossy()));
        let result = (|| {
            let root = BitMapBackend::new(&png_tmp, size).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            draw(&root)?;
            root.present().map_err(|e| anyhow!("encoding PNG {}: {e}", png_tmp.display()))?;
            drop(root);
            std::fs::rename(&png_tmp, tmp).with_context(|| format!("renaming {} to {}", png_tmp.display(), tmp.display()))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&png_tmp);
        }
        result
    })
}

/// plotters' drawing errors as anyhow errors.
pub fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// `FILE.png` → `FILE.csv` (the UMAP coordinates are written beside the figure).
pub fn csv_beside(png: &Path) -> std::path::PathBuf {
    png.with_extension("csv")
}
