//! The CLI's side of the run API: submit a run to a coordinator and follow its events until the
//! report, and the embedded default — a coordinator and one local agent started in this
//! process tree, reached over the same gRPC path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_agent::daemon::{self, AgentConfig};
use fleetgate_agent::worker::WorkerCommand;
use fleetgate_common::auth::{BearerToken, Token};
use fleetgate_common::convert;
use fleetgate_common::messages::AgentState;
use fleetgate_common::report::Report;
use fleetgate_common::tls::{self, CoordinatorLink, LabCa};
use fleetgate_proto::v1 as pb;
use pb::run_service_client::RunServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::plan::RunError;
use crate::registry::CoordinatorSettings;
use crate::report_stream::{ReportAssembler, ReportStreamError};
use crate::service;
use fleetgate_common::run::RunSpec;

/// Extra time past the run's deadline before the client gives up on a silent coordinator.
const REPORT_GRACE: Duration = Duration::from_secs(60);

/// How long a unary call (a page of agents) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Agents asked for per page (a page is also bounded by the reply size).
const AGENTS_PER_PAGE: u32 = 500;

/// The client's deadline for a run `left` from now: the run's deadline plus the grace, never
/// past the longest deadline a run may have (so no arithmetic can overflow).
fn give_up_at(left: Duration) -> tokio::time::Instant {
    let longest = Duration::from_secs(fleetgate_common::config::MAX_DEADLINE_SECONDS);
    tokio::time::Instant::now() + left.min(longest) + REPORT_GRACE
}

async fn connect(link: &CoordinatorLink) -> Result<Channel, RunError> {
    let url = &link.url;
    let unreachable = |e: String| {
        // Past the TCP connection, a plaintext client may have met a TLS port.
        let hint = if e.contains("tcp connect error") {
            ""
        } else {
            plaintext_hint(url)
        };
        RunError::Unreachable(format!("cannot reach the coordinator at {url}: {e}{hint}"))
    };
    link.endpoint()
        .map_err(|e| RunError::Usage(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| unreachable(tls::error_chain(&e)))
}

async fn run_client(
    link: &CoordinatorLink,
    token: Option<&Token>,
) -> Result<RunServiceClient<InterceptedService<Channel, BearerToken>>, RunError> {
    Ok(RunServiceClient::with_interceptor(
        connect(link).await?,
        BearerToken(token.cloned()),
    ))
}

/// For a plaintext URL whose connection failed: the likely reason.
fn plaintext_hint(url: &str) -> &'static str {
    if url.starts_with("http://") {
        " (if the coordinator serves TLS, use https://)"
    } else {
        ""
    }
}

fn status_error(url: &str, status: &tonic::Status) -> RunError {
    // An HTTP/2 failure below gRPC: the peer does not speak this transport — typically a
    // plaintext client talking to a TLS port.
    if status.message().starts_with("h2 protocol error") {
        return RunError::Unreachable(format!(
            "the coordinator at {url} broke off the connection: {}{}",
            status.message(),
            plaintext_hint(url)
        ));
    }
    match status.code() {
        Code::Unauthenticated => RunError::Usage(format!(
            "the coordinator at {url} refused this client: {} (set --token-file or FLEETGATE_CLIENT_TOKEN)",
            status.message()
        )),
        Code::InvalidArgument => RunError::InvalidInput(status.message().to_owned()),
        Code::FailedPrecondition | Code::ResourceExhausted => {
            RunError::Inconclusive(status.message().to_owned())
        }
        Code::Unavailable | Code::Cancelled | Code::Unknown => RunError::Unreachable(format!(
            "lost the coordinator at {url}: {}{}",
            status.message(),
            plaintext_hint(url)
        )),
        _ => RunError::Internal(format!("coordinator at {url}: {}", status.message())),
    }
}

/// Puts a report back together from its chunks (or takes a whole one from a coordinator that
/// predates chunks) and reads it. Any failure before the report is whole — the stream broke
/// off, ended early, or its chunks do not add up — is [`RunError::Unreachable`] naming what
/// went wrong and how much had arrived: the report did not arrive.
#[derive(Debug)]
struct ReportReceiver<'a> {
    url: &'a str,
    chunks: ReportAssembler,
}

impl<'a> ReportReceiver<'a> {
    fn new(url: &'a str) -> Self {
        ReportReceiver {
            url,
            chunks: ReportAssembler::new(),
        }
    }

