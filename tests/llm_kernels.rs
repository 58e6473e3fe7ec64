//! The language-model kernels of the CPU backend against plain f64 references, at every SIMD
//! level this machine has (the lower ones forced): block-format products in each format for
//! one to many input rows (the fused and the widened paths), token-embedding rows, RMSNorm with
//! the residual sum, rotary embedding with the cache write, causal GQA attention over the cache
//! and SwiGLU; bad shapes are errors naming the argument.

mod support;

use half::f16;
use hipinfer::backend::{
    Backend, CacheSegment, DecoderShape, Kernel, QuantFormat, QuantPath, VALUES_PER_BLOCK,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::backends::{cpu, cpu_at_each_level, download, upload};

fn random(rng: &mut SmallRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `n` rows of `k` random values encoded as `format` (GGUF's block layouts), with the values
/// the blocks decode to.
fn encode(rng: &mut SmallRng, format: QuantFormat, n: usize, k: usize) -> (Vec<u8>, Vec<f64>) {
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    let h = |x: f32| f16::from_f32(x);
    for _ in 0..n * k / VALUES_PER_BLOCK {
        match format {
            QuantFormat::F32 => {
                for _ in 0..32 {
                    let v: f32 = rng.random_range(-1.0..1.0);
                    bytes.extend_from_slice(&v.to_le_bytes());
                    values.push(v as f64);
                }
            }
            QuantFormat::F16 => {
                for _ in 0..32 {
                    let v = h(rng.random_range(-1.0..1.0));
                    bytes.extend_from_slice(&v.to_bits().to_le_bytes());
                    values.push(v.to_f64());
                }
            }
            QuantFormat::Q8_0 => {
                let d = h(rng.random_range(0.001..0.02));
                bytes.extend_from_slice(&d.to_bits().to_le_bytes());
                for _ in 0..32 {
                    let q: i8 = rng.random_range(-127..=127);
                    bytes.push(q as u8);
                    values.push(d.to_f64() * q as f64);
                }
            }
            QuantFormat::Q4_0 | QuantFormat::Q4_1 => {
                let d = h(rng.random_range(0.01..0.2));
                let m = h(rng.random_range(-0.5..0.5));
                bytes.extend_from_slice(&d.to_bits().to_le_bytes());
                if format == QuantFormat::Q4_1 {
                    bytes.extend_from_slice(&m.to_bits().to_le_bytes());
                }
                let q: Vec<u8> = (0..32).map(|_| rng.random_range(0..16)).collect();
                for i in 0..16 {
                    bytes.push(q[i] | (q[i + 16] << 4));
                }
                for &q in &q {
                    values.push(match format {
                        QuantFormat::Q4_0 => d.to_f64() * (q as f64 - 8.0),
                        _ => d.to_f64() * q as f64 + m.to_f64(),
                    });
                }
            }
        }
    }
    while bytes.len() % 4 != 0 {
        bytes.push(0);
    }
    (bytes, values)
}

/// GGUF-layout rows of `k` values rearranged planar, as words for a buffer.
fn planar_words(format: QuantFormat, bytes: &[u8], k: usize) -> Vec<u32> {
    let row_bytes = format.row_bytes(k).unwrap();
    let mut planar = bytes.to_vec();
    let rows = bytes.len() / row_bytes;
    for (row, out) in bytes[..rows * row_bytes]
        .chunks_exact(row_bytes)
        .zip(planar.chunks_exact_mut(row_bytes))
    {
        format.to_planar(row, out);
    }
    words(&planar)
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn close(got: &[f32], want: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= tolerance * (1.0 + w.abs()),
            "{what}[{i}]: {g} instead of {w}"
        );
    }
}

fn quant_matmul_matches_reference<B: Backend>(backend: &B, level: &str) {
    let mut rng = SmallRng::seed_from_u64(5);
    // 300 rows: the many-row product widens 256 weight rows at a time (two pieces); k 576:
    // 18 blocks a row, more than the 16 scales the AVX-512 path widens at once.
    for (format, (n, k)) in QuantFormat::ALL
        .into_iter()
        .flat_map(|f| [(f, (37, 96)), (f, (300, 64)), (f, (40, 576))])
    {
        let (bytes, w) = encode(&mut rng, format, n, k);
        let weight = upload(backend, &planar_words(format, &bytes, k));
        for m in [1, 2, 3, 5, 17, 27] {
            let x = random(&mut rng, m * k);
            let input = upload(backend, &x);
            let mut out = backend.allocate(m * n).unwrap();
            backend
                .launch(Kernel::QuantMatmul {
                    input: &input,
                    weight: &weight,
                    out: &mut out,
                    first: 0,
                    m,
                    n,
                    k,
                    format,
                    path: QuantPath::Auto,
                })
                .unwrap();
            let want: Vec<f64> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k).map(|j| x[r * k + j] as f64 * w[c * k + j]).sum()
                })
                .collect();
            let got = download(backend, &out, m * n);
            close(&got, &want, 1e-5, &format!("{level} {format} m={m}"));
        }
    }
}

