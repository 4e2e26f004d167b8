//! The coordinator's gRPC services (agents' streams and the run API for the CLI) and the
//! server around them. The service decodes, the registry decides: handlers turn wire messages
//! into the registry's domain commands (with the conversions of
//! [`fleetgate_common::convert`]) and what the registry answers back into wire messages.

mod connection;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_common::convert::{self, ConvertError, HelloError};
use fleetgate_common::ids::{AgentId, RunId};
use fleetgate_common::input::one_line;
use fleetgate_common::messages::{AgentListing, RunEvent};
use fleetgate_common::report::EncodedReport;
use fleetgate_common::run::RunSpec;
use fleetgate_common::tls;
use fleetgate_proto::v1 as pb;
use pb::agent_service_server::{AgentService, AgentServiceServer};
use pb::run_service_server::{RunService, RunServiceServer};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::plan::RunError;
use crate::registry::{
    self, Command, CoordinatorSettings, RegistryError, RegistryHandle, ReportTooLarge,
};
use crate::report_stream::{ChunkForm, ReportChunks};
use connection::{CallGuard, Connections};

/// Largest message a coordinator sends to a client and the most the CLI accepts: the same
/// number on both sides ([`fleetgate_proto::MAX_MESSAGE_BYTES`]), so whatever the server
/// sends, the client reads. Reports travel in chunks well under it.
pub const MAX_MESSAGE_BYTES: usize = fleetgate_proto::MAX_MESSAGE_BYTES;

/// Longest time a request may take to be answered (a streaming call: to open its stream).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 keep-alive: a ping every interval on every connection, and a peer that does not
/// answer one within the timeout is disconnected.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the service refuses an agent's session or a client's call before the registry sees it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An agent's session did not start with a hello (in time).
    #[error("the first message must be Hello")]
    NoHello,
    /// The agent id is not named by the connection's client certificate.
    #[error(
        "agent id {} is not named by this connection's client certificate (this coordinator requires one per agent: --agent-ca)",
        one_line(.0)
    )]
    NotNamedByCertificate(String),
    /// The agent's hello is unusable.
    #[error(transparent)]
    Hello(#[from] HelloError),
    /// A request is over a limit or malformed.
    #[error(transparent)]
    Request(ConvertError),
    /// A submitted run cannot be read.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The status of a run that cannot be read or planned.
fn run_status(e: &RunError) -> Status {
    match e {
        RunError::InvalidInput(m) | RunError::Usage(m) => Status::invalid_argument(m.clone()),
        other => Status::internal(other.to_string()),
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::NoHello | ServiceError::Request(_) => {
                Status::invalid_argument(e.to_string())
            }
            ServiceError::NotNamedByCertificate(_) => Status::permission_denied(e.to_string()),
            ServiceError::Hello(HelloError::ProtocolVersion { .. }) => {
                Status::failed_precondition(e.to_string())
            }
            ServiceError::Hello(HelloError::AgentId | HelloError::Limit(_)) => {
                Status::invalid_argument(e.to_string())
            }
            ServiceError::Run(run) => run_status(run),
        }
    }
}

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let message = e.to_string();
        match &e {
            E::ShuttingDown | E::StreamClosed | E::ShutDownBeforeFinish(_) => {
                Status::unavailable(message)
            }
            E::AgentIdInUse { .. } => Status::already_exists(message),
            E::TooManyAgents { .. }
            | E::OverMessageRate { .. }
            | E::TooManyRuns { .. }
            | E::ReportTooLarge(_) => Status::resource_exhausted(message),
            E::Run(run) => run_status(run),
            E::AgentNotConnected(_) | E::UnknownAgent(_) | E::TooFewAgents { .. } => {
                Status::failed_precondition(message)
            }
            E::Deadline(_) | E::DeadlineUnrepresentable { .. } => Status::invalid_argument(message),
            E::RunNotFinished(_) | E::ReportDropped { .. } | E::UnknownRun(_) => {
                Status::not_found(message)
            }
        }
    }
}

/// An agent session's outbound stream: what the registry says to the agent, as wire messages.
#[derive(Debug)]
pub struct AgentStream {
    inner: ReceiverStream<registry::ToAgentItem>,
}

