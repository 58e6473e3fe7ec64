//! GEMM with a fused bias + activation epilogue, on faer.
//!
//! faer was measured against the gemm crate at the model's shapes (2 threads, this machine):
//! 128×384×384 135 vs 78 GFLOP/s, 4096×1536×384 204 vs 155, 8×384×384 43 vs 34; gemm only wins
//! single-row products run on one thread (31 vs 30). faer also has a safe API, so the CPU backend
//! needs no `unsafe`.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::backend::kernel::Activation;

use super::math::{dot, gelu, with_simd, BiasActivation};

/// Below this many multiply-adds a product runs on one thread: splitting costs more than it saves.
pub const PARALLEL_MIN_MACS: usize = 1 << 20;
/// Products of fewer rows run on one thread too (faer splits rows; 8 rows gain nothing from two).
pub const PARALLEL_MIN_ROWS: usize = 16;

/// `out[m×n] = act(input[m×k] · weight[n×k]ᵀ + bias)`, every matrix row-major and contiguous.
pub fn gemm_bias(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    (m, n, k): (usize, usize, usize),
    activation: Activation,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let out = &mut out[..m * n];
    let macs = m * n * k;
    let parallel = threads > 1 && macs >= PARALLEL_MIN_MACS;
    if m < PARALLEL_MIN_ROWS {
        // A few rows: packing the weight for a blocked GEMM costs more than the product itself,
        // so take each output as a dot product of two contiguous rows, weight rows split over
        // the threads; the bias and activation are applied in the same pass.
        rows_times_weight(
            input,
            weight,
            bias,
            out,
            (m, n, k),
            activation == Activation::Gelu,
            parallel,
        );
        return;
    }
    let lhs = MatRef::from_row_major_slice(&input[..m * k], m, k);
    let rhs = MatRef::from_row_major_slice(&weight[..n * k], n, k).transpose();
    let par = if parallel {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    matmul(
        MatMut::from_row_major_slice_mut(out, m, n),
        Accum::Replace,
        lhs,
        rhs,
        1.0f32,
        par,
    );
    epilogue(out, n, bias, activation, parallel);
}

/// Weight rows per task of [`rows_times_weight`].
const WEIGHT_ROWS_PER_TASK: usize = 64;

/// `out[m×n] = act(input[m×k] · weight[n×k]ᵀ + bias)` for small `m`, as dot products.
fn rows_times_weight(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    (m, n, k): (usize, usize, usize),
    gelu: bool,
    parallel: bool,
) {
    let input = &input[..m * k];
    let block = |(index, rows): (usize, &[f32])| -> Vec<f32> {
        let first = index * WEIGHT_ROWS_PER_TASK;
        let columns = rows.len() / k;
        let bias = bias.map(|b| &b[first..first + columns]);
        let mut values = vec![0.0f32; m * columns];
        with_simd(DotBlock {
            input,
            weight_rows: rows,
            k,
            bias,
            gelu,
            out: &mut values,
        });
        values
    };
    let blocks: Vec<Vec<f32>> = if parallel {
        weight[..n * k]
            .par_chunks(WEIGHT_ROWS_PER_TASK * k)
            .enumerate()
            .map(block)
            .collect()
    } else {
        weight[..n * k]
            .chunks(WEIGHT_ROWS_PER_TASK * k)
            .enumerate()
            .map(block)
            .collect()
    };
    for (index, values) in blocks.iter().enumerate() {
        let first = index * WEIGHT_ROWS_PER_TASK;
        let columns = values.len() / m;
        for (i, row) in values.chunks_exact(columns).enumerate() {
            out[i * n + first..][..columns].copy_from_slice(row);
        }
    }
}

/// `out[i × columns + j] = act(input_i · weight_row_j + bias_j)` for one block of weight rows.
struct DotBlock<'a> {
    input: &'a [f32],
    weight_rows: &'a [f32],
    k: usize,
    bias: Option<&'a [f32]>,
    gelu: bool,
    out: &'a mut [f32],
}

impl pulp::WithSimd for DotBlock<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let columns = self.weight_rows.len() / self.k;
        for (j, w) in self.weight_rows.chunks_exact(self.k).enumerate() {
            for (i, x) in self.input.chunks_exact(self.k).enumerate() {
                let mut value = dot(x, w) + self.bias.map_or(0.0, |b| b[j]);
                if self.gelu {
                    value = gelu(value);
                }
                self.out[i * columns + j] = value;
            }
        }
    }
}

/// Adds the bias and applies the activation, row by row.
fn epilogue(
    out: &mut [f32],
    n: usize,
    bias: Option<&[f32]>,
    activation: Activation,
    parallel: bool,
) {
    let gelu = activation == Activation::Gelu;
    let row = |row: &mut [f32]| with_simd(BiasActivation { row, bias, gelu });
    if bias.is_none() && activation == Activation::None {
        return;
    }
    if parallel {
        out.par_chunks_mut(n).with_min_len(16).for_each(row);
    } else {
        out.chunks_mut(n).for_each(row);
    }
}

/// `out[m×n] = a[m×k] · b[k×n]` for strided views (row stride given), one thread: the attention
/// kernel's per-head products.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    a: &[f32],
    a_row_stride: usize,
    b: MatRef<'_, f32>,
    out: MatMut<'_, f32>,
    m: usize,
    k: usize,
    alpha: f32,
) {
    let lhs = MatRef::from_row_major_slice_with_stride(a, m, k, a_row_stride);
    matmul(out, Accum::Replace, lhs, b, alpha, Par::Seq);
}
