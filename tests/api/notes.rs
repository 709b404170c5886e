//! AddInternalNote (README, "What the parties see"): an agent's note is a history entry and
//! a stream event that only agents (and the platform's services) read; it changes nothing
//! else — not even the dispute's `updated_at` — is idempotent, may be written in any state,
//! and only by an agent.

use dispute_service::{
    domain::Role,
    grpc::pb::{self, Remedy},
};
use futures::StreamExt;
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::*;

fn note(dispute_id: &str, text: &str) -> pb::AddInternalNoteRequest {
    pb::AddInternalNoteRequest {
        dispute_id: dispute_id.into(),
        text: text.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// The kinds of the history entries `client` is shown, and the notes' texts.
async fn shown(client: &mut Client, dispute_id: &str) -> (Vec<String>, Vec<String>) {
    let events = client
        .list_dispute_events(pb::ListDisputeEventsRequest {
            dispute_id: dispute_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let notes = events
        .iter()
        .filter(|e| e.kind == "INTERNAL_NOTE_ADDED")
        .map(|e| match &e.payload.as_ref().unwrap().fields["note"].kind {
            Some(prost_types::value::Kind::StringValue(text)) => text.clone(),
            other => panic!("a note without its text: {other:?}"),
        })
        .collect();
    (events.into_iter().map(|e| e.kind).collect(), notes)
}

#[sqlx::test]
async fn an_agents_note_is_read_by_agents_and_the_stream_never_by_the_parties(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    let before = app.dispute(&d).await;
    let mut service = app.service().await;
    let mut stream = service
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let mut agent = app.agent().await;
    let request = note(&d, "buyer called; the photos look staged");
    let noted = agent
        .add_internal_note(request.clone())
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    // Nothing about the dispute changed, not even when it last changed.
    assert_eq!(noted, before);
    assert_eq!(app.dispute(&d).await, before);
    // A retry answers the same and notes nothing more.
    let again = agent
        .add_internal_note(request)
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    assert_eq!(again, noted);
    assert_eq!(
        history(&pool, &d).await,
        ["DISPUTE_OPENED", "INTERNAL_NOTE_ADDED"]
    );

    let note_text = vec!["buyer called; the photos look staged".to_owned()];
    let everything = vec![
        "DISPUTE_OPENED".to_owned(),
        "INTERNAL_NOTE_ADDED".to_owned(),
    ];
    assert_eq!(shown(&mut agent, &d).await, (everything.clone(), note_text));
    assert_eq!(shown(&mut service, &d).await.0, everything);
    for mut party in [app.buyer().await, app.seller().await] {
        assert_eq!(
            shown(&mut party, &d).await,
            (vec!["DISPUTE_OPENED".to_owned()], vec![])
        );
    }

    // The stream carries it, by the agent.
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        if event.r#type == "INTERNAL_NOTE_ADDED" {
            assert_eq!(
                (event.actor_role.as_str(), event.actor_id.as_str()),
                ("AGENT", "agent-1")
            );
            break;
        }
    }
}

#[sqlx::test]
async fn only_an_agent_notes_and_a_bad_note_writes_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    for mut caller in [app.buyer().await, app.seller().await, app.service().await] {
        assert_eq!(
            caller
                .add_internal_note(note(&d, "hi"))
                .await
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
    }
    let mut agent = app.agent().await;
    let mut bad = note("not-a-uuid", " ");
    bad.request_id = String::new();
    let mut fields = violated_fields(agent.add_internal_note(bad).await);
    fields.sort();
    assert_eq!(fields, ["dispute_id", "request_id", "text"]);
    assert_eq!(
        violated_fields(agent.add_internal_note(note(&d, &"é".repeat(2_001))).await),
        ["text"]
    );
    assert_eq!(
        reason(
            agent
                .add_internal_note(note(&uuid::Uuid::now_v7().to_string(), "hi"))
                .await
        ),
        (Code::NotFound, "DISPUTE_NOT_FOUND".into())
    );
    // The same request id with other words is a reused id.
    let first = note(&d, "first words");
    agent.add_internal_note(first.clone()).await.unwrap();
    let mut reused = first;
    reused.text = "other words".into();
    assert_eq!(
        reason(agent.add_internal_note(reused).await),
        (Code::InvalidArgument, "REQUEST_ID_REUSED".into())
    );
    assert_eq!(
        history(&pool, &d).await,
        ["DISPUTE_OPENED", "INTERNAL_NOTE_ADDED"]
    );
}

#[sqlx::test]
async fn an_agent_notes_a_closed_dispute_too(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.register("order-1").await;
    let d = app.open("order-1", Remedy::FullRefund).await.dispute_id;
    app.buyer()
        .await
        .cancel_dispute(cancel_request(&d))
        .await
        .unwrap();
    let closed = app.dispute(&d).await;
    let mut agent = app.client(Role::Agent, "agent-7").await;
    let noted = agent
        .add_internal_note(note(&d, "the buyer cancelled after our call"))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    assert_eq!(noted, closed);
    assert_eq!(
        history(&pool, &d).await,
        ["DISPUTE_OPENED", "DISPUTE_CANCELLED", "INTERNAL_NOTE_ADDED"]
    );
}
