//! Encoder tests: finite-difference gradients of a scalar projection of each encoder's output
//! w.r.t. a sample of every parameter tensor (train mode), output shapes, invariances (atom and
//! edge order for the graph encoders, padding for the DOS Transformer), input errors, configs,
//! and parameter counts of the paper configurations against the architecture formulas.

use multimat::dist::Dist;
use multimat::engine::gradcheck::random_vec;
use multimat::engine::Tensor;
use multimat::model::cgcnn::{Cgcnn, CgcnnConfig};
use multimat::model::dos_transformer::{DosTransformer, DosTransformerConfig};
use multimat::model::potnet::{PotNet, PotNetConfig};
use multimat::model::resnext3d::{InputTransform, ResNeXt3d, ResNeXt3dConfig};
use multimat::model::text_mlp::{TextMlp, TextMlpConfig};
use multimat::crystal::features::AtomFeatureEncoding;
use multimat::engine::Module;
use multimat::model::potnet;
use multimat::model::*;

fn ctx(dist: &Dist) -> StepContext<'_> {
    StepContext { train: true, dist, comm: None, dropout_seed: 0 }
}

fn loss(enc: &mut dyn Encoder, batch: &ModalityBatch, w: &[f32]) -> f64 {
    let dist = Dist::single();
    let y = enc.forward(batch, &ctx(&dist)).unwrap();
    y.data().iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Checks d(Σ w·y)/dθ for up to `per_param` coordinates of every parameter tensor.
/// Returns the parameter names checked.
fn check_encoder_gradients(name: &str, enc: &mut dyn Encoder, batch: &ModalityBatch, per_param: usize, eps: f32, atol: f64, rtol: f64) -> Vec<String> {
    let dist = Dist::single();
    let y = enc.forward(batch, &ctx(&dist)).unwrap();
    assert_eq!(y.shape, vec![batch.len(), enc.embed_dim()], "{name}: output shape");
    assert!(y.data().iter().all(|v| v.is_finite()), "{name}: non-finite output");
    let w = random_vec(y.numel(), 0x5eed, 1.0);
    enc.zero_grad();
    enc.backward(&Tensor::from_vec(&y.shape, w.clone()), &ctx(&dist)).unwrap();
    let mut params: Vec<(String, Vec<f32>, Vec<f32>)> = Vec::new();
    enc.visit_params(&mut |p| params.push((p.name.clone(), p.value.data().to_vec(), p.grad.data().to_vec())));
    let mut worst = (String::new(), 0.0f64, 0.0f64, f64::NEG_INFINITY);
    for (k, (pname, value, grad)) in params.iter().enumerate() {
        // Pseudo-random coordinates (Knuth's multiplicative hash), so every column block of a
        // weight is reached, not only the first column of evenly spaced rows.
        let mut coords: Vec<usize> = (0..per_param.min(value.len())).map(|j| (j as u64 * 2654435761 % value.len() as u64) as usize).collect();
        coords.dedup();
        for i in coords {
            let set = |enc: &mut dyn Encoder, v: f32| {
                let mut j = 0;
                enc.visit_params(&mut |p| {
                    if j == k {
                        p.value.data_mut()[i] = v;
                    }
                    j += 1;
                });
            };
            set(enc, value[i] + eps);
            let lp = loss(enc, batch, &w);
            set(enc, value[i] - eps);
            let lm = loss(enc, batch, &w);
            set(enc, value[i]);
            let numeric = (lp - lm) / (2.0 * eps as f64);
            let analytic = grad[i] as f64;
            let excess = (analytic - numeric).abs() - (atol + rtol * numeric.abs());
            if excess > worst.3 {
                worst = (format!("{pname}[{i}]"), analytic, numeric, excess);
            }
        }
    }
    assert!(worst.3 <= 0.0, "{name}: gradient mismatch at {}: analytic {:.6e} vs numeric {:.6e}", worst.0, worst.1, worst.2);
    params.into_iter().map(|p| p.0).collect()
}

/// Three hand-made crystals: NaCl-like (2 atoms), TiO₂-like (3 atoms), Fe (1 atom, self images).
fn tiny_graphs() -> GraphBatch {
    let species = vec![11, 17, 22, 8, 8, 26];
    let node_offsets = vec![0, 2, 5, 6];
    // (src, dst, distance): grouped by dst as the crystal module writes them.
    let local: Vec<(u32, u32, f32)> = vec![
        (1, 0, 2.8), (1, 0, 2.9), (0, 1, 2.8), (0, 1, 3.1),
        (3, 2, 1.9), (4, 2, 2.0), (2, 3, 1.9), (4, 3, 2.6), (2, 4, 2.0), (3, 4, 2.6),
        (5, 5, 2.5), (5, 5, 2.9),
    ];
    let cgcnn: Vec<(u32, u32, f32)> = vec![
        (1, 0, 2.8), (0, 0, 4.0), (0, 1, 2.8), (1, 1, 4.0),
        (3, 2, 1.9), (4, 2, 2.0), (2, 3, 1.9), (4, 3, 2.6), (2, 4, 2.0), (3, 4, 2.6),
        (5, 5, 2.5), (5, 5, 3.6),
    ];
    let edges = |v: &[(u32, u32, f32)]| BatchedEdges {
        src: v.iter().map(|e| e.0).collect(),
        dst: v.iter().map(|e| e.1).collect(),
        distance: v.iter().map(|e| e.2).collect(),
    };
    let mut infinite = BatchedInfinite::default();
    let mut k = 0.0f32;
    for g in 0..3 {
        for i in node_offsets[g]..node_offsets[g + 1] {
            for j in node_offsets[g]..node_offsets[g + 1] {
                k += 1.0;
                infinite.src.host_mut().push(i as u32);
                infinite.dst.host_mut().push(j as u32);
                infinite.coulomb.push(-1.5 + 0.37 * k % 3.0);
                infinite.london.push(-0.2 * k % 4.0);
                infinite.pauli.push(0.5 + 0.61 * k % 4.0);
            }
        }
    }
    let node_offsets = node_offsets.iter().map(|&o| o as u32).collect();
    GraphBatch { num_graphs: 3, species, node_offsets, local: edges(&local), cgcnn: edges(&cgcnn), infinite }
}

/// The same crystals with the atoms of each crystal permuted and every edge list reversed.
fn permuted(g: &GraphBatch) -> GraphBatch {
    // New position of old atom a: reverse the atoms within each crystal.
    let mut new_of = vec![0u32; g.species.len()];
    for w in g.node_offsets.host().windows(2) {
        for a in w[0]..w[1] {
            new_of[a as usize] = w[0] + w[1] - 1 - a;
        }
    }
    let mut species = g.species.clone();
    for (a, &z) in g.species.iter().enumerate() {
        species[new_of[a] as usize] = z;
    }
    let map_edges = |e: &BatchedEdges| BatchedEdges {
        src: e.src.host().iter().rev().map(|&s| new_of[s as usize]).collect(),
        dst: e.dst.host().iter().rev().map(|&d| new_of[d as usize]).collect(),
        distance: e.distance.iter().rev().copied().collect(),
    };
    let inf = &g.infinite;
    let infinite = BatchedInfinite {
        src: inf.src.host().iter().rev().map(|&s| new_of[s as usize]).collect(),
        dst: inf.dst.host().iter().rev().map(|&d| new_of[d as usize]).collect(),
        coulomb: inf.coulomb.iter().rev().copied().collect(),
        london: inf.london.iter().rev().copied().collect(),
        pauli: inf.pauli.iter().rev().copied().collect(),
    };
    GraphBatch { species, local: map_edges(&g.local), cgcnn: map_edges(&g.cgcnn), infinite, ..g.clone() }
}

fn tiny_potnet() -> PotNetConfig {
    PotNetConfig { hidden: 6, conv_layers: 2, local_rbf_bins: 7, infinite_rbf_bins: 5, ..Default::default() }
}

fn tiny_cgcnn() -> CgcnnConfig {
    CgcnnConfig { atom_fea_len: 5, conv_layers: 2, h_fea_len: 7, ..Default::default() }
}

fn assert_close(name: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.shape, b.shape, "{name}: shapes");
    for (i, (x, y)) in a.data().iter().zip(b.data()).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + x.abs()), "{name}: element {i}: {x} vs {y}");
    }
}

