//! Worker process isolation on the CPU backend and the tiny model: workers that abort, hang or
//! are deterministically killed by one request; a worker that crash-loops; no process left
//! behind. The worker program is the `hipinfer` binary built with these tests.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use hipinfer::backend::{FaultAction, FaultPlan, StickyScope};
use hipinfer::chaos::{run_campaign, ChaosConfig};
use hipinfer::engine::{EngineConfig, EngineError, InferenceEngine};
use hipinfer::isolation::{Isolation, WorkerConfig};
use hipinfer::Op;
use support::{sample, scrape, tiny_model};

/// Tests here check that no worker is left behind, so they must not overlap: each holds this.
static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn worker() -> WorkerConfig {
    WorkerConfig {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_hipinfer"))),
        restart_delay: Duration::from_millis(1),
        max_restart_delay: Duration::from_millis(20),
        ..WorkerConfig::default()
    }
}

fn config(name: &str) -> EngineConfig {
    EngineConfig::builder()
        .model(tiny_model::write(name))
        .backend(hipinfer::backend::BackendChoice::Cpu)
        .threads(1)
        .isolation(Isolation::Subprocess)
        .worker(worker())
        .step_timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Whether process `pid` still exists (a zombie counts: it was not reaped).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Our children still in the process table (zombies included).
fn children() -> Vec<u32> {
    support::children_of(std::process::id())
}

#[test]
fn two_thousand_requests_with_aborting_workers_lose_nothing() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut engine = config("iso-abort");
    engine.worker.max_restarts = u32::MAX; // a campaign counts restarts instead of capping them
    let mut chaos = ChaosConfig::new(engine, 2000, 32, 7);
    chaos.abort_rate = 0.002;
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert_eq!(report.lost, 0);
    assert_eq!(report.duplicated, 0);
    assert_eq!(
        report.mismatched, 0,
        "every output equals the fault-free reference"
    );
    assert_eq!(report.succeeded, 2000);
    assert!(report.injected.abort > 0, "{report:?}");
    assert_eq!(
        report.worker_restarts, report.injected.abort,
        "one restart per abort"
    );
}

#[test]
fn a_worker_whose_context_is_lost_for_the_process_is_killed_and_replaced() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut engine = config("iso-sticky-process");
    engine.worker.max_restarts = u32::MAX;
    let mut chaos = ChaosConfig::new(engine, 600, 16, 3);
    chaos.reset_rate = 0.005;
    chaos.sticky_scope = StickyScope::Process;
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!((report.succeeded, report.failed), (600, 0), "{report:?}");
    assert!(report.injected.reset > 0, "{report:?}");
    // A reset in the worker cannot clear a process-wide fault: every one cost a worker.
    assert!(
        report.worker_restarts >= report.step_replays.min(1),
        "{report:?}"
    );
    assert!(report.worker_restarts > 0, "{report:?}");
    assert_eq!(
        report.device_lost, 0,
        "the engine itself never lost the device"
    );
    assert!(
        children().len() <= 1,
        "one live worker at most: {:?}",
        children()
    );
}

#[test]
fn a_worker_that_aborts_on_every_memory_fault_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut engine = config("iso-abort-on-fault");
    engine.worker.max_restarts = u32::MAX;
    let mut chaos = ChaosConfig::new(engine, 400, 16, 5);
    chaos.reset_rate = 0.003;
    chaos.abort_on_fault = true;
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!((report.succeeded, report.failed), (400, 0), "{report:?}");
    assert!(report.injected.abort > 0, "{report:?}");
    assert_eq!(report.worker_restarts, report.injected.abort, "{report:?}");
}

#[test]
fn in_process_aborts_are_refused_with_a_clear_error() {
    let mut engine = config("iso-abort-in-process");
    engine.isolation = Isolation::InProcess;
    let mut chaos = ChaosConfig::new(engine, 10, 1, 5);
    chaos.abort_on_fault = true;
    let error = run_campaign(&chaos, &|_, _| {}).unwrap_err();
    assert!(error.to_string().contains("subprocess"), "{error}");
}

#[test]
fn a_hung_worker_is_killed_at_the_step_deadline_and_replaced() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut engine = config("iso-hang");
    engine.step_timeout = Duration::from_secs(1); // far above a tiny-model step, even under load
    engine.worker.max_restarts = u32::MAX;
    let mut chaos = ChaosConfig::new(engine, 300, 16, 5);
    chaos.hang_rate = 0.003;
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert_eq!(
        (report.lost, report.mismatched, report.failed),
        (0, 0, 0),
        "{report:?}"
    );
    assert!(report.injected.hang > 0, "{report:?}");
    assert_eq!(report.worker_restarts, report.injected.hang);
}

