//! The CPU backend: the default everywhere, the reference the GPU is checked against, and built
//! for speed (faer GEMMs, fused epilogues, rows and heads spread over a rayon pool).
//!
//! "Device memory" is host memory handed out by the same caching allocator the HIP backend uses,
//! so allocation failures, reclaim and reuse behave alike on both.

mod attention;
mod decoder;
mod few_rows;
mod gemm;
mod kernels;
pub mod level;
pub mod math;
pub mod packed;
mod quant_matmul;
mod quant_simd;
mod reduced;
mod spread;

use std::sync::Arc;

use crate::backend::Dtype;
use crate::error::{HipError, Op};

use super::allocator::{CachingAllocator, PooledBlock, RawMemory};
use super::checks::{copy_fits, current, words_to_bytes};
use super::kernel::{Kernel, KernelId};
use super::traits::{Backend, DeviceInfo, Word};
use math::with_simd;

pub use attention::AttentionShape;
pub use level::SimdLevel;
pub use packed::{pack, PackedWeight};
pub use reduced::{gemm_packed, PackedRef};
pub use spread::Spread;

/// Attention multiply-adds that cost about as much as one value of an element-wise kernel, for
/// [`Spread::for_values`].
const ATTENTION_MACS_PER_VALUE: usize = 8;

/// Host memory as the CPU backend's device memory: blocks are zeroed `Vec<f32>`s.
#[derive(Debug, Default)]
pub struct HostMemory;

impl RawMemory for HostMemory {
    type Block = Vec<f32>;

    /// Zeroed by the allocator (`calloc`): large blocks are fresh pages the kernel maps on first
    /// touch, so the part of a size class a buffer never uses costs no resident memory (the
    /// 2 MiB steps rounded SmolLM2's weights up by 27 MB when every word was written).
    fn raw_allocate(&self, bytes: usize) -> Result<Vec<f32>, HipError> {
        let words = bytes.div_ceil(4);
        bytemuck::allocation::try_zeroed_vec::<f32>(words).map_err(|_| {
            HipError::new(HipError::OUT_OF_MEMORY, Op::Allocate)
                .with_bytes(bytes)
                .with_detail("host memory exhausted")
        })
    }

    fn raw_free(&self, block: Vec<f32>) -> Result<(), HipError> {
        drop(block);
        Ok(())
    }
}

/// A buffer of the CPU backend.
#[derive(Debug)]
pub struct CpuBuffer {
    block: PooledBlock<HostMemory>,
    len: usize,
}

impl CpuBuffer {
    /// The buffer's values as `f32`.
    pub fn as_f32(&self) -> &[f32] {
        &self.block.block()[..self.len]
    }

    fn as_f32_mut(&mut self) -> &mut [f32] {
        &mut self.block.block_mut()[..self.len]
    }

    /// The buffer's words as bytes (weights in GGUF's block formats).
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.as_f32())
    }

    /// The buffer's values reinterpreted as `u32` (token ids).
    pub fn as_u32(&self) -> &[u32] {
        bytemuck::cast_slice(self.as_f32())
    }
}

/// The CPU backend.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    allocator: CachingAllocator<HostMemory>,
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    level: SimdLevel,
}