#[test]
fn potnet_gradients_match_finite_differences_for_every_layer() {
    let mut enc = PotNet::new(&tiny_potnet(), 4, 7).unwrap();
    let batch = ModalityBatch::Crystal(tiny_graphs());
    let names = check_encoder_gradients("potnet", &mut enc, &batch, 16, 1e-3, 2e-3, 2e-2);
    for want in ["crystal.atom_embedding.weight", "crystal.local_embedding.weight", "crystal.infinite_embedding.bias",
        "crystal.infinite_bn.weight", "crystal.conv.0.mlp_a.0.weight", "crystal.conv.1.mlp_b.1.bias", "crystal.conv.1.bn_a.weight",
        "crystal.conv.0.bn.bias", "crystal.head.weight"] {
        assert!(names.iter().any(|n| n == want), "parameter {want} missing from {names:?}");
    }
}

#[test]
fn graph_encoders_are_invariant_to_atom_and_edge_order() {
    let dist = Dist::single();
    let (g, p) = (ModalityBatch::Crystal(tiny_graphs()), ModalityBatch::Crystal(permuted(&tiny_graphs())));
    let mut potnet = PotNet::new(&tiny_potnet(), 4, 3).unwrap();
    let mut cgcnn = Cgcnn::new(&tiny_cgcnn(), 4, 3).unwrap();
    for (name, enc) in [("potnet", &mut potnet as &mut dyn Encoder), ("cgcnn", &mut cgcnn)] {
        let a = enc.forward(&g, &ctx(&dist)).unwrap();
        let b = enc.forward(&p, &ctx(&dist)).unwrap();
        assert_close(name, &a, &b, 1e-5);
        // …and the embedding does move when the structure changes (the test can fail).
        let mut moved = tiny_graphs();
        moved.local.distance[0] += 0.5;
        moved.cgcnn.distance[0] += 0.5;
        moved.infinite.coulomb[0] += 0.5;
        let c = enc.forward(&ModalityBatch::Crystal(moved), &ctx(&dist)).unwrap();
        assert!(a.data()[..4].iter().zip(&c.data()[..4]).any(|(x, y)| (x - y).abs() > 1e-4), "{name}: insensitive to distances");
    }
}

