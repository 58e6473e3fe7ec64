//! Where steps run: in this process, or in a worker process the engine supervises.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::retry::serde_duration;

/// Where steps run. `auto` (the default) is `subprocess` on a GPU backend — a GPU memory fault
/// poisons or aborts the whole process (ROCm, CUDA), so surviving it takes a process boundary —
/// and `in_process` on the CPU. `in_process` on a GPU stays possible (a WARN says what it risks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    #[default]
    Auto,
    InProcess,
    Subprocess,
}

impl Isolation {
    /// What `auto` means for a backend that is (`gpu`) or is not a GPU.
    pub fn resolve(self, gpu: bool) -> Isolation {
        match self {
            Isolation::Auto if gpu => Isolation::Subprocess,
            Isolation::Auto => Isolation::InProcess,
            other => other,
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "auto" => Ok(Isolation::Auto),
            "in_process" | "inprocess" => Ok(Isolation::InProcess),
            "subprocess" => Ok(Isolation::Subprocess),
            _ => Err(ConfigError::new(
                "isolation",
                format!("{text:?} is not one of auto, in_process, subprocess"),
            )),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Auto => "auto",
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
