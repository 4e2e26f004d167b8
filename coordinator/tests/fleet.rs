//! The fleet over real gRPC on loopback sockets: a coordinator served in the test, agents as
//! real `fleetgate agent` processes whose jobs run in real worker processes, and a TCP proxy of
//! our own where a test needs to cut a connection or to keep the agents' coordinator address
//! while the coordinator behind it restarts. Nothing of ours is mocked. These tests are about
//! dispatch and faults, so they run in plaintext (asked for explicitly); TLS is exercised by
//! the rogue-peer test and the embedded default.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fleetgate_common::report::{AgentStatus, JobStatus, Report, Verdict};
use fleetgate_common::run::{Asset, Quorum};
use fleetgate_coordinator::client;
use fleetgate_coordinator::plan::RunError;
use fleetgate_proto::v1 as pb;
use support::fleet::{
    Proxy, Refused, assert_a_small_run_passes, fast_settings, in_process, link, run_client,
    submit_in_background, submit_within, wait_for_agents, wait_for_soak,
};
use support::process::{Process, plaintext_agent};
use support::{eventually, soak_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_make_one_fleet_report() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = in_process(fast_settings()).await;
    let url = coordinator.url();
    let dir = |id: &str| work.path().join(id);
    let agents = [
        plaintext_agent(&url, "a1", &dir("a1"), &["--label", "zone=east"]),
        plaintext_agent(&url, "a2", &dir("a2"), &["--label", "zone=east"]),
        plaintext_agent(&url, "a3", &dir("a3"), &["--hardware-class", "lab-box"]),
    ];
    wait_for_agents(&link(&url), None, &["a1", "a2", "a3"], || {
        Process::texts(&agents)
    })
    .await;

    let mut run = soak_spec(60.0, Duration::from_secs(120));
    run.selection.min_agents = 3;
    let report = submit_within(&link(&url), &run, Duration::from_secs(180)).await;
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
async fn a_quorum_sent_to_a_coordinator_tolerates_one_failing_agent_of_a_class() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = in_process(fast_settings()).await;
    let url = coordinator.url();
    let dir = |id: &str| work.path().join(id);
    let agents = ["q1", "q2", "q3"]
        .map(|id| plaintext_agent(&url, id, &dir(id), &["--hardware-class", "lab"]));
    wait_for_agents(&link(&url), None, &["q1", "q2", "q3"], || {
        Process::texts(&agents)
    })
    .await;

    // The shipped budgets, with one agent held to a limit every soak exceeds.
    let shipped = support::repo().join("docs/benchmarks/v0.4_operating_budget.json");
    let mut budgets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped).unwrap()).unwrap();
    budgets["budgets"]["q3/gpumemprof_cpu.final_retained_bytes"] = serde_json::json!(1);
    let path = work.path().join("budgets.json");
    std::fs::write(&path, budgets.to_string()).unwrap();
    let mut run = soak_spec(60.0, Duration::from_secs(120));
    run.budgets = Some(Asset::read(&path, "Budget file").unwrap());
    run.selection.min_agents = 3;
    run.selection.quorum = Quorum::new(0.6).unwrap();

    let report = submit_within(&link(&url), &run, Duration::from_secs(180)).await;
    assert_eq!(
        (report.verdict, report.passed),
        (Verdict::Pass, false),
        "{:#?}",
        report.failure_diagnostics
    );
    let lab = &report.hardware_classes["lab"];
    assert_eq!(
        (lab.passed, lab.gated, lab.quorum, lab.quorum_met),
        (2, 3, 2, true)
    );
    assert_eq!(report.failure_diagnostics.len(), 1);
    let line = &report.failure_diagnostics[0];
    assert!(
        line.starts_with("q3/gpumemprof_cpu.final_retained_bytes: ")
            && line.ends_with(" (tolerated: class lab passed 2 of 3, quorum 2)"),
        "{line}"
    );
    support::assert_matches_schema(&serde_json::to_value(&report).unwrap());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_soak_makes_the_run_inconclusive_by_its_deadline() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = in_process(fast_settings()).await;
    let url = coordinator.url();
    let dir = |id: &str| work.path().join(id);
    let mut victim = plaintext_agent(&url, "victim", &dir("victim"), &[]);
    let _others = [
        plaintext_agent(&url, "b1", &dir("b1"), &[]),
        plaintext_agent(&url, "b2", &dir("b2"), &[]),
    ];
    wait_for_agents(&link(&url), None, &["victim", "b1", "b2"], || victim.text()).await;
    // 0.1 s → 216,000 samples: about a second, long enough to be killed in the middle.
    let started = tokio::time::Instant::now();
    let (task, events) = submit_in_background(link(&url), soak_spec(0.1, Duration::from_secs(25)));
    wait_for_soak(&events, "victim", || victim.text()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_that_comes_back_delivers_everything_once() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = in_process(fast_settings()).await;
    let url = coordinator.url();
    let proxy = Proxy::start(coordinator.addr).await;
    let agent = plaintext_agent(&proxy.url(), "flaky", &work.path().join("flaky"), &[]);
    wait_for_agents(&link(&url), None, &["flaky"], || agent.text()).await;
    let (task, events) = submit_in_background(link(&url), soak_spec(0.05, Duration::from_secs(90)));
    wait_for_soak(&events, "flaky", || agent.text()).await;
    proxy.cut();
    // Longer than the heartbeat expiry (3 × 200 ms): the coordinator marks the agent lost.
    eventually(
        "the agent to be marked lost",
        Duration::from_secs(10),
        async || {
            let agents = client::list_agents(&link(&url), None).await.unwrap();
            agents
                .iter()
                .any(|a| a.agent_id == "flaky" && a.state == "lost")
                .then_some(())
        },
        || agent.text(),
    )
    .await;
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
    let first = in_process(fast_settings()).await;
    let url = first.url();
    // The agent dials the proxy: its coordinator's address stays while the coordinator
    // behind it is replaced, and no port is given up for another to take.
    let proxy = Proxy::start(first.addr).await;
    let agent = plaintext_agent(&proxy.url(), "steady", &work.path().join("steady"), &[]);
    wait_for_agents(&link(&url), None, &["steady"], || agent.text()).await;
    let (task, events) = submit_in_background(link(&url), soak_spec(0.05, Duration::from_secs(90)));
    wait_for_soak(&events, "steady", || agent.text()).await;
    proxy.refuse();
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
    // A new coordinator at the agent's coordinator address: the agent reconnects on its own
    // and runs again.
    let second = in_process(fast_settings()).await;
    let url = second.url();
    proxy.forward_to(second.addr);
    wait_for_agents(&link(&url), None, &["steady"], || agent.text()).await;
    assert_a_small_run_passes(&link(&url)).await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_coordinator_is_a_clear_error() {
    // Nothing listens there, and nothing can while the test runs.
    let nowhere = Refused::new();
    let url = format!("http://{}", nowhere.addr);
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
    let coordinator = in_process(fast_settings()).await;
    let url = coordinator.url();
    let agent = plaintext_agent(&url, "c1", &work.path().join("c1"), &[]);
    wait_for_agents(&link(&url), None, &["c1"], || agent.text()).await;
    let (task, events) = submit_in_background(link(&url), soak_spec(0.05, Duration::from_secs(90)));
    wait_for_soak(&events, "c1", || agent.text()).await;
    let run_id = events.lock().unwrap()[0].run_id.clone();
    task.abort();
    let mut runs = run_client(&link(&url)).await;
    let report: Report = eventually(
        "the abandoned run to end",
        Duration::from_secs(30),
        async || match runs
            .get_report(pb::GetReportRequest {
                run_id: run_id.clone(),
            })
            .await
        {
            Ok(r) => Some(serde_json::from_str(&r.into_inner().report_json).unwrap()),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::NotFound);
                None
            }
        },
        || agent.text(),
    )
    .await;
    assert_eq!(report.verdict, Verdict::Inconclusive);
    let job = &report.agents["c1"].jobs["gpumemprof_cpu"];
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(
        job.reason.as_deref(),
        Some("the client that submitted the run went away")
    );
    // The agent stopped the job and takes the next run.
    assert_a_small_run_passes(&link(&url)).await;
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_root_the_agent_does_not_allow_fails_the_job_and_nothing_is_touched() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = in_process(fast_settings()).await;
    let url = coordinator.url();
    let allowed = work.path().join("shm");
    let allow = allowed.display().to_string();
    let agent = plaintext_agent(
        &url,
        "careful",
        &work.path().join("careful"),
        &["--allow-scratch-root", &allow],
    );
    wait_for_agents(&link(&url), None, &["careful"], || agent.text()).await;
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