#[test]
fn cgcnn_gradients_match_finite_differences_for_every_layer() {
    let mut enc = Cgcnn::new(&tiny_cgcnn(), 3, 11).unwrap();
    let names = check_encoder_gradients("cgcnn", &mut enc, &ModalityBatch::Crystal(tiny_graphs()), 8, 1e-2, 2e-3, 2e-2);
    assert!(names.contains(&"crystal.conv.1.fc_full.weight".to_string()) && names.contains(&"crystal.conv_to_fc.bias".to_string()));
}

fn tiny_dos_config() -> DosTransformerConfig {
    // With a head (width 8 → embeddings of 4); `head = false` needs embed_dim = dim.
    DosTransformerConfig { dim: 8, layers: 2, heads: 2, head_size: 5, ffn_dim: 12, head: true, ..Default::default() }
}

/// Three DOS of 6 points; sample 1 has its last two points padded.
fn tiny_dos() -> DosBatch {
    let (b, l) = (3, 6);
    let energies = (0..b * l).map(|i| -3.0 + (i % l) as f32 * 1.2 + 0.1 * (i / l) as f32).collect();
    let densities = random_vec(b * l, 9, 2.0).iter().map(|v| v.abs()).collect();
    let mut mask = vec![true; b * l];
    mask[l + 4] = false;
    mask[l + 5] = false;
    DosBatch { batch: b, len: l, energies, densities, mask: Some(mask) }
}

#[test]
fn dos_transformer_gradients_match_finite_differences() {
    for (mix_layer, head) in [(true, true), (false, true), (true, false)] {
        let embed_dim = if head { 4 } else { 8 };
        let mut enc = DosTransformer::new(&DosTransformerConfig { mix_layer, head, ..tiny_dos_config() }, embed_dim, 5).unwrap();
        let names = check_encoder_gradients("dos", &mut enc, &ModalityBatch::Dos(tiny_dos()), 8, 1e-2, 2e-3, 2e-2);
        assert!(names.contains(&"dos.blocks.1.attn.qkv.weight".to_string()));
        assert_eq!(names.contains(&"dos.mix.weight".to_string()), mix_layer);
        assert_eq!(names.contains(&"dos.head.weight".to_string()), head);
    }
}

