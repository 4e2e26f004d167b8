//! A fleet from the test's side: coordinators served in the test process on loopback, agents
//! waited for until they are connected, runs submitted and followed, a TCP proxy of our own
//! between agents and their coordinator, and an address where nothing listens.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_common::report::Report;
use fleetgate_common::report::Verdict;
use fleetgate_common::run::RunSpec;
use fleetgate_common::tls::CoordinatorLink;
use fleetgate_coordinator::client;
use fleetgate_coordinator::plan::RunError;
use fleetgate_coordinator::registry::CoordinatorSettings;
use fleetgate_coordinator::service::{self, Coordinator};
use fleetgate_proto::v1 as pb;
use pb::run_service_client::RunServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{PATIENCE, eventually, soak_spec};

/// Coordinator settings for tests about dispatch and faults: heartbeats every 200 ms (an
/// agent is lost after 600 ms of silence), swept every 50 ms.
pub(crate) fn fast_settings() -> CoordinatorSettings {
    CoordinatorSettings {
        heartbeat_interval: Duration::from_millis(200),
        sweep_interval: Duration::from_millis(50),
        ..CoordinatorSettings::default()
    }
}

/// A coordinator served in this process on an ephemeral loopback port.
pub(crate) async fn in_process(settings: CoordinatorSettings) -> Coordinator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    service::serve(listener, settings, CancellationToken::new()).unwrap()
}

/// A plaintext link to `url` (asked for explicitly, as a coordinator without TLS needs).
pub(crate) fn link(url: &str) -> CoordinatorLink {
    CoordinatorLink::plaintext(url.to_owned())
}

/// Waits (at most [`PATIENCE`]) until every agent of `ids` is listed as connected; returns
/// the list then. Panics with what was listed last, or why listing failed, and `context()`.
pub(crate) async fn wait_for_agents(
    link: &CoordinatorLink,
    token: Option<&Token>,
    ids: &[&str],
    context: impl Fn() -> String,
) -> Vec<pb::AgentSummary> {
    let seen = Mutex::new(String::from("nothing yet"));
    eventually(
        &format!("agents {ids:?} to be connected"),
        PATIENCE,
        async || {
            let listed = client::list_agents(link, token).await;
            *seen.lock().unwrap() = match &listed {
                Ok(agents) => format!(
                    "{:?}",
                    agents
                        .iter()
                        .map(|a| format!("{} {}", a.agent_id, a.state))
                        .collect::<Vec<_>>()
                ),
                Err(e) => format!("no list: {e}"),
            };
            let agents = listed.ok()?;
            ids.iter()
                .all(|id| {
                    agents
                        .iter()
                        .any(|a| a.agent_id == *id && a.state == "connected")
                })
                .then_some(agents)
        },
        || format!("listed: {}\n{}", seen.lock().unwrap(), context()),
    )
    .await
}

/// Every event a background submission has seen.
pub(crate) type SeenEvents = Arc<Mutex<Vec<pb::RunEvent>>>;

/// Submits `spec` without a token in the background, recording every event.
pub(crate) fn submit_in_background(
    link: CoordinatorLink,
    spec: RunSpec,
) -> (JoinHandle<Result<Report, RunError>>, SeenEvents) {
    let events = SeenEvents::default();
    let seen = Arc::clone(&events);
    let task = tokio::spawn(async move {
        client::submit(&link, None, &spec, &mut |e| {
            seen.lock().unwrap().push(e.clone());
        })
        .await
    });
    (task, events)
}

/// Waits (at most 120 s) until `agent` reported progress in its soak, not its end.
pub(crate) async fn wait_for_soak(
    events: &Mutex<Vec<pb::RunEvent>>,
    agent: &str,
    context: impl Fn() -> String,
) {
    eventually(
        &format!("{agent} to start its soak"),
        Duration::from_secs(120),
        async || {
            events.lock().unwrap().iter().any(|e| {
                matches!(&e.body, Some(pb::run_event::Body::Progress(p)) if p.agent_id == agent && p.phase == "soak" && p.done < p.total)
            }).then_some(())
        },
        context,
    )
    .await;
}

