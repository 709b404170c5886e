//! Why the domain refused: one enum, mapped to a gRPC status in exactly one place
//! (`grpc::error`).

use thiserror::Error;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message, e.g. `refund_amount.amount_minor`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// What was not found (or may not be seen: the two are indistinguishable on purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Order,
    Dispute,
}

/// A state of the world that forbids the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The order's funds were already settled.
    FundsSettled,
    /// The buyer protection period has ended.
    ProtectionExpired,
    /// The order is closed to disputes (cancelled after protection ended).
    DisputesClosed,
    /// The order already had the maximum number of disputes.
    DisputeLimitReached,
    /// The dispute involves an active return: cancel the return instead.
    ReturnInProgress,
    /// The dispute involves no return.
    NoReturn,
    /// The seller confirmed receipt of the returned item; it can no longer be cancelled.
    ReturnAlreadyReceived,
    /// The dispute is already cancelled or resolved.
    DisputeClosed,
    /// The dispute is open but not in a state that allows this command.
    InvalidDisputeState,
    /// A new protection end must be later than the current one.
    ProtectionNotExtended,
    /// The database refused the write by a constraint the rules above should have kept:
    /// nothing was written. Seeing it means a rule is missing here.
    InvariantViolated,
}

impl Precondition {
    pub fn reason(self) -> &'static str {
        match self {
            Precondition::FundsSettled => "FUNDS_SETTLED",
            Precondition::ProtectionExpired => "PROTECTION_EXPIRED",
            Precondition::DisputesClosed => "DISPUTES_CLOSED",
            Precondition::DisputeLimitReached => "DISPUTE_LIMIT_REACHED",
            Precondition::ReturnInProgress => "RETURN_IN_PROGRESS",
            Precondition::NoReturn => "NO_RETURN",
            Precondition::ReturnAlreadyReceived => "RETURN_ALREADY_RECEIVED",
            Precondition::DisputeClosed => "DISPUTE_CLOSED",
            Precondition::InvalidDisputeState => "INVALID_DISPUTE_STATE",
            Precondition::ProtectionNotExtended => "PROTECTION_NOT_EXTENDED",
            Precondition::InvariantViolated => "INVARIANT_VIOLATED",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Precondition::FundsSettled => "the order's funds have already been settled",
            Precondition::ProtectionExpired => {
                "the buyer protection period of this order has ended; a dispute can no longer be opened"
            }
            Precondition::DisputesClosed => {
                "a dispute was cancelled after the buyer protection period ended; no new dispute can be opened on this order"
            }
            Precondition::DisputeLimitReached => {
                "the maximum number of disputes has been opened on this order"
            }
            Precondition::ReturnInProgress => {
                "this dispute involves a return; cancel the return (CancelReturn) to cancel the dispute"
            }
            Precondition::NoReturn => {
                "this dispute involves no return; cancel the dispute (CancelDispute) instead"
            }
            Precondition::ReturnAlreadyReceived => {
                "the seller has confirmed receipt of the returned item; the return can no longer be cancelled"
            }
            Precondition::DisputeClosed => "the dispute is already cancelled or resolved",
            Precondition::InvalidDisputeState => {
                "the dispute is not in a state that allows this; see its state with GetDispute"
            }
            Precondition::ProtectionNotExtended => {
                "buyer protection can only be moved later than its current end"
            }
            Precondition::InvariantViolated => {
                "the change would break an invariant the database enforces; nothing was written"
            }
        }
    }
}

/// Every way a command can be refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The request is malformed; every bad field is listed.
    #[error("invalid request: {0:?}")]
    InvalidArgument(Vec<FieldViolation>),
    /// Missing, or someone else's.
    #[error("{0:?} not found")]
    NotFound(Resource),
    /// The actor's role may never do this here.
    #[error("permission denied: {message}")]
    PermissionDenied {
        reason: &'static str,
        message: &'static str,
    },
    /// The world is not in a state that allows it.
    #[error("failed precondition: {}", .0.reason())]
    FailedPrecondition(Precondition),
    /// It already exists (an order with other facts; an active dispute on the order).
    #[error("already exists: {message}")]
    AlreadyExists {
        reason: &'static str,
        message: &'static str,
    },
}

impl DomainError {
    /// The order already has an active dispute.
    pub const DISPUTE_ALREADY_OPEN: DomainError = DomainError::AlreadyExists {
        reason: "DISPUTE_ALREADY_OPEN",
        message: "the order already has an active dispute",
    };

    /// An order with this id is registered with other facts.
    pub const ORDER_ALREADY_EXISTS: DomainError = DomainError::AlreadyExists {
        reason: "ORDER_ALREADY_EXISTS",
        message: "an order with this id is already registered with different facts",
    };

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The reason buyers, sellers and the platform are told when anyone but the buyer
    /// tries to cancel (the seed's central rule).
    pub const ONLY_BUYER_CAN_CANCEL: DomainError = DomainError::PermissionDenied {
        reason: "ONLY_BUYER_CAN_CANCEL",
        message: "only the buyer can cancel a dispute; neither the seller nor the platform can. \
                  If the buyer cannot cancel it themselves, the buyer's customer service can guide them",
    };
}
