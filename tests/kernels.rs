//! Every kernel on every available backend against a naive reference (plain loops in f64), on
//! seeded random inputs of odd sizes.

mod support;

use hipinfer::backend::{Activation, Backend, Kernel};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::backends::{download, max_relative_error, upload};

const TOLERANCE: f32 = 1e-4;

fn random(rng: &mut SmallRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn erf64(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 is not precise enough; integrate instead (Simpson, 2000 steps).
    let steps = 2000;
    let h = x / steps as f64;
    let f = |t: f64| (-t * t).exp();
    let mut sum = f(0.0) + f(x);
    for i in 1..steps {
        sum += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    sum * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
}

fn gemm_matches_reference<B: Backend>(backend: &B) {
    let mut rng = SmallRng::seed_from_u64(1);
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 33, 5),
        (33, 7, 129),
        (129, 65, 33),
        (2, 384, 384),
        (128, 96, 384),
        // The few-row path's tiles (3 weight rows × 4, 2 or 1 input rows) and their leftovers.
        (3, 200, 129),
        (5, 100, 384),
        (6, 49, 8),
        (15, 388, 67),
        (9, 400, 384), // split over threads in 48-row tasks, the last one ragged
    ] {
        for activation in [Activation::None, Activation::Gelu] {
            for with_bias in [false, true] {
                let (a, w, bias) = (
                    random(&mut rng, m * k),
                    random(&mut rng, n * k),
                    random(&mut rng, n),
                );
                let mut expected = vec![0.0f32; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut acc: f64 = (0..k)
                            .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                            .sum();
                        if with_bias {
                            acc += bias[j] as f64;
                        }
                        if activation == Activation::Gelu {
                            acc = gelu64(acc);
                        }
                        expected[i * n + j] = acc as f32;
                    }
                }
                let (ba, bw, bb) = (
                    upload(backend, &a),
                    upload(backend, &w),
                    upload(backend, &bias),
                );
                let mut out = backend.allocate(m * n).unwrap();
                backend
                    .launch(Kernel::Gemm {
                        input: &ba,
                        weight: &bw,
                        bias: with_bias.then_some(&bb),
                        out: &mut out,
                        m,
                        n,
                        k,
                        activation,
                    })
                    .unwrap();
                let error = max_relative_error(&download(backend, &out, m * n), &expected);
                assert!(
                    error <= TOLERANCE,
                    "gemm {m}x{n}x{k} {activation:?} bias={with_bias}: {error}"
                );
            }
        }
    }
}

fn gelu_and_add_match_reference<B: Backend>(backend: &B) {
    let mut rng = SmallRng::seed_from_u64(2);
    for len in [1, 7, 33, 129, 5000] {
        let x: Vec<f32> = random(&mut rng, len).iter().map(|v| v * 6.0).collect();
        let y = random(&mut rng, len);
        let mut bx = upload(backend, &x);
        backend.launch(Kernel::Gelu { x: &mut bx, len }).unwrap();
        let expected: Vec<f32> = x.iter().map(|&v| gelu64(v as f64) as f32).collect();
        assert!(
            max_relative_error(&download(backend, &bx, len), &expected) <= TOLERANCE,
            "gelu {len}"
        );

        let by = upload(backend, &y);
        let mut bx = upload(backend, &x);
        backend
            .launch(Kernel::Add {
                x: &mut bx,
                y: &by,
                len,
            })
            .unwrap();
        let expected: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        assert!(
            max_relative_error(&download(backend, &bx, len), &expected) <= TOLERANCE,
            "add {len}"
        );
    }
}

