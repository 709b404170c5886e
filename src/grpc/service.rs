//! The `DisputeService` handlers: parse the request, run the command, convert the answer.
//! The actor was put in the request's extensions by the gate; nothing in the request
//! body can name or change it.

use std::{pin::Pin, time::Duration};

use futures::{Stream, future::BoxFuture};
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::{
    convert::{self, DisputeRequest, dispute_to_pb, order_to_pb},
    error::status,
    pb::{self, dispute_service_server::DisputeService},
};
use crate::{
    commands::{Commands, Done, Error, KeyClaim},
    domain::{Actor, DisputeId, DomainError, PartyId, RequestId, TraceId},
    shutdown::stopped,
    store::{IdempotencyKey, Position},
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
    pub stop: watch::Receiver<bool>,
}

pub struct DisputeApi {
    commands: Commands,
    feed: EventFeed,
}

impl DisputeApi {
    pub fn new(commands: Commands, feed: EventFeed) -> Self {
        Self { commands, feed }
    }

    /// Runs a mutating command under the caller's idempotency key and returns its
    /// response, byte for byte the first one for a retry.
    async fn mutate<Req, Resp, F>(
        &self,
        rpc: &'static str,
        (actor, trace_id): (Actor, TraceId),
        request_id: RequestId,
        request: &Req,
        command: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
        Resp: Message + Default + 'static,
        F: for<'c> FnOnce(
                &'c mut PgConnection,
                KeyClaim,
            ) -> BoxFuture<'c, Result<(Resp, Done), Error>>
            + Send,
    {
        let key = IdempotencyKey {
            actor,
            rpc,
            request_id,
            request_hash: Sha256::digest(request.encode_to_vec()).to_vec(),
        };
        let encoded = self
            .commands
            .idempotent(key, trace_id, move |conn, claim| {
                let response = command(conn, claim);
                Box::pin(async move {
                    let (response, done) = response.await?;
                    Ok((response.encode_to_vec(), done))
                })
            })
            .await?;
        let response = Resp::decode(encoded.as_slice()).map_err(|error| {
            tracing::error!(%error, rpc, "stored idempotent response does not decode");
            status(Code::Internal, "INTERNAL", "internal error")
        })?;
        Ok(Response::new(response))
    }

