//! The retry budget: a cap on retries shared by every caller.
//!
//! A fixed retry count per call is not enough. When a device is sick, every caller retries
//! `max_retries` times, multiplying the load on it exactly when it can bear the least (a retry
//! storm). A budget ties retries to useful traffic instead: each call deposits `ratio` of a retry
//! (default 20 %), each retry withdraws one, and deposits expire after `ttl` (default 10 s); a
//! floor of `min_per_second` retries (default 10) keeps a quiet service able to retry at all.
//! So over any `ttl`, retries ≤ ratio × calls + min_per_second × ttl. The same rule as tower's
//! `TpsBudget` and Envoy's retry budget, with a cheaper deposit: a call reads no clock and takes
//! no lock. It bumps a counter local to its thread, which is added to the shared counter every
//! [`DEPOSIT_BATCH`] calls (and when the thread ends, or the same thread asks for a retry); the
//! shared counter is folded into the time window when a retry asks. At most `DEPOSIT_BATCH − 1`
//! deposits per thread are not yet visible, which only makes the budget stricter.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::Gauge;

use crate::error::ConfigError;

use super::clock::Clock;

/// Retry budget settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries allowed per call made (default 0.2).
    pub ratio: f64,
    /// Retries always allowed per second, whatever the traffic (default 10).
    pub min_per_second: u32,
    /// How long a deposit counts (default 10 s).
    #[serde(with = "super::duration_text::serde_duration")]
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl BudgetConfig {
    /// A budget that never runs out.
    pub fn unlimited() -> Self {
        BudgetConfig {
            ratio: f64::INFINITY,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ratio.is_nan() || self.ratio < 0.0 {
            return Err(ConfigError::new(
                "budget.ratio",
                format!("{} is not a number ≥ 0", self.ratio),
            ));
        }
        if self.ttl < Duration::from_millis(10) || self.ttl > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "budget.ttl",
                format!("{:?} is not between 10 ms and 1 hour", self.ttl),
            ));
        }
        Ok(())
    }

    fn floor(&self) -> f64 {
        f64::from(self.min_per_second) * self.ttl.as_secs_f64()
    }
}

const SLOTS: usize = 10;

/// Calls a thread counts locally before adding them to the shared counter.
pub const DEPOSIT_BATCH: u64 = 32;

/// This thread's deposits not yet added to `target`.
struct LocalDeposits {
    target: Option<Arc<AtomicU64>>,
    count: u64,
}

impl LocalDeposits {
    fn flush(&mut self) {
        if let Some(target) = &self.target {
            if self.count > 0 {
                target.fetch_add(self.count, Ordering::Relaxed);
            }
        }
        self.count = 0;
    }
}

impl Drop for LocalDeposits {
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static LOCAL_DEPOSITS: RefCell<LocalDeposits> =
        const { RefCell::new(LocalDeposits { target: None, count: 0 }) };
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug)]
struct Window {
    slots: [Slot; SLOTS],
    current: usize,
    /// Start of the current slot (clock time).
    current_start: Duration,
}

/// A shared retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    pending_deposits: Arc<AtomicU64>,
    denied: AtomicU64,
    window: Mutex<Window>,
    clock: Arc<dyn Clock>,
    gauge: Option<Gauge>,
}

impl RetryBudget {
    pub(crate) fn new(config: BudgetConfig, clock: Arc<dyn Clock>, gauge: Option<Gauge>) -> Self {
        let now = clock.now();
        if let Some(gauge) = &gauge {
            gauge.set(config.floor());
        }
        RetryBudget {
            config,
            pending_deposits: Arc::new(AtomicU64::new(0)),
            denied: AtomicU64::new(0),
            window: Mutex::new(Window {
                slots: [Slot::default(); SLOTS],
                current: 0,
                current_start: now,
            }),
            clock,
            gauge,
        }
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Records a call (the hot path: a thread-local add; a shared atomic add every
    /// [`DEPOSIT_BATCH`] calls).
    #[inline]
    pub fn deposit(&self) {
        let counted = LOCAL_DEPOSITS.try_with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return false;
            };
            match &local.target {
                Some(target) if Arc::ptr_eq(target, &self.pending_deposits) => {
                    local.count += 1;
                    if local.count >= DEPOSIT_BATCH {
                        local.flush();
                    }
                }
                _ => {
                    local.flush();
                    local.target = Some(self.pending_deposits.clone());
                    local.count = 1;
                }
            }
            true
        });
        if counted != Ok(true) {
            self.pending_deposits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds this thread's not yet shared deposits for this budget.
    fn flush_local(&self) {
        let _ = LOCAL_DEPOSITS.try_with(|local| {
            if let Ok(mut local) = local.try_borrow_mut() {
                if local
                    .target
                    .as_ref()
                    .is_some_and(|t| Arc::ptr_eq(t, &self.pending_deposits))
                {
                    local.flush();
                }
            }
        });
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self) -> bool {
        if self.config.ratio.is_infinite() {
            return true;
        }
        let mut window = self.window.lock();
        let balance = self.balance(&mut window);
        let allowed = balance >= 1.0;
        if allowed {
            let current = window.current;
            window.slots[current].withdrawals += 1;
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(gauge) = &self.gauge {
            gauge.set((balance - f64::from(u8::from(allowed))).max(0.0).floor());
        }
        allowed
    }

    /// Retries the budget would allow now.
    pub fn remaining(&self) -> f64 {
        if self.config.ratio.is_infinite() {
            return f64::INFINITY;
        }
        let mut window = self.window.lock();
        self.balance(&mut window).max(0.0).floor()
    }

    /// Retries refused so far.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    fn balance(&self, window: &mut Window) -> f64 {
        self.flush_local();
        self.rotate(window);
        let pending = self.pending_deposits.swap(0, Ordering::Relaxed);
        let current = window.current;
        window.slots[current].deposits += pending;
        let (deposits, withdrawals) = window.slots.iter().fold((0u64, 0u64), |(d, w), slot| {
            (d + slot.deposits, w + slot.withdrawals)
        });
        deposits as f64 * self.config.ratio + self.config.floor() - withdrawals as f64
    }

    /// Moves the window to now, clearing slots older than `ttl`.
    fn rotate(&self, window: &mut Window) {
        let slot_length = self.config.ttl / SLOTS as u32;
        let now = self.clock.now();
        let elapsed = now.saturating_sub(window.current_start);
        let steps = (elapsed.as_nanos() / slot_length.as_nanos().max(1)) as usize;
        for _ in 0..steps.min(SLOTS) {
            window.current = (window.current + 1) % SLOTS;
            let current = window.current;
            window.slots[current] = Slot::default();
        }
        if steps > 0 {
            let into_slot = elapsed.as_nanos() % slot_length.as_nanos().max(1);
            window.current_start = now - Duration::from_nanos(into_slot as u64);
        }
    }
}
