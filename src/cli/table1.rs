//! `multimat table1`: the sweeps' `table.csv` files arranged as the paper's Table 1, each value
//! beside the paper's (`sweep::table1`).

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(long_about = "Assemble finished fine-tuning sweeps into the paper's Table 1 layout, beside the paper's numbers.\n\n\
Each sweep (its directory or its table.csv) is one column, recognised by its target: K_VRH = bulk \
modulus, G_VRH = shear modulus, elastic_tensor, band_gap_hse = band gap (SNUMAT); other targets become \
extra columns. Rows are the sweeps' variants, matched by name to the paper's row labels (as in \
configs/paper/sweep-*.toml: \"CGCNN\", \"PotNet\", \"Crystal, DOS\", …, \"Crystal, DOS, charge density, \
text / AnchoredCLIP\"); other variants are listed after them. A sweep with an external test set \
(data.test_shards) adds its external MAE beside the column.\n\n\
Example: multimat table1 --sweeps runs/paper/sweep-bulk runs/paper/sweep-shear --out table1.md")]
pub struct Args {
    /// Sweep directories (or their table.csv), one per target.
    #[arg(long, value_name = "DIR", num_args = 1.., required = true)]
    pub sweeps: Vec<PathBuf>,
    /// The Markdown file to write.
    #[arg(long, value_name = "FILE", default_value = "table1.md")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let t = crate::sweep::table1::write(&args.sweeps, &args.out)?;
    print!("{}", t.markdown());
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
