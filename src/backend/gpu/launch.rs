//! Launch planning: each kernel call's grid, block, shared memory and arguments, the same for
//! every GPU driver. The sizes come from `kernels/common.h` and `kernels/gemm.hip` through
//! `build.rs`, so Rust and the kernels cannot disagree.

use std::ffi::c_void;

use crate::error::{HipError, Op};

use crate::backend::kernel::{Activation, Kernel, KernelId};

use super::driver::Driver;
use super::GpuBuffer;

/// `"256"` → 256 at compile time (the sizes `build.rs` reads from the kernel sources).
const fn parse(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "a kernel size is not a number");
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Threads per block of the row-wise kernels (`HIPINFER_BLOCK` in `kernels/common.h`).
pub const BLOCK: u32 = parse(env!("HIPINFER_KERNEL_BLOCK"));
/// Outputs per side of a GEMM block (`GEMM_BLOCK_TILE` in `kernels/gemm.hip`).
pub const GEMM_BLOCK_TILE: u32 = parse(env!("HIPINFER_GEMM_BLOCK_TILE"));
/// Threads per side of a GEMM block (`GEMM_THREADS_SIDE` in `kernels/gemm.hip`).
pub const GEMM_THREADS_SIDE: u32 = parse(env!("HIPINFER_GEMM_THREADS_SIDE"));
const _: () = assert!(GEMM_BLOCK_TILE.is_multiple_of(GEMM_THREADS_SIDE));
/// Threads per block of the attention kernel: a power of two ≤ `BLOCK`, since its reductions'
/// scratch holds `HIPINFER_BLOCK` floats.
pub const ATTENTION_BLOCK: u32 = 128;
const _: () = assert!(ATTENTION_BLOCK <= BLOCK && ATTENTION_BLOCK.is_power_of_two());

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
pub enum Arg {
    Pointer(u64),
    Int(i32),
    Long(i64),
    Float(f32),
}

impl Arg {
    pub fn as_param(&mut self) -> *mut c_void {
        match self {
            Arg::Pointer(p) => (p as *mut u64).cast(),
            Arg::Int(i) => (i as *mut i32).cast(),
            Arg::Long(l) => (l as *mut i64).cast(),
            Arg::Float(f) => (f as *mut f32).cast(),
        }
    }
}

/// How to launch one kernel: its grid, block, dynamic shared memory and arguments in order.
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
    pub args: Vec<Arg>,
}

pub fn plan<D: Driver>(kernel: &Kernel<'_, GpuBuffer<D>>) -> Result<Launch, HipError> {
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
            grid: (
                blocks(*n, GEMM_BLOCK_TILE)?,
                blocks(*m, GEMM_BLOCK_TILE)?,
                1,
            ),
            block: (GEMM_THREADS_SIDE, GEMM_THREADS_SIDE, 1),
            shared_bytes: 0,
            args: vec![
                Pointer(input.address()),
                Pointer(weight.address()),
                Pointer(bias.map_or(0, GpuBuffer::address)),
                Pointer(out.address()),
                Int(dim(*m, "m")?),
                Int(dim(*n, "n")?),
                Int(dim(*k, "k")?),
                Int(i32::from(*activation == Activation::Gelu)),
            ],
        }),
        Kernel::GemmPacked { dtype, .. } => Err(HipError::new(801, Op::Launch)
            .with_kernel(KernelId::GemmPacked.symbol())
            .with_detail(format!(
                "{dtype} weights run on the CPU backend only; use dtype f32 on {}",
                D::NAME
            ))),
        Kernel::QuantMatmul { .. }
        | Kernel::EmbedRows { .. }
        | Kernel::RmsNorm { .. }
        | Kernel::RopeAndStore { .. }
        | Kernel::CausalAttention { .. }
        | Kernel::SwiGlu { .. } => Err(HipError::new(801, Op::Launch)
            .with_kernel(kernel.id().symbol())
            .with_detail(format!(
                "the language-model kernels have no {} version yet: run language models on the \
                 CPU backend",
                D::NAME
            ))),
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
                Pointer(residual.map_or(0, GpuBuffer::address)),
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