impl CpuBackend {
    /// A backend with one worker thread per available core.
    pub fn new() -> Result<Self, HipError> {
        Self::with_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// A backend with `threads` worker threads (at least 1), at this process's SIMD level.
    pub fn with_threads(threads: usize) -> Result<Self, HipError> {
        Self::with_level(threads, SimdLevel::for_process())
    }

    /// A backend whose kernels use the instructions of `level` at most (to test and measure the
    /// lower levels on a wider CPU); a level the CPU does not have is an error naming it.
    pub fn with_level(threads: usize, level: SimdLevel) -> Result<Self, HipError> {
        if !level.is_supported() {
            return Err(HipError::new(801, Op::Init).with_detail(format!(
                "this CPU does not have the {level} instructions (it has: {})",
                SimdLevel::available()
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hipinfer-cpu-{i}"))
            .start_handler(move |_| level::set_for_thread(level))
            .build()
            .map_err(|e| {
                HipError::new(304, Op::Init)
                    .with_detail(format!("could not start CPU threads: {e}"))
            })?;
        Ok(CpuBackend {
            allocator: CachingAllocator::new(HostMemory),
            pool: Arc::new(pool),
            threads,
            level,
        })
    }

    /// The instructions its kernels use.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn allocator(&self) -> &CachingAllocator<HostMemory> {
        &self.allocator
    }

    /// Runs `job` on the calling thread for launches touching few `values`, else on the pool.
    fn spread(&self, values: usize, job: impl FnOnce(Spread) + Send) {
        match Spread::for_values(values) {
            Spread::Inline => job(Spread::Inline),
            Spread::Pool => self.pool.install(|| job(Spread::Pool)),
        }
    }

    fn run(&self, kernel: Kernel<'_, CpuBuffer>) -> Result<(), HipError> {
        let threads = self.threads;
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
                vocab,
                type_vocab,
            } => {
                let ids = &ids.as_u32()[..tokens];
                let types = &token_types.as_u32()[..tokens];
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(HipError::new(1, Op::Launch)
                        .with_kernel("hipinfer_embed")
                        .with_detail(format!(
                            "token id {bad} is outside the vocabulary of {vocab}"
                        )));
                }
                if let Some(bad) = types.iter().find(|&&t| t as usize >= type_vocab) {
                    return Err(HipError::new(1, Op::Launch)
                        .with_kernel("hipinfer_embed")
                        .with_detail(format!(
                            "token type {bad} is outside the {type_vocab} types"
                        )));
                }
                let (word, position, token_type) =
                    (word.as_f32(), position.as_f32(), token_type.as_f32());
                let out = &mut out.as_f32_mut()[..tokens * hidden];
                self.spread(tokens * hidden, |spread| {
                    kernels::embed(
                        ids, types, word, position, token_type, out, seq, hidden, spread,
                    )
                });
            }
            Kernel::Gemm {
                input,
                weight,
                bias,
                out,
                m,
                n,
                k,
                activation,
            } => {
                let bias = bias.map(|b| &b.as_f32()[..n]);
                let (input, weight, out) = (input.as_f32(), weight.as_f32(), out.as_f32_mut());
                let mut run =
                    || gemm::gemm_bias(input, weight, bias, out, (m, n, k), activation, threads);
                if m.saturating_mul(n).saturating_mul(k) < gemm::PARALLEL_MIN_MACS {
                    run() // one thread: handing it to the pool would cost more than the product
                } else {
                    self.pool.install(run)
                }
            }
            Kernel::GemmPacked {
                input,
                weight,
                scales,
                sums,
                bias,
                out,
                m,
                n,
                k,
                activation,
                dtype,
            } => {
                let weight = PackedRef {
                    dtype,
                    words: weight.as_u32(),
                    scales: scales.map_or(&[][..], |s| s.as_f32()),
                    sums: sums.map_or(&[][..], |s| bytemuck::cast_slice(s.as_f32())),
                };
                let bias = bias.map(|b| &b.as_f32()[..n]);
                let (input, out) = (input.as_f32(), out.as_f32_mut());
                let gelu = activation == crate::backend::Activation::Gelu;
                if dtype == Dtype::Int8 && self.level < SimdLevel::Avx512Vnni {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(
                            level = %self.level,
                            "int8 without AVX-512 VNNI multiplies with AVX2's vpmaddubsw (or \
                             portable integer code), slower than f32: f32 is faster on this CPU"
                        )
                    });
                }
                let macs = m.saturating_mul(n).saturating_mul(k);
                let parallel = threads > 1 && macs >= gemm::PARALLEL_MIN_MACS;
                let mut run = || gemm_packed(input, weight, bias, out, (m, n, k), gelu, parallel);
                if parallel {
                    self.pool.install(run)
                } else {
                    run()
                }
            }
            Kernel::Gelu { x, len } => {
                let x = &mut x.as_f32_mut()[..len];
                self.spread(len, |spread| kernels::gelu(x, spread));
            }
            Kernel::Add { x, y, len } => {
                let (x, y) = (&mut x.as_f32_mut()[..len], &y.as_f32()[..len]);
                self.spread(len, |spread| kernels::add(x, y, spread));
            }
            Kernel::LayerNorm {
                input,
                residual,
                gamma,
                beta,
                out,
                rows,
                cols,
                eps,
            } => {
                let size = rows * cols;
                let residual = residual.map(|r| &r.as_f32()[..size]);
                let (input, gamma, beta) = (&input.as_f32()[..size], gamma.as_f32(), beta.as_f32());
                let out = &mut out.as_f32_mut()[..size];
                self.spread(size, |spread| {
                    kernels::layer_norm(input, residual, gamma, beta, out, cols, eps, spread)
                });
            }
            Kernel::Attention {
                qkv,
                mask,
                out,
                batch,
                seq,
                heads,
                head_dim,
            } => {
                let shape = AttentionShape {
                    batch,
                    seq,
                    heads,
                    head_dim,
                };
                let (qkv, mask, out) = (qkv.as_f32(), mask.as_f32(), out.as_f32_mut());
                // Work ~ batch · heads · seq² · head_dim multiply-adds, twice.
                let work = batch * heads * seq * seq * head_dim / ATTENTION_MACS_PER_VALUE;
                self.spread(work, |spread| {
                    attention::attention(qkv, mask, out, shape, spread)
                });
            }
            Kernel::MeanPool {
                input,
                mask,
                out,
                batch,
                seq,
                hidden,
            } => {
                let (input, mask) = (input.as_f32(), mask.as_f32());
                let out = &mut out.as_f32_mut()[..batch * hidden];
                self.spread(batch * seq * hidden, |spread| {
                    kernels::mean_pool(input, mask, out, seq, hidden, spread)
                });
            }
            Kernel::L2Normalize { x, rows, cols } => {
                let x = &mut x.as_f32_mut()[..rows * cols];
                if cols > 0 {
                    self.spread(rows * cols, |spread| kernels::l2_normalize(x, cols, spread));
                }
            }
            Kernel::QuantMatmul {
                input,
                weight,
                out,
                first,
                m,
                n,
                k,
                format,
                path,
            } => {
                let input = &input.as_f32()[first * k..];
                let (weight, out) = (weight.as_bytes(), &mut out.as_f32_mut()[first * n..]);
                let macs = m.saturating_mul(n).saturating_mul(k);
                let mut product = |threads| {
                    quant_matmul::quant_matmul(input, weight, out, (m, n, k), format, path, threads)
                };
                if threads > 1 && macs >= gemm::PARALLEL_MIN_MACS / 4 {
                    self.pool.install(|| product(threads));
                } else {
                    product(1)
                }
            }
            Kernel::EmbedRows {
                ids,
                table,
                out,
                tokens,
                hidden,
                vocab,
                format,
            } => {
                let ids = &ids.as_u32()[..tokens];
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(HipError::new(1, Op::Launch)
                        .with_kernel(KernelId::EmbedRows.symbol())
                        .with_detail(format!(
                            "token id {bad} is outside the vocabulary of {vocab}"
                        )));
                }
                let out = &mut out.as_f32_mut()[..tokens * hidden];
                decoder::embed_rows(ids, table.as_bytes(), out, hidden, format);
            }
            Kernel::RmsNorm {
                x,
                add,
                weight,
                out,
                rows,
                cols,
                eps,
            } => {
                let size = rows * cols;
                with_simd(decoder::RmsNormRows {
                    x: &mut x.as_f32_mut()[..size],
                    add: add.map(|a| &a.as_f32()[..size]),
                    weight: weight.as_f32(),
                    out: &mut out.as_f32_mut()[..size],
                    cols,
                    eps,
                });
            }
            Kernel::RopeAndStore {
                qkv,
                k_cache,
                v_cache,
                shape,
                segments,
            } => decoder::rope_and_store(
                qkv.as_f32_mut(),
                k_cache.as_f32_mut(),
                v_cache.as_f32_mut(),
                shape,
                segments,
            ),
            Kernel::CausalAttention {
                qkv,
                k_cache,
                v_cache,
                out,
                shape,
                segments,
            } => {
                let work: usize = segments
                    .iter()
                    .map(|s| s.rows * (s.start + s.rows) * shape.heads * shape.head_dim * 2)
                    .sum::<usize>()
                    / ATTENTION_MACS_PER_VALUE;
                let (qkv, k_cache, v_cache) = (qkv.as_f32(), k_cache.as_f32(), v_cache.as_f32());
                let out = out.as_f32_mut();
                self.spread(work, |spread| {
                    decoder::causal_attention(qkv, k_cache, v_cache, out, shape, segments, spread)
                });
            }
            Kernel::SwiGlu {
                gate_up,
                out,
                rows,
                ff,
            } => with_simd(decoder::SwiGluRows {
                gate_up: &gate_up.as_f32()[..rows * 2 * ff],
                out: &mut out.as_f32_mut()[..rows * ff],
                ff,
            }),
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;
    type Error = HipError;

