//! The `DisputeService` handlers. Every write reads top to bottom: parse the request into
//! a command → run it (the command owns the transaction, the idempotency key, the domain
//! decision, the writes and the events) → encode the answer. The actor and trace id were
//! put in the request's extensions by the gate; nothing in the request body can name or
//! change them.

use prost::Message;
use tonic::{Code, Request, Response, Status};

use super::{
    encode::{dispute_to_pb, history_event_to_pb, order_to_pb, seller_stats_to_pb},
    error::status,
    limits::{Full, Slots},
    parse::{
        self, DisputeRequest, EvidencePrefixes, ExtendProtection, ListDisputeEvents, ListDisputes,
        OpenDispute, RegisterOrder, SellerStatsRequest,
    },
    pb::{self, dispute_service_server::DisputeService},
    policy::Rpc,
    stream::{self, EventStream},
    tokens::TokenKey,
};
use crate::{
    commands::{Commands, RequestKey},
    domain::{
        Actor, Deadlines, Dispute, DisputeFilter, DisputeId, DomainError, ListPosition, PartyId,
        RequestId, TraceId,
    },
    feed::EventFeed,
};

pub struct DisputeApi {
    commands: Commands,
    feed: EventFeed,
    /// WatchEvents streams open, in all and per caller.
    streams: Slots,
    evidence: EvidencePrefixes,
    tokens: TokenKey,
    /// The worker's deadlines: each dispute shows its next one.
    deadlines: Deadlines,
}

/// What the API is built from besides the commands.
pub struct ApiParts {
    pub feed: EventFeed,
    pub streams: Slots,
    pub evidence: EvidencePrefixes,
    pub tokens: TokenKey,
    pub deadlines: Deadlines,
}

impl DisputeApi {
    pub fn new(commands: Commands, parts: ApiParts) -> Self {
        let ApiParts {
            feed,
            streams,
            evidence,
            tokens,
            deadlines,
        } = parts;
        Self {
            commands,
            feed,
            streams,
            evidence,
            tokens,
            deadlines,
        }
    }

    /// A dispute as the API shows it, with its next deadline.
    fn dispute(&self, dispute: &Dispute) -> pb::Dispute {
        dispute_to_pb(dispute, self.deadlines.next(dispute))
    }

