//! The block-format inner loops written with the CPU's vector instructions (through `pulp`'s
//! safe wrappers of `core::arch`: no `unsafe` here). LLVM does not vectorise the unpacking of
//! nibbles and bytes to f32 by itself — it converted them one at a time, 60 ms a token — so the
//! unpacking is spelled out: 16 bytes of nibbles, masked and shifted, widened (`vpmovzxbd`) and
//! converted (`vcvtdq2ps`) into two vectors of 16 values (AVX-512) or four of 8 (AVX2).
//!
//! Rows are planar (see `backend::quant`): a row's block scales are widened into small arrays
//! before its blocks are walked. Each block is decoded into registers as
//! the very f32 weights it stands for (`d · q + offset` in one fused multiply-add: exact, the
//! products of a few-bit quant and an f16 fit f32's mantissa), then multiplied with a tile of
//! input rows, two multiply-adds per 32 values and row. The input tile is the outer loop, so
//! its rows stay in L1 while the task's compact weight rows stream past it.
//!
//! Every (weight row, input row) pair takes the same operations in the same order whatever tile
//! it falls in (two accumulators, block after block, one fixed reduction), so a row gets the
//! same bits in any batch.
//!
//! Only the integer formats (Q8_0, Q4_0, Q4_1) have a vector path; F32 and F16 weights, and
//! CPUs without AVX2, take the portable loop of `quant_matmul`.

use crate::backend::quant::{f16_to_f32, QuantFormat, VALUES_PER_BLOCK};

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

/// Block scales and offsets widened to f32 (`value = d · q + offset`), `blocks` per weight row.
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

    /// Widens the scales (and minimums) of the planar row `w_row`, `halves` widening a run of
    /// little-endian f16 values. Done row by row, just before the row's blocks are walked, so a
    /// task reads its weight in order (widening a whole task's scales first left every row's
    /// quants to be fetched from memory a second time, a tenth of a batched decode step).
    #[inline(always)]
    fn fill(&mut self, format: QuantFormat, w_row: &[u8], halves: impl Fn(&[u8], &mut [f32])) {
        let row = format.row(w_row, self.d.len());
        halves(row.scales, &mut self.d);
        match format {
            QuantFormat::Q4_1 => halves(row.mins, &mut self.offset),
            QuantFormat::Q4_0 => {
                for (o, d) in self.offset.iter_mut().zip(&self.d) {
                    *o = -8.0 * d;
                }
            }
            // Q8_0: no offsets; they stay the zeros `new` made.
            _ => {}
        }
    }
}

/// Little-endian f16 values (`bytes`) widened into `out`, branch-free (it vectorises).
#[inline(always)]
fn halves_to_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, h) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16_to_f32(u16::from_le_bytes([h[0], h[1]]));
    }
}

