//! `QuantFormat`: how the weights of a language model's matrix products are stored in device
//! buffers — GGUF's own block formats, the same bytes, with each row's blocks laid out *planar*:
//! first every block's scale (f16), then (Q4_1) every block's minimum, then every block's
//! quants. A row is exactly as many bytes as in the file ([`QuantFormat::to_planar`] rearranges
//! one at upload), but a kernel reads the scales of a row as one short array and the quants as
//! one contiguous run, instead of picking two halves out of every 18- or 20-byte block.
//! Every format comes in blocks of [`VALUES_PER_BLOCK`] values along `k` (f32 and f16 too, whose
//! rows are plain arrays), and a row of `k` values is `k / 32` whole blocks.

use std::fmt;

/// Values of `k` per block, in every format.
pub const VALUES_PER_BLOCK: usize = 32;

/// A weight's storage format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// 32-bit floats.
    F32,
    /// IEEE half floats.
    F16,
    /// `{f16 d; i8 q[32]}`: `d · q`.
    Q8_0,
    /// `{f16 d; u8 q[16]}` (low nibbles values 0..16, high nibbles 16..32): `d · (q − 8)`.
    Q4_0,
    /// `{f16 d; f16 m; u8 q[16]}`: `d · q + m`.
    Q4_1,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 5] = [
        QuantFormat::F32,
        QuantFormat::F16,
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            QuantFormat::F32 => "F32",
            QuantFormat::F16 => "F16",
            QuantFormat::Q8_0 => "Q8_0",
            QuantFormat::Q4_0 => "Q4_0",
            QuantFormat::Q4_1 => "Q4_1",
        }
    }

    /// Bytes of one block of [`VALUES_PER_BLOCK`] values.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantFormat::F32 => 128,
            QuantFormat::F16 => 64,
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4_0 => 18,
            QuantFormat::Q4_1 => 20,
        }
    }

    /// Bytes of one row of `k` values (`None` unless `k` is a whole number of blocks).
    pub fn row_bytes(self, k: usize) -> Option<usize> {
        if !k.is_multiple_of(VALUES_PER_BLOCK) {
            return None;
        }
        (k / VALUES_PER_BLOCK).checked_mul(self.block_bytes())
    }

    /// 32-bit words holding `rows` rows of `k` values (the last word zero-padded).
    pub fn words(self, rows: usize, k: usize) -> Option<usize> {
        Some(self.row_bytes(k)?.checked_mul(rows)?.div_ceil(4))
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One block's values before its scale: `q` (as f32), with `d` and `offset` such that the
/// block's values are `d · q[i] + offset`. A dot product with `x` is then
/// `d · Σ q·x + offset · Σ x`, so the scale multiplies once per block, not once per value.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub q: [f32; VALUES_PER_BLOCK],
    pub d: f32,
    pub offset: f32,
}

/// IEEE half → f32, exactly, without branches on the common path (`half`'s conversion
/// detects F16C at run time on every call, which cost more than the whole block's arithmetic):
/// the exponent and mantissa shifted into f32's place and scaled by 2¹¹² (the difference of the
/// biases) give every normal and subnormal value; infinities and NaNs are set apart.
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let magnitude = u32::from(bits & 0x7fff);
    let scaled = f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000); // × 2^112
    let value = if magnitude >= 0x7c00 {
        f32::from_bits((magnitude << 13) | 0x7f80_0000)
    } else {
        scaled
    };
    f32::from_bits(value.to_bits() | sign)
}

impl QuantFormat {
    /// Halves of each block's header (scale, then minimum) and bytes of its quants.
    pub const fn parts(self) -> (usize, usize) {
        match self {
            QuantFormat::F32 => (0, 128),
            QuantFormat::F16 => (0, 64),
            QuantFormat::Q8_0 => (1, 32),
            QuantFormat::Q4_0 => (1, 16),
            QuantFormat::Q4_1 => (2, 16),
        }
    }

    /// Rearranges one row of GGUF blocks (`gguf`, whole blocks) into the planar layout (`out`,
    /// the same length).
    pub fn to_planar(self, gguf: &[u8], out: &mut [u8]) {
        let (halves, quants) = self.parts();
        let size = self.block_bytes();
        let blocks = gguf.len() / size;
        let (headers, body) = out.split_at_mut(2 * halves * blocks);
        for (b, block) in gguf.chunks_exact(size).enumerate() {
            for h in 0..halves {
                headers[2 * (h * blocks + b)..][..2].copy_from_slice(&block[2 * h..2 * h + 2]);
            }
            body[b * quants..(b + 1) * quants].copy_from_slice(&block[2 * halves..]);
        }
    }

