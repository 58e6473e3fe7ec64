//! RetryConfig: defaults, builder, validation errors naming the field, and `HIPINFER_RETRY_*`.

use std::collections::HashMap;
use std::time::Duration;

use hipinfer::retry::{Backoff, Jitter, RetryConfig, RetryPolicy};
use hipinfer::{ConfigError, Op};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn defaults_are_the_hip_seed() {
    let config = RetryConfig::default();
    assert_eq!(config.max_retries, 3);
    assert_eq!(config.initial_delay, ms(10));
    assert_eq!(config.backoff_multiplier, 2.0);
    assert_eq!(config.max_delay, Duration::from_secs(1));
    assert_eq!(config.backoff, Backoff::Exponential);
    assert_ne!(config.jitter, Jitter::None);
    assert_eq!(config.deadline, None);
    assert!(config.validate().is_ok());
}

#[test]
fn builder_sets_every_field() {
    let config = RetryConfig::new()
        .with_max_retries(5)
        .with_initial_delay(ms(20))
        .with_backoff_multiplier(3.0)
        .with_max_delay(ms(500))
        .with_jitter(Jitter::Equal)
        .with_deadline(ms(900))
        .with_op_override(Op::Allocate, RetryConfig::new().with_max_retries(8));
    assert_eq!(config.max_retries, 5);
    assert_eq!(config.initial_delay, ms(20));
    assert_eq!(config.backoff_multiplier, 3.0);
    assert_eq!(config.max_delay, ms(500));
    assert_eq!(config.jitter, Jitter::Equal);
    assert_eq!(config.deadline, Some(ms(900)));
    assert_eq!(config.for_op(Op::Allocate).max_retries, 8);
    assert_eq!(config.for_op(Op::Launch).max_retries, 5);
    let policy = RetryPolicy::new(config).unwrap();
    assert_eq!(policy.for_op(Op::Allocate).max_retries, 8);
    assert_eq!(policy.for_op(Op::CopyHostToDevice).max_retries, 5);
}

fn field_of(config: RetryConfig) -> String {
    match RetryPolicy::new(config) {
        Err(ConfigError { field, .. }) => field,
        Ok(_) => panic!("config should be invalid"),
    }
}

#[test]
fn invalid_values_name_the_field() {
    assert_eq!(
        field_of(RetryConfig::new().with_backoff_multiplier(0.5)),
        "retry.backoff_multiplier"
    );
    assert_eq!(
        field_of(RetryConfig::new().with_backoff_multiplier(f64::NAN)),
        "retry.backoff_multiplier"
    );
    assert_eq!(
        field_of(RetryConfig::new().with_backoff_multiplier(f64::INFINITY)),
        "retry.backoff_multiplier"
    );
    assert_eq!(
        field_of(
            RetryConfig::new()
                .with_initial_delay(ms(50))
                .with_max_delay(ms(10))
        ),
        "retry.max_delay"
    );
    assert_eq!(
        field_of(RetryConfig::new().with_backoff(Backoff::Schedule(vec![]))),
        "retry.schedule"
    );
    assert_eq!(
        field_of(RetryConfig::new().with_backoff(Backoff::Schedule(vec![Duration::from_secs(5)]))),
        "retry.schedule"
    );
    assert_eq!(
        field_of(RetryConfig::new().with_deadline(Duration::ZERO)),
        "retry.deadline"
    );
    assert_eq!(
        field_of(
            RetryConfig::new()
                .with_op_override(Op::Launch, RetryConfig::new().with_backoff_multiplier(0.0))
        ),
        "retry.overrides.launch.backoff_multiplier"
    );
    let message = RetryPolicy::new(RetryConfig::new().with_backoff_multiplier(0.5))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("retry.backoff_multiplier") && message.contains("0.5"),
        "{message}"
    );
}

#[test]
fn max_retries_zero_is_valid() {
    assert!(RetryPolicy::new(RetryConfig::disabled()).is_ok());
}

#[test]
fn schedule_raises_max_delay() {
    let config = RetryConfig::new().with_schedule([ms(10_000), ms(30_000), ms(90_000)]);
    assert_eq!(config.max_delay, ms(90_000));
    assert!(config.validate().is_ok());
}

fn from(vars: &[(&str, &str)]) -> Result<RetryConfig, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RetryConfig::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn env_reads_every_variable() {
    let config = from(&[
        ("HIPINFER_RETRY_MAX_RETRIES", "6"),
        ("HIPINFER_RETRY_INITIAL_DELAY", "5ms"),
        ("HIPINFER_RETRY_BACKOFF_MULTIPLIER", "1.5"),
        ("HIPINFER_RETRY_MAX_DELAY", "2s"),
        ("HIPINFER_RETRY_JITTER", "decorrelated"),
        ("HIPINFER_RETRY_DEADLINE", "30s"),
        ("HIPINFER_RETRY_POLL_INTERVAL", "250us"),
        ("HIPINFER_RETRY_MAX_POLLS", "40"),
    ])
    .unwrap();
    assert_eq!(config.max_retries, 6);
    assert_eq!(config.initial_delay, ms(5));
    assert_eq!(config.backoff_multiplier, 1.5);
    assert_eq!(config.max_delay, ms(2000));
    assert_eq!(config.jitter, Jitter::Decorrelated);
    assert_eq!(config.deadline, Some(ms(30_000)));
    assert_eq!(config.poll_interval, Duration::from_micros(250));
    assert_eq!(config.max_polls, 40);
    assert!(config.overrides.is_empty());
}

#[test]
fn env_reads_a_schedule_and_per_op_overrides() {
    let config = from(&[
        ("HIPINFER_RETRY_BACKOFF", "schedule"),
        ("HIPINFER_RETRY_SCHEDULE", "10s, 30s,90s"),
        ("HIPINFER_RETRY_ALLOCATE_MAX_RETRIES", "9"),
    ])
    .unwrap();
    assert_eq!(
        config.backoff,
        Backoff::Schedule(vec![ms(10_000), ms(30_000), ms(90_000)])
    );
    assert_eq!(config.for_op(Op::Allocate).max_retries, 9);
    assert_eq!(config.for_op(Op::Allocate).backoff, config.backoff);
    assert_eq!(config.for_op(Op::Launch).max_retries, 3);
}

#[test]
fn env_errors_name_the_variable() {
    let cases = [
        ("HIPINFER_RETRY_MAX_RETRIES", "-1"),
        ("HIPINFER_RETRY_INITIAL_DELAY", "soon"),
        ("HIPINFER_RETRY_JITTER", "lots"),
        ("HIPINFER_RETRY_BACKOFF", "linear"),
        ("HIPINFER_RETRY_SCHEDULE", "1s,,2s"),
        ("HIPINFER_RETRY_LAUNCH_MAX_DELAY", "1 fortnight"),
    ];
    for (name, value) in cases {
        let error = from(&[(name, value)]).unwrap_err();
        assert_eq!(error.field, name, "{error}");
    }
    let error = from(&[("HIPINFER_RETRY_BACKOFF_MULTIPLIER", "0.3")]).unwrap_err();
    assert_eq!(error.field, "retry.backoff_multiplier");
    let error = from(&[("HIPINFER_RETRY_BACKOFF", "schedule")]).unwrap_err();
    assert_eq!(error.field, "HIPINFER_RETRY_SCHEDULE");
}
