//! `multimat config --example pretrain|finetune|sweep`: a commented TOML file with every key of a
//! configuration, its default and its meaning.
//!
//! The values are not written here: they come from serialising the config types' own defaults
//! (plus placeholders for the few required keys), so a changed default shows up in the example
//! by itself. What is written here is one (key, meaning) table per config kind; the tests check
//! that the table names exactly the keys the serde types have (a new field without a line here,
//! or a line for a removed field, fails) and that the printed example parses back to the
//! defaults.

use crate::finetune::config::{FinetuneConfig, FtDataConfig, FtModelConfig, FtOptimConfig, FtRunConfig};
use crate::loss::{LossConfig, LossKind};
use crate::model::config::CrystalEncoderKind;
use crate::sweep::{SweepConfig, Variant};
use crate::train::config::{clean_floats, DataConfig, ModelConfig, OptimConfig, PretrainConfig, RunConfig};
use anyhow::{Context, Result};

/// Which configuration file to describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExampleKind {
    Pretrain,
    Finetune,
    Sweep,
}

/// How a key appears in the example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Has a default; printed with it.
    Default,
    /// Must be given; printed with a placeholder value.
    Required,
    /// Absent unless given; printed commented out with an example value.
    Optional(&'static str),
}

/// One documented key: dotted path (a table path ending in `[]` is an array of tables, e.g.
/// `variants[].name`), meaning, presence.
pub struct KeyDoc {
    pub key: &'static str,
    pub doc: &'static str,
    pub presence: Presence,
}

const fn d(key: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc { key, doc, presence: Presence::Default }
}
const fn req(key: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc { key, doc, presence: Presence::Required }
}
const fn opt(key: &'static str, example: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc { key, doc, presence: Presence::Optional(example) }
}

const PATH_RULE: &str = "Relative paths in this file are relative to the file's directory; paths given with --set \
are relative to the current directory.";

/// The encoder tables (`model.encoders.*`), shared by pre-training and fine-tuning.
const ENCODER_DOCS: &[KeyDoc] = &[
    d("model.encoders.crystal_encoder", "Crystal encoder architecture: potnet | cgcnn."),
    d("model.encoders.potnet.hidden", "PotNet hidden width H of atoms and edges (reference `fc_features`)."),
    d("model.encoders.potnet.conv_layers", "PotNet convolution layers."),
    d("model.encoders.potnet.local_rbf_bins", "Gaussian RBF bins of the local (k-NN) edges."),
    d("model.encoders.potnet.infinite_rbf_bins", "Multiquadric RBF bins of the infinite (lattice-sum) edges."),
    d("model.encoders.potnet.rbf_min", "Lower end of the RBF centres."),
    d("model.encoders.potnet.rbf_max", "Upper end of the RBF centres."),
    d("model.encoders.potnet.local_scale", "Local edge input u = local_scale / distance (Å)."),
    d("model.encoders.potnet.potential_weights", "Weights of (Coulomb, London, Pauli) in the infinite-edge potential."),
    d("model.encoders.potnet.undirected_local_edges", "Add the reverse of every k-NN edge (an undirected local graph, as the reference); false: each atom's own k nearest only."),
    d("model.encoders.potnet.atom_features", "Atom-feature conventions: cgcnn (CGCNN's atom_init.json, the reference) | legacy (multimat's earlier ones)."),
    d("model.encoders.cgcnn.atom_fea_len", "CGCNN atom feature width (reference `atom_fea_len`)."),
    d("model.encoders.cgcnn.conv_layers", "CGCNN convolution layers."),
    d("model.encoders.cgcnn.h_fea_len", "CGCNN width after pooling (reference `h_fea_len`)."),
    d("model.encoders.cgcnn.rbf_min", "Lower end of the Gaussian distance expansion (Å)."),
    d("model.encoders.cgcnn.rbf_max", "Upper end of the Gaussian distance expansion (Å)."),
    d("model.encoders.cgcnn.rbf_bins", "Gaussian distance bins."),
    d("model.encoders.cgcnn.atom_features", "Atom-feature conventions: cgcnn (CGCNN's atom_init.json, the reference) | legacy (multimat's earlier ones)."),
    d("model.encoders.dos_transformer.dim", "DOS transformer model width D."),
    d("model.encoders.dos_transformer.layers", "Transformer blocks."),
    d("model.encoders.dos_transformer.heads", "Attention heads per block."),
    d("model.encoders.dos_transformer.head_size", "Width of each attention head."),
    d("model.encoders.dos_transformer.ffn_dim", "Hidden width of each block's feed-forward layer."),
    d("model.encoders.dos_transformer.mix_layer", "The paper's mixing Linear(2D→2D) before the down-projection."),
    d("model.encoders.dos_transformer.qkv_bias", "Bias on the query/key/value projections."),
    d("model.encoders.dos_transformer.ln_eps", "LayerNorm epsilon."),
    d("model.encoders.dos_transformer.head", "A head Linear(D→embed_dim) after the pool; false (the reference): the pooled D-vector is the embedding, so dim must equal model.embed_dim."),
    d("model.encoders.resnext3d.stages", "Charge-density ResNeXt-3D: blocks per stage."),
    d("model.encoders.resnext3d.planes", "`planes` per stage (a block's output has 2·planes channels)."),
    d("model.encoders.resnext3d.strides", "Stride of each stage's first block."),
    d("model.encoders.resnext3d.cardinality", "Groups of the grouped 3×3×3 convolutions."),
    d("model.encoders.resnext3d.stem_channels", "Output channels of the stem convolution."),
    d("model.encoders.resnext3d.stem_kernel", "Kernel size of the stem convolution."),
    d("model.encoders.resnext3d.stem_stride", "Stride of the stem convolution."),
    d("model.encoders.resnext3d.input_transform", "Per-voxel input: raw (the stored ρ·V_cell, as the reference) | signed_log1p (sign·ln(1+|ρ|) of ρ = value / V_cell) | none (ρ = value / V_cell)."),
    d("model.encoders.text_mlp.input_dim", "Width of the frozen text embeddings stored in the shards (768 for MatBERT/BERT-base)."),
    d("model.encoders.text_mlp.hidden", "Hidden widths of the text MLP (ReLU between layers)."),
];