fn embed_matches_reference<B: Backend>(backend: &B) {
    let mut rng = SmallRng::seed_from_u64(3);
    let (vocab, type_vocab, hidden, seq, batch) = (57, 2, 33, 7, 3);
    let tokens = seq * batch;
    let word = random(&mut rng, vocab * hidden);
    let position = random(&mut rng, seq * hidden);
    let token_type = random(&mut rng, type_vocab * hidden);
    let ids: Vec<u32> = (0..tokens)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let types: Vec<u32> = (0..tokens)
        .map(|_| rng.random_range(0..type_vocab as u32))
        .collect();
    let mut expected = vec![0.0f32; tokens * hidden];
    for t in 0..tokens {
        for h in 0..hidden {
            expected[t * hidden + h] = word[ids[t] as usize * hidden + h]
                + position[(t % seq) * hidden + h]
                + token_type[types[t] as usize * hidden + h];
        }
    }
    let (bids, btypes) = (upload(backend, &ids), upload(backend, &types));
    let (bw, bp, bt) = (
        upload(backend, &word),
        upload(backend, &position),
        upload(backend, &token_type),
    );
    let mut out = backend.allocate(tokens * hidden).unwrap();
    backend
        .launch(Kernel::Embed {
            ids: &bids,
            token_types: &btypes,
            word: &bw,
            position: &bp,
            token_type: &bt,
            out: &mut out,
            tokens,
            seq,
            hidden,
            vocab,
            type_vocab,
        })
        .unwrap();
    assert!(max_relative_error(&download(backend, &out, tokens * hidden), &expected) <= TOLERANCE);
}

fn layer_norm_matches_reference<B: Backend>(backend: &B) {
    let mut rng = SmallRng::seed_from_u64(4);
    for &(rows, cols) in &[(1, 1), (7, 33), (33, 384), (129, 7)] {
        for with_residual in [false, true] {
            let (x, r) = (random(&mut rng, rows * cols), random(&mut rng, rows * cols));
            let (gamma, beta) = (random(&mut rng, cols), random(&mut rng, cols));
            let eps = 1e-12f32;
            let mut expected = vec![0.0f32; rows * cols];
            for i in 0..rows {
                let v: Vec<f64> = (0..cols)
                    .map(|j| {
                        x[i * cols + j] as f64
                            + if with_residual {
                                r[i * cols + j] as f64
                            } else {
                                0.0
                            }
                    })
                    .collect();
                let mean = v.iter().sum::<f64>() / cols as f64;
                let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / cols as f64;
                for j in 0..cols {
                    expected[i * cols + j] = ((v[j] - mean) / (var + eps as f64).sqrt()
                        * gamma[j] as f64
                        + beta[j] as f64) as f32;
                }
            }
            let (bx, br, bg, bb) = (
                upload(backend, &x),
                upload(backend, &r),
                upload(backend, &gamma),
                upload(backend, &beta),
            );
            let mut out = backend.allocate(rows * cols).unwrap();
            backend
                .launch(Kernel::LayerNorm {
                    input: &bx,
                    residual: with_residual.then_some(&br),
                    gamma: &bg,
                    beta: &bb,
                    out: &mut out,
                    rows,
                    cols,
                    eps,
                })
                .unwrap();
            let error = max_relative_error(&download(backend, &out, rows * cols), &expected);
            // A single column normalises to exactly beta; a constant row's variance is 0.
            assert!(error <= TOLERANCE, "layer norm {rows}x{cols}: {error}");
        }
    }
}