#[test]
fn a_request_that_kills_the_worker_fails_alone() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut config = config("iso-poison");
    config.worker.max_restarts = u32::MAX;
    config.step_replay.max_replays = 2;
    // Every step holding "rust" (token 8) aborts the worker.
    config.faults = Some(FaultPlan::new(1).with_poison(8, FaultAction::Abort));
    let engine = InferenceEngine::new(config).unwrap();
    let texts = [
        "hello world",
        "rust is fast",
        "world !",
        "fast , hello",
        "hello",
        "is it",
    ];
    let results = support::embed_each_concurrently(&engine, &texts);
    for (text, result) in results {
        if text.contains("rust") {
            match result {
                Err(EngineError::Failed { what, report, .. }) => {
                    assert_eq!(what, "worker process");
                    assert!(report.worker_restarts >= 3, "{report:?}");
                }
                other => panic!("{text}: {other:?}"),
            }
        } else {
            assert!(result.is_ok(), "{text}: {result:?}");
        }
    }
    let text = scrape(engine.registry());
    let restarts = sample(&text, "hipinfer_worker_restarts_total{reason=\"signal\"}").unwrap();
    // One restart between each two of its failures, at least (the last may come later).
    assert!(restarts >= 2.0, "{text}");
    assert!(engine.health().ready, "the engine serves on");
}

