//! The CPU kernels of a llama-family decoder besides its matrix products: token embedding rows,
//! RMSNorm with the residual sum fused, rotary embedding with the KV-cache write, causal
//! attention over the caches with grouped KV heads (any number of sequences in one launch),
//! and SwiGLU.

use crate::backend::kernel::{CacheSegment, DecoderShape};
use crate::backend::quant::QuantFormat;

use super::math::{exp, sum, sum_squared_deviation, with_simd};
use super::spread::Spread;

/// `out[t] = table[ids[t]]` widened to f32 (ids checked by the caller).
pub fn embed_rows(ids: &[u32], table: &[u8], out: &mut [f32], hidden: usize, format: QuantFormat) {
    let Some(row_bytes) = format.row_bytes(hidden) else {
        return;
    };
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(hidden)) {
        let bytes = &table[id as usize * row_bytes..][..row_bytes];
        format.dequantize_row(bytes, row);
    }
}

/// `x += add`, then `out = x / √(mean(x²) + eps) · weight`, per row of `cols`.
pub struct RmsNormRows<'a> {
    pub x: &'a mut [f32],
    pub add: Option<&'a [f32]>,
    pub weight: &'a [f32],
    pub out: &'a mut [f32],
    pub cols: usize,
    pub eps: f32,
}

impl pulp::WithSimd for RmsNormRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let RmsNormRows {
            x,
            add,
            weight,
            out,
            cols,
            eps,
        } = self;
        let weight = &weight[..cols];
        for (r, (row, out)) in x
            .chunks_exact_mut(cols)
            .zip(out.chunks_exact_mut(cols))
            .enumerate()
        {
            if let Some(add) = add {
                let add = &add[r * cols..][..cols];
                row.iter_mut().zip(add).for_each(|(x, a)| *x += a);
            }
            let mean_square = sum_squared_deviation(row, 0.0) / cols as f32;
            let inverse = 1.0 / (mean_square + eps).sqrt();
            for ((o, x), w) in out.iter_mut().zip(row.iter()).zip(weight) {
                *o = x * inverse * w;
            }
        }
    }
}

/// Rotates `head` (its first `2 · angles.len()` values, pairs `(2i, 2i+1)`) by the angles whose
/// cosines and sines are given.
#[inline(always)]
fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// The rotary frequencies `theta^(−2i/rope_dims)` of each pair (in f64).
fn frequencies(shape: &DecoderShape) -> Vec<f64> {
    let dims = shape.rope_dims as f64;
    (0..shape.rope_dims / 2)
        .map(|i| (shape.theta as f64).powf(-((2 * i) as f64) / dims))
        .collect()
}

/// The cosines and sines of position `position`'s rotary angles (computed in f64).
fn angles(position: usize, frequencies: &[f64]) -> (Vec<f32>, Vec<f32>) {
    frequencies
        .iter()
        .map(|f| {
            let angle = position as f64 * f;
            (angle.cos() as f32, angle.sin() as f32)
        })
        .unzip()
}

/// Rotary embedding on Q and K of each segment's rows of the fused `qkv`, then K and V into
/// the caches at the rows of their positions.
pub fn rope_and_store(
    qkv: &mut [f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    shape: DecoderShape,
    segments: &[CacheSegment],
) {
    let (Some(width), Some(kv_width)) = (shape.qkv_width(), shape.kv_width()) else {
        return;
    };
    let hd = shape.head_dim;
    let q_width = shape.heads * hd;
    let frequencies = frequencies(&shape);
    for segment in segments {
        let rows = &mut qkv[segment.row * width..][..segment.rows * width];
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            let position = segment.start + r;
            let (cos, sin) = angles(position, &frequencies);
            for head in row[..q_width + kv_width].chunks_exact_mut(hd) {
                rotate(&mut head[..shape.rope_dims], &cos, &sin);
            }
            let at = (segment.base + position) * kv_width;
            k_cache[at..at + kv_width].copy_from_slice(&row[q_width..q_width + kv_width]);
            v_cache[at..at + kv_width].copy_from_slice(&row[q_width + kv_width..][..kv_width]);
        }
    }
}

