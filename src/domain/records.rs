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

/// How many stream partitions there are: each order's events are in one of them (by a
/// hash of the order id, computed by the database: `outbox.stream_partition`), and a
/// partition's events have positions 1, 2, 3… in the log. Fixed by the schema (migration
/// 11); changing it is a migration (README, "Consuming the event stream").
pub const STREAM_PARTITIONS: usize = 16;

/// Where an event is in the stream's log: its partition and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub partition: usize,
    pub position: i64,
}

/// Where a consumer is in the stream: the last position it took in each partition (0:
/// nothing yet). Cursors are ordered partition by partition only: `a <= b` when `b` is at
/// or past `a` in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor(pub [i64; STREAM_PARTITIONS]);

impl Cursor {
    /// Before every event.
    pub const START: Cursor = Cursor([0; STREAM_PARTITIONS]);

    /// Whether the consumer has taken the event at `at`.
    pub fn has(&self, at: LogPosition) -> bool {
        self.0[at.partition] >= at.position
    }

    /// Past the event at `at` (and everything before it in its partition).
    pub fn take(&mut self, at: LogPosition) {
        let seen = &mut self.0[at.partition];
        *seen = (*seen).max(at.position);
    }

    /// Whether this cursor is at or before `other` in every partition.
    pub fn at_or_before(&self, other: &Cursor) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a <= b)
    }

    /// The partitions where this cursor is behind `mark` (a consumer there would miss
    /// events up to the mark).
    pub fn behind(&self, mark: &Cursor) -> bool {
        !mark.at_or_before(self)
    }
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub at: LogPosition,
    /// 1, 2, 3… per order, gap-free over committed events.
    pub order_sequence: i64,
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
