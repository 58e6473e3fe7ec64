//! Bad model folders and inputs: each is a clear error naming the file or tensor, never a panic.
//! Runs on a tiny synthetic model, so it needs no download.

mod support;

use std::sync::Arc;

use hipinfer::backend::CpuBackend;
use hipinfer::model::{Embedder, Model, ModelError};
use support::tiny_model;

fn load_error(dir: &std::path::Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn the_tiny_model_loads_and_embeds() {
    let dir = tiny_model::write("ok");
    let model = Arc::new(Model::load(&dir).unwrap());
    assert_eq!(model.dimensions(), tiny_model::HIDDEN);
    assert_eq!(model.config().max_seq_length, 12);
    let embedder = Embedder::new(model, CpuBackend::with_threads(2).unwrap()).unwrap();
    let texts = ["hello world!", "rust is fast, hello", ""];
    let batch = embedder.embed(&texts, true).unwrap();
    assert_eq!(batch.len(), 3);
    for (text, embedding) in texts.iter().zip(&batch) {
        assert_eq!(embedding.len(), tiny_model::HIDDEN);
        let norm: f32 = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?} norm {norm}");
        let alone = embedder.embed(&[text], true).unwrap();
        let diff = alone[0]
            .iter()
            .zip(embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff <= 1e-6, "{text:?}: batch and alone differ by {diff}");
    }
    // The file's fixed padding (12) is off and truncation is at max_seq_length (12).
    let ids = embedder.model().tokenize(&["hello"]).unwrap();
    assert_eq!(ids[0].ids, [2, 4, 3]);
    let long = "hello ".repeat(40);
    let ids = embedder.model().tokenize(&[long.as_str()]).unwrap();
    assert_eq!(ids[0].ids.len(), 12);
    assert_eq!(*ids[0].ids.last().unwrap(), 3, "[SEP] is kept at the end");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bert_prefix_on_tensor_names_is_accepted() {
    let dir = tiny_model::write("prefix");
    std::fs::write(
        dir.join("model.safetensors"),
        tiny_model::safetensors_bytes(&tiny_model::tensors(), "bert."),
    )
    .unwrap();
    let model = Arc::new(Model::load(&dir).unwrap());
    let embedder = Embedder::new(model, CpuBackend::with_threads(1).unwrap()).unwrap();
    assert_eq!(
        embedder.embed(&["hello"], false).unwrap()[0].len(),
        tiny_model::HIDDEN
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_folder_and_files() {
    let error = load_error(std::path::Path::new("/nonexistent/model"));
    assert!(
        error.contains("/nonexistent/model") && error.contains("is not a folder"),
        "{error}"
    );
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let dir = tiny_model::write(&format!("missing-{file}"));
        std::fs::remove_file(dir.join(file)).unwrap();
        let error = load_error(&dir);
        assert!(error.contains(&format!("has no {file}")), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn corrupt_safetensors_names_the_file() {
    let dir = tiny_model::write("corrupt");
    let path = dir.join("model.safetensors");
    let whole = std::fs::read(&path).unwrap();
    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("truncated header", whole[..20].to_vec()),
        (
            "wrong header",
            b"this is not a safetensors file at all".to_vec(),
        ),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let error = load_error(&dir);
        assert!(
            error.contains("model.safetensors") && error.contains("not a valid safetensors file"),
            "{what}: {error}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_wrong_tensor_is_named() {
    let dir = tiny_model::write("tensor");
    let path = dir.join("model.safetensors");
    let mut tensors = tiny_model::tensors();
    tensors[0].1 = vec![tiny_model::VOCAB.len(), 7];
    std::fs::write(&path, tiny_model::safetensors_bytes(&tensors, "")).unwrap();
    let error = load_error(&dir);
    assert!(
        error.contains("embeddings.word_embeddings.weight")
            && error.contains("[11, 7]")
            && error.contains("[11, 8]"),
        "{error}"
    );

    let tensors: Vec<_> = tiny_model::tensors()
        .into_iter()
        .filter(|(n, _)| !n.contains("intermediate.dense.bias"))
        .collect();
    std::fs::write(&path, tiny_model::safetensors_bytes(&tensors, "")).unwrap();
    let error = load_error(&dir);
    assert!(
        error.contains("encoder.layer.0.intermediate.dense.bias") && error.contains("missing"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unsupported_or_invalid_config_is_named() {
    let dir = tiny_model::write("config");
    let path = dir.join("config.json");
    for (key, value, expect) in [
        (
            "model_type",
            serde_json::json!("gpt2"),
            "unsupported model_type \"gpt2\"",
        ),
        (
            "hidden_act",
            serde_json::json!("relu"),
            "unsupported hidden_act \"relu\"",
        ),
        (
            "num_attention_heads",
            serde_json::json!(3),
            "not a multiple of num_attention_heads",
        ),
        ("hidden_size", serde_json::json!("big"), "invalid JSON"),
    ] {
        let mut config = tiny_model::config_json();
        config[key] = value;
        tiny_model::write_json(&path, &config);
        let error = load_error(&dir);
        assert!(
            error.contains("config.json") && error.contains(expect),
            "{key}: {error}"
        );
    }
    std::fs::write(&path, "{ not json").unwrap();
    assert!(load_error(&dir).contains("invalid JSON"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn invalid_tokenizer_is_named() {
    let dir = tiny_model::write("tokenizer");
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"model": {"type": "NoSuchModel"}}"#,
    )
    .unwrap();
    let error = load_error(&dir);
    assert!(
        error.contains("tokenizer.json") && error.contains("invalid tokenizer"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unsupported_pooling_and_bad_max_length_are_named() {
    let dir = tiny_model::write("pooling");
    tiny_model::write_json(
        &dir.join("1_Pooling/config.json"),
        &serde_json::json!({"pooling_mode_cls_token": true}),
    );
    let error = load_error(&dir);
    assert!(
        error.contains("1_Pooling") && error.contains("mean pooling"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = tiny_model::write("max-length");
    tiny_model::write_json(
        &dir.join("sentence_bert_config.json"),
        &serde_json::json!({"max_seq_length": 4096}),
    );
    let error = load_error(&dir);
    assert!(
        error.contains("sentence_bert_config.json") && error.contains("4096"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn model_errors_are_send_sync() {
    fn check<T: Send + Sync + std::error::Error>() {}
    check::<ModelError>();
    fn shared<T: Send + Sync>() {}
    shared::<Embedder<CpuBackend>>();
}

#[test]
fn a_model_loaded_for_inference_needs_no_tokenizer_and_says_so_when_asked() {
    let dir = tiny_model::write("inference-only");
    let full = Model::load(&dir).unwrap();
    let encodings = full.tokenize(&["hello world!", "rust is fast"]).unwrap();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(load_error(&dir).contains("has no tokenizer.json"));

    let model = Arc::new(Model::load_for_inference(&dir).unwrap());
    let error = model.tokenize(&["hello"]).unwrap_err().to_string();
    assert!(error.contains("tokenizer.json"), "{error}");
    // Token ids from elsewhere (a worker's supervisor) run the same.
    let cpu = || CpuBackend::with_threads(2).unwrap();
    let worker = Embedder::new(model, cpu()).unwrap();
    let reference = Embedder::new(Arc::new(full), cpu()).unwrap();
    assert_eq!(
        worker.embed_encodings(&encodings, true).unwrap(),
        reference.embed_encodings(&encodings, true).unwrap()
    );
    std::fs::remove_dir_all(dir).unwrap();
}
