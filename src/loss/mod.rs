//! MultiMat's contrastive losses with per-modality presence masks: CLIP, AllPairsCLIP,
//! AnchoredCLIP, streamed TensorCLIP and 3-D BarlowTwins (paper Methods and Supplemental
//! Methods; reference code `clott3/MultiMat`, `src/loss/`).
//!
//! Layout, one file per loss with forward and backward side by side (llm.c style):
//! - `clip.rs` — the fused symmetric InfoNCE for one pair (row-block-wise, never the full B×B
//!   probability matrix); `pairwise.rs` — AllPairsCLIP / AnchoredCLIP as means of pair terms;
//! - `tensor_clip.rs` — three-way InfoNCE streamed over one axis with an online log-sum-exp;
//! - `barlow_twins.rs` — 3-D BarlowTwins in O(B²D + BD²) without any D³ tensor;
//! - `temperature.rs` — fixed or learnable (clamped log-scale) temperatures.
//!
//! Conventions shared by every loss here:
//! - Inputs are the *global* batch (all ranks' rows gathered): one row-major `(B, D)` slice per
//!   modality plus a presence mask `(B)`. Rows absent from a modality are never read (they may
//!   hold anything, even NaN) and get zero gradient.
//! - `rows: Range<usize>` is the part of the global batch this process owns. Each call returns
//!   this process's share of the loss, scaled so that the shares of disjoint ranges covering
//!   `0..B` sum to the full-batch loss, and the gradient of that share w.r.t. the *full* global
//!   embedding matrices (written, `=`); the caller all-reduce-sums the gradients and slices out
//!   its local rows (OpenCLIP's `--local-loss --gather-with-grad`). Single process: `0..B`.
//! - A pairwise term uses only rows where both modalities are present (the softmax runs over the
//!   present rows of the other modality only); a three-way term only rows where all three are.
//!   A term with fewer than 2 valid rows contributes exactly 0 with zero gradient (for 1 row the
//!   InfoNCE formula itself gives 0: a softmax over one candidate), never NaN.
//! - Temperature gradients are *accumulated* (`+=`) into the temperature parameters (they are
//!   parameters); embedding gradients are *written*.
//!
//! Two entry points: [`MultimodalLoss::forward_backward`] on host slices (the reference, and what
//! the loss tests drive), and [`MultimodalLoss::forward_backward_tensors`] on `Tensor`s, which
//! the training step calls: CPU tensors go through the reference unchanged (bit-identical), and
//! on a GPU device every loss runs there with the same masking, scaling and shares — the CLIP
//! family as the fused device InfoNCE (`clip::clip_pair_device`, `kernels/infonce.cu`),
//! TensorCLIP streamed over slice blocks (`tensor_clip::tensor_clip_device`,
//! `kernels/tensor_clip.cu`) and BarlowTwins (`barlow_twins::barlow_twins_3d_device`,
//! `kernels/barlow_twins.cu`). Embeddings never round-trip through the host; what comes back is
//! the O(rows) per-row terms the host adds in order (and, for TensorCLIP, the one logit scale
//! it reads to size the GEMMs).

pub mod barlow_twins;
pub mod clip;
pub mod pairwise;
pub mod temperature;
pub mod tensor_clip;

use std::ops::Range;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::{ops, Module, Param, Tensor};
pub use temperature::Temperature;

/// The modality type lives with the record types; re-exported here for the loss API.
pub use crate::material::Modality;

/// One modality's embeddings for the global batch.
#[derive(Clone, Copy, Debug)]
pub struct ModalityEmbeddings<'a> {
    pub modality: Modality,
    /// (B, D) row-major; L2-normalised rows for the CLIP family, raw for BarlowTwins.
    pub data: &'a [f32],
    /// (B) true where this material has this modality.
    pub present: &'a [bool],
}

/// One modality's embeddings for the global batch as a tensor on any device.
#[derive(Clone, Copy, Debug)]
pub struct ModalityTensor<'a> {
    pub modality: Modality,
    /// (B, D); L2-normalised rows for the CLIP family, raw for BarlowTwins.
    pub data: &'a Tensor,
    /// (B) true where this material has this modality (batch metadata: on the host).
    pub present: &'a [bool],
}