fn attention_matches_reference<B: Backend>(backend: &B) {
    let mut rng = SmallRng::seed_from_u64(5);
    for &(batch, seq, heads, head_dim) in
        &[(1, 1, 1, 1), (2, 7, 3, 5), (3, 33, 2, 32), (1, 129, 12, 32)]
    {
        let hidden = heads * head_dim;
        let qkv = random(&mut rng, batch * seq * 3 * hidden);
        // Sequence b has seq - b real tokens (at least 1), padding after them.
        let mask: Vec<f32> = (0..batch * seq)
            .map(|i| {
                if i % seq < (seq - (i / seq).min(seq - 1)) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let mut expected = vec![0.0f32; batch * seq * hidden];
        let scale = 1.0 / (head_dim as f64).sqrt();
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    if mask[b * seq + i] == 0.0 {
                        continue; // padding rows: any finite value is allowed, checked below
                    }
                    let q = |d: usize| qkv[(b * seq + i) * 3 * hidden + h * head_dim + d] as f64;
                    let key = |j: usize, d: usize| {
                        qkv[(b * seq + j) * 3 * hidden + hidden + h * head_dim + d] as f64
                    };
                    let value = |j: usize, d: usize| {
                        qkv[(b * seq + j) * 3 * hidden + 2 * hidden + h * head_dim + d] as f64
                    };
                    let scores: Vec<f64> = (0..seq)
                        .map(|j| {
                            if mask[b * seq + j] == 0.0 {
                                f64::NEG_INFINITY
                            } else {
                                (0..head_dim).map(|d| q(d) * key(j, d)).sum::<f64>() * scale
                            }
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for d in 0..head_dim {
                        let v: f64 = (0..seq).map(|j| weights[j] / total * value(j, d)).sum();
                        expected[(b * seq + i) * hidden + h * head_dim + d] = v as f32;
                    }
                }
            }
        }
        let (bq, bm) = (upload(backend, &qkv), upload(backend, &mask));
        let mut out = backend.allocate(batch * seq * hidden).unwrap();
        backend
            .launch(Kernel::Attention {
                qkv: &bq,
                mask: &bm,
                out: &mut out,
                batch,
                seq,
                heads,
                head_dim,
            })
            .unwrap();
        let mut actual = download(backend, &out, batch * seq * hidden);
        assert!(
            actual.iter().all(|v| v.is_finite()),
            "attention wrote a non-finite value"
        );
        for (t, row) in actual.chunks_mut(hidden).enumerate() {
            if mask[t] == 0.0 {
                row.fill(0.0);
            }
        }
        let error = max_relative_error(&actual, &expected);
        assert!(
            error <= TOLERANCE,
            "attention b{batch} s{seq} h{heads} d{head_dim}: {error}"
        );
    }
}

fn mean_pool_and_normalize_match_reference<B: Backend>(backend: &B) {
    let mut rng = SmallRng::seed_from_u64(6);
    for &(batch, seq, hidden) in &[(1, 1, 1), (3, 7, 33), (2, 129, 384)] {
        let x = random(&mut rng, batch * seq * hidden);
        let mask: Vec<f32> = (0..batch * seq)
            .map(|i| if i % seq <= (i / seq) * 2 { 1.0 } else { 0.0 })
            .collect();
        let mut expected = vec![0.0f32; batch * hidden];
        for b in 0..batch {
            let count: f64 = (0..seq).map(|t| mask[b * seq + t] as f64).sum();
            for h in 0..hidden {
                let s: f64 = (0..seq)
                    .map(|t| mask[b * seq + t] as f64 * x[(b * seq + t) * hidden + h] as f64)
                    .sum();
                expected[b * hidden + h] = (s / count) as f32;
            }
        }
        let (bx, bm) = (upload(backend, &x), upload(backend, &mask));
        let mut out = backend.allocate(batch * hidden).unwrap();
        backend
            .launch(Kernel::MeanPool {
                input: &bx,
                mask: &bm,
                out: &mut out,
                batch,
                seq,
                hidden,
            })
            .unwrap();
        let pooled = download(backend, &out, batch * hidden);
        assert!(
            max_relative_error(&pooled, &expected) <= TOLERANCE,
            "mean pool {batch}x{seq}x{hidden}"
        );

        backend
            .launch(Kernel::L2Normalize {
                x: &mut out,
                rows: batch,
                cols: hidden,
            })
            .unwrap();
        let normalized = download(backend, &out, batch * hidden);
        let mut expected_norm = expected.clone();
        for row in expected_norm.chunks_mut(hidden) {
            let norm = row
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
        }
        assert!(
            max_relative_error(&normalized, &expected_norm) <= TOLERANCE,
            "normalize {batch}x{hidden}"
        );
    }
}

fn bad_shapes_are_errors_not_panics<B: Backend<Error = hipinfer::HipError>>(backend: &B) {
    let small = upload(backend, &[1.0f32; 4]);
    let mut out = backend.allocate(4).unwrap();
    let error = backend
        .launch(Kernel::Gemm {
            input: &small,
            weight: &small,
            bias: None,
            out: &mut out,
            m: 8,
            n: 8,
            k: 8,
            activation: Activation::None,
        })
        .unwrap_err();
    assert_eq!(error.code(), 1);
    assert_eq!(error.kernel(), Some("hipinfer_gemm_bias"));
    assert!(
        error
            .to_string()
            .contains("`input` holds 4 values, the shape needs 64"),
        "{error}"
    );
    let error = backend
        .launch(Kernel::L2Normalize {
            x: &mut out,
            rows: usize::MAX,
            cols: 3,
        })
        .unwrap_err();
    assert!(error.to_string().contains("overflows"), "{error}");
    let ids = upload(backend, &[5u32, 99]);
    let table = upload(backend, &[0.0f32; 10]);
    let error = backend
        .launch(Kernel::Embed {
            ids: &ids,
            token_types: &ids,
            word: &table,
            position: &table,
            token_type: &table,
            out: &mut out,
            tokens: 2,
            seq: 2,
            hidden: 1,
            vocab: 10,
            type_vocab: 10,
        })
        .unwrap_err();
    assert!(error.to_string().contains("99"), "{error}");
    let mut host = vec![0.0f32; 5];
    assert!(backend.copy_to_host(&small, &mut host).is_err());
    let mut tiny = backend.allocate(2).unwrap();
    assert!(backend.copy_to_device(&[1.0f32; 3], &mut tiny).is_err());
}

/// After a reset, buffers of the old context are refused — by copies and launches alike, with a
/// clear error — and fresh ones work.
fn stale_buffers_are_refused_after_a_reset<B: Backend<Error = hipinfer::HipError>>(backend: &B) {
    let mut old = upload(backend, &[1.0f32, 2.0, 3.0, 4.0]);
    backend.reset().unwrap();
    let mut host = [0.0f32; 4];
    for error in [
        backend.copy_to_host(&old, &mut host).unwrap_err(),
        backend.copy_to_device(&host, &mut old).unwrap_err(),
        backend
            .launch(Kernel::Gelu {
                x: &mut old,
                len: 4,
            })
            .unwrap_err(),
    ] {
        assert_eq!(error.code(), 400, "{error}");
        assert!(error.is_permanent(), "{error}");
        assert!(
            error.to_string().contains("before a device reset"),
            "{error}"
        );
    }
    let mut fresh = upload(backend, &[1.0f32, -1.0, 0.5, 0.0]);
    backend
        .launch(Kernel::Gelu {
            x: &mut fresh,
            len: 4,
        })
        .unwrap();
    let values = download(backend, &fresh, 4);
    assert!((values[0] - 0.841_344_7).abs() < 1e-5, "{values:?}");
}

#[test]
fn stale_buffers_are_refused_through_the_fault_backend() {
    use hipinfer::backend::{CpuBackend, FaultPlan, FaultyBackend};
    let faulty = FaultyBackend::new(CpuBackend::with_threads(1).unwrap(), FaultPlan::new(1));
    stale_buffers_are_refused_after_a_reset(&faulty);
}

backend_tests! {
    stale_buffers => super::stale_buffers_are_refused_after_a_reset,
    gemm => super::gemm_matches_reference,
    gelu_and_add => super::gelu_and_add_match_reference,
    embed => super::embed_matches_reference,
    layer_norm => super::layer_norm_matches_reference,
    attention => super::attention_matches_reference,
    mean_pool_and_normalize => super::mean_pool_and_normalize_match_reference,
    bad_shapes => super::bad_shapes_are_errors_not_panics,
}
