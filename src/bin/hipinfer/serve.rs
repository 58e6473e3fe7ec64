//! `serve`: the HTTP API until SIGTERM or ctrl-c, then a graceful stop (exit 0).

use std::process::ExitCode;

use hipinfer::engine::InferenceEngine;
use hipinfer::server::{self, ConnectionLimits, ServerConfig};

use crate::args::ServeArgs;
use crate::Failure;

pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let config = args.engine.engine_config(&args.common)?;
    let engine = InferenceEngine::new(config)?;
    let server_config = server_config(&args)?;
    let what = format!(
        "{} on {} ({})",
        engine.model().name(),
        engine.device().backend,
        engine.device().name
    );
    run(server_config, &what, |listener, config, shutdown| {
        server::serve_on(listener, engine, config, shutdown)
    })
}

/// The server settings of `serve`'s flags (embedding or language model alike).
pub fn server_config(args: &ServeArgs) -> Result<ServerConfig, Failure> {
    let config = ServerConfig {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        payload_limit: args.payload_limit,
        auto_truncate: args.auto_truncate,
        connections: ConnectionLimits {
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args
                .max_connections
                .unwrap_or_else(server::default_max_connections),
            ..ConnectionLimits::default()
        },
        shutdown_grace: args.shutdown_grace,
    };
    if config.connections.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    Ok(config)
}

/// Binds `config`'s address, announces `what` and the address on stderr, and serves with
/// `serve` until SIGTERM or ctrl-c (a graceful stop: exit 0).
pub fn run<F, Fut>(config: ServerConfig, what: &str, serve: F) -> Result<ExitCode, Failure>
where
    F: FnOnce(
        tokio::net::TcpListener,
        ServerConfig,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let address = (config.host.as_str(), config.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("could not listen on {}:{}: {e}", config.host, config.port))?;
        // Installed before the address is announced: a SIGTERM right after it stops cleanly.
        let shutdown = Box::pin(server::shutdown_signal());
        eprintln!(
            "hipinfer: serving {what} at http://{}",
            listener.local_addr()?
        );
        serve(listener, config, shutdown).await?;
        Ok::<_, Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