#[test]
fn quant_matmul_at_every_level() {
    for (level, backend) in cpu_at_each_level() {
        quant_matmul_matches_reference(&backend, level.as_str());
    }
}

#[test]
fn embedding_rows_and_rms_norm_match_reference() {
    for (level, backend) in cpu_at_each_level() {
        let mut rng = SmallRng::seed_from_u64(6);
        let (vocab, hidden) = (11, 64);
        let (bytes, table) = encode(&mut rng, QuantFormat::Q8_0, vocab, hidden);
        let ids = [3u32, 0, 10, 3];
        let (id_buffer, table_buffer) = (
            upload(&backend, &ids),
            upload(&backend, &planar_words(QuantFormat::Q8_0, &bytes, hidden)),
        );
        let mut out = backend.allocate(ids.len() * hidden).unwrap();
        backend
            .launch(Kernel::EmbedRows {
                ids: &id_buffer,
                table: &table_buffer,
                out: &mut out,
                tokens: ids.len(),
                hidden,
                vocab,
                format: QuantFormat::Q8_0,
            })
            .unwrap();
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| table[id as usize * hidden..][..hidden].to_vec())
            .collect();
        close(
            &download(&backend, &out, want.len()),
            &want,
            1e-6,
            "embed rows",
        );

        let rows = 3;
        let (x, add, gamma) = (
            random(&mut rng, rows * hidden),
            random(&mut rng, rows * hidden),
            random(&mut rng, hidden),
        );
        let (mut xb, ab, gb) = (
            upload(&backend, &x),
            upload(&backend, &add),
            upload(&backend, &gamma),
        );
        let mut normed = backend.allocate(rows * hidden).unwrap();
        backend
            .launch(Kernel::RmsNorm {
                x: &mut xb,
                add: Some(&ab),
                weight: &gb,
                out: &mut normed,
                rows,
                cols: hidden,
                eps: 1e-5,
            })
            .unwrap();
        let summed: Vec<f64> = x.iter().zip(&add).map(|(a, b)| (*a + *b) as f64).collect();
        let mut want = Vec::new();
        for row in summed.chunks(hidden) {
            let rms = (row.iter().map(|v| v * v).sum::<f64>() / hidden as f64 + 1e-5).sqrt();
            want.extend(row.iter().zip(&gamma).map(|(v, g)| v / rms * *g as f64));
        }
        close(
            &download(&backend, &xb, rows * hidden),
            &summed,
            1e-6,
            "residual sum",
        );
        close(
            &download(&backend, &normed, rows * hidden),
            &want,
            1e-5,
            &format!("{level} rms"),
        );
    }
}

