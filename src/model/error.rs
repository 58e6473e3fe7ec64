//! `ModelError`: what can go wrong loading or running a model, naming the file, tensor or input
//! at fault.

use std::path::PathBuf;

use crate::error::Recovery;

/// A model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model folder {path}: {message}")]
    Folder { path: PathBuf, message: String },
    #[error("could not read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: invalid tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("input {index}: {message}")]
    Input { index: usize, message: String },
    #[error("device error ({recovery}): {message}")]
    Device {
        recovery: Recovery,
        message: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ModelError {
    /// A backend failure, keeping its recovery class for whoever decides to replay.
    pub fn device<E: std::error::Error + crate::error::Classify + Send + Sync + 'static>(
        error: E,
    ) -> Self {
        ModelError::Device {
            recovery: error.recovery(),
            message: error.to_string(),
            source: Box::new(error),
        }
    }

    /// The recovery class of a device failure (`None` for every other error: those are permanent).
    pub fn recovery(&self) -> Option<Recovery> {
        match self {
            ModelError::Device { recovery, .. } => Some(*recovery),
            _ => None,
        }
    }
}