/// Encoder tables that fine-tuning accepts but never builds (it trains the crystal encoder only),
/// left out of the fine-tuning example.
const FINETUNE_UNUSED_TABLES: &[&str] =
    &["model.encoders.dos_transformer.", "model.encoders.resnext3d.", "model.encoders.text_mlp."];

const PRETRAIN_DOCS: &[KeyDoc] = &[
    req("data.shards", "Shard files or directories of shards (`multimat ingest --out`)."),
    req("data.modalities", "Modalities to train, 2 to 4 of: crystal | dos | charge_density | text."),
    d("data.holdout_fraction", "Fraction of records held out (by a hash of material id and seed) for the retrieval evaluation; in [0, 0.9)."),
    d("model.embed_dim", "Width of the shared latent space (every encoder's output)."),
    req("loss.kind", "Contrastive loss: clip (exactly two modalities) | all_pairs_clip | anchored_clip | tensor_clip | barlow_twins3d."),
    d("loss.anchor", "Anchor modality of anchored_clip."),
    d("loss.temperature", "Initial (or fixed) temperature τ; logit scale = 1/τ."),
    d("loss.learnable_temperature", "Learn one temperature per pair (one for tensor_clip), OpenCLIP-style."),
    d("loss.max_logit_scale", "Upper clamp of a learnt logit scale."),
    d("loss.min_logit_scale", "Lower clamp of a learnt logit scale."),
    d("loss.barlow_lambda", "Weight λ of the off-diagonal BarlowTwins terms."),
    d("loss.barlow_standardize", "Standardise each embedding dimension over the batch before BarlowTwins."),
    d("optim.lr", "Peak learning rate (AdamW)."),
    d("optim.final_lr", "Learning rate at the end of the cosine decay."),
    d("optim.weight_decay", "AdamW decoupled weight decay."),
    d("optim.weight_decay_groups", "Parameters the weight decay applies to: all (the reference) | weights_only (not biases or normalisation parameters)."),
    d("optim.beta1", "AdamW β1."),
    d("optim.beta2", "AdamW β2 (0.95: the reference code's)."),
    d("optim.eps", "AdamW ε."),
    d("optim.warmup_epochs", "Linear warm-up length in epochs (fractions allowed), then cosine decay."),
    d("optim.epochs", "Epochs to train."),
    d("optim.batch_size", "Global batch size (split over ranks; the result does not depend on the rank count); at least 2."),
    d("optim.grad_clip", "Global-norm gradient clipping; 0 disables it."),
    d("run.out_dir", "Run directory: checkpoints/, metrics.jsonl, config.resolved.toml, retrieval.json."),
    d("run.seed", "Seed of initialisation, hold-out and data order."),
    d("run.checkpoint_every", "Checkpoint every N steps (0: at the end of every epoch)."),
    d("run.keep_last", "Complete checkpoints kept (0 keeps all)."),
    d("run.max_steps", "Stop after this many optimiser steps in total (0: run all epochs); for smoke runs."),
];

