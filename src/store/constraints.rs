//! Database refusals in the domain's words: a constraint or guard trigger (each has a
//! name, see the migrations) refused a write, so the command is refused with the domain
//! error for that rule. A constraint violation is never an internal error: the schema
//! exists to refuse exactly these writes.

use crate::domain::{DomainError, Precondition};

/// SQLSTATEs the store tells apart (PostgreSQL, "Appendix A. Error Codes").
pub mod sqlstate {
    /// Class 23, integrity constraint violation (unique, foreign key, check, triggers).
    pub const INTEGRITY_CONSTRAINT_CLASS: &str = "23";
    /// Class 08, connection exception.
    pub const CONNECTION_EXCEPTION_CLASS: &str = "08";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CRASH_SHUTDOWN: &str = "57P02";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// Deadlock, serialization failure: the database rolled the transaction back, and
    /// the same request again will run afresh.
    pub const TRANSACTION_ROLLBACK_CLASS: &str = "40";
    /// A statement cancelled, e.g. by `statement_timeout`: the database was too slow.
    pub const QUERY_CANCELED: &str = "57014";
    pub const UNDEFINED_TABLE: &str = "42P01";
}

/// The domain error for a write refused by `constraint`.
pub fn refusal(constraint: &str) -> DomainError {
    match constraint {
        "disputes_one_active_per_order" => DomainError::DISPUTE_ALREADY_OPEN,
        "orders_pkey" | "orders_facts_immutable" => DomainError::ORDER_ALREADY_EXISTS,
        "settlements_pkey" | "orders_settled_immutable" | "settlements_immutable" => {
            DomainError::FailedPrecondition(Precondition::FundsSettled)
        }
        "orders_closed_stays_closed" => {
            DomainError::FailedPrecondition(Precondition::DisputesClosed)
        }
        "disputes_terminal_immutable" => {
            DomainError::FailedPrecondition(Precondition::DisputeClosed)
        }
        "orders_protection_only_later" => {
            DomainError::FailedPrecondition(Precondition::ProtectionNotExtended)
        }
        "disputes_proposal_fixed" => {
            DomainError::FailedPrecondition(Precondition::InvalidDisputeState)
        }
        _ => DomainError::FailedPrecondition(Precondition::InvariantViolated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_refusal_is_its_domain_error() {
        let cases = [
            ("disputes_one_active_per_order", "DISPUTE_ALREADY_OPEN"),
            ("orders_pkey", "ORDER_ALREADY_EXISTS"),
            ("settlements_pkey", "FUNDS_SETTLED"),
            ("orders_settled_immutable", "FUNDS_SETTLED"),
            ("orders_closed_stays_closed", "DISPUTES_CLOSED"),
            ("disputes_terminal_immutable", "DISPUTE_CLOSED"),
            ("orders_protection_only_later", "PROTECTION_NOT_EXTENDED"),
            ("settlements_amount_is_the_orders", "INVARIANT_VIOLATED"),
            ("disputes_parties_are_the_orders", "INVARIANT_VIOLATED"),
            ("orders_money_conserved", "INVARIANT_VIOLATED"),
        ];
        for (constraint, reason) in cases {
            let got = match refusal(constraint) {
                DomainError::AlreadyExists { reason, .. } => reason,
                DomainError::FailedPrecondition(p) => p.reason(),
                other => panic!("{constraint}: {other:?}"),
            };
            assert_eq!(got, reason, "{constraint}");
        }
    }
}
