//! `RetryConfig`: how often and how long to retry a device operation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Op};

use super::duration_text::{parse_duration, serde_duration};

/// How the delay grows from one retry to the next. In configuration files: `"none"`, `"fixed"`,
/// `"exponential"` or `{"schedule": ["10s", "30s", "90s"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Retry at once.
    None,
    /// Always `initial_delay`.
    Fixed,
    /// `initial_delay × backoff_multiplier^(retry − 1)`, capped at `max_delay`.
    Exponential,
    /// An explicit list (e.g. 10 s, 30 s, 90 s); retries past its end reuse the last entry.
    Schedule(#[serde(with = "serde_duration::list")] Vec<Duration>),
}

/// How the computed delay is randomised, so that many callers do not retry in lockstep.
/// Every kind stays within `[0, max_delay]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// Uniform in `[0, delay]` (AWS "full jitter": the least total work).
    Full,
    /// Uniform in `[delay / 2, delay]`.
    Equal,
    /// Uniform in `[initial_delay, 3 × previous delay]`, capped (AWS "decorrelated jitter");
    /// grows on its own, independent of the backoff kind.
    Decorrelated,
}

impl Jitter {
    fn parse(text: &str) -> Option<Jitter> {
        match text {
            "none" | "off" => Some(Jitter::None),
            "full" | "on" => Some(Jitter::Full),
            "equal" => Some(Jitter::Equal),
            "decorrelated" => Some(Jitter::Decorrelated),
            _ => None,
        }
    }
}

/// Retry settings for device operations. Build with the `with_*` methods from
/// [`RetryConfig::new`] (the defaults below), or read `HIPINFER_RETRY_*` with
/// [`RetryConfig::from_env`]; [`super::RetryPolicy::new`] validates it.
///
/// | setting | default |
/// |---|---|
/// | `max_retries` | 3 (0 disables retry) |
/// | `initial_delay` | 10 ms |
/// | `backoff` | exponential |
/// | `backoff_multiplier` | 2.0 |
/// | `max_delay` | 1 s |
/// | `jitter` | full |
/// | `deadline` | none (a total time for all attempts) |
/// | `poll_interval` / `max_polls` | 1 ms / 1000 (for "not ready" answers) |
///
/// In configuration files (serde) durations are text (`"10ms"`), and every field may be left
/// out for its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_retries: u32,
    #[serde(with = "serde_duration")]
    pub initial_delay: Duration,
    pub backoff_multiplier: f64,
    #[serde(with = "serde_duration")]
    pub max_delay: Duration,
    pub backoff: Backoff,
    pub jitter: Jitter,
    #[serde(with = "serde_duration::option")]
    pub deadline: Option<Duration>,
    #[serde(with = "serde_duration")]
    pub poll_interval: Duration,
    pub max_polls: u32,
    /// Per-operation replacements of the whole configuration (e.g. more patience for allocate).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<Op, RetryConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 3,
            initial_delay: Duration::from_millis(10),
            backoff_multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            backoff: Backoff::Exponential,
            jitter: Jitter::Full,
            deadline: None,
            poll_interval: Duration::from_millis(1),
            max_polls: 1000,
            overrides: BTreeMap::new(),
        }
    }
}

