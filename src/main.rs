use std::sync::Arc;

use clap::Parser;
use dispute_service::{
    clock::SystemClock,
    config::{Cli, Command},
    domain::Role,
    grpc::auth,
    healthcheck, shutdown,
    startup::{self, Application},
    telemetry::{self, Telemetry, TraceExport},
};
use tonic_health::pb::health_check_response::ServingStatus;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(start());
    // Everything that matters is done (drained, committed, flushed) within the shutdown
    // budget; a blocking thread still running (a key-file read stuck on a dead mount) must
    // not hold the exit, as dropping the runtime would.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

async fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = Telemetry::init(cli.log_format, &TraceExport::from_env()?)?;
    // `serve` stops within one budget, the flush included (README, "Deploying").
    let flush = match &cli.command {
        Command::Serve(config) => shutdown::flush_share(config.shutdown_grace),
        _ => telemetry::FLUSH_TIMEOUT,
    };
    let result = run(cli.command).await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "exiting on error");
    }
    // Spans still queued are exported before the process ends (SIGTERM included).
    telemetry.shutdown(flush).await;
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => {
            let pool = startup::pool(&config.database)?;
            if config.migrate_on_start {
                startup::migrate(&pool).await?;
            }
            let app = Application::build(*config, pool, Arc::new(SystemClock)).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate(database) => startup::migrate(&startup::pool(&database)?).await,
        Command::Healthcheck(config) => {
            let status = healthcheck::check(&config).await?;
            anyhow::ensure!(
                status == ServingStatus::Serving,
                "{} reports {status:?}",
                config.addr
            );
            println!("SERVING");
            Ok(())
        }
        Command::Token(config) => {
            let role = Role::from_claim(&config.role)
                .ok_or_else(|| anyhow::anyhow!("--role must be buyer, seller, agent or service"))?;
            println!(
                "{}",
                auth::mint_hs256(&config.auth, role, &config.sub, config.ttl)?
            );
            Ok(())
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
