//! The CPU backend's element-wise, normalisation and pooling kernels (rows spread by [`Spread`]).

use super::math::{self, with_simd, GeluSlice, NormalizeRow};
use super::spread::Spread;

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
    spread: Spread,
) {
    spread.chunks_mut(
        &mut out[..ids.len() * hidden],
        hidden,
        MIN_ROWS_PER_TASK,
        |t, row| {
            let w = &word[ids[t] as usize * hidden..][..hidden];
            let p = &position[(t % seq) * hidden..][..hidden];
            let y = &token_type[token_types[t] as usize * hidden..][..hidden];
            for (((o, w), p), y) in row.iter_mut().zip(w).zip(p).zip(y) {
                *o = w + p + y;
            }
        },
    );
}

/// `out = LayerNorm(input + residual) · gamma + beta` per row of `cols` (two-pass variance).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    input: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    out: &mut [f32],
    cols: usize,
    eps: f32,
    spread: Spread,
) {
    let rows = out.len() / cols;
    spread.chunks_mut(
        &mut out[..rows * cols],
        cols,
        MIN_ROWS_PER_TASK,
        |r, row| {
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
        },
    );
}

/// Mean of the rows whose mask is non-zero, per sequence (a sequence without any gives zeros).
pub fn mean_pool(
    input: &[f32],
    mask: &[f32],
    out: &mut [f32],
    seq: usize,
    hidden: usize,
    spread: Spread,
) {
    spread.chunks_mut(out, hidden, 1, |b, pooled| {
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
pub fn l2_normalize(x: &mut [f32], cols: usize, spread: Spread) {
    spread.chunks_mut(x, cols, MIN_ROWS_PER_TASK, |_, row| math::l2_normalize(row));
}

/// Values per task of the element-wise kernels.
const ELEMENTS_PER_TASK: usize = 4096;

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32], spread: Spread) {
    spread.chunks_mut(x, ELEMENTS_PER_TASK, 1, |i, x| {
        let y = &y[i * ELEMENTS_PER_TASK..][..x.len()];
        x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
    });
}

/// `x = gelu(x)`.
pub fn gelu(x: &mut [f32], spread: Spread) {
    spread.chunks_mut(x, ELEMENTS_PER_TASK, 1, |_, chunk| {
        with_simd(GeluSlice(chunk))
    });
}
