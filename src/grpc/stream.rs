//! WatchEvents: a stream per consumer that reads the outbox after its cursor, in commit
//! order, and waits for the next commit (or a poll) when it has caught up. The commit
//! notifications come from the store's `LISTEN` loop through [`EventFeed`].

use std::{pin::Pin, time::Duration};

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{encode::stream_event_to_pb, pb};
use crate::{
    commands::Commands,
    domain::Position,
    shutdown::{Stop, stopped},
};

/// Most events a stream reads per query.
const STREAM_BATCH: usize = 500;
/// How often a stream looks for events when no notification woke it (a notification can
/// be lost, and an aborted transaction that held the stream back sends none).
const STREAM_POLL: Duration = Duration::from_millis(500);

/// Wake-ups for event streams: a counter bumped whenever an outbox write commits, and
/// the server's stop signal, which ends every stream.
#[derive(Clone)]
pub struct EventFeed {
    pub committed: watch::Receiver<u64>,
    pub stop: Stop,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

/// Starts a stream of the events after `after` (from the oldest kept when `None`). An
/// expired cursor is refused before the stream starts.
pub async fn watch(
    commands: Commands,
    feed: EventFeed,
    mut after: Option<Position>,
) -> Result<EventStream, Status> {
    let first = commands.stream(after, STREAM_BATCH).await?;
    let EventFeed {
        mut committed,
        mut stop,
    } = feed;
    let (tx, rx) = mpsc::channel(STREAM_BATCH);
    let open = commands
        .metrics()
        .stream_opened(after.unwrap_or(Position::START));
    tokio::spawn(async move {
        let mut batch = Ok(first);
        loop {
            let events = match batch {
                Ok(events) => events,
                Err(error) => {
                    let _ = tx.send(Err(Status::from(error))).await;
                    return;
                }
            };
            let full = events.len() == STREAM_BATCH;
            for event in events {
                after = Some(event.position);
                let message = pb::WatchEventsResponse {
                    event: Some(stream_event_to_pb(&event)),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return; // the consumer left
                }
                open.at(event.position);
            }
            if !full {
                tokio::select! {
                    changed = committed.changed() => {
                        if changed.is_err() {
                            // No more notifications: fall back to polling.
                            tokio::time::sleep(STREAM_POLL).await;
                        }
                    }
                    _ = tokio::time::sleep(STREAM_POLL) => {}
                    _ = stopped(&mut stop) => return,
                    _ = tx.closed() => return,
                }
            }
            batch = commands.stream(after, STREAM_BATCH).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
