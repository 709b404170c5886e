//! Integration tests over real gRPC against real PostgreSQL: every test gets a fresh
//! database (`#[sqlx::test]`) and its own server on 127.0.0.1:0.

mod helpers;
mod racing;

mod authentication;
mod authorization;
mod citus;
mod cluster;
mod concurrency;
mod connection_age;
mod conversation;
mod deadlines;
mod disputes;
mod events;
mod faults;
mod hardening;
mod idempotency;
mod metrics;
mod notes;
mod orders;
mod parties;
mod poisoned;
mod process;
mod proxy;
mod raw;
mod readme;
mod record;
mod replacement;
mod scan;
mod schema;
mod server;
mod telemetry;
mod tls;
mod wave;
mod workflow;
