//! The CPU backend's kernels at the model's shapes, and its GEMM next to raw faer on the same
//! shapes and threads (GEMM throughput is reported in elements = floating-point operations, so
//! criterion's "Gelem/s" reads as GFLOP/s).
//!
//! `cargo bench --bench cpu_kernels` (set HIPINFER_BENCH_THREADS to change the thread count, 2 by
//! default: the development machine's cores).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use hipinfer::backend::{
    Activation, Backend, CpuBackend, CpuBuffer, Kernel, QuantFormat, QuantPath, VALUES_PER_BLOCK,
};

fn threads() -> usize {
    std::env::var("HIPINFER_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2)
}

fn filled(backend: &CpuBackend, len: usize, seed: u32) -> CpuBuffer {
    let values: Vec<f32> = (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 1000.0 - 0.5
        })
        .collect();
    let mut buffer = backend.allocate(len).unwrap();
    backend.copy_to_device(&values, &mut buffer).unwrap();
    buffer
}

/// (m, k, n): rows, inner dimension, outputs — QKV/attention output, FFN up, FFN down, one row.
const GEMM_SHAPES: &[(usize, usize, usize)] = &[
    (128, 384, 384),
    (128, 384, 1536),
    (4096, 384, 1536),
    (4096, 1536, 384),
    (1, 384, 384),
    (8, 384, 384),
];

