//! WatchEvents on the wire. Which events a stream sends, and when, is the protocol's
//! (`crate::feed`; README, "Consuming the event stream"); here each event becomes its
//! message with a signed cursor, at most [`STREAM_BUFFER`] of them wait for the consumer
//! (a consumer that stops reading stops only its own stream), the caller's stream slot is
//! held while the stream lives, an error becomes its `Status`, and a stream the server
//! stops ends `UNAVAILABLE`.

use std::{pin::Pin, time::Duration};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{encode::stream_event_to_pb, limits::CallerSlot, pb, tokens::Tokens};
use crate::{
    commands::Commands,
    domain::{Cursor, StreamEvent},
    feed::EventFeed,
    feed::{Consumer, Subscription},
    shutdown::stopped,
};

/// Most encoded events waiting for the consumer: with the protocol's catch-up read, what a
/// consumer that stops reading holds (README, "Limits").
const STREAM_BUFFER: usize = 16;

/// How long a stream's end may wait for room in its buffer when the server stops.
const SHUTDOWN_NOTICE: Duration = Duration::from_secs(1);

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

/// Starts a stream of the events after `after` (from the oldest kept when `None`). An
/// expired cursor is refused before the stream starts.
/// `slot` is the stream's share of the server's stream limits, held while it lives.
pub async fn watch(
    commands: Commands,
    feed: EventFeed,
    tokens: Tokens,
    after: Option<Cursor>,
    slot: (CallerSlot, OwnedSemaphorePermit),
) -> Result<EventStream, Status> {
    let mut subscription = Subscription::open(commands, &feed, after).await?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let mut channel = Channel {
        tokens,
        tx: tx.clone(),
    };
    let mut stop = feed.stop();
    tokio::spawn(async move {
        let _slot = slot;
        let run = async {
            if let Err(error) = subscription.run(&mut channel).await {
                let _ = channel.tx.send(Err(Status::from(error))).await;
            }
        };
        tokio::select! {
            _ = run => {}
            _ = stopped(&mut stop) => {
                // Not OK, which reads as "the stream is complete": the consumer resumes
                // from its last cursor on another replica. A consumer that stopped reading
                // (its buffer full) does not get to hold the drain up for long.
                let _ = tokio::time::timeout(SHUTDOWN_NOTICE, tx.send(Err(shutting_down()))).await;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// How a stream ends when the server stops.
fn shutting_down() -> Status {
    super::error::status(
        tonic::Code::Unavailable,
        "SHUTTING_DOWN",
        "the server is shutting down; resume after your last cursor",
    )
}

/// One consumer's end of the stream: its bounded buffer of encoded events.
struct Channel {
    /// Signs each event's cursor.
    tokens: Tokens,
    tx: mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
}

impl Consumer for Channel {
    async fn deliver(&mut self, event: &StreamEvent, cursor: &Cursor) -> bool {
        let message = pb::WatchEventsResponse {
            event: Some(stream_event_to_pb(event, cursor, &self.tokens)),
        };
        self.tx.send(Ok(message)).await.is_ok()
    }

    async fn left(&self) {
        self.tx.closed().await
    }
}
