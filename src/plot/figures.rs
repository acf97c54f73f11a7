//! The figures, one function each, drawn with plotters into a PNG written atomically
//! (`super::write_png`; a caption line under the figure where one is given, e.g. which
//! modalities are approximations). Inputs are already parsed and checked (`super::inputs`,
//! `super::labels`); these functions only lay out and paint.

use super::inputs::{chance_topk, tops, DiscoveryReport, FinetuneRun, FtEpoch, RetrievalReport, StepMetrics};
use crate::finetune::Metrics;
use super::labels::Colouring;
use super::{plot_err, write_png};
use anyhow::{ensure, Result};
use plotters::prelude::*;
use std::path::Path;

/// Categorical colours (Tableau 10), readable on white and distinct for 7 crystal systems.
pub const CATEGORY_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const FONT: &str = "sans-serif";

/// Viridis colour map at t ∈ [0, 1], linear between matplotlib's values at 0, ⅛, …, 1 (plotters
/// has viridis only behind its `colormaps` feature; nine anchors are visually indistinguishable).
pub fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 9] = [
        (68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
        (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 8.0;
    let i = (t.floor() as usize).min(7);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// (lo, hi) of finite values, widened by `pad` of the span (and to a non-empty range).
fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-12 * hi.abs().max(1.0));
    let span = if hi == lo { lo.abs().max(1.0) * 0.1 } else { span };
    (lo - pad * span, hi + pad * span)
}

/// Training curves: loss vs step (and per-term losses when logged) above, learning rate below.
pub fn training(metrics: &[StepMetrics], title: &str, out: &Path, caption: Option<&str>) -> Result<()> {
    ensure!(!metrics.is_empty(), "no steps to plot");
    let has_lr = metrics.iter().any(|m| m.lr.is_some());
    let term_names: std::collections::BTreeSet<&String> = metrics.iter().flat_map(|m| m.term_losses.keys()).collect();
    let height = if has_lr { 700 } else { 450 };
    write_png(out, (900, height), caption, |root| {
        let root = root.titled(title, (FONT, 24)).map_err(plot_err)?;
        let (top, bottom) = if has_lr { root.split_vertically(((height as f64 - 40.0) * 0.62) as u32) } else { (root.clone(), root.clone()) };
        let (s0, s1) = (metrics[0].step, metrics.last().unwrap().step.max(metrics[0].step + 1));
        let all_losses = metrics.iter().map(|m| m.loss).chain(metrics.iter().flat_map(|m| m.term_losses.values().copied()));
        let (lo, hi) = padded_range(all_losses, 0.05);
        let mut chart = ChartBuilder::on(&top)
            .margin(12)
            .x_label_area_size(if has_lr { 20 } else { 40 })
            .y_label_area_size(70)
            .build_cartesian_2d(s0..s1, lo..hi)
            .map_err(plot_err)?;
        let mut mesh = chart.configure_mesh();
        mesh.y_desc("loss").label_style((FONT, 14)).axis_desc_style((FONT, 16));
        if !has_lr {
            mesh.x_desc("optimiser step");
        }
        mesh.draw().map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(metrics.iter().map(|m| (m.step, m.loss)), BLACK.stroke_width(2)))
            .map_err(plot_err)?
            .label("total loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        for (c, name) in term_names.iter().enumerate() {
            let colour = CATEGORY_COLOURS[c % CATEGORY_COLOURS.len()];
            let pts: Vec<(u64, f64)> = metrics.iter().filter_map(|m| m.term_losses.get(*name).map(|l| (m.step, *l))).collect();
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(1)))
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        if has_lr {
            let lrs: Vec<(u64, f64)> = metrics.iter().filter_map(|m| m.lr.map(|l| (m.step, l))).collect();
            let (_, lr_hi) = padded_range(lrs.iter().map(|p| p.1), 0.0);
            let mut chart = ChartBuilder::on(&bottom)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(s0..s1, 0.0..lr_hi * 1.08)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("optimiser step")
                .y_desc("learning rate")
                .y_label_formatter(&|v| format!("{v:.1e}"))
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .draw()
                .map_err(plot_err)?;
            chart.draw_series(LineSeries::new(lrs, BLUE.stroke_width(2))).map_err(plot_err)?;
        }
        Ok(())
    })
}

