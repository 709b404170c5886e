//! The `DisputeService` handlers: parse the request, run the command, convert the answer.
//! The actor was put in the request's extensions by the gate; nothing in the request
//! body can name or change it.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tonic::{Code, Request, Response, Status};

use super::{
    convert::{self, dispute_to_pb, order_to_pb},
    error::status,
    pb::{self, dispute_service_server::DisputeService},
};
use crate::{
    commands::{Commands, Error},
    domain::{Actor, CancelVia, RequestId},
    store::IdempotencyKey,
};

pub struct DisputeApi {
    commands: Commands,
}

impl DisputeApi {
    pub fn new(commands: Commands) -> Self {
        Self { commands }
    }

    /// Runs a mutating command under the caller's idempotency key and returns its
    /// response, byte for byte the first one for a retry.
    async fn mutate<Req, Resp, F>(
        &self,
        rpc: &'static str,
        actor: &Actor,
        request_id: &RequestId,
        request: &Req,
        command: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
        Resp: Message + Default + 'static,
        F: for<'c> FnOnce(
                &'c mut PgConnection,
                DateTime<Utc>,
            ) -> BoxFuture<'c, Result<Resp, Error>>
            + Send,
    {
        let request_hash = Sha256::digest(request.encode_to_vec());
        let key = IdempotencyKey {
            actor,
            rpc,
            request_id,
        };
        let encoded = self
            .commands
            .idempotent(key, &request_hash, move |conn, now| {
                let response = command(conn, now);
                Box::pin(async move { Ok(response.await?.encode_to_vec()) })
            })
            .await?;
        let response = Resp::decode(encoded.as_slice()).map_err(|error| {
            tracing::error!(%error, rpc, "stored idempotent response does not decode");
            status(Code::Internal, "INTERNAL", "internal error")
        })?;
        Ok(Response::new(response))
    }
}

fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request
        .extensions()
        .get::<Actor>()
        .cloned()
        .ok_or_else(|| status(Code::Unauthenticated, "UNAUTHENTICATED", "unauthenticated"))
}

#[tonic::async_trait]
impl DisputeService for DisputeApi {
    async fn register_order(
        &self,
        request: Request<pb::RegisterOrderRequest>,
    ) -> Result<Response<pb::RegisterOrderResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let (new, request_id) = convert::register_order(&req)?;
        let commands = self.commands.clone();
        self.mutate(
            "RegisterOrder",
            &actor,
            &request_id,
            &req,
            move |conn, now| {
                Box::pin(async move {
                    let registered = commands.register_order(conn, new, now).await?;
                    if registered.created {
                        tracing::info!(order_id = %registered.order.order_id, "order registered");
                    }
                    Ok(pb::RegisterOrderResponse {
                        order: Some(order_to_pb(&registered.order)),
                    })
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
        let order = self.commands.get_order(&actor, &order_id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    async fn open_dispute(
        &self,
        request: Request<pb::OpenDisputeRequest>,
    ) -> Result<Response<pb::OpenDisputeResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let (new, request_id) = convert::open_dispute(&req)?;
        let commands = self.commands.clone();
        let by = actor.clone();
        self.mutate("OpenDispute", &actor, &request_id, &req, move |conn, now| {
            Box::pin(async move {
                let change = commands.open_dispute(conn, &by, new, now).await?;
                tracing::info!(dispute_id = %change.dispute.dispute_id, order_id = %change.order.order_id, "dispute opened");
                Ok(pb::OpenDisputeResponse {
                    dispute: Some(dispute_to_pb(&change.dispute)),
                })
            })
        })
        .await
    }

    async fn cancel_dispute(
        &self,
        request: Request<pb::CancelDisputeRequest>,
    ) -> Result<Response<pb::CancelDisputeResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let (dispute_id, request_id) = convert::cancel(&req.dispute_id, &req.request_id)?;
        let commands = self.commands.clone();
        let by = actor.clone();
        self.mutate("CancelDispute", &actor, &request_id, &req, move |conn, now| {
            Box::pin(async move {
                let change = commands.cancel(conn, &by, dispute_id, CancelVia::Dispute, now).await?;
                tracing::info!(%dispute_id, settled = change.settlement.is_some(), "dispute cancelled");
                Ok(pb::CancelDisputeResponse {
                    dispute: Some(dispute_to_pb(&change.dispute)),
                    order: Some(order_to_pb(&change.order)),
                })
            })
        })
        .await
    }

    async fn cancel_return(
        &self,
        request: Request<pb::CancelReturnRequest>,
    ) -> Result<Response<pb::CancelReturnResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let (dispute_id, request_id) = convert::cancel(&req.dispute_id, &req.request_id)?;
        let commands = self.commands.clone();
        let by = actor.clone();
        self.mutate("CancelReturn", &actor, &request_id, &req, move |conn, now| {
            Box::pin(async move {
                let change = commands.cancel(conn, &by, dispute_id, CancelVia::Return, now).await?;
                tracing::info!(%dispute_id, settled = change.settlement.is_some(), "return and dispute cancelled");
                Ok(pb::CancelReturnResponse {
                    dispute: Some(dispute_to_pb(&change.dispute)),
                    order: Some(order_to_pb(&change.order)),
                })
            })
        })
        .await
    }

    async fn resolve_funds(
        &self,
        request: Request<pb::ResolveFundsRequest>,
    ) -> Result<Response<pb::ResolveFundsResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let (dispute_id, resolution, note, request_id) = convert::resolve_funds(&req)?;
        let commands = self.commands.clone();
        let by = actor.clone();
        self.mutate("ResolveFunds", &actor, &request_id, &req, move |conn, now| {
            Box::pin(async move {
                let change = commands.resolve(conn, &by, dispute_id, resolution, &note, now).await?;
                tracing::info!(%dispute_id, outcome = ?change.dispute.outcome, "dispute resolved");
                Ok(pb::ResolveFundsResponse {
                    dispute: Some(dispute_to_pb(&change.dispute)),
                    order: Some(order_to_pb(&change.order)),
                })
            })
        })
        .await
    }

    async fn get_dispute(
        &self,
        request: Request<pb::GetDisputeRequest>,
    ) -> Result<Response<pb::GetDisputeResponse>, Status> {
        let actor = actor(&request)?;
        let dispute_id = convert::dispute_id(&request.get_ref().dispute_id)?;
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
            next_page_token: page.next_after.map(convert::page_token).unwrap_or_default(),
        }))
    }
}
