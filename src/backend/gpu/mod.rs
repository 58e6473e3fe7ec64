//! The GPU backend, once for every driver: [`GpuBackend<D>`] holds the context (a stream and the
//! loaded kernels), the caching allocator with its generations, launch planning and the checks;
//! a [`Driver`] (HIP in `backend::hip`, CUDA in `backend::cuda`) makes the calls.
//!
//! Every call binds the device to the calling thread first: steps run on other threads than the
//! one that opened the backend, and a thread that never bound a device would put its work on
//! GPU 0 (HIP) or fail with 201 (CUDA's driver API). Buffers allocated before a reset belong to a
//! destroyed context and are refused with a clear error, never handed to a kernel.

mod context;
pub mod driver;
mod launch;

use std::ffi::c_void;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{HipError, Op};

use super::allocator::{CachingAllocator, PooledBlock};
use super::checks::{copy_fits, current, words_to_bytes};
use super::kernel::{Kernel, KernelId};
use super::traits::{Backend, DeviceInfo, Word};

use context::{Context, DeviceMemory};
pub use driver::{CodeObjects, CopyKind, Driver, Handle};

/// The `kernels/*.hip` file a kernel lives in (`None`: the kernel has no GPU version).
pub const fn file_of(id: KernelId) -> Option<&'static str> {
    match id {
        KernelId::Gemm => Some("gemm"),
        KernelId::Embed | KernelId::Gelu | KernelId::Add => Some("elementwise"),
        KernelId::LayerNorm | KernelId::L2Normalize => Some("norm"),
        KernelId::Attention => Some("attention"),
        KernelId::MeanPool => Some("pooling"),
        KernelId::OutOfBoundsWrite => Some("fault"),
        KernelId::GemmPacked
        | KernelId::QuantMatmul
        | KernelId::EmbedRows
        | KernelId::RmsNorm
        | KernelId::RopeAndStore
        | KernelId::CausalAttention
        | KernelId::SwiGlu => None,
    }
}

/// A buffer in device memory.
#[derive(Debug)]
pub struct GpuBuffer<D: Driver> {
    block: PooledBlock<DeviceMemory<D>>,
    len: usize,
}

impl<D: Driver> GpuBuffer<D> {
    fn address(&self) -> u64 {
        *self.block.block()
    }
}

/// A GPU, through driver `D`.
#[derive(Debug)]
pub struct GpuBackend<D: Driver> {
    driver: Arc<D>,
    device: i32,
    info: DeviceInfo,
    context: RwLock<Option<Context<D>>>,
    allocator: CachingAllocator<DeviceMemory<D>>,
}

/// Whether driver `D` sees GPU `device` (no context is created on it).
pub fn device_present<D: Driver>(device: i32) -> bool {
    D::open().is_ok_and(|driver| {
        driver
            .device_count()
            .is_ok_and(|count| device >= 0 && device < count)
    })
}

impl<D: Driver> GpuBackend<D> {
    /// Opens GPU `device`. Fails fast (Fatal, op init) when the driver finds no device.
    pub fn new(device: i32) -> Result<Self, HipError> {
        let driver = Arc::new(D::open()?);
        let count = driver
            .device_count()
            .map_err(|e| e.with_detail(format!("no GPU is visible to the {} driver", D::NAME)))?;
        if device < 0 || device >= count {
            return Err(HipError::new(HipError::INVALID_DEVICE, Op::Init)
                .with_device(device)
                .with_detail(format!("{count} {} device(s) visible", D::NAME)));
        }
        let context = Context::create(driver.clone(), device)?;
        let info = driver.info(device)?;
        Ok(GpuBackend {
            allocator: CachingAllocator::new(DeviceMemory::new(driver.clone(), device)),
            driver,
            device,
            info,
            context: RwLock::new(Some(context)),
        })
    }

    pub fn allocator(&self) -> &CachingAllocator<DeviceMemory<D>> {
        &self.allocator
    }

    /// Runs `f` with the live context, the device bound to this thread.
    fn with_context<T>(
        &self,
        op: Op,
        f: impl FnOnce(&Context<D>) -> Result<T, HipError>,
    ) -> Result<T, HipError> {
        let context = self.context.read();
        match context.as_ref() {
            Some(context) => self
                .driver
                .bind(self.device)
                .and_then(|()| f(context))
                .map_err(|e| e.with_device(self.device)),
            None => Err(HipError::new(709, op)
                .with_device(self.device)
                .with_detail("the context was lost in a reset")),
        }
    }

    fn copy(
        &self,
        op: Op,
        (dst, src): (*mut c_void, *const c_void),
        bytes: usize,
        kind: CopyKind,
        wait: bool,
    ) -> Result<(), HipError> {
        self.with_context(op, |context| {
            // SAFETY: the callers checked that both sides hold `bytes` bytes of the memory `kind`
            // names and keep the host side alive and unaliased until the stream is synchronized,
            // which happens here before returning when `wait` (every copy touching host memory).
            unsafe {
                self.driver
                    .copy_async(dst, src, bytes, kind, context.stream())
                    .map_err(|e| e.with_bytes(bytes))?;
                if wait {
                    self.driver
                        .stream_synchronize(context.stream())
                        .map_err(|e| HipError::new(e.code(), op))?;
                }
            }
            Ok(())
        })
    }
}