/// Short display names of modalities in pair labels.
fn modality_label(m: &str) -> String {
    match m {
        "crystal" => "crystal".into(),
        "dos" => "DOS".into(),
        "charge_density" => "density".into(),
        "text" => "text".into(),
        other => other.replace('_', " "),
    }
}

/// Grouped bars of top-1/5/10/25 retrieval accuracy for every ordered modality pair (Fig. 3A).
/// Each bar carries a black tick at its chance level min(k, n)/n (n = the pair's candidate pool),
/// so small holdout sets, where top-25 chance is large, read right. The legend sits in a band under the title so
/// it never hides a bar.
pub fn retrieval(report: &RetrievalReport, out: &Path, caption: Option<&str>) -> Result<()> {
    let pairs = &report.pairs;
    let groups = pairs.len();
    let width = (180 + 120 * groups as u32).max(800);
    let labels: Vec<String> = pairs.iter().map(|p| format!("{}→{}", modality_label(&p.query), modality_label(&p.target))).collect();
    let title = format!("Cross-modal retrieval ({} split, {} materials)", report.split, report.n_materials);
    let ks = [1usize, 5, 10, 25];
    write_png(out, (width, 600), caption, |root| {
        let root = root.margin(8, 0, 0, 0).titled(&title, (FONT, 22)).map_err(plot_err)?;
        let (band, body) = root.split_vertically(36);
        // Legend band: coloured squares + names, then the chance tick.
        let mut x = 90i32;
        for (ki, k) in ks.iter().enumerate() {
            let c = CATEGORY_COLOURS[ki];
            band.draw(&Rectangle::new([(x, 10), (x + 16, 26)], c.filled())).map_err(plot_err)?;
            band.draw(&Text::new(format!("top-{k}"), (x + 22, 10), (FONT, 15))).map_err(plot_err)?;
            x += 100;
        }
        band.draw(&PathElement::new(vec![(x, 18), (x + 22, 18)], BLACK.stroke_width(3))).map_err(plot_err)?;
        band.draw(&Text::new(format!("chance min(k, n)/n (top-1 {:.3}%)", report.chance_top1 * 100.0), (x + 28, 10), (FONT, 15)))
            .map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&body)
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(groups as f64 - 0.5), 0.0f64..1.02)
            .map_err(plot_err)?;
        let labels_ref = &labels;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.max(2) * 2 + 1)
            .x_label_formatter(&|x| {
                let r = x.round();
                if (x - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < labels_ref.len() { labels_ref[r as usize].clone() } else { String::new() }
            })
            .y_desc("retrieval accuracy")
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(plot_err)?;
        let bar = 0.8 / ks.len() as f64;
        for (ki, &k) in ks.iter().enumerate() {
            let colour = CATEGORY_COLOURS[ki];
            let x0 = |g: usize| g as f64 - 0.4 + ki as f64 * bar;
            chart
                .draw_series(pairs.iter().enumerate().map(|(g, p)| Rectangle::new([(x0(g) + 0.01, 0.0), (x0(g) + bar - 0.01, tops(p)[ki])], colour.filled())))
                .map_err(plot_err)?;
            chart
                .draw_series(pairs.iter().enumerate().map(|(g, p)| {
                    let chance = chance_topk(p, k, report.chance_top1);
                    PathElement::new(vec![(x0(g), chance), (x0(g) + bar, chance)], BLACK.stroke_width(3))
                }))
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// Mean best nMAE among the n nearest candidates vs n, model vs random candidates (Fig. 3B).
pub fn discovery(report: &DiscoveryReport, out: &Path, caption: Option<&str>) -> Result<()> {
    let n = report.n_max;
    let (lo, hi) = padded_range(report.mean_best_nmae.iter().chain(&report.random_mean_best_nmae).copied(), 0.08);
    let lo = lo.max(0.0);
    let title = format!(
        "Material discovery: {} targets, {} candidates, {:.0}…{:+.0} eV",
        report.n_targets, report.n_candidates, report.window_ev[0], report.window_ev[1]
    );
    write_png(out, (850, 520), caption, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, (FONT, 20))
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5f64..(n as f64 + 0.5), lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(n.min(15))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("n nearest candidates considered")
            .y_desc("mean best normalised MAE")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(plot_err)?;
        let series = [
            ("MultiMat (latent similarity)", &report.mean_best_nmae, CATEGORY_COLOURS[0]),
            ("random candidates", &report.random_mean_best_nmae, CATEGORY_COLOURS[7]),
        ];
        for (name, ys, colour) in series {
            let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y)).collect();
            chart.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2))).map_err(plot_err)?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// One panel of Fig. 3C: a target DOS and the best candidate's DOS.
