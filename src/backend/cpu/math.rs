//! Scalar math the CPU kernels share, written to auto-vectorise, and [`with_simd`] to compile the
//! loops that use it for the widest vector unit the CPU has.

/// Runs `kernel` with the vector instructions of this thread's level enabled (AVX-512 or AVX2 +
/// FMA, detected at run time by `pulp`, faer's SIMD layer, and cappable: see `level.rs`). The
/// kernels below are `pulp::WithSimd` types whose `with_simd` is `#[inline(always)]`: their loops
/// are compiled inside the target-feature context and vectorise 16 or 8 wide instead of the 4 of
/// baseline x86-64. (A closure would not do: it is compiled on its own, without the features.)
#[inline(always)]
pub fn with_simd<K: pulp::WithSimd>(kernel: K) -> K::Output {
    use super::level::{current, SimdLevel};
    use pulp::Simd;
    match current() {
        SimdLevel::Portable => Simd::vectorize(pulp::Scalar::new(), kernel),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => match pulp::x86::V3::try_new() {
            Some(v3) => Simd::vectorize(v3, kernel),
            None => Simd::vectorize(pulp::Scalar::new(), kernel),
        },
        _ => pulp::Arch::new().dispatch(kernel),
    }
}

/// `row = act(row + bias)`: the GEMM epilogue.
#[derive(Debug)]
pub struct BiasActivation<'a> {
    pub row: &'a mut [f32],
    pub bias: Option<&'a [f32]>,
    pub gelu: bool,
}

impl pulp::WithSimd for BiasActivation<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        match (self.bias, self.gelu) {
            (None, false) => {}
            (Some(bias), false) => self.row.iter_mut().zip(bias).for_each(|(x, b)| *x += b),
            (None, true) => self.row.iter_mut().for_each(|x| *x = gelu(*x)),
            (Some(bias), true) => self
                .row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, b)| *x = gelu(*x + b)),
        }
    }
}

/// The product of an empty inner dimension (`k = 0`): every output of each `n`-wide row is
/// `act(bias)`.
pub fn empty_product(out: &mut [f32], n: usize, bias: Option<&[f32]>, gelu: bool) {
    out.fill(0.0);
    for row in out.chunks_mut(n) {
        with_simd(BiasActivation { row, bias, gelu });
    }
}

/// Masked softmax over each row of `len` values of `scores` (see [`softmax_masked`]).
#[derive(Debug)]
pub struct SoftmaxRows<'a> {
    pub scores: &'a mut [f32],
    pub len: usize,
    pub keep: &'a [f32],
}

impl pulp::WithSimd for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for row in self.scores.chunks_exact_mut(self.len) {
            softmax_masked(row, self.keep);
        }
    }
}

/// `row = (row − mean) / √(variance + eps) · gamma + beta`.
#[derive(Debug)]
pub struct NormalizeRow<'a> {
    pub row: &'a mut [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

impl pulp::WithSimd for NormalizeRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let cols = self.row.len() as f32;
        let mean = sum(self.row) / cols;
        let variance = sum_squared_deviation(self.row, mean) / cols;
        let inverse = 1.0 / (variance + self.eps).sqrt();
        for ((v, g), b) in self.row.iter_mut().zip(self.gamma).zip(self.beta) {
            *v = (*v - mean) * inverse * g + b;
        }
    }
}

/// `x = gelu(x)` on a slice.
#[derive(Debug)]
pub struct GeluSlice<'a>(pub &'a mut [f32]);

impl pulp::WithSimd for GeluSlice<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        gelu_in_place(self.0)
    }
}

/// Σ x² of a slice.
#[derive(Debug)]
pub struct SumOfSquares<'a>(pub &'a [f32]);

impl pulp::WithSimd for SumOfSquares<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> f32 {
        sum_squared_deviation(self.0, 0.0)
    }
}

/// Divides `row` by its L2 norm, clamped below at 1e-12 (as `torch.nn.functional.normalize`).
pub fn l2_normalize(row: &mut [f32]) {
    let norm = with_simd(SumOfSquares(row)).sqrt().max(1e-12);
    let inverse = 1.0 / norm;
    row.iter_mut().for_each(|v| *v *= inverse);
}

