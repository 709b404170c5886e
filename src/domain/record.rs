//! The store's dispute record (README, "The store's record"): what a seller's disputes
//! say about the store over a trailing window of whole UTC days.

use chrono::{DateTime, Duration, NaiveTime, Utc};

use super::{Actor, DomainError, PartyId, Role};

/// The window when the request names none.
pub const DEFAULT_WINDOW_DAYS: u32 = 90;
/// The longest window: a year, leap day included.
pub const MAX_WINDOW_DAYS: u32 = 366;

/// The last `days` UTC days, today included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsWindow {
    days: u32,
}

impl StatsWindow {
    /// A window of `days` whole days, 1 to [`MAX_WINDOW_DAYS`].
    pub fn of_days(days: u32) -> Result<Self, String> {
        if (1..=MAX_WINDOW_DAYS).contains(&days) {
            Ok(Self { days })
        } else {
            Err(format!("must be 1 to {MAX_WINDOW_DAYS} whole days"))
        }
    }

    pub fn days(self) -> u32 {
        self.days
    }

    /// Midnight UTC starting the window's first day, for a window ending at `now`.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let first_day = now.date_naive() - Duration::days(i64::from(self.days) - 1);
        first_day.and_time(NaiveTime::MIN).and_utc()
    }
}

impl Default for StatsWindow {
    fn default() -> Self {
        Self {
            days: DEFAULT_WINDOW_DAYS,
        }
    }
}

/// Who may read a store's record: an agent any store's, a seller its own.
pub fn ensure_may_read_record(actor: &Actor, seller_id: &PartyId) -> Result<(), DomainError> {
    match actor.role {
        Role::Agent => Ok(()),
        Role::Seller if actor.id == seller_id.as_str() => Ok(()),
        Role::Seller => Err(DomainError::PermissionDenied {
            reason: "NOT_YOUR_STORE",
            message: "a seller may read only its own store's dispute record",
        }),
        Role::Buyer | Role::Service => Err(DomainError::PermissionDenied {
            reason: "ROLE_NOT_ALLOWED",
            message: "only the store's seller or an agent may read a store's dispute record",
        }),
    }
}

/// Counts by the dispute's reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByReason {
    pub item_not_received: i64,
    pub not_as_described: i64,
    pub quality_issue: i64,
}

impl ByReason {
    pub fn total(&self) -> i64 {
        self.item_not_received + self.not_as_described + self.quality_issue
    }
}

/// Counts by how disputes ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByOutcome {
    pub cancelled_by_buyer: i64,
    pub resolved_buyer_favour: i64,
    pub resolved_partial: i64,
    pub resolved_seller_favour: i64,
}

/// A store's record over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SellerStats {
    pub seller_id: PartyId,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Orders registered in the window.
    pub orders_registered: i64,
    /// Disputes opened in the window.
    pub opened: ByReason,
    /// Disputes that ended in the window.
    pub ended: ByOutcome,
    /// Disputes not ended now, whenever opened.
    pub open_now: i64,
    /// Disputes whose seller first responded in the window.
    pub first_responses: i64,
    /// The lower median of their times from opening to the first response.
    pub median_first_response: Option<Duration>,
}

impl SellerStats {
    /// Disputes opened per order registered in the window; 0 without orders.
    pub fn dispute_rate(&self) -> f64 {
        if self.orders_registered == 0 {
            0.0
        } else {
            self.opened.total() as f64 / self.orders_registered as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_window_is_whole_utc_days_ending_today() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 15, 30, 0).unwrap();
        let one = StatsWindow::of_days(1).unwrap();
        assert_eq!(
            one.start(now),
            Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap()
        );
        let ninety = StatsWindow::default();
        assert_eq!(
            ninety.start(now),
            Utc.with_ymd_and_hms(2025, 12, 11, 0, 0, 0).unwrap()
        );
        assert!(StatsWindow::of_days(0).is_err());
        assert!(StatsWindow::of_days(MAX_WINDOW_DAYS + 1).is_err());
        assert!(StatsWindow::of_days(MAX_WINDOW_DAYS).is_ok());
    }

    #[test]
    fn sellers_read_their_own_record_and_agents_any() {
        let store = PartyId::parse("s1").unwrap();
        assert!(ensure_may_read_record(&Actor::new(Role::Seller, "s1"), &store).is_ok());
        assert!(ensure_may_read_record(&Actor::new(Role::Agent, "a"), &store).is_ok());
        for (actor, reason) in [
            (Actor::new(Role::Seller, "s2"), "NOT_YOUR_STORE"),
            (Actor::new(Role::Buyer, "s1"), "ROLE_NOT_ALLOWED"),
            (Actor::new(Role::Service, "s1"), "ROLE_NOT_ALLOWED"),
        ] {
            match ensure_may_read_record(&actor, &store) {
                Err(DomainError::PermissionDenied { reason: got, .. }) => assert_eq!(got, reason),
                other => panic!("{actor:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_rate_is_disputes_per_order_and_zero_without_orders() {
        let mut stats = SellerStats {
            seller_id: PartyId::parse("s1").unwrap(),
            window_start: Utc::now(),
            window_end: Utc::now(),
            orders_registered: 0,
            opened: ByReason::default(),
            ended: ByOutcome::default(),
            open_now: 0,
            first_responses: 0,
            median_first_response: None,
        };
        assert_eq!(stats.dispute_rate(), 0.0);
        stats.orders_registered = 8;
        stats.opened = ByReason {
            item_not_received: 1,
            not_as_described: 0,
            quality_issue: 1,
        };
        assert_eq!(stats.dispute_rate(), 0.25);
    }
}
