//! Multi-head self-attention on the CPU: per (sequence, head), scores = Q·Kᵀ/√d on faer, masked
//! softmax, then P·V. Keys past a sequence's last real token are skipped (they are padding), so
//! padding costs nothing and cannot change a real token's result.

use faer::{MatMut, MatRef};

use super::gemm::gemm_strided;
use super::math::{with_simd, SoftmaxRows};
use super::spread::Spread;

/// Shapes of one attention launch.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// `out[batch·seq × heads·head_dim]` from `qkv[batch·seq × 3·heads·head_dim]` and
/// `mask[batch × seq]` (1 real, 0 padding). Rows of padding tokens are written as zeros.
pub fn attention(
    qkv: &[f32],
    mask: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    spread: Spread,
) {
    let AttentionShape {
        batch,
        seq,
        heads,
        head_dim,
    } = shape;
    let hidden = heads * head_dim;
    let qkv_stride = 3 * hidden;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let out = &mut out[..batch * seq * hidden];

    // Each task owns one sequence's rows of `out`; its heads run in turn inside it, and a batch of
    // one still spreads its heads over the pool.
    let run_sequence = |b: usize, rows: &mut [f32]| {
        let mask = &mask[b * seq..(b + 1) * seq];
        let len = mask
            .iter()
            .rposition(|&m| m != 0.0)
            .map_or(0, |last| last + 1);
        rows.fill(0.0);
        if len == 0 {
            return;
        }
        let qkv = &qkv[b * seq * qkv_stride..(b * seq + len) * qkv_stride];
        let head_outputs = spread.map(heads, if batch >= 2 { heads } else { 1 }, |h| {
            head(qkv, mask, len, h, shape, scale)
        });
        for (h, values) in head_outputs.into_iter().enumerate() {
            for (i, row) in values.chunks_exact(head_dim).enumerate() {
                rows[i * hidden + h * head_dim..][..head_dim].copy_from_slice(row);
            }
        }
    };
    spread.chunks_mut(out, seq * hidden, 1, run_sequence);
}

/// One head of one sequence of real length `len`: returns `len × head_dim` values.
fn head(
    qkv: &[f32],
    mask: &[f32],
    len: usize,
    h: usize,
    shape: AttentionShape,
    scale: f32,
) -> Vec<f32> {
    let hidden = shape.heads * shape.head_dim;
    let d = shape.head_dim;
    let stride = 3 * hidden;
    let q = &qkv[h * d..];
    let k = MatRef::from_row_major_slice_with_stride(&qkv[hidden + h * d..], len, d, stride);
    let v = MatRef::from_row_major_slice_with_stride(&qkv[2 * hidden + h * d..], len, d, stride);

    let mut scores = vec![0.0f32; len * len];
    gemm_strided(
        q,
        stride,
        k.transpose(),
        MatMut::from_row_major_slice_mut(&mut scores, len, len),
        len,
        d,
        scale,
    );
    with_simd(SoftmaxRows {
        scores: &mut scores,
        len,
        keep: &mask[..len],
    });
    let mut values = vec![0.0f32; len * d];
    let probabilities = MatRef::from_row_major_slice(&scores, len, len);
    faer::linalg::matmul::matmul(
        MatMut::from_row_major_slice_mut(&mut values, len, d),
        faer::Accum::Replace,
        probabilities,
        v,
        1.0f32,
        faer::Par::Seq,
    );
    values
}
