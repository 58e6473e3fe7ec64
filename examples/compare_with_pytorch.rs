//! Embeds the sentences of the PyTorch reference (`../shared/fixtures/minilm_golden.json`, made
//! with sentence-transformers; a copy is `tests/fixtures/minilm_golden.json`) with hipinfer's CPU
//! backend, one at a time and all in one padded batch, and prints how far the embeddings are from
//! PyTorch's: the largest difference of any component and the smallest cosine.
//!
//! `cargo run --release --example compare_with_pytorch [MODEL_DIR [FIXTURE]]`

use std::sync::Arc;

use hipinfer::backend::CpuBackend;
use hipinfer::model::{Embedder, Model, DEFAULT_MODEL_DIR};

#[derive(serde::Deserialize)]
struct Golden {
    sentences: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .or_else(|| std::env::var("HIPINFER_MODEL").ok())
        .unwrap_or_else(|| DEFAULT_MODEL_DIR.into());
    let fixture = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/minilm_golden.json"
        )
        .into()
    });
    let golden: Golden = serde_json::from_str(&std::fs::read_to_string(&fixture)?)?;
    let model = Arc::new(Model::load(&dir)?);
    let ids = model.tokenize(&golden.sentences)?;
    let same_ids = ids.iter().zip(&golden.input_ids).all(|(a, b)| &a.ids == b);
    let embedder = Embedder::new(model, CpuBackend::new()?)?;
    let batched = embedder.embed(&golden.sentences, true)?;
    let mut alone = Vec::new();
    for sentence in &golden.sentences {
        alone.extend(embedder.embed(&[sentence], true)?);
    }
    let (mut worst, mut cosine) = (0.0f32, 1.0f32);
    for (got, expected) in batched
        .iter()
        .chain(&alone)
        .zip(golden.embeddings.iter().cycle())
    {
        for (a, e) in got.iter().zip(expected) {
            worst = worst.max((a - e).abs());
        }
        let dot: f32 = got.iter().zip(expected).map(|(a, e)| a * e).sum();
        let norms = got.iter().map(|a| a * a).sum::<f32>().sqrt()
            * expected.iter().map(|e| e * e).sum::<f32>().sqrt();
        cosine = cosine.min(dot / norms);
    }
    println!(
        "{}",
        serde_json::json!({
            "sentences": golden.sentences.len(),
            "token_ids_equal": same_ids,
            "max_abs_difference": worst,
            "min_cosine": cosine,
            "reference": fixture,
        })
    );
    Ok(())
}
