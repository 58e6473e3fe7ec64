//! Products with weights in GGUF's block formats ([`QuantFormat`]), activations in f32.
//!
//! A few input rows (decoding: one token per sequence) take the fused path: each block of 32
//! weights is decoded once into registers and multiplied with up to [`ROWS_PER_PASS`] input rows,
//! its scale applied once per block (`d · Σ q·x + offset · Σ x`, the sums of `x` per block
//! computed once per launch), so the weights stream from memory exactly once in their compact
//! form. Many rows (a prompt) widen the weight to f32 once per launch, on the pool, and hand it
//! to faer's GEMM, which the widening costs a `1/m` fraction of.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::backend::kernel::QuantPath;
use crate::backend::quant::{QuantFormat, VALUES_PER_BLOCK};

use super::few_rows::FEW_ROWS;
use super::math::with_simd;
use super::quant_simd;

/// Weight rows widened at a time for the many-row product (256 × 1536 f32: 1.5 MiB).
const DENSE_ROWS: usize = 256;
/// Input rows that share one decoded block.
const ROWS_PER_PASS: usize = 4;
/// Weight rows per parallel task.
const WEIGHT_ROWS_PER_TASK: usize = 32;
/// Lanes of the block accumulators (one AVX-512 register, two AVX2 ones).
const LANES: usize = VALUES_PER_BLOCK / 2;

/// `out[m×n] = input[m×k] · W[n×k]ᵀ`, `W` as `format`'s blocks in `weight` (checked shapes),
/// by `path` (`Auto`: fused below [`FEW_ROWS`] rows, widened from there).
pub fn quant_matmul(
    input: &[f32],
    weight: &[u8],
    out: &mut [f32],
    (m, n, k): (usize, usize, usize),
    format: QuantFormat,
    path: QuantPath,
    threads: usize,
) {
    let Some(row_bytes) = format.row_bytes(k) else {
        return; // refused by the kernel's validation
    };
    let (input, weight, out) = (&input[..m * k], &weight[..n * row_bytes], &mut out[..m * n]);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let parallel = threads > 1;
    let widened = match path {
        QuantPath::Auto => m >= FEW_ROWS,
        QuantPath::Fused => false,
        QuantPath::Widened => true,
    };
    if widened && m == 1 {
        // faer multiplies a single row by a matrix-vector kernel that rounds differently from
        // its GEMM: as a row of two (the second zero), the row gets the bits it gets in any
        // other batch.
        let mut pair = input.to_vec();
        pair.resize(2 * k, 0.0);
        let mut both = vec![0.0f32; 2 * n];
        quant_matmul(&pair, weight, &mut both, (2, n, k), format, path, threads);
        out.copy_from_slice(&both[..n]);
        return;
    }
    if widened {
        // The weight widened DENSE_ROWS rows at a time (a piece that stays in cache for faer's
        // product, and a bounded buffer), each piece's product written into its columns of out.
        let mut dense = vec![0.0f32; DENSE_ROWS.min(n) * k];
        let lhs = MatRef::from_row_major_slice(input, m, k);
        let par = if parallel {
            Par::rayon(threads)
        } else {
            Par::Seq
        };
        for (piece, bytes) in weight.chunks(DENSE_ROWS * row_bytes).enumerate() {
            let rows = bytes.len() / row_bytes;
            let dense = &mut dense[..rows * k];
            let widen = |(rows, bytes): (&mut [f32], &[u8])| {
                for (row, bytes) in rows.chunks_exact_mut(k).zip(bytes.chunks_exact(row_bytes)) {
                    if !quant_simd::widen(format, bytes, row) {
                        with_simd(Widen {
                            format,
                            bytes,
                            out: row,
                        })
                    }
                }
            };
            let per_task = WEIGHT_ROWS_PER_TASK;
            if parallel {
                dense
                    .par_chunks_mut(per_task * k)
                    .zip(bytes.par_chunks(per_task * row_bytes))
                    .for_each(widen);
            } else {
                dense
                    .chunks_mut(per_task * k)
                    .zip(bytes.chunks(per_task * row_bytes))
                    .for_each(widen);
            }
            let first = piece * DENSE_ROWS;
            // This piece's columns of `out`, row stride n. (faer 0.24.4's
            // `from_row_major_slice_with_stride_mut` swaps the two strides it passes on and
            // writes out of bounds; the column-major view of the transpose is the same matrix.)
            let columns =
                MatMut::from_column_major_slice_with_stride_mut(&mut out[first..], rows, m, n)
                    .transpose_mut();
            let rhs = MatRef::from_row_major_slice(dense, rows, k).transpose();
            matmul(columns, Accum::Replace, lhs, rhs, 1.0f32, par);
        }
        return;
    }
    let blocks = k / VALUES_PER_BLOCK;
    // Σ x per block of each input row, for the blocks' offsets.
    let block_sums: Vec<f32> = input
        .chunks_exact(VALUES_PER_BLOCK)
        .map(|chunk| chunk.iter().sum())
        .collect();
    // Outputs column-major (`n × m`) so that each task owns a contiguous piece.
    let mut columns = vec![0.0f32; n * m];
    let task = |(index, piece): (usize, &mut [f32])| {
        let first = index * WEIGHT_ROWS_PER_TASK;
        let rows = piece.len() / m;
        let weight = &weight[first * row_bytes..(first + rows) * row_bytes];
        if !quant_simd::dot_rows(format, weight, row_bytes, input, &block_sums, m, piece) {
            with_simd(FusedRows {
                format,
                input,
                block_sums: &block_sums,
                weight,
                blocks,
                m,
                out: piece,
            })
        }
    };
    if parallel && n > WEIGHT_ROWS_PER_TASK {
        columns
            .par_chunks_mut(WEIGHT_ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    } else {
        columns
            .chunks_mut(WEIGHT_ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    }
    if m == 1 {
        out.copy_from_slice(&columns);
    } else {
        for (j, values) in columns.chunks_exact(m).enumerate() {
            for (i, v) in values.iter().enumerate() {
                out[i * n + j] = *v;
            }
        }
    }
}

/// One row of a weight widened to f32.
struct Widen<'a> {
    format: QuantFormat,
    bytes: &'a [u8],
    out: &'a mut [f32],
}

impl pulp::WithSimd for Widen<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.format.dequantize_row(self.bytes, self.out);
    }
}

