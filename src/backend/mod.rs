//! Backends: where the model's buffers live and its kernels run.
//!
//! [`Backend`] is the one trait; [`CpuBackend`] implements it on the host, `GpuBackend<D>` on a
//! GPU through a `Driver` — `HipBackend` (feature `hip`) on AMD GPUs, `CudaBackend` (feature
//! `cuda`) on NVIDIA's — [`FaultyBackend`] wraps either and injects real HIP errors, and
//! [`Resilient`] wraps any of them and sends every call through the retry layer.

mod allocator;
mod checks;
mod choice;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod dtype;
mod faulty;
#[cfg(any(feature = "hip", feature = "cuda"))]
pub mod gpu;
mod graph_scope;
#[cfg(feature = "hip")]
pub mod hip;
mod kernel;
mod quant;
mod resilient;
mod traits;

pub use allocator::{size_class, CachingAllocator, PooledBlock, RawMemory};
pub use choice::{
    cuda_archs, hip_archs, is_gpu, open, probe_cuda, probe_hip, BackendChoice, SelectedBackend,
    CUDA_COMPILED, HIP_COMPILED,
};
pub use cpu::{CpuBackend, CpuBuffer, HostMemory, SimdLevel};
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaBuffer};
pub use dtype::Dtype;
pub use faulty::{
    FaultAction, FaultDomain, FaultNotifier, FaultPlan, FaultRule, FaultyBackend, StickyScope,
};
#[cfg(feature = "hip")]
pub use hip::{HipBackend, HipBuffer};
pub use kernel::{Activation, CacheSegment, DecoderShape, Kernel, KernelId, QuantPath};
pub use quant::{f16_to_f32, QuantFormat, VALUES_PER_BLOCK};
pub use resilient::{RecoveredCall, Resilient};
pub use traits::{Backend, DeviceInfo, Word};
