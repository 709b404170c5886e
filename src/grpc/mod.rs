//! The gRPC edge: generated types, the gate (authentication, authorization, admission),
//! request parsing, encoding, page tokens and cursors, the event stream on the wire (its
//! protocol is `crate::feed`) and the one error mapping. It translates; the commands
//! decide. Protobuf types never leave this module.

pub mod auth;
mod connections;
pub mod encode;
pub mod error;
mod evidence;
mod gate;
mod limits;
pub mod parse;
pub mod policy;
mod service;
mod stream;
pub mod tokens;

pub use connections::incoming;
pub use gate::{GateLayer, MAX_REQUEST_BYTES};
pub use limits::{Admitted, Shares, Slots};
pub use service::{ApiParts, DisputeApi};

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("dispute.v1");
}

/// The service's full name, as generated: `dispute.v1.DisputeService`.
pub use pb::dispute_service_server::SERVICE_NAME;

/// Descriptors of `dispute.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
