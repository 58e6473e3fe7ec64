//! Retry events: the JSON-lines log has one line per retry, give-up and breaker change.

use std::sync::Arc;

use hipinfer::retry::{
    retry_operation, BreakerConfig, BudgetConfig, FakeClock, Jitter, RetryConfig, RetryPolicy,
    RetryState,
};
use hipinfer::{HipError, Op};

#[test]
fn jsonl_log_has_one_line_per_event() {
    let dir = std::env::temp_dir().join(format!("hipinfer-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&path);
    let clock = Arc::new(FakeClock::new());
    let state = RetryState::builder()
        .clock(clock.clone())
        .without_metrics()
        .budget(BudgetConfig::unlimited())
        .breaker(BreakerConfig {
            failure_threshold: 2,
            ..Default::default()
        })
        .event_log(&path)
        .build()
        .unwrap();
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_jitter(Jitter::None)
            .with_max_retries(1),
    )
    .unwrap();
    retry_operation(Op::Allocate, &policy, &state, |a| {
        if a == 1 {
            Err(HipError::new(2, Op::Allocate))
        } else {
            Ok(())
        }
    })
    .unwrap();
    retry_operation(Op::Launch, &policy, &state, |_| {
        Err::<(), _>(HipError::new(216, Op::Launch))
    })
    .unwrap_err();

    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["retry", "recovered", "retry", "breaker", "gave_up"]);
    assert_eq!(events[0]["op"], "allocate");
    assert_eq!(events[0]["attempt"], 1);
    assert_eq!(events[0]["delay_ms"], 10.0);
    assert_eq!(events[0]["outcome"], "reclaiming"); // out of memory: the cache is freed first
    assert_eq!(events[0]["scope"], "op");
    assert_eq!(events[0]["code"], 2);
    assert_eq!(events[0]["class"], "reclaim");
    assert_eq!(events[0]["pid"], std::process::id());
    assert_eq!(events[2]["outcome"], "retrying");
    assert!(events[0]["error"]
        .as_str()
        .unwrap()
        .contains("hipErrorOutOfMemory"));
    assert_eq!(events[0]["timestamp"], 0.0);
    assert_eq!(events[1]["outcome"], "succeeded");
    assert_eq!(events[3]["outcome"], "open");
    assert_eq!(events[4]["outcome"], "exhausted");
    assert_eq!(events[4]["attempt"], 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_event_log_is_a_clear_error() {
    let error = RetryState::builder()
        .event_log("/nonexistent-dir/events.jsonl")
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent-dir/events.jsonl"),
        "{error}"
    );
}
