//! The `polymq` binary: parse the command line, load the configuration, run until SIGINT or
//! SIGTERM, then drain and exit 0.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on a configuration error
//! (the message names the offending key).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use polymq::config::Config;
use polymq::{app, telemetry};

/// One broker for NSQ, NATS, MQTT and ZMTP on one routing core.
#[derive(Debug, Parser)]
#[command(name = "polymq", version, about)]
struct Cli {
    /// Configuration file (default: ./config.toml if present, else built-in defaults).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one key, e.g. `--set nats.listen=127.0.0.1:4223` (repeatable; wins over the
    /// file and POLYMQ_* environment variables).
    #[arg(short, long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the effective configuration (JSON) and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = cli.config.clone().or_else(|| {
        let default = PathBuf::from("config.toml");
        default.exists().then_some(default)
    });
    let config = match Config::load(file.as_deref(), &cli.set) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("polymq: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        return match config_json(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("polymq: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init(&config.log);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("polymq: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_json(config: &Config) -> anyhow::Result<String> {
    let value = serde_json::to_value(config).context("serialising configuration")?;
    Ok(serde_json::to_string_pretty(&value)?)
}

#[tokio::main]
async fn run(config: Config) -> anyhow::Result<()> {
    let mut running = app::start(config).await.context("starting polymq")?;
    tokio::select! {
        signal = shutdown_signal() => {
            signal.context("installing signal handlers")?;
            tracing::info!("shutdown requested; draining");
        }
        Some((listener, result)) = running.wait_any() => {
            result.with_context(|| format!("{listener} listener failed"))?;
            anyhow::bail!("{listener} listener stopped unexpectedly");
        }
    }
    running.shutdown().await.context("persisting storage")?;
    tracing::info!("polymq stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}
