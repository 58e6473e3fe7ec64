//! EngineConfig: the builder, serde (JSON files) and the environment give the same, validated
//! settings; every invalid value is an error naming the field or variable.

use std::collections::HashMap;
use std::time::Duration;

use hipinfer::backend::{BackendChoice, FaultPlan};
use hipinfer::engine::{EngineConfig, Fallback};
use hipinfer::isolation::Isolation;
use hipinfer::retry::Backoff;

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

#[test]
fn defaults_are_teis_limits() {
    let config = EngineConfig::default();
    config.validate().unwrap();
    assert_eq!(config.batching.max_batch_tokens, 16384);
    assert_eq!(config.batching.max_concurrent_requests, 512);
    assert_eq!(config.batching.max_client_batch_size, 32);
    // auto: a worker process on a GPU backend, this process on the CPU.
    assert_eq!(config.isolation, Isolation::Auto);
    assert_eq!(Isolation::Auto.resolve(true), Isolation::Subprocess);
    assert_eq!(Isolation::Auto.resolve(false), Isolation::InProcess);
    assert_eq!(Isolation::InProcess.resolve(true), Isolation::InProcess);
    assert_eq!(config.step_timeout, Duration::from_secs(30));
    assert_eq!(config.fallback, Fallback::None);
    assert_eq!(config.worker.max_restarts, 3);
    assert_eq!(config.worker.restart_window, Duration::from_secs(600));
}

#[test]
fn json_round_trips_and_every_field_is_optional() {
    let config = EngineConfig::builder()
        .model("/models/m")
        .backend(BackendChoice::Cpu)
        .max_batch_tokens(4096)
        .request_deadline(Duration::from_millis(1500))
        .isolation(Isolation::Subprocess)
        .fallback(Fallback::Cpu)
        .step_timeout(Duration::from_secs(2))
        .events("/tmp/events.jsonl")
        .build()
        .unwrap();
    let text = serde_json::to_string_pretty(&config).unwrap();
    assert!(text.contains("\"request_deadline\": \"1.5s\""), "{text}");
    assert!(text.contains("\"fallback\": \"cpu\""), "{text}");
    assert_eq!(EngineConfig::from_json(&text).unwrap(), config);
    assert_eq!(
        EngineConfig::from_json("{}").unwrap(),
        EngineConfig::default()
    );
    let partial = EngineConfig::from_json(
        r#"{"retry": {"max_retries": 5, "backoff": {"schedule": ["10ms", "1s"]}},
            "batching": {"max_batch_tokens": 2048}, "step_replay": {"max_replays": 2}}"#,
    )
    .unwrap();
    assert_eq!(partial.retry.max_retries, 5);
    assert_eq!(
        partial.retry.backoff,
        Backoff::Schedule(vec![Duration::from_millis(10), Duration::from_secs(1)])
    );
    assert_eq!(partial.batching.max_batch_tokens, 2048);
    assert_eq!(partial.batching.max_concurrent_requests, 512);
}

