//! Backends: where the model's buffers live and its kernels run.
//!
//! [`Backend`] is the one trait; [`CpuBackend`] implements it on the host, `HipBackend` (feature
//! `hip`) on AMD GPUs, [`FaultyBackend`] wraps either and injects real HIP errors, and
//! [`Resilient`] wraps any of them and sends every call through the retry layer.

mod allocator;
pub mod cpu;
mod faulty;
mod kernel;
mod resilient;
mod traits;

pub use allocator::{size_class, CachingAllocator, PooledBlock, RawMemory};
pub use cpu::{CpuBackend, CpuBuffer, HostMemory};
pub use faulty::{FaultAction, FaultPlan, FaultRule, FaultyBackend};
pub use kernel::{Activation, Kernel, KernelId};
pub use resilient::Resilient;
pub use traits::{Backend, DeviceInfo, Word};