#[test]
fn dos_transformer_ignores_padded_points() {
    let dist = Dist::single();
    let mut enc = DosTransformer::new(&tiny_dos_config(), 4, 5).unwrap();
    let a = enc.forward(&ModalityBatch::Dos(tiny_dos()), &ctx(&dist)).unwrap();
    let mut junk = tiny_dos();
    junk.energies[6 + 4] = 1e4;
    junk.densities[6 + 5] = f32::NAN;
    let b = enc.forward(&ModalityBatch::Dos(junk.clone()), &ctx(&dist)).unwrap();
    assert!(b.data().iter().all(|v| v.is_finite()));
    assert_close("padding", &a, &b, 1e-6);
    // A shorter batch holding only sample 1's valid points gives the same embedding for it.
    let short = DosBatch {
        batch: 1,
        len: 4,
        energies: junk.energies[6..10].to_vec(),
        densities: junk.densities[6..10].to_vec(),
        mask: None,
    };
    let c = enc.forward(&ModalityBatch::Dos(short), &ctx(&dist)).unwrap();
    assert_close("unpadded", &Tensor::from_vec(&[1, 4], a.data()[4..8].to_vec()), &c, 1e-5);
    // A real point does matter.
    junk.densities[6] += 1.0;
    let d = enc.forward(&ModalityBatch::Dos(junk), &ctx(&dist)).unwrap();
    assert!((d.data()[4] - a.data()[4]).abs() > 1e-5);
    // A NaN at a valid point is an error naming it.
    let mut bad = tiny_dos();
    bad.densities[2] = f32::NAN;
    let err = enc.forward(&ModalityBatch::Dos(bad), &ctx(&dist)).unwrap_err().to_string();
    assert!(err.contains("sample 0 point 2"), "{err}");
}

/// With the signed-log input: the finite differences need inputs of order 1 (the stored values
/// of `tiny_density` reach ~90, where an f32 step of 5e-4 in a weight is lost in rounding).
fn tiny_resnext() -> ResNeXt3dConfig {
    ResNeXt3dConfig {
        stages: vec![1, 1],
        planes: vec![32, 64],
        strides: vec![1, 2],
        cardinality: 2,
        stem_channels: 4,
        input_transform: InputTransform::SignedLog1p,
        ..Default::default()
    }
}

/// 10³ grids: stem → 5³, max-pool → 3³, stage 2 → 2³, so no batch norm normalises only 3
/// values (which with ReLU and max-pool kinks made central differences unreliable at 8³).
fn tiny_density(batch: usize) -> DensityBatch {
    let values = random_vec(batch * 1000, 21, 1.0).iter().map(|v| 40.0 * (v + 1.2)).collect();
    DensityBatch { batch, grid: [10, 10, 10], values, volumes: (0..batch).map(|i| 30.0 + 10.0 * i as f32).collect() }
}

#[test]
fn resnext3d_gradients_match_finite_differences() {
    let mut enc = ResNeXt3d::new(&tiny_resnext(), 3, 2).unwrap();
    let names = check_encoder_gradients("resnext3d", &mut enc, &ModalityBatch::ChargeDensity(tiny_density(3)), 3, 5e-4, 5e-3, 3e-2);
    for want in ["charge_density.conv1.weight", "charge_density.bn1.weight", "charge_density.layer1.0.conv2.weight",
        "charge_density.layer2.0.downsample.0.weight", "charge_density.layer2.0.bn3.bias", "charge_density.fc.weight"] {
        assert!(names.iter().any(|n| n == want), "parameter {want} missing");
    }
}

#[test]
fn resnext3d_input_normalisation_is_per_voxel_log_of_density() {
    let enc = ResNeXt3d::new(&tiny_resnext(), 3, 2).unwrap();
    let mut d = tiny_density(2);
    d.values[0] = 30.0 * (std::f32::consts::E - 1.0); // ρ = e − 1 → ln(e) = 1
    d.values[1] = -30.0 * 0.5; // ρ = −0.5 → −ln 1.5
    let x = enc.normalise(&d).unwrap();
    assert_eq!(x.shape, vec![2, 1, 10, 10, 10]);
    assert!((x.data()[0] - 1.0).abs() < 1e-6);
    assert!((x.data()[1] + 1.5f32.ln()).abs() < 1e-6);
    // Doubling both the cell and ρ·V leaves the input unchanged (ρ is what is encoded).
    let mut d2 = d.clone();
    d2.volumes[1] *= 2.0;
    d2.values[1000..].iter_mut().for_each(|v| *v *= 2.0);
    let x2 = enc.normalise(&d2).unwrap();
    assert_close("volume", &x, &x2, 1e-6);
    d2.volumes[1] = 0.0;
    let err = enc.normalise(&d2).unwrap_err().to_string();
    assert!(err.contains("sample 1") && err.contains("volume"), "{err}");
}