#[test]
fn a_configuration_file_cannot_turn_faults_on() {
    let error =
        EngineConfig::from_json(r#"{"faults": {"seed": 1, "abort_on_fault": true}}"#).unwrap_err();
    assert!(error.message.contains("faults"), "{error}");
    // Set in code, they are kept in the configuration but never written to a file.
    let config = EngineConfig::builder()
        .faults(FaultPlan::new(3).with_rate(None, 304, 0.1))
        .build()
        .unwrap();
    let text = serde_json::to_string(&config).unwrap();
    assert!(!text.contains("faults"), "{text}");
}

#[test]
fn bad_files_name_the_field() {
    let error = EngineConfig::from_json(r#"{"batching": {"max_batch_tokens": 0}}"#).unwrap_err();
    assert_eq!(error.field, "batching.max_batch_tokens");
    let error = EngineConfig::from_json(r#"{"batching": {"max_batch_tokenz": 5}}"#).unwrap_err();
    assert!(error.message.contains("max_batch_tokenz"), "{error}");
    let error = EngineConfig::from_json(r#"{"request_deadline": "soon"}"#).unwrap_err();
    assert!(error.message.contains("not a duration"), "{error}");
    let error = EngineConfig::from_json(r#"{"retry": {"backoff_multiplier": 0.5}}"#).unwrap_err();
    assert_eq!(error.field, "retry.backoff_multiplier");
    let error = EngineConfig::from_json(r#"{"step_timeout": "0ms"}"#).unwrap_err();
    assert_eq!(error.field, "step_timeout");
    let error = EngineConfig::from_json(r#"{"fallback": "gpu"}"#).unwrap_err();
    assert!(error.message.contains("gpu"), "{error}");
    let error =
        EngineConfig::from_json(r#"{"recovery": {"initial_delay": "2s", "max_delay": "1s"}}"#)
            .unwrap_err();
    assert_eq!(error.field, "recovery.max_delay");
    let error = EngineConfig::from_json_file("/nonexistent/engine.json").unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/engine.json"),
        "{error}"
    );
}

#[test]
fn the_environment_overrides_the_defaults_and_names_bad_variables() {
    let config = EngineConfig::from_lookup(lookup(&[
        ("HIPINFER_MODEL", "/m"),
        ("HIPINFER_BACKEND", "cpu"),
        ("HIPINFER_MAX_BATCH_TOKENS", "8192"),
        ("HIPINFER_MAX_CONCURRENT_REQUESTS", "64"),
        ("HIPINFER_REQUEST_DEADLINE", "30s"),
        ("HIPINFER_ISOLATION", "subprocess"),
        ("HIPINFER_WORKER_STEP_TIMEOUT", "5s"),
        ("HIPINFER_FALLBACK", "cpu"),
        ("HIPINFER_EVENTS", "/tmp/e.jsonl"),
        ("HIPINFER_RECOVERY_INITIAL_DELAY", "10ms"),
        ("HIPINFER_RETRY_MAX_RETRIES", "6"),
        ("HIPINFER_STEP_MAX_REPLAYS", "4"),
    ]))
    .unwrap();
    assert_eq!(config.model.to_str(), Some("/m"));
    assert_eq!(config.backend, BackendChoice::Cpu);
    assert_eq!(config.batching.max_batch_tokens, 8192);
    assert_eq!(config.batching.max_concurrent_requests, 64);
    assert_eq!(config.request_deadline, Some(Duration::from_secs(30)));
    assert_eq!(config.isolation, Isolation::Subprocess);
    assert_eq!(config.step_timeout, Duration::from_secs(5));
    assert_eq!(config.fallback, Fallback::Cpu);
    assert_eq!(
        config.events.as_deref(),
        Some(std::path::Path::new("/tmp/e.jsonl"))
    );
    assert_eq!(config.recovery.initial_delay, Duration::from_millis(10));
    assert_eq!(config.retry.max_retries, 6);
    assert_eq!(config.step_replay.max_replays, 4);
    // The newer name wins over the older one.
    let config = EngineConfig::from_lookup(lookup(&[
        ("HIPINFER_WORKER_STEP_TIMEOUT", "5s"),
        ("HIPINFER_STEP_TIMEOUT", "7s"),
    ]))
    .unwrap();
    assert_eq!(config.step_timeout, Duration::from_secs(7));

    for (name, value) in [
        ("HIPINFER_MAX_BATCH_TOKENS", "lots"),
        ("HIPINFER_ISOLATION", "container"),
        ("HIPINFER_REQUEST_DEADLINE", "-1"),
        ("HIPINFER_BACKEND", "rocm"),
    ] {
        let error = EngineConfig::from_lookup(lookup(&[(name, value)])).unwrap_err();
        assert_eq!(error.field, name, "{error}");
    }
    let error = EngineConfig::from_lookup(lookup(&[("HIPINFER_MAX_CONCURRENT_REQUESTS", "0")]))
        .unwrap_err();
    assert_eq!(error.field, "batching.max_concurrent_requests");
}

#[test]
fn variables_override_a_files_settings_and_keep_the_rest() {
    let file = EngineConfig::from_json(
        r#"{"model": "/models/from-file", "max_batch_tokens": 1, "retry": {"max_retries": 7}}"#,
    );
    // An unknown field is an error naming its place; then the real file.
    assert!(file.is_err());
    let file = EngineConfig::from_json(
        r#"{"model": "/models/from-file", "batching": {"max_batch_tokens": 999},
            "retry": {"max_retries": 7}, "worker": {"max_restarts": 5}}"#,
    )
    .unwrap();
    let config = file
        .with_vars(lookup(&[
            ("HIPINFER_RETRY_INITIAL_DELAY", "5ms"),
            ("HIPINFER_STEP_MAX_RECOVERY_ATTEMPTS", "4"),
            ("HIPINFER_WORKER_RESTART_DELAY", "50ms"),
            ("HIPINFER_WORKER_MAX_RESTART_DELAY", "2s"),
        ]))
        .unwrap();
    assert_eq!(config.model, std::path::PathBuf::from("/models/from-file"));
    assert_eq!(config.batching.max_batch_tokens, 999);
    assert_eq!(config.retry.max_retries, 7, "the file's");
    assert_eq!(
        config.retry.initial_delay,
        Duration::from_millis(5),
        "the variable's"
    );
    assert_eq!(config.step_replay.max_recovery_attempts, 4);
    assert_eq!(config.worker.max_restarts, 5);
    assert_eq!(config.worker.restart_delay, Duration::from_millis(50));
    assert_eq!(config.worker.max_restart_delay, Duration::from_secs(2));
    let error = EngineConfig::default()
        .with_vars(lookup(&[("HIPINFER_WORKER_RESTART_DELAY", "soon")]))
        .unwrap_err();
    assert_eq!(error.field, "HIPINFER_WORKER_RESTART_DELAY");
}
