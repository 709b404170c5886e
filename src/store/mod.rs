//! PostgreSQL: the one place SQL lives. `Store` holds the pool; the free functions take
//! the connection of the caller's transaction so one command is one transaction.

mod codec;
pub mod constraints;
mod deadlines;
mod disputes;
mod events;
mod idempotency;
mod orders;
mod record;
mod write;

pub use codec::{
    outcome_str as outcome_name, reason_str as reason_name, remedy_columns,
    return_status_str as return_status_name, state_str as state_name,
};
pub use deadlines::{Candidate, Due, Setback};
pub use disputes::{LockedDispute, file_dispute, lock_dispute};
pub use events::{Appended, Unrelayed};
pub use idempotency::{IdempotencyKey, KeyState};
pub use orders::{LockedOrder, lock_order};
pub use write::{Changes, NewEvent, Row, Saved, Write, save};

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use sqlx::{PgPool, Postgres, Transaction, migrate::Migrator};
use thiserror::Error;
use tracing::Instrument;

use crate::domain::{DomainError, Precondition};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

pub type Tx = Transaction<'static, Postgres>;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached or gave no connection in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A constraint or guard trigger refused the write: the domain error for its rule.
    #[error("refused by {constraint}: {refusal}")]
    Refused {
        constraint: String,
        refusal: DomainError,
    },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// The command collided with concurrent work in a way a retry resolves.
    #[error("contended: {0}")]
    Contended(&'static str),
    /// A row the code cannot read back: a bug or a hand edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use constraints::sqlstate::*;
        let database = match &error {
            // No connection, a broken one, or one whose stream makes no sense (a network
            // that lost or mangled bytes): another connection will do.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => return StoreError::Unavailable(error),
            sqlx::Error::Database(database) => database,
            _ => return StoreError::Database(error),
        };
        let code = database.code().unwrap_or_default();
        // The server is going away, refuses connections, or has none left; or it rolled
        // the transaction back or cancelled a statement that took too long: a retry of
        // the same request (idempotent) may well succeed.
        if code.starts_with(CONNECTION_EXCEPTION_CLASS)
            || code.starts_with(TRANSACTION_ROLLBACK_CLASS)
            || [
                ADMIN_SHUTDOWN,
                CRASH_SHUTDOWN,
                CANNOT_CONNECT_NOW,
                TOO_MANY_CONNECTIONS,
                QUERY_CANCELED,
            ]
            .contains(&code.as_ref())
        {
            return StoreError::Unavailable(error);
        }
        if code.starts_with(INTEGRITY_CONSTRAINT_CLASS) {
            let constraint = constraints::rule_name(database.constraint(), database.message())
                .unwrap_or_else(|| "unnamed".to_owned());
            let refusal = constraints::refusal(&constraint);
            if refusal == DomainError::FailedPrecondition(Precondition::InvariantViolated) {
                // The rules let through what the schema refuses: a gap in the code.
                tracing::error!(%constraint, %error, "the database refused a write the rules allowed");
            }
            return StoreError::Refused {
                constraint,
                refusal,
            };
        }
        StoreError::Database(error)
    }
}

/// The span of one statement: the operation and the table, never the SQL's values
/// (OpenTelemetry database conventions).
pub(crate) fn statement(operation: &'static str, table: &'static str) -> tracing::Span {
    let span = control(operation);
    span.record("otel.name", format_args!("{operation} {table}"));
    span.record("db.sql.table", table);
    span
}

/// Whether the database's spans (a transaction's, a statement's) are made.
static DATABASE_SPANS: AtomicBool = AtomicBool::new(true);

/// Makes the database's spans, or (`false`) makes none: the telemetry makes them only when
/// traces are exported (README, "Observability"). A dozen per write: made for the logs
/// alone and dropped, they were 7 % of the server's instructions per OpenDispute
/// (BENCHMARKS.md, "Against the database floor").
pub fn make_database_spans(on: bool) {
    DATABASE_SPANS.store(on, Ordering::Relaxed);
}

/// `span`, or no span when the database's spans are not made.
fn database_span(span: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if DATABASE_SPANS.load(Ordering::Relaxed) {
        span()
    } else {
        tracing::Span::none()
    }
}

/// The span of a statement on no table (BEGIN, COMMIT).
fn control(operation: &'static str) -> tracing::Span {
    database_span(|| {
        tracing::info_span!(
            "db.statement",
            otel.name = operation,
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = operation,
            db.sql.table = tracing::field::Empty,
        )
    })
}

/// The span of one transaction, BEGIN to COMMIT (or rollback); its statements are its
/// children.
pub fn transaction_span() -> tracing::Span {
    database_span(|| {
        tracing::info_span!(
            "db.transaction",
            otel.name = "transaction",
            otel.kind = "internal",
            db.system = "postgresql",
        )
    })
}

/// Commits `tx`.
pub async fn commit(tx: Tx) -> Result<(), StoreError> {
    tx.commit()
        .instrument(control("COMMIT"))
        .await
        .map_err(StoreError::from)
}

/// What a lock statement does when another transaction holds the row: a request waits
/// its turn; the deadline worker skips it (another replica is working on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Block,
    Skip,
}

/// The connection pool, and the reads that need no transaction.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Whether the database is a Citus cluster (read once).
    distributed: Arc<tokio::sync::OnceCell<bool>>,
    /// Callers waiting for a connection to begin a transaction (`db_pool_waiters`).
    waiting: Arc<AtomicUsize>,
    /// Bumped when a command of this process commits events: wakes this process's relay
    /// at once (other replicas' relays find them by polling).
    wrote_events: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            distributed: Arc::default(),
            waiting: Arc::default(),
            wrote_events: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Tells this process's relay that a command committed events.
    pub fn events_committed(&self) {
        self.wrote_events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever a command of this process commits events.
    pub fn committed_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wrote_events.subscribe()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Takes a connection (counted as a waiter until it has one) and begins a transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let begun = self.pool.begin().instrument(control("BEGIN")).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        Ok(begun?)
    }

    /// Whether the database has the citus extension (its tables are distributed by
    /// `migrate`; README, "Running on Citus").
    pub async fn distributed(&self) -> Result<bool, StoreError> {
        let distributed = self
            .distributed
            .get_or_try_init(|| async {
                sqlx::query_scalar!(
                    r#"SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS "citus!""#
                )
                .fetch_one(&self.pool)
                .instrument(statement("SELECT", "pg_extension"))
                .await
            })
            .await?;
        Ok(*distributed)
    }

    /// Callers waiting in [`Store::begin`] now.
    pub fn waiters(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The key that signs page tokens and cursors when none is configured: made by a
    /// migration, the same for every replica.
    pub async fn page_token_key(&self) -> Result<Vec<u8>, StoreError> {
        let key =
            sqlx::query_scalar!("SELECT secret FROM service_secrets WHERE name = 'page_tokens'")
                .fetch_one(&self.pool)
                .instrument(statement("SELECT", "service_secrets"))
                .await?;
        Ok(key)
    }

    /// True when the database answers and every migration this binary knows is applied.
    pub async fn schema_is_current(&self) -> Result<bool, StoreError> {
        // Checked at run time, not compile time: the table may not exist yet.
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        .or_else(|e| match &e {
            // No migrations table yet: nothing is applied.
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some(constraints::sqlstate::UNDEFINED_TABLE) =>
            {
                Ok(vec![])
            }
            _ => Err(e),
        })?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .all(|m| applied.contains(&m.version)))
    }
}
