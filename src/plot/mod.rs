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

/// Caption lines under a captioned figure: line height and the strip's padding, in pixels, and
/// the average width of a 15 px DejaVu Sans character (for wrapping).
const CAPTION_LINE: u32 = 20;
const CAPTION_PAD: u32 = 10;
const CAPTION_CHAR_PX: f64 = 8.5;

/// `text` broken at spaces into lines of at most `max_chars` characters.
fn wrap_words(text: &str, max_chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= max_chars => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// Render a `(width, height)` PNG to `path` atomically: `draw` paints into a plotters bitmap
/// backend whose file is a `.png`-named temporary beside the final path (the backend picks the
/// encoder from the extension), then `crate::atomic::write_with` renames it into place. A
/// `caption` is written in a strip below the drawing (the figure grows by that strip), so that
/// what a reader must know — e.g. that a modality is an approximation — travels with the image.
pub fn write_png<F>(path: &Path, size: (u32, u32), caption: Option<&str>, draw: F) -> Result<()>
where
    F: FnOnce(&plotters::drawing::DrawingArea<plotters::prelude::BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
{
    use plotters::prelude::*;
    register_font()?;
    crate::atomic::write_with(path, |tmp| {
        let png_tmp = tmp.with_file_name(format!("{}.png", tmp.file_name().unwrap_or_default().to_string_lossy()));
        let result = (|| {
            let lines = caption.map(|t| wrap_words(t, ((size.0 - 20) as f64 / CAPTION_CHAR_PX) as usize)).unwrap_or_default();
            let strip_height = if lines.is_empty() { 0 } else { CAPTION_PAD + CAPTION_LINE * lines.len() as u32 };
            let root = BitMapBackend::new(&png_tmp, (size.0, size.1 + strip_height)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            if lines.is_empty() {
                draw(&root)?;
            } else {
                let (figure, strip) = root.split_vertically(size.1);
                draw(&figure)?;
                let style = TextStyle::from(("sans-serif", 15).into_font()).color(&RGBColor(150, 20, 20));
                for (k, line) in lines.iter().enumerate() {
                    strip.draw_text(line, &style, (10, 5 + (CAPTION_LINE * k as u32) as i32)).map_err(plot_err)?;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::wrap_words;

    #[test]
    fn captions_wrap_at_spaces_and_keep_every_word() {
        let text = "Approximations computed by multimat, not DFT: dos (tight-binding, 7 of 14); text (generated text, 14 of 14)";
        let lines = wrap_words(text, 40);
        assert!(lines.iter().all(|l| l.chars().count() <= 40), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        assert_eq!(wrap_words("short", 40), vec!["short"]);
    }
}