/// Lanes of the split accumulators below: wide enough for AVX-512, and a loop over fixed-size
/// chunks vectorises where a single running sum (a serial dependency) cannot.
const LANES: usize = 16;

/// Σ xs, accumulated in [`LANES`] independent lanes.
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Σ (x − mean)², accumulated in lanes.
#[inline(always)]
pub fn sum_squared_deviation(xs: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += (x - mean) * (x - mean);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Softmax of `row` in place over the entries whose `keep` is non-zero; the others become 0.
/// Branch-free passes over lanes, so it vectorises.
#[inline(always)]
pub fn softmax_masked(row: &mut [f32], keep: &[f32]) {
    let keep = &keep[..row.len()];
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut tail_max = f32::NEG_INFINITY;
    let chunks = row.chunks_exact(LANES);
    for (x, k) in chunks
        .remainder()
        .iter()
        .zip(&keep[row.len() - chunks.remainder().len()..])
    {
        tail_max = tail_max.max(if *k != 0.0 { *x } else { f32::NEG_INFINITY });
    }
    for (chunk, keep) in chunks.zip(keep.chunks_exact(LANES)) {
        for ((lane, x), k) in maxima.iter_mut().zip(chunk).zip(keep) {
            *lane = lane.max(if *k != 0.0 { *x } else { f32::NEG_INFINITY });
        }
    }
    let max = maxima.iter().fold(tail_max, |a, &b| a.max(b));
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    // exp clamps its input, so a masked entry far above `max` stays finite and × 0 gives 0.
    for (x, k) in row.iter_mut().zip(keep) {
        *x = exp(*x - max) * if *k != 0.0 { 1.0 } else { 0.0 };
    }
    let inverse = 1.0 / sum(row);
    for x in row.iter_mut() {
        *x *= inverse;
    }
}

/// erf(x) for f32 by a rational approximation on [−4, 4] (Eigen's `generic_fast_erf_float`):
/// no `exp`, only multiply, add, divide and clamp, so a loop over it vectorises. Absolute error
/// below 5e-7 against the exact function (3.5e-7 measured).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024_1e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_2e-3;
    q = q * x2 - 1.426_473_9e-2;
    p / q
}

/// GELU, erf form: `x · ½ · (1 + erf(x / √2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// eˣ for f32 (Cephes' `expf`: range reduction by ln 2, a degree-6 polynomial, the power of two
/// built in the exponent bits). Branch-free and without `floor`, so loops vectorise even on
/// baseline x86-64. Relative error below 2e-7; inputs below −87.3 give ≈ 1e-38, not 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.3, 88.7);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let r2 = r * r;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r2 + r + 1.0;
    let exponent = (shifted.to_bits() as i32)
        .wrapping_sub(0x4B40_0000)
        .wrapping_add(127);
    e * f32::from_bits((exponent.clamp(1, 254) as u32) << 23)
}

/// Applies GELU to every value of `xs`.
#[inline(always)]
pub fn gelu_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = gelu(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64: its Taylor series up to |x| = 3 (terms stay below e⁹, so f64 keeps 12 digits),
    /// then 1 − erfc(x) by erfc's asymptotic series (error under 1e-8 from x = 3 on).
    fn erf_reference(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let y = x.abs();
            let inv = 1.0 / (2.0 * y * y);
            let series = 1.0 - inv + 3.0 * inv * inv - 15.0 * inv.powi(3) + 105.0 * inv.powi(4);
            let erfc = (-y * y).exp() / (y * std::f64::consts::PI.sqrt()) * series;
            return x.signum() * (1.0 - erfc);
        }
        let (mut sum, mut term, mut n) = (0.0, x, 0.0);
        while n < 200.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_accurate_everywhere() {
        let mut worst = 0.0f64;
        for i in -8000..=8000 {
            let x = i as f64 / 1000.0;
            let error = (erf(x as f32) as f64 - erf_reference(x)).abs();
            worst = worst.max(error);
        }
        assert!(worst < 5e-7, "worst error {worst}");
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn gelu_known_values() {
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert!((gelu(10.0) - 10.0).abs() < 1e-6);
        assert!(gelu(-10.0).abs() < 1e-6);
    }
}