const FINETUNE_DOCS: &[KeyDoc] = &[
    req("data.shards", "Shard files or directories of shards (`multimat ingest --out`)."),
    req("data.target", "Target name as stored in the shards (K_VRH, G_VRH, band_gap, elastic_tensor, …); scalar or vector."),
    d("data.max_records", "Use only the first N usable records in material-id order (0: all)."),
    d("data.split", "Train / validation / test fractions (sum 1; train and validation > 0)."),
    opt("data.split_seed", "0", "Seed of the split (absent: 0, the same split for every run.seed, as the reference; see data.split_per_seed)."),
    d("data.split_per_seed", "Without data.split_seed, draw the split from run.seed, so each seed of a sweep gets a new split."),
    d("data.standardize", "Train on targets standardised with the training set's mean and std (false, the reference: raw units; metrics are always in the target's units)."),
    d("model.embed_dim", "Output width of the crystal encoder (the pre-training embedding width)."),
    opt("model.checkpoint", "\"../runs/pretrain/checkpoints/step-00000080.json\"", "Pre-training checkpoint `.json` whose crystal encoder is loaded (absent: random initialisation)."),
    d("optim.lr", "Peak learning rate (AdamW; the paper sweeps 1e-3, 1e-4, 1e-5)."),
    d("optim.final_lr", "Learning rate at the end of the cosine decay."),
    d("optim.weight_decay", "AdamW decoupled weight decay."),
    d("optim.weight_decay_groups", "Parameters the weight decay applies to: all (the reference) | weights_only (not biases or normalisation parameters)."),
    d("optim.beta1", "AdamW β1."),
    d("optim.beta2", "AdamW β2 (0.95: the reference code's)."),
    d("optim.eps", "AdamW ε."),
    d("optim.warmup_epochs", "Linear warm-up length in epochs (fractions allowed), then cosine decay."),
    d("optim.epochs", "Maximum epochs (the cosine schedule spans all of them)."),
    d("optim.batch_size", "Batch size; at least 2 (BatchNorm)."),
    d("optim.grad_clip", "Global-norm gradient clipping; 0 disables it."),
    d("optim.patience", "Stop when the validation MAE has not improved for this many epochs (0: never stop early)."),
    d("run.out_dir", "Run directory: config.resolved.toml, split.csv, metrics.jsonl, best/, predictions.csv, result.json."),
    d("run.seed", "Seed of head and (from scratch) encoder initialisation and data order (and of the split with data.split_per_seed)."),
];

const SWEEP_DOCS: &[KeyDoc] = &[
    req("base", "The fine-tuning config every run starts from."),
    req("out_dir", "Sweep directory: runs/<id>/, table.md, table.csv."),
    d("lrs", "Learning rates of the grid."),
    d("seeds", "Seeds of the grid (one split for all of them unless the base sets data.split_per_seed)."),
    d("set", "Overrides applied to every run (`key=value`, as `multimat finetune --set`)."),
    req("variants[].name", "Row label of the table, e.g. \"PotNet MultiMat\" (one [[variants]] table per row)."),
    req("variants[].crystal_encoder", "Crystal encoder of this variant: potnet | cgcnn."),
    opt("variants[].checkpoint", "\"../runs/pretrain/checkpoints/step-00000080.json\"", "Pre-training checkpoint `.json` (absent: from scratch)."),
    d("variants[].set", "Extra overrides for this variant's runs (after the sweep's `set`)."),
];

