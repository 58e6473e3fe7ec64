//! The packed products (`Kernel::GemmPacked`: f32, bf16 and int8 weights) at every SIMD
//! level this machine has (the lower ones forced): against a reference that does the same
//! rounding in f64 — so the kernels are checked to f32 summation error, not to the loose bound
//! of the precision — and against the f32 product within the precision's own error.

mod support;

use hipinfer::backend::cpu::packed::{bf16_bits, bf16_value, pack, K_PER_SCALE};
use hipinfer::backend::{Activation, Backend, CpuBackend, Dtype, Kernel, SimdLevel};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::backends::{cpu_at_each_level, download, upload};

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 16, 4),
    (3, 17, 5),
    (4, 64, 384),
    (5, 100, 7),
    (8, 384, 384),
    (9, 1536, 384),
    (33, 15, 129),
    (70, 384, 1536), // split into 32-row tasks, the last ragged
    (2, 200, 64),    // few rows: split by columns
];

fn random(rng: &mut SmallRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn gelu64(x: f64) -> f64 {
    // erf by Simpson's rule (2000 steps): precise far beyond f32.
    let steps = 2000;
    let h = x / std::f64::consts::SQRT_2 / steps as f64;
    let f = |i: usize| (-(i as f64 * h).powi(2)).exp();
    let mut sum = f(0) + f(steps);
    for i in 1..steps {
        sum += f(i) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    let erf = sum * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt();
    0.5 * x * (1.0 + erf)
}

/// What the kernel must compute, in f64: the weights as packed, the input rounded as the
/// kernel rounds it at `level` (int8: symmetric quantization per row and span of `k`; bf16 with BF16
/// instructions: rounded to bfloat16; bf16 without: kept in f32).
fn reference(
    dtype: Dtype,
    level: SimdLevel,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    (m, n, k): (usize, usize, usize),
    gelu: bool,
) -> Vec<f64> {
    let packed = pack(dtype, weight, n, k);
    let w = |c: usize, p: usize| -> f64 {
        match dtype {
            Dtype::Int8 => {
                let q = (weight[c * k + p] / packed.scales[c].max(f32::MIN_POSITIVE))
                    .round()
                    .clamp(-127.0, 127.0);
                q as f64 * packed.scales[c] as f64
            }
            Dtype::Bf16 => bf16_value(bf16_bits(weight[c * k + p])) as f64,
            Dtype::F32 => weight[c * k + p] as f64,
        }
    };
    let mut out = vec![0.0f64; m * n];
    for r in 0..m {
        let row = &input[r * k..(r + 1) * k];
        let x: Vec<f64> = match dtype {
            // int8: a scale per span of K_PER_SCALE values.
            Dtype::Int8 => row
                .chunks(K_PER_SCALE)
                .flat_map(|span| {
                    let largest = span.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                    let scale = largest / 127.0;
                    span.iter().map(move |v| {
                        if largest == 0.0 {
                            0.0
                        } else {
                            (v * (1.0 / scale)).clamp(-127.0, 127.0).round_ties_even() as f64
                                * scale as f64
                        }
                    })
                })
                .collect(),
            Dtype::Bf16 if level >= SimdLevel::Avx512Bf16 => row
                .iter()
                .map(|v| bf16_value(bf16_bits(*v)) as f64)
                .collect(),
            _ => row.iter().map(|v| *v as f64).collect(),
        };
        let x = |p: usize| x[p];
        for c in 0..n {
            let mut acc: f64 = (0..k).map(|p| x(p) * w(c, p)).sum::<f64>() + bias[c] as f64;
            if gelu {
                acc = gelu64(acc);
            }
            out[r * n + c] = acc;
        }
    }
    out
}

fn run_packed(
    backend: &CpuBackend,
    dtype: Dtype,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    (m, n, k): (usize, usize, usize),
    activation: Activation,
) -> Vec<f32> {
    let packed = pack(dtype, weight, n, k);
    let words = upload(backend, &packed.words);
    let scales = (!packed.scales.is_empty()).then(|| upload(backend, &packed.scales));
    let sums: Vec<f32> = bytemuck::cast_slice(&packed.sums).to_vec();
    let sums = (!sums.is_empty()).then(|| upload(backend, &sums));
    let (input, bias) = (upload(backend, input), upload(backend, bias));
    let mut out = backend.allocate(m * n).unwrap();
    backend
        .launch(Kernel::GemmPacked {
            input: &input,
            weight: &words,
            scales: scales.as_ref(),
            sums: sums.as_ref(),
            bias: Some(&bias),
            out: &mut out,
            m,
            n,
            k,
            activation,
            dtype,
        })
        .unwrap();
    download(backend, &out, m * n)
}

/// `|actual − expected|` over the scale of the terms summed (`Σ|x·w|` over `k`, at least 1).
fn check_close(label: &str, actual: &[f32], expected: &[f64], scale: f64, tolerance: f64) {
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (*a as f64 - e).abs() / scale)
        .fold(0.0, f64::max);
    assert!(
        worst <= tolerance,
        "{label}: worst error {worst:e} over the scale {scale} is more than {tolerance:e}"
    );
}

#[test]
fn packed_products_match_their_rounding_at_every_level() {
    let mut rng = SmallRng::seed_from_u64(12);
    for (level, backend) in cpu_at_each_level() {
        for dtype in Dtype::ALL {
            for &(m, n, k) in SHAPES {
                for activation in [Activation::None, Activation::Gelu] {
                    let (input, weight, bias) = (
                        random(&mut rng, m * k),
                        random(&mut rng, n * k),
                        random(&mut rng, n),
                    );
                    let actual = run_packed(
                        &backend,
                        dtype,
                        &input,
                        &weight,
                        &bias,
                        (m, n, k),
                        activation,
                    );
                    let gelu = activation == Activation::Gelu;
                    let expected = reference(dtype, level, &input, &weight, &bias, (m, n, k), gelu);
                    // f32 accumulation of k terms of magnitude ≤ 1 (and int8's integer sums,
                    // exact, scaled in f32).
                    let label = format!("{dtype} at {level}, {m}×{n}×{k}, {activation:?}");
                    check_close(&label, &actual, &expected, (k as f64).max(1.0), 1e-6);
                }
            }
        }
    }
}

#[test]
fn packed_products_stay_within_their_precision_of_f32() {
    let mut rng = SmallRng::seed_from_u64(13);
    let (m, n, k) = (16, 384, 384);
    let (input, weight, bias) = (
        random(&mut rng, m * k),
        random(&mut rng, n * k),
        vec![0.0f32; n],
    );
    let exact: Vec<f64> = (0..m * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            (0..k)
                .map(|p| input[r * k + p] as f64 * weight[c * k + p] as f64)
                .sum()
        })
        .collect();
    // Random ±1 terms: the sum's typical size is √k; each term carries the precision's relative
    // rounding (bf16: 2⁻⁹ per factor; int8: 1/254 of the row's largest value per factor).
    let typical = (k as f64).sqrt();
    for (level, backend) in cpu_at_each_level() {
        for (dtype, tolerance) in [(Dtype::Bf16, 0.02), (Dtype::Int8, 0.05)] {
            let actual = run_packed(
                &backend,
                dtype,
                &input,
                &weight,
                &bias,
                (m, n, k),
                Activation::None,
            );
            check_close(
                &format!("{dtype} at {level} against f32"),
                &actual,
                &exact,
                typical,
                tolerance,
            );
        }
    }
}