#[test]
fn text_mlp_gradients_and_shape_errors() {
    let cfg = TextMlpConfig { input_dim: 6, hidden: vec![5, 4] };
    let mut enc = TextMlp::new(&cfg, 3, 1).unwrap();
    let batch = TextBatch { batch: 4, dim: 6, values: random_vec(24, 3, 1.0) };
    let names = check_encoder_gradients("text", &mut enc, &ModalityBatch::Text(batch), 8, 1e-2, 1e-3, 1e-2);
    assert_eq!(names, ["text.mlp.0.weight", "text.mlp.0.bias", "text.mlp.1.weight", "text.mlp.1.bias", "text.mlp.2.weight", "text.mlp.2.bias"]);
    let dist = Dist::single();
    let wrong = TextBatch { batch: 1, dim: 5, values: vec![0.0; 5] };
    assert!(enc.forward(&ModalityBatch::Text(wrong), &ctx(&dist)).unwrap_err().to_string().contains("5-d"));
    let err = enc.forward(&ModalityBatch::Dos(tiny_dos()), &ctx(&dist)).unwrap_err().to_string();
    assert!(err.contains("expected a text batch"), "{err}");
}

#[test]
fn malformed_graph_batches_are_errors_naming_the_problem() {
    let dist = Dist::single();
    let mut enc = PotNet::new(&tiny_potnet(), 4, 3).unwrap();
    let mut g = tiny_graphs();
    g.local.src.host_mut()[3] = 99;
    let err = enc.forward(&ModalityBatch::Crystal(g), &ctx(&dist)).unwrap_err().to_string();
    assert!(err.contains("local edges src") && err.contains("edge 3"), "{err}");
    let mut g = tiny_graphs();
    g.infinite.pauli[2] = f32::NAN;
    let err = enc.forward(&ModalityBatch::Crystal(g), &ctx(&dist)).unwrap_err().to_string();
    assert!(err.contains("infinite edges edge 2") && err.contains("pauli"), "{err}");
    let mut g = tiny_graphs();
    g.species[1] = 0;
    let err = format!("{:#}", enc.forward(&ModalityBatch::Crystal(g), &ctx(&dist)).unwrap_err());
    assert!(err.contains("atom 1"), "{err}");
}

#[test]
fn paper_parameter_counts_match_the_architecture_formulas() {
    let lin = |i: usize, o: usize| i * o + o;
    let bn = |c: usize| 2 * c;
    let e = 128;

    // PotNet: H = 256, K_l = 256, K_i = 64, 3 convs of two 3H→H→H MLPs and two BNs.
    let h = 256;
    let conv = 2 * (lin(3 * h, h) + lin(h, h)) + 2 * bn(h);
    let potnet = lin(92, h) + lin(256, h) + lin(64, h) + bn(h) + 3 * conv + lin(h, e);
    let mut enc = build_encoder(Modality::Crystal, &EncodersConfig::default(), e, 0).unwrap();
    assert_eq!(enc.num_params(), potnet);

    // CGCNN: F = 64, 41 Gaussians, fc_full (2F+41 → 2F), BN(2F), BN(F); head 64→128→e.
    let f = 64;
    let cgcnn = lin(92, f) + 3 * (lin(2 * f + 41, 2 * f) + bn(2 * f) + bn(f)) + lin(f, 128) + lin(128, e);
    let cfg = EncodersConfig { crystal_encoder: CrystalEncoderKind::Cgcnn, ..Default::default() };
    assert_eq!(build_encoder(Modality::Crystal, &cfg, e, 0).unwrap().num_params(), cgcnn);

    // DOS: two 1→D embeddings, mix 2D→2D, down 2D→D, 4 blocks (LN, qkv D→3·8·64 no bias,
    // proj 512→D, LN, FFN D→512→D); no head (the pooled D = e is the embedding).
    let d = 128;
    let block = bn(d) + 3 * 512 * d + lin(512, d) + bn(d) + lin(d, 512) + lin(512, d);
    let dos = 2 * lin(1, d) + lin(2 * d, 2 * d) + lin(2 * d, d) + 4 * block;
    assert_eq!(build_encoder(Modality::Dos, &EncodersConfig::default(), e, 0).unwrap().num_params(), dos);

    // ResNeXt-50: stem 7³ (1→64) + BN; block (c_in, planes, stride): 1³ c_in→mid, grouped 3³
    // mid→mid (mid/32 inputs per group), 1³ mid→2p, three BNs, projection on the first block.
    let mut resnext = 64 * 343 + bn(64);
    let mut c_in = 64;
    for (count, planes) in [(3, 128), (4, 256), (6, 512), (3, 1024)] {
        let (mid, out) = (32 * planes / 32, 2 * planes);
        for b in 0..count {
            resnext += c_in * mid + bn(mid) + mid * (mid / 32) * 27 + bn(mid) + mid * out + bn(out);
            if b == 0 {
                resnext += c_in * out + bn(out);
            }
            c_in = out;
        }
    }
    resnext += lin(2048, e);
    assert_eq!(build_encoder(Modality::ChargeDensity, &EncodersConfig::default(), e, 0).unwrap().num_params(), resnext);

    let text = lin(768, 512) + lin(512, 512) + lin(512, e);
    assert_eq!(build_encoder(Modality::Text, &EncodersConfig::default(), e, 0).unwrap().num_params(), text);
    println!("parameters: potnet {potnet}, cgcnn {cgcnn}, dos_transformer {dos}, resnext3d-50 {resnext}, text_mlp {text}");
}

