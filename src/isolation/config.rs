//! Where steps run: in this process, or in a worker process the engine supervises.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::retry::serde_duration;

/// `in_process` (the default, and right for the CPU backend) or `subprocess` (recommended for
/// HIP: a fault that kills the process kills only the worker, and no request is lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    #[default]
    InProcess,
    Subprocess,
}

impl std::str::FromStr for Isolation {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "in_process" | "inprocess" => Ok(Isolation::InProcess),
            "subprocess" => Ok(Isolation::Subprocess),
            _ => Err(ConfigError::new(
                "isolation",
                format!("{text:?} is not one of in_process, subprocess"),
            )),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::InProcess => "in_process",
            Isolation::Subprocess => "subprocess",
        })
    }
}

/// The worker process (with `isolation: subprocess`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The program to start as the worker (`None`: this process's own executable, which must
    /// call `hipinfer::isolation::run_worker_if_requested()` first thing in `main`; the
    /// `hipinfer` binary does).
    pub program: Option<PathBuf>,
    /// Arguments for the program.
    pub args: Vec<String>,
    /// A step (or probe) not answered within this long is a hung worker: it is killed and
    /// replaced (30 s).
    #[serde(with = "serde_duration")]
    pub step_timeout: Duration,
    /// Time for a new worker to load the model and report ready (120 s).
    #[serde(with = "serde_duration")]
    pub start_timeout: Duration,
    /// More than this many restarts within `restart_window` mark the engine unhealthy instead
    /// of crash-looping (3 in 10 minutes).
    pub max_restarts: u32,
    #[serde(with = "serde_duration")]
    pub restart_window: Duration,
    /// The wait before a restart, doubling with each restart since the last completed step
    /// (20 ms, up to 10 s).
    #[serde(with = "serde_duration")]
    pub restart_delay: Duration,
    #[serde(with = "serde_duration")]
    pub max_restart_delay: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            program: None,
            args: Vec::new(),
            step_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(120),
            max_restarts: 3,
            restart_window: Duration::from_secs(600),
            restart_delay: Duration::from_millis(20),
            max_restart_delay: Duration::from_secs(10),
        }
    }
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.step_timeout.is_zero() {
            return Err(ConfigError::new(
                "worker.step_timeout",
                "must be more than zero",
            ));
        }
        if self.start_timeout.is_zero() {
            return Err(ConfigError::new(
                "worker.start_timeout",
                "must be more than zero",
            ));
        }
        if self.restart_window.is_zero() {
            return Err(ConfigError::new(
                "worker.restart_window",
                "must be more than zero",
            ));
        }
        if self.max_restart_delay < self.restart_delay {
            return Err(ConfigError::new(
                "worker.max_restart_delay",
                format!(
                    "{:?} is shorter than restart_delay {:?}",
                    self.max_restart_delay, self.restart_delay
                ),
            ));
        }
        Ok(())
    }
}
