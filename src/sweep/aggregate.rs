//! Aggregation of a complete sweep into the paper's Table 1 layout: for every variant, the
//! learning rate with the lowest mean validation MAE over seeds, and at that rate the test MAE
//! (also RMSE, R²) as mean ± sample standard deviation (n − 1) over seeds.
//!
//! With an external test set (`data.test_shards`), the same statistics of its metrics stand
//! beside the split's (the learning rate is still chosen on validation MAE only).
//!
//! Inputs are only the runs' `result.json` files, read in plan order (sorted by id), and the
//! output has no timings or paths, so `table.md`/`table.csv` are byte-identical however the runs
//! were spread over processes, ranks or array tasks.

use super::Plan;
use crate::finetune::{read_result, FinetuneResult};
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Mean and sample standard deviation (NaN for fewer than two values).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = if v.len() < 2 { f64::NAN } else { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() };
    (mean, std)
}

/// One (variant, learning rate) cell over seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub variant: String,
    pub lr: f64,
    pub seeds: usize,
    pub chosen: bool,
    pub val_mae: (f64, f64),
    pub test_mae: (f64, f64),
    pub test_rmse: (f64, f64),
    pub test_r2: (f64, f64),
    pub best_epoch_mean: f64,
    /// External test set metrics (mean, std over seeds), when the runs had one.
    pub external: Option<ExternalCell>,
}

/// One cell's external test metrics over seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalCell {
    pub n: usize,
    pub mae: (f64, f64),
    pub rmse: (f64, f64),
    pub r2: (f64, f64),
}

pub struct Table {
    pub target: String,
    pub units: String,
    pub standardized: bool,
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    /// Cells in variant order (as in the sweep file), then ascending learning rate.
    pub cells: Vec<Cell>,
}

/// Collect every run's result; errors listing the incomplete runs if any is missing.
pub fn build(plan: &Plan) -> Result<Table> {
    let missing: Vec<&str> = plan.runs.iter().filter(|r| !r.is_complete()).map(|r| r.id.as_str()).collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} runs are not complete (no result.json), e.g. {}; run the sweep (again) first",
            missing.len(), plan.runs.len(), missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let results: Vec<FinetuneResult> = plan.runs.iter().map(|r| read_result(&r.dir)).collect::<Result<_>>()?;
    let first = &results[0];
    for (r, res) in plan.runs.iter().zip(&results) {
        if res.target != first.target || res.units != first.units || res.standardized != first.standardized {
            bail!("run {} has target {:?} ({}), standardised {}, unlike the other runs", r.id, res.target, res.units, res.standardized);
        }
        if res.external.is_some() != first.external.is_some() {
            bail!("run {} {} an external test set, unlike run {}", r.id, if res.external.is_some() { "has" } else { "has no" }, plan.runs[0].id);
        }
    }
    let mut cells = Vec::new();
    let mut lrs = plan.config.lrs.clone();
    lrs.sort_by(f64::total_cmp);
    for (vi, v) in plan.config.variants.iter().enumerate() {
        let start = cells.len();
        for &lr in &lrs {
            let rs: Vec<&FinetuneResult> =
                plan.runs.iter().zip(&results).filter(|(r, _)| r.variant == vi && r.lr == lr).map(|(_, res)| res).collect();
            let col = |f: &dyn Fn(&FinetuneResult) -> f64| -> Vec<f64> { rs.iter().map(|r| f(r)).collect() };
            cells.push(Cell {
                variant: v.name.clone(),
                lr,
                seeds: rs.len(),
                chosen: false,
                val_mae: mean_std(&col(&|r| r.val_mae)),
                test_mae: mean_std(&col(&|r| r.test_mae)),
                test_rmse: mean_std(&col(&|r| r.test_rmse)),
                test_r2: mean_std(&col(&|r| r.test_r2.unwrap_or(f64::NAN))),
                best_epoch_mean: mean_std(&col(&|r| r.best_epoch as f64)).0,
                external: first.external.as_ref().map(|_| {
                    let ext: Vec<&crate::finetune::ExternalTest> = rs.iter().filter_map(|r| r.external.as_ref()).collect();
                    let col = |f: &dyn Fn(&crate::finetune::ExternalTest) -> f64| -> Vec<f64> { ext.iter().map(|e| f(e)).collect() };
                    ExternalCell {
                        n: ext.first().map(|e| e.n).unwrap_or(0),
                        mae: mean_std(&col(&|e| e.mae)),
                        rmse: mean_std(&col(&|e| e.rmse)),
                        r2: mean_std(&col(&|e| e.r2.unwrap_or(f64::NAN))),
                    }
                }),
            });
        }
        // Lowest mean validation MAE; ties go to the smaller learning rate (first in order).
        let best = (start..cells.len()).min_by(|&a, &b| cells[a].val_mae.0.total_cmp(&cells[b].val_mae.0)).unwrap();
        cells[best].chosen = true;
    }
    Ok(Table {
        target: first.target.clone(),
        units: first.units.clone(),
        standardized: first.standardized,
        n_train: first.n_train,
        n_val: first.n_val,
        n_test: first.n_test,
        cells,
    })
}

