//! Choosing a backend: `auto` (HIP if a device answers, else CPU, logged), `cpu`, or `hip`
//! (an error when unavailable). Backends are used through generics, so the choice is an enum the
//! caller matches on once.

use std::fmt;
use std::str::FromStr;

use crate::error::{ConfigError, HipError};

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
}

impl FromStr for BackendChoice {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "hip" => Ok(BackendChoice::Hip),
            _ => Err(ConfigError::new(
                "backend",
                format!("{text:?} is not one of auto, cpu, hip"),
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
        })
    }
}

/// The backend that was opened.
#[derive(Debug)]
pub enum SelectedBackend {
    Cpu(CpuBackend),
    #[cfg(feature = "hip")]
    Hip(super::hip::HipBackend),
}

/// Whether this build has the HIP backend.
pub const HIP_COMPILED: bool = cfg!(feature = "hip");

/// The architectures the HIP kernels were built for (empty without the `hip` feature).
pub fn hip_archs() -> &'static str {
    #[cfg(feature = "hip")]
    return super::hip::BUILT_ARCHS;
    #[cfg(not(feature = "hip"))]
    ""
}

/// Opens the HIP backend on `device`: its error says why none is available.
#[cfg(feature = "hip")]
fn open_hip(device: i32) -> Result<SelectedBackend, HipError> {
    super::hip::HipBackend::new(device).map(SelectedBackend::Hip)
}

#[cfg(not(feature = "hip"))]
fn open_hip(device: i32) -> Result<SelectedBackend, HipError> {
    Err(built_without_hip(device))
}

/// The answer of a build without the `hip` feature.
#[cfg(not(feature = "hip"))]
fn built_without_hip(device: i32) -> HipError {
    HipError::new(HipError::NO_DEVICE, crate::error::Op::Init)
        .with_device(device)
        .with_detail("built without HIP support: rebuild with `cargo build --features hip`")
}

/// Probes the HIP device `device`: its description, or why there is none.
pub fn probe_hip(device: i32) -> Result<DeviceInfo, HipError> {
    #[cfg(feature = "hip")]
    return super::hip::HipBackend::new(device).map(|hip| super::traits::Backend::info(&hip));
    #[cfg(not(feature = "hip"))]
    Err(built_without_hip(device))
}

/// Whether `choice` would run on a GPU: `hip`, or `auto` when a HIP device answers (asked
/// without creating a context on it).
pub fn is_gpu(choice: BackendChoice, device: i32) -> bool {
    match choice {
        BackendChoice::Cpu => false,
        BackendChoice::Hip => true,
        BackendChoice::Auto => gpu_present(device),
    }
}

#[cfg(feature = "hip")]
fn gpu_present(device: i32) -> bool {
    super::hip::device_present(device)
}

#[cfg(not(feature = "hip"))]
fn gpu_present(_device: i32) -> bool {
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
        BackendChoice::Auto => match open_hip(device) {
            Ok(hip) => Ok(hip),
            Err(reason) => {
                tracing::info!(%reason, "no HIP device; using the CPU backend");
                cpu().map(SelectedBackend::Cpu)
            }
        },
    }
}