impl Stream for AgentStream {
    type Item = Result<pb::CoordinatorMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|message| {
                (*message)
                    .map(pb::CoordinatorMessage::from)
                    .map_err(Status::from)
            })
        })
    }
}

/// A run's event stream: what the registry tells the run's client, as wire messages. The
/// report goes out as `ReportChunk` events, one at a time as the transport takes them (so a
/// large report is never copied whole), or, to a client that predates chunks, as one
/// `report_json` when it fits in a message.
#[derive(Debug)]
pub struct RunEventStream {
    inner: ReceiverStream<Result<RunEvent, RegistryError>>,
    run_id: RunId,
    /// What the client takes the report's chunks as; `None`: it takes the report whole.
    chunk_form: Option<ChunkForm>,
    /// The report being sent.
    chunks: Option<ReportChunks>,
}

impl RunEventStream {
    fn chunk_event(&self, chunk: pb::ReportChunk) -> pb::RunEvent {
        pb::RunEvent {
            run_id: self.run_id.to_string(),
            body: Some(pb::run_event::Body::ReportChunk(chunk)),
        }
    }

    /// The wire event of `event`, or the first chunk of a report.
    fn wire(&mut self, event: RunEvent) -> Result<pb::RunEvent, Status> {
        let RunEvent::Report(report) = event else {
            return convert::run_event_to_pb(&self.run_id, event).map_err(unreadable_report);
        };
        let Some(form) = self.chunk_form else {
            fits_one_message(&self.run_id, &report).inspect_err(|_| {
                tracing::warn!(run_id = %self.run_id, bytes = report.json_bytes(), "Report too large for a client that does not take chunks.");
            })?;
            return convert::run_event_to_pb(&self.run_id, RunEvent::Report(report))
                .map_err(unreadable_report);
        };
        let mut chunks = ReportChunks::new(report, form);
        let first = chunks.next();
        self.chunks = Some(chunks);
        first
            .unwrap_or_else(|| Err(std::io::Error::other("the report gave no chunk")))
            .map(|chunk| self.chunk_event(chunk))
            .map_err(unreadable_report)
    }
}

impl Stream for RunEventStream {
    type Item = Result<pb::RunEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(chunks) = &mut this.chunks {
            match chunks.next() {
                Some(Ok(chunk)) => return Poll::Ready(Some(Ok(this.chunk_event(chunk)))),
                Some(Err(e)) => return Poll::Ready(Some(Err(unreadable_report(e)))),
                None => this.chunks = None,
            }
        }
        Pin::new(&mut this.inner).poll_next(cx).map(|item| {
            item.map(|event| {
                event
                    .map_err(Status::from)
                    .and_then(|event| this.wire(event))
            })
        })
    }
}

/// Refuses (`RESOURCE_EXHAUSTED`, naming its size) a report of run `run_id` that would not fit
/// in one message with its framing and run id: for the forms that send it whole.
fn fits_one_message(run_id: &RunId, report: &EncodedReport) -> Result<(), Status> {
    let bytes = report.json_bytes();
    if bytes + 1_024 > MAX_MESSAGE_BYTES as u64 {
        return Err(RegistryError::from(ReportTooLarge {
            run_id: run_id.clone(),
            bytes,
        })
        .into());
    }
    Ok(())
}

/// The status of a report the coordinator cannot read back from the compressed copy it
/// keeps (`INTERNAL`: a fault of the coordinator, not of the run or the client); the client
/// gets no partial report.
fn unreadable_report(error: std::io::Error) -> Status {
    tracing::error!(error = %error, "A report could not be read back.");
    Status::internal(format!(
        "the coordinator could not read the report back: {error}"
    ))
}

/// A finished run's report as the `StreamReport` responses, one chunk each.
#[derive(Debug)]
pub struct ReportStream {
    chunks: ReportChunks,
}

impl Stream for ReportStream {
    type Item = Result<pb::StreamReportResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.chunks.next().map(|chunk| {
            chunk
                .map(|chunk| pb::StreamReportResponse { chunk: Some(chunk) })
                .map_err(unreadable_report)
        }))
    }
}

