//! The `jobcast` binary: parse the config, start logging, bind, hand over.

use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = jobcast::Config::parse();
    jobcast::telemetry::init(&config.log);
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("jobcast: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %config.listen, "jobcast listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(jobcast::cancel_on_signal(shutdown.clone()));
    match jobcast::run(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jobcast: {error}");
            ExitCode::FAILURE
        }
    }
}
