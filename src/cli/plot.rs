//! `multimat plot`: PNG figures — training curves, a fine-tuning run's parity plot and learning
//! curves, retrieval bars (Fig. 3A), discovery nMAE vs n (Fig. 3B), target-vs-candidate DOS
//! overlays (Fig. 3C), and a 2-D UMAP of crystal embeddings coloured by crystal system,
//! formation energy or metal/non-metal (Fig. 4, coordinates also written as CSV beside the PNG).

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
        /// The shards the report was computed on: the figure then names the modalities that are
        /// approximations (tight-binding DOS, promolecular density, generated text).
        #[arg(long)]
        shards: Option<PathBuf>,
    },
    /// Mean best nMAE vs n nearest candidates, model vs random (`multimat eval discovery` output).
    Discovery {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The shards the report was computed on (see `plot retrieval --shards`).
        #[arg(long)]
        shards: Option<PathBuf>,
    },
    /// Parity plot of a fine-tuning run's test split (predicted vs true, MAE and R² in the title)
    /// beside its learning curves (training loss, validation MAE per epoch).
    Finetune {
        /// The fine-tuning run directory (result.json, predictions.csv, metrics.jsonl).
        #[arg(long)]
        run: PathBuf,
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
    /// Time UMAP on Gaussian blobs and print its trustworthiness (k = 10) against a random layout.
    BenchUmap {
        /// Point counts to run.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        points: Vec<usize>,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value_t = 10)]
        blobs: usize,
        /// Trustworthiness is averaged over this many random query points (all when N is smaller).
        #[arg(long, default_value_t = 1000)]
        trust_queries: usize,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.kind {
        Kind::Training { metrics, out, title } => {
            let m = inputs::read_metrics(&metrics)?;
            let run_dir = metrics.parent().unwrap_or(Path::new("."));
            let caption = caption_for(inputs::run_shards(run_dir));
            figures::training(&m, &title, &out, caption.as_deref())?;
            println!("{}: {} steps", out.display(), m.len());
        }
        Kind::Retrieval { input, out, shards } => {
            let r = inputs::read_retrieval(&input)?;
            figures::retrieval(&r, &out, caption_for(shards.map(|s| vec![s])).as_deref())?;
            println!("{}: {} modality pairs", out.display(), r.pairs.len());
        }
        Kind::Discovery { input, out, shards } => {
            let r = inputs::read_discovery(&input)?;
            figures::discovery(&r, &out, caption_for(shards.map(|s| vec![s])).as_deref())?;
            println!("{}: n = 1…{}", out.display(), r.n_max);
        }
        Kind::Finetune { run, out } => {
            let r = inputs::read_finetune_run(&run)?;
            let m = crate::finetune::regression_metrics(&r.pred, &r.truth, r.width);
            figures::finetune(&r, &m, &out, caption_for(inputs::run_shards(&run)).as_deref())?;
            println!("{}: {} test materials, test MAE {:.3} {}, R² {:.3}", out.display(), m.n, m.mae, r.units, m.r2);
        }
        Kind::DosOverlay { input, shards, targets, target_ids, out } => {
            let r = inputs::read_discovery(&input)?;
            let index = labels::ShardIndex::load(&shards)?;
            let panels = overlay_panels(&r, &input, &index, &shards, targets, &target_ids)?;
            figures::dos_overlay(&panels, r.window_ev, &out, caption_for(Some(vec![shards.clone()])).as_deref())?;
            println!("{}: {} targets", out.display(), panels.len());
        }
        Kind::Umap { embeddings, shards, color, target, symprec, neighbors, min_dist, epochs, seed, out } => {
            let params = umap::UmapParams { n_neighbors: neighbors, min_dist, n_epochs: epochs, seed, ..Default::default() };
            run_umap(&embeddings, &shards, color, target.as_deref(), symprec, &params, &out)?;
        }
        Kind::BenchUmap { points, dim, blobs, trust_queries } => bench_umap(&points, dim, blobs, trust_queries)?,
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
        r.targets.iter().filter(|t| inputs::best_candidate(t).is_some()).take(count).collect()
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
            let best = inputs::best_candidate(t).with_context(|| format!("{}: target {} has no candidate with a finite nMAE", input.display(), t.target_id))?;
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

/// The approximation caption for a figure drawn from `shards` (see
/// [`inputs::approximation_caption`]); a shard that cannot be read for it only costs the caption.
fn caption_for(shards: Option<Vec<PathBuf>>) -> Option<String> {
    let shards = shards?;
    match inputs::approximation_caption(&shards) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("note: could not check {shards:?} for approximate modalities ({e:#}); the figure has no caption");
            None
        }
    }
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
    figures::umap_scatter(&coords, &colouring, &title, out, caption_for(Some(vec![shards.to_path_buf()])).as_deref())?;
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

/// `multimat plot bench-umap`: wall time of the exact kNN and of the whole UMAP, trustworthiness
/// (k = 10) of the layout and of a random layout, and the fraction of 2-D 10-NN in the same blob.
pub fn bench_umap(points: &[usize], dim: usize, blobs: usize, trust_queries: usize) -> Result<()> {
    use rand::{Rng, SeedableRng};
    println!("threads {}  dim {dim}  blobs {blobs}", rayon::current_num_threads());
    println!("{:>7} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}", "N", "knn_s", "umap_s", "umap_cpu_s", "trust", "trust_rnd", "blob_nn");
    for &n in points {
        ensure!(n >= blobs.max(3) * 2, "N = {n} too small for {blobs} blobs");
        let (data, label) = umap::gaussian_blobs(blobs, n / blobs, dim, 1);
        let n = label.len();
        let t0 = std::time::Instant::now();
        let unit = umap::normalise_rows(&data, dim)?;
        let _ = umap::exact_knn_cosine(&unit, dim, 14);
        let knn_s = t0.elapsed().as_secs_f64();
        let (t0, c0) = (std::time::Instant::now(), crate::bench::process_cpu_seconds().unwrap_or(0.0));
        let layout = umap::umap_cosine(&data, dim, &umap::UmapParams::default())?;
        let (umap_s, umap_cpu) = (t0.elapsed().as_secs_f64(), crate::bench::process_cpu_seconds().unwrap_or(0.0) - c0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let queries: Vec<usize> = if n <= trust_queries { (0..n).collect() } else { (0..trust_queries).map(|_| rng.random_range(0..n)).collect() };
        let trust = umap::trustworthiness_of(&data, dim, &layout, 2, 10, &queries)?;
        let random: Vec<f32> = (0..2 * n).map(|_| rng.random_range(-10.0f32..10.0)).collect();
        let trust_rnd = umap::trustworthiness_of(&data, dim, &random, 2, 10, &queries)?;
        let same: usize = queries
            .iter()
            .map(|&i| {
                let mut d: Vec<(f32, usize)> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| ((layout[2 * i] - layout[2 * j]).powi(2) + (layout[2 * i + 1] - layout[2 * j + 1]).powi(2), j))
                    .collect();
                d.select_nth_unstable_by(9, |a, b| a.0.total_cmp(&b.0));
                d[..10].iter().filter(|(_, j)| label[*j] == label[i]).count()
            })
            .sum();
        let blob_nn = same as f64 / (10 * queries.len()) as f64;
        println!("{n:>7} {knn_s:>9.2} {umap_s:>9.2} {umap_cpu:>10.2} {trust:>9.4} {trust_rnd:>9.4} {blob_nn:>9.3}");
    }
    Ok(())
}

