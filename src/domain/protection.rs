//! Buyer protection: the seller or an agent extends it; when it ends with no active
//! dispute, the funds go to the seller.

use chrono::{DateTime, Utc};

use super::{Actor, DomainError, Order, Precondition, Role, Settlement};

/// ExtendProtection: moves the end later, never earlier or to the same time.
pub fn extend_protection(
    order: &Order,
    actor: &Actor,
    new_end: DateTime<Utc>,
) -> Result<Order, DomainError> {
    if !matches!(actor.role, Role::Seller | Role::Agent) {
        return Err(DomainError::PermissionDenied {
            reason: "ROLE_NOT_ALLOWED",
            message: "only the order's seller or an agent can extend buyer protection",
        });
    }
    order.ensure_visible_to(actor)?;
    if order.settlement.is_some() {
        return Err(DomainError::FailedPrecondition(Precondition::FundsSettled));
    }
    if new_end <= order.protection_ends_at {
        return Err(DomainError::FailedPrecondition(
            Precondition::ProtectionNotExtended,
        ));
    }
    let mut order = order.clone();
    order.protection_ends_at = new_end;
    Ok(order)
}

/// Releases the whole amount to the seller because buyer protection ended while no
/// dispute was active. `None` when that is moot: protection still runs, or the funds
/// were settled already. The caller holds the order lock and has checked that no
/// dispute is active.
pub fn release_at_protection_end(order: &Order, now: DateTime<Utc>) -> Option<(Order, Settlement)> {
    if order.protection_active(now) || order.settlement.is_some() {
        return None;
    }
    let mut order = order.clone();
    let settlement = order.settle(0, now).ok()?;
    Some((order, settlement))
}
