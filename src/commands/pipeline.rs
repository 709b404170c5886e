//! The one unit of work every change goes through (README, "Architecture"):
//! [`Commands::run`] finds the command's order (a dispute's, in the directory), begins the
//! transaction, locks what the command acts on (the order, and the dispute when there is
//! one), claims the request's idempotency key or returns the reply saved for it, asks the
//! domain what to do, saves the change with its events and reply (a statement per table,
//! each naming the order), commits, files a new dispute in the directory, and only then
//! counts and logs what it did. Every write RPC, every deadline the worker applies and the
//! release at the end of protection (no key) run here; a command supplies only its target
//! and its decision.

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;

use super::{
    Commands, Done, Error, Origin, events,
    idempotency::{RequestKey, replay, saved_reply},
};
use crate::{
    domain::{Actor, Change, Dispute, DisputeId, DomainError, Order, PartyId, Resource},
    store::{self, Changes, KeyState, NewEvent, Row, Saved, Wait},
};

/// What a command locks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target<'a> {
    /// An order that may not exist yet (RegisterOrder).
    NewOrder(&'a PartyId),
    /// An existing order the caller can see.
    Order(&'a PartyId),
    /// An existing dispute the caller can see, and its order.
    Dispute(DisputeId),
}

impl Target<'_> {
    /// The order the command's transaction acts on: the target's, or a dispute's from the
    /// directory, read before the transaction begins so every statement in it names the
    /// order (on Citus, its shard; README, "Running on Citus"). `None`: no such dispute.
    async fn order(&self, store: &store::Store) -> Result<Option<PartyId>, Error> {
        Ok(match self {
            Target::NewOrder(order_id) | Target::Order(order_id) => Some((*order_id).clone()),
            Target::Dispute(dispute_id) => store.order_of(*dispute_id).await?,
        })
    }
}

/// Who runs a command.
#[derive(Debug)]
pub(super) enum Caller {
    /// An RPC: it waits for its locks and claims its request's key.
    Request(RequestKey),
    /// The service itself (the deadline worker): it skips what another transaction
    /// holds (another replica is on it) and has no key.
    System,
}

/// What the lock statement read, locked until the transaction ends.
#[derive(Debug)]
pub(super) struct Locked {
    /// `None` only for [`Target::NewOrder`] when there is no such order yet.
    pub order: Option<Order>,
    /// With [`Target::Dispute`].
    pub dispute: Option<Dispute>,
    /// With an order target: the protection end the order was registered with.
    pub registered_protection_ends_at: Option<DateTime<Utc>>,
    /// With an order target: the order's active dispute.
    pub active_dispute: Option<DisputeId>,
}

/// A change to a dispute, with its event and, when it settled the funds, the
/// settlement's: both in the dispute's history. `before`: the order and dispute as locked
/// (`None`: the change opened the dispute); a row the change left as it was is not
/// written.
pub(super) fn dispute_changes(change: &Change, before: Option<(&Order, &Dispute)>) -> Changes {
    let ended = change.ended(before.map(|(_, dispute)| dispute));
    let mut events = vec![events::dispute_changed(change, ended)];
    let dispute_id = change.dispute.dispute_id;
    if let Some(settlement) = &change.settlement {
        events.push(events::funds_settled(
            &change.order,
            settlement,
            Some(dispute_id),
            change.event.as_str(),
        ));
    }
    let (order, dispute) = (change.order.clone(), change.dispute.clone());
    let (order, dispute) = match before {
        None => (Row::Changed(order), Row::New(dispute)),
        // Every write to a dispute writes its order's row too: the order lock's check that
        // nothing changed its disputes meanwhile reads the order's row version (README,
        // "Architecture": Concurrency).
        Some((order_before, dispute_before)) => match Row::unless_same(dispute_before, dispute) {
            Row::Kept(dispute) => (Row::unless_same(order_before, order), Row::Kept(dispute)),
            written => (Row::Changed(order), written),
        },
    };
    Changes {
        order,
        dispute: Some(dispute),
        settled: change.settlement.is_some(),
        history: Some(dispute_id),
        events,
    }
}

/// A new order and its event.
pub(super) fn new_order_changes(order: Order, event: NewEvent) -> Changes {
    Changes {
        order: Row::New(order),
        dispute: None,
        settled: false,
        history: None,
        events: vec![event],
    }
}

/// A changed order and its event, in `history`'s dispute history too when given.
pub(super) fn order_changes(
    order: Order,
    settled: bool,
    history: Option<DisputeId>,
    event: NewEvent,
) -> Changes {
    Changes {
        order: Row::Changed(order),
        dispute: None,
        settled,
        history,
        events: vec![event],
    }
}

