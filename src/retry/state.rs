//! `RetryState`: what every retried call of an engine shares — the device's circuit breaker, the
//! retry budget, the metrics, the event sinks, the clock and the random source for jitter.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::Registry;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::error::ConfigError;

use super::breaker::{BreakerConfig, CircuitBreaker};
use super::budget::{BudgetConfig, RetryBudget};
use super::clock::{Clock, SystemClock};
use super::events::{Events, JsonlSink};
use super::metrics::RetryMetrics;

/// Why a [`RetryState`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RetryStateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not register the retry metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("could not open the retry event log {path}: {source}")]
    EventLog {
        path: String,
        source: std::io::Error,
    },
}

/// Shared retry state for one device. Cheap to clone (everything inside is shared).
#[derive(Debug, Clone)]
pub struct RetryState {
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) metrics: Option<Arc<RetryMetrics>>,
    pub(crate) events: Events,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Arc<Mutex<SmallRng>>,
}

impl RetryState {
    /// Starts a builder (defaults: a new registry with metrics, system clock, OS-seeded jitter).
    pub fn builder() -> RetryStateBuilder {
        RetryStateBuilder::default()
    }

    /// The same budget, metrics, events, clock and random source with a breaker of its own for
    /// `device`.
    pub fn for_device(&self, device: i32) -> RetryState {
        let gauge = self.metrics.as_ref().map(|m| m.breaker_gauge(device));
        let breaker = CircuitBreaker::new(
            self.breaker.config().clone(),
            device,
            self.clock.clone(),
            gauge,
            self.events.clone(),
        );
        RetryState {
            breaker: Arc::new(breaker),
            ..self.clone()
        }
    }

    /// The same budget, metrics, events, clock and random source with a breaker of its own
    /// that no gauge shows (the CPU fallback's, next to the device's).
    pub fn with_private_breaker(&self) -> RetryState {
        let breaker = CircuitBreaker::new(
            self.breaker.config().clone(),
            self.breaker.device(),
            self.clock.clone(),
            None,
            self.events.clone(),
        );
        RetryState {
            breaker: Arc::new(breaker),
            ..self.clone()
        }
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    pub fn metrics(&self) -> Option<&RetryMetrics> {
        self.metrics.as_deref()
    }

    /// The registry holding the retry metrics (`None` when built without metrics).
    pub fn registry(&self) -> Option<&Registry> {
        self.metrics.as_ref().map(|m| m.registry())
    }

    /// Where recovery events go (the engine writes its own there too).
    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Builds a [`RetryState`].
#[derive(Debug, Default)]
pub struct RetryStateBuilder {
    breaker: BreakerConfig,
    budget: BudgetConfig,
    registry: Option<Registry>,
    no_metrics: bool,
    clock: Option<Arc<dyn Clock>>,
    seed: Option<u64>,
    event_log: Option<std::path::PathBuf>,
    device: i32,
}

impl RetryStateBuilder {
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    pub fn budget(mut self, config: BudgetConfig) -> Self {
        self.budget = config;
        self
    }

    /// Registers the metrics in `registry` instead of a new one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// No Prometheus metrics at all.
    pub fn without_metrics(mut self) -> Self {
        self.no_metrics = true;
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Seeds the jitter's random source, for reproducible delays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Also writes every event as a JSON line to `path` (appending).
    pub fn event_log(mut self, path: impl AsRef<Path>) -> Self {
        self.event_log = Some(path.as_ref().to_path_buf());
        self
    }

    /// The device of the breaker (default 0).
    pub fn device(mut self, device: i32) -> Self {
        self.device = device;
        self
    }

    pub fn build(self) -> Result<RetryState, RetryStateError> {
        self.breaker.validate()?;
        self.budget.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let metrics = if self.no_metrics {
            None
        } else {
            let registry = self.registry.unwrap_or_default();
            Some(Arc::new(RetryMetrics::register(&registry)?))
        };
        let sink = match &self.event_log {
            Some(path) => Some(Arc::new(JsonlSink::open(path).map_err(|source| {
                RetryStateError::EventLog {
                    path: path.display().to_string(),
                    source,
                }
            })?)),
            None => None,
        };
        let events = Events::new(sink);
        let rng = match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let budget = RetryBudget::new(
            self.budget,
            clock.clone(),
            metrics.as_ref().map(|m| m.budget_gauge()),
        );
        let breaker = CircuitBreaker::new(
            self.breaker,
            self.device,
            clock.clone(),
            metrics.as_ref().map(|m| m.breaker_gauge(self.device)),
            events.clone(),
        );
        Ok(RetryState {
            breaker: Arc::new(breaker),
            budget: Arc::new(budget),
            metrics,
            events,
            clock,
            rng: Arc::new(Mutex::new(rng)),
        })
    }
}
