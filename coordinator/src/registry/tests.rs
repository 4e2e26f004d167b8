//! The registry's decisions, driven through its handle with domain commands and channels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use fleetgate_common::config;
use fleetgate_common::convert::{self, ConvertError};
use fleetgate_common::host::HostFacts;
use fleetgate_common::ids::{AgentId, JobId, RunId};
use fleetgate_common::job::{JobPhase, JobUpdate};
use fleetgate_common::messages::AgentState;
use fleetgate_common::messages::{
    AgentHello, FromAgent, Heartbeat, JobEvent, JobResume, RunEvent, ToAgent,
};
use fleetgate_common::report::RuntimeSection;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agents::{AgentEntry, IGNORED_EVENT_WARNING_INTERVAL};
use super::{Command, CoordinatorSettings, RegistryError, RegistryHandle, spawn};
use fleetgate_common::run::{Asset, RunSpec, Selection};

type Inbound = mpsc::Receiver<super::ToAgentItem>;
type Client = mpsc::Receiver<Result<RunEvent, RegistryError>>;

#[test]
fn ignored_events_are_warned_about_once_per_interval_with_their_count() {
    let mut agent = AgentEntry {
        facts: HostFacts::default(),
        runtimes: Vec::new(),
        labels: BTreeMap::new(),
        hardware_class: "c".into(),
        state: AgentState::Connected,
        last_seen: Instant::now(),
        last_seen_unix_ms: 0,
        conn: None,
        peer: None,
        ignored_events: 0,
        ignored_warned_at: None,
    };
    let start = Instant::now();
    assert_eq!(
        agent.warn_ignored(start),
        Some(1),
        "the first one is logged"
    );
    for i in 1..1_000u32 {
        assert_eq!(
            agent.warn_ignored(start + Duration::from_millis(u64::from(i))),
            None
        );
    }
    let later = start + IGNORED_EVENT_WARNING_INTERVAL;
    assert_eq!(
        agent.warn_ignored(later),
        Some(1_000),
        "999 held back, then this one"
    );
    assert_eq!(agent.warn_ignored(later), None);
}

fn hello(agent_id: &str) -> AgentHello {
    AgentHello {
        agent_id: AgentId::new(agent_id),
        agent_version: "test".into(),
        facts: HostFacts {
            hostname: agent_id.into(),
            cpu_model: "Test CPU".into(),
            cpu_cores: 2,
            ..HostFacts::default()
        },
        runtimes: Vec::new(),
        labels: BTreeMap::new(),
        hardware_class: None,
        jobs: Vec::new(),
    }
}

/// Every agent's id and listed state (`connected`, `disconnected`, `lost`); also a point by
/// which the registry has handled every command sent before.
async fn states(handle: &RegistryHandle) -> Vec<(String, String)> {
    handle
        .ask(|reply| Command::ListAgents {
            after: None,
            page_size: 0,
            reply,
        })
        .await
        .unwrap()
        .agents
        .into_iter()
        .map(|a| {
            let state = convert::agent_state_name(a.state, a.session_open);
            (a.agent_id.into_string(), state.to_owned())
        })
        .collect()
}

fn peer(port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Opens a session for `hello` from `port`: its connection id and inbound messages, or why it
/// was refused.
async fn connect(
    handle: &RegistryHandle,
    hello: AgentHello,
    port: u16,
) -> Result<(u64, Inbound), RegistryError> {
    let (tx, rx) = mpsc::channel(64);
    handle
        .ask(|reply| Command::Connect {
            hello: Box::new(hello),
            outbound: tx,
            peer: peer(port),
            reply,
        })
        .await
        .unwrap()
        .map(|conn| (conn, rx))
}

async fn send(handle: &RegistryHandle, agent_id: &str, conn: u64, message: FromAgent) {
    handle
        .send(Command::FromAgent {
            agent_id: AgentId::new(agent_id),
            conn,
            message,
        })
        .await
        .unwrap();
}

/// Sends a heartbeat and waits until the registry has seen it.
async fn heartbeat(handle: &RegistryHandle, agent_id: &str, conn: u64) {
    send(
        handle,
        agent_id,
        conn,
        FromAgent::Heartbeat(Heartbeat::default()),
    )
    .await;
    states(handle).await;
}

/// Sends event `sequence` of job `job_id`.
async fn event(
    handle: &RegistryHandle,
    agent_id: &str,
    conn: u64,
    job_id: &JobId,
    sequence: u64,
    update: Result<JobUpdate, ConvertError>,
) {
    let event = JobEvent {
        job_id: job_id.clone(),
        sequence,
        update,
    };
    send(handle, agent_id, conn, FromAgent::JobEvent(event)).await;
}

fn report_update() -> JobUpdate {
    JobUpdate::Report {
        section: Box::new(RuntimeSection::unavailable("test")),
    }
}

/// A gpumemprof_cpu soak on every connected agent, gated by the shipped budgets.
fn spec(deadline: Option<Duration>) -> RunSpec {
    let budgets = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/benchmarks/v0.4_operating_budget.json"
    );
    RunSpec {
        workload: config::Workload {
            profile: config::Profile::Pr,
            mode: config::Mode::Soak,
            iterations: 1,
            allocation_kb: 1,
            kind: config::WorkloadKind::Reference,
        },
        gate_mode: config::GateMode::Budget,
        runtimes: vec!["gpumemprof_cpu".into()],
        selection: Selection::default(),
        deadline,
        knobs: fleetgate_common::knobs::Knobs::new(),
        overhead_scratch_root: None,
        budgets: Some(Asset::read(std::path::Path::new(budgets), "Budget file").unwrap()),
        baseline: None,
        tolerances: None,
    }
}

