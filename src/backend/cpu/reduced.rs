//! Matrix products with reduced-precision weights ([`super::packed`]): `out[m×n] =
//! act(input[m×k] · weightᵀ + bias)` with `input` in f32.
//!
//! - **int8**: each input row is quantized on the fly, symmetric per span of
//!   [`K_PER_SCALE`] values (`x ≈ sx[span] · q`: an outlier channel, which MiniLM's LayerNorm
//!   outputs have, coarsens only its span), and offset to unsigned bytes (`q + 128`, as VNNI's
//!   `vpdpbusd` multiplies unsigned by signed bytes); each span's i32 products are corrected for
//!   the offset with the weight's sums over the span, scaled by the span's scale and summed in
//!   f32: `out = sw[c] · Σ_span sx[span] · (Σ (q+128)·w − 128 · Σ w)`.
//! - **bf16**: with AVX512_BF16 the input rows are rounded to bfloat16 and multiplied with
//!   `vdpbf16ps` (f32 accumulation); without it, the bf16 weights are widened and multiplied with
//!   the f32 input (the same storage, f32 products).
//!
//! A tile of up to 4 input rows × 4 blocks of 16 columns keeps 16 accumulators in registers; the
//! inner loop loads 4 weight vectors, broadcasts 4 input words and issues 16 dot-product
//! instructions. The instruction-specific loops (VNNI, BF16, and int8 on AVX2's
//! `vpmaddubsw`) sit next to a portable one of the same shape, chosen by the thread's
//! [`SimdLevel`]; the int8 ones compute the same integer sums, so every level gives the same
//! bits.

use rayon::prelude::*;

use crate::backend::Dtype;

use super::level::{self, SimdLevel};
use super::math::{empty_product, with_simd, BiasActivation};
use super::packed::{bf16_bits, blocks, group, spans, BLOCK, K_PER_SCALE};

/// Input rows per tile.
const TILE_ROWS: usize = 4;
/// Column blocks per tile.
const TILE_BLOCKS: usize = 4;
/// Rows per parallel task, when the rows are split.
const ROWS_PER_TASK: usize = 64;

/// A packed weight as the kernel reads it.
#[derive(Debug, Clone, Copy)]
pub struct PackedRef<'a> {
    pub dtype: Dtype,
    pub words: &'a [u32],
    pub scales: &'a [f32],
    pub sums: &'a [i32],
}

/// The input rows, prepared for the products.
enum Prepared<'a> {
    /// int8: per row, `k/4` words of four `q + 128` bytes, and a scale per span of `k`.
    Int8 { words: Vec<u32>, scales: Vec<f32> },
    /// bf16 with BF16 instructions: per row, `k/2` words of two bfloat16 values.
    Bf16 { words: Vec<u32> },
    /// bf16 without: the f32 rows themselves, padded to an even `k`.
    Widened { values: Vec<f32> },
    /// f32 weights: the input rows as they are.
    Direct { values: &'a [f32] },
}

/// Quantizes or converts `input` (`m` rows of `k`) for `dtype` at `level`, the rows spread over
/// the current rayon pool when `parallel`.
fn prepare(
    input: &[f32],
    m: usize,
    k: usize,
    dtype: Dtype,
    level: SimdLevel,
    parallel: bool,
) -> Prepared<'_> {
    let groups = k.div_ceil(group(dtype));
    let rows = input.chunks_exact(k).take(m);
    // Rows per parallel task: enough work to pay for the task.
    let per_task = (16 * 1024 / k).max(1);
    match dtype {
        Dtype::Int8 => {
            let spans = spans(k);
            let mut words = vec![0x8080_8080u32; m * groups];
            let mut scales = vec![0.0f32; m * spans];
            let quantize = |((out, scales), row): ((&mut [u32], &mut [f32]), &[f32])| {
                level::at(level, || with_simd(QuantizeRow { row, out, scales }))
            };
            let work = words.chunks_mut(groups).zip(scales.chunks_mut(spans));
            if parallel && m > per_task {
                let work = words
                    .par_chunks_mut(groups)
                    .zip(scales.par_chunks_mut(spans))
                    .zip(input[..m * k].par_chunks(k))
                    .with_min_len(per_task);
                work.for_each(quantize);
            } else {
                work.zip(rows).for_each(quantize);
            }
            Prepared::Int8 { words, scales }
        }
        Dtype::Bf16 if level >= SimdLevel::Avx512Bf16 => {
            let mut words = vec![0u32; m * groups];
            let round = |(out, row): (&mut [u32], &[f32])| {
                level::at(level, || with_simd(RoundRowToBf16 { row, out }))
            };
            if parallel && m > per_task {
                words
                    .par_chunks_mut(groups)
                    .zip(input[..m * k].par_chunks(k))
                    .with_min_len(per_task)
                    .for_each(round);
            } else {
                words.chunks_mut(groups).zip(rows).for_each(round);
            }
            Prepared::Bf16 { words }
        }
        Dtype::Bf16 => {
            let mut values = vec![0.0f32; m * groups * 2];
            for (out, row) in values.chunks_mut(groups * 2).zip(rows) {
                out[..k].copy_from_slice(row);
            }
            Prepared::Widened { values }
        }
        Dtype::F32 => Prepared::Direct {
            values: &input[..m * k],
        },
    }
}