#[test]
fn every_level_gives_the_same_int8_result() {
    // Integer sums are exact: the levels differ only in the order of f32 epilogue work, which
    // is the same; so the outputs are equal to the bit.
    let mut rng = SmallRng::seed_from_u64(14);
    let (m, n, k) = (13, 100, 200);
    let (input, weight, bias) = (
        random(&mut rng, m * k),
        random(&mut rng, n * k),
        random(&mut rng, n),
    );
    let results: Vec<(SimdLevel, Vec<f32>)> = cpu_at_each_level()
        .into_iter()
        .map(|(level, backend)| {
            let out = run_packed(
                &backend,
                Dtype::Int8,
                &input,
                &weight,
                &bias,
                (m, n, k),
                Activation::None,
            );
            (level, out)
        })
        .collect();
    let (first_level, first) = &results[0];
    for (level, out) in &results[1..] {
        let differing = out.iter().zip(first).filter(|(a, b)| a != b).count();
        assert!(
            differing == 0,
            "{differing} of {} int8 outputs differ between {first_level} and {level}",
            out.len()
        );
    }
}

#[test]
fn bad_packed_shapes_are_errors_not_panics() {
    let backend = support::backends::cpu();
    let small = upload(&backend, &[1.0f32; 4]);
    let mut out = backend.allocate(4).unwrap();
    let launch = |dtype, scales: Option<&_>, m, n, k, out: &mut _| {
        backend.launch(Kernel::GemmPacked {
            input: &small,
            weight: &small,
            scales,
            sums: scales,
            bias: None,
            out,
            m,
            n,
            k,
            activation: Activation::None,
            dtype,
        })
    };
    let error = launch(Dtype::Bf16, None, 2, 2, 2, &mut out).unwrap_err();
    assert!(error.to_string().contains("`weight` holds 4"), "{error}");
    let error = launch(Dtype::Int8, None, 1, 1, 4, &mut out).unwrap_err();
    assert!(error.to_string().contains("scales and sums"), "{error}");
    let error = launch(Dtype::F32, None, 1, 1, 8, &mut out).unwrap_err();
    assert!(error.to_string().contains("`input` holds 4"), "{error}");
    let error = launch(Dtype::Bf16, None, 2, usize::MAX, usize::MAX, &mut out).unwrap_err();
    assert!(error.to_string().contains("overflows"), "{error}");
}

#[test]
fn a_level_the_cpu_lacks_is_refused_by_name() {
    let missing = SimdLevel::ALL.into_iter().find(|l| !l.is_supported());
    match missing {
        Some(level) => {
            let error = CpuBackend::with_level(1, level).unwrap_err();
            assert!(error.to_string().contains(level.as_str()), "{error}");
        }
        None => {
            // This CPU has every level: the refusal is checked where one is missing, and here
            // the highest must be what the backend reports.
            let backend = CpuBackend::with_level(1, SimdLevel::Avx512Bf16).unwrap();
            assert_eq!(backend.level(), SimdLevel::Avx512Bf16);
        }
    }
}