    /// From AVX-512 up, the packed tiles match faer at many rows and beat it at a few (faer
    /// packs the weight on every call); below, faer and the few-row kernel stay.
    fn packs_f32_weights(&self) -> bool {
        self.level >= SimdLevel::Avx512
    }

    fn info(&self) -> DeviceInfo {
        let arch = format!("{}+{}", std::env::consts::ARCH, self.level);
        DeviceInfo {
            backend: "cpu",
            device: 0,
            name: level::cpu_model(),
            arch,
            total_memory: 0,
            compute_units: self.threads as u32,
        }
    }

    fn allocate(&self, len: usize) -> Result<CpuBuffer, HipError> {
        let bytes = words_to_bytes(len)?;
        let block = self.allocator.allocate(bytes).map_err(|e| {
            if e.op() == Op::Allocate {
                e.with_bytes(bytes)
            } else {
                e
            }
        })?;
        Ok(CpuBuffer { block, len })
    }

    fn len(&self, buffer: &CpuBuffer) -> usize {
        buffer.len
    }

    fn copy_to_device<T: Word>(&self, src: &[T], dst: &mut CpuBuffer) -> Result<(), HipError> {
        copy_fits(Op::CopyHostToDevice, dst.len, src.len())?;
        current(Op::CopyHostToDevice, dst.block.is_current())?;
        let words: &[f32] = bytemuck::cast_slice(src);
        dst.as_f32_mut()[..words.len()].copy_from_slice(words);
        Ok(())
    }

