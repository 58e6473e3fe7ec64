//! The server under abuse, over real sockets: connections that send half their headers, stop
//! their bodies short or idle are closed at their timeouts; a flood past the connection cap
//! leaves `/health` and `/embed` answering; a client that leaves has its inputs dropped before
//! any step; SIGTERM with a long queue answers everything within the grace period; and the
//! small leaks and refusals of the issue each have their answer.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hipinfer::backend::{CpuBackend, FaultyBackend};
use hipinfer::engine::{EngineConfig, InferenceEngine};
use hipinfer::server::{serve_on, ConnectionLimits, ServerConfig};
use serde_json::{json, Value};
use support::gate::{gated_engine, Gate, Gated};
use support::server::Server;
use support::{sample, scrape, tiny_model};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(name: &str) -> EngineConfig {
    EngineConfig::builder()
        .model(tiny_model::write(name))
        .seed(5)
        .build()
        .unwrap()
}

fn cpu() -> CpuBackend {
    CpuBackend::with_threads(1).unwrap()
}

fn limits(header: u64, body: u64, idle: u64, max: usize) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_millis(header),
        body_timeout: Duration::from_millis(body),
        idle_timeout: Duration::from_millis(idle),
        max_connections: max,
        ..ConnectionLimits::default()
    }
}

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes (or `limit` passes): what it sent, and whether it closed.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut all = Vec::new();
    let mut buffer = [0u8; 4096];
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&all).into(), true),
            Ok(Ok(n)) => all.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&all).into(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_idle_connections_and_stalled_bodies_meet_their_timeouts() {
    let engine = InferenceEngine::with_backend(config("abuse-timeouts"), cpu()).unwrap();
    let registry = engine.registry().clone();
    let server = Server::start(
        engine,
        ServerConfig {
            connections: limits(150, 150, 300, 64),
            ..ServerConfig::default()
        },
    )
    .await;
    let at = address(&server);

    // Half a request: closed at the header timeout, nothing answered.
    let mut half = TcpStream::connect(&at).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut half, Duration::from_secs(5)).await;
    assert!(closed && answer.is_empty(), "{answer:?}");
    assert!(started.elapsed() >= Duration::from_millis(100));

    // A connection that says nothing at all: the same.
    let mut silent = TcpStream::connect(&at).await.unwrap();
    assert!(read_to_close(&mut silent, Duration::from_secs(5)).await.1);

    // A body that stops short of its Content-Length: 408 at the body timeout.
    let mut stalled = TcpStream::connect(&at).await.unwrap();
    stalled
        .write_all(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inputs\":")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut stalled, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error_type\":\"timeout\""), "{answer}");

    // A keep-alive connection idle after its answer: closed at the idle timeout.
    let mut idle = TcpStream::connect(&at).await.unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_to_close(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "closed once idle");

    let text = scrape(&registry);
    let count = |phase: &str| {
        sample(
            &text,
            &format!("hipinfer_connection_timeouts_total{{phase=\"{phase}\"}}"),
        )
        .unwrap()
    };
    assert_eq!(count("header"), 2.0, "{text}");
    assert_eq!(count("body"), 1.0);
    assert_eq!(count("idle"), 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_connection_cap_leaves_health_and_embed_answering() {
    let engine = InferenceEngine::with_backend(config("abuse-flood"), cpu()).unwrap();
    let registry = engine.registry().clone();
    // Long timeouts: only the cap protects the server here.
    let server = Server::start(
        engine,
        ServerConfig {
            connections: limits(60_000, 60_000, 60_000, 16),
            ..ServerConfig::default()
        },
    )
    .await;
    let at = address(&server);
    let mut flood = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(&at).await.unwrap();
        if i % 2 == 0 {
            // Half of them send half a request line and stop.
            let _ = stream.write_all(b"POST /emb").await;
        }
        flood.push(stream);
    }
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post("/embed", &json!({"inputs": "hello world"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.get("/livez").await;
    assert_eq!(status, 200);
    let text = scrape(&registry);
    let open = sample(&text, "hipinfer_connections_open").unwrap();
    assert!(open <= 16.0, "{text}");
    let evicted = sample(&text, "hipinfer_connections_evicted_total").unwrap();
    assert!(evicted >= 180.0, "idle ones made room: {evicted}");
    drop(flood);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_never_has_its_inputs_reach_a_step() {
    let config = config("abuse-dropped");
    // Every step holding "rust" (token 8) would hit a fault: if the dropped client's input
    // reached a step, the injector would count it.
    let faulty = Arc::new(FaultyBackend::passthrough(cpu()));
    faulty.poison_token(8, 700);
    let gate = Gate::closed();
    let engine = InferenceEngine::with_backend(
        config,
        Gated {
            inner: faulty.clone(),
            hooks: gate.clone(),
        },
    )
    .unwrap();
    let registry = engine.registry().clone();
    let server = Arc::new(Server::start(engine.clone(), ServerConfig::default()).await);
    let held = {
        let server = server.clone();
        tokio::spawn(async move { server.post("/embed", &json!({"inputs": "hello"})).await })
    };
    gate.wait_for_waiter();
    // The client posts its batch and goes away while it waits in the queue.
    let mut leaving = TcpStream::connect(address(&server)).await.unwrap();
    let body = json!({"inputs": ["rust is fast", "rust", "fast rust"]}).to_string();
    leaving
        .write_all(
            format!(
                "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    while engine.metrics().queue_size.get() < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(leaving);
    // Give the server the moment it takes to see the close.
    let until = Instant::now() + Duration::from_secs(5);
    while engine.in_flight() > 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gate.open();
    assert_eq!(held.await.unwrap().0, 200);
    let (status, _) = server.post("/embed", &json!({"inputs": "world"})).await;
    assert_eq!(status, 200);
    assert_eq!(faulty.injected(700), 0, "the dropped inputs never ran");
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "hipinfer_request_failure_total{reason=\"dropped\"}"),
        Some(1.0),
        "{text}"
    );
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_long_queue_answers_everything_within_the_grace_period() {
    let (engine, gate) = gated_engine(config("abuse-drain"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        listener,
        engine.clone(),
        ServerConfig {
            shutdown_grace: Duration::from_millis(300),
            ..ServerConfig::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/embed");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"inputs": format!("hello world {i}")}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    while engine.in_flight() < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The step in flight never finishes while the gate is closed: only the grace period ends it.
    let signalled = Instant::now();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after the signal");
    assert!(
        took < Duration::from_secs(6),
        "exited {took:?} after the signal"
    );
    let mut answered = std::collections::BTreeMap::new();
    for request in requests {
        let status = request.await.unwrap().unwrap();
        *answered.entry(status).or_insert(0) += 1;
    }
    assert_eq!(answered.values().sum::<i32>(), 20, "{answered:?}");
    assert!(
        answered.keys().all(|s| *s == 200 || *s == 503),
        "{answered:?}"
    );
    assert_eq!(engine.in_flight(), 0);
    gate.open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_wrong_in_json_terms_and_leak_nothing() {
    let engine = InferenceEngine::with_backend(config("abuse-messages"), cpu()).unwrap();
    let server = Server::start(
        engine,
        ServerConfig {
            api_key: Some("Key-1".into()),
            payload_limit: 1000,
            ..ServerConfig::default()
        },
    )
    .await;
    let post = |path: &'static str, body: Value, auth: &'static str| {
        let client = server.client.clone();
        let url = format!("{}{path}", server.base);
        async move {
            let response = client
                .post(url)
                .header("authorization", auth)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // The scheme is case-insensitive.
    let (status, _) = post("/embed", json!({"inputs": "hello"}), "bearer Key-1").await;
    assert_eq!(status, 200);
    let (status, _) = post("/embed", json!({"inputs": "hello"}), "Bearer Key-11").await;
    assert_eq!(status, 401);
    // Type errors name the field and the JSON type, never a Rust type.
    let (status, body) = post("/embed", json!({"inputs": 5}), "Bearer Key-1").await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "\"inputs\" must be a string or an array of strings"
    );
    let (status, body) = post(
        "/embed",
        json!({"inputs": "a", "truncate": "yes"}),
        "Bearer Key-1",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("\"truncate\" must be true or false"))
    );
    let (status, body) = post("/v1/embeddings", json!({"inputs": "a"}), "Bearer Key-1").await;
    assert_eq!(status, 422);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"input\" is required"));
    let everything = body.to_string()
        + &post("/embed", json!([1]), "Bearer Key-1")
            .await
            .1
            .to_string();
    for rust in ["struct", "enum", "EmbedBody", "untagged"] {
        assert!(!everything.contains(rust), "{everything}");
    }
    // Whitespace-only and zero-width inputs are empty.
    for blank in ["   ", "\u{200B}\u{200D}", "\n\t"] {
        let (status, body) = post(
            "/embed",
            json!({"inputs": ["hello", blank]}),
            "Bearer Key-1",
        )
        .await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (400, Some("empty")),
            "{blank:?}"
        );
    }
    // Every error is JSON in the route's schema, 404 and 405 included.
    let (status, body) = server.get("/nowhere").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error_type"],
        "not_found"
    );
    let response = server
        .client
        .get(format!("{}/embed", server.base))
        .header("authorization", "Bearer Key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_type"], "method_not_allowed");
    let response = server
        .client
        .get(format!("{}/v1/nothing", server.base))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "not_found",
        "OpenAI's schema under /v1"
    );
    // A body declared over the limit is refused before it is sent.
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(b"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer Key-1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "no 100 Continue: {answer}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_is_bounded_like_the_embedding_routes() {
    let engine = InferenceEngine::with_backend(config("abuse-tokenize"), cpu()).unwrap();
    let registry = engine.registry().clone();
    let server = Server::start(engine, ServerConfig::default()).await;
    // As many inputs as an embedding request may have, no more.
    let many: Vec<&str> = vec!["hello"; 33];
    let (status, body) = server.post("/tokenize", &json!({"inputs": many})).await;
    assert_eq!(status, 422, "{body}");
    // An input is held to max_input_length (12 tokens for the tiny model): the answer stays
    // small however long the input.
    let long = "hello world ".repeat(50_000);
    let (status, body) = server.post("/tokenize", &json!({"inputs": long})).await;
    assert_eq!(status, 200);
    assert_eq!(body[0].as_array().unwrap().len(), 12, "{body}");
    let text = scrape(&registry);
    assert_eq!(sample(&text, "hipinfer_tokenize_requests_total"), Some(2.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_being_received_share_a_bounded_amount_of_memory() {
    let engine = InferenceEngine::with_backend(config("abuse-body-memory"), cpu()).unwrap();
    let server = Server::start(
        engine,
        ServerConfig {
            connections: ConnectionLimits {
                body_memory: 300,
                ..ConnectionLimits::default()
            },
            ..ServerConfig::default()
        },
    )
    .await;
    // A slow sender holds its declared size once it started sending…
    let mut slow = TcpStream::connect(address(&server)).await.unwrap();
    slow.write_all(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 250\r\n\r\n{\"inputs\"")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // …so another body that does not fit beside it is refused at once, not buffered.
    let (status, body) = server
        .post("/embed", &json!({"inputs": "x".repeat(200)}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error_type"], "overloaded");
    drop(slow);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = server.post("/embed", &json!({"inputs": "hello"})).await;
    assert_eq!(
        status, 200,
        "the memory came back when the slow sender left"
    );
    server.stop().await;
}
