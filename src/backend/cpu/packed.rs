//! Weights packed for the reduced-precision products of [`super::reduced`]: a `[n × k]` f32
//! matrix becomes blocks of 16 output columns, each holding, for every group of `k` values one
//! 32-bit word per column — four int8 values (`int8`) or two bfloat16 values (`bf16`) — so that
//! one 512-bit load feeds one VNNI `vpdpbusd` or BF16 `vdpbf16ps` for 16 outputs at once (the
//! layout oneDNN calls `k4n16` / `k2n16`). Columns are padded to a multiple of 16 and `k` to a
//! multiple of the group with zeros, which add nothing.
//!
//! `int8` is symmetric per output channel: `w ≈ scale[c] · q[c][k]`, `q` in −127…127, with the
//! sums of `q` over each span of [`K_PER_SCALE`] values of `k` kept for the unsigned-activation
//! correction (the activations carry a scale per row and span: see `super::reduced`).

use crate::backend::Dtype;

/// Output columns per block (one 512-bit vector of f32 or i32).
pub const BLOCK: usize = 16;

/// `k` values that share one activation scale (int8): a channel of outliers in the input rows
/// coarsens only its own span, not the whole row.
pub const K_PER_SCALE: usize = 64;

/// Spans of [`K_PER_SCALE`] values in `k`.
pub const fn spans(k: usize) -> usize {
    k.div_ceil(K_PER_SCALE)
}

/// `k` values per 32-bit word.
pub const fn group(dtype: Dtype) -> usize {
    match dtype {
        Dtype::Int8 => 4,
        Dtype::Bf16 => 2,
        Dtype::F32 => 1,
    }
}

/// Blocks of columns for `n` outputs.
pub const fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK)
}

/// Words of a packed `[n × k]` weight.
pub const fn packed_words(dtype: Dtype, n: usize, k: usize) -> usize {
    blocks(n) * k.div_ceil(group(dtype)) * BLOCK
}

/// A weight packed on the host, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    pub dtype: Dtype,
    pub n: usize,
    pub k: usize,
    pub words: Vec<u32>,
    /// Per output column (padded to the blocks): int8's dequantization scale; empty for bf16.
    pub scales: Vec<f32>,
    /// Per block of 16 columns, per span of `k`, per column: the sum of its int8 values over
    /// the span (`[blocks][spans][16]`); empty for bf16.
    pub sums: Vec<i32>,
}

/// f32 → bfloat16, rounding to nearest even (NaN stays NaN). Branch-free, so loops of it
/// vectorise.
#[inline(always)]
pub fn bf16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    let quiet = ((bits >> 16) | 0x40) as u16;
    if value.is_nan() {
        quiet
    } else {
        rounded
    }
}

/// bfloat16 → f32 (exact).
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Packs the row-major `[n × k]` `weight` as `dtype` (f32 itself, one value a word).
pub fn pack(dtype: Dtype, weight: &[f32], n: usize, k: usize) -> PackedWeight {
    let weight = &weight[..n * k];
    let g = group(dtype);
    let groups = k.div_ceil(g);
    let padded = blocks(n) * BLOCK;
    let mut words = vec![0u32; packed_words(dtype, n, k)];
    let (mut scales, mut sums) = (Vec::new(), Vec::new());
    let mut quantized = vec![0i8; if dtype == Dtype::Int8 { n * k } else { 0 }];
    if dtype == Dtype::Int8 {
        scales = vec![0.0f32; padded];
        sums = vec![0i32; padded * spans(k)];
        for (c, row) in weight.chunks_exact(k.max(1)).enumerate().take(n) {
            let largest = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            scales[c] = if largest > 0.0 { scale } else { 0.0 };
            let q = &mut quantized[c * k..(c + 1) * k];
            for (q, v) in q.iter_mut().zip(row) {
                *q = (v / scale).round().clamp(-127.0, 127.0) as i8;
            }
            let (block, lane) = (c / BLOCK, c % BLOCK);
            for (span, values) in q.chunks(K_PER_SCALE).enumerate() {
                sums[(block * spans(k) + span) * BLOCK + lane] =
                    values.iter().map(|&v| i32::from(v)).sum();
            }
        }
    }
    for c in 0..n {
        let (block, lane) = (c / BLOCK, c % BLOCK);
        for group_index in 0..groups {
            let mut word = 0u32;
            for part in 0..g {
                let at = group_index * g + part;
                if at >= k {
                    break;
                }
                let bits = match dtype {
                    Dtype::Int8 => u32::from(quantized[c * k + at] as u8),
                    Dtype::Bf16 => u32::from(bf16_bits(weight[c * k + at])),
                    Dtype::F32 => weight[c * k + at].to_bits(),
                };
                word |= bits << (part * (32 / g));
            }
            words[(block * groups + group_index) * BLOCK + lane] = word;
        }
    }
    PackedWeight {
        dtype,
        n,
        k,
        words,
        scales,
        sums,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_value(bf16_bits(1.0)), 1.0);
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: to even, 1.
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
    }

    #[test]
    fn int8_keeps_each_columns_scale_and_sum() {
        // Two columns of k = 5: the second is ten times the first.
        let weight = [1.0, -0.5, 0.25, 0.0, 1.0, 10.0, -5.0, 2.5, 0.0, 10.0];
        let packed = pack(Dtype::Int8, &weight, 2, 5);
        assert_eq!(packed.words.len(), packed_words(Dtype::Int8, 2, 5));
        assert!((packed.scales[0] - 1.0 / 127.0).abs() < 1e-7);
        assert!((packed.scales[1] - 10.0 / 127.0).abs() < 1e-6);
        assert_eq!(packed.sums.len(), BLOCK);
        assert_eq!(packed.sums[0], 127 - 64 + 32 + 127);
        // Column 0's first word: its k = 0..4 values, low byte first.
        let first = packed.words[0].to_le_bytes().map(|b| b as i8);
        assert_eq!(first, [127, -64, 32, 0]);
        // The padded column 2 holds nothing.
        assert_eq!(packed.words[2], 0);
        assert_eq!(packed.scales[2], 0.0);
    }

    #[test]
    fn int8_sums_are_kept_per_span_of_k() {
        // One column of k = K_PER_SCALE + 3: the first span all ones, the second all minus ones.
        let k = K_PER_SCALE + 3;
        let weight: Vec<f32> = (0..k)
            .map(|i| if i < K_PER_SCALE { 1.0 } else { -1.0 })
            .collect();
        let packed = pack(Dtype::Int8, &weight, 1, k);
        assert_eq!(packed.sums.len(), 2 * BLOCK);
        assert_eq!(packed.sums[0], 127 * K_PER_SCALE as i32);
        assert_eq!(packed.sums[BLOCK], -127 * 3);
    }
}