/// What the domain decided, with the reply to give and what to report once committed.
#[derive(Debug)]
pub(super) enum Decision<T> {
    Write(Box<Changes>, T, Done),
    /// Nothing changes: answer `T` (saved with the key like any reply).
    Unchanged(T, Done),
    /// Nothing to do (the worker's deadline became moot): roll back, answer nothing.
    Skip,
}

impl Locked {
    /// Whether the target exists (a new order may not).
    fn found(&self, target: Target<'_>) -> Result<(), DomainError> {
        match target {
            Target::NewOrder(_) => Ok(()),
            Target::Order(_) if self.order.is_some() => Ok(()),
            Target::Dispute(_) if self.dispute.is_some() => Ok(()),
            Target::Order(_) => Err(DomainError::NotFound(Resource::Order)),
            Target::Dispute(_) => Err(DomainError::NotFound(Resource::Dispute)),
        }
    }

    /// Someone else's order or dispute is a missing one, whatever the key says.
    fn ensure_visible_to(&self, actor: &Actor) -> Result<(), DomainError> {
        match (&self.dispute, &self.order) {
            (Some(dispute), _) => dispute.ensure_visible_to(actor),
            (None, Some(order)) => order.ensure_visible_to(actor),
            (None, None) => Ok(()),
        }
    }
}

impl Commands {
    /// Runs one command on `target` as `caller`: `decide` sees what was locked, who acts
    /// and the time read once the locks were held. `None` only when the decision was
    /// [`Decision::Skip`] or, for [`Caller::System`], the target was held or missing.
    pub(super) async fn run<T>(
        &self,
        target: Target<'_>,
        caller: Caller,
        decide: impl Fn(&Locked, &Origin, DateTime<Utc>) -> Result<Decision<T>, Error>,
    ) -> Result<Option<T>, Error>
    where
        T: Serialize + DeserializeOwned,
    {
        let Some(order_id) = target.order(&self.store).await? else {
            return match caller {
                Caller::System => Ok(None),
                Caller::Request(_) => Err(DomainError::NotFound(Resource::Dispute).into()),
            };
        };
        // A new order's id can be taken between the lock (nothing to lock yet) and the
        // insert, by a concurrent registration this transaction then waited for: run once
        // more, and decide on the order it registered.
        for _ in 0..2 {
            let attempt = self
                .transaction(target, &order_id, &caller, &decide)
                .instrument(store::transaction_span())
                .await?;
            if let Attempt::Done(done) = attempt {
                return Ok(done.map(|(reply, done)| {
                    done.report(&self.metrics);
                    reply
                }));
            }
        }
        Err(Error::Internal(store::StoreError::Corrupt(
            "a registered order vanished".into(),
        )))
    }

