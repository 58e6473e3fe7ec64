//! Products of a few input rows with a weight matrix (`m` < [`FEW_ROWS`]): single-request
//! latency, where the whole cost is streaming the weights once.
//!
//! Why not faer or gemm here: both pack the weight into panels before multiplying, which pays off
//! when many rows reuse a panel but not for 8 rows — `cargo bench --bench cpu_kernels -- gemm/`
//! on 2 Zen threads (AVX2): 35 GFLOP/s at 8 × 384 × 384 against raw faer's 28, and the model's
//! 1 × 8 latency fell from 13.9 ms to about 5 ms (`hipinfer bench --batch 1 --seq 8`).
//! Each output is a dot product of two contiguous rows; a tile of
//! [`TILE_W`] weight rows × [`TILE_X`] input rows keeps 12 accumulators in registers, so each
//! loaded vector feeds several fused multiply-adds, and the input rows stay in L1 while each
//! weight row is read from memory once. Twelve because an FMA takes 4–5 cycles and two start per
//! cycle (about 10 must be in flight), and 12 accumulators + 3 weight vectors + 1 input vector
//! are exactly AVX2's 16 registers; the earlier 4 × 2 tile (8 accumulators) waited on its own
//! FMAs, and 1 × 8 went from 5.0 to 4.7 ms on the same machine.

use rayon::prelude::*;

use super::math::{empty_product, with_simd, BiasActivation};

/// Below this many input rows, products take this path instead of faer.
pub const FEW_ROWS: usize = 16;
/// Weight rows per tile.
const TILE_W: usize = 3;
/// Input rows per tile.
const TILE_X: usize = 4;
/// 64-byte cache lines.
const FLOATS_PER_CACHE_LINE: usize = 16;
/// Weight rows per parallel task (a multiple of [`TILE_W`]).
const WEIGHT_ROWS_PER_TASK: usize = 48;

/// `out[m×n] = act(input[m×k] · weight[n×k]ᵀ + bias)` for small `m`.
pub fn few_rows_times_weight(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    (m, n, k): (usize, usize, usize),
    gelu: bool,
    parallel: bool,
) {
    let input = &input[..m * k];
    let out = &mut out[..m * n];
    if k == 0 {
        return empty_product(out, n, bias, gelu);
    }
    if !parallel {
        with_simd(Block {
            input,
            weight_rows: &weight[..n * k],
            k,
            bias,
            gelu,
            out,
            out_stride: n,
        });
        return;
    }
    // Each task computes its weight rows' columns into a buffer of its own; they are then
    // copied into place (the columns of one task are not contiguous in `out`).
    let blocks: Vec<Vec<f32>> = weight[..n * k]
        .par_chunks(WEIGHT_ROWS_PER_TASK * k)
        .enumerate()
        .map(|(index, rows)| {
            let first = index * WEIGHT_ROWS_PER_TASK;
            let columns = rows.len() / k;
            let mut values = vec![0.0f32; m * columns];
            with_simd(Block {
                input,
                weight_rows: rows,
                k,
                bias: bias.map(|b| &b[first..first + columns]),
                gelu,
                out: &mut values,
                out_stride: columns,
            });
            values
        })
        .collect();
    for (index, values) in blocks.iter().enumerate() {
        let first = index * WEIGHT_ROWS_PER_TASK;
        let columns = values.len() / m;
        for (i, row) in values.chunks_exact(columns).enumerate() {
            out[i * n + first..][..columns].copy_from_slice(row);
        }
    }
}

/// `out[i × out_stride + j] = act(input_i · weight_row_j + bias_j)` for one block of weight rows.
struct Block<'a> {
    input: &'a [f32],
    weight_rows: &'a [f32],
    k: usize,
    bias: Option<&'a [f32]>,
    gelu: bool,
    out: &'a mut [f32],
    out_stride: usize,
}

impl pulp::WithSimd for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Block {
            input,
            weight_rows,
            k,
            bias,
            gelu,
            out,
            out_stride,
        } = self;
        let operands = Operands {
            input,
            weight_rows,
            k,
            prefetch: Prefetch::new(),
        };
        let (m, columns) = (input.len() / k, weight_rows.len() / k);
        let mut j = 0;
        while j + TILE_W <= columns {
            let mut i = 0;
            while i + TILE_X <= m {
                tile::<S, TILE_W, TILE_X>(simd, &operands, i, j, out, out_stride);
                i += TILE_X;
            }
            while i + 2 <= m {
                tile::<S, TILE_W, 2>(simd, &operands, i, j, out, out_stride);
                i += 2;
            }
            while i < m {
                tile::<S, TILE_W, 1>(simd, &operands, i, j, out, out_stride);
                i += 1;
            }
            j += TILE_W;
        }
        while j < columns {
            for i in 0..m {
                tile::<S, 1, 1>(simd, &operands, i, j, out, out_stride);
            }
            j += 1;
        }
        // The bias and activation, vectorised over each output row (the same code as faer's
        // epilogue, compiled here inside the SIMD context).
        if bias.is_some() || gelu {
            for row in out.chunks_mut(out_stride).take(m) {
                BiasActivation {
                    row: &mut row[..columns],
                    bias,
                    gelu,
                }
                .with_simd(simd);
            }
        }
    }
}

