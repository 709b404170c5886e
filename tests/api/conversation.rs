//! The dispute conversation (README, "The conversation"): messages are history entries and
//! stream events, change no state, are idempotent, and follow the text and evidence rules.

use dispute_service::{
    domain::Role,
    grpc::pb::{self, DisputeState, Remedy},
};
use futures::StreamExt;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

#[sqlx::test]
async fn the_parties_and_an_agent_talk_and_nothing_else_changes(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let opened = app.open("order-1", Remedy::FullRefund).await;
    let d = opened.dispute_id.clone();
    let mut service = app.service().await;
    let mut stream = service
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut with_photo = message(&d, "here is the scratch");
    with_photo.evidence_urls = vec!["s3://evidence/scratch.jpg".into()];
    let mut buyer = app.buyer().await;
    let posted = buyer
        .post_dispute_message(with_photo.clone())
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    app.seller()
        .await
        .post_dispute_message(message(&d, "sorry, we will fix it"))
        .await
        .unwrap();
    app.agent()
        .await
        .post_dispute_message(message(&d, "please agree within 5 days"))
        .await
        .unwrap();
    // A retry of the first message answers the same and posts nothing more.
    let again = buyer
        .post_dispute_message(with_photo)
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    assert_eq!(again, posted);

    let now = app.dispute(&d).await;
    assert_eq!(now.state, DisputeState::AwaitingSeller as i32);
    assert_eq!(
        (now.remedy, &now.description, &now.next_deadline),
        (opened.remedy, &opened.description, &opened.next_deadline),
        "the seller's deadline still runs from the opening"
    );
    assert_eq!(
        app.order("order-1").await.funds_state,
        pb::FundsState::Held as i32
    );

    let events = buyer
        .list_dispute_events(pb::ListDisputeEventsRequest {
            dispute_id: d.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let said: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e.kind == "MESSAGE_POSTED")
        .map(|e| {
            let payload = e.payload.as_ref().unwrap();
            let text = match &payload.fields["note"].kind {
                Some(prost_types::value::Kind::StringValue(text)) => text.clone(),
                other => panic!("no text: {other:?}"),
            };
            (e.actor_role.clone(), e.actor_id.clone(), text)
        })
        .collect();
    assert_eq!(
        said,
        [
            (
                "BUYER".into(),
                "buyer-1".into(),
                "here is the scratch".into()
            ),
            (
                "SELLER".into(),
                "seller-1".into(),
                "sorry, we will fix it".into()
            ),
            (
                "AGENT".into(),
                "agent-1".into(),
                "please agree within 5 days".into()
            ),
        ]
    );
    let first = events.iter().find(|e| e.kind == "MESSAGE_POSTED").unwrap();
    let urls = &first.payload.as_ref().unwrap().fields["evidence_urls"];
    assert!(format!("{urls:?}").contains("s3://evidence/scratch.jpg"));

    // The stream carries the opening's events, then the three messages.
    let mut kinds = Vec::new();
    while kinds.iter().filter(|k| *k == "MESSAGE_POSTED").count() < 3 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        kinds.push(event.r#type);
    }
    assert_eq!(kinds.iter().filter(|k| *k == "MESSAGE_POSTED").count(), 3);
}

#[sqlx::test]
async fn bad_messages_are_refused_with_every_violation_and_write_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    let mut buyer = app.buyer().await;
    let mut bad = message("not-a-uuid", "");
    bad.evidence_urls = vec![
        "javascript:alert(1)".into(),
        String::new(),
        format!("s3://{}", "x".repeat(600)),
    ];
    bad.request_id = String::new();
    let mut fields = violated_fields(buyer.post_dispute_message(bad).await);
    fields.sort();
    assert_eq!(
        fields,
        [
            "dispute_id",
            "evidence_urls[0]",
            "evidence_urls[1]",
            "evidence_urls[2]",
            "request_id",
            "text"
        ]
    );
    let too_long = message(&d, &"é".repeat(2_001));
    assert_eq!(
        violated_fields(buyer.post_dispute_message(too_long).await),
        ["text"]
    );
    assert_eq!(
        violated_fields(buyer.post_dispute_message(message(&d, "a\u{202e}b")).await),
        ["text"]
    );
    let mut eleven = message(&d, "photos");
    eleven.evidence_urls = (0..11).map(|i| format!("s3://e/{i}.jpg")).collect();
    assert_eq!(
        violated_fields(buyer.post_dispute_message(eleven).await),
        ["evidence_urls"]
    );
    let exactly = message(&d, &"é".repeat(2_000));
    buyer.post_dispute_message(exactly).await.unwrap();
    // The same request id with other words is a reused id.
    let first = message(&d, "first words");
    buyer.post_dispute_message(first.clone()).await.unwrap();
    let mut reused = first;
    reused.text = "other words".into();
    assert_eq!(
        reason(buyer.post_dispute_message(reused).await),
        (Code::InvalidArgument, "REQUEST_ID_REUSED".into())
    );
    assert_eq!(
        history(&pool, &d).await,
        ["DISPUTE_OPENED", "MESSAGE_POSTED", "MESSAGE_POSTED"]
    );
}

#[sqlx::test]
async fn only_the_disputes_parties_and_agents_write_and_only_while_it_is_open(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    for (role, sub) in [(Role::Buyer, "buyer-2"), (Role::Seller, "seller-2")] {
        let mut stranger = app.client(role, sub).await;
        assert_eq!(
            reason(stranger.post_dispute_message(message(&d, "hi")).await),
            (Code::NotFound, "DISPUTE_NOT_FOUND".into())
        );
    }
    assert_eq!(
        reason(
            app.service()
                .await
                .post_dispute_message(message(&d, "hi"))
                .await
        ),
        (Code::PermissionDenied, "ROLE_NOT_ALLOWED".into())
    );
    let mut buyer = app.buyer().await;
    buyer.cancel_dispute(cancel_request(&d)).await.unwrap();
    assert_eq!(
        reason(buyer.post_dispute_message(message(&d, "hi")).await),
        (Code::FailedPrecondition, "DISPUTE_CLOSED".into())
    );
    assert_eq!(
        history(&pool, &d).await,
        ["DISPUTE_OPENED", "DISPUTE_CANCELLED"]
    );
}