impl RetryConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// No retries at all: every operation is tried once.
    pub fn disabled() -> Self {
        Self::new().with_max_retries(0)
    }

    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    pub fn with_backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.backoff_multiplier = multiplier;
        self
    }

    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// An explicit delay schedule. Raises `max_delay` to the largest entry, so the schedule is
    /// followed as written.
    pub fn with_schedule(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        let delays: Vec<Duration> = delays.into_iter().collect();
        if let Some(&longest) = delays.iter().max() {
            self.max_delay = self.max_delay.max(longest);
        }
        self.backoff = Backoff::Schedule(delays);
        self
    }

    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// A total time for all attempts: no sleep is started that would end past it.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    pub fn with_max_polls(mut self, max_polls: u32) -> Self {
        self.max_polls = max_polls;
        self
    }

    /// Uses `config` instead of this one for `op`.
    pub fn with_op_override(mut self, op: Op, config: RetryConfig) -> Self {
        self.overrides.insert(op, config);
        self
    }

    /// The configuration that applies to `op`.
    pub fn for_op(&self, op: Op) -> &RetryConfig {
        self.overrides.get(&op).unwrap_or(self)
    }

    /// Checks every value; the error names the first bad field (prefixed with `retry.`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at("retry")?;
        for (op, config) in &self.overrides {
            let path = format!("retry.overrides.{op}");
            if !config.overrides.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.overrides"),
                    "an override cannot have overrides of its own",
                ));
            }
            config.validate_at(&path)?;
        }
        Ok(())
    }

    fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        let field = |name: &str| format!("{path}.{name}");
        if !self.backoff_multiplier.is_finite() || self.backoff_multiplier < 1.0 {
            return Err(ConfigError::new(
                field("backoff_multiplier"),
                format!("{} is not a finite number ≥ 1.0", self.backoff_multiplier),
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(ConfigError::new(
                field("max_delay"),
                format!(
                    "{:?} is shorter than initial_delay {:?}",
                    self.max_delay, self.initial_delay
                ),
            ));
        }
        if let Backoff::Schedule(delays) = &self.backoff {
            if delays.is_empty() {
                return Err(ConfigError::new(
                    field("schedule"),
                    "the schedule has no delays",
                ));
            }
            if let Some(i) = delays.iter().position(|d| *d > self.max_delay) {
                return Err(ConfigError::new(
                    field("schedule"),
                    format!(
                        "entry {i} ({:?}) is longer than max_delay {:?}",
                        delays[i], self.max_delay
                    ),
                ));
            }
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                field("deadline"),
                "a zero deadline allows no attempt",
            ));
        }
        Ok(())
    }

    /// Reads `HIPINFER_RETRY_*` from the environment over the defaults; see
    /// [`RetryConfig::from_lookup`] for the names.
    pub fn from_env() -> Result<RetryConfig, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (a variable name → its value) over the defaults.
    ///
    /// `HIPINFER_RETRY_MAX_RETRIES`, `_INITIAL_DELAY`, `_BACKOFF_MULTIPLIER`, `_MAX_DELAY`,
    /// `_BACKOFF` (`none|fixed|exponential|schedule`), `_SCHEDULE` (comma-separated durations),
    /// `_JITTER` (`none|full|equal|decorrelated`), `_DEADLINE`, `_POLL_INTERVAL`, `_MAX_POLLS`.
    /// Durations take a unit (`250us`, `10ms`, `1.5s`, `2m`); a bare number is milliseconds.
    /// Any of these with an operation after `RETRY_` (`HIPINFER_RETRY_ALLOCATE_MAX_RETRIES`)
    /// overrides that operation only. The result is validated.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<RetryConfig, ConfigError> {
        RetryConfig::new().with_vars(lookup)
    }

    /// This configuration (from a file, say) overridden by the variables `lookup` finds, as
    /// [`RetryConfig::from_lookup`] reads them; validated. A per-operation override the
    /// configuration already has is a whole replacement: `HIPINFER_RETRY_<OP>_*` variables apply
    /// to it, the global `HIPINFER_RETRY_*` ones do not.
    pub fn with_vars(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<RetryConfig, ConfigError> {
        self.apply_vars("HIPINFER_RETRY_", &lookup)?;
        for op in Op::ALL {
            let prefix = format!("HIPINFER_RETRY_{}_", op.as_str().to_ascii_uppercase());
            let mut op_config = self
                .overrides
                .get(&op)
                .cloned()
                .unwrap_or_else(|| RetryConfig {
                    overrides: BTreeMap::new(),
                    ..self.clone()
                });
            if op_config.apply_vars(&prefix, &lookup)? {
                self.overrides.insert(op, op_config);
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Applies the variables under `prefix`; returns whether any was set.
    fn apply_vars(
        &mut self,
        prefix: &str,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<bool, ConfigError> {
        let mut any = false;
        let mut get = |key: &str| {
            let name = format!("{prefix}{key}");
            let value = lookup(&name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty());
            any |= value.is_some();
            value.map(|v| (name, v))
        };
        let bad = |name: &str, value: &str, expected: &str| {
            ConfigError::new(name, format!("{value:?} is not {expected}"))
        };
        if let Some((name, v)) = get("MAX_RETRIES") {
            self.max_retries = v
                .parse()
                .map_err(|_| bad(&name, &v, "a whole number ≥ 0"))?;
        }
        if let Some((name, v)) = get("INITIAL_DELAY") {
            self.initial_delay = parse_duration(&v).ok_or_else(|| bad(&name, &v, "a duration"))?;
        }
        if let Some((name, v)) = get("BACKOFF_MULTIPLIER") {
            self.backoff_multiplier = v.parse().map_err(|_| bad(&name, &v, "a number ≥ 1.0"))?;
        }
        if let Some((name, v)) = get("MAX_DELAY") {
            self.max_delay = parse_duration(&v).ok_or_else(|| bad(&name, &v, "a duration"))?;
        }
        let schedule = match get("SCHEDULE") {
            Some((name, v)) => Some(
                v.split(',')
                    .map(|part| parse_duration(part.trim()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(&name, &v, "a comma-separated list of durations"))?,
            ),
            None => None,
        };
        if let Some((name, v)) = get("BACKOFF") {
            self.backoff = match v.to_ascii_lowercase().as_str() {
                "none" => Backoff::None,
                "fixed" => Backoff::Fixed,
                "exponential" => Backoff::Exponential,
                "schedule" => match &schedule {
                    Some(delays) => Backoff::Schedule(delays.clone()),
                    None => {
                        return Err(ConfigError::new(
                            format!("{prefix}SCHEDULE"),
                            "BACKOFF=schedule needs a SCHEDULE of delays",
                        ))
                    }
                },
                _ => return Err(bad(&name, &v, "one of none, fixed, exponential, schedule")),
            };
        }
        if let Some(delays) = schedule {
            *self = std::mem::take(self).with_schedule(delays);
        }
        if let Some((name, v)) = get("JITTER") {
            self.jitter = Jitter::parse(&v.to_ascii_lowercase())
                .ok_or_else(|| bad(&name, &v, "one of none, full, equal, decorrelated"))?;
        }
        if let Some((name, v)) = get("DEADLINE") {
            self.deadline = Some(parse_duration(&v).ok_or_else(|| bad(&name, &v, "a duration"))?);
        }
        if let Some((name, v)) = get("POLL_INTERVAL") {
            self.poll_interval = parse_duration(&v).ok_or_else(|| bad(&name, &v, "a duration"))?;
        }
        if let Some((name, v)) = get("MAX_POLLS") {
            self.max_polls = v
                .parse()
                .map_err(|_| bad(&name, &v, "a whole number ≥ 0"))?;
        }
        Ok(any)
    }
}
