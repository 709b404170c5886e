//! What the service hands out besides orders and disputes: history entries, stream events
//! and where a stream reader is, and the filter of a dispute list. Plain data; the store
//! fills them, the edge encodes them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Actor, DisputeId, DisputeState};

/// Filters of a dispute listing; `None` matches everything. `after` is where the previous
/// page ended, in the list's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DisputeFilter {
    pub order_id: Option<String>,
    pub buyer_id: Option<String>,
    pub seller_id: Option<String>,
    /// Only disputes in one of these states (`Some(vec![])` matches nothing).
    pub states: Option<Vec<DisputeState>>,
    pub order: ListOrder,
    pub after: Option<ListPosition>,
}

/// The order of a dispute listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListOrder {
    /// Newest created first (dispute ids are time-ordered UUIDv7s).
    #[default]
    Created,
    /// Most recently changed first.
    Updated,
}

/// The last dispute of a page: where the next one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    pub updated_at: DateTime<Utc>,
    pub dispute_id: DisputeId,
}

/// One entry of a dispute's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    pub dispute_id: DisputeId,
    pub seq: i32,
    pub kind: String,
    pub actor: Actor,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub trace_id: Option<String>,
}

/// Where a consumer is in the outbox: the transaction id and the row id of the last
/// event it saw. `Position::START` is before everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub tx_id: i64,
    pub id: i64,
}

impl Position {
    pub const START: Position = Position { tx_id: 0, id: 0 };
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub position: Position,
    pub event_id: Uuid,
    pub event_type: String,
    pub order_id: String,
    pub dispute_id: Option<DisputeId>,
    pub dispute_seq: Option<i32>,
    pub actor: Actor,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub trace_id: Option<String>,
}
