//! Agent sessions driven by hand over real gRPC: a `Hello` of the test's choosing, then
//! whatever the test sends. Used by the tests and by the `bounded_memory` bench.

use std::time::Duration;

use fleetgate_common::auth::{BearerToken, Token};
use fleetgate_common::convert;
use fleetgate_common::job::JobUpdate;
use fleetgate_common::report::RuntimeSection;
use fleetgate_common::tls::CoordinatorLink;
use fleetgate_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The sender of a session's messages and its inbound stream.
pub(crate) type Session = (
    mpsc::Sender<pb::AgentMessage>,
    tonic::Streaming<pb::CoordinatorMessage>,
);

/// Opens an agent session over `link` with the agent token `token`, saying `hello`; once
/// welcomed, its sender and inbound stream — or the status that refused it (`UNAVAILABLE`
/// when the connection itself failed).
pub(crate) async fn session(
    link: &CoordinatorLink,
    token: Option<Token>,
    hello: pb::Hello,
) -> Result<Session, tonic::Status> {
    let unavailable = |e: String| tonic::Status::unavailable(e);
    let channel = link
        .endpoint()
        .map_err(|e| unavailable(e.to_string()))?
        .connect()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut client = AgentServiceClient::with_interceptor(channel, BearerToken(token));
    let (tx, rx) = mpsc::channel(64);
    let id = hello.agent_id.clone();
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(hello)),
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    match inbound.message().await?.and_then(|m| m.body) {
        Some(pb::coordinator_message::Body::Welcome(_)) => Ok((tx, inbound)),
        other => panic!("no welcome for {id}: {other:?}"),
    }
}

/// Keeps `session` alive with a heartbeat every `beat` and answers every job it is given at
/// once with `section` as its report, until the session ends.
pub(crate) fn answer_every_job(
    session: Session,
    beat: Duration,
    section: RuntimeSection,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut inbound) = session;
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(beat);
        loop {
            let message = tokio::select! {
                _ = beat.tick() => {
                    let heartbeat = pb::agent_message::Body::Heartbeat(pb::Heartbeat::default());
                    if tx.send(pb::AgentMessage { body: Some(heartbeat) }).await.is_err() {
                        return;
                    }
                    continue;
                }
                message = inbound.message() => message,
            };
            let Ok(Some(message)) = message else { return };
            let Some(pb::coordinator_message::Body::AssignJob(assign)) = message.body else {
                continue;
            };
            let Some(job) = assign.job else { continue };
            let report = JobUpdate::Report {
                section: Box::new(section.clone()),
            };
            let event = convert::job_event_to_pb(&job.job_id, 1, &report);
            let body = pb::agent_message::Body::JobEvent(event);
            if tx
                .send(pb::AgentMessage { body: Some(body) })
                .await
                .is_err()
            {
                return;
            }
        }
    })
}