    /// One attempt of [`Commands::run`]: BEGIN to COMMIT.
    async fn transaction<T>(
        &self,
        target: Target<'_>,
        order_id: &PartyId,
        caller: &Caller,
        decide: &impl Fn(&Locked, &Origin, DateTime<Utc>) -> Result<Decision<T>, Error>,
    ) -> Result<Attempt<T>, Error>
    where
        T: Serialize + DeserializeOwned,
    {
        // Asked before the transaction takes its connection: the first answer is read
        // from the database, and a full pool would wait for itself.
        let distributed = self.store.distributed().await?;
        let mut tx = self.store.begin().await?;
        let (key, wait) = match caller {
            Caller::Request(request) => (Some(request.key()), Wait::Block),
            Caller::System => (None, Wait::Skip),
        };
        let (locked, saved) = lock(&mut tx, target, order_id, key, wait).await?;
        let request = match (caller, locked.found(target)) {
            (Caller::System, Err(_)) => return Ok(Attempt::Done(None)),
            (Caller::System, Ok(())) => None,
            (Caller::Request(request), found) => {
                found?;
                if !matches!(target, Target::NewOrder(_)) {
                    locked.ensure_visible_to(&request.key().actor)?;
                }
                Some(request)
            }
        };
        if let Some(saved) = saved {
            return Ok(Attempt::Done(Some((replay(saved)?, Done::Replayed))));
        }
        // The time is read once the locks are held, so a command that waited does not
        // decide on a stale one.
        let now = self.now();
        let origin = request.map_or_else(Origin::system, RequestKey::origin);
        let decided = match decide(&locked, &origin, now) {
            Ok(decided) => decided,
            Err(refused) => {
                drop(tx);
                return self.refused(order_id, request, refused).await;
            }
        };
        let (changes, reply, done) = match decided {
            Decision::Write(changes, reply, done) => (Some(*changes), reply, done),
            Decision::Unchanged(reply, done) => (None, reply, done),
            Decision::Skip => return Ok(Attempt::Done(None)),
        };
        // Every request's key leaves with its reply: the write saves both.
        let reply_saved = match request {
            Some(request) => Some((request.key(), saved_reply(&reply)?)),
            None => None,
        };
        let changes = match (changes, locked.order) {
            (Some(changes), _) => Some(changes),
            // Nothing changed: only the reply to save.
            (None, Some(order)) if reply_saved.is_some() => Some(Changes::none(order)),
            (None, _) => None,
        };
        let write = changes.as_ref().map(|changes| store::Write {
            changes,
            actor: &origin.actor,
            trace_id: Some(origin.trace_id.as_str()),
            now,
            reply: reply_saved,
        });
        if let Some(write) = write {
            match store::save(&mut tx, &write).await.map_err(Error::from) {
                Ok(Saved::Written) => {}
                Ok(Saved::OrderExists) => return Ok(Attempt::Again),
                Ok(Saved::KeyTaken) => {
                    drop(tx);
                    // Taken, then forgotten by retention in between: a retry runs afresh.
                    let expired = Error::Unavailable(store::StoreError::Contended(
                        "the request's idempotency key expired while it was being replayed",
                    ));
                    return self.refused(order_id, request, expired).await;
                }
                // A rule the schema enforces (the same refusals as the domain's).
                Err(refused @ Error::Domain(_)) => {
                    drop(tx);
                    return self.refused(order_id, request, refused).await;
                }
                Err(error) => return Err(error),
            }
        }
        // A dispute this command opens goes into the directory: on one node in this
        // transaction; on Citus, where its row lives on another shard, once this one has
        // committed (README, "Running on Citus"). Should that fail, the first lookup of
        // the dispute files it.
        let opened = match &changes {
            Some(Changes {
                dispute: Some(Row::New(dispute)),
                ..
            }) => Some(dispute),
            _ => None,
        };
        if let Some(dispute) = opened
            && !distributed
        {
            store::file_dispute(&mut *tx, dispute.dispute_id, &dispute.order_id).await?;
        }
        store::commit(tx).await?;
        if changes.as_ref().is_some_and(|c| !c.events.is_empty()) {
            self.store.events_committed();
        }
        if let Some(dispute) = opened
            && distributed
            && let Err(error) = self
                .store
                .file_dispute(dispute.dispute_id, &dispute.order_id)
                .await
        {
            tracing::warn!(%error, dispute.id = %dispute.dispute_id, "filing a new dispute in the directory failed");
        }
        Ok(Attempt::Done(Some((reply, done))))
    }
}

/// Takes the target's locks and reads what `key` (when given) was answered before.
async fn lock(
    conn: &mut sqlx::PgConnection,
    target: Target<'_>,
    order_id: &PartyId,
    key: Option<&store::IdempotencyKey>,
    wait: Wait,
) -> Result<(Locked, Option<KeyState>), Error> {
    Ok(match target {
        Target::NewOrder(_) | Target::Order(_) => {
            let locked = store::lock_order(conn, order_id, key, wait).await?;
            let saved = locked.key;
            let locked = Locked {
                order: locked.order,
                dispute: None,
                registered_protection_ends_at: locked.registered_protection_ends_at,
                active_dispute: locked.active_dispute,
            };
            (locked, saved)
        }
        Target::Dispute(dispute_id) => {
            let locked = store::lock_dispute(conn, order_id, dispute_id, key, wait).await?;
            let (order, dispute, saved) = match locked {
                Some(l) => (Some(l.order), Some(l.dispute), l.key),
                None => (None, None, None),
            };
            let locked = Locked {
                order,
                dispute,
                registered_protection_ends_at: None,
                active_dispute: None,
            };
            (locked, saved)
        }
    })
}

impl Commands {
    /// A command that could not go on — refused by the domain or the schema, or its key
    /// found taken at the write — answers `refused`, unless the request's key was answered
    /// meanwhile by a duplicate this command waited for (its lock statement's snapshot
    /// predates that commit), whose reply is then replayed. The command's transaction has
    /// been rolled back; the key is read afresh.
    async fn refused<T: DeserializeOwned>(
        &self,
        order_id: &PartyId,
        request: Option<&RequestKey>,
        refused: Error,
    ) -> Result<Attempt<T>, Error> {
        let Some(request) = request else {
            return Err(refused);
        };
        match self.store.saved_key(order_id, request.key()).await? {
            Some(saved) => Ok(Attempt::Done(Some((replay(saved)?, Done::Replayed)))),
            None => Err(refused),
        }
    }
}

/// How one attempt ended.
enum Attempt<T> {
    /// Committed (or, `None`, nothing to do): the reply and what to report.
    Done(Option<(T, Done)>),
    /// A new order's id was taken meanwhile: run again.
    Again,
}
