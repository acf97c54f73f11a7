//! `multimat table1` on two small real sweeps (bulk and shear modulus on 60 matminer crystals,
//! rows named as the paper's plus one that is not): each sweep is the column of its target, each
//! chosen value is the one in that sweep's table.csv, beside the paper's number for the row;
//! the row the paper lacks comes after the paper's; two sweeps of one target are refused.

#[path = "finetune_common/mod.rs"]
mod finetune_common;

use finetune_common::*;
use multimat::sweep::table1::{read_sweep_table, PAPER_ROWS};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A sweep of `target` with the variants "PotNet", "CGCNN" (paper rows) and "PotNet wide" (not).
fn write_named_sweep(dir: &Path, target: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let base = write_ft_config(&dir.join("base.toml"), Path::new("unused"), "");
    let text = format!(
        r#"
base = "{base}"
out_dir = "out"
lrs = [3e-3]
seeds = [0, 1]
set = ["optim.epochs=2", "data.max_records=60", "data.target=\"{target}\""]

[[variants]]
name = "CGCNN"
crystal_encoder = "cgcnn"

[[variants]]
name = "PotNet"
crystal_encoder = "potnet"

[[variants]]
name = "PotNet wide"
crystal_encoder = "potnet"
set = ["model.encoders.potnet.hidden=12"]
"#,
        base = base.display()
    );
    let p = dir.join("sweep.toml");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(bin()).args(["sweep", "--config"]).arg(&p).output().unwrap();
    assert!(o.status.success(), "sweep of {target} failed: {}", String::from_utf8_lossy(&o.stderr));
    dir.join("out")
}

#[test]
fn table1_places_each_sweep_in_its_column_beside_the_papers_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let shear = write_named_sweep(&dir.path().join("shear"), "G_VRH");
    let bulk = write_named_sweep(&dir.path().join("bulk"), "K_VRH");
    let out = dir.path().join("table1.md");
    // Given shear first: the columns still follow the paper's order (bulk, then shear).
    let o = Command::new(bin()).args(["table1", "--out"]).arg(&out).arg("--sweeps").arg(&shear).arg(&bulk).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains("| Section | Row | Bulk modulus (ours) | Bulk modulus (paper) | Shear modulus (ours) | Shear modulus (paper) |"), "{md}");

    let (tb, ts) = (read_sweep_table(&bulk).unwrap(), read_sweep_table(&shear).unwrap());
    assert_eq!((tb.target.as_str(), ts.target.as_str()), ("K_VRH", "G_VRH"));
    let ours = |t: &multimat::sweep::table1::SweepTable, row: &str| {
        let r = t.rows.iter().find(|r| r.variant == row).unwrap();
        assert_eq!(r.seeds, 2);
        format!("{:.3} ± {:.3}", r.test_mae.0, r.test_mae.1)
    };
    // The chosen values equal a direct read of each sweep's table.csv.
    let csv_value = |sweep: &Path, row: &str| -> f64 {
        let text = std::fs::read_to_string(sweep.join("table.csv")).unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{row},")) && l.contains(",true,")).unwrap().to_string();
        line.split(',').nth(6).unwrap().parse().unwrap()
    };
    assert!((tb.rows.iter().find(|r| r.variant == "PotNet").unwrap().test_mae.0 - csv_value(&bulk, "PotNet")).abs() == 0.0);
    for (k, row) in ["CGCNN", "PotNet"].iter().enumerate() {
        let paper = PAPER_ROWS[k].2;
        let line = format!(
            "| Without MultiMat | {row} | {} | {:.3} ± {:.3} | {} | {:.3} ± {:.3} |",
            ours(&tb, row), paper[0].0, paper[0].1, ours(&ts, row), paper[1].0, paper[1].1
        );
        assert!(md.contains(&line), "missing {line}\n{md}");
    }
    // The variant the paper lacks: after the paper's rows, no paper number.
    let wide = format!("| Not in the paper | PotNet wide | {} | — | {} | — |", ours(&tb, "PotNet wide"), ours(&ts, "PotNet wide"));
    let (i_potnet, i_wide) = (md.find("| PotNet |").unwrap(), md.find(&wide).unwrap_or_else(|| panic!("missing {wide}\n{md}")));
    assert!(i_potnet < i_wide);
    // No MultiMat rows were run, so none is listed.
    assert!(!md.contains("Crystal, DOS"), "{md}");

    // One sweep per column.
    let o = Command::new(bin()).args(["table1", "--out"]).arg(dir.path().join("x.md")).arg("--sweeps").arg(&bulk).arg(&bulk).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("both sweeps of target \"K_VRH\""), "{err}");
    // A directory without a sweep table is named.
    let o = Command::new(bin()).args(["table1", "--sweeps"]).arg(dir.path()).arg("--out").arg(dir.path().join("y.md")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("table.csv") && err.contains("no sweep table"), "{err}");
}
