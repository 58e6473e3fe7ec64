//! `ConfigError`: an invalid setting, named by its field.

/// A configuration value that cannot be used. `field` is the setting's path as a user writes it
/// (`retry.backoff_multiplier`, `HIPINFER_RETRY_MAX_DELAY`), so the message points at the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}
