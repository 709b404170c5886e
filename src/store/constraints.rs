//! Database refusals in the domain's words: a constraint or guard trigger (each has a
//! name, see the migrations) refused a write, so the command is refused with the domain
//! error for that rule. A constraint violation is never an internal error: the schema
//! exists to refuse exactly these writes.

use crate::domain::{DomainError, Precondition};

/// SQLSTATEs the store tells apart (PostgreSQL, "Appendix A. Error Codes").
pub mod sqlstate {
    /// Class 23, integrity constraint violation (unique, foreign key, check, triggers).
    pub const INTEGRITY_CONSTRAINT_CLASS: &str = "23";
    pub const UNIQUE_VIOLATION: &str = "23505";
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

/// The name of the rule that refused a write: the constraint the server reports, or, when
/// it reports none (an error raised on a Citus shard comes back without it), the one its
/// message names (`… constraint "orders_pkey_102033"`; the guard triggers name theirs the
/// same way). A shard's suffix is taken off, so one rule has one name on every database.
pub fn rule_name(reported: Option<&str>, message: &str) -> Option<String> {
    let named = reported.filter(|name| !name.is_empty()).or_else(|| {
        let (_, after) = message.rsplit_once("constraint \"")?;
        after.split_once('"').map(|(name, _)| name)
    })?;
    let unsuffixed = match named.rsplit_once('_') {
        Some((rule, shard)) if !shard.is_empty() && shard.bytes().all(|b| b.is_ascii_digit()) => {
            rule
        }
        _ => named,
    };
    Some(unsuffixed.to_owned())
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
    fn the_rule_is_named_by_the_server_or_by_the_message_without_a_shard_suffix() {
        let cases = [
            (Some("orders_pkey"), "anything", Some("orders_pkey")),
            (Some("orders_pkey_102033"), "anything", Some("orders_pkey")),
            (
                None,
                r#"duplicate key value violates unique constraint "disputes_one_active_per_order_102051""#,
                Some("disputes_one_active_per_order"),
            ),
            (
                Some(""),
                r#"a settled order never changes (constraint "orders_settled_immutable")"#,
                Some("orders_settled_immutable"),
            ),
            (
                None,
                r#"new row for relation "orders_102008" violates check constraint "orders_money_conserved""#,
                Some("orders_money_conserved"),
            ),
            (None, "something else", None),
        ];
        for (reported, message, expected) in cases {
            assert_eq!(
                rule_name(reported, message).as_deref(),
                expected,
                "{reported:?} {message}"
            );
        }
    }

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
