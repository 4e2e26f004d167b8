//! Accepted connections, watched: a connection that has not made its first gRPC call within
//! the setup timeout (a socket that never speaks, a stalled TLS handshake or HTTP/2 preface),
//! or that has had no call in progress for the idle timeout, is closed. Peers that are alive
//! but unresponsive are closed by HTTP/2 keep-alive (see `service::serve`).
//!
//! A connection is found from a request by its remote address (tonic gives handlers the
//! address, not the connection), which is unique among the open connections of a listener.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The open connections of one listener, by remote address.
#[derive(Debug)]
pub(crate) struct Connections {
    open: Mutex<HashMap<SocketAddr, Arc<ConnectionState>>>,
    /// Origin of the millisecond clocks in [`ConnectionState`].
    epoch: Instant,
    setup_timeout: Duration,
    idle_timeout: Duration,
}

/// What the watcher of one connection needs to know about its calls.
#[derive(Debug, Default)]
struct ConnectionState {
    /// A gRPC call has arrived on it.
    established: AtomicBool,
    /// Calls in progress (a streaming call counts until its stream ends).
    active: AtomicUsize,
    /// When a call last arrived or ended, in ms since [`Connections::epoch`].
    last_call_ms: AtomicU64,
}

/// Keeps a call counted as in progress on its connection until dropped.
#[derive(Debug)]
pub(crate) struct CallGuard {
    state: Arc<ConnectionState>,
    connections: Arc<Connections>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.state
            .last_call_ms
            .store(self.connections.now_ms(), Ordering::Relaxed);
        self.state.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    pub(crate) fn new(setup_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Connections {
            open: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            setup_timeout,
            idle_timeout,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn get(&self, peer: SocketAddr) -> Option<Arc<ConnectionState>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // usable.
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .cloned()
    }

    /// Notes a call arriving from `peer`: its connection is established and not idle.
    pub(crate) fn call_arrived(&self, peer: Option<SocketAddr>) {
        if let Some(state) = peer.and_then(|p| self.get(p)) {
            state.established.store(true, Ordering::Relaxed);
            state.last_call_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Counts a call from `peer` as in progress until the guard is dropped.
    pub(crate) fn call_started(self: &Arc<Self>, peer: Option<SocketAddr>) -> Option<CallGuard> {
        let state = peer.and_then(|p| self.get(p))?;
        state.established.store(true, Ordering::Relaxed);
        state.active.fetch_add(1, Ordering::Relaxed);
        Some(CallGuard {
            state,
            connections: Arc::clone(self),
        })
    }

    /// How many connections are open.
    pub(crate) fn count(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Accepts connections on `listener` until `shutdown`, each wrapped in a [`Watched`]. When
/// the process runs out of descriptors, accepting pauses briefly instead of spinning.
pub(crate) fn incoming(
    listener: TcpListener,
    connections: Arc<Connections>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<Watched>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    warned = false;
                    let watched = Watched::new(stream, peer, &connections);
                    if tx.send(Ok(watched)).await.is_err() {
                        break;
                    }
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    // Out of descriptors or memory: the watchers close stale connections,
                    // so waiting a moment frees room.
                    if !warned {
                        tracing::warn!(error = %e, open = connections.count(), "Cannot accept connections; retrying.");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    rx
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// A TCP connection that closes itself (its reads fail) when it is not established within the
/// setup timeout, or stays without a call for the idle timeout.
#[derive(Debug)]
pub(crate) struct Watched {
    stream: TcpStream,
    info: TcpConnectInfo,
    peer: SocketAddr,
    state: Arc<ConnectionState>,
    connections: Arc<Connections>,
    accepted: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(stream: TcpStream, peer: SocketAddr, connections: &Arc<Connections>) -> Self {
        stream.set_nodelay(true).ok();
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        let state = Arc::new(ConnectionState::default());
        connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, Arc::clone(&state));
        let accepted = Instant::now();
        Watched {
            stream,
            info,
            peer,
            state,
            connections: Arc::clone(connections),
            accepted,
            timer: Box::pin(tokio::time::sleep_until(
                accepted + connections.setup_timeout,
            )),
        }
    }

    /// When the connection is due to close if nothing changes, or `None` if it is due now.
    fn next_check(&self, now: Instant) -> Option<Instant> {
        if !self.state.established.load(Ordering::Relaxed) {
            let due = self.accepted + self.connections.setup_timeout;
            return (now < due).then_some(due);
        }
        if self.state.active.load(Ordering::Relaxed) > 0 {
            return Some(now + self.connections.idle_timeout);
        }
        let last = self.state.last_call_ms.load(Ordering::Relaxed);
        let due =
            self.connections.epoch + Duration::from_millis(last) + self.connections.idle_timeout;
        (now < due).then_some(due)
    }

    /// Polls the timer; an error when the connection is due to close.
    fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match self.next_check(Instant::now()) {
                Some(at) => self.timer.as_mut().reset(at),
                None => {
                    let established = self.state.established.load(Ordering::Relaxed);
                    tracing::debug!(peer = %self.peer, established, "Connection closed: no call within its time limit.");
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        if established {
                            "no call in progress for the idle timeout"
                        } else {
                            "no call within the setup timeout"
                        },
                    ));
                }
            }
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only this connection's own entry (the address may have been reused since).
        if open
            .get(&self.peer)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            open.remove(&self.peer);
        }
    }
}

impl Connected for Watched {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => match this.poll_watch(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
