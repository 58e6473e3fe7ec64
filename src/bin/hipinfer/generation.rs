//! `serve` and `chaos` with `--model FILE.gguf`: a language model through the generation
//! engine (the CPU backend: the language-model kernels are CPU-only so far).

use std::process::ExitCode;

use hipinfer::backend::BackendChoice;
use hipinfer::chaos::{run_generation_campaign, GenerationChaosConfig};
use hipinfer::generation::{GenerationConfig, GenerationEngine, RunnerOptions};
use hipinfer::isolation::{Isolation, WorkerConfig};
use hipinfer::retry::RetryConfig;
use hipinfer::server;
use prometheus::Registry;

use crate::args::{ChaosArgs, Common, EngineArgs, GenerationArgs, ServeArgs};
use crate::progress::Progress;
use crate::Failure;

/// What the flags set of the generation engine, and the refusals of what it cannot do yet.
pub fn config(
    common: &Common,
    engine: &EngineArgs,
    args: &GenerationArgs,
) -> Result<GenerationConfig, Failure> {
    if matches!(
        common.backend,
        Some(BackendChoice::Hip | BackendChoice::Cuda)
    ) {
        return Err(
            "a language model runs on --backend cpu for now (its GPU kernels are not \
                    written yet)"
                .into(),
        );
    }
    let defaults = GenerationConfig::default();
    let config = GenerationConfig {
        max_total_tokens: args.max_total_tokens,
        max_running: args.max_running.unwrap_or(defaults.max_running),
        default_max_tokens: args
            .default_max_tokens
            .unwrap_or(defaults.default_max_tokens),
        max_input_length: engine.max_input_length,
        ..defaults
    };
    config.validate()?;
    Ok(config)
}

/// The worker process of `--isolation subprocess` (`auto` and `in_process` keep the steps in
/// this process: the language model runs on the CPU); its program from
/// `HIPINFER_WORKER_PROGRAM` when set, else this binary.
fn worker(engine: &EngineArgs) -> Option<WorkerConfig> {
    (engine.isolation == Some(Isolation::Subprocess)).then(|| WorkerConfig {
        program: std::env::var_os("HIPINFER_WORKER_PROGRAM").map(Into::into),
        ..WorkerConfig::default()
    })
}

pub fn open(
    common: &Common,
    engine: &EngineArgs,
    config: GenerationConfig,
    registry: &Registry,
) -> Result<GenerationEngine, Failure> {
    let path = common.model.clone().unwrap_or_default();
    let options = RunnerOptions {
        threads: common.threads,
        retry: RetryConfig::from_env()?,
        faults: None,
        seed: None,
        worker: worker(engine),
        step_timeout: engine.step_timeout,
    };
    Ok(GenerationEngine::open(
        &path,
        config,
        options,
        registry.clone(),
    )?)
}

pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let config = config(&args.common, &args.engine, &args.generation)?;
    let engine = open(&args.common, &args.engine, config, &Registry::new())?;
    let server_config = crate::serve::server_config(&args)?;
    let what = format!("{} (generation)", engine.model().path().display());
    crate::serve::run(server_config, &what, |listener, config, shutdown| {
        server::llm::serve_on(listener, engine, config, shutdown)
    })
}

pub fn chaos(args: ChaosArgs) -> Result<ExitCode, Failure> {
    if args.abort_on_fault || args.real_fault_rate > 0.0 {
        return Err(
            "--abort-on-fault and --real-fault-rate are not available for language models yet \
             (--abort-rate and --hang-rate are, with --isolation subprocess)"
                .into(),
        );
    }
    if (args.abort_rate > 0.0 || args.hang_rate > 0.0)
        && args.engine.isolation != Some(Isolation::Subprocess)
    {
        return Err(
            "aborts and hangs take the process down: they need --isolation subprocess".into(),
        );
    }
    let engine = config(&args.common, &args.engine, &args.generation)?;
    let config = GenerationChaosConfig {
        model: args.common.model.clone().unwrap_or_default(),
        engine,
        threads: args.common.threads,
        retry: RetryConfig::from_env()?,
        requests: args.requests,
        concurrency: args.concurrency,
        max_tokens: args.max_tokens,
        seed: args.seed,
        transient_rate: args.faults.transient_rate,
        oom_rate: args.faults.oom_rate,
        reset_rate: args.faults.reset_rate,
        abort_rate: args.abort_rate,
        hang_rate: args.hang_rate,
        sticky_scope: args.faults.sticky_scope,
        domain: hipinfer::backend::FaultDomain::process(),
        request_timeout: std::time::Duration::from_secs(600),
        // A campaign restarts as many workers as its faults kill.
        worker: worker(&args.engine).map(|w| WorkerConfig {
            max_restarts: u32::MAX,
            ..w
        }),
        step_timeout: args.engine.step_timeout,
    };
    let progress = Progress::new("chaos");
    progress.note("reference run (no faults), then the faulty run");
    let report = run_generation_campaign(&config, &|done, total| progress.update(done, total))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