async fn submit(handle: &RegistryHandle, spec: RunSpec) -> Result<(RunId, Client), RegistryError> {
    let (events, client) = mpsc::channel(64);
    handle
        .ask(|reply| Command::Submit {
            spec: Box::new(spec),
            events,
            reply,
        })
        .await
        .unwrap()
        .map(|run_id| (run_id, client))
}

/// The next job assigned on `rx` (other messages are skipped).
async fn assigned(rx: &mut Inbound) -> JobId {
    loop {
        if let ToAgent::Assign(job) = (*rx.recv().await.unwrap()).unwrap() {
            return JobId::from(job.job_id);
        }
    }
}

/// The next acknowledgement on `rx` (other messages are skipped).
async fn acked(rx: &mut Inbound) -> (JobId, u64) {
    loop {
        if let ToAgent::Ack { job_id, sequence } = (*rx.recv().await.unwrap()).unwrap() {
            return (job_id, sequence);
        }
    }
}

/// The run's report, as JSON, from its client's events.
async fn streamed_report(client: &mut Client) -> serde_json::Value {
    loop {
        if let RunEvent::Report(report) = client.recv().await.unwrap().unwrap() {
            return serde_json::from_str(&report.json().unwrap()).unwrap();
        }
    }
}

/// Submits a run and has agent `agent_id` (session `conn`, inbound `rx`) finish its job at
/// once; returns the run id and the client's events.
async fn finished_run(
    handle: &RegistryHandle,
    agent_id: &str,
    conn: u64,
    rx: &mut Inbound,
) -> (RunId, Client) {
    let (run_id, mut client) = submit(handle, spec(None)).await.unwrap();
    let job_id = assigned(rx).await;
    event(handle, agent_id, conn, &job_id, 1, Ok(report_update())).await;
    streamed_report(&mut client).await;
    (run_id, client)
}

/// A registry with `settings` and one agent, `a1`, that finished three runs, oldest first.
async fn three_finished_runs(
    settings: CoordinatorSettings,
    shutdown: &CancellationToken,
) -> (RegistryHandle, Vec<RunId>) {
    let handle = spawn(settings, shutdown.clone());
    let (conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(finished_run(&handle, "a1", conn, &mut rx).await.0);
    }
    (handle, ids)
}

