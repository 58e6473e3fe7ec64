//! The block-format inner loops written with the CPU's vector instructions (through `pulp`'s
//! safe wrappers of `core::arch`: no `unsafe` here). LLVM does not vectorise the unpacking of
//! nibbles and bytes to f32 by itself — it converted them one at a time, 60 ms a token — so the
//! unpacking is spelled out: 16 bytes of nibbles, masked and shifted, widened (`vpmovzxbd`) and
//! converted (`vcvtdq2ps`) into two vectors of 16 values (AVX-512) or four of 8 (AVX2).
//!
//! Rows are planar (see `backend::quant`): a row's block scales are widened once into a small
//! array before its blocks are walked, and the minimums' share (`Σ_b offset_b · Σx_b`) is one
//! dot product per row, so the loop over blocks only loads quants and multiplies.
//!
//! Only the integer formats (Q8_0, Q4_0, Q4_1) have a vector path; F32 and F16 weights, and
//! CPUs without AVX2, take the portable loop of `quant_matmul`.

use crate::backend::quant::{f16_to_f32, QuantFormat, Row, VALUES_PER_BLOCK};

use super::level::{current, SimdLevel};

/// Whether this thread's level has a vector path for `format`.
pub fn has_vector_path(format: QuantFormat) -> bool {
    cfg!(target_arch = "x86_64")
        && current() >= SimdLevel::Avx2
        && matches!(
            format,
            QuantFormat::Q8_0 | QuantFormat::Q4_0 | QuantFormat::Q4_1
        )
}

/// A row's block scales and offsets widened to f32 (`value = d · q + offset`).
struct Scales {
    d: Vec<f32>,
    offset: Vec<f32>,
}

impl Scales {
    fn new(blocks: usize) -> Scales {
        Scales {
            d: vec![0.0; blocks],
            offset: vec![0.0; blocks],
        }
    }

    /// Widens the row's scales (and minimums): branch-free loops over the planar arrays, so
    /// they vectorise (this ran once per block before, a quarter of a short row's time).
    #[inline(always)]
    fn fill(&mut self, row: &Row<'_>) {
        let halves = |bytes: &[u8], out: &mut [f32]| {
            for (o, h) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([h[0], h[1]]));
            }
        };
        halves(row.scales, &mut self.d);
        match row.format {
            QuantFormat::Q4_1 => halves(row.mins, &mut self.offset),
            QuantFormat::Q4_0 => {
                for (o, d) in self.offset.iter_mut().zip(&self.d) {
                    *o = -8.0 * d;
                }
            }
            _ => self.offset.fill(0.0),
        }
    }

    /// `Σ_b offset_b · sums_b`: the offsets' share of a row's dot product with one input row.
    #[inline(always)]
    fn offsets_dot(&self, sums: &[f32]) -> f32 {
        self.offset.iter().zip(sums).map(|(o, s)| o * s).sum()
    }
}

/// `outs[j·m + r] = x_r · W_j` for the planar weight rows `weight` (rows of `row_bytes`), `m`
/// input rows of `k` values, `block_sums` their Σ x per block. Returns `false` (nothing done)
/// when this thread has no vector path for `format`.
#[allow(clippy::too_many_arguments)]
pub fn dot_rows(
    format: QuantFormat,
    weight: &[u8],
    row_bytes: usize,
    input: &[f32],
    block_sums: &[f32],
    m: usize,
    outs: &mut [f32],
) -> bool {
    if !has_vector_path(format) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let job = x86::Rows {
            format,
            weight,
            row_bytes,
            input,
            block_sums,
            m,
            outs,
        };
        if current() >= SimdLevel::Avx512 {
            if let Some(v4) = pulp::x86::V4::try_new() {
                return pulp::Simd::vectorize(v4, x86::Avx512(v4, job));
            }
        }
        if let Some(v3) = pulp::x86::V3::try_new() {
            return pulp::Simd::vectorize(v3, x86::Avx2(v3, job));
        }
    }
    false
}

