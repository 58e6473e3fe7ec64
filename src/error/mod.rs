//! Errors: HIP status codes and the recovery class each one needs.

pub mod codes;
mod config_error;
mod hip_error;
mod op;
mod recovery;

pub use config_error::ConfigError;
pub use hip_error::HipError;
pub use op::Op;
pub use recovery::{Classify, Recovery};
