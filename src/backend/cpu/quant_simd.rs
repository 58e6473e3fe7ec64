//! The block-format inner loops written with the CPU's vector instructions (through `pulp`'s
//! safe wrappers of `core::arch`: no `unsafe` here). LLVM does not vectorise the unpacking of
//! nibbles and bytes to f32 by itself — it converted them one at a time, 60 ms a token — so the
//! unpacking is spelled out: 16 bytes of nibbles, masked and shifted, widened (`vpmovzxbd`) and
//! converted (`vcvtdq2ps`) into two vectors of 16 values (AVX-512) or four of 8 (AVX2).
//!
//! Only the integer formats (Q8_0, Q4_0, Q4_1) have a vector path; F32 and F16 weights, and
//! CPUs without AVX2, take the portable loop of `quant_matmul`.

use crate::backend::quant::{half_table, HalfTable, QuantFormat, VALUES_PER_BLOCK};

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

/// A block's scale and offset (`value = d · q + offset`) and where its quants start.
#[inline(always)]
fn header(halves: &HalfTable, format: QuantFormat, bytes: &[u8]) -> (f32, f32, usize) {
    let half = |at: usize| halves[usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))];
    let d = half(0);
    match format {
        QuantFormat::Q4_1 => (d, half(2), 4),
        QuantFormat::Q4_0 => (d, -8.0 * d, 2),
        _ => (d, 0.0, 2),
    }
}

/// `outs[j·m + r] = x_r · W_j` for the weight rows `weight` (rows of `row_bytes`), `m` input rows
/// of `k` values, `block_sums` their Σ x per block. Returns `false` (nothing done) when this
/// thread has no vector path for `format`.
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

