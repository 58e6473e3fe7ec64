//! The CPU backend's element-wise, normalisation and pooling kernels (rows in parallel).

use rayon::prelude::*;

use super::math::{with_simd, NormalizeRow, SumOfSquares};

/// Rows per rayon task, so tiny rows do not drown in scheduling.
const MIN_ROWS_PER_TASK: usize = 8;

/// Embedding sum: word + position + token type, per token. Ids are already checked.
#[allow(clippy::too_many_arguments)]
pub fn embed(
    ids: &[u32],
    token_types: &[u32],
    word: &[f32],
    position: &[f32],
    token_type: &[f32],
    out: &mut [f32],
    seq: usize,
    hidden: usize,
) {
    out[..ids.len() * hidden]
        .par_chunks_mut(hidden)
        .with_min_len(MIN_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(t, row)| {
            let w = &word[ids[t] as usize * hidden..][..hidden];
            let p = &position[(t % seq) * hidden..][..hidden];
            let y = &token_type[token_types[t] as usize * hidden..][..hidden];
            for (((o, w), p), y) in row.iter_mut().zip(w).zip(p).zip(y) {
                *o = w + p + y;
            }
        });
}

/// `out = LayerNorm(input + residual) · gamma + beta` per row of `cols` (two-pass variance).
pub fn layer_norm(
    input: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    out: &mut [f32],
    cols: usize,
    eps: f32,
) {
    let rows = out.len() / cols;
    out.par_chunks_mut(cols)
        .with_min_len(MIN_ROWS_PER_TASK)
        .enumerate()
        .take(rows)
        .for_each(|(r, row)| {
            let x = &input[r * cols..][..cols];
            match residual {
                Some(residual) => {
                    let res = &residual[r * cols..][..cols];
                    row.iter_mut()
                        .zip(x)
                        .zip(res)
                        .for_each(|((o, x), y)| *o = x + y);
                }
                None => row.copy_from_slice(x),
            }
            with_simd(NormalizeRow {
                row,
                gamma,
                beta,
                eps,
            });
        });
}

/// Mean of the rows whose mask is non-zero, per sequence (a sequence without any gives zeros).
pub fn mean_pool(input: &[f32], mask: &[f32], out: &mut [f32], seq: usize, hidden: usize) {
    out.par_chunks_mut(hidden)
        .enumerate()
        .for_each(|(b, pooled)| {
            pooled.fill(0.0);
            let mut count = 0.0f32;
            for t in 0..seq {
                let m = mask[b * seq + t];
                if m != 0.0 {
                    count += m;
                    let row = &input[(b * seq + t) * hidden..][..hidden];
                    pooled.iter_mut().zip(row).for_each(|(p, x)| *p += m * x);
                }
            }
            if count > 0.0 {
                let inverse = 1.0 / count;
                pooled.iter_mut().for_each(|p| *p *= inverse);
            }
        });
}

/// Divides each row by its L2 norm, clamped below at 1e-12 (as `torch.nn.functional.normalize`).
pub fn l2_normalize(x: &mut [f32], cols: usize) {
    x.par_chunks_mut(cols)
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|row| {
            let norm = with_simd(SumOfSquares(row)).sqrt().max(1e-12);
            let inverse = 1.0 / norm;
            row.iter_mut().for_each(|v| *v *= inverse);
        });
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(x, y)| {
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        });
}
