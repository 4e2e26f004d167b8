//! An agent's state against real coordinators: `fleetgate serve` and `fleetgate agent`
//! processes on loopback. Outboxes of jobs the coordinator does not know (left from before,
//! or of a run lost when the coordinator restarted mid-job) are deleted when the agent
//! connects, the orphaned job is stopped and nothing of it is sent again (the coordinator
//! logs no event for an unknown job); and a job whose workload would not fit in the memory the
//! agent may give it fails before it starts, with the reason, while the next job runs.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetgate_common::config::Mode;
use fleetgate_common::report::{JobStatus, Verdict};
use fleetgate_common::tls::CoordinatorLink;
use fleetgate_coordinator::client;
use fleetgate_proto::v1 as pb;
use support::soak_spec;

/// Lines a child process wrote on stderr, collected as they come.
type Lines = Arc<Mutex<Vec<String>>>;

/// A child process (SIGKILL when dropped) and its stderr lines.
struct Process {
    child: Child,
    lines: Lines,
}

impl Process {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("NO_COLOR", "1")
            .env_remove("FLEETGATE_AGENT_TOKEN")
            .env_remove("FLEETGATE_CLIENT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Lines::default();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Process { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn said(&self, wanted: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(wanted))
    }

    /// SIGTERM, then waits (at most 20 s) for the exit.
    async fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).ok();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the process ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Polls `done` every 20 ms for at most `limit`; panics with `what` and `context()` if it
/// never holds.
async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `fleetgate serve` in plaintext on `listen`; returns it once it listens, and its address.
async fn serve(listen: &str) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    command
        .args([
            "serve",
            "--plaintext",
            "--heartbeat-ms",
            "200",
            "--listen",
            listen,
        ])
        .env("FLEETGATE_LOG", "info");
    let coordinator = Process::spawn(command);
    let marker = "Coordinator listening. addr=";
    wait_until(
        "the coordinator did not listen",
        Duration::from_secs(30),
        || coordinator.said(marker),
        || coordinator.text(),
    )
    .await;
    let addr = coordinator
        .lines
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.split_once(marker).map(|(_, a)| a.trim().parse().unwrap()))
        .unwrap();
    (coordinator, addr)
}

fn agent(addr: SocketAddr, id: &str, dir: &Path, extra: &[&str]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    command
        .arg("agent")
        .args(["--coordinator", &format!("http://{addr}"), "--plaintext"])
        .args(["--agent-id", id, "--reconnect-max-ms", "300"])
        .arg("--artifact-root")
        .arg(dir.join("artifacts"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .env("FLEETGATE_LOG", "info");
    Process::spawn(command)
}

fn link(addr: SocketAddr) -> CoordinatorLink {
    CoordinatorLink::plaintext(format!("http://{addr}"))
}

async fn wait_connected(addr: SocketAddr, id: &str, agent: &Process) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(agents) = client::list_agents(&link(addr), None).await
            && agents
                .iter()
                .any(|a| a.agent_id == id && a.state == "connected")
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent {id} never registered:\n{}",
            agent.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

    let (first, addr) = serve("127.0.0.1:0").await;
    let steady = agent(addr, "steady", work.path(), &[]);
    wait_connected(addr, "steady", &steady).await;
    wait_until(
        "the stale outbox was not deleted",
        Duration::from_secs(30),
        || !stale.exists(),
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
    let events = Arc::new(Mutex::new(Vec::<pb::RunEvent>::new()));
    let seen = Arc::clone(&events);
    let submitted = tokio::spawn(async move {
        client::submit(
            &link(addr),
            None,
            &soak_spec(0.05, Duration::from_secs(300)),
            &mut |e| seen.lock().unwrap().push(e.clone()),
        )
        .await
    });
    wait_until(
        "the soak never started",
        Duration::from_secs(120),
        || {
            events.lock().unwrap().iter().any(|e| {
                matches!(&e.body, Some(pb::run_event::Body::Progress(p)) if p.phase == "soak" && p.done < p.total)
            })
        },
        || steady.text(),
    )
    .await;
    let run_id = events.lock().unwrap()[0].run_id.clone();
    let orphan = outbox.join(format!("{run_id}-0.events.jsonl"));
    assert!(orphan.exists(), "{:?}", outbox_files(&outbox));
    first.stop().await;
    // The client's stream ends with the coordinator.
    tokio::time::timeout(Duration::from_secs(30), submitted)
        .await
        .expect("the client hung")
        .unwrap()
        .unwrap_err();

    let (second, _) = serve(&addr.to_string()).await;
    wait_connected(addr, "steady", &steady).await;
    wait_until(
        "the orphaned job's outbox was not deleted",
        Duration::from_secs(30),
        || !orphan.exists(),
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
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        client::submit(
            &link(addr),
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
    wait_until(
        "the finished run's outbox stayed",
        Duration::from_secs(10),
        || outbox_files(&outbox).is_empty(),
        || format!("{:?}", outbox_files(&outbox)),
    )
    .await;
    // Nothing of the orphaned job reached the coordinator: no event for an unknown job.
    assert!(
        !second.said("Event for an unknown job ignored."),
        "{}",
        second.text()
    );
    steady.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_would_not_fit_in_memory_fails_before_it_starts_and_the_next_one_runs() {
    let work = tempfile::tempdir().unwrap();
    let (coordinator, addr) = serve("127.0.0.1:0").await;
    let careful = agent(
        addr,
        "careful",
        work.path(),
        &["--max-job-memory-mib", "64"],
    );
    wait_connected(addr, "careful", &careful).await;

    let mut big = soak_spec(60.0, Duration::from_secs(60));
    big.mode = Mode::Soak;
    big.allocation_kb = 64 * 1024;
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        client::submit(&link(addr), None, &big, &mut |_| {}),
    )
    .await
    .expect("no report in time")
    .unwrap();
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
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        client::submit(
            &link(addr),
            None,
            &soak_spec(60.0, Duration::from_secs(60)),
            &mut |_| {},
        ),
    )
    .await
    .expect("no report in time")
    .unwrap();
    assert_eq!(
        report.agents["careful"].jobs["gpumemprof_cpu"].status,
        JobStatus::Completed
    );
    careful.stop().await;
    coordinator.stop().await;
}
