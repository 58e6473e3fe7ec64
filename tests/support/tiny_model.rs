//! A tiny synthetic BERT model folder (hidden 8, one layer, an 11-word vocabulary) written by the
//! test itself: the loader and the forward pass can be tested on every machine, with no download,
//! and each file can be broken on purpose.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

pub const HIDDEN: usize = 8;
pub const INTERMEDIATE: usize = 16;
pub const MAX_POSITIONS: usize = 16;
pub const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "!", ",", "rust", "is", "fast",
];

pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "model_type": "bert",
        "hidden_size": HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "vocab_size": VOCAB.len(),
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2
    })
}

pub fn tokenizer_json() -> serde_json::Value {
    // The special tokens, as a real BERT tokenizer.json lists them.
    let added: Vec<serde_json::Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .enumerate()
        .map(|(id, content)| {
            serde_json::json!({"id": id, "content": content, "single_word": false,
                               "lstrip": false, "rstrip": false, "normalized": false,
                               "special": true})
        })
        .collect();
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": {"strategy": {"Fixed": 12}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Every tensor of the tiny model, with deterministic values.
pub fn tensors() -> Vec<(String, Vec<usize>)> {
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let mut list = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![VOCAB.len(), h],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![MAX_POSITIONS, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![2, h],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![h]),
        ("embeddings.LayerNorm.bias".to_string(), vec![h]),
        (
            "embeddings.position_ids".to_string(),
            vec![1, MAX_POSITIONS],
        ),
        ("pooler.dense.weight".to_string(), vec![h, h]),
    ];
    for name in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ] {
        list.push((format!("encoder.layer.0.{name}.weight"), vec![h, h]));
        list.push((format!("encoder.layer.0.{name}.bias"), vec![h]));
    }
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        list.push((format!("encoder.layer.0.{norm}.weight"), vec![h]));
        list.push((format!("encoder.layer.0.{norm}.bias"), vec![h]));
    }
    list.push((
        "encoder.layer.0.intermediate.dense.weight".into(),
        vec![i, h],
    ));
    list.push(("encoder.layer.0.intermediate.dense.bias".into(), vec![i]));
    list.push(("encoder.layer.0.output.dense.weight".into(), vec![h, i]));
    list.push(("encoder.layer.0.output.dense.bias".into(), vec![h]));
    list
}

/// Serializes `tensors` (name → shape) with pseudo-random F32 values (I64 for position_ids);
/// `prefix` goes before every name.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>)], prefix: &str) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = tensors
        .iter()
        .enumerate()
        .map(|(t, (name, shape))| {
            let count: usize = shape.iter().product();
            if name.ends_with("position_ids") {
                let values: Vec<i64> = (0..count as i64).collect();
                (
                    format!("{prefix}{name}"),
                    shape.clone(),
                    bytemuck::cast_slice(&values).to_vec(),
                    Dtype::I64,
                )
            } else {
                let values: Vec<f32> = (0..count)
                    .map(|k| {
                        let x = ((k * 31 + t * 17) % 97) as f32 / 97.0 - 0.5;
                        if name.contains("LayerNorm.weight") {
                            1.0 + x * 0.1
                        } else {
                            x
                        }
                    })
                    .collect();
                (
                    format!("{prefix}{name}"),
                    shape.clone(),
                    bytemuck::cast_slice(&values).to_vec(),
                    Dtype::F32,
                )
            }
        })
        .collect();
    let views: HashMap<String, TensorView<'_>> = data
        .iter()
        .map(|(name, shape, bytes, dtype)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Writes a complete tiny model folder under the system temp dir and returns its path.
pub fn write(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hipinfer-tiny-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    write_json(&dir.join("config.json"), &config_json());
    write_json(&dir.join("tokenizer.json"), &tokenizer_json());
    write_json(
        &dir.join("sentence_bert_config.json"),
        &serde_json::json!({"max_seq_length": 12, "do_lower_case": false}),
    );
    write_json(
        &dir.join("1_Pooling/config.json"),
        &serde_json::json!({"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": true}),
    );
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes(&tensors(), ""),
    )
    .unwrap();
    dir
}

pub fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}