/// What [`MultimodalLoss::forward_backward_tensors`] returns: [`LossOutput`] with the
/// gradients as tensors on the embeddings' device.
#[derive(Clone, Debug)]
pub struct TensorLossOutput {
    pub loss: f64,
    /// d loss / d embeddings, (B, D) per input in input order (written; zero on absent rows).
    /// Empty when gradients were not requested.
    pub grads: Vec<Tensor>,
    pub terms: Vec<TermReport>,
}

/// Which loss to train with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Symmetric InfoNCE for exactly two modalities (paper Equation 1b).
    Clip,
    /// Mean of CLIP over all n(n−1)/2 pairs (Equation 3).
    AllPairsClip,
    /// Mean of CLIP over the n−1 pairs containing the anchor (Equation 4).
    AnchoredClip,
    /// Three-way InfoNCE, B² candidates per positive (Supplemental Equations S1, S2).
    TensorClip,
    /// 3-D BarlowTwins on the three-way cross-correlation tensor (Supplemental Equation S3).
    BarlowTwins3d,
}

fn default_anchor() -> Modality {
    Modality::Crystal
}
fn default_temperature() -> f32 {
    0.2
}
fn default_max_logit_scale() -> f32 {
    100.0
}
fn default_min_logit_scale() -> f32 {
    1.0
}
fn default_barlow_lambda() -> f32 {
    0.0051
}
fn default_true() -> bool {
    true
}

/// Loss section of a pre-training config. Defaults follow the reference code: τ = 0.2 fixed,
/// anchor = crystal, λ = 0.0051, BarlowTwins on batch-standardised embeddings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    pub kind: LossKind,
    #[serde(default = "default_anchor")]
    pub anchor: Modality,
    /// Initial (or fixed) temperature τ; logit scale = 1/τ.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Learn one temperature per pair (one for TensorCLIP), OpenCLIP-style.
    #[serde(default)]
    pub learnable_temperature: bool,
    /// Clamp of the logit scale exp(raw) (OpenCLIP: [1, 100]).
    #[serde(default = "default_max_logit_scale")]
    pub max_logit_scale: f32,
    #[serde(default = "default_min_logit_scale")]
    pub min_logit_scale: f32,
    /// Weight λ of the fully off-diagonal BarlowTwins terms.
    #[serde(default = "default_barlow_lambda")]
    pub barlow_lambda: f32,
    /// Standardise each embedding dimension over the batch before BarlowTwins (the reference
    /// puts a BatchNorm1d at the end of each encoder for BarlowTwins runs).
    #[serde(default = "default_true")]
    pub barlow_standardize: bool,
}

impl LossConfig {
    pub fn new(kind: LossKind) -> LossConfig {
        LossConfig {
            kind,
            anchor: default_anchor(),
            temperature: default_temperature(),
            learnable_temperature: false,
            max_logit_scale: default_max_logit_scale(),
            min_logit_scale: default_min_logit_scale(),
            barlow_lambda: default_barlow_lambda(),
            barlow_standardize: true,
        }
    }
}

/// One term's share of the loss, for logging.
#[derive(Clone, Debug, PartialEq)]
pub struct TermReport {
    /// "crystal-dos", "crystal-dos-charge_density", …
    pub name: String,
    /// This process's share of the term, before averaging over terms.
    pub loss: f64,
    /// Rows of the global batch valid for the term (present in all its modalities).
    pub valid_rows: usize,
}

/// What one loss evaluation returns.
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// This process's share of the total loss (see the module docs for how shares add up).
    pub loss: f64,
    /// d loss / d embeddings, one (B, D) buffer per input in input order (written, not
    /// accumulated; zero on absent rows). Empty when gradients were not requested.
    pub grads: Vec<Vec<f32>>,
    pub terms: Vec<TermReport>,
}

/// A configured MultiMat loss over a fixed set of modalities, owning the temperature
/// parameters (visited through `Module` so the optimiser and checkpoints see them).
#[derive(Clone, Debug)]
pub struct MultimodalLoss {
    pub config: LossConfig,
    /// The modalities the model trains, in canonical order.
    pub modalities: Vec<Modality>,
    /// Modality index pairs (into `modalities`) of the pair losses; empty for the 3-way losses.
    pub pairs: Vec<(usize, usize)>,
    /// One per pair for the pair losses, one for TensorCLIP, none for BarlowTwins.
    pub temperatures: Vec<Temperature>,
}

