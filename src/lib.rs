#![forbid(unsafe_code)]
//! dispute-service: buyer disputes on marketplace orders and where the escrowed money goes.

pub mod domain;
