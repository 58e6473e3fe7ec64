//! The `Backend` trait: what every device (HIP, CPU, the fault injector) offers the model.
//!
//! Device backends return `HipError`s tagged with the right [`crate::error::Op`], so one retry
//! wrapper ([`super::Resilient`]) serves every backend, and the CPU backend and the fault injector
//! speak the same error language as a real GPU.

use crate::error::Classify;

use super::kernel::Kernel;

/// A 4-byte element that device buffers hold: `f32` activations and weights, `u32` token ids.
pub trait Word: bytemuck::Pod + Send + Sync + 'static {}
impl Word for f32 {}
impl Word for u32 {}
impl Word for i32 {}

/// What a device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `cpu` or `hip`.
    pub backend: &'static str,
    /// The device index the backend runs on.
    pub device: i32,
    pub name: String,
    /// The architecture (`gfx90a`, or the CPU's features such as `x86_64+avx2+fma`).
    pub arch: String,
    pub total_memory: u64,
    /// Compute units (GPU) or worker threads (CPU).
    pub compute_units: u32,
}

/// A device that can hold buffers and run the model's kernels.
///
/// Buffers are RAII values: dropping one gives its memory back to the backend's caching
/// allocator. Kernel launches may be asynchronous (HIP): an error of a kernel shows up at a later
/// [`Backend::synchronize`] or copy to the host, which is why the engine replays whole steps.
pub trait Backend: Send + Sync {
    /// A device buffer of `Word`s.
    type Buffer: Send + Sync;

    /// What a failed call returns: [`crate::HipError`] for devices, the retry layer's
    /// [`crate::retry::RetryError`] for [`super::Resilient`]. Either can tell its recovery class.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    fn info(&self) -> DeviceInfo;

    /// Whether f32 linear weights run faster packed for [`Kernel::GemmPacked`] (with
    /// `Dtype::F32`) than dense for [`Kernel::Gemm`] on this backend: packed once at load, they
    /// are never re-packed per product.
    fn packs_f32_weights(&self) -> bool {
        false
    }

    /// Allocates `len` words (uninitialised contents).
    fn allocate(&self, len: usize) -> Result<Self::Buffer, Self::Error>;

    /// The length of `buffer` in words.
    fn len(&self, buffer: &Self::Buffer) -> usize;

    /// Copies `src` into the start of `dst`.
    fn copy_to_device<T: Word>(&self, src: &[T], dst: &mut Self::Buffer)
        -> Result<(), Self::Error>;

    /// Copies the start of `src` into `dst` (waits for the kernels before it).
    fn copy_to_host<T: Word>(&self, src: &Self::Buffer, dst: &mut [T]) -> Result<(), Self::Error>;

    /// Copies `len` words from `src` to `dst`.
    fn copy_on_device(
        &self,
        src: &Self::Buffer,
        dst: &mut Self::Buffer,
        len: usize,
    ) -> Result<(), Self::Error>;

    /// Launches a kernel.
    fn launch(&self, kernel: Kernel<'_, Self::Buffer>) -> Result<(), Self::Error>;

    /// Submits the launches `body` makes as one unit of work — a captured graph, which is how
    /// a decoder step is sent to a GPU (one submission instead of hundreds of launches) — and
    /// returns what `body` returns. `body` makes launches only (no copies, allocations or
    /// waits), so running it again from the start computes the same thing: the retry layer
    /// retries a failed graph as a whole, and the fault injector draws its faults once for the
    /// submission instead of once per launch inside it. The CPU and GPU backends run the
    /// launches in place (stream capture on the GPUs is not done yet).
    fn graph<R>(&self, mut body: impl FnMut() -> Result<R, Self::Error>) -> Result<R, Self::Error> {
        body()
    }

    /// Waits for every launched kernel and copy.
    fn synchronize(&self) -> Result<(), Self::Error>;

    /// Drops and recreates the device state (context, stream, modules). Buffers allocated before
    /// are invalid afterwards: the caller re-uploads weights and replays from host inputs.
    fn reset(&self) -> Result<(), Self::Error>;

    /// Frees cached device memory; returns the bytes freed.
    fn reclaim(&self) -> u64;

    /// Runs `job` — a sequence of launches, such as a decoder's forward pass — where this
    /// backend's launches cost least: the CPU backend runs it on one of its own worker threads,
    /// so each parallel launch inside it splits across the pool directly instead of waking the
    /// pool from outside (tens of microseconds a launch, a hundred launches a token). Other
    /// backends run it in place.
    fn scoped<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        job()
    }

    /// Makes a real device memory fault, on purpose: a kernel that writes far outside any
    /// allocation, then the wait for it; returns what the device answered (on ROCm ≥ 6 and CUDA
    /// a sticky 700 that poisons the whole process). `None`: this backend has no device to
    /// fault (the CPU). For fault campaigns and tests only.
    #[cfg(feature = "fault-injection")]
    fn provoke_memory_fault(&self) -> Option<Result<(), Self::Error>> {
        None
    }
}

/// A shared backend is a backend: a test or an operator keeps one handle (to read a
/// `FaultyBackend`'s counters, say) while the engine uses another.
impl<B: Backend> Backend for std::sync::Arc<B> {
    type Buffer = B::Buffer;
    type Error = B::Error;

    fn info(&self) -> DeviceInfo {
        (**self).info()
    }

    fn packs_f32_weights(&self) -> bool {
        (**self).packs_f32_weights()
    }

    fn allocate(&self, len: usize) -> Result<Self::Buffer, Self::Error> {
        (**self).allocate(len)
    }

    fn len(&self, buffer: &Self::Buffer) -> usize {
        (**self).len(buffer)
    }

    fn copy_to_device<T: Word>(
        &self,
        src: &[T],
        dst: &mut Self::Buffer,
    ) -> Result<(), Self::Error> {
        (**self).copy_to_device(src, dst)
    }

    fn copy_to_host<T: Word>(&self, src: &Self::Buffer, dst: &mut [T]) -> Result<(), Self::Error> {
        (**self).copy_to_host(src, dst)
    }

    fn copy_on_device(
        &self,
        src: &Self::Buffer,
        dst: &mut Self::Buffer,
        len: usize,
    ) -> Result<(), Self::Error> {
        (**self).copy_on_device(src, dst, len)
    }

    fn launch(&self, kernel: Kernel<'_, Self::Buffer>) -> Result<(), Self::Error> {
        (**self).launch(kernel)
    }

    fn graph<R>(&self, body: impl FnMut() -> Result<R, Self::Error>) -> Result<R, Self::Error> {
        (**self).graph(body)
    }

    fn synchronize(&self) -> Result<(), Self::Error> {
        (**self).synchronize()
    }

    fn reset(&self) -> Result<(), Self::Error> {
        (**self).reset()
    }

    fn reclaim(&self) -> u64 {
        (**self).reclaim()
    }

    fn scoped<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        (**self).scoped(job)
    }

    #[cfg(feature = "fault-injection")]
    fn provoke_memory_fault(&self) -> Option<Result<(), Self::Error>> {
        (**self).provoke_memory_fault()
    }
}
