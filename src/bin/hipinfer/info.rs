//! `info`: the backends available, the devices found (or why none), the build's GPU archs.

use std::process::ExitCode;

use hipinfer::backend::{self, Backend, Dtype, SimdLevel};
use serde_json::json;

use crate::args::InfoArgs;
use crate::Failure;

pub fn info(args: InfoArgs) -> Result<ExitCode, Failure> {
    let describe = |probe: Result<backend::DeviceInfo, hipinfer::HipError>| match probe {
        Ok(device) => {
            json!({"available": true, "device": device.device, "name": device.name, "arch": device.arch,
                   "memory_bytes": device.total_memory, "compute_units": device.compute_units})
        }
        Err(error) => json!({"available": false, "reason": error.to_string()}),
    };
    let hip = describe(backend::probe_hip(args.device));
    let cuda = describe(backend::probe_cuda(args.device));
    let cpu = hipinfer::backend::CpuBackend::new()?.info();
    let output = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backends": {
            "cpu": {"available": true, "name": cpu.name, "arch": cpu.arch,
                    "threads": cpu.compute_units,
                    "levels": SimdLevel::available().iter().map(|l| l.as_str()).collect::<Vec<_>>(),
                    "dtypes": Dtype::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>()},
            "hip": hip,
            "cuda": cuda,
        },
        "hip_compiled": backend::HIP_COMPILED,
        "hip_archs": backend::hip_archs(),
        "cuda_compiled": backend::CUDA_COMPILED,
        "cuda_archs": backend::cuda_archs(),
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(ExitCode::SUCCESS)
}