#[test]
fn a_worker_that_dies_at_start_up_trips_the_breaker_and_leaves_nothing_behind() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut config = config("iso-crash-loop");
    config.worker.program = Some(PathBuf::from("/bin/false")); // exits at once, every time
    config.worker.max_restarts = 3;
    config.step_replay.max_recovery_attempts = 4;
    let engine = InferenceEngine::new(config).unwrap();
    match engine.embed(&["hello"]) {
        Err(EngineError::Unhealthy { reason }) => {
            assert!(reason.contains("crash-looping"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let health = engine.health();
    assert!(!health.ready);
    assert!(health.reason.unwrap().contains("crash-looping"));
    assert!(matches!(
        engine.embed(&["hello"]),
        Err(EngineError::Unhealthy { .. })
    ));
    let text = scrape(engine.registry());
    assert_eq!(
        sample(&text, "hipinfer_worker_restarts_total{reason=\"exit\"}"),
        Some(3.0)
    );
    drop(engine);
    assert!(children().is_empty(), "left behind: {:?}", children());
}

#[test]
fn a_worker_program_that_cannot_run_is_a_clear_error_at_once() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut config = config("iso-missing");
    config.worker.program = Some(PathBuf::from("/nonexistent/hipinfer-worker"));
    match InferenceEngine::new(config) {
        Err(e) => assert!(
            e.to_string()
                .contains("could not start the worker program /nonexistent/hipinfer-worker"),
            "{e}"
        ),
        Ok(_) => panic!("started without a worker program"),
    }
}

#[test]
fn dropping_the_engine_stops_its_worker() {
    let _serial = ONE_AT_A_TIME.lock();
    let engine = InferenceEngine::new(config("iso-drop")).unwrap();
    assert_eq!(engine.embed(&["hello world"]).unwrap().embeddings.len(), 1);
    let pid = engine.worker_status().unwrap().pid().unwrap();
    assert!(alive(pid));
    assert!(engine.device().name.contains(&pid.to_string()));
    drop(engine);
    assert!(!alive(pid), "worker {pid} outlived its engine");
    assert!(children().is_empty(), "left behind: {:?}", children());
}

#[test]
fn answers_and_metrics_match_the_in_process_engine() {
    let _serial = ONE_AT_A_TIME.lock();
    let config = config("iso-equal");
    let isolated = InferenceEngine::new(config.clone()).unwrap();
    let local = InferenceEngine::new(EngineConfig {
        isolation: Isolation::InProcess,
        ..config
    })
    .unwrap();
    let texts = ["hello world", "rust is fast", "hello , rust !"];
    assert_eq!(
        isolated.embed(&texts).unwrap().embeddings,
        local.embed(&texts).unwrap().embeddings
    );
    // The worker's retry metrics are served by the supervisor.
    let text = scrape(isolated.registry());
    assert!(
        text.contains("hipinfer_gpu_retry_attempts_total{op=\"launch\"} 0"),
        "{text}"
    );
    assert_eq!(sample(&text, "hipinfer_worker_up"), Some(1.0));
    assert!(isolated.health().ready);
}

#[test]
fn retried_device_calls_in_the_worker_reach_the_report_and_the_metrics() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut config = config("iso-retries");
    // Every 5th launch fails once with a transient error: retried in place inside the worker.
    config.faults = Some(FaultPlan::new(3).with_rate(Some(Op::Launch), 304, 0.2));
    let engine = InferenceEngine::new(config).unwrap();
    let response = engine.embed(&["hello world", "rust is fast"]).unwrap();
    let injected = engine.fault_totals().unwrap().code(304);
    assert!(injected > 0);
    assert!(response.retry.retries > 0, "{:?}", response.retry);
    let text = scrape(engine.registry());
    let counted = sample(
        &text,
        "hipinfer_gpu_errors_total{code=\"hipErrorOperatingSystem\",op=\"launch\"}",
    );
    assert_eq!(counted, Some(injected as f64));
}

#[test]
fn a_crash_looping_worker_makes_health_answer_503() {
    let _serial = ONE_AT_A_TIME.lock();
    let mut config = config("iso-health");
    config.worker.program = Some(PathBuf::from("/bin/false"));
    config.worker.max_restarts = 1;
    config.step_replay.max_recovery_attempts = 2;
    let engine = InferenceEngine::new(config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(hipinfer::server::serve_on(
            listener,
            engine,
            hipinfer::server::ServerConfig {
                api_key: Some("k".into()),
                ..hipinfer::server::ServerConfig::default()
            },
            async {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::new();
        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 503);
        let body: serde_json::Value = health.json().await.unwrap();
        assert_eq!(body["error_type"], "unhealthy");
        assert_eq!(body["status"], "unhealthy");
        // Without the key, the class of the cause and no internal detail.
        assert!(body["cause"].is_string(), "{body}");
        assert!(!body.to_string().contains("/bin/false"), "{body}");
        let embed = client
            .post(format!("{base}/embed"))
            .bearer_auth("k")
            .json(&serde_json::json!({"inputs": "hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(embed.status().as_u16(), 503);
        let body: serde_json::Value = embed.json().await.unwrap();
        assert_eq!(body["error_type"], "unhealthy");
        assert!(!body.to_string().contains("/bin/false"), "{body}");
        // With the key, the operator sees why: the worker program crash-loops.
        let health = client
            .get(format!("{base}/health"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert_eq!(health.status().as_u16(), 503);
        let body: serde_json::Value = health.json().await.unwrap();
        assert_eq!(body["cause"], "device_lost", "{body}");
        assert!(
            body["reason"].as_str().unwrap().contains("crash-looping"),
            "{body}"
        );
        // Alive all the same: liveness is not readiness.
        let live = client.get(format!("{base}/livez")).send().await.unwrap();
        assert_eq!(live.status().as_u16(), 200);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
    assert!(children().is_empty(), "left behind: {:?}", children());
}

/// A program that embeds the engine but forgets `run_worker_if_requested()`, used as its own
/// worker, would start a worker that starts a worker… The library refuses in the worker instead.
#[test]
fn a_worker_that_builds_its_own_engine_refuses_instead_of_spawning_more() {
    const CHILD: &str = "HIPINFER_TEST_FORGETFUL_WORKER";
    if std::env::var_os(CHILD).is_some() {
        // In the re-executed test binary, which plays a worker whose main() forgot the call.
        match InferenceEngine::new(config("iso-forgetful")) {
            Err(EngineError::Config(error)) => {
                assert_eq!(error.field, "worker.program");
                assert!(error.message.contains("run_worker_if_requested"), "{error}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
        return;
    }
    // The child is a process of ours too: other tests check that none is left behind.
    let _serial = ONE_AT_A_TIME.lock();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_worker_that_builds_its_own_engine_refuses_instead_of_spawning_more",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("HIPINFER_WORKER_SOCKET", "/nonexistent/worker.sock")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
}

#[test]
fn a_stray_connection_to_the_worker_socket_is_refused_and_disturbs_nothing() {
    let _serial = ONE_AT_A_TIME.lock();
    // A worker program that takes a moment to start, so that a stray process connects first.
    let scripts = std::env::temp_dir().join(format!("hipinfer-stray-{}", std::process::id()));
    std::fs::create_dir_all(&scripts).unwrap();
    let script = scripts.join("slow-worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 0.4\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_hipinfer")
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut config = config("iso-stray");
    config.worker.program = Some(script);
    let starting = std::thread::spawn(move || InferenceEngine::new(config));
    // Find the socket and connect to it as any local process of the same user could.
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let prefix = format!("hipinfer-{}-", std::process::id());
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut stray = None;
    while stray.is_none() && std::time::Instant::now() < until {
        for entry in std::fs::read_dir(&base).unwrap().filter_map(|e| e.ok()) {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let socket = entry.path().join("worker.sock");
                if let Ok(stream) = std::os::unix::net::UnixStream::connect(&socket) {
                    stray = Some(stream);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut stray = stray.expect("the socket appeared while the worker was starting");
    // The supervisor refuses it: it hears nothing (no Start frame, no configuration) and is
    // closed.
    stray
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut heard = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stray, &mut heard);
    assert!(heard.is_empty(), "the stray heard {} bytes", heard.len());
    // The real worker started all the same: no restart, no breaker.
    let engine = starting.join().unwrap().unwrap();
    assert_eq!(engine.embed(&["hello world"]).unwrap().embeddings.len(), 1);
    let text = scrape(engine.registry());
    assert_eq!(
        sample(&text, "hipinfer_worker_stray_connections_total"),
        Some(1.0),
        "{text}"
    );
    let restarts: f64 = hipinfer::isolation::RESTART_REASONS
        .iter()
        .map(|r| {
            sample(
                &text,
                &format!("hipinfer_worker_restarts_total{{reason=\"{r}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(restarts, 0.0);
    drop(engine);
    std::fs::remove_dir_all(scripts).unwrap();
}