#[test]
fn encoders_config_reads_toml_with_defaults_and_rejects_unknown_fields() {
    let cfg: EncodersConfig = toml::from_str(
        "crystal_encoder = \"cgcnn\"\n[resnext3d]\nstages = [1, 1, 1, 1]\n[potnet]\nhidden = 64\n",
    ).unwrap();
    assert_eq!(cfg.crystal_encoder, CrystalEncoderKind::Cgcnn);
    assert_eq!(cfg.potnet.hidden, 64);
    assert_eq!(cfg.potnet.infinite_rbf_bins, 64);
    assert_eq!(cfg.resnext3d.planes, vec![128, 256, 512, 1024]);
    let err = toml::from_str::<EncodersConfig>("[potnet]\nhiden = 3\n").unwrap_err().to_string();
    assert!(err.contains("hiden"), "{err}");
    assert!(ResNeXt3d::new(&ResNeXt3dConfig { planes: vec![10], stages: vec![1], strides: vec![1], ..Default::default() }, 8, 0).is_err());
}

#[test]
fn encoders_run_on_generated_batches_and_are_reproducible_from_the_seed() {
    use multimat::model::synthetic::*;
    let dist = Dist::single();
    let cfg = EncodersConfig {
        potnet: PotNetConfig { hidden: 32, ..Default::default() },
        resnext3d: ResNeXt3dConfig::small(),
        // Width 16 = the embedding width below (no head, the default).
        dos_transformer: DosTransformerConfig { dim: 16, ffn_dim: 64, ..Default::default() },
        ..Default::default()
    };
    let batches = [
        (Modality::Crystal, ModalityBatch::Crystal(graph_batch(6, GraphSizes::default(), 1))),
        (Modality::Dos, ModalityBatch::Dos(dos_batch(3, 50, 2))),
        (Modality::ChargeDensity, ModalityBatch::ChargeDensity(density_batch(2, 16, 3))),
        (Modality::Text, ModalityBatch::Text(text_batch(5, 768, 4))),
    ];
    for (m, batch) in &batches {
        let mut a = build_encoder(*m, &cfg, 16, 42).unwrap();
        let mut b = build_encoder(*m, &cfg, 16, 42).unwrap();
        assert_eq!(a.modality(), *m);
        let ya = a.forward(batch, &ctx(&dist)).unwrap();
        assert_eq!(ya.shape, vec![batch.len(), 16]);
        assert!(ya.data().iter().all(|v| v.is_finite()), "{m:?}");
        assert_eq!(ya.data(), b.forward(batch, &ctx(&dist)).unwrap().data(), "{m:?}: same seed, same output");
        a.backward(&Tensor::from_vec(&ya.shape, vec![1.0; ya.numel()]), &ctx(&dist)).unwrap();
        let mut finite = true;
        a.visit_params(&mut |p| finite &= p.grad.data().iter().all(|v| v.is_finite()));
        assert!(finite, "{m:?}: non-finite gradient");
    }
}

// ---- The reference code's behaviour, the defaults since issue 14 §5 -----------------------------

