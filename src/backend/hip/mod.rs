//! The HIP backend (feature `hip`): AMD GPUs through the HIP runtime, in three layers — raw FFI
//! ([`sys`]), one checked function per call ([`result`]) and safe RAII types ([`safe`]) — with
//! the kernels of `kernels/*.hip` compiled by `build.rs` and embedded.
//!
//! Without a GPU, [`HipBackend::new`] returns at once with `hipErrorInvalidDevice` or
//! `hipErrorNoDevice` from init, classified Fatal: no panic, no hang.

mod code_objects;
mod result;
mod safe;
mod sys;

use std::ffi::c_void;

use parking_lot::RwLock;

use crate::error::{HipError, Op};

use super::allocator::{CachingAllocator, PooledBlock};
use super::checks::{copy_fits, words_to_bytes};
use super::kernel::{Activation, Kernel, KernelId};
use super::traits::{Backend, DeviceInfo, Word};

use safe::{Context, DeviceMemory};

pub use code_objects::BUILT_ARCHS;

/// Threads per block of the row-wise kernels (`HIPINFER_BLOCK` in `kernels/common.h`).
const BLOCK: u32 = 256;
/// Threads per block of the attention kernel (a power of two ≤ `BLOCK`).
const ATTENTION_BLOCK: u32 = 128;
/// The GEMM kernel's tile (`TILE` in `kernels/gemm.hip`).
const TILE: u32 = 16;

/// A buffer in device memory.
#[derive(Debug)]
pub struct HipBuffer {
    block: PooledBlock<DeviceMemory>,
    len: usize,
}

impl HipBuffer {
    fn address(&self) -> u64 {
        *self.block.block() as u64
    }
}

/// An AMD GPU.
#[derive(Debug)]
pub struct HipBackend {
    device: i32,
    info: DeviceInfo,
    context: RwLock<Option<Context>>,
    allocator: CachingAllocator<DeviceMemory>,
}

/// The architecture name from `hipDeviceAttributeGcnArch` (910 → gfx90a, 1030 → gfx1030).
fn arch_name(gcn_arch: i32) -> String {
    match gcn_arch {
        910 => "gfx90a".into(),
        n => format!("gfx{n}"),
    }
}

/// Whether HIP sees GPU `device` (no context is created on it).
pub fn device_present(device: i32) -> bool {
    result::init().is_ok()
        && result::device_count().is_ok_and(|count| device >= 0 && device < count)
}

impl HipBackend {
    /// Opens GPU `device`. Fails fast (Fatal, op init) when HIP finds no device.
    pub fn new(device: i32) -> Result<Self, HipError> {
        result::init()
            .map_err(|e| e.with_detail("the HIP runtime found no usable AMD GPU (hipInit)"))?;
        let count = result::device_count().map_err(|e| e.with_detail("no AMD GPU is visible"))?;
        if device < 0 || device >= count {
            return Err(HipError::new(HipError::INVALID_DEVICE, Op::Init)
                .with_device(device)
                .with_detail(format!("{count} device(s) visible")));
        }
        let context = Context::create(device)?;
        let info = DeviceInfo {
            backend: "hip",
            device,
            name: result::device_name(device)?,
            arch: arch_name(result::attribute(sys::ATTRIBUTE_GCN_ARCH, device)?),
            total_memory: result::total_memory(device)?,
            compute_units: result::attribute(sys::ATTRIBUTE_MULTIPROCESSOR_COUNT, device)?.max(0)
                as u32,
        };
        Ok(HipBackend {
            device,
            info,
            context: RwLock::new(Some(context)),
            allocator: CachingAllocator::new(DeviceMemory),
        })
    }

    pub fn allocator(&self) -> &CachingAllocator<DeviceMemory> {
        &self.allocator
    }

    fn with_context<T>(
        &self,
        op: Op,
        f: impl FnOnce(&Context) -> Result<T, HipError>,
    ) -> Result<T, HipError> {
        let context = self.context.read();
        match context.as_ref() {
            Some(context) => f(context).map_err(|e| e.with_device(self.device)),
            None => Err(HipError::new(709, op)
                .with_device(self.device)
                .with_detail("the context was lost in a reset")),
        }
    }
}

fn dim(value: usize, what: &str) -> Result<i32, HipError> {
    i32::try_from(value).map_err(|_| {
        HipError::new(1, Op::Launch).with_detail(format!("{what} = {value} exceeds i32"))
    })
}

fn blocks(total: usize, per_block: u32) -> Result<u32, HipError> {
    u32::try_from(total.div_ceil(per_block as usize).max(1)).map_err(|_| {
        HipError::new(9, Op::Launch).with_detail(format!("{total} threads need too many blocks"))
    })
}

