//! The one mapping from failures to `tonic::Status`: every status carries an `ErrorInfo`
//! (stable reason, domain `dispute.v1`); bad input also carries a `BadRequest` with every
//! field violation. Internal errors are logged with their cause and returned generic.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation as PbFieldViolation, StatusExt};

use crate::{
    commands::Error,
    domain::{DomainError, FieldViolation, Resource},
};

pub const DOMAIN: &str = "dispute.v1";

/// A status with an `ErrorInfo` of `reason`.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, HashMap::<String, String>::new()),
    )
}

/// INVALID_ARGUMENT listing every bad field.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let mut details =
        ErrorDetails::with_error_info("INVALID_ARGUMENT", DOMAIN, HashMap::<String, String>::new());
    details.set_bad_request(
        violations
            .iter()
            .map(|v| PbFieldViolation::new(v.field.clone(), v.description.clone()))
            .collect::<Vec<_>>(),
    );
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {}", fields.join(", ")),
        details,
    )
}

impl From<DomainError> for Status {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::InvalidArgument(violations) => invalid_argument(&violations),
            DomainError::NotFound(Resource::Order) => {
                status(Code::NotFound, "ORDER_NOT_FOUND", "order not found")
            }
            DomainError::NotFound(Resource::Dispute) => {
                status(Code::NotFound, "DISPUTE_NOT_FOUND", "dispute not found")
            }
            DomainError::PermissionDenied { reason, message } => {
                status(Code::PermissionDenied, reason, message)
            }
            DomainError::FailedPrecondition(p) => {
                status(Code::FailedPrecondition, p.reason(), p.message())
            }
            DomainError::AlreadyExists { reason, message } => {
                status(Code::AlreadyExists, reason, message)
            }
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Domain(error) => error.into(),
            Error::RequestIdReused => {
                let mut details = ErrorDetails::with_error_info(
                    "REQUEST_ID_REUSED",
                    DOMAIN,
                    HashMap::<String, String>::new(),
                );
                details.add_bad_request_violation(
                    "request_id",
                    "was already used by this caller for this RPC with a different payload",
                );
                Status::with_error_details(
                    Code::InvalidArgument,
                    "request_id was already used with a different payload; use a new request_id",
                    details,
                )
            }

            Error::CursorExpired => status(
                Code::OutOfRange,
                "CURSOR_EXPIRED",
                "events after this cursor were deleted by retention; resume from an empty cursor and reconcile",
            ),
            Error::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                status(
                    Code::Unavailable,
                    "DATABASE_UNAVAILABLE",
                    "the database is unavailable; retry later",
                )
            }
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                status(Code::Internal, "INTERNAL", "internal error")
            }
        }
    }
}