impl MultimodalLoss {
    /// Check the config against the modalities and create the temperatures.
    pub fn new(config: LossConfig, modalities: &[Modality]) -> Result<MultimodalLoss> {
        let mut mods = modalities.to_vec();
        mods.sort();
        mods.dedup();
        if mods.len() != modalities.len() {
            bail!("loss: modality listed twice in {modalities:?}");
        }
        let n = mods.len();
        let pairs = match config.kind {
            LossKind::Clip => {
                if n != 2 {
                    bail!("loss: clip needs exactly 2 modalities, got {n} ({mods:?})");
                }
                pairwise::all_pairs(n)
            }
            LossKind::AllPairsClip => {
                if n < 2 {
                    bail!("loss: all_pairs_clip needs at least 2 modalities, got {n}");
                }
                pairwise::all_pairs(n)
            }
            LossKind::AnchoredClip => {
                if n < 2 {
                    bail!("loss: anchored_clip needs at least 2 modalities, got {n}");
                }
                let Some(anchor) = mods.iter().position(|&m| m == config.anchor) else {
                    bail!(
                        "loss: anchored_clip anchor {} is not among the modalities {mods:?}",
                        config.anchor.name()
                    );
                };
                pairwise::anchored_pairs(n, anchor)
            }
            LossKind::TensorClip | LossKind::BarlowTwins3d => {
                if n != 3 {
                    bail!("loss: {:?} needs exactly 3 modalities, got {n} ({mods:?})", config.kind);
                }
                Vec::new()
            }
        };
        if config.barlow_lambda.is_nan() || config.barlow_lambda < 0.0 {
            bail!("loss: barlow_lambda must be ≥ 0, got {}", config.barlow_lambda);
        }
        let make_temp = |name: String| {
            Temperature::new(
                &name,
                config.temperature,
                config.learnable_temperature,
                config.min_logit_scale,
                config.max_logit_scale,
            )
        };
        let temperatures = match config.kind {
            LossKind::BarlowTwins3d => Vec::new(),
            LossKind::TensorClip => vec![make_temp(format!(
                "{}-{}-{}",
                mods[0].name(),
                mods[1].name(),
                mods[2].name()
            ))?],
            _ => pairs
                .iter()
                .map(|&(i, j)| make_temp(format!("{}-{}", mods[i].name(), mods[j].name())))
                .collect::<Result<Vec<_>>>()?,
        };
        Ok(MultimodalLoss {
            config,
            modalities: mods,
            pairs,
            temperatures,
        })
    }