/// A kernel argument, stored so that a pointer to it can be passed to `hipModuleLaunchKernel`.
enum Arg {
    Pointer(u64),
    Int(i32),
    Float(f32),
}

impl Arg {
    fn as_param(&mut self) -> *mut c_void {
        match self {
            Arg::Pointer(p) => (p as *mut u64).cast(),
            Arg::Int(i) => (i as *mut i32).cast(),
            Arg::Float(f) => (f as *mut f32).cast(),
        }
    }
}

/// How to launch one kernel: its grid, block, dynamic shared memory and arguments in order.
struct Launch {
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_bytes: u32,
    args: Vec<Arg>,
}

fn plan(kernel: &Kernel<'_, HipBuffer>) -> Result<Launch, HipError> {
    use Arg::{Float, Int, Pointer};
    let one_d = |total: usize, args: Vec<Arg>| -> Result<Launch, HipError> {
        Ok(Launch {
            grid: (blocks(total, BLOCK)?, 1, 1),
            block: (BLOCK, 1, 1),
            shared_bytes: 0,
            args,
        })
    };
    let per_row = |rows: usize, args: Vec<Arg>| -> Result<Launch, HipError> {
        Ok(Launch {
            grid: (u32::try_from(rows.max(1)).unwrap_or(u32::MAX), 1, 1),
            block: (BLOCK, 1, 1),
            shared_bytes: 0,
            args,
        })
    };
    match kernel {
        Kernel::Embed {
            ids,
            token_types,
            word,
            position,
            token_type,
            out,
            tokens,
            seq,
            hidden,
            ..
        } => one_d(
            tokens * hidden,
            vec![
                Pointer(ids.address()),
                Pointer(token_types.address()),
                Pointer(word.address()),
                Pointer(position.address()),
                Pointer(token_type.address()),
                Pointer(out.address()),
                Int(dim(*tokens, "tokens")?),
                Int(dim(*seq, "seq")?),
                Int(dim(*hidden, "hidden")?),
            ],
        ),
        Kernel::Gemm {
            input,
            weight,
            bias,
            out,
            m,
            n,
            k,
            activation,
        } => Ok(Launch {
            grid: (blocks(*n, TILE)?, blocks(*m, TILE)?, 1),
            block: (TILE, TILE, 1),
            shared_bytes: 0,
            args: vec![
                Pointer(input.address()),
                Pointer(weight.address()),
                Pointer(bias.map_or(0, HipBuffer::address)),
                Pointer(out.address()),
                Int(dim(*m, "m")?),
                Int(dim(*n, "n")?),
                Int(dim(*k, "k")?),
                Int(i32::from(*activation == Activation::Gelu)),
            ],
        }),
        Kernel::GemmPacked { dtype, .. } => {
            return Err(HipError::new(801, Op::Launch)
                .with_kernel(KernelId::GemmPacked.symbol())
                .with_detail(format!(
                    "{dtype} weights run on the CPU backend only; use dtype f32 on HIP"
                )))
        }
        Kernel::Gelu { x, len } => one_d(*len, vec![Pointer(x.address()), Int(dim(*len, "len")?)]),
        Kernel::Add { x, y, len } => one_d(
            *len,
            vec![
                Pointer(x.address()),
                Pointer(y.address()),
                Int(dim(*len, "len")?),
            ],
        ),
        Kernel::LayerNorm {
            input,
            residual,
            gamma,
            beta,
            out,
            rows,
            cols,
            eps,
        } => per_row(
            *rows,
            vec![
                Pointer(input.address()),
                Pointer(residual.map_or(0, HipBuffer::address)),
                Pointer(gamma.address()),
                Pointer(beta.address()),
                Pointer(out.address()),
                Int(dim(*rows, "rows")?),
                Int(dim(*cols, "cols")?),
                Float(*eps),
            ],
        ),
        Kernel::Attention {
            qkv,
            mask,
            out,
            batch,
            seq,
            heads,
            head_dim,
        } => Ok(Launch {
            grid: (blocks(*seq, 1)?, blocks(*heads, 1)?, blocks(*batch, 1)?),
            block: (ATTENTION_BLOCK, 1, 1),
            shared_bytes: u32::try_from(seq * 4).map_err(|_| HipError::new(9, Op::Launch))?,
            args: vec![
                Pointer(qkv.address()),
                Pointer(mask.address()),
                Pointer(out.address()),
                Int(dim(*batch, "batch")?),
                Int(dim(*seq, "seq")?),
                Int(dim(*heads, "heads")?),
                Int(dim(*head_dim, "head_dim")?),
            ],
        }),
        Kernel::MeanPool {
            input,
            mask,
            out,
            batch,
            seq,
            hidden,
        } => per_row(
            *batch,
            vec![
                Pointer(input.address()),
                Pointer(mask.address()),
                Pointer(out.address()),
                Int(dim(*batch, "batch")?),
                Int(dim(*seq, "seq")?),
                Int(dim(*hidden, "hidden")?),
            ],
        ),
        Kernel::L2Normalize { x, rows, cols } => per_row(
            *rows,
            vec![
                Pointer(x.address()),
                Int(dim(*rows, "rows")?),
                Int(dim(*cols, "cols")?),
            ],
        ),
    }
}

