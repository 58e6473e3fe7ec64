//! Products with weights in GGUF's block formats ([`QuantFormat`]), activations in f32.
//!
//! A few input rows (decoding: one token per sequence) take the fused path: each block of 32
//! weights is decoded into registers as the f32 weights it stands for (`d · q + offset`, exact)
//! and multiplied with a tile of input rows, so the weights stream from memory in their compact
//! form and are never written out widened. Many rows (a prompt) widen the weight to f32 once per launch, on the pool, and hand it
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
    // Each task owns a contiguous piece of `pieces`: its weight rows' outputs, `m × rows`
    // row-major, copied into their columns of `out` row by row at the end.
    let mut pieces = vec![0.0f32; n * m];
    let task = |(index, piece): (usize, &mut [f32])| {
        let first = index * WEIGHT_ROWS_PER_TASK;
        let rows = piece.len() / m;
        let weight = &weight[first * row_bytes..(first + rows) * row_bytes];
        if !quant_simd::dot_rows(format, weight, row_bytes, input, m, piece) {
            with_simd(FusedRows {
                format,
                input,
                weight,
                blocks,
                m,
                out: piece,
            })
        }
    };
    if parallel && n > WEIGHT_ROWS_PER_TASK {
        pieces
            .par_chunks_mut(WEIGHT_ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    } else {
        pieces
            .chunks_mut(WEIGHT_ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    }
    if m == 1 {
        out.copy_from_slice(&pieces);
    } else {
        for (index, piece) in pieces.chunks(WEIGHT_ROWS_PER_TASK * m).enumerate() {
            let (first, rows) = (index * WEIGHT_ROWS_PER_TASK, piece.len() / m);
            for (r, values) in piece.chunks_exact(rows).enumerate() {
                out[r * n + first..][..rows].copy_from_slice(values);
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

/// `out[i·rows + j] = input_i · W_j` for the `rows` weight rows of one task.
struct FusedRows<'a> {
    format: QuantFormat,
    input: &'a [f32],
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
            weight,
            blocks,
            m,
            out,
        } = self;
        let k = blocks * VALUES_PER_BLOCK;
        let row_bytes = blocks * format.block_bytes();
        let w_rows = weight.len() / row_bytes;
        for (j, w_row) in weight.chunks_exact(row_bytes).enumerate() {
            let mut first = 0;
            while first < m {
                let rows = (m - first).min(ROWS_PER_PASS);
                let x = &input[first * k..(first + rows) * k];
                let mut values = [0.0f32; ROWS_PER_PASS];
                let outs = &mut values[..rows];
                match rows {
                    1 => dot_rows::<1>(format, w_row, x, blocks, outs),
                    2 => dot_rows::<2>(format, w_row, x, blocks, outs),
                    3 => dot_rows::<3>(format, w_row, x, blocks, outs),
                    _ => dot_rows::<4>(format, w_row, x, blocks, outs),
                }
                for (r, value) in outs.iter().enumerate() {
                    out[(first + r) * w_rows + j] = *value;
                }
                first += rows;
            }
        }
    }
}

/// `outs[r] = x_r · w_row` for `R` input rows, each block decoded once into its f32 weights;
/// the values 0..16 and 16..32 of each block go to two accumulators of [`LANES`] lanes, summed
/// lane by lane at the end (the order the vector paths keep too).
// `l` walks fixed-size arrays in lock-step: the loops vectorise as one register each.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot_rows<const R: usize>(
    format: QuantFormat,
    w_row: &[u8],
    x: &[f32],
    blocks: usize,
    outs: &mut [f32],
) {
    let k = blocks * VALUES_PER_BLOCK;
    let row = format.row(w_row, blocks);
    let mut low_acc = [[0.0f32; LANES]; R];
    let mut high_acc = [[0.0f32; LANES]; R];
    for b in 0..blocks {
        let block = row.block(b);
        let w: [f32; VALUES_PER_BLOCK] =
            core::array::from_fn(|i| block.q[i].mul_add(block.d, block.offset));
        let (low, high) = w.split_at(LANES);
        for r in 0..R {
            let xs = &x[r * k + b * VALUES_PER_BLOCK..][..VALUES_PER_BLOCK];
            let (x_low, x_high) = xs.split_at(LANES);
            for l in 0..LANES {
                low_acc[r][l] = low[l].mul_add(x_low[l], low_acc[r][l]);
                high_acc[r][l] = high[l].mul_add(x_high[l], high_acc[r][l]);
            }
        }
    }
    for r in 0..R {
        outs[r] = (0..LANES)
            .map(|l| low_acc[r][l] + high_acc[r][l])
            .sum::<f32>();
    }
}
