//! The fleet over real gRPC on loopback sockets: a coordinator served in the test, agents as
//! real `fleetgate agent` processes whose jobs run in real worker processes, and a TCP proxy of
//! our own where a test needs to cut a connection. Nothing of ours is mocked.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetgate_common::report::{AgentStatus, JobStatus, Report, Verdict};
use fleetgate_common::tls::CoordinatorLink;
use fleetgate_coordinator::client;
use fleetgate_coordinator::plan::{RunError, RunSpec};
use fleetgate_coordinator::registry::CoordinatorSettings;
use fleetgate_coordinator::service::{self, Coordinator};
use fleetgate_proto::v1 as pb;
use support::soak_spec;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const HEARTBEAT: Duration = Duration::from_millis(200);

async fn coordinator_on(listener: TcpListener) -> Coordinator {
    let settings = CoordinatorSettings {
        heartbeat_interval: HEARTBEAT,
        sweep_interval: Duration::from_millis(50),
        ..CoordinatorSettings::default()
    };
    service::serve(listener, settings, CancellationToken::new()).unwrap()
}

/// These tests are about dispatch and faults, so they run in plaintext (asked for explicitly);
/// TLS is exercised by the rogue-peer test and the embedded default.
fn link(url: &str) -> CoordinatorLink {
    CoordinatorLink::plaintext(url.to_owned())
}

