//! `chaos`: the fault campaign; one JSON object, exit 0 only if nothing was lost or wrong.

use std::process::ExitCode;

use hipinfer::backend::BackendChoice;
use hipinfer::chaos::{run_campaign, ChaosConfig};

use crate::args::ChaosArgs;
use crate::progress::Progress;
use crate::Failure;

pub fn chaos(args: ChaosArgs) -> Result<ExitCode, Failure> {
    let mut engine = args.engine.engine_config(&args.common)?;
    let gpu = matches!(engine.backend, BackendChoice::Hip | BackendChoice::Cuda);
    if gpu && args.real_fault_rate == 0.0 {
        return Err(
            "on a GPU, chaos injects real faults: add --real-fault-rate P (simulated \
                    faults run on --backend cpu or auto)"
                .into(),
        );
    }
    // A campaign counts worker restarts rather than capping them.
    engine.worker.max_restarts = u32::MAX;
    let mut config = ChaosConfig::new(engine, args.requests, args.concurrency, args.seed);
    config.transient_rate = args.faults.transient_rate;
    config.oom_rate = args.faults.oom_rate;
    config.reset_rate = args.faults.reset_rate;
    config.sticky_scope = args.faults.sticky_scope;
    config.abort_on_fault = args.abort_on_fault;
    config.abort_rate = args.abort_rate;
    config.hang_rate = args.hang_rate;
    config.real_fault_rate = args.real_fault_rate;
    let progress = Progress::new("chaos");
    progress.note("reference run (no faults), then the faulty run");
    let report = run_campaign(&config, &|done, total| progress.update(done, total))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
