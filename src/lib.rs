// No unsafe code but one reviewed exception: `telemetry::Unentered` passes a layer's
// `downcast_raw` (an unsafe trait method of tracing-subscriber) on unchanged.
#![deny(unsafe_code)]
//! dispute-service: buyer disputes on marketplace orders and where the escrowed money goes.

// The commands without row locks exist only to prove the schema alone stops every double
// settlement (README, "Fault tolerance"); a release build must never carry them.
#[cfg(all(feature = "test-without-row-locks", not(debug_assertions)))]
compile_error!("the test-without-row-locks feature is for test builds only, never a release");

pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod feed;
pub mod grpc;
pub mod healthcheck;
pub mod metrics;
pub mod relay;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