    /// Takes a chunk; the report once the last one checks.
    fn chunk(&mut self, chunk: pb::ReportChunk) -> Result<Option<Report>, RunError> {
        match self.chunks.push(chunk) {
            Ok(Some(json)) => self.parse(&json).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.broken(&e)),
        }
    }

    fn parse(&self, json: &str) -> Result<Report, RunError> {
        serde_json::from_str(json).map_err(|e| {
            RunError::Internal(format!(
                "unreadable report from the coordinator at {}: {e}",
                self.url
            ))
        })
    }

    fn broken(&self, e: &ReportStreamError) -> RunError {
        RunError::Unreachable(format!(
            "the report from the coordinator at {} did not arrive whole: {e}",
            self.url
        ))
    }

    /// The stream ended (`None`) or failed (`Some(status)`) before the report was whole.
    fn ended(&self, status: Option<&tonic::Status>) -> RunError {
        if self.chunks.started() {
            // Mid-report, whatever broke the stream, the report did not arrive.
            return RunError::Unreachable(format!(
                "lost the coordinator at {} after {} of {} bytes of the report: {}",
                self.url,
                self.chunks.received(),
                self.chunks.total().unwrap_or(0),
                status.map_or(
                    "the stream ended before its last chunk",
                    tonic::Status::message
                )
            ));
        }
        match status {
            Some(status) => status_error(self.url, status),
            None => RunError::Unreachable(format!(
                "the coordinator at {} closed the run before its report",
                self.url
            )),
        }
    }
}

/// Submits `spec` to the coordinator at `url` and follows the run: `on_event` sees every
/// event, report chunks included; the report ends it, put back together from its chunks and
/// checked (order, length, SHA-256) before it is read. A coordinator that cannot be reached,
/// that goes away before the report is whole, or whose report chunks do not add up, is
/// [`RunError::Unreachable`] — never a hang, never a partial report.
pub async fn submit(
    link: &CoordinatorLink,
    token: Option<&Token>,
    spec: &RunSpec,
    on_event: &mut (dyn FnMut(&pb::RunEvent) + Send),
) -> Result<Report, RunError> {
    let url = link.url.as_str();
    let mut client = run_client(link, token)
        .await?
        .max_decoding_message_size(service::MAX_MESSAGE_BYTES);
    let mut request = pb::SubmitRunRequest::from(spec);
    request.report_chunks = true;
    request.report_lz4 = true;
    let mut stream = client
        .submit_run(request)
        .await
        .map_err(|s| status_error(url, &s))?
        .into_inner();
    let mut report = ReportReceiver::new(url);
    // Until the run is accepted its deadline is unknown: wait at most the request's own.
    let mut give_up = give_up_at(spec.deadline.unwrap_or(Duration::from_secs(3 * 60 * 60)));
    loop {
        let message = tokio::time::timeout_at(give_up, stream.message())
            .await
            .map_err(|_| {
                RunError::Unreachable(format!(
                    "the coordinator at {url} sent no report by the run's deadline"
                ))
            })?;
        let event = match message {
            Ok(Some(event)) => event,
            Ok(None) => return Err(report.ended(None)),
            Err(status) => return Err(report.ended(Some(&status))),
        };
        on_event(&event);
        match event.body {
            Some(pb::run_event::Body::Accepted(accepted)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let left = Duration::from_millis(accepted.deadline_unix_ms.saturating_sub(now));
                give_up = give_up_at(left);
            }
            Some(pb::run_event::Body::ReportChunk(chunk)) => {
                if let Some(done) = report.chunk(chunk)? {
                    return Ok(done);
                }
            }
            // A coordinator that predates report chunks sends the report whole.
            Some(pb::run_event::Body::ReportJson(json)) => return report.parse(&json),
            _ => {}
        }
    }
}

