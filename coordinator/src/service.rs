//! The coordinator's gRPC services (agents' streams and the run API for the CLI) and the
//! server around them. Handlers only translate between the wire and registry commands.

mod connection;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_common::tls;
use fleetgate_proto::v1 as pb;
use pb::agent_service_server::{AgentService, AgentServiceServer};
use pb::run_service_server::{RunService, RunServiceServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::{self, Command, CoordinatorSettings, RegistryHandle};
use connection::{CallGuard, Connections};
use fleetgate_common::run::RunSpec;

/// Largest message a coordinator sends to a client and the most the CLI accepts: the same
/// number on both sides, so whatever the server sends, the client reads.
pub const MAX_MESSAGE_BYTES: usize = registry::MAX_REPLY_BYTES;

/// Longest time a request may take to be answered (a streaming call: to open its stream).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 keep-alive: a ping every interval on every connection, and a peer that does not
/// answer one within the timeout is disconnected.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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

/// A token bucket: `rate` per second sustained, ten seconds' worth in a burst (an agent that
/// reconnects resends its unacknowledged events at once).
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimit {
            rate,
            capacity: rate * 10.0,
            tokens: rate * 10.0,
            last: tokio::time::Instant::now(),
        }
    }

    fn admit(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

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
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let agent_id = hello.agent_id.clone();
        // With an agent CA, an agent id is only usable by the holder of a certificate naming
        // it, so a token holder cannot take over another agent's id or jobs.
        if self.agent_certs_required
            && !peer_certs
                .as_deref()
                .is_some_and(|certs| tls::certificate_names_agent(certs, &agent_id))
        {
            tracing::warn!(agent_id = ?agent_id, "Agent refused: no client certificate naming its id.");
            return Err(Status::permission_denied(format!(
                "agent id {} is not named by this connection's client certificate (this coordinator requires one per agent: --agent-ca)",
                fleetgate_common::input::one_line(&agent_id)
            )));
        }
        let (tx, rx) = mpsc::channel(1_024);
        // Weak: the outbound stream must end when the registry drops the connection (that is
        // how an agent behind a dead connection learns to reconnect), not when this task does.
        let over_limit = tx.downgrade();
        let conn = self
            .registry
            .ask(|reply| Command::Connect {
                hello,
                outbound: tx,
                peer,
                reply,
            })
            .await??;
        let registry = self.registry.clone();
        let mut limit = RateLimit::new(self.messages_per_second);
        let rate = self.messages_per_second;
        tokio::spawn(async move {
            // The session is a call in progress on its connection for as long as it lasts.
            let _call = call;
            while let Ok(Some(message)) = inbound.message().await {
                if !limit.admit() {
                    // Checked before the registry sees the message, so a flood never reaches
                    // the queue the other agents share.
                    tracing::warn!(agent_id = %agent_id, rate, "Agent over its message rate; session closed.");
                    if let Some(outbound) = over_limit.upgrade() {
                        outbound
                            .try_send(Err(Status::resource_exhausted(format!(
                                "agent {agent_id} sent more than {rate} messages per second; reconnect and resend from the acknowledged point"
                            ))))
                            .ok();
                    }
                    break;
                }
                let forwarded = registry
                    .send(Command::FromAgent {
                        agent_id: agent_id.clone(),
                        conn,
                        message,
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
        Ok(Response::new(ReceiverStream::new(rx)))
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
    type SubmitRunStream = CallStream<ReceiverStream<Result<pb::RunEvent, Status>>>;

    #[tracing::instrument(skip_all)]
    async fn submit_run(
        &self,
        request: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<Self::SubmitRunStream>, Status> {
        let call = self.connections.call_started(request.remote_addr());
        let request = request.into_inner();
        // Sizes and bounds are checked first: nothing is built from a request over a limit.
        let spec =
            RunSpec::try_from(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tx, rx) = mpsc::channel(1_024);
        self.registry
            .ask(|reply| Command::Submit {
                spec: Box::new(spec),
                events: tx,
                reply,
            })
            .await??;
        Ok(Response::new(CallStream {
            inner: ReceiverStream::new(rx),
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
        let page = self
            .registry
            .ask(|reply| Command::ListAgents {
                page_token,
                page_size,
                reply,
            })
            .await?;
        Ok(Response::new(page))
    }

    async fn get_report(
        &self,
        request: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::GetReportResponse>, Status> {
        let run_id = request.into_inner().run_id;
        let report_json = self
            .registry
            .ask(|reply| Command::GetReport { run_id, reply })
            .await??;
        Ok(Response::new(pb::GetReportResponse { report_json }))
    }
}

/// Refuses requests without the expected bearer token (when one is configured). Every call
/// passes here first, so this is also where a connection is seen to carry calls.
#[derive(Debug, Clone)]
struct TokenCheck {
    token: Option<Token>,
    who: &'static str,
    connections: Arc<Connections>,
}

impl TokenCheck {
    fn new(token: Option<Token>, who: &'static str, connections: Arc<Connections>) -> Self {
        TokenCheck {
            token,
            who,
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
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Coordinator {
    /// Stops accepting connections, closes streams, and waits for the server to end.
    pub async fn shutdown(self) {
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
    let token = shutdown.clone();
    let incoming = ReceiverStream::new(connection::incoming(
        listener,
        connections,
        shutdown.clone(),
    ));
    let task = tokio::spawn(async move {
        server
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
        task,
    })
}