    /// Loss share and (when `want_grads`) embedding gradients for the rows this process owns.
    /// `inputs` must contain every configured modality (any order; gradients come back in the
    /// order of `inputs`). Temperature gradients are accumulated into the temperature params.
    pub fn forward_backward(
        &mut self,
        inputs: &[ModalityEmbeddings],
        dim: usize,
        rows: Range<usize>,
        want_grads: bool,
    ) -> Result<LossOutput> {
        let order = self.match_inputs(&inputs.iter().map(|e| e.modality).collect::<Vec<_>>())?;
        let batch = check_inputs(inputs, dim, &rows, self.config.kind != LossKind::BarlowTwins3d)?;
        let ordered: Vec<ModalityEmbeddings> = order.iter().map(|&k| inputs[k]).collect();
        let mut grads_ordered: Vec<Vec<f32>> = if want_grads {
            vec![vec![0.0; batch * dim]; ordered.len()]
        } else {
            Vec::new()
        };
        let (loss, terms) = match self.config.kind {
            LossKind::Clip | LossKind::AllPairsClip | LossKind::AnchoredClip => pairwise::mean_of_pairs(
                &mut grads_ordered,
                &ordered,
                &self.pairs,
                &mut self.temperatures,
                dim,
                rows,
            ),
            LossKind::TensorClip => {
                let temp = &mut self.temperatures[0];
                let [ga, gb, gc] = split3(&mut grads_ordered);
                let r = tensor_clip::tensor_clip(
                    ga,
                    gb,
                    gc,
                    [ordered[0].data, ordered[1].data, ordered[2].data],
                    [ordered[0].present, ordered[1].present, ordered[2].present],
                    dim,
                    temp.logit_scale(),
                    rows,
                );
                temp.accumulate_scale_grad(r.dscale);
                (
                    r.loss,
                    vec![TermReport {
                        name: triple_name(&ordered),
                        loss: r.loss,
                        valid_rows: r.valid_rows,
                    }],
                )
            }
            LossKind::BarlowTwins3d => {
                let [ga, gb, gc] = split3(&mut grads_ordered);
                let r = barlow_twins::barlow_twins_3d(
                    ga,
                    gb,
                    gc,
                    [ordered[0].data, ordered[1].data, ordered[2].data],
                    [ordered[0].present, ordered[1].present, ordered[2].present],
                    dim,
                    self.config.barlow_lambda,
                    self.config.barlow_standardize,
                    rows,
                );
                (
                    r.loss,
                    vec![TermReport {
                        name: triple_name(&ordered),
                        loss: r.loss,
                        valid_rows: r.valid_rows,
                    }],
                )
            }
        };
        if !loss.is_finite() {
            bail!(
                "loss: {:?} produced a non-finite value {loss} (terms {terms:?})",
                self.config.kind
            );
        }
        // Back to the caller's input order.
        let mut grads = Vec::new();
        if want_grads {
            let mut slots: Vec<Option<Vec<f32>>> = grads_ordered.into_iter().map(Some).collect();
            grads = (0..inputs.len())
                .map(|k| {
                    let pos = order.iter().position(|&o| o == k).expect("every input is ordered");
                    slots[pos].take().expect("each gradient taken once")
                })
                .collect();
        }
        Ok(LossOutput { loss, grads, terms })
    }

    /// [`forward_backward`](Self::forward_backward) on tensors: embeddings (B, D) on one device,
    /// gradients returned on that device. CPU tensors run the host reference as it is; on a GPU
    /// device every loss kind runs on the device (see the module docs).
    pub fn forward_backward_tensors(&mut self, inputs: &[ModalityTensor], rows: Range<usize>, want_grads: bool) -> Result<TensorLossOutput> {
        let Some(first) = inputs.first() else { bail!("loss: no embeddings given") };
        let device = first.data.device();
        let dim = match first.data.shape.as_slice() {
            [_, d] => *d,
            s => bail!("loss: {} embeddings have shape {s:?}, expected (B, D)", first.modality.name()),
        };
        for e in inputs {
            if e.data.device() != device {
                bail!("loss: {} embeddings on {}, {} embeddings on {device}", e.modality.name(), e.data.device(), first.modality.name());
            }
            if e.data.shape.len() != 2 || e.data.shape[1] != dim {
                bail!("loss: {} embeddings have shape {:?}, expected (B, {dim})", e.modality.name(), e.data.shape);
            }
        }
        if device.is_gpu() {
            return match self.config.kind {
                LossKind::Clip | LossKind::AllPairsClip | LossKind::AnchoredClip => self.forward_backward_pairs_device(inputs, dim, rows, want_grads),
                LossKind::TensorClip | LossKind::BarlowTwins3d => self.forward_backward_triple_device(inputs, dim, rows, want_grads),
            };
        }
        let slices: Vec<ModalityEmbeddings> =
            inputs.iter().map(|e| ModalityEmbeddings { modality: e.modality, data: e.data.data(), present: e.present }).collect();
        let out = self.forward_backward(&slices, dim, rows, want_grads)?;
        let grads = out.grads.into_iter().zip(inputs).map(|(g, e)| Tensor::from_vec(&e.data.shape, g)).collect();
        Ok(TensorLossOutput { loss: out.loss, grads, terms: out.terms })
    }

