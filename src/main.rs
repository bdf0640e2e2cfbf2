//! The `jobcast` binary: parse the command line; run a client command, or
//! start logging, bind and hand over to the server.

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
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("jobcast: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
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