impl Backend for HipBackend {
    type Buffer = HipBuffer;
    type Error = HipError;

    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn allocate(&self, len: usize) -> Result<HipBuffer, HipError> {
        let bytes = words_to_bytes(len)?;
        let block = self
            .allocator
            .allocate(bytes)
            .map_err(|e| e.with_device(self.device))?;
        Ok(HipBuffer { block, len })
    }

    fn len(&self, buffer: &HipBuffer) -> usize {
        buffer.len
    }

    fn copy_to_device<T: Word>(&self, src: &[T], dst: &mut HipBuffer) -> Result<(), HipError> {
        copy_fits(Op::CopyHostToDevice, dst.len, src.len())?;
        self.with_context(Op::CopyHostToDevice, |context| {
            let bytes = std::mem::size_of_val(src);
            // SAFETY: `dst` holds at least `src.len()` words of device memory (checked above);
            // `src` is a live host slice of `bytes` bytes, and the stream is synchronized before
            // returning, so the slice outlives the copy.
            unsafe {
                result::memcpy_async(
                    dst.address() as *mut c_void,
                    src.as_ptr().cast(),
                    bytes,
                    sys::MEMCPY_HOST_TO_DEVICE,
                    context.stream(),
                )?;
                result::stream_synchronize(context.stream())
            }
        })
    }

    fn copy_to_host<T: Word>(&self, src: &HipBuffer, dst: &mut [T]) -> Result<(), HipError> {
        copy_fits(Op::CopyDeviceToHost, src.len, dst.len())?;
        self.with_context(Op::CopyDeviceToHost, |context| {
            let bytes = std::mem::size_of_val(dst);
            // SAFETY: `src` holds at least `dst.len()` words (checked above); `dst` is a live,
            // exclusively borrowed host slice of `bytes` bytes, and the stream is synchronized
            // before returning, so nothing else touches it during the copy.
            unsafe {
                result::memcpy_async(
                    dst.as_mut_ptr().cast(),
                    src.address() as *const c_void,
                    bytes,
                    sys::MEMCPY_DEVICE_TO_HOST,
                    context.stream(),
                )?;
                result::stream_synchronize(context.stream())
                    .map_err(|e| HipError::new(e.code(), Op::CopyDeviceToHost))
            }
        })
    }

    fn copy_on_device(
        &self,
        src: &HipBuffer,
        dst: &mut HipBuffer,
        len: usize,
    ) -> Result<(), HipError> {
        copy_fits(Op::CopyDeviceToDevice, src.len.min(dst.len), len)?;
        self.with_context(Op::CopyDeviceToDevice, |context| {
            // SAFETY: both buffers hold at least `len` words of device memory (checked above) and
            // stay allocated until the stream runs the copy (buffers are only reused by work
            // queued later on the same stream).
            unsafe {
                result::memcpy_async(
                    dst.address() as *mut c_void,
                    src.address() as *const c_void,
                    len * 4,
                    sys::MEMCPY_DEVICE_TO_DEVICE,
                    context.stream(),
                )
            }
        })
    }

    fn launch(&self, kernel: Kernel<'_, HipBuffer>) -> Result<(), HipError> {
        kernel.validate(|b| b.len)?;
        let id: KernelId = kernel.id();
        let mut launch = plan(&kernel).map_err(|e| e.with_kernel(id.symbol()))?;
        self.with_context(Op::Launch, |context| {
            let function = context.function(id)?;
            let mut params: Vec<*mut c_void> = launch.args.iter_mut().map(Arg::as_param).collect();
            // SAFETY: `function` is `id`'s kernel from a loaded module; `params` point, in the
            // kernel's parameter order, to values of its parameter types (device pointers as u64,
            // int, float), alive until the call returns (HIP copies them at launch); every buffer
            // was validated against the shapes above, so the kernel stays within its buffers.
            unsafe {
                result::launch(
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
            result::stream_synchronize(context.stream())
        })
    }

    fn reset(&self) -> Result<(), HipError> {
        let mut context = self.context.write();
        drop(context.take());
        self.allocator.forget();
        result::set_device(self.device)?;
        result::device_reset().map_err(|e| e.with_device(self.device))?;
        *context = Some(Context::create(self.device)?);
        Ok(())
    }

    fn reclaim(&self) -> u64 {
        self.allocator.reclaim()
    }
}
