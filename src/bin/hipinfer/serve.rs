//! `serve`: the HTTP API until SIGTERM or ctrl-c, then a graceful stop (exit 0).

use std::process::ExitCode;

use hipinfer::engine::InferenceEngine;
use hipinfer::server::{self, ConnectionLimits, ServerConfig};

use crate::args::ServeArgs;
use crate::Failure;

pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let config = args.engine.engine_config(&args.common)?;
    let engine = InferenceEngine::new(config)?;
    let server_config = ServerConfig {
        host: args.host,
        port: args.port,
        api_key: args.api_key.filter(|k| !k.is_empty()),
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
    if server_config.connections.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let address = (server_config.host.as_str(), server_config.port);
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
            format!(
                "could not listen on {}:{}: {e}",
                server_config.host, server_config.port
            )
        })?;
        // Installed before the address is announced: a SIGTERM right after it stops cleanly.
        let shutdown = server::shutdown_signal();
        eprintln!(
            "hipinfer: serving {} on {} ({}) at http://{}",
            engine.model().name(),
            engine.device().backend,
            engine.device().name,
            listener.local_addr()?
        );
        server::serve_on(listener, engine, server_config, shutdown).await?;
        Ok::<_, Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