#[derive(Clone, Debug)]
pub struct OverlayPanel {
    pub target_id: String,
    pub candidate_id: String,
    pub nmae: f64,
    pub similarity: f64,
    /// Rank of the candidate by similarity (1 = nearest).
    pub rank: usize,
    pub target: (Vec<f64>, Vec<f64>),    // (E − E_F, density) inside the window
    pub candidate: (Vec<f64>, Vec<f64>), // (E − E_F, density) inside the window
}

/// Small multiples (2 columns) of target vs best-candidate DOS over `window` eV (Fig. 3C).
pub fn dos_overlay(panels: &[OverlayPanel], window: [f64; 2], out: &Path, caption: Option<&str>) -> Result<()> {
    ensure!(!panels.is_empty(), "no DOS panels to draw");
    let cols = if panels.len() == 1 { 1 } else { 2 };
    let rows = panels.len().div_ceil(cols);
    write_png(out, (560 * cols as u32, 40 + 340 * rows as u32), caption, |root| {
        let root = root.titled("Target DOS vs best candidate among the nearest crystals", (FONT, 22)).map_err(plot_err)?;
        let areas = root.split_evenly((rows, cols));
        for (p, area) in panels.iter().zip(areas.iter()) {
            let (_, hi) = padded_range(p.target.1.iter().chain(&p.candidate.1).copied(), 0.05);
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{} vs {} (neighbour {}, nMAE {:.3}, cos {:.3})", p.target_id, p.candidate_id, p.rank, p.nmae, p.similarity),
                    (FONT, 15),
                )
                .margin(10)
                .x_label_area_size(38)
                .y_label_area_size(55)
                .build_cartesian_2d(window[0]..window[1], 0.0..hi.max(1e-6))
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("E − E_F (eV)")
                .y_desc("DOS (states/eV)")
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 13))
                .draw()
                .map_err(plot_err)?;
            let (tc, cc) = (BLACK, CATEGORY_COLOURS[3]);
            chart
                .draw_series(LineSeries::new(p.target.0.iter().copied().zip(p.target.1.iter().copied()), tc.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("target {}", p.target_id))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], tc.stroke_width(2)));
            chart
                .draw_series(LineSeries::new(p.candidate.0.iter().copied().zip(p.candidate.1.iter().copied()), cc.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("candidate {}", p.candidate_id))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], cc.stroke_width(2)));
            chart
                .configure_series_labels()
                .label_font((FONT, 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// 2-D UMAP scatter (Fig. 4): categories with a legend, or a continuous value with a colour bar
/// (viridis, clipped to the 1st–99th percentile so a few outliers do not wash out the gradient —
/// the paper removed formation-energy outliers for the same reason). Points without a value are
/// drawn first in light grey.
pub fn umap_scatter(coords: &[f32], colouring: &Colouring, title: &str, out: &Path, caption: Option<&str>) -> Result<()> {
    let n = coords.len() / 2;
    ensure!(n > 0, "no points to plot");
    let (x0, x1) = padded_range(coords.iter().step_by(2).map(|&v| v as f64), 0.04);
    let (y0, y1) = padded_range(coords.iter().skip(1).step_by(2).map(|&v| v as f64), 0.04);
    let radius = if n > 20_000 { 1 } else if n > 3_000 { 2 } else { 3 };
    let alpha = if n > 5_000 { 0.55 } else { 0.8 };
    let grey = RGBColor(200, 200, 200);
    let pt = |i: usize| (coords[2 * i] as f64, coords[2 * i + 1] as f64);
    write_png(out, (1000, 800), caption, |root| {
        let (plot_area, side) = match colouring {
            Colouring::Continuous { .. } => root.split_horizontally(850),
            Colouring::Categorical { .. } => (root.clone(), root.clone()),
        };
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("UMAP 1")
            .y_desc("UMAP 2")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(plot_err)?;
        match colouring {
            Colouring::Categorical { names, of_point, .. } => {
                let unknown: Vec<usize> = (0..n).filter(|&i| of_point[i].is_none()).collect();
                if !unknown.is_empty() {
                    chart
                        .draw_series(unknown.iter().map(|&i| Circle::new(pt(i), radius, grey.mix(alpha).filled())))
                        .map_err(plot_err)?
                        .label(format!("unknown ({})", unknown.len()))
                        .legend(move |(x, y)| Circle::new((x + 8, y), 5, grey.filled()));
                }
                // Largest categories first, so small ones stay visible on top.
                let mut order: Vec<usize> = (0..names.len()).collect();
                let count = |c: usize| of_point.iter().filter(|p| **p == Some(c)).count();
                order.sort_by_key(|&c| std::cmp::Reverse(count(c)));
                for c in order {
                    let members: Vec<usize> = (0..n).filter(|&i| of_point[i] == Some(c)).collect();
                    if members.is_empty() {
                        continue;
                    }
                    let colour = CATEGORY_COLOURS[c % CATEGORY_COLOURS.len()];
                    chart
                        .draw_series(members.iter().map(|&i| Circle::new(pt(i), radius, colour.mix(alpha).filled())))
                        .map_err(plot_err)?
                        .label(format!("{} ({})", names[c], members.len()))
                        .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
                }
                chart
                    .configure_series_labels()
                    .label_font((FONT, 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(plot_err)?;
            }
            Colouring::Continuous { title: value_title, values } => {
                let mut finite: Vec<f64> = values.iter().flatten().copied().filter(|v| v.is_finite()).collect();
                finite.sort_by(f64::total_cmp);
                let q = |f: f64| finite[((finite.len() - 1) as f64 * f).round() as usize];
                let (lo, hi) = (q(0.01), q(0.99));
                let hi = if hi > lo { hi } else { lo + 1.0 };
                let colour_of = |v: f64| viridis((v - lo) / (hi - lo));
                chart
                    .draw_series((0..n).filter(|&i| values[i].is_none()).map(|i| Circle::new(pt(i), radius, grey.mix(alpha).filled())))
                    .map_err(plot_err)?;
                chart
                    .draw_series((0..n).filter_map(|i| values[i].map(|v| Circle::new(pt(i), radius, colour_of(v).mix(alpha).filled()))))
                    .map_err(plot_err)?;
                // Colour bar.
                let mut bar = ChartBuilder::on(&side)
                    .margin_top(60)
                    .margin_bottom(60)
                    .margin_right(15)
                    .margin_left(55)
                    .set_label_area_size(LabelAreaPosition::Right, 60)
                    .caption(value_title, (FONT, 12))
                    .build_cartesian_2d(0.0f64..1.0, lo..hi)
                    .map_err(plot_err)?;
                bar.configure_mesh()
                    .disable_mesh()
                    .disable_x_axis()
                    .y_label_formatter(&|v| format!("{v:.2}"))
                    .label_style((FONT, 12))
                    .draw()
                    .map_err(plot_err)?;
                let steps = 100;
                bar.draw_series((0..steps).map(|s| {
                    let (a, b) = (lo + (hi - lo) * s as f64 / steps as f64, lo + (hi - lo) * (s + 1) as f64 / steps as f64);
                    Rectangle::new([(0.0, a), (1.0, b)], colour_of((a + b) / 2.0).filled())
                }))
                .map_err(plot_err)?;
            }
        }
        Ok(())
    })
}

/// A fine-tuning run: parity plot of the test split (predicted vs true, the y = x line, MAE and
/// R² in the title) on the left; learning curves (training loss, validation MAE with the best
/// epoch marked) on the right.
pub fn finetune(run: &FinetuneRun, m: &Metrics, out: &Path, caption: Option<&str>) -> Result<()> {
    ensure!(!run.truth.is_empty() && !run.epochs.is_empty(), "nothing to plot");
    let units = if run.units.is_empty() { String::new() } else { format!(" {}", run.units) };
    let r2 = if m.r2.is_finite() { format!("{:.3}", m.r2) } else { "n/a".into() };
    let title = format!("{}: test MAE {:.3}{units}, R² {r2} (n = {})", run.target, m.mae, m.n);
    let axis_units = if run.units.is_empty() { String::new() } else { format!(" ({})", run.units) };
    write_png(out, (1300, 620), caption, |root| {
        let root = root.titled(&title, (FONT, 24)).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(620);
        let (lo, hi) = padded_range(run.truth.iter().chain(&run.pred).copied(), 0.05);
        let mut chart = ChartBuilder::on(&left)
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(format!("true {}{axis_units}", run.target))
            .y_desc(format!("predicted {}{axis_units}", run.target))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(plot_err)?;
        chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.5).stroke_width(1))).map_err(plot_err)?;
        let colour = CATEGORY_COLOURS[0];
        chart
            .draw_series(run.truth.iter().zip(&run.pred).map(|(&t, &p)| Circle::new((t, p), 3, colour.mix(0.7).filled())))
            .map_err(plot_err)?;

        let (top, bottom) = right.split_vertically(290);
        let (e0, e1) = (run.epochs[0].epoch, run.epochs.last().unwrap().epoch.max(run.epochs[0].epoch + 1));
        for (area, name, colour, value) in [
            (&top, "training loss".to_string(), CATEGORY_COLOURS[1], (|e: &FtEpoch| e.train_loss) as fn(&FtEpoch) -> f64),
            (&bottom, format!("validation MAE{axis_units}"), CATEGORY_COLOURS[0], |e: &FtEpoch| e.val_mae),
        ] {
            let (y0, y1) = padded_range(run.epochs.iter().map(value), 0.05);
            let mut chart = ChartBuilder::on(area)
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(e0..e1, y0..y1)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(name)
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .draw()
                .map_err(plot_err)?;
            chart.draw_series(LineSeries::new(run.epochs.iter().map(|e| (e.epoch, value(e))), colour.stroke_width(2))).map_err(plot_err)?;
        }
        // The best epoch (lowest validation MAE: the model the test split was predicted with).
        let best = run.epochs.iter().min_by(|a, b| a.val_mae.total_cmp(&b.val_mae)).unwrap();
        let (y0, y1) = padded_range(run.epochs.iter().map(|e| e.val_mae), 0.05);
        let mut chart = ChartBuilder::on(&bottom)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(e0..e1, y0..y1)
            .map_err(plot_err)?;
        chart.draw_series([Circle::new((best.epoch, best.val_mae), 5, BLACK.filled())]).map_err(plot_err)?;
        Ok(())
    })
}