#[test]
fn potnet_undirected_local_edges_is_the_encoder_fed_the_symmetrised_graph() {
    let dist = Dist::single();
    let g = tiny_graphs();
    // tiny_graphs: 1→0 at 2.8 and 2.9 Å, 0→1 at 2.8 and 3.1 Å: 0→1 at 2.9 and 1→0 at 3.1 are missing.
    let (src, dst, distance) = potnet::undirected_local_edges(g.local.src.host(), g.local.dst.host(), &g.local.distance);
    assert_eq!(src.len(), g.local.distance.len() + 2);
    // Appended per atom pair in (src, dst) order: the reverse of 0→1 at 3.1, then of 1→0 at 2.9.
    assert_eq!((&src[12..], &dst[12..], &distance[12..]), (&[1u32, 0][..], &[0u32, 1][..], &[3.1f32, 2.9][..]));
    let mut symmetrised = g.clone();
    symmetrised.local = BatchedEdges { src: src.into(), dst: dst.into(), distance };
    let directed = PotNetConfig { undirected_local_edges: false, ..tiny_potnet() };
    assert!(tiny_potnet().undirected_local_edges, "undirected is the default");
    let by_option = PotNet::new(&tiny_potnet(), 4, 3).unwrap().forward(&ModalityBatch::Crystal(g.clone()), &ctx(&dist)).unwrap();
    let by_hand = PotNet::new(&directed, 4, 3).unwrap().forward(&ModalityBatch::Crystal(symmetrised), &ctx(&dist)).unwrap();
    assert_eq!(by_option.data(), by_hand.data(), "the option must be exactly the symmetrised graph");
    let without = PotNet::new(&directed, 4, 3).unwrap().forward(&ModalityBatch::Crystal(g), &ctx(&dist)).unwrap();
    assert!(without.data() != by_option.data(), "the reverse edges must change the embedding");
}

#[test]
fn potnet_atom_feature_encoding_is_an_option_that_matters() {
    let dist = Dist::single();
    assert_eq!(tiny_potnet().atom_features, AtomFeatureEncoding::Cgcnn);
    let legacy = PotNetConfig { atom_features: AtomFeatureEncoding::Legacy, ..tiny_potnet() };
    let a = PotNet::new(&tiny_potnet(), 4, 3).unwrap().forward(&ModalityBatch::Crystal(tiny_graphs()), &ctx(&dist)).unwrap();
    let b = PotNet::new(&legacy, 4, 3).unwrap().forward(&ModalityBatch::Crystal(tiny_graphs()), &ctx(&dist)).unwrap();
    assert!(a.data() != b.data());
}

#[test]
fn dos_without_head_embeds_the_pooled_tokens_and_needs_matching_width() {
    let dist = Dist::single();
    let names = |head: bool, embed: usize| {
        let mut enc = DosTransformer::new(&DosTransformerConfig { head, ..tiny_dos_config() }, embed, 5).unwrap();
        let mut v = Vec::new();
        enc.visit_params(&mut |p| v.push(p.name.clone()));
        (enc, v)
    };
    let (mut with_head, with) = names(true, 8);
    let (mut without_head, without) = names(false, 8);
    assert_eq!(with.iter().filter(|n| !without.contains(n)).collect::<Vec<_>>(), ["dos.head.weight", "dos.head.bias"]);
    assert!(without.iter().all(|n| with.contains(n)));
    assert!(!DosTransformerConfig::default().head, "no head is the default (the reference)");
    // Every other parameter is drawn identically (the head is created last), so without the head
    // the embedding is the head's input.
    let y = without_head.forward(&ModalityBatch::Dos(tiny_dos()), &ctx(&dist)).unwrap();
    let z = with_head.forward(&ModalityBatch::Dos(tiny_dos()), &ctx(&dist)).unwrap();
    assert_eq!(y.shape, vec![3, 8]);
    let head = with_head.head.as_ref().unwrap();
    let (w, bias) = (head.weight.value.data(), head.bias.as_ref().unwrap().value.data());
    for r in 0..3 {
        for o in 0..8 {
            let want: f32 = bias[o] + (0..8).map(|i| w[o * 8 + i] * y.data()[r * 8 + i]).sum::<f32>();
            assert!((z.data()[r * 8 + o] - want).abs() < 1e-5, "row {r} out {o}: {} vs {want}", z.data()[r * 8 + o]);
        }
    }
    let err = DosTransformer::new(&DosTransformerConfig { head: false, ..tiny_dos_config() }, 4, 5).err().unwrap().to_string();
    assert!(err.contains("dim = 8") && err.contains("model.embed_dim = 4") && err.contains("head = true"), "{err}");
}

