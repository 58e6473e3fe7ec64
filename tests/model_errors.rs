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

/// Token ids outside the vocabulary (a tokenizer that is not the model's) and token types outside
/// the model's are refused on the host, naming the input, the id and the vocabulary size, before
/// any device work — on a GPU they would be an out-of-bounds read of the embedding table.
#[test]
fn out_of_vocabulary_ids_are_refused_before_any_device_work() {
    use hipinfer::backend::{FaultPlan, FaultyBackend};
    use hipinfer::model::Encoding;
    let dir = tiny_model::write("bad-ids");
    let model = Arc::new(Model::load(&dir).unwrap());
    let vocab = model.config().bert.vocab_size as u32;
    let good = Encoding {
        ids: vec![2, 4, 3],
        type_ids: vec![0, 0, 0],
    };
    let bad_id = Encoding {
        ids: vec![2, vocab, 3],
        type_ids: vec![0, 0, 0],
    };
    let bad_type = Encoding {
        ids: vec![2, 4, 3],
        type_ids: vec![0, 7, 0],
    };
    let check = |result: Result<Vec<Vec<f32>>, ModelError>, needle: &str| {
        let error = result.unwrap_err();
        assert!(
            matches!(error, ModelError::Input { index: 1, .. }),
            "{error}"
        );
        assert!(error.to_string().contains(needle), "{error}");
        assert!(
            error.recovery().is_none(),
            "a bad input is not a device fault"
        );
    };
    let cpu = Embedder::new(model.clone(), CpuBackend::with_threads(1).unwrap()).unwrap();
    let vocab_text = format!("token id {vocab} at position 1 is outside the vocabulary of {vocab}");
    check(
        cpu.embed_encodings(&[good.clone(), bad_id.clone()], true),
        &vocab_text,
    );
    check(
        cpu.embed_encodings(&[good.clone(), bad_type.clone()], true),
        "token type 7",
    );
    // Through the fault backend with the next launch scripted to fault: the bad batch never
    // reaches it (the fault is still pending afterwards), the next good batch does.
    let faulty = FaultyBackend::new(CpuBackend::with_threads(1).unwrap(), FaultPlan::new(1));
    let embedder = Embedder::new(model, faulty).unwrap();
    embedder.backend().script(hipinfer::Op::Launch, 2, 1);
    check(
        embedder.embed_encodings(&[good.clone(), bad_id], true),
        &vocab_text,
    );
    assert_eq!(embedder.backend().injected(2), 0, "no launch was made");
    assert!(embedder
        .embed_encodings(std::slice::from_ref(&good), true)
        .is_err());
    assert_eq!(embedder.backend().injected(2), 1);
    assert_eq!(embedder.embed_encodings(&[good], true).unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A `model.safetensors` stored as F16 or BF16 (as many Hugging Face models ship) loads: every
/// value widens to exactly the f32 of its half, and the embeddings stay next to the F32 model's.
/// Another dtype is refused naming the tensor and the dtypes accepted.
#[test]
fn half_precision_weights_load_widened_exactly() {
    use safetensors::tensor::TensorView;
    use safetensors::{Dtype, SafeTensors};
    let dir = tiny_model::write("half-source");
    let reference = Embedder::new(
        Arc::new(Model::load(&dir).unwrap()),
        CpuBackend::with_threads(1).unwrap(),
    )
    .unwrap();
    let texts = ["hello world!", "rust is fast, hello"];
    let expected = reference.embed(&texts, true).unwrap();
    let original = std::fs::read(dir.join("model.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&original).unwrap();
    for (dtype, narrow) in [
        (
            Dtype::F16,
            (|v: f32| half::f16::from_f32(v).to_bits()) as fn(f32) -> u16,
        ),
        (Dtype::BF16, |v: f32| half::bf16::from_f32(v).to_bits()),
        (Dtype::I32, |v: f32| v as u16),
    ] {
        let converted: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = tensors
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                if view.dtype() != Dtype::F32 {
                    return (
                        name,
                        view.shape().to_vec(),
                        view.data().to_vec(),
                        view.dtype(),
                    );
                }
                let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
                let mut bytes: Vec<u8> = values
                    .iter()
                    .flat_map(|&v| narrow(v).to_le_bytes())
                    .collect();
                if dtype == Dtype::I32 {
                    bytes = values
                        .iter()
                        .flat_map(|&v| (v as i32).to_le_bytes())
                        .collect();
                }
                (name, view.shape().to_vec(), bytes, dtype)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = converted
            .iter()
            .map(|(name, shape, bytes, dtype)| {
                (
                    name.clone(),
                    TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        let half_dir = tiny_model::write(&format!("half-{dtype:?}"));
        std::fs::write(
            half_dir.join("model.safetensors"),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        if dtype == Dtype::I32 {
            let error = load_error(&half_dir);
            assert!(error.contains("expected F32, F16 or BF16"), "{error}");
            assert!(error.contains("embeddings."), "names the tensor: {error}");
            std::fs::remove_dir_all(half_dir).unwrap();
            continue;
        }
        let model = Arc::new(Model::load(&half_dir).unwrap());
        let name = "encoder.layer.0.output.dense.weight";
        let widened = model.weights().f32(name).unwrap();
        let source: Vec<f32> = bytemuck::pod_collect_to_vec(tensors.tensor(name).unwrap().data());
        for (w, s) in widened.iter().zip(&source) {
            let back = match dtype {
                Dtype::F16 => half::f16::from_f32(*s).to_f32(),
                _ => half::bf16::from_f32(*s).to_f32(),
            };
            assert_eq!(w.to_bits(), back.to_bits(), "{dtype:?}");
        }
        let embedder = Embedder::new(model, CpuBackend::with_threads(1).unwrap()).unwrap();
        for (got, want) in embedder.embed(&texts, true).unwrap().iter().zip(&expected) {
            let cosine: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
            assert!(cosine > 0.999, "{dtype:?}: cosine {cosine}");
        }
        std::fs::remove_dir_all(half_dir).unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}
