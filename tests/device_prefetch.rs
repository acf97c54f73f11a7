//! Batch inputs prepared on the prefetch thread and uploaded through the pinned staging pool, on
//! the `cuda-sim` device (the pool runs the same code as on `cuda`, with host memory standing in
//! for pinned memory):
//! - every encoder (PotNet, CGCNN, DOS Transformer, ResNeXt, text MLP) gives the same embeddings
//!   and gradients, bit for bit, from inputs prepared on another thread as from its inline forward;
//!   inputs prepared for another device are refused with a clear error;
//! - a pre-training run reuses its staging buffers: after the first steps no new buffer is
//!   allocated (a second identical run allocates none, or at most the one a class gains when the
//!   step loop and the prefetch thread upload into it at the same moment), and the run is
//!   deterministic through the prefetched path.

mod common;

use multimat::dist::Dist;
use multimat::engine::backend::{gpu, Device};
use multimat::engine::{Module, Tensor};
use multimat::loss::Modality;
use multimat::model::{CrystalEncoderKind, InputPreparer, StepContext};
use multimat::train::config::PretrainConfig;
use multimat::train::dataset::{shard_paths, Dataset};
use multimat::train::model::MultiMatModel;
use multimat::train::preempt::StopSignal;
use multimat::train::pretrain::{pretrain, Resume, RunOptions};
use std::path::Path;
use std::sync::Mutex;

/// The staging pool belongs to the process's one `cuda-sim` device: tests that count its buffers
/// must not run beside others that upload.
static DEVICE: Mutex<()> = Mutex::new(());

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_host().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn grads(m: &mut (impl Module + ?Sized)) -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    m.visit_params(&mut |p| out.push((p.name.clone(), bits(&p.grad))));
    out
}

fn config(dir: &Path, modalities: &str, extra: &str) -> PretrainConfig {
    let p = common::write_config_with_modalities(dir, &dir.join("run"), modalities, extra);
    PretrainConfig::load(&p, &[]).unwrap()
}

#[test]
fn inputs_prepared_on_another_thread_give_the_inline_forward_and_backward_bit_for_bit() {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), r#""crystal", "dos", "charge_density", "text""#, "");
    let ds = Dataset::load(&shard_paths(&cfg.data.shards).unwrap()).unwrap();
    let dist = Dist::single();
    for crystal in [CrystalEncoderKind::Potnet, CrystalEncoderKind::Cgcnn] {
        cfg.model.encoders.crystal_encoder = crystal;
        let build = || {
            let mut m = MultiMatModel::new(&cfg.data.modalities, &cfg.model.encoders, &cfg.loss, cfg.model.embed_dim, 7).unwrap();
            m.to_gpu(Device::CudaSim, false).unwrap();
            m
        };
        let (mut inline, mut prefetched) = (build(), build());
        for (k, &m) in cfg.data.modalities.iter().enumerate() {
            if crystal == CrystalEncoderKind::Cgcnn && m != Modality::Crystal {
                continue; // the other encoders were checked in the PotNet round
            }
            let records: Vec<usize> = (0..ds.len()).filter(|&r| ds.has(m, r)).take(6).collect();
            let batch = ds.assemble(m, &records).unwrap();
            let ctx = StepContext { train: true, dist: &dist, comm: None, dropout_seed: 11 };

            let z_inline = inline.encoders[k].forward(&batch, &ctx).unwrap();
            let preparer: Box<dyn InputPreparer> = prefetched.encoders[k].input_preparer();
            let inputs = std::thread::scope(|s| s.spawn(|| preparer.prepare(&batch)).join().unwrap()).unwrap();
            let z_prefetched = prefetched.encoders[k].forward_prepared(inputs, &ctx).unwrap();
            assert_eq!(z_inline.shape, vec![records.len(), cfg.model.embed_dim]);
            assert_eq!(bits(&z_inline), bits(&z_prefetched), "{crystal:?} {}: embeddings differ", m.name());

            let dout = Tensor::from_vec(&z_inline.shape, (0..z_inline.numel()).map(|i| (i as f32 * 0.37).sin()).collect()).to_device(Device::CudaSim).unwrap();
            inline.encoders[k].backward(&dout, &ctx).unwrap();
            prefetched.encoders[k].backward(&dout, &ctx).unwrap();
            assert_eq!(grads(inline.encoders[k].as_mut()), grads(prefetched.encoders[k].as_mut()), "{crystal:?} {}: gradients differ", m.name());

            // Inputs prepared for the CPU cannot be fed to the encoder on cuda-sim.
            let on_cpu = MultiMatModel::new(&cfg.data.modalities, &cfg.model.encoders, &cfg.loss, cfg.model.embed_dim, 7).unwrap();
            let cpu_inputs = on_cpu.encoders[k].input_preparer().prepare(&batch).unwrap();
            let err = prefetched.encoders[k].forward_prepared(cpu_inputs, &ctx).unwrap_err().to_string();
            assert!(err.contains("prepared for cpu") && err.contains("cuda-sim"), "{err}");
        }
    }
}

#[test]
fn a_pretraining_run_on_cuda_sim_reuses_its_pinned_staging_buffers() {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let g = gpu(Device::CudaSim).unwrap();
    let run = |name: &str| {
        let cfg = config(&dir.path().join(name), r#""crystal", "dos", "text""#, "max_steps = 6");
        let opts = RunOptions { resume: Resume::No, progress: false, device: Device::CudaSim, tf32: false };
        let summary = pretrain(&cfg, &opts, &Dist::single(), &StopSignal::never()).unwrap();
        assert_eq!(summary.steps_done, 6);
        (g.staging_stats(), common::losses(&cfg.run.out_dir))
    };
    let before = g.staging_stats();
    let (first, losses_a) = run("a");
    let (second, losses_b) = run("b");
    let uploads = first.uploads - before.uploads;
    let allocated = first.allocations - before.allocations;
    // Per step the three encoders upload ~15 batch columns and the step loop ~18 row indices.
    assert!(uploads >= 6 * 20, "{uploads} staged uploads in 6 steps: the batch inputs do not go through the pool");
    assert!(allocated * 4 <= uploads, "{allocated} staging buffers for {uploads} uploads: buffers are not reused");
    assert_eq!(second.uploads - first.uploads, uploads, "the same run uploads the same columns");
    assert!(second.allocations - first.allocations <= 1,
        "a second identical run allocated {} more staging buffers (after {allocated} for the first): the pool grows with the steps",
        second.allocations - first.allocations);
    assert_eq!(losses_a.len(), 6);
    assert_eq!(losses_a, losses_b, "the prefetched path is deterministic");
}