    /// A planar row of `blocks` blocks.
    #[inline(always)]
    pub fn row(self, bytes: &[u8], blocks: usize) -> Row<'_> {
        let (halves, _) = self.parts();
        let (headers, quants) = bytes.split_at(2 * halves * blocks);
        let (scales, mins) = headers.split_at(2 * blocks.min(halves * blocks));
        Row {
            format: self,
            scales,
            mins,
            quants,
        }
    }

    /// Widens one planar row of `out.len()` values (whole blocks) from `bytes`.
    pub fn dequantize_row(self, bytes: &[u8], out: &mut [f32]) {
        let blocks = out.len() / VALUES_PER_BLOCK;
        let row = self.row(bytes, blocks);
        for (b, values) in out.chunks_exact_mut(VALUES_PER_BLOCK).enumerate() {
            let Block { q, d, offset } = row.block(b);
            for (v, q) in values.iter_mut().zip(q) {
                *v = q.mul_add(d, offset);
            }
        }
    }
}

/// One planar row: its scales, minimums (Q4_1) and quants.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub format: QuantFormat,
    pub scales: &'a [u8],
    pub mins: &'a [u8],
    pub quants: &'a [u8],
}

#[inline(always)]
fn half_at(bytes: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]))
}

impl Row<'_> {
    /// Block `b`'s `d` and `offset` (`value = d · q + offset`).
    #[inline(always)]
    pub fn scale(&self, b: usize) -> (f32, f32) {
        match self.format {
            QuantFormat::F32 | QuantFormat::F16 => (1.0, 0.0),
            QuantFormat::Q8_0 => (half_at(self.scales, b), 0.0),
            QuantFormat::Q4_0 => {
                let d = half_at(self.scales, b);
                (d, -8.0 * d)
            }
            QuantFormat::Q4_1 => (half_at(self.scales, b), half_at(self.mins, b)),
        }
    }

    /// Block `b`'s quants.
    #[inline(always)]
    pub fn quants(&self, b: usize) -> &[u8] {
        let bytes = self.format.parts().1;
        &self.quants[b * bytes..(b + 1) * bytes]
    }

    /// Block `b` decoded (portable code).
    #[inline(always)]
    pub fn block(&self, b: usize) -> Block {
        let (d, offset) = self.scale(b);
        let bytes = self.quants(b);
        let mut q = [0f32; VALUES_PER_BLOCK];
        match self.format {
            QuantFormat::F32 => {
                for (q, b) in q.iter_mut().zip(bytes.chunks_exact(4)) {
                    *q = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            QuantFormat::F16 => {
                for (i, q) in q.iter_mut().enumerate() {
                    *q = half_at(bytes, i);
                }
            }
            QuantFormat::Q8_0 => {
                for (q, &b) in q.iter_mut().zip(bytes) {
                    *q = f32::from(b as i8);
                }
            }
            QuantFormat::Q4_0 | QuantFormat::Q4_1 => nibbles(bytes, &mut q),
        }
        Block { q, d, offset }
    }
}

/// Low nibbles are values 0..16, high nibbles 16..32.
#[inline(always)]
fn nibbles(packed: &[u8], q: &mut [f32; VALUES_PER_BLOCK]) {
    let (low, high) = q.split_at_mut(VALUES_PER_BLOCK / 2);
    for ((l, h), &b) in low.iter_mut().zip(high.iter_mut()).zip(packed) {
        *l = f32::from(b & 0x0f);
        *h = f32::from(b >> 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_widen_exactly() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} instead of {want}"
            );
        }
    }

    #[test]
    fn planar_rows_keep_every_byte() {
        // Two Q4_1 blocks: d, m, 16 quants each.
        let gguf: Vec<u8> = (0..40).collect();
        let mut planar = vec![0u8; 40];
        QuantFormat::Q4_1.to_planar(&gguf, &mut planar);
        assert_eq!(&planar[..8], &[0, 1, 20, 21, 2, 3, 22, 23]);
        assert_eq!(&planar[8..24], &gguf[4..20]);
        assert_eq!(&planar[24..], &gguf[24..]);
        let row = QuantFormat::Q4_1.row(&planar, 2);
        assert_eq!(
            (row.scales, row.mins),
            (&[0, 1, 20, 21][..], &[2, 3, 22, 23][..])
        );
    }

    #[test]
    fn rows_are_whole_blocks() {
        assert_eq!(QuantFormat::Q4_1.row_bytes(576), Some(18 * 20));
        assert_eq!(QuantFormat::Q8_0.row_bytes(33), None);
        assert_eq!(QuantFormat::Q4_0.words(3, 32), Some(14));
    }
}
