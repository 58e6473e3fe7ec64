//! Scalar math the CPU kernels share, written to auto-vectorise.

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