/// 1.5 · 2²³: adding it to a float of magnitude below 2²² rounds it to an integer (to even).
const ROUND: f32 = 12_582_912.0;

/// One input row quantized to `q + 128` bytes, a scale per span (branch-free, to vectorise).
struct QuantizeRow<'a> {
    row: &'a [f32],
    out: &'a mut [u32],
    scales: &'a mut [f32],
}

impl pulp::WithSimd for QuantizeRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(self.out);
        let spans = self
            .row
            .chunks(K_PER_SCALE)
            .zip(bytes.chunks_mut(K_PER_SCALE));
        for ((values, bytes), scale_out) in spans.zip(self.scales.iter_mut()) {
            let mut lanes = [0.0f32; BLOCK];
            for chunk in values.chunks(BLOCK) {
                for (lane, v) in lanes.iter_mut().zip(chunk) {
                    *lane = lane.max(v.abs());
                }
            }
            let largest = lanes.iter().fold(0.0f32, |a, &v| a.max(v));
            if largest == 0.0 {
                continue; // the bytes stay 128 (zero) and the scale 0
            }
            let scale = largest / 127.0;
            *scale_out = scale;
            let inverse = 1.0 / scale;
            for (b, v) in bytes.iter_mut().zip(values) {
                // `ROUND + q` for an integer |q| ≤ 127 is the float whose bits are ROUND's
                // (low byte zero) plus q: the low byte, its top bit flipped, is q + 128.
                let rounded = (v * inverse).clamp(-127.0, 127.0) + ROUND;
                *b = (rounded.to_bits() as u8) ^ 0x80;
            }
        }
        // The kernels read each word's bytes low first.
        #[cfg(target_endian = "big")]
        for word in self.out.iter_mut() {
            *word = word.swap_bytes();
        }
    }
}

/// One input row rounded to bfloat16, two per word (branch-free, to vectorise).
struct RoundRowToBf16<'a> {
    row: &'a [f32],
    out: &'a mut [u32],
}

impl pulp::WithSimd for RoundRowToBf16<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let halves: &mut [u16] = bytemuck::cast_slice_mut(self.out);
        for (h, v) in halves.iter_mut().zip(self.row) {
            *h = bf16_bits(*v);
        }
        #[cfg(target_endian = "big")]
        for word in self.out.iter_mut() {
            *word = word.rotate_left(16);
        }
    }
}