/// Rotary embedding and causal attention, prefilled in two steps (3 tokens, then 2) so the
/// second attends to cache rows the first wrote.
#[test]
fn rope_and_causal_attention_match_reference() {
    for (level, backend) in cpu_at_each_level() {
        let mut rng = SmallRng::seed_from_u64(7);
        let (heads, kv_heads, head_dim, rope_dims, theta) = (4, 2, 8, 6, 10_000.0f32);
        let (tokens, capacity) = (5, 6);
        let width = (heads + 2 * kv_heads) * head_dim;
        let qkv = random(&mut rng, tokens * width);
        let kv_width = kv_heads * head_dim;
        let mut k_cache = backend.allocate(capacity * kv_width).unwrap();
        let mut v_cache = backend.allocate(capacity * kv_width).unwrap();
        let mut outputs = Vec::new();
        for (start, rows) in [(0, 3), (3, 2)] {
            let shape = DecoderShape {
                heads,
                kv_heads,
                head_dim,
                rope_dims,
                theta,
            };
            let segments = [CacheSegment {
                row: 0,
                rows,
                start,
                base: 0,
                capacity,
            }];
            let mut step = upload(&backend, &qkv[start * width..(start + rows) * width]);
            backend
                .launch(Kernel::RopeAndStore {
                    qkv: &mut step,
                    k_cache: &mut k_cache,
                    v_cache: &mut v_cache,
                    shape,
                    segments: &segments,
                })
                .unwrap();
            let mut out = backend.allocate(rows * heads * head_dim).unwrap();
            backend
                .launch(Kernel::CausalAttention {
                    qkv: &step,
                    k_cache: &k_cache,
                    v_cache: &v_cache,
                    out: &mut out,
                    shape,
                    segments: &segments,
                })
                .unwrap();
            outputs.extend(download(&backend, &out, rows * heads * head_dim));
        }
        // The reference: rotate every head of Q and K at its position, then attend.
        let rotate = |v: &mut [f64], position: usize| {
            for i in 0..rope_dims / 2 {
                let angle =
                    position as f64 * (theta as f64).powf(-2.0 * i as f64 / rope_dims as f64);
                let (a, b) = (v[2 * i], v[2 * i + 1]);
                v[2 * i] = a * angle.cos() - b * angle.sin();
                v[2 * i + 1] = a * angle.sin() + b * angle.cos();
            }
        };
        let head = |t: usize, h: usize| -> Vec<f64> {
            qkv[t * width + h * head_dim..][..head_dim]
                .iter()
                .map(|&v| v as f64)
                .collect()
        };
        let mut want = Vec::new();
        for t in 0..tokens {
            for h in 0..heads {
                let mut q = head(t, h);
                rotate(&mut q, t);
                let g = h / (heads / kv_heads);
                let keys: Vec<Vec<f64>> = (0..=t)
                    .map(|j| {
                        let mut k = head(j, heads + g);
                        rotate(&mut k, j);
                        k
                    })
                    .collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|k| {
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for d in 0..head_dim {
                    want.push(
                        (0..=t)
                            .map(|j| e[j] / total * head(j, heads + kv_heads + g)[d])
                            .sum(),
                    );
                }
            }
        }
        close(&outputs, &want, 1e-5, &format!("{level} attention"));
    }
}

#[test]
fn swiglu_matches_reference() {
    let backend = cpu();
    let mut rng = SmallRng::seed_from_u64(8);
    let (rows, ff) = (3, 40);
    let gate_up = random(&mut rng, rows * 2 * ff);
    let input = upload(&backend, &gate_up);
    let mut out = backend.allocate(rows * ff).unwrap();
    backend
        .launch(Kernel::SwiGlu {
            gate_up: &input,
            out: &mut out,
            rows,
            ff,
        })
        .unwrap();
    let want: Vec<f64> = (0..rows * ff)
        .map(|i| {
            let (r, c) = (i / ff, i % ff);
            let g = gate_up[r * 2 * ff + c] as f64;
            g / (1.0 + (-g).exp()) * gate_up[r * 2 * ff + ff + c] as f64
        })
        .collect();
    close(&download(&backend, &out, rows * ff), &want, 1e-6, "swiglu");
}

#[test]
fn bad_decoder_shapes_are_errors_naming_the_argument() {
    let backend = cpu();
    let small = backend.allocate(64).unwrap();
    let mut out = backend.allocate(64).unwrap();
    let error = backend
        .launch(Kernel::QuantMatmul {
            input: &small,
            weight: &small,
            out: &mut out,
            first: 0,
            m: 1,
            n: 2,
            k: 33,
            format: QuantFormat::Q4_1,
            path: QuantPath::Auto,
        })
        .unwrap_err()
        .to_string();
    assert!(error.contains("k 33") && error.contains("Q4_1"), "{error}");
    let error = backend
        .launch(Kernel::QuantMatmul {
            input: &small,
            weight: &small,
            out: &mut out,
            first: 0,
            m: 1,
            n: 64,
            k: 64,
            format: QuantFormat::Q8_0,
            path: QuantPath::Fused,
        })
        .unwrap_err()
        .to_string();
    assert!(error.contains("`weight`"), "{error}");
    let (mut k_cache, mut v_cache) = (backend.allocate(64).unwrap(), backend.allocate(64).unwrap());
    let mut qkv = backend.allocate(64).unwrap();
    let shape = DecoderShape {
        heads: 2,
        kv_heads: 1,
        head_dim: 8,
        rope_dims: 8,
        theta: 1e4,
    };
    let segment = CacheSegment {
        row: 0,
        rows: 1,
        start: 4,
        base: 0,
        capacity: 4,
    };
    let mut rope = |shape: DecoderShape, segments: &[CacheSegment]| {
        backend
            .launch(Kernel::RopeAndStore {
                qkv: &mut qkv,
                k_cache: &mut k_cache,
                v_cache: &mut v_cache,
                shape,
                segments,
            })
            .unwrap_err()
            .to_string()
    };
    let error = rope(shape, &[segment]);
    assert!(
        error.contains("segment 0") && error.contains("do not fit"),
        "{error}"
    );
    let fits = CacheSegment {
        start: 0,
        ..segment
    };
    let error = rope(
        DecoderShape {
            kv_heads: 3,
            ..shape
        },
        &[fits],
    );
    assert!(error.contains("multiple of kv_heads"), "{error}");
    let error = rope(shape, &[fits, CacheSegment { row: 1, ..fits }]);
    assert!(error.contains("share rows"), "{error}");
    let error = rope(shape, &[CacheSegment { base: 5, ..fits }]);
    assert!(error.contains("`k_cache`"), "{error}");
    let ids = upload(&backend, &[99u32]);
    let error = backend
        .launch(Kernel::EmbedRows {
            ids: &ids,
            table: &small,
            out: &mut out,
            tokens: 1,
            hidden: 32,
            vocab: 2,
            format: QuantFormat::Q8_0,
        })
        .unwrap_err()
        .to_string();
    assert!(error.contains("token id 99"), "{error}");
}

/// Each product path gives a row the same bits whatever else is in the launch (how many rows,
/// which, where they start): what makes batched and replayed generation exact.
#[test]
fn each_product_path_gives_a_row_the_same_bits_in_any_batch() {
    let backend = cpu();
    let mut rng = SmallRng::seed_from_u64(11);
    for format in [QuantFormat::Q4_1, QuantFormat::Q8_0] {
        let (n, k) = (300, 192);
        let (bytes, _) = encode(&mut rng, format, n, k);
        let weight = upload(&backend, &planar_words(format, &bytes, k));
        let x = random(&mut rng, 40 * k);
        let input = upload(&backend, &x);
        let run = |first: usize, m: usize, path: QuantPath| {
            let mut out = backend.allocate(40 * n).unwrap();
            backend
                .launch(Kernel::QuantMatmul {
                    input: &input,
                    weight: &weight,
                    out: &mut out,
                    first,
                    m,
                    n,
                    k,
                    format,
                    path,
                })
                .unwrap();
            download(&backend, &out, 40 * n)[first * n..(first + m) * n].to_vec()
        };
        for path in [QuantPath::Fused, QuantPath::Widened] {
            let all = run(0, 40, path);
            for (first, m) in (1..=40).flat_map(|m| [(0, m), (40 - m, m)]) {
                let alone = run(first, m, path);
                assert!(
                    alone == all[first * n..(first + m) * n],
                    "{format} {path:?}: rows {first}..{} differ from the 40-row launch",
                    first + m
                );
            }
        }
    }
}

/// Two sequences in one attention launch, each in its own rows of the caches, give each the
/// very values it gets alone.
#[test]
fn attention_over_several_sequences_equals_each_alone() {
    let backend = cpu();
    let mut rng = SmallRng::seed_from_u64(12);
    let shape = DecoderShape {
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        rope_dims: 8,
        theta: 1e4,
    };
    let (width, kv_width) = (shape.qkv_width().unwrap(), shape.kv_width().unwrap());
    // Sequence a: 3 tokens at positions 0..3 (rows 0..8 of the cache); b: 1 token at position
    // 0 (rows 8..12). Then both decode one more token together.
    let a = CacheSegment {
        row: 0,
        rows: 3,
        start: 0,
        base: 0,
        capacity: 8,
    };
    let b = CacheSegment {
        row: 3,
        rows: 1,
        start: 0,
        base: 8,
        capacity: 4,
    };
    let first = random(&mut rng, 4 * width);
    let second = random(&mut rng, 2 * width);
    let step = |segments: &[CacheSegment], qkv: &[f32], caches: &mut (_, _)| {
        let (k_cache, v_cache) = caches;
        let rows: usize = segments.iter().map(|s| s.row + s.rows).max().unwrap();
        let mut qkv = upload(&backend, qkv);
        backend
            .launch(Kernel::RopeAndStore {
                qkv: &mut qkv,
                k_cache,
                v_cache,
                shape,
                segments,
            })
            .unwrap();
        let mut out = backend.allocate(rows * 4 * 8).unwrap();
        backend
            .launch(Kernel::CausalAttention {
                qkv: &qkv,
                k_cache,
                v_cache,
                out: &mut out,
                shape,
                segments,
            })
            .unwrap();
        download(&backend, &out, rows * 32)
    };
    let caches = || {
        (
            backend.allocate(12 * kv_width).unwrap(),
            backend.allocate(12 * kv_width).unwrap(),
        )
    };
    let mut together = caches();
    let prefill = step(&[a, b], &first, &mut together);
    let decode = step(
        &[
            CacheSegment {
                row: 0,
                rows: 1,
                start: 3,
                ..a
            },
            CacheSegment {
                row: 1,
                rows: 1,
                start: 1,
                ..b
            },
        ],
        &second,
        &mut together,
    );
    let mut alone_a = caches();
    let a_prefill = step(&[a], &first[..3 * width], &mut alone_a);
    let a_decode = step(
        &[CacheSegment {
            row: 0,
            rows: 1,
            start: 3,
            ..a
        }],
        &second[..width],
        &mut alone_a,
    );
    let mut alone_b = caches();
    let b_prefill = step(
        &[CacheSegment { row: 0, ..b }],
        &first[3 * width..],
        &mut alone_b,
    );
    let b_decode = step(
        &[CacheSegment {
            row: 0,
            rows: 1,
            start: 1,
            ..b
        }],
        &second[width..],
        &mut alone_b,
    );
    assert!(prefill[..3 * 32] == a_prefill[..], "a's prompt");
    assert!(prefill[3 * 32..] == b_prefill[..], "b's prompt");
    assert!(decode[..32] == a_decode[..], "a's step");
    assert!(decode[32..] == b_decode[..], "b's step");
}