/// Submits `spec` without a token; its report, which must come within `limit`.
pub(crate) async fn submit_within(
    link: &CoordinatorLink,
    spec: &RunSpec,
    limit: Duration,
) -> Report {
    tokio::time::timeout(limit, client::submit(link, None, spec, &mut |_| {}))
        .await
        .expect("no report in time")
        .unwrap()
}

/// A small soak (360 samples at 60 s, a 60 s deadline) submitted without a token; its report,
/// which must come within 120 s.
pub(crate) async fn small_run(link: &CoordinatorLink) -> Report {
    submit_within(
        link,
        &soak_spec(60.0, Duration::from_secs(60)),
        Duration::from_secs(120),
    )
    .await
}

/// Asserts that a [`small_run`] passes.
pub(crate) async fn assert_a_small_run_passes(link: &CoordinatorLink) {
    let report = small_run(link).await;
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{:#?}",
        report.failure_diagnostics
    );
}

/// A client of the run service over `link`, connected.
pub(crate) async fn run_client(link: &CoordinatorLink) -> RunServiceClient<Channel> {
    RunServiceClient::new(link.endpoint().unwrap().connect().await.unwrap())
}

/// A TCP proxy on an ephemeral loopback port to a coordinator: it can cut every connection,
/// refuse new ones for a while, forward to another coordinator (so agents keep one address
/// while the coordinator behind it changes), and cut each connection once a number of bytes
/// have gone from the coordinator to the client.
pub(crate) struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    cut: Arc<tokio::sync::Notify>,
    refusing: Arc<AtomicBool>,
    cut_after: Arc<AtomicU64>,
}

/// Forwards `inbound` (the client) and `outbound` (the coordinator) both ways until either
/// side closes, or until `limit` bytes have gone from the coordinator to the client: then it
/// closes both, as a coordinator killed mid-reply would.
async fn forward_until(mut inbound: TcpStream, mut outbound: TcpStream, limit: u64) {
    if limit == u64::MAX {
        tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
            .await
            .ok();
        return;
    }
    let (mut from_client, mut to_client) = inbound.split();
    let (mut from_server, mut to_server) = outbound.split();
    let up = tokio::io::copy(&mut from_client, &mut to_server);
    let down = async {
        let mut left = limit;
        let mut buffer = vec![0; 64 * 1024];
        while left > 0 {
            let n = from_server.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            let take = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            to_client.write_all(&buffer[..take]).await?;
            left -= take as u64;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Proxy {
            addr,
            upstream: Arc::new(Mutex::new(upstream)),
            cut: Arc::new(tokio::sync::Notify::new()),
            refusing: Arc::new(AtomicBool::new(false)),
            cut_after: Arc::new(AtomicU64::new(u64::MAX)),
        };
        let (upstream, cut, refusing, cut_after) = (
            Arc::clone(&proxy.upstream),
            Arc::clone(&proxy.cut),
            Arc::clone(&proxy.refusing),
            Arc::clone(&proxy.cut_after),
        );
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if refusing.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let to = *upstream.lock().unwrap();
                let cut = Arc::clone(&cut);
                let limit = cut_after.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        () = forward_until(inbound, outbound, limit) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        proxy
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses new connections until [`Proxy::restore`] or [`Proxy::forward_to`]; open ones
    /// stay.
    pub(crate) fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    pub(crate) fn cut(&self) {
        self.refuse();
        self.cut.notify_waiters();
    }

    /// Cuts each connection opened from now on once `bytes` have gone from the coordinator to
    /// the client (what the client sends is not counted).
    pub(crate) fn cut_after(&self, bytes: u64) {
        self.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Accepts connections again.
    pub(crate) fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// Forwards new connections to `upstream`, accepting them again.
    pub(crate) fn forward_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
        self.restore();
    }
}

/// A loopback address where nothing listens, nor can while this is held: a socket bound to
/// it that never listens, so a connection there is refused.
pub(crate) struct Refused {
    pub(crate) addr: SocketAddr,
    _socket: TcpSocket,
}

impl Refused {
    pub(crate) fn new() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Refused {
            addr: socket.local_addr().unwrap(),
            _socket: socket,
        }
    }
}
