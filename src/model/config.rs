//! `EncodersConfig` (one sub-table per encoder, plus which crystal encoder to use) and
//! `build_encoder`, the one place that maps a modality to its encoder.

use super::cgcnn::{Cgcnn, CgcnnConfig};
use super::dos_transformer::{DosTransformer, DosTransformerConfig};
use super::potnet::{PotNet, PotNetConfig};
use super::resnext3d::{ResNeXt3d, ResNeXt3dConfig};
use super::text_mlp::{TextMlp, TextMlpConfig};
use super::{Encoder, Modality};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Which architecture encodes crystals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrystalEncoderKind {
    Potnet,
    Cgcnn,
}

/// All encoder hyper-parameters; every field defaults to the paper's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncodersConfig {
    pub crystal_encoder: CrystalEncoderKind,
    pub potnet: PotNetConfig,
    pub cgcnn: CgcnnConfig,
    pub dos_transformer: DosTransformerConfig,
    pub resnext3d: ResNeXt3dConfig,
    pub text_mlp: TextMlpConfig,
}

impl Default for EncodersConfig {
    fn default() -> Self {
        EncodersConfig {
            crystal_encoder: CrystalEncoderKind::Potnet,
            potnet: PotNetConfig::default(),
            cgcnn: CgcnnConfig::default(),
            dos_transformer: DosTransformerConfig::default(),
            resnext3d: ResNeXt3dConfig::default(),
            text_mlp: TextMlpConfig::default(),
        }
    }
}

/// The encoder of `modality` with output width `embed_dim`, weights drawn from `seed`.
pub fn build_encoder(modality: Modality, config: &EncodersConfig, embed_dim: usize, seed: u64) -> Result<Box<dyn Encoder>> {
    anyhow::ensure!(embed_dim > 0, "embed_dim must be positive");
    Ok(match modality {
        Modality::Crystal => match config.crystal_encoder {
            CrystalEncoderKind::Potnet => Box::new(PotNet::new(&config.potnet, embed_dim, seed)?),
            CrystalEncoderKind::Cgcnn => Box::new(Cgcnn::new(&config.cgcnn, embed_dim, seed)?),
        },
        Modality::Dos => Box::new(DosTransformer::new(&config.dos_transformer, embed_dim, seed)?),
        Modality::ChargeDensity => Box::new(ResNeXt3d::new(&config.resnext3d, embed_dim, seed)?),
        Modality::Text => Box::new(TextMlp::new(&config.text_mlp, embed_dim, seed)?),
    })
}