/// `out[m×n] = act(input[m×k] · weightᵀ + bias)`; `parallel` spreads the work over the current
/// rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    input: &[f32],
    weight: PackedRef<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    (m, n, k): (usize, usize, usize),
    gelu: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let level = level::current();
    let out = &mut out[..m * n];
    if k == 0 {
        return empty_product(out, n, bias, gelu);
    }
    let prepared = prepare(&input[..m * k], m, k, weight.dtype, level, parallel);
    let job = Job {
        prepared: &prepared,
        weight,
        bias,
        gelu,
        n,
        groups: k.div_ceil(group(weight.dtype)),
        spans: spans(k),
        level,
    };
    if parallel && m >= 2 * ROWS_PER_TASK {
        out.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(task, rows)| {
                let count = rows.len() / n;
                level::at(level, || {
                    job.rows_into(task * ROWS_PER_TASK, count, rows, n, 0, blocks(n))
                })
            });
    } else if parallel && blocks(n) >= 2 * TILE_BLOCKS {
        // Few rows: split the columns, each task into a buffer of its own.
        let tiles = blocks(n).div_ceil(TILE_BLOCKS);
        let parts: Vec<(usize, usize, Vec<f32>)> = (0..tiles)
            .into_par_iter()
            .map(|tile| {
                let first = tile * TILE_BLOCKS;
                let last = (first + TILE_BLOCKS).min(blocks(n));
                let width = (last * BLOCK).min(n) - first * BLOCK;
                let mut part = vec![0.0f32; m * width];
                level::at(level, || job.rows_into(0, m, &mut part, width, first, last));
                (first * BLOCK, width, part)
            })
            .collect();
        for (start, width, part) in parts {
            for (row, values) in out.chunks_exact_mut(n).zip(part.chunks_exact(width)) {
                row[start..start + width].copy_from_slice(values);
            }
        }
    } else {
        job.rows_into(0, m, out, n, 0, blocks(n));
    }
}

/// One product's inputs.
struct Job<'a> {
    prepared: &'a Prepared<'a>,
    weight: PackedRef<'a>,
    bias: Option<&'a [f32]>,
    gelu: bool,
    n: usize,
    groups: usize,
    /// Spans of `k` with a scale of their own (int8).
    spans: usize,
    level: SimdLevel,
}

