//! Shutdown signals shared by every long-running command.

/// Resolves on the first SIGINT (Ctrl+C) or SIGTERM. If a handler cannot be installed, that
/// signal keeps its default action (the process ends), so waiting on the other is still right.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminate = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