#[test]
fn raw_density_input_reaches_the_encoder_unchanged() {
    assert_eq!(ResNeXt3dConfig::default().input_transform, InputTransform::Raw);
    let enc = ResNeXt3d::new(&ResNeXt3dConfig { input_transform: InputTransform::Raw, ..tiny_resnext() }, 3, 2).unwrap();
    let d = tiny_density(2);
    let x = enc.normalise(&d).unwrap(); // (B, 1, D, H, W)
    assert_eq!(x.shape, vec![2, 1, 10, 10, 10]);
    assert_eq!(x.data(), &d.values[..], "raw: the stored ρ·V_cell values, bit for bit");
}

#[test]
fn adamw_weight_decay_groups_follow_the_config() {
    use multimat::engine::optim::{AdamW, WeightDecayGroups};
    use multimat::train::config::OptimConfig;
    let defaults = OptimConfig::default();
    assert_eq!((defaults.beta1, defaults.beta2, defaults.weight_decay_groups), (0.9, 0.95, WeightDecayGroups::All));
    // One step with zero gradients moves parameters only by the decay p ← p·(1 − lr·λ).
    let lr = 0.1;
    for groups in [WeightDecayGroups::All, WeightDecayGroups::WeightsOnly] {
        let cfg = OptimConfig { weight_decay: 0.5, weight_decay_groups: groups, ..OptimConfig::default() };
        let mut enc = TextMlp::new(&TextMlpConfig { input_dim: 6, hidden: vec![5] }, 3, 1).unwrap();
        let mut before = Vec::new();
        enc.visit_params(&mut |p| before.push((p.name.clone(), p.value.data().to_vec(), p.decay)));
        let mut opt = AdamW::new(cfg.adamw());
        opt.step(&mut enc, lr).unwrap();
        let factor = (1.0 - lr * 0.5) as f32;
        let mut i = 0;
        enc.visit_params(&mut |p| {
            let (name, old, is_weight) = &before[i];
            i += 1;
            let decayed = groups == WeightDecayGroups::All || *is_weight;
            let want: Vec<f32> = old.iter().map(|v| if decayed { v * factor } else { *v }).collect();
            assert_eq!(p.value.data(), &want[..], "{name} with {groups:?}");
        });
        assert!(before.iter().any(|(n, _, w)| n.ends_with("bias") && !w), "the MLP has biases outside the weights group");
    }
}

#[test]
fn checkpoints_without_the_new_keys_load_with_the_old_behaviour() {
    use multimat::finetune::config::FinetuneConfig;
    use multimat::train::config::PretrainConfig;
    let toml_cfg = "[data]\nshards = [\"/s\"]\nmodalities = [\"crystal\", \"dos\"]\n[loss]\nkind = \"clip\"\n";
    let now: PretrainConfig = toml::from_str(toml_cfg).unwrap();
    let stored = serde_json::to_value(&now).unwrap();
    assert_eq!(PretrainConfig::from_stored(&stored).unwrap(), now, "a current checkpoint reads back unchanged");
    // A checkpoint written before the keys existed.
    let mut old = stored.clone();
    for (table, key) in [("potnet", "undirected_local_edges"), ("potnet", "atom_features"), ("cgcnn", "atom_features"), ("dos_transformer", "head")] {
        old["model"]["encoders"][table].as_object_mut().unwrap().remove(key).unwrap();
    }
    old["optim"].as_object_mut().unwrap().remove("weight_decay_groups").unwrap();
    let read = PretrainConfig::from_stored(&old).unwrap();
    let e = &read.model.encoders;
    assert!(!e.potnet.undirected_local_edges && e.dos_transformer.head);
    assert_eq!((e.potnet.atom_features, e.cgcnn.atom_features), (AtomFeatureEncoding::Legacy, AtomFeatureEncoding::Legacy));
    assert_eq!(read.optim.weight_decay_groups, multimat::engine::optim::WeightDecayGroups::WeightsOnly);
    // Fine-tuning: the split followed the run seed.
    let ft: FinetuneConfig = toml::from_str("[data]\nshards = [\"/s\"]\ntarget = \"K_VRH\"\n[run]\nseed = 5\n").unwrap();
    assert_eq!(ft.split_seed(), 0, "a fixed split by default");
    let mut old_ft = serde_json::to_value(&ft).unwrap();
    old_ft["data"].as_object_mut().unwrap().remove("split_per_seed").unwrap();
    assert_eq!(FinetuneConfig::from_stored(&old_ft).unwrap().split_seed(), 5);
}
