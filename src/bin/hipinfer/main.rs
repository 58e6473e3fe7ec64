//! `hipinfer`: embed, benchmark, serve, run a fault campaign, describe the machine — a thin user
//! of the library.

mod args;
mod bench_engine;
mod bench_streams;
mod chaos;
mod generate;
mod generation;
mod info;
mod model;
mod progress;
mod serve;

use std::process::ExitCode;

use args::{Cli, Command};
use clap::Parser;

/// A command's failure: printed as one `error: …` line, exit code 1.
pub type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    // Started as a worker process by a supervising engine: serve it, then exit.
    hipinfer::isolation::run_worker_if_requested();
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Chaos(_));
    let log = cli
        .log
        .clone()
        .unwrap_or_else(|| if quiet { "error" } else { "warn" }.into());
    let filter = tracing_subscriber::EnvFilter::try_new(&log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Embed(args) => model::embed(args),
        Command::Bench(args) if generate::is_gguf(args.common.model.as_deref()) => {
            if args.streams > 0 {
                bench_streams::bench_streams(args)
            } else {
                generate::bench(args)
            }
        }
        Command::Bench(args) if args.http || args.engine_only => bench_engine::bench(args),
        Command::Bench(args) => model::bench(args),
        Command::Serve(args) if generate::is_gguf(args.common.model.as_deref()) => {
            generation::serve(args)
        }
        Command::Serve(args) => serve::serve(args),
        Command::Chaos(args) if generate::is_gguf(args.common.model.as_deref()) => {
            generation::chaos(args)
        }
        Command::Chaos(args) => chaos::chaos(args),
        Command::Info(args) => info::info(args),
        Command::Generate(args) => generate::generate(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
