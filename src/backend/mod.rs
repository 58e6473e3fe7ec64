//! Backends: where the model's buffers live and its kernels run.
//!
//! [`Backend`] is the one trait; [`CpuBackend`] implements it on the host, `HipBackend` (feature
//! `hip`) on AMD GPUs, [`FaultyBackend`] wraps either and injects real HIP errors, and
//! [`Resilient`] wraps any of them and sends every call through the retry layer.

mod allocator;
mod checks;
mod choice;
pub mod cpu;
mod dtype;
mod faulty;
#[cfg(feature = "hip")]
pub mod hip;
mod kernel;
mod resilient;
mod traits;

pub use allocator::{size_class, CachingAllocator, PooledBlock, RawMemory};
pub use choice::{
    hip_archs, is_gpu, open, probe_hip, BackendChoice, SelectedBackend, HIP_COMPILED,
};
pub use cpu::{CpuBackend, CpuBuffer, HostMemory, SimdLevel};
pub use dtype::Dtype;
pub use faulty::{
    FaultAction, FaultDomain, FaultNotifier, FaultPlan, FaultRule, FaultyBackend, StickyScope,
};
#[cfg(feature = "hip")]
pub use hip::{HipBackend, HipBuffer};
pub use kernel::{Activation, Kernel, KernelId};
pub use resilient::{RecoveredCall, Resilient};
pub use traits::{Backend, DeviceInfo, Word};