/// What every tile of a block reads.
struct Operands<'a> {
    input: &'a [f32],
    weight_rows: &'a [f32],
    k: usize,
    prefetch: Prefetch,
}

/// Asks the CPU to start loading memory into cache ahead of use: the hardware prefetcher loses
/// time on each new 1.5 KB weight row, and the model's 1 × 8 latency fell by about a tenth with
/// this (x86-64 only; elsewhere it does nothing).
#[derive(Clone, Copy)]
struct Prefetch {
    #[cfg(target_arch = "x86_64")]
    sse: Option<pulp::core_arch::x86::Sse>,
}

impl Prefetch {
    fn new() -> Self {
        Prefetch {
            #[cfg(target_arch = "x86_64")]
            sse: pulp::x86::V3::try_new().map(|v3| v3.sse),
        }
    }

    /// Starts loading the cache line holding `values[at]` (nothing when `at` is out of range).
    #[inline(always)]
    fn line(self, values: &[f32], at: usize) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(sse), Some(value)) = (self.sse, values.get(at)) {
            const INTO_ALL_CACHE_LEVELS: i32 = 3; // _MM_HINT_T0
            sse._mm_prefetch::<INTO_ALL_CACHE_LEVELS>(std::ptr::from_ref(value).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (values, at);
    }
}

/// One tile: `W` weight rows from `j` × `X` input rows from `i`, accumulated in `W · X` vector
/// registers; each is then reduced, finished with the scalar tail of `k`, and written to
/// `out[(i + r) × out_stride + j + c]`.
#[inline(always)]
fn tile<S: pulp::Simd, const W: usize, const X: usize>(
    simd: S,
    operands: &Operands<'_>,
    i: usize,
    j: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let k = operands.k;
    let xs: [&[f32]; X] = std::array::from_fn(|r| &operands.input[(i + r) * k..][..k]);
    let ws: [&[f32]; W] = std::array::from_fn(|c| &operands.weight_rows[(j + c) * k..][..k]);
    let x_vectors: [&[S::f32s]; X] = std::array::from_fn(|r| S::as_simd_f32s(xs[r]).0);
    let w_vectors: [&[S::f32s]; W] = std::array::from_fn(|c| S::as_simd_f32s(ws[c]).0);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; W]; X];
    // While this tile works on rows in cache, the memory bus would idle: start loading a share
    // of the next tile's weight rows (the `W · k` values after these), spread over the loop, so
    // that they are in cache when their turn comes. The passes over the input rows (`i`) split
    // the next tile between them.
    let m = operands.input.len() / k;
    let next_tile = (j + W) * k;
    let share = |row: usize| next_tile + (W * k) * row / m;
    let (first, last) = (share(i), share(i + X));
    let per_step = (last - first).div_ceil(x_vectors[0].len().max(1));
    let (mut at, mut until) = (first.next_multiple_of(FLOATS_PER_CACHE_LINE), first);
    for p in 0..x_vectors[0].len() {
        until += per_step;
        while at < until.min(last) {
            operands.prefetch.line(operands.weight_rows, at);
            at += FLOATS_PER_CACHE_LINE;
        }
        let w: [S::f32s; W] = std::array::from_fn(|c| w_vectors[c][p]);
        for r in 0..X {
            let x = x_vectors[r][p];
            for c in 0..W {
                acc[r][c] = simd.mul_add_e_f32s(x, w[c], acc[r][c]);
            }
        }
    }
    let done = k - S::as_simd_f32s(xs[0]).1.len();
    for r in 0..X {
        for c in 0..W {
            let tail: f32 = xs[r][done..]
                .iter()
                .zip(&ws[c][done..])
                .map(|(a, b)| a * b)
                .sum();
            let value = simd.reduce_sum_f32s(acc[r][c]) + tail;
            out[(i + r) * out_stride + j + c] = value;
        }
    }
}