/// One page of the fleet listing: the agents listed, as many as fit in one reply, and the
/// token of the next page when agents are left.
fn agent_page(listing: &AgentListing) -> pb::ListAgentsResponse {
    // Room for the framing and the token (an agent id) around the summaries.
    let budget = registry::MAX_REPLY_BYTES - 4 * 1_024;
    let mut page = pb::ListAgentsResponse::default();
    let mut bytes = 0;
    let mut full = false;
    for agent in &listing.agents {
        let summary = pb::AgentSummary::from(agent);
        // The summary, its field tag and its length prefix.
        let size = summary.encoded_len() + 1 + prost::length_delimiter_len(summary.encoded_len());
        if bytes + size > budget && !page.agents.is_empty() {
            full = true;
            break;
        }
        bytes += size;
        page.agents.push(summary);
    }
    if full || listing.more {
        page.next_page_token = page
            .agents
            .last()
            .map(|a| a.agent_id.clone())
            .unwrap_or_default();
    }
    page
}

/// The agents' side.
#[derive(Debug, Clone)]
pub struct AgentSvc {
    registry: RegistryHandle,
    messages_per_second: u32,
    agent_certs_required: bool,
    connections: Arc<Connections>,
}

/// A response stream that keeps its call counted as in progress on its connection.
#[derive(Debug)]
pub struct CallStream<S> {
    inner: S,
    _call: Option<CallGuard>,
}