fn pm(v: (f64, f64), digits: usize) -> String {
    if v.1.is_finite() {
        format!("{:.*} ± {:.*}", digits, v.0, digits, v.1)
    } else {
        format!("{:.*}", digits, v.0)
    }
}

/// A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.to_string() }
}

fn num(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { String::new() }
}

impl Table {
    pub fn markdown(&self) -> String {
        let u = if self.units.is_empty() { String::new() } else { format!(" ({})", self.units) };
        let mut s = String::new();
        let _ = writeln!(s, "# Fine-tuning: {}{u}\n", self.target);
        let seeds = self.cells.first().map(|c| c.seeds).unwrap_or(0);
        let _ = writeln!(
            s,
            "Test metrics of the best-validation checkpoint, mean ± sample std (n − 1) over {seeds} seeds, at the \
learning rate with the lowest mean validation MAE. Split {}/{}/{} (train/val/test); target {}.\n",
            self.n_train, self.n_val, self.n_test,
            if self.standardized { "standardised for training (metrics in target units)" } else { "in raw units" }
        );
        let ext_n = self.cells.first().and_then(|c| c.external.as_ref()).map(|e| e.n);
        if let Some(n) = ext_n {
            let _ = writeln!(s, "External test set (data.test_shards, {n} records): its metrics stand beside the split's.\n");
            let _ = writeln!(s, "| Variant | lr | Test MAE{u} | Test RMSE{u} | Test R² | Val MAE{u} | External MAE{u} | External RMSE{u} | External R² |");
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        } else {
            let _ = writeln!(s, "| Variant | lr | Test MAE{u} | Test RMSE{u} | Test R² | Val MAE{u} |");
            let _ = writeln!(s, "|---|---|---|---|---|---|");
        }
        for c in self.cells.iter().filter(|c| c.chosen) {
            let ext = c.external.as_ref().map(|e| format!(" {} | {} | {} |", pm(e.mae, 3), pm(e.rmse, 3), pm(e.r2, 3))).unwrap_or_default();
            let _ = writeln!(s, "| {} | {:e} | {} | {} | {} | {} |{ext}", c.variant, c.lr, pm(c.test_mae, 3), pm(c.test_rmse, 3), pm(c.test_r2, 3), pm(c.val_mae, 3));
        }
        let _ = writeln!(s, "\n## Every learning rate\n");
        let _ = writeln!(s, "| Variant | lr | Val MAE{u} | Test MAE{u} | mean best epoch |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for c in &self.cells {
            let mark = if c.chosen { " ✓" } else { "" };
            let _ = writeln!(s, "| {} | {:e}{mark} | {} | {} | {:.1} |", c.variant, c.lr, pm(c.val_mae, 3), pm(c.test_mae, 3), c.best_epoch_mean);
        }
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from(
            "variant,lr,chosen,seeds,val_mae_mean,val_mae_std,test_mae_mean,test_mae_std,test_rmse_mean,test_rmse_std,test_r2_mean,test_r2_std,units,\
target,external_n,external_mae_mean,external_mae_std,external_rmse_mean,external_rmse_std,external_r2_mean,external_r2_std\n",
        );
        for c in &self.cells {
            let name = csv_field(&c.variant);
            // The external columns stay empty without an external test set.
            let ext = match &c.external {
                Some(e) => format!("{},{},{},{},{},{},{}", e.n, num(e.mae.0), num(e.mae.1), num(e.rmse.0), num(e.rmse.1), num(e.r2.0), num(e.r2.1)),
                None => ",,,,,,".to_string(),
            };
            let _ = writeln!(
                s,
                "{name},{:e},{},{},{},{},{},{},{},{},{},{},{},{},{ext}",
                c.lr, c.chosen, c.seeds, num(c.val_mae.0), num(c.val_mae.1), num(c.test_mae.0), num(c.test_mae.1),
                num(c.test_rmse.0), num(c.test_rmse.1), num(c.test_r2.0), num(c.test_r2.1), csv_field(&self.units), csv_field(&self.target)
            );
        }
        s
    }
}

/// Build the table and write `table.md` and `table.csv` into the sweep directory.
pub fn write(plan: &Plan) -> Result<(Table, PathBuf, PathBuf)> {
    let t = build(plan)?;
    let md = plan.config.out_dir.join("table.md");
    let csv = plan.config.out_dir.join("table.csv");
    crate::atomic::write_bytes(&md, t.markdown().as_bytes())?;
    crate::atomic::write_bytes(&csv, t.csv().as_bytes())?;
    Ok((t, md, csv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 4.0]);
        assert!((m - 7.0 / 3.0).abs() < 1e-12);
        // deviations −4/3, −1/3, 5/3 → squares 16/9 + 1/9 + 25/9 = 42/9; / 2 = 7/3
        assert!((s - (7.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(mean_std(&[3.0]).1.is_nan());
    }
}
