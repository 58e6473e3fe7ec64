//! The routes clients call besides `/embed`: TEI's `/`, `/similarity`, `/embed_all`, `/decode`
//! and `truncation_direction`; OpenAI's `/v1/models`; the OpenAPI document, which lists every
//! route the router serves. On the tiny synthetic model (each of its words is one token).

mod support;

use hipinfer::backend::CpuBackend;
use hipinfer::engine::{EngineConfig, InferenceEngine};
use hipinfer::server::ServerConfig;
use serde_json::{json, Value};
use support::server::Server;
use support::tiny_model;

fn engine(name: &str) -> InferenceEngine {
    let config = EngineConfig::builder()
        .model(tiny_model::write(name))
        .seed(5)
        .build()
        .unwrap();
    InferenceEngine::with_backend(config, CpuBackend::with_threads(1).unwrap()).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn close(a: &[f32], b: &[f32], tolerance: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_route_embeds_texts_and_compares_sentences_as_tei_does() {
    let server = Server::start(engine("routes-root"), ServerConfig::default()).await;
    let (status, embedded) = server
        .post("/embed", &json!({"inputs": ["hello world", "rust"]}))
        .await;
    assert_eq!(status, 200);
    for inputs in [json!("hello world"), json!(["hello world", "rust"])] {
        let (status, body) = server.post("/", &json!({"inputs": inputs})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(floats(&body[0]), floats(&embedded[0]));
    }
    let question = json!({"inputs": {"source_sentence": "hello world",
                                     "sentences": ["hello world", "rust is fast", "world"]}});
    let (status, scores) = server.post("/similarity", &question).await;
    assert_eq!(status, 200, "{scores}");
    let scores = floats(&scores);
    assert_eq!(scores.len(), 3);
    assert!(
        (scores[0] - 1.0).abs() < 1e-5,
        "a sentence is itself: {scores:?}"
    );
    // The cosine of the embeddings /embed gives.
    let (_, all) = server
        .post(
            "/embed",
            &json!({"inputs": ["hello world", "rust is fast"]}),
        )
        .await;
    let cosine: f32 = floats(&all[0])
        .iter()
        .zip(floats(&all[1]))
        .map(|(a, b)| a * b)
        .sum();
    assert!((scores[1] - cosine).abs() < 1e-5);
    let (status, same) = server.post("/", &question).await;
    assert_eq!(status, 200);
    assert_eq!(floats(&same), scores);

    for (body, names) in [
        (
            json!({"inputs": 5}),
            "\"inputs\" must be a string or an array of strings (embeddings), or an object",
        ),
        (
            json!({"inputs": {"source_sentence": 1, "sentences": []}}),
            "\"inputs.source_sentence\" must be a string",
        ),
        (
            json!({"inputs": {"source_sentence": "a", "sentences": "b"}}),
            "\"inputs.sentences\" must be an array of strings",
        ),
        (json!({"text": "a"}), "\"inputs\" must be"),
    ] {
        let (status, error) = server.post("/", &body).await;
        assert_eq!(status, 422, "{body}");
        assert!(error["error"].as_str().unwrap().contains(names), "{error}");
        assert_eq!(error["error_type"], "validation");
    }
    let (status, error) = server
        .post(
            "/similarity",
            &json!({"inputs": {"source_sentence": "a", "sentences": []}}),
        )
        .await;
    assert_eq!((status, error["error_type"].as_str()), (400, Some("empty")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_all_gives_every_tokens_hidden_state_whose_mean_is_the_embedding() {
    let server = Server::start(engine("routes-embed-all"), ServerConfig::default()).await;
    let (status, tokens) = server
        .post(
            "/embed_all",
            &json!({"inputs": ["hello world", "rust is fast !"]}),
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let first = tokens[0].as_array().unwrap();
    assert_eq!(first.len(), 4, "[CLS] hello world [SEP]");
    assert_eq!(tokens[1].as_array().unwrap().len(), 6);
    let width = floats(&first[0]).len();
    assert_eq!(width, 8, "the tiny model's hidden size");
    // Mean pooling of the token states is the unnormalised embedding.
    let (_, pooled) = server
        .post(
            "/embed",
            &json!({"inputs": "hello world", "normalize": false}),
        )
        .await;
    let mut mean = vec![0.0f32; width];
    for token in first {
        for (m, v) in mean.iter_mut().zip(floats(token)) {
            *m += v / first.len() as f32;
        }
    }
    assert!(
        close(&mean, &floats(&pooled[0]), 1e-5),
        "{mean:?} vs {pooled}"
    );
    let (status, error) = server.post("/embed_all", &json!({"inputs": [1]})).await;
    assert_eq!(status, 422, "{error}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_turns_token_ids_back_into_text() {
    let server = Server::start(engine("routes-decode"), ServerConfig::default()).await;
    let (_, tokens) = server
        .post("/tokenize", &json!({"inputs": "hello world !"}))
        .await;
    let ids: Vec<u64> = tokens[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let (status, texts) = server.post("/decode", &json!({"ids": ids})).await;
    assert_eq!(status, 200, "{texts}");
    assert_eq!(texts, json!(["hello world !"]));
    let (status, texts) = server
        .post(
            "/decode",
            &json!({"ids": [ids.clone(), [4]], "skip_special_tokens": false}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(texts, json!(["[CLS] hello world ! [SEP]", "hello"]));
    let (status, error) = server.post("/decode", &json!({"ids": [4, 99999]})).await;
    assert_eq!(status, 422);
    assert!(
        error["error"].as_str().unwrap().contains("99999"),
        "{error}"
    );
    let (status, error) = server.post("/decode", &json!({"ids": "4"})).await;
    assert_eq!(status, 422);
    assert!(
        error["error"].as_str().unwrap().contains("\"ids\""),
        "{error}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_direction_keeps_the_end_it_names_at_the_boundary() {
    let server = Server::start(engine("routes-direction"), ServerConfig::default()).await;
    // Twelve tokens fit (ten words with [CLS] and [SEP]); this text has fourteen words.
    let words = "hello world rust is fast ! hello , world fast fast rust is world";
    let all: Vec<&str> = words.split(' ').collect();
    let first = all[..10].join(" ");
    let last = all[all.len() - 10..].join(" ");
    let embed = |body: Value| {
        let server = &server;
        async move { server.post("/embed", &body).await }
    };
    let (_, right) = embed(json!({"inputs": words})).await;
    let (_, right_named) = embed(json!({"inputs": words, "truncation_direction": "Right"})).await;
    let (_, left) = embed(json!({"inputs": words, "truncation_direction": "left"})).await;
    let (_, head) = embed(json!({"inputs": first})).await;
    let (_, tail) = embed(json!({"inputs": last})).await;
    assert_eq!(floats(&right[0]), floats(&head[0]), "right keeps the start");
    assert_eq!(floats(&right_named[0]), floats(&head[0]));
    assert_eq!(floats(&left[0]), floats(&tail[0]), "left keeps the end");
    assert_ne!(floats(&left[0]), floats(&right[0]));
    // Exactly at the boundary nothing is cut either way.
    let (_, exact_left) = embed(json!({"inputs": first, "truncation_direction": "left"})).await;
    assert_eq!(floats(&exact_left[0]), floats(&head[0]));
    for route in ["/", "/embed_all", "/similarity"] {
        let body = if route == "/similarity" {
            json!({"inputs": {"source_sentence": words, "sentences": [last]}, "truncation_direction": "left"})
        } else {
            json!({"inputs": words, "truncation_direction": "left"})
        };
        let (status, answer) = server.post(route, &body).await;
        assert_eq!(status, 200, "{route}: {answer}");
    }
    let (_, similar) = server
        .post(
            "/similarity",
            &json!({"inputs": {"source_sentence": words, "sentences": [last]}, "truncation_direction": "left"}),
        )
        .await;
    assert!((floats(&similar)[0] - 1.0).abs() < 1e-5, "{similar}");
    let (status, error) = embed(json!({"inputs": words, "truncation_direction": "middle"})).await;
    assert_eq!(status, 422);
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("\"right\" or \"left\""));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_lists_the_served_model_and_refuses_others_in_its_schema() {
    let engine = engine("routes-models");
    let id = engine.model().name().to_string();
    let server = Server::start(engine, ServerConfig::default()).await;
    let (status, list) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["data"][0]["object"], "model");
    assert_eq!(list["data"][0]["owned_by"], "hipinfer");
    assert!(list["data"][0]["created"].as_u64().unwrap() > 1_700_000_000);
    let (status, card) = server.get(&format!("/v1/models/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&card).unwrap()["id"],
        id.as_str()
    );
    let (status, missing) = server.get("/v1/models/gpt-4").await;
    assert_eq!(status, 404);
    let missing: Value = serde_json::from_str(&missing).unwrap();
    assert_eq!(missing["error"]["code"], "model_not_found");
    assert_eq!(missing["error"]["type"], "invalid_request_error");
    // The model field: absent, the id, or an organisation's repository id ending in it.
    for model in [
        json!(null),
        json!(id),
        json!(format!("sentence-transformers/{id}")),
    ] {
        let (status, body) = server
            .post("/v1/embeddings", &json!({"input": "hello", "model": model}))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    let (status, error) = server
        .post(
            "/v1/embeddings",
            &json!({"input": "hello", "model": "text-embedding-3-small"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "model_not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_the_router_serves() {
    let engine = engine("routes-openapi");
    let id = engine.model().name().to_string();
    let server = Server::start(engine, ServerConfig::default()).await;
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&document).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let expected = [
        "GET /health",
        "GET /info",
        "GET /livez",
        "GET /metrics",
        "GET /openapi.json",
        "GET /readyz",
        "GET /v1/models",
        "GET /v1/models/{id}",
        "POST /",
        "POST /decode",
        "POST /embed",
        "POST /embed_all",
        "POST /similarity",
        "POST /tokenize",
        "POST /v1/embeddings",
    ];
    assert_eq!(documented, expected);
    // Each documented operation is served (neither 404 nor 405): the document is the router's.
    for operation in &documented {
        let (method, path) = operation.split_once(' ').unwrap();
        let url = format!("{}{}", server.base, path.replace("{id}", &id));
        let response = match method {
            "GET" => server.client.get(url).send().await.unwrap(),
            _ => server
                .client
                .post(url)
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        };
        let status = response.status().as_u16();
        assert!(status != 404 && status != 405, "{operation}: {status}");
    }
    // And a route it does not list is not served.
    let (status, _) = server.get("/docs").await;
    assert_eq!(status, 404);
    // Every request body and answer type is described.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for name in [
        "EmbedBody",
        "OpenAiBody",
        "SimilarityBody",
        "DecodeBody",
        "TeiError",
        "OpenAiError",
        "ModelList",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    server.stop().await;
}