impl Job<'_> {
    /// Rows `first..first + count` for column blocks `from..to`, into `out` of `width` columns
    /// starting at block `from`, bias and activation applied while the tile is in the L1 cache.
    fn rows_into(
        &self,
        first: usize,
        count: usize,
        out: &mut [f32],
        width: usize,
        from: usize,
        to: usize,
    ) {
        let mut values = [[[0.0f32; BLOCK]; TILE_BLOCKS]; TILE_ROWS];
        // Column tiles outside, rows inside: one tile of the weight (64 columns × k) serves
        // every row of the task from the L2 cache before the next is read.
        let mut block = from;
        while block < to {
            let tile = (to - block).min(TILE_BLOCKS);
            let start = block * BLOCK; // the tile's first column
            let end = ((block + tile) * BLOCK).min(self.n);
            let bias = self.bias.map(|b| &b[start..end]);
            let mut row = 0;
            while row < count {
                let rows = (count - row).min(TILE_ROWS);
                self.tile(first + row, rows, block, tile, &mut values);
                for (r, tile_row) in values.iter().enumerate().take(rows) {
                    let at = (row + r) * width + start - from * BLOCK;
                    let segment = &mut out[at..at + end - start];
                    for (lanes, chunk) in tile_row.iter().zip(segment.chunks_mut(BLOCK)) {
                        if chunk.len() == BLOCK {
                            chunk.copy_from_slice(lanes);
                        } else {
                            chunk.copy_from_slice(&lanes[..chunk.len()]);
                        }
                    }
                    if bias.is_some() || self.gelu {
                        with_simd(BiasActivation {
                            row: segment,
                            bias,
                            gelu: self.gelu,
                        });
                    }
                }
                row += rows;
            }
            block += tile;
        }
    }

    /// One tile's outputs (before bias and activation) into `values` (`[rows][blocks][16]`).
    fn tile(
        &self,
        row: usize,
        rows: usize,
        block: usize,
        tile: usize,
        values: &mut [[[f32; BLOCK]; TILE_BLOCKS]; TILE_ROWS],
    ) {
        *values = [[[0.0f32; BLOCK]; TILE_BLOCKS]; TILE_ROWS];
        let g = self.groups;
        // A partial tile repeats its last row and block: the extra sums are never read, and
        // every tile runs the same full-size loop, its accumulators in registers.
        let rows_of = |per_row: usize| [0, 1, 2, 3].map(|r| (row + r.min(rows - 1)) * per_row);
        let blocks_of =
            |per_block: usize| [0, 1, 2, 3].map(|b| (block + b.min(tile - 1)) * per_block);
        let weight = blocks_of(g * BLOCK).map(|at| &self.weight.words[at..at + g * BLOCK]);
        let level = self.level;
        match self.prepared {
            Prepared::Int8 { words, scales } => {
                let s = self.spans;
                let operands = Int8Tile {
                    x: rows_of(g).map(|at| &words[at..at + g]),
                    x_scales: rows_of(s).map(|at| &scales[at..at + s]),
                    weight,
                    sums: blocks_of(s * BLOCK).map(|at| &self.weight.sums[at..at + s * BLOCK]),
                    groups: g,
                };
                #[cfg(target_arch = "x86_64")]
                if level >= SimdLevel::Avx512Vnni {
                    // SAFETY: `level` never exceeds what this CPU has (`level::current` and
                    // `level::at` clamp to the detected level), and Avx512Vnni means
                    // avx512f/bw/dq/vl and avx512vnni were detected at run time: the function's
                    // target features are present.
                    unsafe { x86::dot_int8_vnni(&operands, values) };
                } else if level >= SimdLevel::Avx2 {
                    // SAFETY: as above; Avx2 means avx2 and fma were detected at run time.
                    unsafe { x86::dot_int8_avx2(&operands, values) };
                } else {
                    with_simd(PortableInt8 {
                        operands: &operands,
                        out: values,
                    });
                }
                #[cfg(not(target_arch = "x86_64"))]
                with_simd(PortableInt8 {
                    operands: &operands,
                    out: values,
                });
                for row_values in values.iter_mut() {
                    for (b, lanes) in row_values.iter_mut().enumerate().take(tile) {
                        let first = (block + b) * BLOCK;
                        let column_scales = &self.weight.scales[first..first + BLOCK];
                        for (v, scale) in lanes.iter_mut().zip(column_scales) {
                            *v *= scale;
                        }
                    }
                }
            }
            Prepared::Bf16 { words } => {
                let x = rows_of(g).map(|at| &words[at..at + g]);
                #[cfg(target_arch = "x86_64")]
                if level >= SimdLevel::Avx512Bf16 {
                    // SAFETY: as for int8: Avx512Bf16 is only reached when avx512f/bw/dq/vl,
                    // vnni and avx512bf16 were detected at run time.
                    unsafe { x86::dot_bf16(x, weight, g, values) };
                    return;
                }
                // Bf16-rounded input at a level without BF16 (never made by `prepare`, which
                // rounds only for BF16): the same bf16 products, computed in f32.
                let widened: Vec<Vec<f32>> = x
                    .iter()
                    .map(|words| {
                        words
                            .iter()
                            .flat_map(|&w| split_bf16(w))
                            .collect::<Vec<f32>>()
                    })
                    .collect();
                let x = [0, 1, 2, 3].map(|r| widened[r].as_slice());
                with_simd(FmaTile {
                    x,
                    weight,
                    groups: g,
                    widen: true,
                    out: values,
                });
            }
            Prepared::Widened { values: input } => {
                let x = rows_of(2 * g).map(|at| &input[at..at + 2 * g]);
                with_simd(FmaTile {
                    x,
                    weight,
                    groups: g,
                    widen: true,
                    out: values,
                });
            }
            Prepared::Direct { values: input } => {
                let x = rows_of(g).map(|at| &input[at..at + g]);
                with_simd(FmaTile {
                    x,
                    weight,
                    groups: g,
                    widen: false,
                    out: values,
                });
            }
        }
    }
}

/// The two bfloat16 values of a word, as f32.
#[inline(always)]
fn split_bf16(word: u32) -> [f32; 2] {
    [
        f32::from_bits(word << 16),
        f32::from_bits(word & 0xffff_0000),
    ]
}

