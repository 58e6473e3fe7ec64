//! `bench --engine-only` and `bench --http`: the engine under concurrent callers (its
//! configured isolation included), and with `--http` also the server under as many HTTP
//! clients (what HTTP costs) and optionally the server with faults injected (what the faults
//! cost). Each phase runs `--seconds` after a warm-up; one JSON line.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hipinfer::backend::{BackendChoice, CpuBackend, FaultyBackend};
use hipinfer::chaos::{fault_plan, percentile};
use hipinfer::engine::{EmbedRequest, EngineConfig, InferenceEngine};
use hipinfer::server::{self, ServerConfig};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::args::BenchArgs;
use crate::progress::Progress;
use crate::Failure;

/// One request's worth of text: a one-token word repeated to make exactly `seq` tokens.
fn text_of(engine: &InferenceEngine, seq: usize) -> Result<String, Failure> {
    for word in ["the", "hello", "world", "rust", "fast", "a"] {
        let text = vec![word; seq.saturating_sub(2)].join(" ");
        let tokens = engine.tokenize(&[&text], false);
        if tokens.is_ok_and(|t| t[0].ids.len() == seq) {
            return Ok(text);
        }
    }
    Err(format!("could not make a text of exactly {seq} tokens with this tokenizer").into())
}

/// Requests completed and their latencies, from `clients` loops calling `call` for `seconds`.
async fn load<F, Fut>(
    clients: usize,
    seconds: f64,
    call: F,
) -> Result<(usize, f64, Vec<f64>), Failure>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failure = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, latencies, failure, call) = (
                stop.clone(),
                latencies.clone(),
                failure.clone(),
                call.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match call().await {
                        Ok(()) => latencies.lock().push(t.elapsed().as_secs_f64() * 1e3),
                        Err(e) => {
                            failure.lock().get_or_insert(e);
                        }
                    }
                }
            })
        })
        .collect();
    let progress = Progress::new("bench");
    loop {
        let elapsed = started.elapsed().as_secs_f64();
        progress.seconds(elapsed, seconds);
        if elapsed >= seconds {
            break;
        }
        tokio::time::sleep(Duration::from_secs_f64((seconds - elapsed).min(0.25))).await;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed_at_stop = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await?;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock());
    latencies.sort_by(f64::total_cmp);
    let failed = failure.lock().take();
    if let Some(e) = failed {
        tracing::warn!("a benchmark request failed: {e}");
    }
    // Requests that finished after the stop still count: the time is until the last of them.
    let elapsed = started.elapsed().as_secs_f64().max(elapsed_at_stop);
    Ok((latencies.len(), elapsed, latencies))
}

fn summary(seq: usize, (requests, elapsed, latencies): (usize, f64, Vec<f64>)) -> Value {
    json!({
        "requests": requests,
        "seconds": elapsed,
        "tokens_per_second": (requests * seq) as f64 / elapsed,
        "p50_ms": percentile(&latencies, 0.5),
        "p99_ms": percentile(&latencies, 0.99),
    })
}

/// The engine alone: `clients` tasks calling `embed_async`.
async fn engine_phase(
    engine: &InferenceEngine,
    text: &str,
    clients: usize,
    seconds: f64,
) -> Result<(usize, f64, Vec<f64>), Failure> {
    let (engine, text) = (engine.clone(), text.to_string());
    load(clients, seconds, move || {
        let (engine, text) = (engine.clone(), text.clone());
        async move {
            engine
                .embed_async(EmbedRequest::new([text]))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// The server on a free local port: `clients` HTTP clients posting `/embed`.
async fn http_phase(
    engine: &InferenceEngine,
    text: &str,
    clients: usize,
    seconds: f64,
) -> Result<(usize, f64, Vec<f64>), Failure> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/embed", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServerConfig::default();
    let server = tokio::spawn(server::serve_on(listener, engine.clone(), config, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let body = Arc::new(json!({"inputs": text}));
    let result = load(clients, seconds, move || {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let response = client
                .post(&url)
                .json(&*body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)))
            }
        }
    })
    .await;
    let _ = stop_tx.send(());
    // serve_on shuts the engine down: phases after this one use engines of their own.
    server.await??;
    result
}

pub fn bench(args: BenchArgs) -> Result<ExitCode, Failure> {
    if args.clients == 0 || args.seq < 2 {
        return Err("--clients must be at least 1 and --seq at least 2 ([CLS] and [SEP])".into());
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err("--seconds must be a positive number".into());
    }
    let config = args.engine.engine_config(&args.common)?;
    if args.faults.any() && matches!(config.backend, BackendChoice::Hip | BackendChoice::Cuda) {
        return Err(
            "faults are injected into the CPU backend: use --backend cpu with fault rates".into(),
        );
    }
    let progress = Progress::new("bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (clients, seconds, seq) = (args.clients, args.seconds, args.seq);
    let output = runtime.block_on(async {
        let fresh = || InferenceEngine::new(config.clone());
        progress.note("engine alone");
        let engine = fresh()?;
        let text = text_of(&engine, seq)?;
        let threads = engine.device().compute_units;
        engine_phase(&engine, &text, clients, seconds.min(1.0)).await?; // warm-up
        let engine_only = summary(seq, engine_phase(&engine, &text, clients, seconds).await?);
        engine.shutdown_async().await;
        let mut output = json!({
            "mode": if args.http { "http" } else { "engine" },
            "isolation": config.isolation.to_string(),
            "clients": clients,
            "seq": seq,
            "threads": threads,
            "backend": engine.device().backend,
            "max_batch_tokens": config.batching.max_batch_tokens,
            "engine_only": engine_only,
        });
        if !args.http {
            return Ok(output);
        }

        progress.note("through HTTP");
        let engine = fresh()?;
        http_phase(&engine, &text, clients, seconds.min(1.0)).await?; // warm-up
        let engine = fresh()?;
        let http = summary(seq, http_phase(&engine, &text, clients, seconds).await?);
        let ratio = |a: &Value, b: &Value| {
            a["tokens_per_second"].as_f64().unwrap_or(0.0)
                / b["tokens_per_second"].as_f64().unwrap_or(1.0)
        };
        output["http_vs_engine"] = json!(ratio(&http, &output["engine_only"]));
        output["http"] = http;
        if args.faults.any() {
            progress.note("through HTTP, with faults");
            let plan = fault_plan(
                7,
                args.faults.transient_rate,
                args.faults.oom_rate,
                args.faults.reset_rate,
            )
            .with_sticky_scope(args.faults.sticky_scope);
            let cpu = match config.threads {
                Some(n) => CpuBackend::with_threads(n)?,
                None => CpuBackend::new()?,
            };
            let faulty = InferenceEngine::with_backend(
                EngineConfig {
                    backend: BackendChoice::Cpu,
                    ..config.clone()
                },
                Arc::new(FaultyBackend::new(cpu, plan)),
            )?;
            let http_faulty = summary(seq, http_phase(&faulty, &text, clients, seconds).await?);
            output["http_faulty"] = http_faulty.clone();
            output["faulty_vs_fault_free"] = json!(ratio(&http_faulty, &output["http"]));
            output["faults"] = json!({"transient_rate": args.faults.transient_rate,
                "oom_rate": args.faults.oom_rate, "reset_rate": args.faults.reset_rate});
        }
        Ok::<_, Failure>(output)
    })?;
    println!("{output}");
    Ok(ExitCode::SUCCESS)
}
