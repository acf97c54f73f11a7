//! The `--device` flag shared by every command that runs the models (pretrain, finetune, sweep,
//! embed, eval, predict), and the `on`/`off` parser of `--tf32` with the setting it applies.

use crate::engine::backend::device_for_local_rank;
use crate::engine::Device;
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where the models run: `cpu`; `cuda` (under srun/mpirun: the GPU of this rank's node-local
    /// rank, one rank per GPU) or `cuda:N`; or `cuda-sim` (the CUDA kernels executed on the
    /// CPU — for testing without a GPU, slow).
    #[arg(long, default_value = "cpu", value_parser = check_device)]
    pub device: String,
}

impl DeviceArgs {
    /// The device of a process with node-local rank `local_rank`.
    pub fn resolve(&self, local_rank: usize) -> Result<Device> {
        device_for_local_rank(&self.device, local_rank)
    }
}

/// A device name as `--device` takes it (checked when the flags are parsed).
pub fn check_device(s: &str) -> Result<String, String> {
    s.parse::<Device>().map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// Apply `--tf32` to a GPU device (opening it); nothing on the CPU.
pub fn set_tf32(device: Device, tf32: bool) -> Result<()> {
    if device.is_gpu() {
        crate::engine::backend::gpu(device)?.set_tf32(tf32);
    }
    Ok(())
}

/// `on`/`off` (also true/false, 1/0) as a flag value.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}
