//! The recovery log (`--events FILE`): every op retry, step replay, context reset, worker
//! restart and recovery attempt is one JSON line — from the worker process too — and a
//! campaign can be audited line by line against its summary.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hipinfer::chaos::{run_campaign, ChaosConfig};
use hipinfer::engine::EngineConfig;
use hipinfer::isolation::{Isolation, WorkerConfig};
use hipinfer::retry::{Jitter, RetryConfig};
use serde_json::Value;
use support::tiny_model;

fn config(name: &str, events: &std::path::Path) -> EngineConfig {
    let _ = std::fs::remove_file(events);
    EngineConfig::builder()
        .model(tiny_model::write(name))
        .backend(hipinfer::backend::BackendChoice::Cpu)
        .threads(1)
        .retry(
            RetryConfig::new()
                .with_jitter(Jitter::None)
                .with_initial_delay(Duration::from_micros(50))
                .with_max_delay(Duration::from_millis(1)),
        )
        .events(events)
        .build()
        .unwrap()
}

fn events_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hipinfer-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.jsonl"))
}

/// Every line parsed, and a count of lines per (scope, type).
fn read(path: &std::path::Path) -> (Vec<Value>, HashMap<(String, String), u64>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let mut counts = HashMap::new();
    for line in &lines {
        let key = (
            line["scope"].as_str().unwrap().to_string(),
            line["type"].as_str().unwrap().to_string(),
        );
        *counts.entry(key).or_default() += 1;
    }
    (lines, counts)
}

fn count(counts: &HashMap<(String, String), u64>, scope: &str, kind: &str) -> u64 {
    counts
        .get(&(scope.to_string(), kind.to_string()))
        .copied()
        .unwrap_or(0)
}

#[test]
fn an_in_process_campaign_matches_its_log_line_by_line() {
    let path = events_path("in-process");
    let mut chaos = ChaosConfig::new(config("events-local", &path), 300, 8, 2);
    chaos.transient_rate = 0.05;
    chaos.oom_rate = 0.01;
    chaos.reset_rate = 0.005;
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert!(report.passed(), "{report:?}");
    let (lines, counts) = read(&path);
    assert!(!lines.is_empty());
    assert_eq!(
        count(&counts, "op", "retry"),
        report.op_retries,
        "{counts:?}"
    );
    assert_eq!(
        count(&counts, "step", "step_replay"),
        report.step_replays,
        "{counts:?}"
    );
    assert!(report.step_replays > 0, "{report:?}");
    let resets = lines
        .iter()
        .filter(|l| l["type"] == "context_reset" && l["outcome"] == "succeeded")
        .count() as u64;
    assert!(resets > 0, "{counts:?}");
    for line in &lines {
        assert_eq!(line["pid"], std::process::id(), "{line}");
        if line["scope"] == "step" {
            assert!(
                !line["requests"].as_array().unwrap().is_empty(),
                "a step event names its requests: {line}"
            );
        }
    }
    // Op retries inside steps name the requests they served.
    assert!(lines
        .iter()
        .any(|l| l["type"] == "retry" && l["requests"].is_array()));
}

#[test]
fn a_worker_process_writes_to_the_same_log() {
    let path = events_path("subprocess");
    let mut engine = config("events-worker", &path);
    engine.isolation = Isolation::Subprocess;
    engine.worker = WorkerConfig {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_hipinfer"))),
        max_restarts: u32::MAX,
        restart_delay: Duration::from_millis(1),
        max_restart_delay: Duration::from_millis(10),
        ..WorkerConfig::default()
    };
    // Process-scoped sticky faults: each kills its worker's context for good, so the worker is
    // replaced — after it answered, so its metrics are complete (an abort would lose the
    // counts of its last step from the metrics, though not from the log).
    let mut chaos = ChaosConfig::new(engine, 200, 8, 4);
    chaos.transient_rate = 0.03;
    chaos.reset_rate = 0.003;
    chaos.sticky_scope = hipinfer::backend::StickyScope::Process;
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert!(report.passed(), "{report:?}");
    let (lines, counts) = read(&path);
    let ours = std::process::id();
    let from_workers = lines.iter().filter(|l| l["pid"] != ours).count();
    assert!(from_workers > 0, "the workers' op retries are in the log");
    assert_eq!(
        count(&counts, "op", "retry"),
        report.op_retries,
        "every retry of every worker, once: {counts:?}"
    );
    assert_eq!(
        count(&counts, "worker", "worker_restart"),
        report.worker_restarts,
        "{counts:?} {report:?}"
    );
    assert!(report.worker_restarts > 0, "{report:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "worker_restart" && l["outcome"] == "sticky_error"),
        "{counts:?}"
    );
}
