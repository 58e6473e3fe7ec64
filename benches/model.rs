//! all-MiniLM-L6-v2 on the CPU backend at the shapes of the README's table (batch × tokens):
//! criterion's view of what `hipinfer bench` measures. Needs the model (scripts/fetch-model.sh);
//! without it the bench says so and measures nothing.
//!
//! `cargo bench --bench model` (HIPINFER_BENCH_THREADS: CPU threads, 2 by default).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hipinfer::backend::CpuBackend;
use hipinfer::model::{Embedder, Encoding, Model, DEFAULT_MODEL_DIR};

/// `batch` inputs of exactly `seq` tokens: [CLS], word pieces, [SEP].
fn inputs(batch: usize, seq: usize) -> Vec<Encoding> {
    (0..batch)
        .map(|b| {
            let mut ids = vec![101u32];
            ids.extend((1..seq - 1).map(|t| 1000 + ((b * 7919 + t * 104_729) % 29_000) as u32));
            ids.push(102);
            Encoding {
                type_ids: vec![0; seq],
                ids,
            }
        })
        .collect()
}

fn model(c: &mut Criterion) {
    let dir = std::env::var("HIPINFER_MODEL").unwrap_or_else(|_| DEFAULT_MODEL_DIR.into());
    let model = match Model::load(&dir) {
        Ok(model) => Arc::new(model),
        Err(error) => {
            eprintln!("skipping the model bench: {error}");
            return;
        }
    };
    let threads = std::env::var("HIPINFER_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let embedder = Embedder::new(model, CpuBackend::with_threads(threads).unwrap()).unwrap();
    let mut group = c.benchmark_group("minilm_cpu");
    group.sample_size(10);
    for (batch, seq) in [(1, 8), (1, 128), (8, 128), (32, 128)] {
        let encodings = inputs(batch, seq);
        group.throughput(Throughput::Elements((batch * seq) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{batch}x{seq}")),
            &encodings,
            |b, encodings| b.iter(|| embedder.embed_encodings(encodings, true).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, model);
criterion_main!(benches);