/// Causal attention over the caches, per segment: `out[r, h] = softmax(q·Kᵀ/√d) · V` over
/// its sequence's cache rows of positions `0..=start + r`, query head `h` reading KV head
/// `h / (heads / kv_heads)`. A dot product per (row, key), so each row's result depends on
/// that row and the cache alone (a row gives the same bits in a prompt, a decoding step or a
/// batch of sequences). (segment, head) pairs are spread over the pool.
pub fn causal_attention(
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &mut [f32],
    shape: DecoderShape,
    segments: &[CacheSegment],
    spread: Spread,
) {
    let (Some(width), Some(kv_width)) = (shape.qkv_width(), shape.kv_width()) else {
        return;
    };
    let (hd, heads) = (shape.head_dim, shape.heads);
    let tasks = segments.len() * heads;
    let outputs = spread.map(tasks, 1, |task| {
        let (segment, h) = (&segments[task / heads], task % heads);
        let cache = segment.base * kv_width..(segment.base + segment.capacity) * kv_width;
        Head {
            qkv: &qkv[segment.row * width..][..segment.rows * width],
            width,
            k_cache: &k_cache[cache.clone()],
            v_cache: &v_cache[cache],
            kv_width,
            h,
            shape,
            segment: *segment,
        }
        .by_dots()
    });
    for (task, values) in outputs.into_iter().enumerate() {
        let (segment, h) = (&segments[task / heads], task % heads);
        for (r, row) in values.chunks_exact(hd).enumerate() {
            out[((segment.row + r) * heads + h) * hd..][..hd].copy_from_slice(row);
        }
    }
}

/// One query head of one segment's rows.
struct Head<'a> {
    qkv: &'a [f32],
    width: usize,
    k_cache: &'a [f32],
    v_cache: &'a [f32],
    kv_width: usize,
    h: usize,
    shape: DecoderShape,
    segment: CacheSegment,
}

impl Head<'_> {
    /// The head's offset in a cache row.
    fn kv(&self) -> usize {
        self.h / (self.shape.heads / self.shape.kv_heads) * self.shape.head_dim
    }

    /// `rows × head_dim` values, a dot product per (row, key).
    fn by_dots(&self) -> Vec<f32> {
        let (hd, rows) = (self.shape.head_dim, self.segment.rows);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut values = vec![0.0f32; rows * hd];
        for (r, out) in values.chunks_exact_mut(hd).enumerate() {
            with_simd(AttendOne {
                q: &self.qkv[r * self.width + self.h * hd..][..hd],
                k_cache: self.k_cache,
                v_cache: self.v_cache,
                kv_width: self.kv_width,
                kv: self.kv(),
                keys: self.segment.start + r + 1,
                scale,
                out,
            })
        }
        values
    }
}

/// Softmax of `scores` in place.
#[inline(always)]
fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    scores.iter_mut().for_each(|s| *s = exp(*s - max));
    let inverse = 1.0 / sum(scores);
    scores.iter_mut().for_each(|s| *s *= inverse);
}

/// One query head of one row over `keys` cache rows.
struct AttendOne<'a> {
    q: &'a [f32],
    k_cache: &'a [f32],
    v_cache: &'a [f32],
    kv_width: usize,
    /// The head's offset in a cache row.
    kv: usize,
    keys: usize,
    scale: f32,
    out: &'a mut [f32],
}

impl pulp::WithSimd for AttendOne<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let AttendOne {
            q,
            k_cache,
            v_cache,
            kv_width,
            kv,
            keys,
            scale,
            out,
        } = self;
        let hd = q.len();
        let mut scores: Vec<f32> = (0..keys)
            .map(|j| {
                let key = &k_cache[j * kv_width + kv..][..hd];
                dot(q, key) * scale
            })
            .collect();
        softmax(&mut scores);
        out.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            let value = &v_cache[j * kv_width + kv..][..hd];
            out.iter_mut().zip(value).for_each(|(o, v)| *o += p * v);
        }
    }
}

/// `a · b` accumulated in 16 lanes (vectorises).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (chunks_a, chunks_b) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for ((lane, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out[r] = silu(gate[r]) · up[r]` from rows of `[gate | up]`.
pub struct SwiGluRows<'a> {
    pub gate_up: &'a [f32],
    pub out: &'a mut [f32],
    pub ff: usize,
}

impl pulp::WithSimd for SwiGluRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let ff = self.ff;
        for (row, out) in self
            .gate_up
            .chunks_exact(2 * ff)
            .zip(self.out.chunks_exact_mut(ff))
        {
            let (gate, up) = row.split_at(ff);
            for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + exp(-g)) * u;
            }
        }
    }
}
