//! Health that tells the truth: a busy engine stays ready (readiness follows the length of its
//! steps), a flood of health checks shares one probe kernel, liveness answers at once whatever
//! the step thread is doing, and a dead device is not ready.

mod support;

use std::time::Duration;

use hipinfer::backend::CpuBackend;
use hipinfer::engine::{EngineConfig, HealthConfig, InferenceEngine};
use hipinfer::server::ServerConfig;
use support::gate::{gated_engine, Slow};
use support::server::Server;
use support::tiny_model;

fn config(name: &str) -> EngineConfig {
    EngineConfig::builder()
        .model(tiny_model::write(name))
        .seed(3)
        .build()
        .unwrap()
}

#[test]
fn an_engine_busy_with_steps_longer_than_the_probe_timeout_stays_ready() {
    // Each step takes 60 ms; a success vouches for only 10 ms by configuration, and a probe
    // queued behind a step would time out after 20 ms. Readiness must follow the steps' length.
    let mut config = config("health-busy");
    config.health = HealthConfig {
        fresh_for: Duration::from_millis(10),
        probe_timeout: Duration::from_millis(20),
    };
    let backend = Slow {
        inner: CpuBackend::with_threads(1).unwrap(),
        hooks: Duration::from_millis(60),
    };
    let engine = InferenceEngine::with_backend(config, backend).unwrap();
    let busy = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            for _ in 0..12 {
                engine.embed(&["hello world"]).unwrap();
            }
        })
    };
    let mut checks = 0;
    while !busy.is_finished() {
        let health = engine.health();
        assert!(health.ready, "check {checks}: {health:?}");
        checks += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    busy.join().unwrap();
    assert!(checks >= 20, "{checks} checks");
    // Busy steps vouched for the device: no probe had to wait behind them.
    assert!(engine.metrics().health_probes.get() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_health_checks_share_one_probe_and_delay_no_embedding() {
    let config = config("health-flood");
    // The gate holds the probe's kernel, so that every check arrives while it is in flight.
    let (engine, gate) = gated_engine(config);
    let metrics = engine.metrics().clone();
    let server = Server::start(engine, ServerConfig::default()).await;
    let checks: Vec<_> = (0..1000)
        .map(|_| {
            let client = server.client.clone();
            let url = format!("{}/health", server.base);
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    while metrics.health_checks.get() < 1000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(gate.waiting(), 1, "one probe kernel waits, for all of them");
    gate.open();
    let mut ok = 0;
    for check in checks {
        if check.await.unwrap().unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    assert_eq!(
        metrics.health_probes.get(),
        1,
        "one probe for the whole flood"
    );
    // The step thread is free at once: an embedding goes through behind the probe.
    let (status, body) = server
        .post("/embed", &serde_json::json!({"inputs": "hello world"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(metrics.health_probes.get() <= 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_answers_at_once_while_a_step_is_stuck_and_readiness_while_it_is_young() {
    let (engine, gate) = gated_engine(config("health-live"));
    let held = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.embed(&["hello"]))
    };
    gate.wait_for_waiter();
    let server = Server::start(engine, ServerConfig::default()).await;
    let (status, body) = server.get("/livez").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"alive\""), "{body}");
    // The first step has no known length: within the step deadline it is work, not death.
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);
    gate.open();
    assert!(held.join().unwrap().is_ok());
    server.stop().await;
}
