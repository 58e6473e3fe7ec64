//! Delay sequences: exact without jitter, bounded with it (property tests).

use std::time::Duration;

use hipinfer::retry::{Backoff, BackoffSchedule, Jitter, RetryConfig, RetryPolicy};
use hipinfer::Op;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn schedule(config: RetryConfig) -> BackoffSchedule {
    RetryPolicy::new(config)
        .unwrap()
        .for_op(Op::Launch)
        .backoff
        .clone()
}

fn delays(config: RetryConfig, n: u32) -> Vec<Duration> {
    let schedule = schedule(config);
    let mut rng = SmallRng::seed_from_u64(1);
    let mut previous = Duration::ZERO;
    (1..=n)
        .map(|retry| {
            previous = schedule.delay(retry, previous, &mut rng);
            previous
        })
        .collect()
}

#[test]
fn exponential_doubles_from_10ms_and_caps() {
    let config = RetryConfig::new().with_jitter(Jitter::None);
    assert_eq!(delays(config.clone(), 3), vec![ms(10), ms(20), ms(40)]);
    assert_eq!(
        delays(config, 10),
        vec![
            ms(10),
            ms(20),
            ms(40),
            ms(80),
            ms(160),
            ms(320),
            ms(640),
            ms(1000),
            ms(1000),
            ms(1000)
        ]
    );
}

#[test]
fn exponential_never_overflows() {
    let config = RetryConfig::new()
        .with_jitter(Jitter::None)
        .with_backoff_multiplier(1e10);
    let schedule = schedule(config);
    assert_eq!(schedule.base_delay(u32::MAX), Duration::from_secs(1));
    assert_eq!(schedule.base_delay(400), Duration::from_secs(1));
}

#[test]
fn fixed_and_none() {
    let fixed = RetryConfig::new()
        .with_jitter(Jitter::None)
        .with_backoff(Backoff::Fixed);
    assert_eq!(delays(fixed, 4), vec![ms(10); 4]);
    let none = RetryConfig::new()
        .with_jitter(Jitter::Decorrelated)
        .with_backoff(Backoff::None);
    assert_eq!(delays(none, 3), vec![Duration::ZERO; 3]);
}

#[test]
fn schedule_is_followed_then_repeats_its_last_entry() {
    let config = RetryConfig::new().with_jitter(Jitter::None).with_schedule([
        ms(10_000),
        ms(30_000),
        ms(90_000),
    ]);
    assert_eq!(
        delays(config, 5),
        vec![ms(10_000), ms(30_000), ms(90_000), ms(90_000), ms(90_000)]
    );
}

#[test]
fn seeded_jitter_is_reproducible() {
    let config = RetryConfig::new().with_jitter(Jitter::Full);
    assert_eq!(delays(config.clone(), 8), delays(config, 8));
}

fn jitter_strategy() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ]
}

fn backoff_strategy() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        Just(Backoff::None),
        Just(Backoff::Fixed),
        Just(Backoff::Exponential),
        prop::collection::vec((0u64..5_000).prop_map(Duration::from_millis), 1..5)
            .prop_map(Backoff::Schedule),
    ]
}

proptest! {
    #[test]
    fn jittered_delays_stay_within_zero_and_max_delay(
        initial in 0u64..2_000,
        extra in 0u64..10_000,
        multiplier in 1.0f64..10.0,
        jitter in jitter_strategy(),
        backoff in backoff_strategy(),
        seed in any::<u64>(),
        retries in 1u32..40,
    ) {
        let max_delay = ms(initial + extra).max(match &backoff {
            Backoff::Schedule(d) => *d.iter().max().unwrap(),
            _ => Duration::ZERO,
        });
        let config = RetryConfig::new()
            .with_initial_delay(ms(initial))
            .with_max_delay(max_delay)
            .with_backoff_multiplier(multiplier)
            .with_backoff(backoff)
            .with_jitter(jitter);
        let schedule = schedule(config);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut previous = Duration::ZERO;
        for retry in 1..=retries {
            let delay = schedule.delay(retry, previous, &mut rng);
            prop_assert!(delay <= max_delay, "retry {retry}: {delay:?} > {max_delay:?}");
            prop_assert!(delay <= schedule.base_delay(retry).max(max_delay));
            if jitter == Jitter::None {
                prop_assert_eq!(delay, schedule.base_delay(retry));
            }
            if jitter == Jitter::Equal {
                prop_assert!(delay >= schedule.base_delay(retry) / 2);
            }
            previous = delay;
        }
    }
}