/// Widens whole rows (`out.len()` values) of `bytes` to f32; `false` as [`dot_rows`].
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

    use super::{half_table, header, HalfTable, QuantFormat, VALUES_PER_BLOCK};

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

    /// The 32 quants of a block as 16 low bytes and 16 high ones (values 0..16 and 16..32),
    /// signed for Q8_0.
    #[inline(always)]
    fn quants(v: &V3, format: QuantFormat, bytes: &[u8], at: usize) -> (__m128i, __m128i, bool) {
        match format {
            QuantFormat::Q8_0 => (bytes16(bytes, at), bytes16(bytes, at + 16), true),
            _ => {
                let packed = bytes16(bytes, at);
                let mask = v.sse2._mm_set1_epi8(0x0f);
                let low = v.sse2._mm_and_si128(packed, mask);
                let high = v
                    .sse2
                    ._mm_and_si128(v.sse2._mm_srli_epi16::<4>(packed), mask);
                (low, high, false)
            }
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

    /// 16 bytes as two vectors of 8 f32 (AVX2).
    #[inline(always)]
    fn widen8x2(v: &V3, bytes: __m128i, signed: bool) -> [__m256; 2] {
        let upper = v.sse2._mm_unpackhi_epi64(bytes, bytes);
        [bytes, upper].map(|half| {
            let ints = if signed {
                v.avx2._mm256_cvtepi8_epi32(half)
            } else {
                v.avx2._mm256_cvtepu8_epi32(half)
            };
            v.avx._mm256_cvtepi32_ps(ints)
        })
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

    pub struct Avx512<'a>(pub V4, pub Rows<'a>);

    impl pulp::WithSimd for Avx512<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
            let Avx512(v, job) = self;
            let m = job.m;
            let k = job.row_bytes / job.format.block_bytes() * VALUES_PER_BLOCK;
            let halves = half_table();
            for (w_row, outs) in job
                .weight
                .chunks_exact(job.row_bytes)
                .zip(job.outs.chunks_exact_mut(m))
            {
                let mut first = 0;
                while first < m {
                    let rows = (m - first).min(4);
                    let x = &job.input[first * k..(first + rows) * k];
                    let sums = &job.block_sums[first * k / VALUES_PER_BLOCK..];
                    let outs = &mut outs[first..first + rows];
                    let f = job.format;
                    match rows {
                        1 => row_v4::<1>(&v, halves, f, w_row, x, sums, k, outs),
                        2 => row_v4::<2>(&v, halves, f, w_row, x, sums, k, outs),
                        3 => row_v4::<3>(&v, halves, f, w_row, x, sums, k, outs),
                        _ => row_v4::<4>(&v, halves, f, w_row, x, sums, k, outs),
                    }
                    first += rows;
                }
            }
            true
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn row_v4<const R: usize>(
        v: &V4,
        halves: &HalfTable,
        format: QuantFormat,
        w_row: &[u8],
        x: &[f32],
        sums: &[f32],
        k: usize,
        outs: &mut [f32],
    ) {
        let blocks = k / VALUES_PER_BLOCK;
        let mut acc = [v.avx512f._mm512_setzero_ps(); R];
        let mut offsets = [0f32; R];
        for (b, bytes) in w_row.chunks_exact(format.block_bytes()).enumerate() {
            let (d, offset, at) = header(halves, format, bytes);
            let (low, high, signed) = quants(v, format, bytes, at);
            let (low, high) = (widen16(v, low, signed), widen16(v, high, signed));
            let scale = v.avx512f._mm512_set1_ps(d);
            for r in 0..R {
                let base = r * k + b * VALUES_PER_BLOCK;
                let t = v.avx512f._mm512_mul_ps(high, load16(x, base + 16));
                let t = v.avx512f._mm512_fmadd_ps(low, load16(x, base), t);
                acc[r] = v.avx512f._mm512_fmadd_ps(t, scale, acc[r]);
                offsets[r] = offset.mul_add(sums[r * blocks + b], offsets[r]);
            }
        }
        for r in 0..R {
            outs[r] = v.avx512f._mm512_reduce_add_ps(acc[r]) + offsets[r];
        }
    }

    pub struct Avx2<'a>(pub V3, pub Rows<'a>);

    impl pulp::WithSimd for Avx2<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
            let Avx2(v, job) = self;
            let m = job.m;
            let k = job.row_bytes / job.format.block_bytes() * VALUES_PER_BLOCK;
            let halves = half_table();
            for (w_row, outs) in job
                .weight
                .chunks_exact(job.row_bytes)
                .zip(job.outs.chunks_exact_mut(m))
            {
                let mut first = 0;
                while first < m {
                    let rows = (m - first).min(2);
                    let x = &job.input[first * k..(first + rows) * k];
                    let sums = &job.block_sums[first * k / VALUES_PER_BLOCK..];
                    let outs = &mut outs[first..first + rows];
                    match rows {
                        1 => row_v3::<1>(&v, halves, job.format, w_row, x, sums, k, outs),
                        _ => row_v3::<2>(&v, halves, job.format, w_row, x, sums, k, outs),
                    }
                    first += rows;
                }
            }
            true
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn row_v3<const R: usize>(
        v: &V3,
        halves: &HalfTable,
        format: QuantFormat,
        w_row: &[u8],
        x: &[f32],
        sums: &[f32],
        k: usize,
        outs: &mut [f32],
    ) {
        let blocks = k / VALUES_PER_BLOCK;
        let mut acc = [[v.avx._mm256_setzero_ps(); 2]; R];
        let mut offsets = [0f32; R];
        for (b, bytes) in w_row.chunks_exact(format.block_bytes()).enumerate() {
            let (d, offset, at) = header(halves, format, bytes);
            let (low, high, signed) = quants(v, format, bytes, at);
            let q = [widen8x2(v, low, signed), widen8x2(v, high, signed)];
            let scale = v.avx._mm256_set1_ps(d);
            for r in 0..R {
                let base = r * k + b * VALUES_PER_BLOCK;
                for half in 0..2 {
                    let t = v
                        .avx
                        ._mm256_mul_ps(q[1][half], load8(x, base + 16 + 8 * half));
                    let t = v
                        .fma
                        ._mm256_fmadd_ps(q[0][half], load8(x, base + 8 * half), t);
                    acc[r][half] = v.fma._mm256_fmadd_ps(t, scale, acc[r][half]);
                }
                offsets[r] = offset.mul_add(sums[r * blocks + b], offsets[r]);
            }
        }
        for r in 0..R {
            let sum = v.avx._mm256_add_ps(acc[r][0], acc[r][1]);
            let lanes: [f32; 8] = bytemuck::cast(sum);
            outs[r] = lanes.iter().sum::<f32>() + offsets[r];
        }
    }

    pub struct Widen<'a>(pub V3, pub QuantFormat, pub &'a [u8], pub &'a mut [f32]);

    impl pulp::WithSimd for Widen<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
            let Widen(v, format, bytes, out) = self;
            let halves = half_table();
            for (values, block) in out
                .chunks_exact_mut(VALUES_PER_BLOCK)
                .zip(bytes.chunks_exact(format.block_bytes()))
            {
                let (d, offset, at) = header(halves, format, block);
                let (low, high, signed) = quants(&v, format, block, at);
                let (scale, shift) = (v.avx._mm256_set1_ps(d), v.avx._mm256_set1_ps(offset));
                let q = [widen8x2(&v, low, signed), widen8x2(&v, high, signed)];
                for (i, part) in q.iter().flatten().enumerate() {
                    let value = v.fma._mm256_fmadd_ps(*part, scale, shift);
                    let lanes: [f32; 8] = bytemuck::cast(value);
                    values[8 * i..8 * i + 8].copy_from_slice(&lanes);
                }
            }
            true
        }
    }
}