impl<S: Stream + Unpin> Stream for CallStream<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// An agent session's message limit: `rate` per second sustained, ten seconds' worth in a
/// burst (an agent that reconnects resends its unacknowledged events at once).
fn message_limit(rate: u32) -> governor::DefaultDirectRateLimiter {
    let rate = std::num::NonZeroU32::new(rate.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let burst =
        rate.saturating_mul(std::num::NonZeroU32::new(10).unwrap_or(std::num::NonZeroU32::MIN));
    governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type SessionStream = AgentStream;

    #[tracing::instrument(skip_all)]
    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer_certs = request.peer_certs();
        let peer = request.remote_addr();
        let call = self.connections.call_started(peer);
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(pb::AgentMessage {
                body: Some(pb::agent_message::Body::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            _ => {
                crate::metrics::session_refused("no_hello");
                return Err(ServiceError::NoHello.into());
            }
        };
        let claimed_id = hello.agent_id.clone();
        // With an agent CA, an agent id is only usable by the holder of a certificate naming
        // it, so a token holder cannot take over another agent's id or jobs.
        if self.agent_certs_required
            && !peer_certs
                .as_deref()
                .is_some_and(|certs| tls::certificate_names_agent(certs, &claimed_id))
        {
            tracing::warn!(agent_id = ?claimed_id, "Agent refused: no client certificate naming its id.");
            crate::metrics::session_refused("certificate");
            return Err(ServiceError::NotNamedByCertificate(claimed_id).into());
        }
        let hello = convert::hello_from_pb(hello).map_err(|e| {
            crate::metrics::session_refused("bad_hello");
            if let HelloError::Limit(limit) = &e {
                tracing::warn!(agent_id = %claimed_id, peer = %registry::shown(peer), error = %limit, "Agent refused: its Hello is over a limit.");
            }
            ServiceError::Hello(e)
        })?;
        let agent_id = hello.agent_id.clone();
        let (tx, rx) = mpsc::channel(1_024);
        // Weak: the outbound stream must end when the registry drops the connection (that is
        // how an agent behind a dead connection learns to reconnect), not when this task does.
        let over_limit = tx.downgrade();
        let conn = self
            .registry
            .ask(|reply| Command::Connect {
                hello: Box::new(hello),
                outbound: tx,
                peer,
                reply,
            })
            .await??;
        let registry = self.registry.clone();
        let limit = message_limit(self.messages_per_second);
        let rate = self.messages_per_second;
        tokio::spawn(async move {
            // The session is a call in progress on its connection for as long as it lasts.
            let _call = call;
            while let Ok(Some(message)) = inbound.message().await {
                if limit.check().is_err() {
                    crate::metrics::session_refused("over_message_rate");
                    // Checked before the registry sees the message, so a flood never reaches
                    // the queue the other agents share.
                    tracing::warn!(agent_id = %agent_id, rate, "Agent over its message rate; session closed.");
                    if let Some(outbound) = over_limit.upgrade() {
                        outbound
                            .try_send(Box::new(Err(RegistryError::OverMessageRate {
                                agent_id: agent_id.clone(),
                                rate,
                            })))
                            .ok();
                    }
                    break;
                }
                let forwarded = registry
                    .send(Command::FromAgent {
                        agent_id: agent_id.clone(),
                        conn,
                        message: convert::from_agent_pb(message),
                    })
                    .await;
                if forwarded.is_err() {
                    return;
                }
            }
            registry
                .send(Command::Disconnected { agent_id, conn })
                .await
                .ok();
        });
        Ok(Response::new(AgentStream {
            inner: ReceiverStream::new(rx),
        }))
    }
}

/// The CLI's side.
#[derive(Debug, Clone)]
pub struct RunSvc {
    registry: RegistryHandle,
    connections: Arc<Connections>,
}

#[tonic::async_trait]
impl RunService for RunSvc {
    type SubmitRunStream = CallStream<RunEventStream>;

    #[tracing::instrument(skip_all)]
    async fn submit_run(
        &self,
        request: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<Self::SubmitRunStream>, Status> {
        let call = self.connections.call_started(request.remote_addr());
        let request = request.into_inner();
        let chunk_form = request
            .report_chunks
            .then(|| ChunkForm::asked(request.report_lz4));
        // Sizes and bounds are checked first: nothing is built from a request over a limit.
        let spec = RunSpec::try_from(request).map_err(ServiceError::Request)?;
        let (tx, rx) = mpsc::channel(1_024);
        let run_id = self
            .registry
            .ask(|reply| Command::Submit {
                spec: Box::new(spec),
                events: tx,
                reply,
            })
            .await??;
        Ok(Response::new(CallStream {
            inner: RunEventStream {
                inner: ReceiverStream::new(rx),
                run_id,
                chunk_form,
                chunks: None,
            },
            _call: call,
        }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let pb::ListAgentsRequest {
            page_token,
            page_size,
        } = request.into_inner();
        let after = (!page_token.is_empty()).then(|| AgentId::from(page_token));
        let listing = self
            .registry
            .ask(|reply| Command::ListAgents {
                after,
                page_size,
                reply,
            })
            .await?;
        Ok(Response::new(agent_page(&listing)))
    }

    async fn get_report(
        &self,
        request: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::GetReportResponse>, Status> {
        let run_id = RunId::from(request.into_inner().run_id);
        let asked = run_id.clone();
        let report = self
            .registry
            .ask(|reply| Command::GetReport { run_id, reply })
            .await??;
        fits_one_message(&asked, &report)?;
        Ok(Response::new(pb::GetReportResponse {
            report_json: report.json().map_err(unreadable_report)?,
        }))
    }

    type StreamReportStream = CallStream<ReportStream>;

    async fn stream_report(
        &self,
        request: Request<pb::StreamReportRequest>,
    ) -> Result<Response<Self::StreamReportStream>, Status> {
        let call = self.connections.call_started(request.remote_addr());
        let request = request.into_inner();
        let run_id = RunId::from(request.run_id);
        let report = self
            .registry
            .ask(|reply| Command::GetReport { run_id, reply })
            .await??;
        Ok(Response::new(CallStream {
            inner: ReportStream {
                chunks: ReportChunks::new(report, ChunkForm::asked(request.report_lz4)),
            },
            _call: call,
        }))
    }
}

/// Refuses requests without the expected bearer token (when one is configured). Every call
/// passes here first, so this is also where a connection is seen to carry calls.
#[derive(Debug, Clone)]
struct TokenCheck {
    token: Option<Token>,
    who: &'static str,
    /// The metrics' reason for a refusal: `agent_token` or `client_token`.
    refusal: &'static str,
    connections: Arc<Connections>,
}

impl TokenCheck {
    fn new(token: Option<Token>, who: &'static str, connections: Arc<Connections>) -> Self {
        TokenCheck {
            token,
            who,
            refusal: if who == "agent" {
                "agent_token"
            } else {
                "client_token"
            },
            connections,
        }
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.connections.call_arrived(request.remote_addr());
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if token.accepts(header) {
            Ok(request)
        } else {
            let peer = request
                .remote_addr()
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
            tracing::warn!(peer = %peer, who = self.who, "Request with a missing or wrong token refused.");
            crate::metrics::session_refused(self.refusal);
            Err(Status::unauthenticated(format!(
                "missing or wrong {} token",
                self.who
            )))
        }
    }
}

/// A running coordinator.
#[derive(Debug)]
pub struct Coordinator {
    /// The address it listens on.
    pub addr: SocketAddr,
    tls: bool,
    shutdown: CancellationToken,
    /// The statuses the standard gRPC health service (`grpc.health.v1.Health`) reports.
    health: HealthReporter,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// The services whose health is reported by name (besides the server as a whole, `""`).
const HEALTH_SERVICES: [&str; 2] = [
    <AgentServiceServer<AgentSvc> as tonic::server::NamedService>::NAME,
    <RunServiceServer<RunSvc> as tonic::server::NamedService>::NAME,
];

impl Coordinator {
    /// Reports every service as NOT_SERVING (probes and load balancers stop sending work here)
    /// while the coordinator goes on serving what it has.
    pub async fn drain(&self) {
        for name in std::iter::once("").chain(HEALTH_SERVICES) {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }

    /// Serves the standard gRPC health service alone, without TLS and without tokens, on
    /// `listener` until the coordinator shuts down: kubelet gRPC probes cannot speak TLS, and
    /// health statuses are not secret.
    pub fn serve_health(&self, listener: TcpListener) {
        let health = HealthServer::new(HealthService::from_health_reporter(self.health.clone()));
        let stop = self.shutdown.clone().cancelled_owned();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .timeout(REQUEST_TIMEOUT)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, stop)
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "Health listener ended with an error.");
            }
        });
    }

    /// Stops accepting connections, closes streams, and waits for the server to end.
    pub async fn shutdown(self) {
        self.drain().await;
        self.shutdown.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "Coordinator server ended with an error."),
            Err(e) => tracing::warn!(error = %e, "Coordinator server task failed."),
        }
    }

    /// `https://<addr>`, or `http://<addr>` without TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// Serves the coordinator on `listener` until `shutdown` is cancelled (or
/// [`Coordinator::shutdown`] is called).
pub fn serve(
    listener: TcpListener,
    settings: CoordinatorSettings,
    shutdown: CancellationToken,
) -> std::io::Result<Coordinator> {
    let addr = listener.local_addr()?;
    let connections = Connections::new(
        settings.connection_setup_timeout,
        settings.connection_idle_timeout,
    );
    let agent_check = TokenCheck::new(
        settings.agent_token.clone(),
        "agent",
        Arc::clone(&connections),
    );
    let client_check = TokenCheck::new(
        settings.client_token.clone(),
        "client",
        Arc::clone(&connections),
    );
    let messages_per_second = settings.agent_messages_per_second;
    let max_message = settings.max_message_bytes;
    let tls = settings.tls.clone();
    let registry = registry::spawn(settings, shutdown.child_token());
    let agents = InterceptedService::new(
        AgentServiceServer::new(AgentSvc {
            registry: registry.clone(),
            messages_per_second,
            agent_certs_required: tls.as_ref().is_some_and(|t| t.agent_certs_required),
            connections: Arc::clone(&connections),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
        agent_check,
    );
    let runs = InterceptedService::new(
        RunServiceServer::new(RunSvc {
            registry,
            connections: Arc::clone(&connections),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
        client_check,
    );
    let mut server = tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(64)
        .http2_max_header_list_size(16 * 1024)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(tls) = &tls {
        server = server
            .tls_config(tls.config.clone())
            .map_err(|e| std::io::Error::other(format!("TLS settings: {e}")))?;
    }
    let health = HealthReporter::new();
    let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
    let statuses = health.clone();
    let token = shutdown.clone();
    let incoming = ReceiverStream::new(connection::incoming(
        listener,
        connections,
        shutdown.clone(),
    ));
    let task = tokio::spawn(async move {
        // Set before the first connection is accepted, so no probe sees a service unknown.
        for name in HEALTH_SERVICES {
            statuses
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        server
            .add_service(health_service)
            .add_service(agents)
            .add_service(runs)
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
    });
    tracing::info!(addr = %addr, "Coordinator listening.");
    Ok(Coordinator {
        addr,
        tls: tls.is_some(),
        shutdown,
        health,
        task,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fleetgate_common::host::HostFacts;
    use fleetgate_common::messages::AgentState;
    use fleetgate_common::messages::AgentSummary;

    use super::*;

    #[test]
    fn refusals_keep_their_status_codes_and_messages() {
        let check = |status: Status, code: tonic::Code, message: &str| {
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(status.message(), message);
        };
        check(
            ServiceError::from(HelloError::ProtocolVersion { got: 9 }).into(),
            tonic::Code::FailedPrecondition,
            "protocol version 9 is not supported (this coordinator speaks 2)",
        );
        check(
            ServiceError::from(HelloError::AgentId).into(),
            tonic::Code::InvalidArgument,
            "agent_id must be 1-128 characters of letters, digits, '-', '_' or '.'",
        );
        let over = pb::Hello {
            agent_id: "a1".into(),
            protocol_version: fleetgate_proto::PROTOCOL_VERSION,
            labels: (0..33).map(|i| (format!("k{i}"), "v".into())).collect(),
            ..pb::Hello::default()
        };
        check(
            ServiceError::from(convert::hello_from_pb(over).unwrap_err()).into(),
            tonic::Code::InvalidArgument,
            "labels: 33 labels, more than the limit of 32",
        );
        check(
            ServiceError::NotNamedByCertificate("a\nb".into()).into(),
            tonic::Code::PermissionDenied,
            "agent id a\\nb is not named by this connection's client certificate (this coordinator requires one per agent: --agent-ca)",
        );
        check(
            ServiceError::NoHello.into(),
            tonic::Code::InvalidArgument,
            "the first message must be Hello",
        );
        check(
            RegistryError::AgentIdInUse {
                agent_id: AgentId::new("a1"),
                holder: "127.0.0.1:1".into(),
            }
            .into(),
            tonic::Code::AlreadyExists,
            "agent id a1 already has a live session from 127.0.0.1:1 (two agents with one id? give each its own --agent-id)",
        );
        check(
            RegistryError::TooManyRuns { in_progress: 8 }.into(),
            tonic::Code::ResourceExhausted,
            "8 runs are in progress, this coordinator's limit (--max-runs); submit again when one ends",
        );
        check(
            RegistryError::OverMessageRate {
                agent_id: AgentId::new("a1"),
                rate: 5,
            }
            .into(),
            tonic::Code::ResourceExhausted,
            "agent a1 sent more than 5 messages per second; reconnect and resend from the acknowledged point",
        );
        check(
            RegistryError::TooFewAgents {
                matched: 0,
                needed: 1,
            }
            .into(),
            tonic::Code::FailedPrecondition,
            "0 connected agent(s) match the selection, the run needs at least 1",
        );
        check(
            RegistryError::Run(RunError::InvalidInput("bad budget".into())).into(),
            tonic::Code::InvalidArgument,
            "bad budget",
        );
        check(
            RegistryError::Run(RunError::Internal("disk".into())).into(),
            tonic::Code::Internal,
            "disk",
        );
        check(
            RegistryError::UnknownRun(RunId::new("r\n1")).into(),
            tonic::Code::NotFound,
            "no run r\\n1 on this coordinator",
        );
        check(
            RegistryError::ShutDownBeforeFinish(RunId::new("r1")).into(),
            tonic::Code::Unavailable,
            "the coordinator shut down before run r1 finished",
        );
        check(
            RegistryError::ShuttingDown.into(),
            tonic::Code::Unavailable,
            "the coordinator is shutting down",
        );
    }

    fn summary(id: &str) -> AgentSummary {
        AgentSummary {
            agent_id: AgentId::new(id),
            facts: HostFacts::default(),
            runtimes: Vec::new(),
            labels: BTreeMap::new(),
            hardware_class: "c".into(),
            state: AgentState::Connected,
            session_open: true,
            last_seen_unix_ms: 1,
        }
    }

    #[test]
    fn an_agent_page_names_the_next_one_only_when_agents_are_left() {
        let mut listing = AgentListing {
            agents: vec![summary("a"), summary("b")],
            more: false,
        };
        let page = agent_page(&listing);
        assert_eq!(page.agents.len(), 2);
        assert_eq!(page.agents[0].state, "connected");
        assert_eq!(page.next_page_token, "");
        listing.more = true;
        assert_eq!(agent_page(&listing).next_page_token, "b");
    }
}