    fn copy_to_host<T: Word>(&self, src: &CpuBuffer, dst: &mut [T]) -> Result<(), HipError> {
        copy_fits(Op::CopyDeviceToHost, src.len, dst.len())?;
        current(Op::CopyDeviceToHost, src.block.is_current())?;
        let words: &mut [f32] = bytemuck::cast_slice_mut(dst);
        words.copy_from_slice(&src.as_f32()[..words.len()]);
        Ok(())
    }

    fn copy_on_device(
        &self,
        src: &CpuBuffer,
        dst: &mut CpuBuffer,
        len: usize,
    ) -> Result<(), HipError> {
        copy_fits(Op::CopyDeviceToDevice, src.len.min(dst.len), len)?;
        current(
            Op::CopyDeviceToDevice,
            src.block.is_current() && dst.block.is_current(),
        )?;
        dst.as_f32_mut()[..len].copy_from_slice(&src.as_f32()[..len]);
        Ok(())
    }

    fn launch(&self, kernel: Kernel<'_, CpuBuffer>) -> Result<(), HipError> {
        kernel.validate_live(|b| b.len, |b| b.block.is_current())?;
        level::at(self.level, || self.run(kernel))
    }

    fn synchronize(&self) -> Result<(), HipError> {
        Ok(())
    }

    /// A new context, as on a GPU: cached blocks go, and buffers allocated before are refused
    /// from now on (their memory is freed when they drop), so a caller that forgets to
    /// re-upload after a reset finds out here as it would on a device.
    fn reset(&self) -> Result<(), HipError> {
        self.allocator.forget();
        Ok(())
    }

    fn scoped<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        self.pool.install(job)
    }

    fn reclaim(&self) -> u64 {
        self.allocator.reclaim()
    }
}
