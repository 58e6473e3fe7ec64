//! What can go wrong loading or running a language model: each error names the thing at fault
//! (the file and its field, the argument, or the device call and its recovery class).

use std::path::PathBuf;

use crate::error::Recovery;
use crate::gguf::GgufError;

use super::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    File(#[from] GgufError),
    #[error("{path}: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// A bad request: the argument and why.
    #[error("{name}: {message}")]
    Argument { name: &'static str, message: String },
    /// A device call failed (after the retry layer's tries), with its recovery class.
    #[error("device: {message}")]
    Device { message: String, recovery: Recovery },
}

impl LlmError {
    pub fn argument(name: &'static str, message: impl Into<String>) -> LlmError {
        LlmError::Argument {
            name,
            message: message.into(),
        }
    }

    pub fn device<E: std::error::Error + crate::error::Classify>(error: E) -> LlmError {
        LlmError::Device {
            recovery: error.recovery(),
            message: error.to_string(),
        }
    }

    /// The device failure's recovery class (`None`: not a device failure).
    pub fn recovery(&self) -> Option<Recovery> {
        match self {
            LlmError::Device { recovery, .. } => Some(*recovery),
            _ => None,
        }
    }
}
