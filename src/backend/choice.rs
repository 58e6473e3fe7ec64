//! Choosing a backend: `auto` (a GPU if one answers — HIP first, then CUDA — else the CPU,
//! logged), `cpu`, `hip` or `cuda` (an error when unavailable). Backends are used through
//! generics, so the choice is an enum the caller matches on once.

use std::fmt;
use std::str::FromStr;

use crate::error::{ConfigError, HipError, Op};

use super::cpu::CpuBackend;
use super::traits::DeviceInfo;

/// Which backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    #[default]
    Auto,
    Cpu,
    Hip,
    Cuda,
}

impl FromStr for BackendChoice {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "hip" => Ok(BackendChoice::Hip),
            "cuda" => Ok(BackendChoice::Cuda),
            _ => Err(ConfigError::new(
                "backend",
                format!("{text:?} is not one of auto, cpu, hip, cuda"),
            )),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Hip => "hip",
            BackendChoice::Cuda => "cuda",
        })
    }
}

/// The backend that was opened.
#[derive(Debug)]
pub enum SelectedBackend {
    Cpu(CpuBackend),
    #[cfg(feature = "hip")]
    Hip(super::hip::HipBackend),
    #[cfg(feature = "cuda")]
    Cuda(super::cuda::CudaBackend),
}

/// Whether this build has the HIP backend.
pub const HIP_COMPILED: bool = cfg!(feature = "hip");
/// Whether this build has the CUDA backend.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// The architectures the HIP kernels were built for (empty without the `hip` feature).
pub fn hip_archs() -> &'static str {
    #[cfg(feature = "hip")]
    return super::hip::BUILT_ARCHS;
    #[cfg(not(feature = "hip"))]
    ""
}

/// What the CUDA fatbins hold (empty without the `cuda` feature).
pub fn cuda_archs() -> &'static str {
    #[cfg(feature = "cuda")]
    return super::cuda::BUILT_ARCHS;
    #[cfg(not(feature = "cuda"))]
    ""
}

/// The answer of a build without `feature`.
#[allow(dead_code)] // unused when both GPU features are on
fn built_without(feature: &str, what: &str, device: i32) -> HipError {
    HipError::new(HipError::NO_DEVICE, Op::Init)
        .with_device(device)
        .with_detail(format!(
            "built without {what} support: rebuild with `cargo build --features {feature}`"
        ))
}

/// Opens the HIP backend on `device`: its error says why none is available.
fn open_hip(device: i32) -> Result<SelectedBackend, HipError> {
    #[cfg(feature = "hip")]
    return super::hip::HipBackend::new(device).map(SelectedBackend::Hip);
    #[cfg(not(feature = "hip"))]
    Err(built_without("hip", "HIP", device))
}

/// Opens the CUDA backend on `device`: its error says why none is available.
fn open_cuda(device: i32) -> Result<SelectedBackend, HipError> {
    #[cfg(feature = "cuda")]
    return super::cuda::CudaBackend::new(device).map(SelectedBackend::Cuda);
    #[cfg(not(feature = "cuda"))]
    Err(built_without("cuda", "CUDA", device))
}

fn info_of(selected: SelectedBackend) -> DeviceInfo {
    use super::traits::Backend;
    match selected {
        SelectedBackend::Cpu(cpu) => cpu.info(),
        #[cfg(feature = "hip")]
        SelectedBackend::Hip(hip) => hip.info(),
        #[cfg(feature = "cuda")]
        SelectedBackend::Cuda(cuda) => cuda.info(),
    }
}

/// Probes the HIP device `device`: its description, or why there is none.
pub fn probe_hip(device: i32) -> Result<DeviceInfo, HipError> {
    open_hip(device).map(info_of)
}

/// Probes the CUDA device `device`: its description, or why there is none.
pub fn probe_cuda(device: i32) -> Result<DeviceInfo, HipError> {
    open_cuda(device).map(info_of)
}

/// Whether `choice` would run on a GPU: `hip` or `cuda`, or `auto` when a GPU answers (asked
/// without creating a context on it).
pub fn is_gpu(choice: BackendChoice, device: i32) -> bool {
    match choice {
        BackendChoice::Cpu => false,
        BackendChoice::Hip | BackendChoice::Cuda => true,
        BackendChoice::Auto => gpu_present(device),
    }
}

fn gpu_present(device: i32) -> bool {
    #[cfg(feature = "hip")]
    if super::hip::device_present(device) {
        return true;
    }
    #[cfg(feature = "cuda")]
    if super::cuda::device_present(device) {
        return true;
    }
    let _ = device;
    false
}

/// Opens the chosen backend. `auto` falls back to the CPU with one INFO line saying why.
pub fn open(
    choice: BackendChoice,
    device: i32,
    cpu_threads: Option<usize>,
) -> Result<SelectedBackend, HipError> {
    let cpu = || match cpu_threads {
        Some(threads) => CpuBackend::with_threads(threads),
        None => CpuBackend::new(),
    };
    match choice {
        BackendChoice::Cpu => cpu().map(SelectedBackend::Cpu),
        BackendChoice::Hip => open_hip(device),
        BackendChoice::Cuda => open_cuda(device),
        BackendChoice::Auto => match open_hip(device) {
            Ok(hip) => Ok(hip),
            Err(no_hip) => match open_cuda(device) {
                Ok(cuda) => Ok(cuda),
                Err(no_cuda) => {
                    tracing::info!(hip = %no_hip, cuda = %no_cuda, "no GPU; using the CPU backend");
                    cpu().map(SelectedBackend::Cpu)
                }
            },
        },
    }
}
