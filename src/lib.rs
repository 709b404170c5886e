#![forbid(unsafe_code)]
//! dispute-service: buyer disputes on marketplace orders and where the escrowed money goes.

pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod healthcheck;
pub mod metrics;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
