//! The `jobcast` binary: parse the command line; run a client command, or
//! start logging, open the store, bind and hand over to the server.

use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = jobcast::cli::Cli::parse_args();
    match cli.command {
        Some(command) => jobcast::cli::run(command).await,
        None => serve(cli.server).await,
    }
}

async fn serve(config: jobcast::Config) -> ExitCode {
    jobcast::telemetry::init(&config.log, config.log_format);
    match start_and_serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jobcast: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Everything that can stop the server at start comes before the bind, so
/// a port that answers is a server whose store is open.
async fn start_and_serve(config: jobcast::Config) -> Result<(), Box<dyn std::error::Error>> {
    let transport = jobcast::Transport::from_config(&config)?;
    let shutdown = CancellationToken::new();
    let app = jobcast::start(&config, shutdown.clone()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    tracing::info!(store = %config.store, "jobs kept in the store");
    tokio::spawn(jobcast::cancel_on_signal(shutdown.clone()));
    jobcast::serve_with(listener, app, transport, shutdown).await?;
    Ok(())
}