/// Widens one planar row (`out.len()` values) of `bytes` to f32; `false` as [`dot_rows`].
pub fn widen(format: QuantFormat, bytes: &[u8], out: &mut [f32]) -> bool {
    if !has_vector_path(format) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = pulp::x86::V3::try_new() {
        return pulp::Simd::vectorize(v3, x86::Widen(v3, format, bytes, out));
    }
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{__m128i, __m256, __m512};

    use pulp::x86::{V3, V4};

    use super::{QuantFormat, Scales, VALUES_PER_BLOCK};

    pub struct Rows<'a> {
        pub format: QuantFormat,
        pub weight: &'a [u8],
        pub row_bytes: usize,
        pub input: &'a [f32],
        pub block_sums: &'a [f32],
        pub m: usize,
        pub outs: &'a mut [f32],
    }

    #[inline(always)]
    fn bytes16(bytes: &[u8], at: usize) -> __m128i {
        let mut array = [0u8; 16];
        array.copy_from_slice(&bytes[at..at + 16]);
        bytemuck::cast(array)
    }

    /// A block's 32 quants (`bytes`: 32 signed bytes when `SIGNED`, Q8_0; else 16 bytes of
    /// nibbles) as 16 low bytes and 16 high ones (values 0..16 and 16..32).
    #[inline(always)]
    fn block_quants<const SIGNED: bool>(v: &V3, bytes: &[u8]) -> (__m128i, __m128i) {
        if SIGNED {
            (bytes16(bytes, 0), bytes16(bytes, 16))
        } else {
            let packed = bytes16(bytes, 0);
            let mask = v.sse2._mm_set1_epi8(0x0f);
            let low = v.sse2._mm_and_si128(packed, mask);
            let high = v
                .sse2
                ._mm_and_si128(v.sse2._mm_srli_epi16::<4>(packed), mask);
            (low, high)
        }
    }

    /// Bytes of a block's quants.
    const fn quant_bytes(signed: bool) -> usize {
        if signed {
            32
        } else {
            16
        }
    }

    /// 16 bytes as 16 f32 (AVX-512).
    #[inline(always)]
    fn widen16(v: &V4, bytes: __m128i, signed: bool) -> __m512 {
        let ints = if signed {
            v.avx512f._mm512_cvtepi8_epi32(bytes)
        } else {
            v.avx512f._mm512_cvtepu8_epi32(bytes)
        };
        v.avx512f._mm512_cvtepi32_ps(ints)
    }

    /// 16 bytes as two vectors of 8 f32 (AVX2). (Written out: an array `.map` here kept the
    /// vectors on the stack and halved the AVX2 products' speed.)
    #[inline(always)]
    fn widen8x2(v: &V3, bytes: __m128i, signed: bool) -> (__m256, __m256) {
        let upper = v.sse2._mm_unpackhi_epi64(bytes, bytes);
        let (a, b) = if signed {
            (
                v.avx2._mm256_cvtepi8_epi32(bytes),
                v.avx2._mm256_cvtepi8_epi32(upper),
            )
        } else {
            (
                v.avx2._mm256_cvtepu8_epi32(bytes),
                v.avx2._mm256_cvtepu8_epi32(upper),
            )
        };
        (v.avx._mm256_cvtepi32_ps(a), v.avx._mm256_cvtepi32_ps(b))
    }

    #[inline(always)]
    fn load16(xs: &[f32], at: usize) -> __m512 {
        let mut array = [0f32; 16];
        array.copy_from_slice(&xs[at..at + 16]);
        bytemuck::cast(array)
    }

    #[inline(always)]
    fn load8(xs: &[f32], at: usize) -> __m256 {
        let mut array = [0f32; 8];
        array.copy_from_slice(&xs[at..at + 8]);
        bytemuck::cast(array)
    }

    /// Walks every weight row, and its input rows `R_MAX` at a time, calling `tile` with the
    /// row's widened scales.
    #[inline(always)]
    fn for_each_row<const R_MAX: usize>(
        job: Rows<'_>,
        mut tile: impl FnMut(&Scales, &[u8], &[f32], &[f32], usize, &mut [f32]),
    ) {
        let Rows {
            format,
            weight,
            row_bytes,
            input,
            block_sums,
            m,
            outs,
        } = job;
        let blocks = row_bytes / format.block_bytes();
        let k = blocks * VALUES_PER_BLOCK;
        let mut scales = Scales::new(blocks);
        for (w_row, outs) in weight.chunks_exact(row_bytes).zip(outs.chunks_exact_mut(m)) {
            let row = format.row(w_row, blocks);
            scales.fill(&row);
            let mut first = 0;
            while first < m {
                let rows = (m - first).min(R_MAX);
                let x = &input[first * k..(first + rows) * k];
                let sums = &block_sums[first * blocks..(first + rows) * blocks];
                tile(
                    &scales,
                    row.quants,
                    x,
                    sums,
                    k,
                    &mut outs[first..first + rows],
                );
                first += rows;
            }
        }
    }

    pub struct Avx512<'a>(pub V4, pub Rows<'a>);

    impl pulp::WithSimd for Avx512<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
            let Avx512(v, job) = self;
            fn run<const SG: bool>(v: &V4, job: Rows<'_>) {
                for_each_row::<4>(job, |scales, quants, x, sums, k, outs| match outs.len() {
                    1 => tile_v4::<1, SG>(v, scales, quants, x, sums, k, outs),
                    2 => tile_v4::<2, SG>(v, scales, quants, x, sums, k, outs),
                    3 => tile_v4::<3, SG>(v, scales, quants, x, sums, k, outs),
                    _ => tile_v4::<4, SG>(v, scales, quants, x, sums, k, outs),
                })
            }
            if job.format == QuantFormat::Q8_0 {
                run::<true>(&v, job)
            } else {
                run::<false>(&v, job)
            }
            true
        }
    }

    // `r` indexes the accumulators and the input rows in lock-step.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[inline(always)]
    fn tile_v4<const R: usize, const SIGNED: bool>(
        v: &V4,
        scales: &Scales,
        quants: &[u8],
        x: &[f32],
        sums: &[f32],
        k: usize,
        outs: &mut [f32],
    ) {
        let blocks = scales.d.len();
        let mut acc = [v.avx512f._mm512_setzero_ps(); R];
        let blocks_of = quants.chunks_exact(quant_bytes(SIGNED)).zip(&scales.d);
        for (b, (bytes, &d)) in blocks_of.enumerate() {
            let (low, high) = block_quants::<SIGNED>(v, bytes);
            let (low, high) = (widen16(v, low, SIGNED), widen16(v, high, SIGNED));
            let scale = v.avx512f._mm512_set1_ps(d);
            for r in 0..R {
                let base = r * k + b * VALUES_PER_BLOCK;
                let t = v.avx512f._mm512_mul_ps(high, load16(x, base + 16));
                let t = v.avx512f._mm512_fmadd_ps(low, load16(x, base), t);
                acc[r] = v.avx512f._mm512_fmadd_ps(t, scale, acc[r]);
            }
        }
        for r in 0..R {
            outs[r] = v.avx512f._mm512_reduce_add_ps(acc[r])
                + scales.offsets_dot(&sums[r * blocks..(r + 1) * blocks]);
        }
    }

    pub struct Avx2<'a>(pub V3, pub Rows<'a>);

    impl pulp::WithSimd for Avx2<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
            let Avx2(v, job) = self;
            fn run<const SG: bool>(v: &V3, job: Rows<'_>) {
                for_each_row::<2>(job, |scales, quants, x, sums, k, outs| match outs.len() {
                    1 => tile_v3::<1, SG>(v, scales, quants, x, sums, k, outs),
                    _ => tile_v3::<2, SG>(v, scales, quants, x, sums, k, outs),
                })
            }
            if job.format == QuantFormat::Q8_0 {
                run::<true>(&v, job)
            } else {
                run::<false>(&v, job)
            }
            true
        }
    }

    // `r` indexes the accumulators and the input rows in lock-step.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[inline(always)]
    fn tile_v3<const R: usize, const SIGNED: bool>(
        v: &V3,
        scales: &Scales,
        quants: &[u8],
        x: &[f32],
        sums: &[f32],
        k: usize,
        outs: &mut [f32],
    ) {
        let blocks = scales.d.len();
        let mut acc = [(v.avx._mm256_setzero_ps(), v.avx._mm256_setzero_ps()); R];
        let blocks_of = quants.chunks_exact(quant_bytes(SIGNED)).zip(&scales.d);
        for (b, (bytes, &d)) in blocks_of.enumerate() {
            let (low, high) = block_quants::<SIGNED>(v, bytes);
            let (q0, q1) = widen8x2(v, low, SIGNED);
            let (q2, q3) = widen8x2(v, high, SIGNED);
            let scale = v.avx._mm256_set1_ps(d);
            for r in 0..R {
                let base = r * k + b * VALUES_PER_BLOCK;
                let t = v.avx._mm256_mul_ps(q2, load8(x, base + 16));
                let t = v.fma._mm256_fmadd_ps(q0, load8(x, base), t);
                acc[r].0 = v.fma._mm256_fmadd_ps(t, scale, acc[r].0);
                let t = v.avx._mm256_mul_ps(q3, load8(x, base + 24));
                let t = v.fma._mm256_fmadd_ps(q1, load8(x, base + 8), t);
                acc[r].1 = v.fma._mm256_fmadd_ps(t, scale, acc[r].1);
            }
        }
        for r in 0..R {
            let sum = v.avx._mm256_add_ps(acc[r].0, acc[r].1);
            let lanes: [f32; 8] = bytemuck::cast(sum);
            outs[r] =
                lanes.iter().sum::<f32>() + scales.offsets_dot(&sums[r * blocks..(r + 1) * blocks]);
        }
    }

    pub struct Widen<'a>(pub V3, pub QuantFormat, pub &'a [u8], pub &'a mut [f32]);

    impl pulp::WithSimd for Widen<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
            let Widen(v, format, bytes, out) = self;
            let blocks = out.len() / VALUES_PER_BLOCK;
            let row = format.row(bytes, blocks);
            let mut scales = Scales::new(blocks);
            scales.fill(&row);
            let signed = format == QuantFormat::Q8_0;
            let quants = row.quants.chunks_exact(quant_bytes(signed));
            for (b, (values, bytes)) in out
                .chunks_exact_mut(VALUES_PER_BLOCK)
                .zip(quants)
                .enumerate()
            {
                let (low, high) = if signed {
                    block_quants::<true>(&v, bytes)
                } else {
                    block_quants::<false>(&v, bytes)
                };
                let scale = v.avx._mm256_set1_ps(scales.d[b]);
                let shift = v.avx._mm256_set1_ps(scales.offset[b]);
                let (q0, q1) = widen8x2(&v, low, signed);
                let (q2, q3) = widen8x2(&v, high, signed);
                for (i, part) in [q0, q1, q2, q3].into_iter().enumerate() {
                    let value = v.fma._mm256_fmadd_ps(part, scale, shift);
                    let lanes: [f32; 8] = bytemuck::cast(value);
                    values[8 * i..8 * i + 8].copy_from_slice(&lanes);
                }
            }
            true
        }
    }
}