    /// TensorCLIP or BarlowTwins on a GPU device: the one three-way term on the device; the
    /// gradients written there, the loss share from the per-row terms the host adds in order.
    fn forward_backward_triple_device(&mut self, inputs: &[ModalityTensor], dim: usize, rows: Range<usize>, want_grads: bool) -> Result<TensorLossOutput> {
        let order = self.match_inputs(&inputs.iter().map(|e| e.modality).collect::<Vec<_>>())?;
        let is_tensor_clip = self.config.kind == LossKind::TensorClip;
        let batch = check_inputs_device(inputs, dim, &rows, is_tensor_clip)?;
        let device = inputs[0].data.device();
        let ordered: Vec<ModalityTensor> = order.iter().map(|&k| inputs[k]).collect();
        let name = format!("{}-{}-{}", ordered[0].modality.name(), ordered[1].modality.name(), ordered[2].modality.name());
        let mut grads: Vec<Tensor> = if want_grads {
            // Written (zeroed first) by the device loss.
            (0..3).map(|_| Tensor::uninit_on(&[batch, dim], device)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let grad_refs = match grads.as_mut_slice() {
            [a, b, c] => Some([a, b, c]),
            _ => None,
        };
        let x = [ordered[0].data, ordered[1].data, ordered[2].data];
        let present = [ordered[0].present, ordered[1].present, ordered[2].present];
        let (loss, valid_rows) = if is_tensor_clip {
            let temp = &mut self.temperatures[0];
            let r = tensor_clip::tensor_clip_device(grad_refs, x, present, temp.logit_scale(), rows).with_context(|| format!("loss: {name} on {device}"))?;
            temp.accumulate_scale_grad(r.dscale);
            (r.loss, r.valid_rows)
        } else {
            let r = barlow_twins::barlow_twins_3d_device(grad_refs, x, present, self.config.barlow_lambda, self.config.barlow_standardize, rows)
                .with_context(|| format!("loss: {name} on {device}"))?;
            (r.loss, r.valid_rows)
        };
        let terms = vec![TermReport { name, loss, valid_rows }];
        if !loss.is_finite() {
            bail!("loss: {:?} produced a non-finite value {loss} (terms {terms:?})", self.config.kind);
        }
        Ok(TensorLossOutput { loss, grads: to_input_order(grads, &order), terms })
    }

    /// The CLIP family on a GPU device: every pair's kernels queued, then one wait for the
    /// per-row terms, added on the host in the order of `pairwise::mean_of_pairs`.
    fn forward_backward_pairs_device(&mut self, inputs: &[ModalityTensor], dim: usize, rows: Range<usize>, want_grads: bool) -> Result<TensorLossOutput> {
        let order = self.match_inputs(&inputs.iter().map(|e| e.modality).collect::<Vec<_>>())?;
        let batch = check_inputs_device(inputs, dim, &rows, true)?;
        let device = inputs[0].data.device();
        let ordered: Vec<ModalityTensor> = order.iter().map(|&k| inputs[k]).collect();
        let mut grads: Vec<Tensor> = if want_grads {
            (0..ordered.len()).map(|_| Tensor::zeros_on(&[batch, dim], device)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let inv = 1.0 / self.pairs.len() as f64;
        let mut pending = Vec::with_capacity(self.pairs.len());
        for (p, &(i, j)) in self.pairs.iter().enumerate() {
            let (ei, ej) = (&ordered[i], &ordered[j]);
            let t = &self.temperatures[p];
            let raw = t.raw_on(device)?;
            let pair_grads = if want_grads { Some(two_mut(&mut grads, i, j)) } else { None };
            let r = clip::clip_pair_device(pair_grads, ei.data, ej.data, ei.present, ej.present, &raw, t.min_raw, t.max_raw, rows.clone(), inv)
                .with_context(|| format!("loss: {}-{} on {device}", ei.modality.name(), ej.modality.name()))?;
            pending.push(r);
        }
        let mut total = 0.0;
        let mut terms = Vec::with_capacity(pending.len());
        for (p, (r, &(i, j))) in pending.iter().zip(&self.pairs).enumerate() {
            let (loss, dscale) = r.finish()?;
            self.temperatures[p].accumulate_scale_grad(dscale * inv);
            total += loss * inv;
            terms.push(TermReport {
                name: format!("{}-{}", ordered[i].modality.name(), ordered[j].modality.name()),
                loss,
                valid_rows: r.valid_rows,
            });
        }
        if !total.is_finite() {
            bail!("loss: {:?} produced a non-finite value {total} (terms {terms:?})", self.config.kind);
        }
        Ok(TensorLossOutput { loss: total, grads: to_input_order(grads, &order), terms })
    }

    /// Clamp every learnable raw log-scale into its range (call after each optimiser step, as
    /// OpenCLIP does, so the stored value never drifts past the clamp where its gradient is 0).
    pub fn clamp_temperatures(&mut self) {
        for t in &mut self.temperatures {
            t.clamp_in_place();
        }
    }

    /// (name, raw log-scale, τ) of every temperature, for logging.
    pub fn temperature_log(&self) -> Vec<(String, f32, f32)> {
        self.temperatures
            .iter()
            .map(|t| (t.param.name.clone(), t.raw(), 1.0 / t.logit_scale()))
            .collect()
    }

    /// Index into `inputs` of each configured modality, in canonical order.
    fn match_inputs(&self, inputs: &[Modality]) -> Result<Vec<usize>> {
        if inputs.len() != self.modalities.len() {
            bail!("loss: expected embeddings for {:?}, got {:?}", self.modalities, inputs);
        }
        self.modalities
            .iter()
            .map(|m| {
                let hits: Vec<usize> = inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| **e == *m)
                    .map(|(k, _)| k)
                    .collect();
                match hits.as_slice() {
                    [k] => Ok(*k),
                    [] => bail!("loss: no embeddings given for modality {}", m.name()),
                    _ => bail!("loss: embeddings for modality {} given twice", m.name()),
                }
            })
            .collect()
    }
}

impl Module for MultimodalLoss {
    /// Only learnable temperatures are parameters.
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for t in &mut self.temperatures {
            if t.learnable {
                f(&mut t.param);
            }
        }
    }
}

fn triple_name(e: &[ModalityEmbeddings]) -> String {
    format!(
        "{}-{}-{}",
        e[0].modality.name(),
        e[1].modality.name(),
        e[2].modality.name()
    )
}

/// Items in canonical (modality) order → the caller's input order (`order[c]` is the input
/// index of canonical item c); an empty list (no gradients requested) stays empty.
fn to_input_order<T>(items: Vec<T>, order: &[usize]) -> Vec<T> {
    if items.is_empty() {
        return items;
    }
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    (0..order.len())
        .map(|k| {
            let pos = order.iter().position(|&o| o == k).expect("every input is ordered");
            slots[pos].take().expect("each item taken once")
        })
        .collect()
}

fn split3(grads: &mut [Vec<f32>]) -> [Option<&mut [f32]>; 3] {
    match grads {
        [a, b, c] => [Some(a.as_mut_slice()), Some(b.as_mut_slice()), Some(c.as_mut_slice())],
        _ => [None, None, None],
    }
}

/// Validate shapes, the row range and the values the losses will read; returns B.
/// `require_unit_norm`: the CLIP family assumes L2-normalised rows (the logit bound |l| ≤ scale
/// that keeps the streamed log-sum-exp in range relies on it).
pub fn check_inputs(
    inputs: &[ModalityEmbeddings],
    dim: usize,
    rows: &Range<usize>,
    require_unit_norm: bool,
) -> Result<usize> {
    let Some(first) = inputs.first() else {
        bail!("loss: no embeddings given")
    };
    if dim == 0 {
        bail!("loss: embedding dimension is 0");
    }
    let batch = first.present.len();
    if rows.start > rows.end || rows.end > batch {
        bail!("loss: owned rows {rows:?} are not a range inside the batch 0..{batch}");
    }
    for e in inputs {
        if e.present.len() != batch {
            bail!(
                "loss: {} presence mask has {} rows, {} has {batch}",
                e.modality.name(),
                e.present.len(),
                first.modality.name()
            );
        }
        if e.data.len() != batch * dim {
            bail!(
                "loss: {} embeddings have {} values, expected B×D = {batch}×{dim} = {}",
                e.modality.name(),
                e.data.len(),
                batch * dim
            );
        }
        for (r, row) in e.data.chunks_exact(dim).enumerate() {
            if !e.present[r] {
                continue;
            }
            if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                bail!(
                    "loss: {} embedding of batch row {r} has a non-finite value {} at column {c}",
                    e.modality.name(),
                    row[c]
                );
            }
            if require_unit_norm {
                let norm = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
                if (norm - 1.0).abs() > 1e-3 {
                    bail!(
                        "loss: {} embedding of batch row {r} has L2 norm {norm:.6}, expected an L2-normalised row",
                        e.modality.name()
                    );
                }
            }
        }
    }
    Ok(batch)
}

/// Two distinct elements of `v`, mutably, in the order asked.
fn two_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert_ne!(i, j, "two_mut: the same element twice");
    if i < j {
        let (lo, hi) = v.split_at_mut(j);
        (&mut lo[i], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(i);
        (&mut hi[0], &mut lo[j])
    }
}

/// [`check_inputs`] for device embeddings: the shapes on the host, the values through their row
/// norms computed on the device (one (B) download per modality) — a non-finite value makes its
/// row's norm non-finite, and `require_unit_norm` (the CLIP family, TensorCLIP) also wants it
/// within 1e-3 of 1. Any row that fails is re-checked by `check_inputs` on a host copy, which
/// gives the error (and is the judge: the device norm is an f32 rounding of the same f64 sum,
/// and a huge finite row can overflow it).
pub fn check_inputs_device(inputs: &[ModalityTensor], dim: usize, rows: &Range<usize>, require_unit_norm: bool) -> Result<usize> {
    let Some(first) = inputs.first() else { bail!("loss: no embeddings given") };
    let batch = first.present.len();
    if dim == 0 {
        bail!("loss: embedding dimension is 0");
    }
    if rows.start > rows.end || rows.end > batch {
        bail!("loss: owned rows {rows:?} are not a range inside the batch 0..{batch}");
    }
    let mut suspect = false;
    for e in inputs {
        if e.present.len() != batch || e.data.numel() != batch * dim {
            suspect = true;
            break;
        }
        let (_, norms) = ops::l2norm(e.data, 1.0);
        let norms = norms.to_host()?;
        if norms.iter().zip(e.present).any(|(&n, &p)| p && !(n.is_finite() && (!require_unit_norm || (n as f64 - 1.0).abs() <= 1e-3))) {
            suspect = true;
            break;
        }
    }
    if suspect {
        let host: Vec<Vec<f32>> = inputs.iter().map(|e| e.data.to_host()).collect::<Result<_>>()?;
        let slices: Vec<ModalityEmbeddings> =
            inputs.iter().zip(&host).map(|(e, h)| ModalityEmbeddings { modality: e.modality, data: h, present: e.present }).collect();
        check_inputs(&slices, dim, rows, require_unit_norm)?;
    }
    Ok(batch)
}

/// The rows valid for one term, compacted: `index[c]` is the global row of compact row `c`, and
/// `own` the compact rows whose global row lies in the caller's range (contiguous, because
/// compaction keeps the order).
#[derive(Clone, Debug)]
pub struct ValidRows {
    pub index: Vec<usize>,
    pub own: Range<usize>,
}

impl ValidRows {
    pub fn new(masks: &[&[bool]], rows: &Range<usize>) -> ValidRows {
        let batch = masks[0].len();
        let index: Vec<usize> = (0..batch).filter(|&r| masks.iter().all(|m| m[r])).collect();
        let start = index.partition_point(|&g| g < rows.start);
        let end = index.partition_point(|&g| g < rows.end);
        ValidRows { index, own: start..end }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// (n, D) copy of the valid rows of a (B, D) matrix.
    pub fn gather(&self, data: &[f32], dim: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.index.len() * dim);
        for &g in &self.index {
            out.extend_from_slice(&data[g * dim..(g + 1) * dim]);
        }
        out
    }

    /// dst (B, D) rows += src (n, D) rows at their global positions.
    pub fn scatter_add(&self, dst: &mut [f32], src: &[f32], dim: usize) {
        for (c, &g) in self.index.iter().enumerate() {
            for (d, s) in dst[g * dim..(g + 1) * dim].iter_mut().zip(&src[c * dim..(c + 1) * dim]) {
                *d += s;
            }
        }
    }
}