    /// Every RPC that acts on one dispute: parse, run, answer with the dispute and its order.
    async fn on_dispute<Req, Resp>(
        &self,
        request: Request<Req>,
        rpc: Rpc,
        respond: fn(Option<pb::Dispute>, Option<pb::Order>) -> Resp,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
        for<'r> DisputeRequest: TryFrom<&'r Req, Error = DomainError>,
    {
        self.on_dispute_parsed(request, rpc, |req| DisputeRequest::try_from(req), respond)
            .await
    }

    /// [`Self::on_dispute`] with the request parsed by `parse`.
    async fn on_dispute_parsed<Req, Resp>(
        &self,
        request: Request<Req>,
        rpc: Rpc,
        parse: impl FnOnce(&Req) -> Result<DisputeRequest, DomainError>,
        respond: fn(Option<pb::Dispute>, Option<pb::Order>) -> Resp,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
    {
        let (caller, req) = caller(request)?;
        let DisputeRequest {
            dispute_id,
            command,
            request_id,
        } = parse(&req)?;
        on_span(None, Some(&dispute_id));
        let key = caller.key(rpc, request_id, &req);
        let (dispute, order) = self.commands.execute(dispute_id, command, key).await?;
        on_span(Some(&order.order_id), None);
        Ok(Response::new(respond(
            Some(self.dispute(&dispute)),
            Some(order_to_pb(&order)),
        )))
    }
}

/// Who is calling, in which trace: what the gate put on the request.
struct Caller {
    actor: Actor,
    trace_id: TraceId,
}

impl Caller {
    /// The idempotency key of a write: this caller, this RPC, this request id and payload.
    fn key(self, rpc: Rpc, request_id: RequestId, request: &impl Message) -> RequestKey {
        RequestKey::new(
            self.actor,
            rpc.name(),
            request_id,
            &request.encode_to_vec(),
            self.trace_id,
        )
    }
}

/// What a ListDisputes page token is valid for: the caller and the whole filter (its
/// position aside).
fn list_scope(actor: &Actor, filter: &DisputeFilter, needs_my_action: bool) -> String {
    format!(
        "disputes|{}|{}|{:?}|{:?}|{:?}|{:?}|{needs_my_action}|{:?}",
        actor.role.as_str(),
        actor.id,
        filter.order_id,
        filter.buyer_id,
        filter.seller_id,
        filter.states,
        filter.order,
    )
}

/// A page position as a token's payload: the last dispute's update time (µs) and id.
fn payload_of(position: ListPosition) -> String {
    format!(
        "{}:{}",
        position.updated_at.timestamp_micros(),
        position.dispute_id
    )
}

fn position_of(payload: &str) -> Option<ListPosition> {
    let (micros, id) = payload.split_once(':')?;
    Some(ListPosition {
        updated_at: chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        dispute_id: DisputeId::parse(id).ok()?,
    })
}

/// The caller of a request and the request itself.
fn caller<T>(request: Request<T>) -> Result<(Caller, T), Status> {
    let actor = actor(&request)?;
    let trace_id = request
        .extensions()
        .get::<TraceId>()
        .cloned()
        .unwrap_or_default();
    Ok((Caller { actor, trace_id }, request.into_inner()))
}

fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request
        .extensions()
        .get::<Actor>()
        .cloned()
        .ok_or_else(|| status(Code::Unauthenticated, "UNAUTHENTICATED", "unauthenticated"))
}

/// Names the order and dispute a call is about on its RPC span (ids only, never free
/// text). Called from the handler, where the RPC's span is the current one.
fn on_span(order_id: Option<&PartyId>, dispute_id: Option<&DisputeId>) {
    let span = tracing::Span::current();
    if let Some(order_id) = order_id {
        span.record("order.id", order_id.as_str());
    }
    if let Some(dispute_id) = dispute_id {
        span.record("dispute.id", tracing::field::display(dispute_id));
    }
}

#[tonic::async_trait]
impl DisputeService for DisputeApi {
    async fn register_order(
        &self,
        request: Request<pb::RegisterOrderRequest>,
    ) -> Result<Response<pb::RegisterOrderResponse>, Status> {
        let (caller, req) = caller(request)?;
        let RegisterOrder { order, request_id } = RegisterOrder::try_from(&req)?;
        on_span(Some(&order.order_id), None);
        let key = caller.key(Rpc::RegisterOrder, request_id, &req);
        let order = self.commands.register_order(order, key).await?;
        Ok(Response::new(pb::RegisterOrderResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let actor = actor(&request)?;
        let order_id = parse::order_id(&request.get_ref().order_id)?;
        on_span(Some(&order_id), None);
        let order = self.commands.get_order(&actor, &order_id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    async fn open_dispute(
        &self,
        request: Request<pb::OpenDisputeRequest>,
    ) -> Result<Response<pb::OpenDisputeResponse>, Status> {
        let (caller, req) = caller(request)?;
        let OpenDispute {
            dispute,
            request_id,
        } = OpenDispute::parse(&req, &self.evidence)?;
        on_span(Some(&dispute.order_id), None);
        let key = caller.key(Rpc::OpenDispute, request_id, &req);
        let dispute = self.commands.open_dispute(dispute, key).await?;
        on_span(None, Some(&dispute.dispute_id));
        Ok(Response::new(pb::OpenDisputeResponse {
            dispute: Some(self.dispute(&dispute)),
        }))
    }

    async fn cancel_dispute(
        &self,
        request: Request<pb::CancelDisputeRequest>,
    ) -> Result<Response<pb::CancelDisputeResponse>, Status> {
        self.on_dispute(request, Rpc::CancelDispute, |dispute, order| {
            pb::CancelDisputeResponse { dispute, order }
        })
        .await
    }

    async fn cancel_return(
        &self,
        request: Request<pb::CancelReturnRequest>,
    ) -> Result<Response<pb::CancelReturnResponse>, Status> {
        self.on_dispute(request, Rpc::CancelReturn, |dispute, order| {
            pb::CancelReturnResponse { dispute, order }
        })
        .await
    }

    async fn resolve_funds(
        &self,
        request: Request<pb::ResolveFundsRequest>,
    ) -> Result<Response<pb::ResolveFundsResponse>, Status> {
        self.on_dispute(request, Rpc::ResolveFunds, |dispute, order| {
            pb::ResolveFundsResponse { dispute, order }
        })
        .await
    }

    async fn get_dispute(
        &self,
        request: Request<pb::GetDisputeRequest>,
    ) -> Result<Response<pb::GetDisputeResponse>, Status> {
        let actor = actor(&request)?;
        let dispute_id = parse::dispute_id(&request.get_ref().dispute_id)?;
        on_span(None, Some(&dispute_id));
        let dispute = self.commands.get_dispute(&actor, dispute_id).await?;
        Ok(Response::new(pb::GetDisputeResponse {
            dispute: Some(self.dispute(&dispute)),
        }))
    }

    async fn list_disputes(
        &self,
        request: Request<pb::ListDisputesRequest>,
    ) -> Result<Response<pb::ListDisputesResponse>, Status> {
        let actor = actor(&request)?;
        let tokens = self.tokens.tokens().await?;
        let ListDisputes {
            filter,
            needs_my_action,
            page_size,
        } = ListDisputes::parse(request.get_ref(), |filter, mine, token| {
            let payload = tokens.open(&list_scope(&actor, filter, mine), token)?;
            position_of(&payload)
        })?;
        let scope = list_scope(&actor, &filter, needs_my_action);
        let page = self
            .commands
            .list_disputes(&actor, filter, needs_my_action, page_size)
            .await?;
        Ok(Response::new(pb::ListDisputesResponse {
            disputes: page.disputes.iter().map(|d| self.dispute(d)).collect(),
            next_page_token: page
                .next_after
                .map(|p| tokens.seal(&scope, &payload_of(p)))
                .unwrap_or_default(),
            total_size: page.total.map(|n| n.try_into().unwrap_or(i32::MAX)),
        }))
    }

    async fn respond_to_dispute(
        &self,
        request: Request<pb::RespondToDisputeRequest>,
    ) -> Result<Response<pb::RespondToDisputeResponse>, Status> {
        self.on_dispute(request, Rpc::RespondToDispute, |dispute, order| {
            pb::RespondToDisputeResponse { dispute, order }
        })
        .await
    }

    async fn accept_proposal(
        &self,
        request: Request<pb::AcceptProposalRequest>,
    ) -> Result<Response<pb::AcceptProposalResponse>, Status> {
        self.on_dispute(request, Rpc::AcceptProposal, |dispute, order| {
            pb::AcceptProposalResponse { dispute, order }
        })
        .await
    }

    async fn escalate_dispute(
        &self,
        request: Request<pb::EscalateDisputeRequest>,
    ) -> Result<Response<pb::EscalateDisputeResponse>, Status> {
        self.on_dispute(request, Rpc::EscalateDispute, |dispute, order| {
            pb::EscalateDisputeResponse { dispute, order }
        })
        .await
    }

    async fn submit_return_shipment(
        &self,
        request: Request<pb::SubmitReturnShipmentRequest>,
    ) -> Result<Response<pb::SubmitReturnShipmentResponse>, Status> {
        self.on_dispute(request, Rpc::SubmitReturnShipment, |dispute, order| {
            pb::SubmitReturnShipmentResponse { dispute, order }
        })
        .await
    }

    async fn confirm_return_received(
        &self,
        request: Request<pb::ConfirmReturnReceivedRequest>,
    ) -> Result<Response<pb::ConfirmReturnReceivedResponse>, Status> {
        self.on_dispute(request, Rpc::ConfirmReturnReceived, |dispute, order| {
            pb::ConfirmReturnReceivedResponse { dispute, order }
        })
        .await
    }

    async fn submit_replacement_shipment(
        &self,
        request: Request<pb::SubmitReplacementShipmentRequest>,
    ) -> Result<Response<pb::SubmitReplacementShipmentResponse>, Status> {
        self.on_dispute(request, Rpc::SubmitReplacementShipment, |dispute, order| {
            pb::SubmitReplacementShipmentResponse { dispute, order }
        })
        .await
    }

    async fn confirm_replacement_received(
        &self,
        request: Request<pb::ConfirmReplacementReceivedRequest>,
    ) -> Result<Response<pb::ConfirmReplacementReceivedResponse>, Status> {
        self.on_dispute(
            request,
            Rpc::ConfirmReplacementReceived,
            |dispute, order| pb::ConfirmReplacementReceivedResponse { dispute, order },
        )
        .await
    }

    async fn post_dispute_message(
        &self,
        request: Request<pb::PostDisputeMessageRequest>,
    ) -> Result<Response<pb::PostDisputeMessageResponse>, Status> {
        let evidence = &self.evidence;
        self.on_dispute_parsed(
            request,
            Rpc::PostDisputeMessage,
            |req| DisputeRequest::post_message(req, evidence),
            |dispute, _| pb::PostDisputeMessageResponse { dispute },
        )
        .await
    }

    async fn add_internal_note(
        &self,
        request: Request<pb::AddInternalNoteRequest>,
    ) -> Result<Response<pb::AddInternalNoteResponse>, Status> {
        self.on_dispute(request, Rpc::AddInternalNote, |dispute, _| {
            pb::AddInternalNoteResponse { dispute }
        })
        .await
    }

    async fn get_seller_dispute_stats(
        &self,
        request: Request<pb::GetSellerDisputeStatsRequest>,
    ) -> Result<Response<pb::GetSellerDisputeStatsResponse>, Status> {
        let actor = actor(&request)?;
        let SellerStatsRequest { seller_id, window } =
            SellerStatsRequest::try_from(request.get_ref())?;
        let stats = self
            .commands
            .seller_stats(&actor, &seller_id, window)
            .await?;
        Ok(Response::new(seller_stats_to_pb(&stats)))
    }

    async fn extend_protection(
        &self,
        request: Request<pb::ExtendProtectionRequest>,
    ) -> Result<Response<pb::ExtendProtectionResponse>, Status> {
        let (caller, req) = caller(request)?;
        let ExtendProtection {
            order_id,
            new_end,
            request_id,
        } = ExtendProtection::try_from(&req)?;
        on_span(Some(&order_id), None);
        let key = caller.key(Rpc::ExtendProtection, request_id, &req);
        let order = self
            .commands
            .extend_protection(&order_id, new_end, key)
            .await?;
        Ok(Response::new(pb::ExtendProtectionResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    async fn list_dispute_events(
        &self,
        request: Request<pb::ListDisputeEventsRequest>,
    ) -> Result<Response<pb::ListDisputeEventsResponse>, Status> {
        let actor = actor(&request)?;
        let tokens = self.tokens.tokens().await?;
        let scope = |dispute_id: DisputeId| {
            format!("history|{}|{}|{dispute_id}", actor.role.as_str(), actor.id)
        };
        let ListDisputeEvents {
            dispute_id,
            after_seq,
            page_size,
        } = ListDisputeEvents::parse(request.get_ref(), |dispute_id, token| {
            tokens.open(&scope(dispute_id), token)?.parse().ok()
        })?;
        on_span(None, Some(&dispute_id));
        let events = self
            .commands
            .history(&actor, dispute_id, after_seq, page_size)
            .await?;
        let next_page_token = match events.last() {
            Some(last) if events.len() == page_size => {
                tokens.seal(&scope(dispute_id), &last.seq.to_string())
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListDisputeEventsResponse {
            events: events.iter().map(history_event_to_pb).collect(),
            next_page_token,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let tokens = self.tokens.tokens().await?;
        let after = tokens.parse_cursor(&request.get_ref().after_cursor)?;
        let slot = self
            .streams
            .slot(&actor(&request)?)
            .map_err(|full| match full {
                Full::Caller => status(
                    Code::ResourceExhausted,
                    "TOO_MANY_STREAMS",
                    "this caller has too many WatchEvents streams open; close one first",
                ),
                Full::Total => status(
                    Code::ResourceExhausted,
                    "TOO_MANY_STREAMS",
                    "the server has too many WatchEvents streams open; retry with backoff",
                ),
            })?;
        let events = stream::watch(
            self.commands.clone(),
            self.feed.clone(),
            tokens,
            after,
            slot,
        )
        .await?;
        Ok(Response::new(events))
    }
}