impl<D: Driver> Backend for GpuBackend<D> {
    type Buffer = GpuBuffer<D>;
    type Error = HipError;

    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn allocate(&self, len: usize) -> Result<GpuBuffer<D>, HipError> {
        let bytes = words_to_bytes(len)?;
        let block = self
            .allocator
            .allocate(bytes)
            .map_err(|e| e.with_device(self.device))?;
        Ok(GpuBuffer { block, len })
    }

    fn len(&self, buffer: &GpuBuffer<D>) -> usize {
        buffer.len
    }

    fn copy_to_device<T: Word>(&self, src: &[T], dst: &mut GpuBuffer<D>) -> Result<(), HipError> {
        let op = Op::CopyHostToDevice;
        copy_fits(op, dst.len, src.len())?;
        current(op, dst.block.is_current())?;
        let ends = (dst.address() as *mut c_void, src.as_ptr().cast());
        self.copy(
            op,
            ends,
            std::mem::size_of_val(src),
            CopyKind::HostToDevice,
            true,
        )
    }

    fn copy_to_host<T: Word>(&self, src: &GpuBuffer<D>, dst: &mut [T]) -> Result<(), HipError> {
        let op = Op::CopyDeviceToHost;
        copy_fits(op, src.len, dst.len())?;
        current(op, src.block.is_current())?;
        let bytes = std::mem::size_of_val(dst);
        let ends = (dst.as_mut_ptr().cast(), src.address() as *const c_void);
        self.copy(op, ends, bytes, CopyKind::DeviceToHost, true)
    }

    fn copy_on_device(
        &self,
        src: &GpuBuffer<D>,
        dst: &mut GpuBuffer<D>,
        len: usize,
    ) -> Result<(), HipError> {
        let op = Op::CopyDeviceToDevice;
        copy_fits(op, src.len.min(dst.len), len)?;
        current(op, src.block.is_current())?;
        current(op, dst.block.is_current())?;
        // Both buffers stay allocated until the stream runs the copy: a buffer is only reused
        // by work queued later on the same stream.
        let ends = (dst.address() as *mut c_void, src.address() as *const c_void);
        self.copy(op, ends, len * 4, CopyKind::DeviceToDevice, false)
    }

    fn launch(&self, kernel: Kernel<'_, GpuBuffer<D>>) -> Result<(), HipError> {
        kernel
            .validate_live(|b| b.len, |b| b.block.is_current())
            .map_err(|e| e.with_device(self.device))?;
        let id: KernelId = kernel.id();
        let mut launch = launch::plan(&kernel).map_err(|e| e.with_kernel(id.symbol()))?;
        self.with_context(Op::Launch, |context| {
            let function = context.function(id)?;
            let mut params: Vec<*mut c_void> =
                launch.args.iter_mut().map(launch::Arg::as_param).collect();
            // SAFETY: `function` is `id`'s kernel from a loaded module; `params` point, in the
            // kernel's parameter order, to values of its parameter types (device addresses as
            // u64, int, float), alive until the call returns (the driver copies them at launch);
            // every buffer was validated against the shapes above and belongs to this context,
            // so the kernel stays within live memory.
            unsafe {
                self.driver.launch(
                    function,
                    launch.grid,
                    launch.block,
                    launch.shared_bytes,
                    context.stream(),
                    &mut params,
                )
            }
        })
        .map_err(|e| e.with_kernel(id.symbol()))
    }

    fn synchronize(&self) -> Result<(), HipError> {
        // SAFETY: the stream belongs to the live context held by the read lock.
        self.with_context(Op::Synchronize, |context| unsafe {
            self.driver.stream_synchronize(context.stream())
        })
    }

    fn reset(&self) -> Result<(), HipError> {
        let mut context = self.context.write();
        drop(context.take());
        self.allocator.forget();
        self.driver.bind(self.device)?;
        self.driver
            .reset(self.device)
            .map_err(|e| e.with_device(self.device))?;
        *context = Some(Context::create(self.driver.clone(), self.device)?);
        Ok(())
    }

    fn reclaim(&self) -> u64 {
        self.allocator.reclaim()
    }

    #[cfg(feature = "fault-injection")]
    fn provoke_memory_fault(&self) -> Option<Result<(), HipError>> {
        /// 2⁴⁰ floats (4 TiB) past a fresh allocation: unmapped on every GPU's address space.
        const FAR: i64 = 1 << 40;
        let fault = || {
            let buffer = self.allocate(1)?;
            let id = KernelId::OutOfBoundsWrite;
            self.with_context(Op::Launch, |context| {
                let function = context.function(id)?;
                let mut args = [
                    launch::Arg::Pointer(buffer.address()),
                    launch::Arg::Long(FAR),
                ];
                let mut params: Vec<*mut c_void> =
                    args.iter_mut().map(launch::Arg::as_param).collect();
                tracing::error!(
                    backend = D::NAME,
                    device = self.device,
                    "fault injection: a kernel writes out of bounds (a real memory fault)"
                );
                // SAFETY: this is the one launch that breaks the usual contract on purpose: the
                // kernel writes 4 TiB past `buffer`, outside any allocation of this process, so
                // the GPU's MMU faults. It touches device memory only — never host memory — and
                // the parameters are a device address (u64) and a long long (i64), in order,
                // alive for the call; the stream is the live context's.
                unsafe {
                    self.driver.launch(
                        function,
                        (1, 1, 1),
                        (1, 1, 1),
                        0,
                        context.stream(),
                        &mut params,
                    )?;
                    self.driver.stream_synchronize(context.stream())
                }
            })
            .map_err(|e| e.with_kernel(id.symbol()))
        };
        Some(fault())
    }
}
