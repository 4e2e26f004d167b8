//! An agent's state against real coordinators: `fleetgate serve` and `fleetgate agent`
//! processes on loopback (the agent dials a TCP proxy of ours where the coordinator restarts,
//! so its coordinator address stays). Outboxes of jobs the coordinator does not know (left from before,
//! or of a run lost when the coordinator restarted mid-job) are deleted when the agent
//! connects, the orphaned job is stopped and nothing of it is sent again (the coordinator
//! logs no event for an unknown job); and a job whose workload would not fit in the memory the
//! agent may give it fails before it starts, with the reason, while the next job runs.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_common::config::Mode;
use fleetgate_common::report::{JobStatus, Verdict};
use support::fleet::{
    Proxy, assert_a_small_run_passes, link, small_run, submit_in_background, submit_within,
    wait_for_agents, wait_for_soak,
};
use support::process::{Process, Serve, agent_command};
use support::{eventually, soak_spec};

/// `fleetgate serve` in plaintext with 200 ms heartbeats, once it listens.
async fn serve() -> Serve {
    Serve::start(&["--plaintext", "--heartbeat-ms", "200"], None).await
}

/// A plaintext `fleetgate agent` logging at `info`, its artifact root and state under `dir`.
fn agent(url: &str, id: &str, dir: &Path, extra: &[&str]) -> Process {
    let mut command = agent_command(url, id, dir);
    command
        .arg("--plaintext")
        .args(extra)
        .env("FLEETGATE_LOG", "info");
    Process::spawn(command)
}

fn outbox_files(outbox: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outboxes_of_jobs_the_coordinator_does_not_know_are_deleted_and_never_resent() {
    let work = tempfile::tempdir().unwrap();
    let outbox: PathBuf = work.path().join("state").join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    // A job of a coordinator long gone: started, never finished (its agent was killed).
    let stale = outbox.join("run-1-1-0.events.jsonl");
    std::fs::write(
        &stale,
        "{\"sequence\":1,\"update\":{\"event\":\"started\",\"pid\":7}}\n\
         {\"sequence\":2,\"update\":{\"event\":\"progress\",\"phase\":\"soak\",\"done\":1,\"total\":9}}\n",
    )
    .unwrap();

    let first = serve().await;
    // The agent dials the proxy: its coordinator's address stays while the coordinator
    // behind it is replaced, and no port is given up for another to take.
    let proxy = Proxy::start(first.addr).await;
    let steady = agent(&proxy.url(), "steady", work.path(), &[]);
    wait_for_agents(&link(&first.url()), None, &["steady"], || steady.text()).await;
    eventually(
        "the stale outbox to be deleted",
        Duration::from_secs(30),
        async || (!stale.exists()).then_some(()),
        || steady.text(),
    )
    .await;
    assert!(
        steady.said(&format!(
            "Outbox of a job the coordinator does not know deleted. job_id=run-1-1-0 path={}",
            stale.display()
        )),
        "{}",
        steady.text()
    );

    // A run whose coordinator goes away mid-job: the job keeps running on the agent, and its
    // outbox holds events the next coordinator has never heard of.
    let (submitted, events) = submit_in_background(
        link(&first.url()),
        soak_spec(0.05, Duration::from_secs(300)),
    );
    wait_for_soak(&events, "steady", || steady.text()).await;
    let run_id = events.lock().unwrap()[0].run_id.clone();
    let orphan = outbox.join(format!("{run_id}-0.events.jsonl"));
    assert!(orphan.exists(), "{:?}", outbox_files(&outbox));
    proxy.refuse();
    first.stop().await;
    // The client's stream ends with the coordinator.
    tokio::time::timeout(Duration::from_secs(30), submitted)
        .await
        .expect("the client hung")
        .unwrap()
        .unwrap_err();

    let second = serve().await;
    proxy.forward_to(second.addr);
    wait_for_agents(&link(&second.url()), None, &["steady"], || steady.text()).await;
    eventually(
        "the orphaned job's outbox to be deleted",
        Duration::from_secs(30),
        async || (!orphan.exists()).then_some(()),
        || steady.text(),
    )
    .await;
    assert!(
        steady.said(&format!(
            "Outbox of a job the coordinator does not know deleted. job_id={run_id}-0"
        )),
        "{}",
        steady.text()
    );
    // The orphaned job was stopped (jobs run one at a time, so this run proves the agent is
    // free), and the next run's outbox is gone once acknowledged.
    assert_a_small_run_passes(&link(&second.url())).await;
    eventually(
        "the finished run's outbox to be removed",
        Duration::from_secs(10),
        async || outbox_files(&outbox).is_empty().then_some(()),
        || format!("{:?}", outbox_files(&outbox)),
    )
    .await;
    // Nothing of the orphaned job reached the coordinator: no event for an unknown job.
    assert!(
        !second.process.said("Event for an unknown job ignored."),
        "{}",
        second.process.text()
    );
    steady.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_would_not_fit_in_memory_fails_before_it_starts_and_the_next_one_runs() {
    let work = tempfile::tempdir().unwrap();
    let coordinator = serve().await;
    let url = coordinator.url();
    let careful = agent(
        &url,
        "careful",
        work.path(),
        &["--max-job-memory-mib", "64"],
    );
    wait_for_agents(&link(&url), None, &["careful"], || careful.text()).await;

    let mut big = soak_spec(60.0, Duration::from_secs(60));
    big.workload.mode = Mode::Soak;
    big.workload.allocation_kb = 64 * 1024;
    let report = submit_within(&link(&url), &big, Duration::from_secs(60)).await;
    let job = &report.agents["careful"].jobs["gpumemprof_cpu"];
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    let reason = "allocation_kb 65536 does not fit in memory: a gpumemprof_cpu job needs 96 MiB \
                  (1 x 64 MiB of workload and 32 MiB for the worker), more than the 64 MiB this \
                  agent allows one job (--max-job-memory-mib)";
    assert_eq!(job.reason.as_deref(), Some(reason));
    assert_eq!(job.phase, "starting");
    assert_eq!(report.verdict, Verdict::Inconclusive);
    // No worker ever started: nothing was written under the artifact root.
    assert!(
        !work
            .path()
            .join("artifacts")
            .join("gpumemprof_cpu")
            .exists(),
        "a worker ran"
    );
    assert!(
        careful.said(&format!("reason={reason}")),
        "{}",
        careful.text()
    );

    // A job within the limit runs as usual.
    let report = small_run(&link(&url)).await;
    assert_eq!(
        report.agents["careful"].jobs["gpumemprof_cpu"].status,
        JobStatus::Completed
    );
    careful.stop().await;
    coordinator.stop().await;
}
