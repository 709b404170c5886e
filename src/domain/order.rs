//! Orders and their escrowed funds: held until settled exactly once.

use chrono::{DateTime, Utc};

use super::{Actor, DomainError, Money, PartyId, Precondition, Resource};

/// Where an order's funds are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FundsState {
    Held,
    ReleasedToSeller,
    RefundedToBuyer,
    Split,
}

impl FundsState {
    pub fn as_str(self) -> &'static str {
        match self {
            FundsState::Held => "HELD",
            FundsState::ReleasedToSeller => "RELEASED_TO_SELLER",
            FundsState::RefundedToBuyer => "REFUNDED_TO_BUYER",
            FundsState::Split => "SPLIT",
        }
    }
}

/// How an order's amount was divided. Only [`Settlement::new`] builds one, and it
/// conserves the amount: `refund + release == amount`, both non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settlement {
    refund_minor: i64,
    release_minor: i64,
    pub settled_at: DateTime<Utc>,
}

impl Settlement {
    /// Refunds `refund_minor` of `amount` to the buyer and releases the rest.
    /// `None` if the refund is negative or larger than the amount.
    pub fn new(amount: Money, refund_minor: i64, settled_at: DateTime<Utc>) -> Option<Self> {
        if !(0..=amount.minor).contains(&refund_minor) {
            return None;
        }
        Some(Self {
            refund_minor,
            release_minor: amount.minor - refund_minor,
            settled_at,
        })
    }

    pub fn refund_minor(&self) -> i64 {
        self.refund_minor
    }

    pub fn release_minor(&self) -> i64 {
        self.release_minor
    }

    pub fn funds_state(&self) -> FundsState {
        match (self.refund_minor, self.release_minor) {
            (_, 0) => FundsState::RefundedToBuyer,
            (0, _) => FundsState::ReleasedToSeller,
            _ => FundsState::Split,
        }
    }
}

/// The facts the order service registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub order_id: PartyId,
    pub buyer_id: PartyId,
    pub seller_id: PartyId,
    pub amount: Money,
    pub protection_ends_at: DateTime<Utc>,
}

/// A registered order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub order_id: PartyId,
    pub buyer_id: PartyId,
    pub seller_id: PartyId,
    pub amount: Money,
    pub protection_ends_at: DateTime<Utc>,
    /// `None` while the funds are held.
    pub settlement: Option<Settlement>,
    pub disputes_closed: bool,
    pub dispute_count: i32,
}

/// What registering an order does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// A new order, funds held.
    Created(Order),
    /// The same facts were already registered: nothing changes.
    Unchanged,
}

/// An order as stored, with the protection end it was registered with: ExtendProtection
/// moves the order's end later, never this.
#[derive(Debug, Clone, Copy)]
pub struct Registered<'a> {
    pub order: &'a Order,
    pub protection_ends_at: DateTime<Utc>,
}

/// Registers `new`, given what is already stored under its id. Sending the registered
/// facts again changes nothing — after an extension too, whether they carry the
/// registered protection end or the extended one (the extension is a later fact, not
/// another registration); any other fact is a conflict.
pub fn register(
    existing: Option<Registered<'_>>,
    new: NewOrder,
) -> Result<Registration, DomainError> {
    match existing {
        None => Ok(Registration::Created(Order {
            order_id: new.order_id,
            buyer_id: new.buyer_id,
            seller_id: new.seller_id,
            amount: new.amount,
            protection_ends_at: new.protection_ends_at,
            settlement: None,
            disputes_closed: false,
            dispute_count: 0,
        })),
        Some(Registered {
            order,
            protection_ends_at,
        }) => {
            let as_registered = NewOrder {
                protection_ends_at,
                ..order.facts()
            };
            if new == order.facts() || new == as_registered {
                Ok(Registration::Unchanged)
            } else {
                Err(DomainError::ORDER_ALREADY_EXISTS)
            }
        }
    }
}

impl Order {
    /// The order's facts as they stand now (its protection end possibly extended).
    pub fn facts(&self) -> NewOrder {
        NewOrder {
            order_id: self.order_id.clone(),
            buyer_id: self.buyer_id.clone(),
            seller_id: self.seller_id.clone(),
            amount: self.amount,
            protection_ends_at: self.protection_ends_at,
        }
    }

    pub fn funds_state(&self) -> FundsState {
        self.settlement
            .map_or(FundsState::Held, |settlement| settlement.funds_state())
    }

    /// Buyer protection runs until, not including, `protection_ends_at`.
    pub fn protection_active(&self, now: DateTime<Utc>) -> bool {
        now < self.protection_ends_at
    }

    /// Parties see their own orders; the platform sees all. Everyone else is told the
    /// order does not exist.
    pub fn ensure_visible_to(&self, actor: &Actor) -> Result<(), DomainError> {
        if actor.may_see(&self.buyer_id, &self.seller_id) {
            Ok(())
        } else {
            Err(DomainError::NotFound(Resource::Order))
        }
    }

    /// Settles the funds, refunding `refund_minor` to the buyer. Fails if they were
    /// already settled: an order is settled exactly once.
    pub(super) fn settle(
        &mut self,
        refund_minor: i64,
        now: DateTime<Utc>,
    ) -> Result<Settlement, DomainError> {
        if self.settlement.is_some() {
            return Err(DomainError::FailedPrecondition(Precondition::FundsSettled));
        }
        let settlement = Settlement::new(self.amount, refund_minor, now).ok_or_else(|| {
            DomainError::invalid(
                "refund_amount.amount_minor",
                "must be between zero and the order amount",
            )
        })?;
        self.settlement = Some(settlement);
        Ok(settlement)
    }
}
