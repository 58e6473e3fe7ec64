//! A tiny llama GGUF written by the test (`support::tiny_llama`): the KV cache gives the same
//! logits as processing the whole sequence at once (token by token, and in chunks), the
//! architecture comes from the metadata, and broken files are errors naming the field or tensor.

mod support;

use std::sync::Arc;

use hipinfer::backend::CpuBackend;
use hipinfer::llm::{forward, Decoder, GenerateRequest, Generator, KvCache, LanguageModel};
use support::tiny_llama::{bytes_with, scratch, write, CONTEXT, HIDDEN, VOCAB};

fn tiny(test: &str) -> std::path::PathBuf {
    write(&scratch(test), "tiny.gguf", &bytes_with(1, |_, _| {}))
}

#[test]
fn the_kv_cache_gives_the_logits_of_the_whole_sequence() {
    let model = LanguageModel::open(tiny("kv_cache")).unwrap();
    let config = model.config().clone();
    assert_eq!(
        (
            config.layers,
            config.hidden,
            config.kv_heads,
            config.head_dim
        ),
        (2, 64, 2, 16)
    );
    let backend = CpuBackend::with_threads(2).unwrap();
    let weights = model.upload(&backend).unwrap().unwrap();
    let decoder = Decoder {
        config: &config,
        weights: &weights,
    };
    let tokens: Vec<u32> = (0..9).map(|i| (i * 37 + 5) % 256).collect();
    let last = tokens.len() - 1;

    let mut whole = KvCache::new(&backend, &config, 16).unwrap();
    let all_rows: Vec<usize> = (0..tokens.len()).collect();
    let reference = forward(
        &backend,
        decoder,
        &mut whole,
        &tokens,
        tokens.len(),
        &all_rows,
    )
    .unwrap();
    assert_eq!(whole.len(), tokens.len());

    let mut one_by_one = KvCache::new(&backend, &config, 16).unwrap();
    for (i, &token) in tokens.iter().enumerate() {
        let logits = forward(&backend, decoder, &mut one_by_one, &[token], 0, &[0]).unwrap();
        let want = &reference[i * VOCAB..(i + 1) * VOCAB];
        for (g, w) in logits.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "position {i}: {g} vs {w}");
        }
    }

    let mut chunked = KvCache::new(&backend, &config, 16).unwrap();
    forward(&backend, decoder, &mut chunked, &tokens[..5], 5, &[]).unwrap();
    let logits = forward(&backend, decoder, &mut chunked, &tokens[5..], 4, &[3]).unwrap();
    for (g, w) in logits.iter().zip(&reference[last * VOCAB..]) {
        assert!((g - w).abs() < 1e-4, "chunked: {g} vs {w}");
    }
    assert!(logits.iter().any(|v| v.abs() > 1e-3), "logits are all zero");
}

#[test]
fn generation_on_the_tiny_model_is_deterministic_and_stops_at_the_context() {
    let model = Arc::new(LanguageModel::open(tiny("generate")).unwrap());
    let mut generator = Generator::new(model, CpuBackend::with_threads(2).unwrap()).unwrap();
    let request = GenerateRequest {
        ignore_stop_tokens: true,
        ..GenerateRequest::greedy(vec![10, 20, 30], CONTEXT as usize)
    };
    let first = generator.generate(&request, &mut |_| {}).unwrap();
    let again = generator.generate(&request, &mut |_| {}).unwrap();
    assert_eq!(first.generated_ids, again.generated_ids);
    assert_eq!(first.generated_ids.len(), CONTEXT as usize - 3);
    assert_eq!(first.finish_reason, hipinfer::llm::FinishReason::Length);
}

#[test]
fn broken_files_are_errors_naming_the_field_or_tensor() {
    let dir = scratch("broken");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            bytes_with(1, |m, _| m[0].1 = support::gguf_writer::string("mamba")),
            "general.architecture: \"mamba\" is not supported",
        ),
        (
            bytes_with(1, |m, _| m.retain(|(k, _)| *k != "llama.block_count")),
            "llama.block_count: missing",
        ),
        (
            bytes_with(1, |m, _| m[6].1 = support::gguf_writer::u32_value(3)),
            "multiple of",
        ),
        (
            bytes_with(1, |_, t| t.retain(|t| t.name != "blk.1.ffn_up.weight")),
            "tensor blk.1.ffn_up.weight: missing",
        ),
        (
            bytes_with(1, |_, t| {
                let q = t
                    .iter_mut()
                    .find(|t| t.name == "blk.0.attn_q.weight")
                    .unwrap();
                q.dims = vec![HIDDEN as u64 / 2, HIDDEN as u64 * 2];
            }),
            "tensor blk.0.attn_q.weight: shape [32, 128]",
        ),
        (
            bytes_with(1, |_, t| {
                let q = t
                    .iter_mut()
                    .find(|t| t.name == "blk.0.attn_k.weight")
                    .unwrap();
                q.kind = 6; // Q5_0: 22 bytes a block of 32
                q.data = vec![0; HIDDEN * HIDDEN / 2 / 32 * 22];
            }),
            "tensor blk.0.attn_k.weight: type Q5_0 is not supported",
        ),
    ];
    for (i, (bytes, needle)) in cases.into_iter().enumerate() {
        let path = write(&dir, &format!("broken{i}.gguf"), &bytes);
        let error = match LanguageModel::open(&path) {
            Err(error) => error.to_string(),
            Ok(model) => match model.upload(&CpuBackend::with_threads(1).unwrap()) {
                Err(error) => error.to_string(),
                Ok(_) => panic!("case {i} loaded: {needle}"),
            },
        };
        assert!(error.contains(needle), "case {i}: {error}");
        assert!(
            error.contains("broken"),
            "case {i} does not name the file: {error}"
        );
    }
}