/// `outs[r·rows + j] = x_r · W_j` for the `rows` planar weight rows `weight` (rows of `row_bytes`) and `m`
/// input rows of `k` values. Returns `false` (nothing done) when this thread has no vector path
/// for `format`.
pub fn dot_rows(
    format: QuantFormat,
    weight: &[u8],
    row_bytes: usize,
    input: &[f32],
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
            blocks: row_bytes / format.block_bytes(),
            input,
            m,
            outs,
        };
        if current() >= SimdLevel::Avx512 {
            if let Some(v4) = pulp::x86::V4::try_new() {
                x86::run_avx512(v4, job);
                return true;
            }
        }
        if let Some(v3) = pulp::x86::V3::try_new() {
            x86::run_avx2(v3, job);
            return true;
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

    use super::{halves_to_f32, QuantFormat, Scales, VALUES_PER_BLOCK};

    pub struct Rows<'a> {
        pub format: QuantFormat,
        pub weight: &'a [u8],
        pub row_bytes: usize,
        pub blocks: usize,
        pub input: &'a [f32],
        pub m: usize,
        pub outs: &'a mut [f32],
    }

    /// 16 bytes of nibbles as the 16 low ones (values 0..16 of the block) and the 16 high ones
    /// (values 16..32).
    #[inline(always)]
    fn nibbles(v: &V3, packed: [u8; 16]) -> (__m128i, __m128i) {
        let packed: __m128i = bytemuck::cast(packed);
        let mask = v.sse2._mm_set1_epi8(0x0f);
        let low = v.sse2._mm_and_si128(packed, mask);
        let high = v
            .sse2
            ._mm_and_si128(v.sse2._mm_srli_epi16::<4>(packed), mask);
        (low, high)
    }

    /// Block `b` of a row's quants (16-byte chunks) as its values 0..16 and 16..32, bytes.
    #[inline(always)]
    fn block_quants<const SIGNED: bool>(
        v: &V3,
        quants: &[[u8; 16]],
        b: usize,
    ) -> (__m128i, __m128i) {
        if SIGNED {
            (
                bytemuck::cast(quants[2 * b]),
                bytemuck::cast(quants[2 * b + 1]),
            )
        } else {
            nibbles(v, quants[b])
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

    /// Block `b` of a row's quants decoded to its 32 f32 weights (`d · q + offset`), AVX2.
    #[inline(always)]
    fn block_weights8x4<const SIGNED: bool>(
        v: &V3,
        quants: &[[u8; 16]],
        b: usize,
        d: f32,
        offset: f32,
    ) -> [__m256; 4] {
        let (low, high) = block_quants::<SIGNED>(v, quants, b);
        let (d, offset) = (v.avx._mm256_set1_ps(d), v.avx._mm256_set1_ps(offset));
        let (q0, q1) = widen8x2(v, low, SIGNED);
        let (q2, q3) = widen8x2(v, high, SIGNED);
        // Written out, not an array `.map` (see `widen8x2`).
        [
            v.fma._mm256_fmadd_ps(q0, d, offset),
            v.fma._mm256_fmadd_ps(q1, d, offset),
            v.fma._mm256_fmadd_ps(q2, d, offset),
            v.fma._mm256_fmadd_ps(q3, d, offset),
        ]
    }

    /// The input rows split into tiles of 8, 4, 2 and 1 rows (at most `widest`): `(first, rows)`.
    fn tiles(m: usize, widest: usize) -> impl Iterator<Item = (usize, usize)> {
        let mut first = 0;
        std::iter::from_fn(move || {
            let left = m - first;
            let rows = [8, 4, 2, 1]
                .into_iter()
                .find(|&r| r <= widest && r <= left)?;
            first += rows;
            Some((first - rows, rows))
        })
    }

    /// One tile of `R` input rows against every weight row of the job.
    struct Tile<'t, 'j, V, const R: usize, const SIGNED: bool> {
        v: V,
        job: &'t Rows<'j>,
        first: usize,
        outs: &'t mut [f32],
    }

    impl<'t, V, const R: usize, const SIGNED: bool> Tile<'t, '_, V, R, SIGNED> {
        /// The tile's input rows as blocks of 32 values, each `blocks` long.
        #[inline(always)]
        fn inputs(&self) -> [&'t [[f32; VALUES_PER_BLOCK]]; R] {
            let job = self.job;
            let blocks = job.blocks;
            let k = blocks * VALUES_PER_BLOCK;
            core::array::from_fn(|r| {
                let row = &job.input[(self.first + r) * k..][..k];
                row.as_chunks::<VALUES_PER_BLOCK>().0
            })
        }

        /// Weight row `j`'s quants, 16 bytes a chunk (a Q4 block, or half a Q8_0 one).
        #[inline(always)]
        fn quants(&self, j: usize) -> &'t [[u8; 16]] {
            let job = self.job;
            let quants = job.format.row(self.w_row(j), job.blocks).quants;
            quants.as_chunks::<16>().0
        }

        /// Weight row `j`'s bytes.
        #[inline(always)]
        fn w_row(&self, j: usize) -> &'t [u8] {
            let job = self.job;
            &job.weight[j * job.row_bytes..(j + 1) * job.row_bytes]
        }
    }

    /// Runs every tile of `job` with `$isa`, tiles of the listed widths (widest first).
    macro_rules! run_tiles {
        ($name:ident, $isa:ty, [$($r:literal),+]) => {
            #[doc = concat!("Runs every tile of the job with `", stringify!($isa), "`.")]
            pub fn $name(v: $isa, mut job: Rows<'_>) {
                let signed = job.format == QuantFormat::Q8_0;
                let outs = std::mem::take(&mut job.outs);
                let job = &job;
                for (first, rows) in tiles(job.m, [$($r),+][0]) {
                    let outs = &mut *outs;
                    match (rows, signed) {
                        $(
                            ($r, true) => pulp::Simd::vectorize(
                                v,
                                Tile::<$isa, $r, true> { v, job, first, outs },
                            ),
                            ($r, false) => pulp::Simd::vectorize(
                                v,
                                Tile::<$isa, $r, false> { v, job, first, outs },
                            ),
                        )+
                        _ => unreachable!("tiles() yields only the listed widths"),
                    }
                }
            }
        };
    }

    run_tiles!(run_avx512, V4, [8, 4, 2, 1]);
    run_tiles!(run_avx2, V3, [4, 2, 1]);

    impl<const R: usize, const SIGNED: bool> pulp::WithSimd for Tile<'_, '_, V4, R, SIGNED> {
        type Output = ();

        // `r` indexes the accumulators and the input rows in lock-step.
        #[allow(clippy::needless_range_loop)]
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let v = self.v;
            let xs = self.inputs();
            let (first, rows) = (self.first, self.job.outs_rows());
            let mut scales = Scales::new(self.job.blocks);
            let halves = |bytes: &[u8], out: &mut [f32]| halves_avx512(&v, bytes, out);
            for j in 0..rows {
                let quants = self.quants(j);
                scales.fill(self.job.format, self.w_row(j), halves);
                let (d, offset) = (&scales.d, &scales.offset);
                let zero = v.avx512f._mm512_setzero_ps();
                let (mut low_acc, mut high_acc) = ([zero; R], [zero; R]);
                for (b, (&d, &offset)) in d.iter().zip(offset).enumerate() {
                    let (low, high) = block_quants::<SIGNED>(&v, quants, b);
                    let (d, offset) = (
                        v.avx512f._mm512_set1_ps(d),
                        v.avx512f._mm512_set1_ps(offset),
                    );
                    let low = v
                        .avx512f
                        ._mm512_fmadd_ps(widen16(&v, low, SIGNED), d, offset);
                    let high = v
                        .avx512f
                        ._mm512_fmadd_ps(widen16(&v, high, SIGNED), d, offset);
                    for r in 0..R {
                        let [x_low, x_high]: [__m512; 2] = bytemuck::cast(xs[r][b]);
                        low_acc[r] = v.avx512f._mm512_fmadd_ps(low, x_low, low_acc[r]);
                        high_acc[r] = v.avx512f._mm512_fmadd_ps(high, x_high, high_acc[r]);
                    }
                }
                for r in 0..R {
                    let sum = v.avx512f._mm512_add_ps(low_acc[r], high_acc[r]);
                    self.outs[(first + r) * rows + j] = v.avx512f._mm512_reduce_add_ps(sum);
                }
            }
        }
    }

    impl<const R: usize, const SIGNED: bool> pulp::WithSimd for Tile<'_, '_, V3, R, SIGNED> {
        type Output = ();

        // `r` indexes the accumulators and the input rows in lock-step.
        #[allow(clippy::needless_range_loop)]
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let v = self.v;
            let xs = self.inputs();
            let (first, rows) = (self.first, self.job.outs_rows());
            let mut scales = Scales::new(self.job.blocks);
            for j in 0..rows {
                let quants = self.quants(j);
                scales.fill(self.job.format, self.w_row(j), halves_to_f32);
                let (d, offset) = (&scales.d, &scales.offset);
                let zero = v.avx._mm256_setzero_ps();
                let (mut even_acc, mut odd_acc) = ([zero; R], [zero; R]);
                for (b, (&d, &offset)) in d.iter().zip(offset).enumerate() {
                    let [w0, w1, w2, w3] = block_weights8x4::<SIGNED>(&v, quants, b, d, offset);
                    for r in 0..R {
                        let [x0, x1, x2, x3]: [__m256; 4] = bytemuck::cast(xs[r][b]);
                        even_acc[r] = v.fma._mm256_fmadd_ps(w0, x0, even_acc[r]);
                        odd_acc[r] = v.fma._mm256_fmadd_ps(w1, x1, odd_acc[r]);
                        even_acc[r] = v.fma._mm256_fmadd_ps(w2, x2, even_acc[r]);
                        odd_acc[r] = v.fma._mm256_fmadd_ps(w3, x3, odd_acc[r]);
                    }
                }
                for r in 0..R {
                    let sum = v.avx._mm256_add_ps(even_acc[r], odd_acc[r]);
                    let lanes: [f32; 8] = bytemuck::cast(sum);
                    self.outs[(first + r) * rows + j] = lanes.iter().sum();
                }
            }
        }
    }

    /// Little-endian f16 values widened with AVX-512's `vcvtph2ps`, 16 at a time.
    #[inline(always)]
    fn halves_avx512(v: &V4, bytes: &[u8], out: &mut [f32]) {
        let (whole, rest) = bytes.as_chunks::<32>();
        let (out_whole, out_rest) = out.split_at_mut(whole.len() * 16);
        for (sixteen, out) in whole.iter().zip(out_whole.as_chunks_mut::<16>().0) {
            let widened = v.avx512f._mm512_cvtph_ps(bytemuck::cast(*sixteen));
            *out = bytemuck::cast(widened);
        }
        halves_to_f32(rest, out_rest);
    }

    impl Rows<'_> {
        /// Weight rows of the job.
        #[inline(always)]
        fn outs_rows(&self) -> usize {
            self.weight.len() / self.row_bytes
        }
    }

    pub struct Widen<'a>(pub V3, pub QuantFormat, pub &'a [u8], pub &'a mut [f32]);

    impl pulp::WithSimd for Widen<'_> {
        type Output = bool;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
            let Widen(v, format, bytes, out) = self;
            let blocks = out.len() / VALUES_PER_BLOCK;
            let bytes = &bytes[..blocks * format.block_bytes()];
            let mut scales = Scales::new(blocks);
            scales.fill(format, bytes, halves_to_f32);
            let (d, offset) = (&scales.d, &scales.offset);
            let quants = format.row(bytes, blocks).quants.as_chunks::<16>().0;
            let blocks_of = out
                .chunks_exact_mut(VALUES_PER_BLOCK)
                .zip(d.iter().zip(offset));
            for (b, (values, (&d, &offset))) in blocks_of.enumerate() {
                let weights = if format == QuantFormat::Q8_0 {
                    block_weights8x4::<true>(&v, quants, b, d, offset)
                } else {
                    block_weights8x4::<false>(&v, quants, b, d, offset)
                };
                let weights: [f32; VALUES_PER_BLOCK] = bytemuck::cast(weights);
                values.copy_from_slice(&weights);
            }
            true
        }
    }
}