/// A finished run's report from the coordinator at `link`, of any size (`StreamReport`: in
/// chunks, checked as [`submit`] checks them). A run not finished, unknown or no longer kept
/// is [`RunError::Internal`] with the coordinator's reason.
pub async fn fetch_report(
    link: &CoordinatorLink,
    token: Option<&Token>,
    run_id: &str,
) -> Result<Report, RunError> {
    let url = link.url.as_str();
    let mut client = run_client(link, token)
        .await?
        .max_decoding_message_size(service::MAX_MESSAGE_BYTES);
    let mut request = tonic::Request::new(pb::StreamReportRequest {
        run_id: run_id.to_owned(),
        report_lz4: true,
    });
    // A report is at most 1 GiB: minutes at the slowest link this serves.
    request.set_timeout(Duration::from_secs(600));
    let mut stream = client
        .stream_report(request)
        .await
        .map_err(|s| status_error(url, &s))?
        .into_inner();
    let mut report = ReportReceiver::new(url);
    loop {
        match stream.message().await {
            Ok(Some(pb::StreamReportResponse { chunk: Some(chunk) })) => {
                if let Some(done) = report.chunk(chunk)? {
                    return Ok(done);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(report.ended(None)),
            Err(status) => return Err(report.ended(Some(&status))),
        }
    }
}

/// Lists the agents a coordinator knows, in agent-id order, a page at a time.
pub async fn list_agents(
    link: &CoordinatorLink,
    token: Option<&Token>,
) -> Result<Vec<pb::AgentSummary>, RunError> {
    let mut client = run_client(link, token)
        .await?
        .max_decoding_message_size(service::MAX_MESSAGE_BYTES);
    let mut agents = Vec::new();
    let mut page_token = String::new();
    loop {
        let mut request = tonic::Request::new(pb::ListAgentsRequest {
            page_token: page_token.clone(),
            page_size: AGENTS_PER_PAGE,
        });
        request.set_timeout(CALL_TIMEOUT);
        let page = client
            .list_agents(request)
            .await
            .map_err(|s| status_error(&link.url, &s))?
            .into_inner();
        agents.extend(page.agents);
        if page.next_page_token.is_empty() {
            return Ok(agents);
        }
        // Tokens are agent ids in increasing order; anything else would never end.
        if page.next_page_token <= page_token {
            return Err(RunError::Internal(format!(
                "the coordinator at {} sent the agent list out of order",
                link.url
            )));
        }
        page_token = page.next_page_token;
    }
}

/// What the embedded default needs to start its local agent.
#[derive(Debug, Clone)]
pub struct EmbeddedAgent {
    /// Agent id (the host name).
    pub agent_id: String,
    /// Where its jobs write artifacts.
    pub artifact_root: PathBuf,
    /// Where it keeps unacknowledged events.
    pub state_dir: PathBuf,
    /// How it starts workers.
    pub worker: WorkerCommand,
}

impl EmbeddedAgent {
    /// The local agent of a run without a coordinator: named after this host
    /// ([`local_agent_id`]), its jobs writing under `artifact_root` and its state kept in
    /// `<artifact_root>/.fleetgate-agent`, its workers this program's hidden `worker`
    /// subcommand.
    pub fn local(artifact_root: &Path) -> Result<Self, RunError> {
        let program = std::env::current_exe().map_err(|e| {
            RunError::Internal(format!("cannot find this program to start workers: {e}"))
        })?;
        Ok(EmbeddedAgent {
            agent_id: local_agent_id(),
            artifact_root: artifact_root.to_path_buf(),
            state_dir: artifact_root.join(".fleetgate-agent"),
            worker: WorkerCommand {
                program,
                args: vec!["worker".into()],
            },
        })
    }
}

/// This host's agent id for the local agent: its name, made safe for file names.
pub fn local_agent_id() -> String {
    let name: String = fleetgate_common::host::host_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches('.').to_owned();
    if name.is_empty() {
        "local".to_owned()
    } else {
        name
    }
}

/// The hardware class the local agent will report: derived from this host's facts.
pub async fn local_hardware_class() -> Result<String, RunError> {
    tokio::task::spawn_blocking(|| {
        fleetgate_common::host::derive_hardware_class(&fleetgate_agent::facts::host_facts())
    })
    .await
    .map_err(|e| RunError::Internal(e.to_string()))
}

/// The embedded default: starts a coordinator on a loopback port and one local agent, waits
/// for the agent to register, runs `spec` through them over gRPC, and stops both.
/// Cancelling `interrupt` stops the local agent gracefully — its worker closes its telemetry
/// session as `interrupted` — and ends the run with [`RunError::Interrupted`].
pub async fn run_embedded(
    spec: &RunSpec,
    agent: EmbeddedAgent,
    on_event: &mut (dyn FnMut(&pb::RunEvent) + Send),
    interrupt: &CancellationToken,
) -> Result<Report, RunError> {
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| RunError::Internal(format!("cannot listen on 127.0.0.1: {e}")))?;
    // TLS even on loopback, with certificates made for this run only: the embedded default
    // takes the same path as a fleet, mutual TLS and the agent-id check included.
    let tls_error = |e: tls::CaError| RunError::Internal(format!("embedded TLS: {e}"));
    let ca = LabCa::generate().map_err(tls_error)?;
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_millis(500),
        tls: Some(
            ca.server_tls(&["127.0.0.1".to_owned()])
                .map_err(tls_error)?,
        ),
        ..CoordinatorSettings::default()
    };
    let coordinator = service::serve(listener, settings, shutdown.clone())
        .map_err(|e| RunError::Internal(format!("cannot start the embedded coordinator: {e}")))?;
    let link = CoordinatorLink::with_tls(
        coordinator.url(),
        ca.client_tls(Some(&agent.agent_id)).map_err(tls_error)?,
    );
    let client_link =
        CoordinatorLink::with_tls(coordinator.url(), ca.client_tls(None).map_err(tls_error)?);
    let mut config = AgentConfig::new(link, agent.agent_id.clone(), agent.state_dir, agent.worker);
    config.artifact_root = agent.artifact_root;
    // The local agent runs what this command line asked for, scratch root included.
    config.scratch_roots = spec
        .overhead_scratch_root
        .iter()
        .map(PathBuf::from)
        .collect();
    config.reconnect_min = Duration::from_millis(20);
    let agent_token = shutdown.child_token();
    let agent_task = tokio::spawn(daemon::run(config, agent_token.clone()));
    let result = async {
        // The local agent registers within moments; wait for it, not for a fixed time.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let connected = convert::agent_state_name(AgentState::Connected, true);
        loop {
            let agents = list_agents(&client_link, None).await?;
            if agents
                .iter()
                .any(|a| a.agent_id == agent.agent_id && a.state == connected)
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RunError::Internal(
                    "the local agent did not register within 30 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        submit(&client_link, None, spec, on_event).await
    };
    let result = tokio::select! {
        result = result => result,
        () = interrupt.cancelled() => Err(RunError::Interrupted),
    };
    agent_token.cancel();
    match agent_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "Local agent ended with an error."),
        Err(e) => tracing::warn!(error = %e, "Local agent task failed."),
    }
    coordinator.shutdown().await;
    result
}
