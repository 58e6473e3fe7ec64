//! The HTTP server over a real socket on 127.0.0.1 (a free port per test), on the tiny synthetic
//! model: both embedding schemas, tokenize, info, health, metrics; every error status from a
//! real request; 64 concurrent clients under injected faults with exact retry accounting;
//! graceful shutdown draining a request in flight.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hipinfer::backend::{CpuBackend, FaultyBackend};
use hipinfer::chaos::fault_plan;
use hipinfer::engine::{EngineConfig, InferenceEngine};
use hipinfer::retry::{BudgetConfig, Jitter, RetryConfig};
use hipinfer::server::ServerConfig;
use hipinfer::{Op, Recovery};
use serde_json::{json, Value};
use support::gate::gated_engine;
use support::server::Server;
use support::{sample, tiny_model};

fn config(name: &str) -> EngineConfig {
    EngineConfig::builder()
        .model(tiny_model::write(name))
        .retry(
            RetryConfig::new()
                .with_jitter(Jitter::None)
                .with_initial_delay(Duration::from_micros(20))
                .with_max_delay(Duration::from_micros(200)),
        )
        .budget(BudgetConfig::unlimited())
        .seed(5)
        .build()
        .unwrap()
}

fn cpu() -> CpuBackend {
    CpuBackend::with_threads(2).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_and_openai_embeddings_tokenize_info_health_metrics() {
    let engine = InferenceEngine::with_backend(config("server-api"), cpu()).unwrap();
    let expected = engine
        .embed(&["hello world", "rust is fast"])
        .unwrap()
        .embeddings;
    let server = Server::start(engine, ServerConfig::default()).await;

    let (status, body) = server
        .post("/embed", &json!({"inputs": "hello world"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(floats(&body[0]), expected[0]);
    let (status, body) = server
        .post(
            "/embed",
            &json!({"inputs": ["hello world", "rust is fast"], "normalize": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(floats(&body[1]), expected[1]);

    let (_, info) = server.get("/info").await;
    let served: Value = serde_json::from_str(&info).unwrap();
    let served = served["model_id"].as_str().unwrap().to_string();
    let (status, body) = server
        .post(
            "/v1/embeddings",
            &json!({"input": ["hello world", "rust is fast"], "model": served}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], served.as_str());
    let (status, error) = server
        .post(
            "/v1/embeddings",
            &json!({"input": "hello", "model": "mini"}),
        )
        .await;
    assert_eq!(status, 404, "another model's name: {error}");
    assert_eq!(error["error"]["code"], "model_not_found");
    assert_eq!(body["data"][1]["object"], "embedding");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(floats(&body["data"][1]["embedding"]), expected[1]);
    assert_eq!(body["usage"]["prompt_tokens"], 9); // 4 + 5 tokens
    assert_eq!(body["usage"]["total_tokens"], 9);

    let (status, body) = server
        .post(
            "/v1/embeddings",
            &json!({"input": "hello world", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, expected[0]);

    let (status, body) = server
        .post("/tokenize", &json!({"inputs": "hello world"}))
        .await;
    assert_eq!(status, 200);
    let ids: Vec<u64> = body[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 4, 5, 3]);
    assert_eq!(body[0][1]["text"], "hello");
    assert_eq!(body[0][0]["special"], true);
    let (_, body) = server
        .post(
            "/tokenize",
            &json!({"inputs": ["hello"], "add_special_tokens": false}),
        )
        .await;
    assert_eq!(body[0].as_array().unwrap().len(), 1);

    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["backend"], "cpu");
    assert_eq!(info["max_input_length"], 12);
    assert_eq!(info["dimensions"], tiny_model::HIDDEN);
    assert_eq!(info["max_batch_tokens"], 16384);

    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("closed"));

    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&metrics, "hipinfer_request_success_total"),
        Some(5.0)
    );
    assert!(metrics.contains("# TYPE hipinfer_gpu_retry_attempts_total counter"));
    assert!(metrics.contains("hipinfer_request_duration_seconds_bucket"));
    assert!(metrics.contains("hipinfer_circuit_breaker_state{device=\"0\"} 0"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status_from_a_real_request() {
    let engine = InferenceEngine::with_backend(config("server-errors"), cpu()).unwrap();
    let server = Server::start(engine, ServerConfig::default()).await;

    for body in [
        json!({"inputs": []}),
        json!({"inputs": ""}),
        json!({"inputs": ["hello", ""]}),
    ] {
        let (status, error) = server.post("/embed", &body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["error_type"], "empty");
    }
    let big = vec![b'a'; 3 * 1024 * 1024];
    let mut body = b"{\"inputs\": \"".to_vec();
    body.extend(&big);
    body.extend(b"\"}");
    let (status, error) = server.post_raw("/embed", body).await;
    assert_eq!(status, 413);
    assert_eq!(error["error_type"], "payload_too_large");

    let (status, error) = server
        .post_raw("/embed", b"{\"inputs\": [\"hello\"".to_vec())
        .await;
    assert_eq!(status, 422);
    assert!(
        error["error"].as_str().unwrap().contains("malformed JSON"),
        "{error}"
    );
    for wrong in [
        json!({"inputs": 5}),
        json!({"text": "hello"}),
        json!({"inputs": "a", "normalize": "yes"}),
    ] {
        let (status, error) = server.post("/embed", &wrong).await;
        assert_eq!(status, 422, "{wrong}");
        assert_eq!(error["error_type"], "validation");
    }
    let long = "hello world ".repeat(10);
    let (status, error) = server
        .post("/embed", &json!({"inputs": long, "truncate": false}))
        .await;
    assert_eq!(status, 422);
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("max_input_length 12"));
    let (status, _) = server
        .post("/embed", &json!({"inputs": long, "truncate": true}))
        .await;
    assert_eq!(status, 200);
    let (status, error) = server
        .post("/embed", &json!({"inputs": "hi", "dimensions": 3}))
        .await;
    assert_eq!(status, 422, "{error}");

    // OpenAI's shape for OpenAI's route.
    let (status, error) = server.post("/v1/embeddings", &json!({"input": []})).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "empty");
    let (status, error) = server
        .post(
            "/v1/embeddings",
            &json!({"input": "hi", "encoding_format": "int8"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(error["error"]["message"].as_str().unwrap().contains("int8"));

    let (status, body) = server.get("/nowhere").await;
    assert_eq!(status, 404, "{body}");

    // Refusals by the server count as the engine's own do: 13 requests, one success.
    let (_, text) = server.get("/metrics").await;
    let failures = |reason: &str| {
        sample(
            &text,
            &format!("hipinfer_request_failure_total{{reason=\"{reason}\"}}"),
        )
        .unwrap()
    };
    assert_eq!(failures("empty"), 4.0, "{text}");
    assert_eq!(failures("payload_too_large"), 1.0);
    assert_eq!(failures("validation"), 7.0);
    assert_eq!(sample(&text, "hipinfer_requests_total"), Some(13.0));
    assert_eq!(sample(&text, "hipinfer_request_success_total"), Some(1.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failure_answers_424_in_each_schema_without_internal_text() {
    let mut config = config("server-424");
    config.step_replay.max_replays = 1;
    let backend = Arc::new(FaultyBackend::passthrough(cpu()));
    backend.poison_token(8, 700); // every step holding "rust" hits an illegal address
    let engine = InferenceEngine::with_backend(config, backend.clone()).unwrap();
    let server = Server::start(engine, ServerConfig::default()).await;

    let (status, error) = server.post("/embed", &json!({"inputs": "rust"})).await;
    assert_eq!(status, 424, "{error}");
    assert_eq!(error["error_type"], "backend");
    let message = error["error"].as_str().unwrap();
    assert!(message.contains("hipErrorIllegalAddress"), "{message}");
    let (status, error) = server
        .post("/v1/embeddings", &json!({"input": ["hello", "rust"]}))
        .await;
    assert_eq!(status, 424, "{error}");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(error["error"]["code"], "backend");
    // The server serves on: other inputs still get answers.
    let (status, _) = server.post("/embed", &json!({"inputs": "hello"})).await;
    assert_eq!(status, 200);
    let (_, text) = server.get("/metrics").await;
    assert_eq!(
        sample(&text, "hipinfer_request_failure_total{reason=\"backend\"}"),
        Some(2.0),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_429_while_the_limit_is_held() {
    let mut config = config("server-overload");
    config.batching.max_concurrent_requests = 1;
    let (engine, gate) = gated_engine(config);
    let server = Arc::new(Server::start(engine.clone(), ServerConfig::default()).await);
    let held = {
        let server = server.clone();
        tokio::spawn(async move { server.post("/embed", &json!({"inputs": "hello"})).await })
    };
    while engine.in_flight() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (status, error) = server.post("/embed", &json!({"inputs": "world"})).await;
    assert_eq!(status, 429);
    assert_eq!(error["error_type"], "overloaded");
    let (status, error) = server
        .post("/v1/embeddings", &json!({"input": "world"}))
        .await;
    assert_eq!(status, 429);
    assert_eq!(error["error"]["type"], "rate_limit_error");
    gate.open();
    assert_eq!(held.await.unwrap().0, 200);
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_every_route_but_health_and_metrics() {
    let engine = InferenceEngine::with_backend(config("server-key"), cpu()).unwrap();
    let server = Server::start(
        engine,
        ServerConfig {
            api_key: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    let url = format!("{}/embed", server.base);
    let body = json!({"inputs": "hello"});
    let missing = server.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    let error: Value = missing.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("missing API key"));
    let wrong = server
        .client
        .post(&url)
        .bearer_auth("guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = server
        .client
        .post(&url)
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    let info = server
        .client
        .get(format!("{}/info", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status().as_u16(), 401);
    assert_eq!(server.get("/health").await.0, 200);
    assert_eq!(server.get("/metrics").await.0, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_under_faults_get_every_answer_right_and_the_metrics_add_up() {
    let config = config("server-faults");
    let reference = InferenceEngine::with_backend(config.clone(), cpu()).unwrap();
    let texts = [
        "hello world",
        "rust is fast",
        "hello , rust !",
        "world",
        "fast fast fast",
        "is it ?",
    ];
    let expected: Vec<Vec<f32>> = reference.embed(&texts).unwrap().embeddings;
    drop(reference);

    let backend = Arc::new(FaultyBackend::new(cpu(), fault_plan(11, 0.05, 0.01, 0.005)));
    let engine = InferenceEngine::with_backend(config, backend.clone()).unwrap();
    let server = Arc::new(Server::start(engine.clone(), ServerConfig::default()).await);
    let clients: Vec<_> = (0..64)
        .map(|client| {
            let (server, texts, expected) = (server.clone(), texts, expected.clone());
            tokio::spawn(async move {
                let mut answered = 0;
                for i in 0..50 {
                    let k = (client * 7 + i) % texts.len();
                    let (status, body) = server.post("/embed", &json!({"inputs": texts[k]})).await;
                    assert_eq!(status, 200, "{body}");
                    let got = floats(&body[0]);
                    let worst = got
                        .iter()
                        .zip(&expected[k])
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(worst <= 1e-6, "client {client} request {i}: off by {worst}");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for c in clients {
        answered += c.await.unwrap();
    }
    assert_eq!(answered, 64 * 50, "none lost, none duplicated");

    let (_, metrics) = server.get("/metrics").await;
    assert_eq!(
        sample(&metrics, "hipinfer_request_success_total"),
        Some(3200.0)
    );
    // Every error the injector returned is counted, by operation and HIP name.
    for op in [
        Op::Allocate,
        Op::CopyHostToDevice,
        Op::CopyDeviceToHost,
        Op::Launch,
        Op::Synchronize,
    ] {
        for (code, name) in [
            (304, "hipErrorOperatingSystem"),
            (2, "hipErrorOutOfMemory"),
            (700, "hipErrorIllegalAddress"),
        ] {
            let series = format!("hipinfer_gpu_errors_total{{code=\"{name}\",op=\"{op}\"}}");
            let counted = sample(&metrics, &series).unwrap_or(0.0) as u64;
            assert_eq!(counted, backend.returned(op, code), "{series}");
        }
    }
    assert!(backend.injected(304) > 0 && backend.injected(2) > 0 && backend.injected(700) > 0);
    // Each error returned was either retried (one attempt) or given up on (one give-up, by
    // reason): the retry counters add up to the injector's count.
    let attempts = support::sum_of(&metrics, "hipinfer_gpu_retry_attempts_total");
    let given_up = support::sum_of(&metrics, "hipinfer_gpu_retry_failed_total");
    assert_eq!(
        attempts + given_up,
        backend.returned_total() as f64,
        "{metrics}"
    );
    assert!(attempts > 0.0 && given_up > 0.0);
    let replays: f64 = ["reset", "retry", "reclaim", "probe", "fatal"]
        .iter()
        .filter_map(|c| {
            sample(
                &metrics,
                &format!("hipinfer_step_replays_total{{class=\"{c}\"}}"),
            )
        })
        .sum();
    assert!(replays >= 1.0);
    assert_eq!(
        engine.retry_state().metrics().unwrap().errors_total(),
        backend.returned_total()
    );
    assert_eq!(
        Recovery::Reset,
        hipinfer::HipError::new(700, Op::Launch).recovery()
    );
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_requests_in_flight() {
    let (engine, gate) = gated_engine(config("server-drain"));
    let server = Server::start(engine.clone(), ServerConfig::default()).await;
    let (client, base) = (server.client.clone(), server.base.clone());
    let in_flight = tokio::spawn(async move {
        client
            .post(format!("{base}/embed"))
            .json(&json!({"inputs": "hello world"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    while engine.in_flight() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !stopping.is_finished(),
        "the server waits for the request in flight"
    );
    gate.open();
    assert_eq!(in_flight.await.unwrap(), 200);
    stopping.await.unwrap();
    assert!(
        !engine.health().ready,
        "the engine was shut down with the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_needed_retries_carries_its_retry_report() {
    let backend = Arc::new(FaultyBackend::passthrough(cpu()));
    let engine = InferenceEngine::with_backend(config("server-report"), backend.clone()).unwrap();
    let server = Server::start(engine, ServerConfig::default()).await;
    let plain = server
        .client
        .post(format!("{}/embed", server.base))
        .json(&json!({"inputs": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.headers()["x-hipinfer-retries"], "0");
    assert!(plain.headers().get("x-hipinfer-retry-report").is_none());

    backend.script(Op::Launch, 304, 2); // the next two launches fail with a transient error
    let retried = server
        .client
        .post(format!("{}/v1/embeddings", server.base))
        .json(&json!({"input": "hello world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.headers()["x-hipinfer-retries"], "2");
    let report: Value = serde_json::from_str(
        retried.headers()["x-hipinfer-retry-report"]
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["retries"], 2, "{report}");
    let history = report["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{report}");
    assert_eq!(history[0]["code"], 304);
    assert_eq!(history[0]["op"], "launch");

    // A long history keeps its newest records within 2 KB (proxies refuse large headers).
    backend.script(Op::Launch, 2, 14); // out of memory, again and again
    let long = server
        .client
        .post(format!("{}/embed", server.base))
        .json(&json!({"inputs": "hello world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    let header = long.headers()["x-hipinfer-retry-report"].to_str().unwrap();
    assert!(header.len() <= 2048, "{} bytes", header.len());
    let report: Value = serde_json::from_str(header).unwrap();
    let kept = report["history"].as_array().unwrap().len() as u64;
    let omitted = report["history_omitted"].as_u64().unwrap();
    assert!(kept > 0 && omitted > 0, "{report}");
    server.stop().await;
}

#[test]
fn the_shutdown_signal_can_be_made_outside_a_runtime() {
    // Its handlers are then installed when it is first polled, inside the server's runtime.
    let shutdown = hipinfer::server::shutdown_signal();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut shutdown = Box::pin(shutdown);
        let waited = tokio::time::timeout(Duration::from_millis(5), shutdown.as_mut()).await;
        assert!(waited.is_err(), "no signal came, so it is still waiting");
    });
}