/// A finished run's report JSON, read back from what the registry keeps.
async fn report(handle: &RegistryHandle, run_id: &RunId) -> Result<String, RegistryError> {
    handle
        .ask(|reply| Command::GetReport {
            run_id: run_id.clone(),
            reply,
        })
        .await
        .unwrap()
        .map(|report| report.json().unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_second_live_session_for_an_id_is_refused_and_a_silent_one_is_replaced() {
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(1),
        sweep_interval: Duration::from_secs(3_600),
        ..CoordinatorSettings::default()
    };
    let handle = spawn(settings, shutdown.clone());
    let (conn, mut first) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let refused = connect(&handle, hello("a1"), 1_002).await.unwrap_err();
    assert!(matches!(refused, RegistryError::AgentIdInUse { .. }));
    assert_eq!(
        refused.to_string(),
        "agent id a1 already has a live session from 127.0.0.1:1001 (two agents with one id? give each its own --agent-id)"
    );
    // Still live while it heartbeats.
    tokio::time::advance(Duration::from_millis(2_900)).await;
    heartbeat(&handle, "a1", conn).await;
    tokio::time::advance(Duration::from_millis(2_900)).await;
    assert!(matches!(
        connect(&handle, hello("a1"), 1_003).await.unwrap_err(),
        RegistryError::AgentIdInUse { .. }
    ));
    // Silent past the expiry (3 s), it may be replaced, and its stream ends.
    tokio::time::advance(Duration::from_millis(200)).await;
    let (replaced, _second) = connect(&handle, hello("a1"), 1_004).await.unwrap();
    assert_ne!(replaced, conn);
    while let Some(message) = first.recv().await {
        assert!(message.is_ok());
    }
    assert_eq!(states(&handle).await, [("a1".into(), "connected".into())]);
    shutdown.cancel();
}

#[tokio::test]
async fn a_session_whose_stream_is_gone_may_be_replaced_at_once() {
    let shutdown = CancellationToken::new();
    let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
    let (_, first) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    drop(first);
    connect(&handle, hello("a1"), 1_002).await.unwrap();
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_lost_agent_is_forgotten_after_its_ttl_and_frees_its_place() {
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(1),
        sweep_interval: Duration::from_millis(100),
        max_agents: 2,
        lost_agent_ttl: Duration::from_secs(60),
        ..CoordinatorSettings::default()
    };
    let handle = spawn(settings, shutdown.clone());
    let (_, gone) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    drop(gone);
    let (c2, _a2) = connect(&handle, hello("a2"), 1_002).await.unwrap();
    let full = connect(&handle, hello("a3"), 1_003).await.unwrap_err();
    assert!(matches!(full, RegistryError::TooManyAgents { .. }));
    assert_eq!(
        full.to_string(),
        "this coordinator already knows 2 agents, its limit (--max-agents); a lost agent is forgotten 60 s after its last message (--lost-agent-ttl-seconds)"
    );
    // a2 keeps heartbeating; a1 is silent.
    for _ in 0..70 {
        tokio::time::advance(Duration::from_secs(1)).await;
        heartbeat(&handle, "a2", c2).await;
    }
    assert_eq!(states(&handle).await, [("a2".into(), "connected".into())]);
    connect(&handle, hello("a3"), 1_003).await.unwrap();
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn finished_runs_are_kept_up_to_a_count_and_an_age_and_say_so_when_dropped() {
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(3_600),
        sweep_interval: Duration::from_secs(1),
        max_finished_runs: 2,
        finished_run_ttl: Duration::from_secs(600),
        ..CoordinatorSettings::default()
    };
    let (handle, ids) = three_finished_runs(settings, &shutdown).await;
    let dropped = report(&handle, &ids[0]).await.unwrap_err();
    assert!(matches!(dropped, RegistryError::ReportDropped { .. }));
    assert_eq!(
        dropped.to_string(),
        format!(
            "run {} finished, but its report is no longer kept (this coordinator keeps the last 2 finished runs for 600 s: --max-finished-runs, --finished-run-ttl-seconds)",
            ids[0]
        )
    );
    for id in &ids[1..] {
        let json = report(&handle, id).await.unwrap();
        assert!(json.contains("\"verdict\""), "{json}");
    }
    // Past the age limit, the rest go too.
    tokio::time::advance(Duration::from_secs(601)).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    for id in &ids {
        assert!(
            report(&handle, id)
                .await
                .unwrap_err()
                .to_string()
                .contains("is no longer kept")
        );
    }
    assert_eq!(
        report(&handle, &RunId::new("run-1-999"))
            .await
            .unwrap_err()
            .to_string(),
        "no run run-1-999 on this coordinator"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn finished_reports_are_kept_compressed_and_their_limit_counts_what_is_kept() {
    // One finished report: what it holds against its JSON.
    let shutdown = CancellationToken::new();
    let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
    let (conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let (run_id, _client) = finished_run(&handle, "a1", conn, &mut rx).await;
    let kept = handle
        .ask(|reply| Command::GetReport { run_id, reply })
        .await
        .unwrap()
        .unwrap();
    let (held, json) = (kept.held_bytes(), kept.json_bytes() as usize);
    assert_eq!(kept.json().unwrap().len(), json);
    // Room for two reports as kept (and a little more: the next ones differ by a few bytes),
    // but not for one as JSON.
    let room = held * 2 + held / 8;
    assert!(room < json, "{held} bytes kept for {json} of JSON");
    shutdown.cancel();

    // Two are kept.
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        max_finished_report_bytes: room,
        ..CoordinatorSettings::default()
    };
    let (handle, ids) = three_finished_runs(settings, &shutdown).await;
    assert!(matches!(
        report(&handle, &ids[0]).await.unwrap_err(),
        RegistryError::ReportDropped { .. }
    ));
    for id in &ids[1..] {
        let json = report(&handle, id).await.unwrap();
        assert!(json.contains(&format!("{id}-0")), "{json}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_deadline_past_the_maximum_is_refused_without_arithmetic_overflow() {
    let shutdown = CancellationToken::new();
    let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
    let (_conn, _rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    for (deadline, got) in [
        (Duration::MAX, "18446744073709551615"),
        (Duration::from_millis(604_800_001), "604800001"),
    ] {
        let refused = submit(&handle, spec(Some(deadline))).await.unwrap_err();
        assert!(matches!(refused, RegistryError::Deadline(_)));
        assert_eq!(
            refused.to_string(),
            format!("deadline_ms: must be from 1 to 604800000, got {got}")
        );
    }
    shutdown.cancel();
}

#[tokio::test]
async fn the_agent_list_comes_in_pages_in_id_order() {
    let shutdown = CancellationToken::new();
    let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
    let mut sessions = Vec::new();
    for (i, id) in ["e", "a", "d", "b", "c"].iter().enumerate() {
        sessions.push(connect(&handle, hello(id), 1_000 + i as u16).await.unwrap());
    }
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let page = handle
            .ask(|reply| Command::ListAgents {
                after: after.clone(),
                page_size: 2,
                reply,
            })
            .await
            .unwrap();
        let ids: Vec<AgentId> = page.agents.iter().map(|a| a.agent_id.clone()).collect();
        pages.push(ids.iter().map(AgentId::to_string).collect::<Vec<_>>());
        if !page.more {
            break;
        }
        after = ids.last().cloned();
    }
    assert_eq!(pages, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_is_lost_after_three_heartbeat_intervals() {
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(1),
        sweep_interval: Duration::from_millis(100),
        ..CoordinatorSettings::default()
    };
    let handle = spawn(settings, shutdown.clone());
    let (conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let welcome = (*rx.recv().await.unwrap()).unwrap();
    assert!(matches!(
        welcome,
        ToAgent::Welcome(w) if w.heartbeat_interval == Duration::from_secs(1)
    ));
    // Heartbeats keep it alive well past the expiry.
    for _ in 0..5 {
        tokio::time::advance(Duration::from_millis(900)).await;
        send(
            &handle,
            "a1",
            conn,
            FromAgent::Heartbeat(Heartbeat::default()),
        )
        .await;
    }
    assert_eq!(
        states(&handle).await,
        [("a1".to_owned(), "connected".to_owned())]
    );
    // Then silence: still connected at 2.9 s, lost after 3 s.
    tokio::time::advance(Duration::from_millis(2_900)).await;
    assert_eq!(states(&handle).await[0].1, "connected");
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(states(&handle).await[0].1, "lost");
    // Its stream was closed.
    assert!(rx.recv().await.is_none());
    shutdown.cancel();
}

/// Three agents: two CPU hosts labelled by pool, one classed by the operator.
async fn small_fleet(handle: &RegistryHandle) -> Vec<(u64, Inbound)> {
    let mut sessions = Vec::new();
    for (i, (id, pool, class)) in [
        ("a1", "blue", None),
        ("a2", "green", None),
        ("a3", "blue", Some("lab-box")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = hello(id);
        h.labels.insert("pool".into(), pool.into());
        h.hardware_class = class.map(str::to_owned);
        sessions.push(connect(handle, h, 2_000 + i as u16).await.unwrap());
    }
    sessions
}

fn selecting(selection: Selection) -> RunSpec {
    RunSpec {
        selection,
        ..spec(None)
    }
}

/// The agents a run was accepted on, from its client's first event.
async fn accepted(client: &mut Client) -> Vec<String> {
    match client.recv().await.unwrap().unwrap() {
        RunEvent::Accepted { agent_ids, .. } => {
            agent_ids.into_iter().map(AgentId::into_string).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_run_selects_connected_agents_by_id_label_and_class_and_needs_enough_of_them() {
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        max_runs: 100,
        ..CoordinatorSettings::default()
    };
    let handle = spawn(settings, shutdown.clone());
    let sessions = small_fleet(&handle).await;

    let (_, mut client) = submit(&handle, spec(None)).await.unwrap();
    assert_eq!(accepted(&mut client).await, ["a1", "a2", "a3"]);

    let by_label = Selection {
        labels: [("pool".to_owned(), "blue".to_owned())].into(),
        ..Selection::default()
    };
    let (_, mut client) = submit(&handle, selecting(by_label)).await.unwrap();
    assert_eq!(accepted(&mut client).await, ["a1", "a3"]);

    let by_class = Selection {
        hardware_class: Some("cpu-test-2c".into()),
        ..Selection::default()
    };
    let (_, mut client) = submit(&handle, selecting(by_class)).await.unwrap();
    assert_eq!(accepted(&mut client).await, ["a1", "a2"]);

    let by_id = Selection {
        agent_ids: vec!["a3".into(), "a2".into()],
        ..Selection::default()
    };
    let (_, mut client) = submit(&handle, selecting(by_id)).await.unwrap();
    assert_eq!(accepted(&mut client).await, ["a2", "a3"]);

    let unknown = Selection {
        agent_ids: vec!["a1".into(), "a9".into()],
        ..Selection::default()
    };
    assert_eq!(
        submit(&handle, selecting(unknown))
            .await
            .unwrap_err()
            .to_string(),
        "agent a9 is not known to this coordinator"
    );

    let too_many = Selection {
        labels: [("pool".to_owned(), "green".to_owned())].into(),
        min_agents: 2,
        ..Selection::default()
    };
    let refused = submit(&handle, selecting(too_many)).await.unwrap_err();
    assert!(matches!(
        refused,
        RegistryError::TooFewAgents {
            matched: 1,
            needed: 2
        }
    ));
    assert_eq!(
        refused.to_string(),
        "1 connected agent(s) match the selection, the run needs at least 2"
    );

    // An agent whose session ended is not selected, and naming it is refused.
    handle
        .send(Command::Disconnected {
            agent_id: AgentId::new("a2"),
            conn: sessions[1].0,
        })
        .await
        .unwrap();
    assert_eq!(
        states(&handle).await[1],
        ("a2".into(), "disconnected".into())
    );
    let (_, mut client) = submit(&handle, spec(None)).await.unwrap();
    assert_eq!(accepted(&mut client).await, ["a1", "a3"]);
    let named = Selection {
        agent_ids: vec!["a2".into()],
        ..Selection::default()
    };
    assert_eq!(
        submit(&handle, selecting(named))
            .await
            .unwrap_err()
            .to_string(),
        "agent a2 is not connected"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn events_are_stored_once_in_order_and_only_the_stored_point_is_acknowledged() {
    let shutdown = CancellationToken::new();
    let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
    let (c1, mut rx1) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let (c2, mut rx2) = connect(&handle, hello("a2"), 1_002).await.unwrap();
    let (run_id, mut client) = submit(&handle, spec(None)).await.unwrap();
    accepted(&mut client).await;
    let j1 = assigned(&mut rx1).await;
    let j2 = assigned(&mut rx2).await;

    event(&handle, "a1", c1, &j1, 1, Ok(JobUpdate::Started { pid: 7 })).await;
    assert_eq!(acked(&mut rx1).await, (j1.clone(), 1));
    // A resent duplicate is acknowledged again, not stored again.
    event(&handle, "a1", c1, &j1, 1, Ok(JobUpdate::Started { pid: 7 })).await;
    assert_eq!(acked(&mut rx1).await, (j1.clone(), 1));
    // A gap: the stored point is acknowledged; the event is not kept.
    let soak = |done| JobUpdate::Progress {
        phase: JobPhase::Soak,
        done,
        total: 10,
    };
    event(&handle, "a1", c1, &j1, 3, Ok(soak(3))).await;
    assert_eq!(acked(&mut rx1).await, (j1.clone(), 1));
    // The next one in order is stored, acknowledged and shown to the client.
    event(&handle, "a1", c1, &j1, 2, Ok(soak(2))).await;
    assert_eq!(acked(&mut rx1).await, (j1.clone(), 2));
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        RunEvent::Progress {
            agent_id: AgentId::new("a1"),
            runtime: "gpumemprof_cpu".into(),
            phase: JobPhase::Soak,
            done: 2,
            total: 10,
        }
    );
    // Another agent's job: ignored, not acknowledged.
    event(&handle, "a2", c2, &j1, 3, Ok(soak(3))).await;
    // An unusable event ends the job, saying why; later events only repeat the end.
    let unusable = ConvertError {
        field: "body",
        message: "missing".into(),
    };
    event(&handle, "a1", c1, &j1, 3, Err(unusable)).await;
    assert_eq!(acked(&mut rx1).await, (j1.clone(), 3));
    event(&handle, "a1", c1, &j1, 4, Ok(soak(4))).await;
    assert_eq!(acked(&mut rx1).await, (j1.clone(), 3));
    states(&handle).await;
    assert!(
        matches!(rx2.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "a2 is never acknowledged for a1's job"
    );

    event(&handle, "a2", c2, &j2, 1, Ok(report_update())).await;
    assert_eq!(acked(&mut rx2).await, (j2.clone(), 1));
    let report = streamed_report(&mut client).await;
    let job = &report["agents"]["a1"]["jobs"]["gpumemprof_cpu"];
    assert_eq!(job["status"], "failed");
    assert_eq!(job["phase"], "soak");
    assert_eq!(job["events"], 3);
    assert_eq!(
        job["reason"],
        "the agent sent an unusable event: body: missing"
    );
    assert_eq!(
        report["agents"]["a2"]["jobs"]["gpumemprof_cpu"]["status"],
        "completed"
    );
    // The run is retired: its jobs are gone, so their events are ignored.
    event(&handle, "a1", c1, &j1, 5, Ok(soak(5))).await;
    states(&handle).await;
    assert!(matches!(
        rx1.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
    assert!(report_of(&handle, &run_id).await.contains("\"verdict\""));
    shutdown.cancel();
}

async fn report_of(handle: &RegistryHandle, run_id: &RunId) -> String {
    report(handle, run_id).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_job_past_the_run_deadline_times_out_and_its_agent_is_told_to_stop_it() {
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(3_600),
        sweep_interval: Duration::from_millis(100),
        ..CoordinatorSettings::default()
    };
    let handle = spawn(settings, shutdown.clone());
    let (conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let (run_id, mut client) = submit(&handle, spec(Some(Duration::from_secs(5))))
        .await
        .unwrap();
    let job_id = assigned(&mut rx).await;
    event(
        &handle,
        "a1",
        conn,
        &job_id,
        1,
        Ok(JobUpdate::Started { pid: 1 }),
    )
    .await;
    tokio::time::advance(Duration::from_millis(4_900)).await;
    assert!(matches!(
        report(&handle, &run_id).await.unwrap_err(),
        RegistryError::RunNotFinished(_)
    ));
    tokio::time::advance(Duration::from_millis(200)).await;
    let report = streamed_report(&mut client).await;
    let job = &report["agents"]["a1"]["jobs"]["gpumemprof_cpu"];
    assert_eq!(job["status"], "timed_out");
    assert_eq!(job["reason"], "the run's deadline passed");
    assert_eq!(report["agents"]["a1"]["status"], "timed_out");
    loop {
        match (*rx.recv().await.unwrap()).unwrap() {
            ToAgent::Cancel { job_id: id, reason } => {
                assert_eq!(id, job_id);
                assert_eq!(reason, "the run's deadline passed");
                break;
            }
            _ => continue,
        }
    }
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_lost_agent_stays_known_while_its_run_lasts_and_its_job_ends_lost() {
    let shutdown = CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(1),
        sweep_interval: Duration::from_millis(100),
        lost_agent_ttl: Duration::from_secs(2),
        ..CoordinatorSettings::default()
    };
    let handle = spawn(settings, shutdown.clone());
    let (_conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let (_, mut client) = submit(&handle, spec(Some(Duration::from_secs(10))))
        .await
        .unwrap();
    assigned(&mut rx).await;
    // Silent: lost after 3 s, past its time-to-live after 2 s more, yet kept for its run.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(states(&handle).await, [("a1".into(), "lost".into())]);
    tokio::time::advance(Duration::from_secs(5)).await;
    let report = streamed_report(&mut client).await;
    let job = &report["agents"]["a1"]["jobs"]["gpumemprof_cpu"];
    assert_eq!(job["status"], "lost");
    assert_eq!(
        job["reason"],
        "the agent was lost and did not come back before the run's deadline"
    );
    assert_eq!(report["agents"]["a1"]["status"], "lost");
    assert_eq!(report["verdict"], "inconclusive");
    // The run is over: the lost agent is forgotten at the next sweep.
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(states(&handle).await.is_empty());
    shutdown.cancel();
}

#[tokio::test]
async fn a_finished_run_streams_its_report_and_keeps_it_for_fetching() {
    let shutdown = CancellationToken::new();
    let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
    let (conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let (run_id, mut client) = submit(&handle, spec(None)).await.unwrap();
    assert_eq!(accepted(&mut client).await, ["a1"]);
    let job_id = assigned(&mut rx).await;
    assert!(job_id.as_str().starts_with(run_id.as_str()));
    event(&handle, "a1", conn, &job_id, 1, Ok(report_update())).await;
    let streamed = loop {
        if let RunEvent::Report(report) = client.recv().await.unwrap().unwrap() {
            break report.json().unwrap();
        }
    };
    // The report is the last event.
    assert!(client.recv().await.is_none());
    assert_eq!(report_of(&handle, &run_id).await, streamed);
    let report: serde_json::Value = serde_json::from_str(&streamed).unwrap();
    let job = &report["agents"]["a1"]["jobs"]["gpumemprof_cpu"];
    assert_eq!(job["status"], "completed");
    assert_eq!(job["job_id"], job_id.as_str());
    assert_eq!(report["agents"]["a1"]["hardware_class"], "cpu-test-2c");
    shutdown.cancel();
}

#[tokio::test]
async fn a_reconnecting_agent_resumes_its_jobs_gets_lost_assignments_again_and_drops_unknown_ones()
{
    let shutdown = CancellationToken::new();
    let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
    let (c1, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
    let (_, mut client) = submit(&handle, spec(None)).await.unwrap();
    accepted(&mut client).await;
    let job_id = assigned(&mut rx).await;
    drop(rx);
    handle
        .send(Command::Disconnected {
            agent_id: AgentId::new("a1"),
            conn: c1,
        })
        .await
        .unwrap();
    // Back without the job it never started: assigned again. An unknown running job is
    // named unknown and stopped.
    let mut again = hello("a1");
    again.jobs = vec![JobResume {
        job_id: JobId::new("run-0-0-0"),
        last_sequence: 4,
        running: true,
    }];
    let (c2, mut rx) = connect(&handle, again, 1_002).await.unwrap();
    match (*rx.recv().await.unwrap()).unwrap() {
        ToAgent::Welcome(w) => {
            assert_eq!(w.acked_through, [(JobId::new("run-0-0-0"), 4)].into());
            assert_eq!(w.unknown_job_ids, [JobId::new("run-0-0-0")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        (*rx.recv().await.unwrap()).unwrap(),
        ToAgent::Cancel { job_id: id, .. } if id == "run-0-0-0"
    ));
    assert_eq!(assigned(&mut rx).await, job_id);
    // Once it reported, resuming it acknowledges what is stored.
    event(
        &handle,
        "a1",
        c2,
        &job_id,
        1,
        Ok(JobUpdate::Started { pid: 3 }),
    )
    .await;
    assert_eq!(acked(&mut rx).await, (job_id.clone(), 1));
    drop(rx);
    handle
        .send(Command::Disconnected {
            agent_id: AgentId::new("a1"),
            conn: c2,
        })
        .await
        .unwrap();
    let mut resumed = hello("a1");
    resumed.jobs = vec![JobResume {
        job_id: job_id.clone(),
        last_sequence: 2,
        running: true,
    }];
    let (_, mut rx) = connect(&handle, resumed, 1_003).await.unwrap();
    match (*rx.recv().await.unwrap()).unwrap() {
        ToAgent::Welcome(w) => {
            assert_eq!(w.acked_through, [(job_id.clone(), 1)].into());
            assert!(w.unknown_job_ids.is_empty());
        }
        other => panic!("{other:?}"),
    }
    states(&handle).await;
    assert!(matches!(
        rx.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
    // Back a last time without it, after it reported: the job is lost to a restart.
    drop(rx);
    let (_, _rx) = connect(&handle, hello("a1"), 1_004).await.unwrap();
    let report = streamed_report(&mut client).await;
    assert_eq!(
        report["agents"]["a1"]["jobs"]["gpumemprof_cpu"]["reason"],
        "the agent came back without the job (it restarted)"
    );
    shutdown.cancel();
}