/// The documented keys of `kind`, in the order they are printed.
pub fn docs(kind: ExampleKind) -> Vec<&'static KeyDoc> {
    let in_model = |k: &KeyDoc| k.key.starts_with("model.");
    match kind {
        ExampleKind::Pretrain => {
            // data, model (embed_dim, then the encoder tables), loss, optim, run.
            let (before, after): (Vec<_>, Vec<_>) = PRETRAIN_DOCS.iter().partition(|k| k.key.starts_with("data.") || in_model(k));
            before.into_iter().chain(ENCODER_DOCS).chain(after).collect()
        }
        ExampleKind::Finetune => {
            let (before, after): (Vec<_>, Vec<_>) = FINETUNE_DOCS.iter().partition(|k| k.key.starts_with("data.") || in_model(k));
            let encoders = ENCODER_DOCS.iter().filter(|k| !FINETUNE_UNUSED_TABLES.iter().any(|p| k.key.starts_with(p)));
            before.into_iter().chain(encoders).chain(after).collect()
        }
        ExampleKind::Sweep => SWEEP_DOCS.iter().collect(),
    }
}

/// The configuration the example describes: every default, and placeholders for required keys.
pub fn example_pretrain() -> PretrainConfig {
    // Fields with a serde default but no `Default` impl take it from serde itself.
    let data: DataConfig = toml::from_str("shards = [\"../runs/shards\"]\nmodalities = [\"crystal\", \"dos\"]").expect("defaults");
    PretrainConfig {
        data,
        model: ModelConfig::default(),
        loss: LossConfig::new(LossKind::Clip),
        optim: OptimConfig::default(),
        run: RunConfig::default(),
    }
}

/// See [`example_pretrain`].
pub fn example_finetune() -> FinetuneConfig {
    // Fields with a serde default but no `Default` impl take it from serde itself.
    let data: FtDataConfig = toml::from_str("shards = [\"../runs/shards\"]\ntarget = \"K_VRH\"").expect("defaults");
    FinetuneConfig { data, model: FtModelConfig::default(), optim: FtOptimConfig::default(), run: FtRunConfig::default() }
}

/// See [`example_pretrain`].
pub fn example_sweep() -> SweepConfig {
    let text = "base = \"finetune.toml\"\nout_dir = \"../runs/sweep\"\n[[variants]]\nname = \"PotNet scratch\"\ncrystal_encoder = \"potnet\"";
    let cfg: SweepConfig = toml::from_str(text).expect("defaults");
    debug_assert_eq!(cfg.variants[0], Variant { name: "PotNet scratch".into(), crystal_encoder: CrystalEncoderKind::Potnet, checkpoint: None, set: vec![] });
    cfg
}

fn example_value(kind: ExampleKind) -> Result<toml::Value> {
    let mut v = match kind {
        ExampleKind::Pretrain => toml::Value::try_from(example_pretrain())?,
        ExampleKind::Finetune => toml::Value::try_from(example_finetune())?,
        ExampleKind::Sweep => toml::Value::try_from(example_sweep())?,
    };
    clean_floats(&mut v);
    Ok(v)
}

/// The value at a documented key (`variants[].x` looks in the first element).
fn lookup<'a>(root: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    let mut cur = root;
    for part in key.split('.') {
        cur = match part.strip_suffix("[]") {
            Some(array) => cur.get(array)?.as_array()?.first()?,
            None => cur.get(part)?,
        };
    }
    Some(cur)
}