fn gemm(c: &mut Criterion) {
    let threads = threads();
    let backend = CpuBackend::with_threads(threads).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("gemm");
    for &(m, k, n) in GEMM_SHAPES {
        let label = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let (input, weight, bias) = (
            filled(&backend, m * k, 1),
            filled(&backend, n * k, 2),
            filled(&backend, n, 3),
        );
        let mut out = backend.allocate(m * n).unwrap();
        group.bench_function(BenchmarkId::new("hipinfer", &label), |b| {
            b.iter(|| {
                backend
                    .launch(Kernel::Gemm {
                        input: &input,
                        weight: &weight,
                        bias: None,
                        out: &mut out,
                        m,
                        n,
                        k,
                        activation: Activation::None,
                    })
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("hipinfer_bias_gelu", &label), |b| {
            b.iter(|| {
                backend
                    .launch(Kernel::Gemm {
                        input: &input,
                        weight: &weight,
                        bias: Some(&bias),
                        out: &mut out,
                        m,
                        n,
                        k,
                        activation: Activation::Gelu,
                    })
                    .unwrap()
            })
        });
        let (a, w) = (input.as_f32().to_vec(), weight.as_f32().to_vec());
        let mut dst = vec![0.0f32; m * n];
        group.bench_function(BenchmarkId::new("faer_raw", &label), |b| {
            b.iter(|| {
                pool.install(|| {
                    let par = if m > 1 && m * n * k >= 1 << 20 {
                        Par::rayon(threads)
                    } else {
                        Par::Seq
                    };
                    matmul(
                        MatMut::from_row_major_slice_mut(&mut dst, m, n),
                        Accum::Replace,
                        MatRef::from_row_major_slice(&a, m, k),
                        MatRef::from_row_major_slice(&w, n, k).transpose(),
                        1.0f32,
                        par,
                    )
                });
                black_box(&dst);
            })
        });
    }
    group.finish();
}

fn other_kernels(c: &mut Criterion) {
    let backend = CpuBackend::with_threads(threads()).unwrap();
    let (batch, seq, heads, head_dim) = (32, 128, 12, 32);
    let (tokens, hidden) = (batch * seq, heads * head_dim);
    let mut group = c.benchmark_group("kernels_32x128");
    group.throughput(Throughput::Elements(tokens as u64));
    let qkv = filled(&backend, tokens * 3 * hidden, 4);
    let mask_values: Vec<f32> = (0..tokens)
        .map(|t| if t % seq < 100 { 1.0 } else { 0.0 })
        .collect();
    let mut mask = backend.allocate(tokens).unwrap();
    backend.copy_to_device(&mask_values, &mut mask).unwrap();
    let mut out = backend.allocate(tokens * hidden).unwrap();
    group.bench_function("attention", |b| {
        b.iter(|| {
            backend
                .launch(Kernel::Attention {
                    qkv: &qkv,
                    mask: &mask,
                    out: &mut out,
                    batch,
                    seq,
                    heads,
                    head_dim,
                })
                .unwrap()
        })
    });
    let (x, residual, gamma, beta) = (
        filled(&backend, tokens * hidden, 5),
        filled(&backend, tokens * hidden, 6),
        filled(&backend, hidden, 7),
        filled(&backend, hidden, 8),
    );
    group.bench_function("layer_norm_residual", |b| {
        b.iter(|| {
            backend
                .launch(Kernel::LayerNorm {
                    input: &x,
                    residual: Some(&residual),
                    gamma: &gamma,
                    beta: &beta,
                    out: &mut out,
                    rows: tokens,
                    cols: hidden,
                    eps: 1e-12,
                })
                .unwrap()
        })
    });
    let mut wide = filled(&backend, tokens * 1536, 9);
    group.bench_function("gelu_4x_hidden", |b| {
        b.iter(|| {
            backend
                .launch(Kernel::Gelu {
                    x: &mut wide,
                    len: tokens * 1536,
                })
                .unwrap()
        })
    });
    let mut pooled = backend.allocate(batch * hidden).unwrap();
    group.bench_function("mean_pool", |b| {
        b.iter(|| {
            backend
                .launch(Kernel::MeanPool {
                    input: &x,
                    mask: &mask,
                    out: &mut pooled,
                    batch,
                    seq,
                    hidden,
                })
                .unwrap()
        })
    });
    group.finish();
}

/// The decoder's block-format products at SmolLM2's shapes (k, n), for one decoding sequence
/// and for 16 decoded together: the fused path a decode step spends its time in.
fn quant_matmul(c: &mut Criterion) {
    let backend = CpuBackend::with_threads(threads()).unwrap();
    let mut group = c.benchmark_group("quant_matmul");
    let shapes = [
        (QuantFormat::Q4_1, 576, 1536),
        (QuantFormat::Q4_1, 1536, 576),
        (QuantFormat::Q4_1, 576, 576),
        (QuantFormat::Q8_0, 576, 49152),
    ];
    for (format, k, n) in shapes {
        // Blocks whose scales (f16 0x2000, about 0.008) and quants are ordinary numbers.
        let block: Vec<u8> = (0..format.block_bytes())
            .map(|i| if i % 2 == 0 { 0x00 } else { 0x20 })
            .collect();
        let blocks = n * k / VALUES_PER_BLOCK;
        let gguf: Vec<u8> = block
            .iter()
            .copied()
            .cycle()
            .take(blocks * block.len())
            .collect();
        let row_bytes = format.row_bytes(k).unwrap();
        let mut planar = gguf.clone();
        for (row, out) in gguf
            .chunks_exact(row_bytes)
            .zip(planar.chunks_exact_mut(row_bytes))
        {
            format.to_planar(row, out);
        }
        planar.resize(planar.len().next_multiple_of(4), 0);
        let words: Vec<u32> = planar
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut weight = backend.allocate(words.len()).unwrap();
        backend.copy_to_device(&words, &mut weight).unwrap();
        for m in [1, 16] {
            let input = filled(&backend, m * k, 10);
            let mut out = backend.allocate(m * n).unwrap();
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            let label = format!("{format}_{m}x{k}x{n}");
            group.bench_function(BenchmarkId::new("fused", &label), |b| {
                b.iter(|| {
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
                            path: QuantPath::Fused,
                        })
                        .unwrap();
                    backend.synchronize().unwrap();
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gemm, other_kernels, quant_matmul);
criterion_main!(benches);
