//! `multimat plot`: PNG figures — training curves, retrieval bars (Fig. 3A), discovery nMAE vs n
//! (Fig. 3B), target-vs-candidate DOS overlays (Fig. 3C), and a 2-D UMAP of crystal embeddings
//! coloured by crystal system, formation energy or metal/non-metal (Fig. 4, coordinates also
//! written as CSV beside the PNG).

use crate::plot::{figures, inputs, labels, umap};
use anyhow::{bail, ensure, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub kind: Kind,
}

#[derive(clap::Subcommand, Debug)]
pub enum Kind {
    /// Loss vs step (per-term losses when logged) and learning rate, from a pre-training metrics.jsonl.
    Training {
        #[arg(long)]
        metrics: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Figure title.
        #[arg(long, default_value = "MultiMat pre-training")]
        title: String,
    },
    /// Grouped top-1/5/10/25 bars of every ordered modality pair, with chance (`multimat eval retrieval` output).
    Retrieval {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Mean best nMAE vs n nearest candidates, model vs random (`multimat eval discovery` output).
    Discovery {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Target DOS vs the best candidate's DOS (lowest nMAE among the listed nearest candidates).
    DosOverlay {
        #[arg(long)]
        input: PathBuf,
        /// Shard directory (or file) holding the targets' and candidates' DOS.
        #[arg(long)]
        shards: PathBuf,
        /// How many targets (the report's first ones, unless --target-ids).
        #[arg(long, default_value_t = 4)]
        targets: usize,
        /// Comma-separated target ids to draw instead of the first ones.
        #[arg(long, value_delimiter = ',')]
        target_ids: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// 2-D UMAP (cosine, 15 neighbours, min_dist 0.1) of an embeddings file, coloured from shards.
    Umap {
        /// Embeddings HDF5 (`multimat embed`, data-specs/embeddings-v1.md).
        #[arg(long)]
        embeddings: PathBuf,
        /// Shard directory (or file) with the materials' structures, targets and DOS.
        #[arg(long)]
        shards: PathBuf,
        #[arg(long, value_enum, default_value = "crystal-system")]
        color: labels::ColourBy,
        /// Target to colour by (formation-energy or band gap for metal), instead of the usual names.
        #[arg(long)]
        target: Option<String>,
        /// Symmetry tolerance in Å for the crystal systems (0.1 is Materials Project's).
        #[arg(long, default_value_t = 0.1)]
        symprec: f64,
        #[arg(long, default_value_t = 15)]
        neighbors: usize,
        #[arg(long, default_value_t = 0.1)]
        min_dist: f64,
        /// SGD epochs (default: 500 up to 10k points, 200 above, as umap-learn).
        #[arg(long)]
        epochs: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// PNG path; the 2-D coordinates go to the same path with `.csv`.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.kind {
        Kind::Training { metrics, out, title } => {
            let m = inputs::read_metrics(&metrics)?;
            figures::training(&m, &title, &out)?;
            println!("{}: {} steps", out.display(), m.len());
        }
        Kind::Retrieval { input, out } => {
            let r = inputs::read_retrieval(&input)?;
            figures::retrieval(&r, &out)?;
            println!("{}: {} modality pairs", out.display(), r.pairs.len());
        }
        Kind::Discovery { input, out } => {
            let r = inputs::read_discovery(&input)?;
            figures::discovery(&r, &out)?;
            println!("{}: n = 1…{}", out.display(), r.n_max);
        }
        Kind::DosOverlay { input, shards, targets, target_ids, out } => {
            let r = inputs::read_discovery(&input)?;
            let index = labels::ShardIndex::load(&shards)?;
            let panels = overlay_panels(&r, &input, &index, &shards, targets, &target_ids)?;
            figures::dos_overlay(&panels, r.window_ev, &out)?;
            println!("{}: {} targets", out.display(), panels.len());
        }
        Kind::Umap { embeddings, shards, color, target, symprec, neighbors, min_dist, epochs, seed, out } => {
            let params = umap::UmapParams { n_neighbors: neighbors, min_dist, n_epochs: epochs, seed, ..Default::default() };
            run_umap(&embeddings, &shards, color, target.as_deref(), symprec, &params, &out)?;
        }
    }
    Ok(())
}

/// The panels of the DOS overlay: for each chosen target, its best candidate by nMAE.
pub fn overlay_panels(
    r: &inputs::DiscoveryReport,
    input: &Path,
    index: &labels::ShardIndex,
    shards: &Path,
    count: usize,
    target_ids: &[String],
) -> Result<Vec<figures::OverlayPanel>> {
    let chosen: Vec<&inputs::DiscoveryTarget> = if target_ids.is_empty() {
        r.targets.iter().filter(|t| t.best().is_some()).take(count).collect()
    } else {
        target_ids
            .iter()
            .map(|id| r.targets.iter().find(|t| &t.target_id == id).with_context(|| format!("{}: no target {id:?}", input.display())))
            .collect::<Result<_>>()?
    };
    ensure!(!chosen.is_empty(), "{}: no target with a finite-nMAE candidate", input.display());
    let window = r.window_ev;
    let dos_in_window = |id: &str| -> Result<(Vec<f64>, Vec<f64>)> {
        let (e, d) = index.dos(id).with_context(|| format!("material {id} has no DOS in the shards at {}", shards.display()))?;
        let pts: (Vec<f64>, Vec<f64>) =
            e.iter().zip(d).filter(|(e, _)| (window[0]..=window[1]).contains(&(**e as f64))).map(|(&e, &d)| (e as f64, d as f64)).unzip();
        ensure!(pts.0.len() >= 2, "material {id}: DOS has fewer than 2 points in {window:?} eV");
        Ok(pts)
    };
    chosen
        .into_iter()
        .map(|t| {
            let best = t.best().with_context(|| format!("{}: target {} has no candidate with a finite nMAE", input.display(), t.target_id))?;
            let rank = 1 + t.candidates.iter().filter(|c| c.similarity > best.similarity).count();
            Ok(figures::OverlayPanel {
                target_id: t.target_id.clone(),
                candidate_id: best.id.clone(),
                nmae: best.nmae,
                similarity: best.similarity,
                rank,
                target: dos_in_window(&t.target_id)?,
                candidate: dos_in_window(&best.id)?,
            })
        })
        .collect()
}

/// Read embeddings, run UMAP, colour from the shards, write the PNG and the CSV beside it.
pub fn run_umap(
    embeddings: &Path,
    shards: &Path,
    color: labels::ColourBy,
    target: Option<&str>,
    symprec: f64,
    params: &umap::UmapParams,
    out: &Path,
) -> Result<()> {
    let reader = crate::embeddings::EmbeddingsReader::open(embeddings)?;
    ensure!(reader.len() >= 3, "{}: UMAP needs at least 3 embeddings, the file has {}", embeddings.display(), reader.len());
    // read_block rejects NaN/inf rows, naming the file, row and id.
    let block = reader.read_block(0..reader.len())?;
    let index = labels::ShardIndex::load(shards)?;
    let found = block.ids.iter().filter(|id| index.locate(id).is_some()).count();
    if found == 0 {
        bail!("none of the {} ids of {} is in the shards at {}", block.ids.len(), embeddings.display(), shards.display());
    }
    let colouring = labels::colouring(&index, &block.ids, color, target, symprec)?;
    let t0 = std::time::Instant::now();
    let coords = umap::umap_cosine(&block.rows, block.dim, params).with_context(|| format!("UMAP of {}", embeddings.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    let title = format!(
        "UMAP of {} {} embeddings ({} points)",
        reader.meta().modality,
        if reader.meta().model_id.is_empty() { String::new() } else { format!("[{}]", reader.meta().model_id) },
        block.len()
    )
    .replace("  ", " ");
    figures::umap_scatter(&coords, &colouring, &title, out)?;
    let csv = crate::plot::csv_beside(out);
    write_coords_csv(&csv, &block.ids, &coords, &colouring)?;
    println!("{}: {} points, UMAP {secs:.1} s ({} of them in the shards); coordinates in {}", out.display(), block.len(), found, csv.display());
    Ok(())
}

/// `id,umap_x,umap_y,<colour>` — the colour column holds the category name or the value
/// (empty when unknown).
pub fn write_coords_csv(path: &Path, ids: &[String], coords: &[f32], colouring: &labels::Colouring) -> Result<()> {
    crate::atomic::write_with(path, |tmp| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        let header = match colouring {
            labels::Colouring::Categorical { title, .. } | labels::Colouring::Continuous { title, .. } => title.replace(',', ";"),
        };
        writeln!(w, "id,umap_x,umap_y,{header}")?;
        for (i, id) in ids.iter().enumerate() {
            let c = match colouring {
                labels::Colouring::Categorical { names, of_point, .. } => of_point[i].map(|c| names[c].clone()).unwrap_or_default(),
                labels::Colouring::Continuous { values, .. } => values[i].map(|v| v.to_string()).unwrap_or_default(),
            };
            writeln!(w, "{},{},{},{}", id, coords[2 * i], coords[2 * i + 1], c)?;
        }
        w.flush()?;
        Ok(())
    })
}