/// A full int8 tile's operands: per row its words and span scales, per block of columns its
/// words and span sums.
struct Int8Tile<'a> {
    x: [&'a [u32]; 4],
    x_scales: [&'a [f32]; 4],
    weight: [&'a [u32]; 4],
    sums: [&'a [i32]; 4],
    groups: usize,
}

/// The portable int8 tile: `out[r][b][lane] = Σ_span sx(r)[span] · (Σ_g bytes(x(r)[g]) ·
/// bytes(w(b)[g·16 + lane]) − 128 · sums(b)[span·16 + lane])` — unsigned input bytes times
/// signed weight bytes, four per word, each span's integer sum exact and its scaling one fused
/// multiply-add, as the VNNI tile does it, so that every level gives the same bits.
struct PortableInt8<'a, 'b> {
    operands: &'b Int8Tile<'a>,
    out: &'b mut Tile,
}

/// A tile of outputs: `[rows][blocks][16]`.
type Tile = [[[f32; BLOCK]; TILE_BLOCKS]; TILE_ROWS];

impl pulp::WithSimd for PortableInt8<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let t = self.operands;
        let per_span = K_PER_SCALE / 4;
        let spans = t.x_scales[0].len();
        let mut totals = [[[0.0f32; BLOCK]; TILE_BLOCKS]; TILE_ROWS];
        for span in 0..spans {
            let mut acc = [[[0i32; BLOCK]; TILE_BLOCKS]; TILE_ROWS];
            let groups = span * per_span..((span + 1) * per_span).min(t.groups);
            // One block at a time: its four rows' accumulators stay in registers even 256 bits
            // wide (AVX2), where all sixteen would not.
            for (b, weight) in t.weight.iter().enumerate() {
                let mut block_acc = [[0i32; BLOCK]; TILE_ROWS];
                for g in groups.clone() {
                    let lanes: &[u32; BLOCK] =
                        weight[g * BLOCK..(g + 1) * BLOCK].try_into().unwrap();
                    let w = [0, 8, 16, 24]
                        .map(|shift| lanes.map(|word| i32::from((word >> shift) as u8 as i8)));
                    for (x, a) in t.x.iter().zip(block_acc.iter_mut()) {
                        let xb = x[g].to_le_bytes().map(i32::from);
                        for (l, a) in a.iter_mut().enumerate() {
                            *a += xb[0] * w[0][l]
                                + xb[1] * w[1][l]
                                + xb[2] * w[2][l]
                                + xb[3] * w[3][l];
                        }
                    }
                }
                for (r, a) in block_acc.into_iter().enumerate() {
                    acc[r][b] = a;
                }
            }
            for (r, scales) in t.x_scales.iter().enumerate() {
                for (b, sums) in t.sums.iter().enumerate() {
                    let span_sums = &sums[span * BLOCK..(span + 1) * BLOCK];
                    for ((o, a), sum) in totals[r][b].iter_mut().zip(acc[r][b]).zip(span_sums) {
                        *o = ((a - 128 * sum) as f32).mul_add(scales[span], *o);
                    }
                }
            }
        }
        *self.out = totals;
    }
}

/// The f32 tile: f32 weights (`widen: false`, one value a word) or bf16 ones widened to f32
/// (`widen: true`, two a word, `x` holding `2 · groups` values a row), times f32 input.
struct FmaTile<'a, 'b> {
    x: [&'a [f32]; 4],
    weight: [&'a [u32]; 4],
    groups: usize,
    widen: bool,
    out: &'b mut Tile,
}

impl pulp::WithSimd for FmaTile<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        if S::F32_LANES >= BLOCK {
            self.wide();
        } else {
            self.narrow::<S>();
        }
    }
}

impl FmaTile<'_, '_> {
    /// 512-bit vectors: all sixteen accumulators in registers, four weight loads and four
    /// broadcasts for sixteen fused multiply-adds.
    #[inline(always)]
    fn wide(self) {
        let mut acc = [[[0.0f32; BLOCK]; TILE_BLOCKS]; TILE_ROWS];
        let (groups, per_group) = (self.groups, if self.widen { 2 } else { 1 });
        // Slices of exactly the length the loop reads: no bounds checks inside it.
        let weights = self.weight.map(|w| &w[..groups * BLOCK]);
        let xs = self.x.map(|x| &x[..groups * per_group]);
        for g in 0..groups {
            for (b, weight) in weights.iter().enumerate() {
                let lanes: &[u32; BLOCK] = weight[g * BLOCK..(g + 1) * BLOCK].try_into().unwrap();
                if self.widen {
                    let low = lanes.map(|w| f32::from_bits(w << 16));
                    let high = lanes.map(|w| f32::from_bits(w & 0xffff_0000));
                    for (r, x) in xs.iter().enumerate() {
                        let (x0, x1) = (x[2 * g], x[2 * g + 1]);
                        for (l, a) in acc[r][b].iter_mut().enumerate() {
                            *a = x1.mul_add(high[l], x0.mul_add(low[l], *a));
                        }
                    }
                } else {
                    let w = lanes.map(f32::from_bits);
                    for (r, x) in xs.iter().enumerate() {
                        let x0 = x[g];
                        for (l, a) in acc[r][b].iter_mut().enumerate() {
                            *a = x0.mul_add(w[l], *a);
                        }
                    }
                }
            }
        }
        *self.out = acc;
    }

    /// Narrower vectors (AVX2: sixteen registers) or none: one block at a time, its four rows'
    /// accumulators in registers. Without FMA (the portable level) a multiply and an add, not a
    /// call to a software fma.
    #[inline(always)]
    fn narrow<S: pulp::Simd>(self) {
        let madd = |x: f32, w: f32, a: f32| {
            if S::IS_SCALAR {
                x * w + a
            } else {
                x.mul_add(w, a)
            }
        };
        let (groups, per_group) = (self.groups, if self.widen { 2 } else { 1 });
        let xs = self.x.map(|x| &x[..groups * per_group]);
        for (b, weight) in self.weight.iter().enumerate() {
            let weight = &weight[..groups * BLOCK];
            let mut acc = [[0.0f32; BLOCK]; TILE_ROWS];
            for g in 0..groups {
                let lanes: &[u32; BLOCK] = weight[g * BLOCK..(g + 1) * BLOCK].try_into().unwrap();
                if self.widen {
                    let low = lanes.map(|w| f32::from_bits(w << 16));
                    let high = lanes.map(|w| f32::from_bits(w & 0xffff_0000));
                    for (a, x) in acc.iter_mut().zip(xs) {
                        let (x0, x1) = (x[2 * g], x[2 * g + 1]);
                        for (l, a) in a.iter_mut().enumerate() {
                            *a = madd(x1, high[l], madd(x0, low[l], *a));
                        }
                    }
                } else {
                    let w = lanes.map(f32::from_bits);
                    for (a, x) in acc.iter_mut().zip(xs) {
                        let x0 = x[g];
                        for (l, a) in a.iter_mut().enumerate() {
                            *a = madd(x0, w[l], *a);
                        }
                    }
                }
            }
            for (r, lanes) in acc.into_iter().enumerate() {
                self.out[r][b] = lanes;
            }
        }
    }
}

/// The AVX-512 inner loops (VNNI, BF16). Each is a safe function whose target features the
/// caller checked at run time; loads and stores go through `bytemuck` casts of 16-word arrays,
/// so the only `unsafe` is the call at the dispatch above.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Int8Tile, BLOCK};

    #[inline(always)]
    fn words(slice: &[u32], at: usize) -> [u32; BLOCK] {
        let mut array = [0u32; BLOCK];
        array.copy_from_slice(&slice[at..at + BLOCK]);
        array
    }

    /// A full int8 tile: 4 rows × 4 blocks, 16 `vpdpbusd` per group of four `k`; per span, the
    /// offset correction, the conversion to f32 and one fused multiply-add by the span's scale.
    // `g` walks eight slices in lock-step; an iterator over one of them would hide that.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
    pub(super) fn dot_int8_vnni(t: &Int8Tile<'_>, out: &mut [[[f32; BLOCK]; 4]; 4]) {
        let per_span = super::K_PER_SCALE / 4;
        let groups = t.groups;
        // Slices of exactly the length the loops read: no bounds checks inside them.
        let weights = t.weight.map(|w| &w[..groups * BLOCK]);
        let xs = t.x.map(|x| &x[..groups]);
        let mut totals = [[_mm512_setzero_ps(); 4]; 4];
        let (mut first, mut span) = (0, 0);
        while first < groups {
            let last = (first + per_span).min(groups);
            let mut sums = [[_mm512_setzero_si512(); 4]; 4];
            for g in first..last {
                let wv: [__m512i; 4] = weights.map(|w| bytemuck::cast(words(w, g * BLOCK)));
                for r in 0..4 {
                    let xb = _mm512_set1_epi32(xs[r][g] as i32);
                    for b in 0..4 {
                        sums[r][b] = _mm512_dpbusd_epi32(sums[r][b], xb, wv[b]);
                    }
                }
            }
            for b in 0..4 {
                let column_sums: [i32; BLOCK] =
                    bytemuck::cast(words(bytemuck::cast_slice(t.sums[b]), span * BLOCK));
                let offset = _mm512_slli_epi32::<7>(bytemuck::cast(column_sums));
                for r in 0..4 {
                    let corrected = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums[r][b], offset));
                    let scale = _mm512_set1_ps(t.x_scales[r][span]);
                    totals[r][b] = _mm512_fmadd_ps(corrected, scale, totals[r][b]);
                }
            }
            first = last;
            span += 1;
        }
        for r in 0..4 {
            for b in 0..4 {
                let lanes: [f32; BLOCK] = bytemuck::cast(totals[r][b]);
                for (o, v) in out[r][b].iter_mut().zip(lanes) {
                    *o += v;
                }
            }
        }
    }

    /// A full int8 tile without VNNI: `vpmaddubsw` multiplies unsigned by signed bytes but
    /// sums each pair in saturating i16, which `q + 128` (up to 255) would overflow, so the
    /// inputs go back to their signed `q` and the signs move onto them: `|w| · sign(w)·q = w·q`,
    /// a pair at most 2 · 127 · 127; `vpmaddwd` by ones sums the pairs into i32. These sums are
    /// VNNI's after its offset correction, exactly, so the same f32 epilogue gives the same
    /// bits. One block at a time (its four rows' accumulators, 8 registers, fit AVX2's 16).
    // `r` walks the rows' slices and accumulators in lock-step.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_int8_avx2(t: &Int8Tile<'_>, out: &mut [[[f32; BLOCK]; 4]; 4]) {
        let per_span = super::K_PER_SCALE / 4;
        let groups = t.groups;
        // Slices of exactly the length the loops read: no bounds checks inside them.
        let weights = t.weight.map(|w| &w[..groups * BLOCK]);
        let xs = t.x.map(|x| &x[..groups]);
        let ones = _mm256_set1_epi16(1);
        let spans = t.x_scales[0].len();
        for span in 0..spans {
            let (first, last) = (span * per_span, ((span + 1) * per_span).min(groups));
            for b in 0..4 {
                let mut sums = [[_mm256_setzero_si256(); 2]; 4];
                for g in first..last {
                    let w: [__m256i; 2] = bytemuck::cast(words(weights[b], g * BLOCK));
                    let magnitude = w.map(|w| _mm256_sign_epi8(w, w));
                    for r in 0..4 {
                        let q = _mm256_set1_epi32((xs[r][g] ^ 0x8080_8080) as i32);
                        for h in 0..2 {
                            let pairs =
                                _mm256_maddubs_epi16(magnitude[h], _mm256_sign_epi8(q, w[h]));
                            let quads = _mm256_madd_epi16(pairs, ones);
                            sums[r][h] = _mm256_add_epi32(sums[r][h], quads);
                        }
                    }
                }
                for r in 0..4 {
                    let sums: [i32; BLOCK] = bytemuck::cast(sums[r]);
                    let scale = t.x_scales[r][span];
                    for (o, s) in out[r][b].iter_mut().zip(sums) {
                        *o = (s as f32).mul_add(scale, *o);
                    }
                }
            }
        }
    }

    /// A full bf16 tile: 4 rows × 4 blocks, 16 `vdpbf16ps` per pair of `k`.
    // `g` walks eight slices in lock-step; an iterator over one of them would hide that.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16")]
    pub fn dot_bf16(
        x: [&[u32]; 4],
        w: [&[u32]; 4],
        groups: usize,
        out: &mut [[[f32; BLOCK]; 4]; 4],
    ) {
        let mut sums = [[_mm512_setzero_ps(); 4]; 4];
        // Slices of exactly the length the loop reads: no bounds checks inside it.
        let weights = w.map(|w| &w[..groups * BLOCK]);
        let xs = x.map(|x| &x[..groups]);
        for g in 0..groups {
            let wv: [__m512bh; 4] = weights.map(|w| bytemuck::cast(words(w, g * BLOCK)));
            for r in 0..4 {
                let xb: __m512bh = bytemuck::cast(_mm512_set1_epi32(xs[r][g] as i32));
                for b in 0..4 {
                    sums[r][b] = _mm512_dpbf16_ps(sums[r][b], xb, wv[b]);
                }
            }
        }
        for r in 0..4 {
            for b in 0..4 {
                let lanes: [f32; BLOCK] = bytemuck::cast(sums[r][b]);
                for (o, v) in out[r][b].iter_mut().zip(lanes) {
                    *o += v;
                }
            }
        }
    }
}