async fn coordinator() -> Coordinator {
    coordinator_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

/// A `fleetgate agent` process; killed when dropped.
struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    fn start(url: &str, id: &str, dir: &Path, extra: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .arg("agent")
            .args([
                "--coordinator",
                url,
                "--agent-id",
                id,
                "--reconnect-max-ms",
                "300",
                "--plaintext",
            ])
            .arg("--artifact-root")
            .arg(dir.join(id).join("artifacts"))
            .arg("--state-dir")
            .arg(dir.join(id).join("state"))
            .args(extra)
            .env("FLEETGATE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        AgentProcess { child }
    }

    fn kill(&mut self) {
        self.child.kill().ok(); // SIGKILL
        self.child.wait().ok();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_for_agents(url: &str, ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(agents) = client::list_agents(&link(url), None).await {
            let connected: Vec<&str> = agents
                .iter()
                .filter(|a| a.state == "connected")
                .map(|a| a.agent_id.as_str())
                .collect();
            if ids.iter().all(|id| connected.contains(id)) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents {ids:?} never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event a background submission has seen.
type SeenEvents = Arc<Mutex<Vec<pb::RunEvent>>>;

/// Submits in the background, recording every event.
fn submit(url: String, spec: RunSpec) -> (JoinHandle<Result<Report, RunError>>, SeenEvents) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let task = tokio::spawn(async move {
        client::submit(&link(&url), None, &spec, &mut |e| {
            seen.lock().unwrap().push(e.clone())
        })
        .await
    });
    (task, events)
}

/// Waits until `agent` reported soak progress.
async fn wait_for_soak(events: &Mutex<Vec<pb::RunEvent>>, agent: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let started = events.lock().unwrap().iter().any(|e| {
            matches!(&e.body, Some(pb::run_event::Body::Progress(p)) if p.agent_id == agent && p.phase == "soak" && p.done < p.total)
        });
        if started {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{agent} never started its soak"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_make_one_fleet_report() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = coordinator().await;
    let url = coordinator.url();
    let _agents = [
        AgentProcess::start(&url, "a1", work.path(), &["--label", "zone=east"]),
        AgentProcess::start(&url, "a2", work.path(), &["--label", "zone=east"]),
        AgentProcess::start(&url, "a3", work.path(), &["--hardware-class", "lab-box"]),
    ];
    wait_for_agents(&url, &["a1", "a2", "a3"]).await;

    let mut run = soak_spec(60.0, Duration::from_secs(120));
    run.selection.min_agents = 3;
    let report = tokio::time::timeout(
        Duration::from_secs(180),
        client::submit(&link(&url), None, &run, &mut |_| {}),
    )
    .await
    .expect("no report in time")
    .unwrap();
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{:#?}",
        report.failure_diagnostics
    );
    assert_eq!(report.agents.len(), 3);
    for id in ["a1", "a2", "a3"] {
        let agent = &report.agents[id];
        assert_eq!(agent.status, AgentStatus::Completed);
        let job = &agent.jobs["gpumemprof_cpu"];
        assert_eq!(job.status, JobStatus::Completed);
        let soak = report.runtimes[&format!("{id}/gpumemprof_cpu")]
            .soak
            .as_ref()
            .unwrap();
        assert_eq!(soak.sample_count, 360);
        // 360 samples: stride 7, so 51 checkpoints plus the last sample's.
        assert_eq!(soak.rss_checkpoint_count, 52);
        assert_eq!(job.checkpoints, soak.rss_checkpoint_count);
        assert!(
            report
                .metrics
                .contains_key(&format!("{id}/gpumemprof_cpu.rollover_count"))
        );
    }
    assert_eq!(report.metrics.len(), 3 * 11);
    assert_eq!(report.agents["a1"].labels["zone"], "east");
    assert_eq!(report.agents["a3"].hardware_class, "lab-box");
    assert_eq!(report.hardware_classes["lab-box"].agents, ["a3"]);
    let derived = &report.agents["a1"].hardware_class;
    assert_eq!(report.hardware_classes[derived].agents, ["a1", "a2"]);
    assert_eq!(
        report.hardware_classes[derived].metrics["gpumemprof_cpu.rollover_count"].agents,
        2
    );

    // Selection by label leaves a3 out.
    let mut east = soak_spec(60.0, Duration::from_secs(120));
    east.selection.labels = BTreeMap::from([("zone".to_owned(), "east".to_owned())]);
    let report = client::submit(&link(&url), None, &east, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.agents.keys().collect::<Vec<_>>(), ["a1", "a2"]);
    // Too few matching agents: refused before anything runs.
    let mut many = soak_spec(60.0, Duration::from_secs(120));
    many.selection.min_agents = 4;
    assert!(matches!(
        client::submit(&link(&url), None, &many, &mut |_| {}).await,
        Err(RunError::Inconclusive(_))
    ));
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_soak_makes_the_run_inconclusive_by_its_deadline() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = coordinator().await;
    let url = coordinator.url();
    let mut victim = AgentProcess::start(&url, "victim", work.path(), &[]);
    let _others = [
        AgentProcess::start(&url, "b1", work.path(), &[]),
        AgentProcess::start(&url, "b2", work.path(), &[]),
    ];
    wait_for_agents(&url, &["victim", "b1", "b2"]).await;
    // 0.1 s → 216,000 samples: about a second, long enough to be killed in the middle.
    let started = tokio::time::Instant::now();
    let (task, events) = submit(url.clone(), soak_spec(0.1, Duration::from_secs(25)));
    wait_for_soak(&events, "victim").await;
    victim.kill();
    let report = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the run outlived its deadline"
    );
    assert_eq!(report.verdict, Verdict::Inconclusive);
    assert!(!report.passed);
    let victim = &report.agents["victim"];
    assert_eq!(victim.status, AgentStatus::Lost);
    assert_eq!(victim.jobs["gpumemprof_cpu"].status, JobStatus::Lost);
    assert_eq!(victim.jobs["gpumemprof_cpu"].phase, "soak");
    assert!(
        report
            .failure_diagnostics
            .iter()
            .any(|d| d.starts_with("victim: lost during gpumemprof_cpu soak")),
        "{:#?}",
        report.failure_diagnostics
    );
    assert!(!report.runtimes.contains_key("victim/gpumemprof_cpu"));
    for id in ["b1", "b2"] {
        assert_eq!(report.agents[id].status, AgentStatus::Completed);
        assert_eq!(report.agents[id].jobs["gpumemprof_cpu"].checkpoints, 50);
        assert!(
            report.runtimes[&format!("{id}/gpumemprof_cpu")]
                .soak
                .is_some()
        );
    }
    coordinator.shutdown().await;
}

/// A TCP proxy that can cut every connection and refuse new ones for a while.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<tokio::sync::Notify>,
    blocked: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(tokio::sync::Notify::new());
        let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, b) = (Arc::clone(&cut), Arc::clone(&blocked));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if b.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = c.notified() => {}
                    }
                });
            }
        });
        Proxy { addr, cut, blocked }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        self.blocked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.blocked
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_that_comes_back_delivers_everything_once() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = coordinator().await;
    let url = coordinator.url();
    let proxy = Proxy::start(coordinator.addr).await;
    let _agent = AgentProcess::start(&proxy.url(), "flaky", work.path(), &[]);
    wait_for_agents(&url, &["flaky"]).await;
    let (task, events) = submit(url.clone(), soak_spec(0.05, Duration::from_secs(90)));
    wait_for_soak(&events, "flaky").await;
    proxy.cut();
    // Longer than the heartbeat expiry (3 × 200 ms): the coordinator marks the agent lost.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let agents = client::list_agents(&link(&url), None).await.unwrap();
        if agents
            .iter()
            .any(|a| a.agent_id == "flaky" && a.state == "lost")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent was never marked lost"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    let report = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{:#?}",
        report.failure_diagnostics
    );
    let job = &report.agents["flaky"].jobs["gpumemprof_cpu"];
    assert_eq!(job.status, JobStatus::Completed);
    // Every checkpoint exactly once, and the soak's own counters intact.
    assert_eq!(job.checkpoints, 50);
    let soak = report.runtimes["flaky/gpumemprof_cpu"]
        .soak
        .as_ref()
        .unwrap();
    assert_eq!(soak.rss_checkpoint_count, 50);
    assert_eq!(soak.sample_count, 432_000);
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restart_fails_the_client_clearly_and_agents_come_back() {
    let work = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = coordinator_on(listener).await;
    let url = first.url();
    let _agent = AgentProcess::start(&url, "steady", work.path(), &[]);
    wait_for_agents(&url, &["steady"]).await;
    let (task, events) = submit(url.clone(), soak_spec(0.05, Duration::from_secs(90)));
    wait_for_soak(&events, "steady").await;
    first.shutdown().await;
    // The client gets a clear failure, promptly.
    let outcome = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the client hung")
        .unwrap();
    match outcome {
        Err(RunError::Unreachable(message)) => assert!(message.contains(&url), "{message}"),
        other => panic!("expected a clear unreachable error, got {other:?}"),
    }
    // A new coordinator on the same address: the agent reconnects on its own and runs again.
    let second = coordinator_on(TcpListener::bind(addr).await.unwrap()).await;
    wait_for_agents(&url, &["steady"]).await;
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        client::submit(
            &link(&url),
            None,
            &soak_spec(60.0, Duration::from_secs(60)),
            &mut |_| {},
        ),
    )
    .await
    .expect("no report in time")
    .unwrap();
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{:#?}",
        report.failure_diagnostics
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_coordinator_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    match client::submit(
        &link(&url),
        None,
        &soak_spec(60.0, Duration::from_secs(10)),
        &mut |_| {},
    )
    .await
    {
        Err(RunError::Unreachable(message)) => {
            assert!(
                message.starts_with(&format!("cannot reach the coordinator at {url}")),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_client_goes_away_is_cancelled_on_its_agents() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = coordinator().await;
    let url = coordinator.url();
    let _agent = AgentProcess::start(&url, "c1", work.path(), &[]);
    wait_for_agents(&url, &["c1"]).await;
    let (task, events) = submit(url.clone(), soak_spec(0.05, Duration::from_secs(90)));
    wait_for_soak(&events, "c1").await;
    let run_id = events.lock().unwrap()[0].run_id.clone();
    task.abort();
    let mut runs = pb::run_service_client::RunServiceClient::connect(url.clone())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report: Report = loop {
        match runs
            .get_report(pb::GetReportRequest {
                run_id: run_id.clone(),
            })
            .await
        {
            Ok(r) => break serde_json::from_str(&r.into_inner().report_json).unwrap(),
            Err(status) => assert_eq!(status.code(), tonic::Code::NotFound),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned run never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report.verdict, Verdict::Inconclusive);
    let job = &report.agents["c1"].jobs["gpumemprof_cpu"];
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(
        job.reason.as_deref(),
        Some("the client that submitted the run went away")
    );
    // The agent stopped the job and takes the next run.
    let next = client::submit(
        &link(&url),
        None,
        &soak_spec(60.0, Duration::from_secs(60)),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        next.verdict,
        Verdict::Pass,
        "{:#?}",
        next.failure_diagnostics
    );
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_root_the_agent_does_not_allow_fails_the_job_and_nothing_is_touched() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = coordinator().await;
    let url = coordinator.url();
    let allowed = work.path().join("shm");
    let allow = allowed.display().to_string();
    let _agent = AgentProcess::start(
        &url,
        "careful",
        work.path(),
        &["--allow-scratch-root", &allow],
    );
    wait_for_agents(&url, &["careful"]).await;
    // A coordinator's scratch root is remote input: one outside the agent's allowed roots, or
    // one that climbs out of it, fails the job before anything is written or cleared.
    let victim = work.path().join("victim");
    std::fs::create_dir_all(victim.join("gpumemprof_cpu")).unwrap();
    std::fs::write(victim.join("gpumemprof_cpu").join("keep.txt"), "data").unwrap();
    for root in [victim.display().to_string(), format!("{allow}/../victim")] {
        let mut asked = soak_spec(60.0, Duration::from_secs(60));
        asked.overhead_scratch_root = Some(root.clone());
        let report = client::submit(&link(&url), None, &asked, &mut |_| {})
            .await
            .unwrap();
        let job = &report.agents["careful"].jobs["gpumemprof_cpu"];
        assert_eq!(job.status, JobStatus::Failed, "{root}: {job:?}");
        assert_eq!(
            job.reason.as_deref(),
            Some(
                format!(
                    "overhead scratch root {root} is not allowed on this agent (start it with --allow-scratch-root {root})"
                )
                .as_str()
            ),
            "{root}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(victim.join("gpumemprof_cpu").join("keep.txt")).unwrap(),
        "data"
    );
    // Under the allowed root, the same run proceeds.
    let mut asked = soak_spec(60.0, Duration::from_secs(60));
    asked.overhead_scratch_root = Some(format!("{allow}/run-1"));
    let report = client::submit(&link(&url), None, &asked, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        report.agents["careful"].jobs["gpumemprof_cpu"].status,
        JobStatus::Completed
    );
    coordinator.shutdown().await;
}
