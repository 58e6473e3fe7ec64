//! `hipinfer chaos`: the fault campaign a user runs to see that no request is lost or wrong when
//! the device fails — transient errors, out of memory and poisoned contexts at chosen rates.

mod campaign;
mod corpus;
mod generation;

pub use campaign::{
    fault_plan, percentile, run_campaign, ChaosConfig, ChaosReport, Injected, OOM_CODE, RESET_CODE,
    TOLERANCE, TRANSIENT_CODE,
};
pub use corpus::corpus;
pub use generation::{
    run_generation_campaign, DeviceErrors, GenerationChaosConfig, GenerationChaosReport,
};
