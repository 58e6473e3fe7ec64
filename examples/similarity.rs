//! Embeds a few sentences with all-MiniLM-L6-v2 on the CPU backend and prints their cosine
//! similarity matrix. `cargo run --release --example similarity [MODEL_DIR]` (the quick start's
//! `scripts/demo.sh` fetches the model first).

use std::sync::Arc;

use hipinfer::backend::CpuBackend;
use hipinfer::model::{Embedder, Model, DEFAULT_MODEL_DIR};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HIPINFER_MODEL").ok())
        .unwrap_or_else(|| DEFAULT_MODEL_DIR.into());
    let sentences = [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "GPUs fail in many interesting ways.",
        "Graphics cards can crash unexpectedly.",
        "I like pizza.",
    ];
    let model = Arc::new(Model::load(&dir)?);
    let embedder = Embedder::new(model, CpuBackend::new()?)?;
    let embeddings = embedder.embed(&sentences, true)?;

    println!(
        "cosine similarity ({}, CPU backend)\n",
        embedder.model().name()
    );
    for (i, sentence) in sentences.iter().enumerate() {
        let row: Vec<String> = embeddings
            .iter()
            .map(|other| {
                format!(
                    "{:5.2}",
                    embeddings[i]
                        .iter()
                        .zip(other)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                )
            })
            .collect();
        println!("{}  {sentence}", row.join(" "));
    }
    Ok(())
}
