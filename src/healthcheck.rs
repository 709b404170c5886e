//! `dispute-service healthcheck`: asks a server's `grpc.health.v1` service whether it is
//! SERVING. For probes and `helm test` pods that have no shell and no grpcurl: the image
//! holds only this binary.

use std::time::Duration;

use anyhow::Context;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::config::HealthcheckConfig;

/// Whether the server at `config.addr` reports `config.service` SERVING within the timeout.
pub async fn check(config: &HealthcheckConfig) -> anyhow::Result<ServingStatus> {
    tokio::time::timeout(config.timeout, ask(config))
        .await
        .with_context(|| format!("no answer from {} within {:?}", config.addr, config.timeout))?
}

async fn ask(config: &HealthcheckConfig) -> anyhow::Result<ServingStatus> {
    let endpoint = if config.addr.contains("://") {
        config.addr.clone()
    } else {
        format!("http://{}", config.addr)
    };
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .context("--addr is not host:port or a URL")?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", config.addr))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: config.service.clone(),
        })
        .await
        .context("grpc.health.v1.Health/Check")?;
    Ok(response.into_inner().status())
}