/// Wrap a comment at about 96 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 96 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// The commented example TOML of `kind`.
pub fn example_toml(kind: ExampleKind) -> Result<String> {
    let value = example_value(kind)?;
    let mut out = String::new();
    let (title, usage) = match kind {
        ExampleKind::Pretrain => ("Pre-training configuration", "multimat pretrain --config FILE"),
        ExampleKind::Finetune => ("Fine-tuning configuration", "multimat finetune --config FILE"),
        ExampleKind::Sweep => ("Fine-tuning sweep", "multimat sweep --config FILE"),
    };
    comment(&mut out, &format!("{title} ({usage}); generated by `multimat config --example`."));
    comment(&mut out, "Every key with its default; keys marked (required) have no default and show a placeholder; commented-out keys are absent unless set.");
    comment(&mut out, PATH_RULE);
    if kind == ExampleKind::Finetune {
        comment(&mut out, "Only the crystal encoder's tables matter here (fine-tuning builds no other encoder).");
    }
    let mut table = "";
    for k in docs(kind) {
        let (t, leaf) = k.key.rsplit_once('.').unwrap_or(("", k.key));
        if t != table {
            out.push('\n');
            match t.strip_suffix("[]") {
                Some(array) => out.push_str(&format!("[[{array}]]\n")),
                None => out.push_str(&format!("[{t}]\n")),
            }
            table = t;
        }
        match k.presence {
            Presence::Optional(example) => {
                comment(&mut out, k.doc);
                out.push_str(&format!("# {leaf} = {example}\n"));
            }
            Presence::Default | Presence::Required => {
                let v = lookup(&value, k.key).with_context(|| format!("the example config has no value at {}", k.key))?;
                if k.presence == Presence::Required {
                    comment(&mut out, &format!("(required) {}", k.doc));
                } else {
                    comment(&mut out, k.doc);
                }
                out.push_str(&format!("{leaf} = {v}\n"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every leaf key of a serialised config (`variants[].x` inside arrays of tables).
    fn leaf_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    leaf_keys(v, &format!("{prefix}{k}."), out);
                }
            }
            toml::Value::Array(a) if a.first().is_some_and(|x| x.is_table()) => {
                leaf_keys(&a[0], &format!("{}[].", prefix.trim_end_matches('.')), out)
            }
            _ => {
                out.insert(prefix.trim_end_matches('.').to_string());
            }
        }
    }

    fn documented(kind: ExampleKind) -> BTreeSet<String> {
        docs(kind).iter().map(|k| k.key.to_string()).collect()
    }

    #[test]
    fn every_serde_field_has_exactly_one_entry() {
        // Optional fields serialise only when set, so set them all.
        let mut p = example_pretrain();
        p.model.embed_dim = 7;
        let mut f = example_finetune();
        f.data.split_seed = Some(1);
        f.model.checkpoint = Some("c.json".into());
        let mut s = example_sweep();
        s.variants[0].checkpoint = Some("c.json".into());
        s.variants[0].set = vec!["optim.epochs=1".into()];
        for (kind, value) in [
            (ExampleKind::Pretrain, toml::Value::try_from(&p).unwrap()),
            (ExampleKind::Finetune, toml::Value::try_from(&f).unwrap()),
            (ExampleKind::Sweep, toml::Value::try_from(&s).unwrap()),
        ] {
            let mut keys = BTreeSet::new();
            leaf_keys(&value, "", &mut keys);
            if kind == ExampleKind::Finetune {
                keys.retain(|k| !FINETUNE_UNUSED_TABLES.iter().any(|p| k.starts_with(p)));
            }
            let docs = documented(kind);
            let undocumented: Vec<_> = keys.difference(&docs).collect();
            let stale: Vec<_> = docs.difference(&keys).collect();
            assert!(undocumented.is_empty(), "{kind:?}: config keys without a line in config_example.rs: {undocumented:?}");
            assert!(stale.is_empty(), "{kind:?}: documented keys the config no longer has: {stale:?}");
            assert_eq!(docs.len(), super::docs(kind).len(), "{kind:?}: a key is documented twice");
        }
    }

    #[test]
    fn printed_examples_parse_back_to_the_defaults() {
        let p: PretrainConfig = toml::from_str(&example_toml(ExampleKind::Pretrain).unwrap()).unwrap();
        assert_eq!(p, example_pretrain());
        assert_eq!(p.optim, OptimConfig::default(), "the optimiser defaults are printed as they are");
        let f: FinetuneConfig = toml::from_str(&example_toml(ExampleKind::Finetune).unwrap()).unwrap();
        assert_eq!(f, example_finetune());
        let s: SweepConfig = toml::from_str(&example_toml(ExampleKind::Sweep).unwrap()).unwrap();
        assert_eq!(s, example_sweep());
    }

    #[test]
    fn optional_keys_uncommented_parse() {
        // The example value shown for an absent key is valid for that key.
        for kind in [ExampleKind::Finetune, ExampleKind::Sweep] {
            let text = example_toml(kind).unwrap();
            let uncommented: String = text
                .lines()
                .map(|l| match l.strip_prefix("# ") {
                    Some(rest) if docs(kind).iter().any(|k| matches!(k.presence, Presence::Optional(_)) && rest.starts_with(&format!("{} = ", k.key.rsplit('.').next().unwrap()))) => rest,
                    _ => l,
                })
                .collect::<Vec<_>>()
                .join("\n");
            assert_ne!(uncommented, text);
            match kind {
                ExampleKind::Finetune => {
                    let f: FinetuneConfig = toml::from_str(&uncommented).unwrap();
                    assert!(f.data.split_seed.is_some() && f.model.checkpoint.is_some());
                }
                _ => {
                    let s: SweepConfig = toml::from_str(&uncommented).unwrap();
                    assert!(s.variants[0].checkpoint.is_some());
                }
            }
        }
    }
}