/// `out[j·m + i] = input_i · W_j` for the weight rows of one task (column-major outputs).
struct FusedRows<'a> {
    format: QuantFormat,
    input: &'a [f32],
    block_sums: &'a [f32],
    weight: &'a [u8],
    blocks: usize,
    m: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for FusedRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let FusedRows {
            format,
            input,
            block_sums,
            weight,
            blocks,
            m,
            out,
        } = self;
        let k = blocks * VALUES_PER_BLOCK;
        let row_bytes = blocks * format.block_bytes();
        for (w_row, outs) in weight.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
            let mut first = 0;
            while first < m {
                let rows = (m - first).min(ROWS_PER_PASS);
                let x = &input[first * k..(first + rows) * k];
                let sums = &block_sums[first * blocks..(first + rows) * blocks];
                let outs = &mut outs[first..first + rows];
                match rows {
                    1 => dot_rows::<1>(format, w_row, x, sums, blocks, outs),
                    2 => dot_rows::<2>(format, w_row, x, sums, blocks, outs),
                    3 => dot_rows::<3>(format, w_row, x, sums, blocks, outs),
                    _ => dot_rows::<4>(format, w_row, x, sums, blocks, outs),
                }
                first += rows;
            }
        }
    }
}

/// `outs[r] = x_r · w_row` for `R` input rows, each block decoded once.
// `l` walks four fixed-size arrays in lock-step: the loops vectorise as one register each.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot_rows<const R: usize>(
    format: QuantFormat,
    w_row: &[u8],
    x: &[f32],
    block_sums: &[f32],
    blocks: usize,
    outs: &mut [f32],
) {
    let k = blocks * VALUES_PER_BLOCK;
    let row = format.row(w_row, blocks);
    let mut acc = [[0.0f32; LANES]; R];
    let mut offsets = [0.0f32; R];
    for b in 0..blocks {
        let block = row.block(b);
        let (low, high) = block.q.split_at(LANES);
        for r in 0..R {
            let xs = &x[r * k + b * VALUES_PER_BLOCK..][..VALUES_PER_BLOCK];
            let (x_low, x_high) = xs.split_at(LANES);
            let mut t = [0.0f32; LANES];
            for l in 0..LANES {
                t[l] = low[l].mul_add(x_low[l], high[l] * x_high[l]);
            }
            for l in 0..LANES {
                acc[r][l] = t[l].mul_add(block.d, acc[r][l]);
            }
            offsets[r] = block.offset.mul_add(block_sums[r * blocks + b], offsets[r]);
        }
    }
    for r in 0..R {
        outs[r] = acc[r].iter().sum::<f32>() + offsets[r];
    }
}