    /// Every RPC that acts on one dispute: parse, run under the idempotency key, answer
    /// with the dispute and its order.
    async fn on_dispute<Req, Resp>(
        &self,
        request: Request<Req>,
        rpc: &'static str,
        parse: fn(&Req) -> Result<DisputeRequest, DomainError>,
        respond: fn(Option<pb::Dispute>, Option<pb::Order>) -> Resp,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
        Resp: Message + Default + 'static,
    {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (dispute_id, command, request_id) = parse(&req)?;
        let rpc_span = tracing::Span::current();
        on_span(&rpc_span, None, Some(&dispute_id));
        let commands = self.commands.clone();
        self.mutate(rpc, caller, request_id, &req, move |conn, claim| {
            Box::pin(async move {
                let change = commands.execute(conn, dispute_id, command, claim).await?;
                on_span(&rpc_span, Some(&change.order.order_id), None);
                let response = respond(
                    Some(dispute_to_pb(&change.dispute)),
                    Some(order_to_pb(&change.order)),
                );
                Ok((response, Done::DisputeChanged(Box::new(change))))
            })
        })
        .await
    }
}

/// Names the order and dispute a call is about on its RPC span (ids only, never free
/// text). Inside a command the current span is the transaction's: pass the RPC's.
fn on_span(span: &tracing::Span, order_id: Option<&PartyId>, dispute_id: Option<&DisputeId>) {
    if let Some(order_id) = order_id {
        span.record("order.id", order_id.as_str());
    }
    if let Some(dispute_id) = dispute_id {
        span.record("dispute.id", tracing::field::display(dispute_id));
    }
}

/// The actor and trace id the gate put on a mutating request.
fn caller<T>(request: &Request<T>) -> Result<(Actor, TraceId), Status> {
    let trace_id = request
        .extensions()
        .get::<TraceId>()
        .cloned()
        .unwrap_or_default();
    Ok((actor(request)?, trace_id))
}

fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request
        .extensions()
        .get::<Actor>()
        .cloned()
        .ok_or_else(|| status(Code::Unauthenticated, "UNAUTHENTICATED", "unauthenticated"))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DisputeService for DisputeApi {
    async fn register_order(
        &self,
        request: Request<pb::RegisterOrderRequest>,
    ) -> Result<Response<pb::RegisterOrderResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (new, request_id) = convert::register_order(&req)?;
        on_span(&tracing::Span::current(), Some(&new.order_id), None);
        let commands = self.commands.clone();
        self.mutate(
            "RegisterOrder",
            caller,
            request_id,
            &req,
            move |conn, claim| {
                Box::pin(async move {
                    let registered = commands.register_order(conn, new, claim).await?;
                    let response = pb::RegisterOrderResponse {
                        order: Some(order_to_pb(&registered.order)),
                    };
                    let done = Done::OrderRegistered {
                        order_id: registered.order.order_id,
                        created: registered.created,
                    };
                    Ok((response, done))
                })
            },
        )
        .await
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let actor = actor(&request)?;
        let order_id = convert::order_id(&request.get_ref().order_id)?;
        on_span(&tracing::Span::current(), Some(&order_id), None);
        let order = self.commands.get_order(&actor, &order_id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    async fn open_dispute(
        &self,
        request: Request<pb::OpenDisputeRequest>,
    ) -> Result<Response<pb::OpenDisputeResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (new, request_id) = convert::open_dispute(&req)?;
        let rpc_span = tracing::Span::current();
        on_span(&rpc_span, Some(&new.order_id), None);
        let commands = self.commands.clone();
        self.mutate(
            "OpenDispute",
            caller,
            request_id,
            &req,
            move |conn, claim| {
                Box::pin(async move {
                    let change = commands.open_dispute(conn, new, claim).await?;
                    on_span(&rpc_span, None, Some(&change.dispute.dispute_id));
                    let response = pb::OpenDisputeResponse {
                        dispute: Some(dispute_to_pb(&change.dispute)),
                    };
                    Ok((response, Done::DisputeChanged(Box::new(change))))
                })
            },
        )
        .await
    }

    async fn cancel_dispute(
        &self,
        request: Request<pb::CancelDisputeRequest>,
    ) -> Result<Response<pb::CancelDisputeResponse>, Status> {
        self.on_dispute(
            request,
            "CancelDispute",
            convert::cancel_dispute,
            |dispute, order| pb::CancelDisputeResponse { dispute, order },
        )
        .await
    }

    async fn cancel_return(
        &self,
        request: Request<pb::CancelReturnRequest>,
    ) -> Result<Response<pb::CancelReturnResponse>, Status> {
        self.on_dispute(
            request,
            "CancelReturn",
            convert::cancel_return,
            |dispute, order| pb::CancelReturnResponse { dispute, order },
        )
        .await
    }

    async fn resolve_funds(
        &self,
        request: Request<pb::ResolveFundsRequest>,
    ) -> Result<Response<pb::ResolveFundsResponse>, Status> {
        self.on_dispute(
            request,
            "ResolveFunds",
            convert::resolve_funds,
            |dispute, order| pb::ResolveFundsResponse { dispute, order },
        )
        .await
    }

    async fn get_dispute(
        &self,
        request: Request<pb::GetDisputeRequest>,
    ) -> Result<Response<pb::GetDisputeResponse>, Status> {
        let actor = actor(&request)?;
        let dispute_id = convert::dispute_id(&request.get_ref().dispute_id)?;
        on_span(&tracing::Span::current(), None, Some(&dispute_id));
        let dispute = self.commands.get_dispute(&actor, dispute_id).await?;
        Ok(Response::new(pb::GetDisputeResponse {
            dispute: Some(dispute_to_pb(&dispute)),
        }))
    }

    async fn list_disputes(
        &self,
        request: Request<pb::ListDisputesRequest>,
    ) -> Result<Response<pb::ListDisputesResponse>, Status> {
        let actor = actor(&request)?;
        let (filter, page_size) = convert::list_disputes(request.get_ref())?;
        let page = self
            .commands
            .list_disputes(&actor, filter, page_size)
            .await?;
        Ok(Response::new(pb::ListDisputesResponse {
            disputes: page.disputes.iter().map(dispute_to_pb).collect(),
            next_page_token: page
                .next_after
                .map(|id| convert::page_token(&id))
                .unwrap_or_default(),
        }))
    }

    async fn respond_to_dispute(
        &self,
        request: Request<pb::RespondToDisputeRequest>,
    ) -> Result<Response<pb::RespondToDisputeResponse>, Status> {
        self.on_dispute(
            request,
            "RespondToDispute",
            convert::respond_to_dispute,
            |dispute, order| pb::RespondToDisputeResponse { dispute, order },
        )
        .await
    }

    async fn accept_proposal(
        &self,
        request: Request<pb::AcceptProposalRequest>,
    ) -> Result<Response<pb::AcceptProposalResponse>, Status> {
        self.on_dispute(
            request,
            "AcceptProposal",
            convert::accept_proposal,
            |dispute, order| pb::AcceptProposalResponse { dispute, order },
        )
        .await
    }

    async fn escalate_dispute(
        &self,
        request: Request<pb::EscalateDisputeRequest>,
    ) -> Result<Response<pb::EscalateDisputeResponse>, Status> {
        self.on_dispute(
            request,
            "EscalateDispute",
            convert::escalate_dispute,
            |dispute, order| pb::EscalateDisputeResponse { dispute, order },
        )
        .await
    }

    async fn submit_return_shipment(
        &self,
        request: Request<pb::SubmitReturnShipmentRequest>,
    ) -> Result<Response<pb::SubmitReturnShipmentResponse>, Status> {
        self.on_dispute(
            request,
            "SubmitReturnShipment",
            convert::submit_return_shipment,
            |dispute, order| pb::SubmitReturnShipmentResponse { dispute, order },
        )
        .await
    }

    async fn confirm_return_received(
        &self,
        request: Request<pb::ConfirmReturnReceivedRequest>,
    ) -> Result<Response<pb::ConfirmReturnReceivedResponse>, Status> {
        self.on_dispute(
            request,
            "ConfirmReturnReceived",
            convert::confirm_return_received,
            |dispute, order| pb::ConfirmReturnReceivedResponse { dispute, order },
        )
        .await
    }

    async fn extend_protection(
        &self,
        request: Request<pb::ExtendProtectionRequest>,
    ) -> Result<Response<pb::ExtendProtectionResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (order_id, new_end, request_id) = convert::extend_protection(&req)?;
        on_span(&tracing::Span::current(), Some(&order_id), None);
        let commands = self.commands.clone();
        self.mutate(
            "ExtendProtection",
            caller,
            request_id,
            &req,
            move |conn, claim| {
                Box::pin(async move {
                    let order = commands
                        .extend_protection(conn, &order_id, new_end, claim)
                        .await?;
                    let response = pb::ExtendProtectionResponse {
                        order: Some(order_to_pb(&order)),
                    };
                    Ok((response, Done::ProtectionExtended(order)))
                })
            },
        )
        .await
    }

    async fn list_dispute_events(
        &self,
        request: Request<pb::ListDisputeEventsRequest>,
    ) -> Result<Response<pb::ListDisputeEventsResponse>, Status> {
        let actor = actor(&request)?;
        let (dispute_id, after_seq, page_size) = convert::list_dispute_events(request.get_ref())?;
        on_span(&tracing::Span::current(), None, Some(&dispute_id));
        let events = self
            .commands
            .history(&actor, dispute_id, after_seq, page_size)
            .await?;
        let next_page_token = match events.last() {
            Some(last) if events.len() == page_size => convert::page_token(&last.seq),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListDisputeEventsResponse {
            events: events.iter().map(convert::history_event_to_pb).collect(),
            next_page_token,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let mut after = convert::parse_cursor(&request.get_ref().after_cursor)?;
        // Refuse an expired cursor before the stream starts.
        let first = self.commands.stream(after, STREAM_BATCH).await?;
        let commands = self.commands.clone();
        let EventFeed {
            mut committed,
            mut stop,
        } = self.feed.clone();
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
                        event: Some(convert::stream_event_to_pb(&event)),
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
