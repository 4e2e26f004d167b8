//! A job whose runtime this agent's build does not know (a newer coordinator's): the agent
//! answers it with an `unavailable` report section naming the runtime, so the run is
//! inconclusive rather than waiting for a job that never starts. The coordinator here is a
//! hand-written gRPC service on loopback that assigns one such job and reads the answer; as an
//! older coordinator it gets the section plain, and compressed once its `Welcome` asks for it.

mod support;

use std::time::Duration;

use fleetgate_common::convert;
use fleetgate_common::job::JobUpdate;
use fleetgate_common::report::RuntimeStatus;
use fleetgate_proto::v1 as pb;
use pb::agent_service_server::{AgentService, AgentServiceServer};
use support::{Process, agent_command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Welcomes the agent, assigns one job of runtime `warp_drive`, and passes on what the agent
/// sends about it.
struct OneJob {
    answers: mpsc::Sender<pb::JobEvent>,
    compressed_sections: bool,
}

#[tonic::async_trait]
impl AgentService for OneJob {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let answers = self.answers.clone();
        let compressed_sections = self.compressed_sections;
        tokio::spawn(async move {
            let down = |body| Ok(pb::CoordinatorMessage { body: Some(body) });
            use pb::coordinator_message::Body;
            tx.send(down(Body::Welcome(pb::Welcome {
                heartbeat_interval_ms: 500,
                compressed_sections,
                ..pb::Welcome::default()
            })))
            .await
            .ok();
            let workload = pb::Workload {
                profile: pb::Profile::Pr as i32,
                mode: pb::Mode::Soak as i32,
                iterations: 1,
                allocation_kb: 1,
                kind: pb::WorkloadKind::Reference as i32,
            };
            tx.send(down(Body::AssignJob(pb::AssignJob {
                job: Some(pb::JobSpec {
                    job_id: "job-1".into(),
                    run_id: "run-1".into(),
                    runtime: "warp_drive".into(),
                    deadline_unix_ms: 253_402_300_799_999,
                    workload_spec: Some(workload),
                    ..pb::JobSpec::default()
                }),
            })))
            .await
            .ok();
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(pb::agent_message::Body::JobEvent(event)) = message.body {
                    answers.send(event).await.ok();
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The agent's answer to a coordinator that does (or does not) read compressed sections.
async fn answer(compressed_sections: bool) -> pb::JobEvent {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (answers, mut answered) = mpsc::channel(8);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(OneJob {
                answers,
                compressed_sections,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let work = tempfile::tempdir().unwrap();
    let mut command = agent_command();
    command
        .arg("run")
        .args(["--coordinator", &url, "--plaintext"])
        .args(["--agent-id", "old-agent"])
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .arg("--artifact-root")
        .arg(work.path().join("artifacts"));
    let mut agent = Process::spawn(command);

    let event = tokio::time::timeout(Duration::from_secs(60), answered.recv())
        .await
        .unwrap_or_else(|_| panic!("no answer in 60 s: {:?}", agent.lines_so_far()))
        .unwrap();
    agent.kill();
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_runtime_this_build_lacks_is_answered_unavailable() {
    for compressed_sections in [false, true] {
        let event = answer(compressed_sections).await;
        assert_eq!(event.job_id, "job-1");
        assert_eq!(event.sequence, 1);
        let Some(pb::job_event::Body::Report(report)) = &event.body else {
            panic!("not a report: {event:?}");
        };
        // Plain to a coordinator that did not ask for compressed sections (an older one).
        assert_eq!(
            (
                report.section_json.is_empty(),
                report.section_json_deflate.is_empty()
            ),
            (compressed_sections, !compressed_sections),
            "compressed_sections {compressed_sections}"
        );
        let JobUpdate::Report { section } = convert::job_update_from_pb(event).unwrap() else {
            panic!("not a report");
        };
        assert_eq!(section.status, RuntimeStatus::Unavailable);
        assert_eq!(
            section.reason.as_deref(),
            Some("runtime 'warp_drive' is not built into this agent")
        );
    }
}
