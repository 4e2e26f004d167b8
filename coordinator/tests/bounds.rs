//! The coordinator stays bounded whatever its peers send, over real sockets with real
//! processes: a `fleetgate serve` process (its descriptors read from `/proc`, its log from its
//! stderr) against hostile `Hello`s at every limit, many finished runs, sockets that never
//! speak (under a low descriptor limit), stalled TLS handshakes and idle connections; two
//! `fleetgate agent` processes with one id; and run bounds refused with exact lines, locally
//! and over the wire. `fleetgate agents` answers throughout.

mod support;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use fleetgate_common::report::{JobStatus, RuntimeSection, Verdict};
use fleetgate_common::tls::CoordinatorLink;
use fleetgate_common::{config, convert};
use fleetgate_coordinator::client;
use fleetgate_proto::v1 as pb;
use support::cli::{fleetgate_async, text};
use support::fleet::{link, run_client, submit_in_background, wait_for_agents, wait_for_soak};
use support::hand_agent::{Session, answer_every_job, session};
use support::process::{Serve, plaintext_agent};
use support::{PATIENCE, eventually, soak_spec};
use tonic::Code;

/// `fleetgate agents --json` against a plaintext coordinator: its agent ids, checking it
/// answered.
async fn listed(url: &str) -> Vec<String> {
    let out = fleetgate_async(&["agents", "--plaintext", "--coordinator", url, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A `Hello` at every limit a coordinator keeps: 32 labels of 64-byte keys and 256-byte
/// values, and facts at their limits.
fn hostile_hello(id: &str) -> pb::Hello {
    let labels = (0..convert::MAX_LABELS)
        .map(|i| {
            (
                format!("{i:02}{}", "k".repeat(convert::MAX_LABEL_KEY_BYTES - 2)),
                "v".repeat(convert::MAX_LABEL_VALUE_BYTES),
            )
        })
        .collect();
    let fact = "f".repeat(convert::MAX_FACT_BYTES);
    let hello = pb::Hello {
        agent_id: id.to_owned(),
        agent_version: fact.clone(),
        protocol_version: fleetgate_proto::PROTOCOL_VERSION,
        facts: Some(pb::HostFacts {
            hostname: fact.clone(),
            os: fact.clone(),
            kernel: fact.clone(),
            cpu_model: fact.clone(),
            cpu_cores: 1,
            gpu_unavailable_reason: "r".repeat(convert::MAX_REASON_BYTES),
            tensorflow_unavailable_reason: "r".repeat(convert::MAX_REASON_BYTES),
            ..pb::HostFacts::default()
        }),
        labels,
        hardware_class: fact,
        ..pb::Hello::default()
    };
    assert_eq!(convert::check_hello(&hello), Ok(()));
    hello
}

/// A plaintext agent session saying `hello`, once welcomed, or the status that refused it.
async fn plaintext_session(url: &str, hello: pb::Hello) -> Result<Session, tonic::Status> {
    session(&link(url), None, hello).await
}

/// An agent that finishes every job it is given at once, with an "unavailable" section.
async fn instant_agent(url: &str, id: &str) -> tokio::task::JoinHandle<()> {
    let hello = pb::Hello {
        agent_id: id.to_owned(),
        protocol_version: fleetgate_proto::PROTOCOL_VERSION,
        facts: Some(pb::HostFacts {
            hostname: id.to_owned(),
            cpu_model: "Test CPU".into(),
            cpu_cores: 2,
            ..pb::HostFacts::default()
        }),
        ..pb::Hello::default()
    };
    answer_every_job(
        plaintext_session(url, hello).await.unwrap(),
        Duration::from_millis(200),
        RuntimeSection::unavailable("instant test agent"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hellos_and_many_finished_runs_leave_the_coordinator_bounded() {
    let serve = Serve::start(
        &[
            "--plaintext",
            "--heartbeat-ms",
            "500",
            "--lost-agent-ttl-seconds",
            "1",
            "--max-finished-runs",
            "3",
            "--connection-idle-seconds",
            "5",
        ],
        None,
    )
    .await;
    let url = serve.url();
    let _worker = instant_agent(&url, "worker").await;
    let idle_descriptors = serve.process.descriptors();

    // One over a limit is refused with one line naming the field and the limit.
    let mut over = hostile_hello("over");
    over.labels
        .insert("zz".into(), "v".repeat(convert::MAX_LABEL_VALUE_BYTES));
    let refused = plaintext_session(&url, over).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "labels: 33 labels, more than the limit of 32"
    );

    // 200 hostile agents at every limit, each on its own connection, heartbeating.
    let mut hostile = Vec::new();
    for i in 0..200 {
        let (tx, inbound) = plaintext_session(&url, hostile_hello(&format!("hostile-{i:03}")))
            .await
            .unwrap();
        let beat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let heartbeat = pb::agent_message::Body::Heartbeat(pb::Heartbeat::default());
                if tx
                    .send(pb::AgentMessage {
                        body: Some(heartbeat),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        hostile.push((beat, inbound));
    }
    let ids = listed(&url).await;
    assert_eq!(ids.len(), 201, "{ids:?}");
    assert!(serve.process.descriptors() >= idle_descriptors + 200);

    // Five finished runs on the worker: the last three reports are kept, the first two say
    // they were dropped.
    let link = link(&url);
    let mut run_ids = Vec::new();
    for _ in 0..5 {
        let mut spec = soak_spec(60.0, Duration::from_secs(60));
        spec.selection.agent_ids = vec!["worker".into()];
        let mut run_id = String::new();
        let report = client::submit(&link, None, &spec, &mut |e| {
            run_id.clone_from(&e.run_id);
        })
        .await
        .unwrap();
        assert_eq!(report.verdict, Verdict::Inconclusive);
        run_ids.push(run_id);
    }
    let mut runs = run_client(&link).await;
    for (i, run_id) in run_ids.iter().enumerate() {
        let fetched = runs
            .get_report(pb::GetReportRequest {
                run_id: run_id.clone(),
            })
            .await;
        if i < 2 {
            let status = fetched.unwrap_err();
            assert_eq!(status.code(), Code::NotFound);
            assert_eq!(
                status.message(),
                format!(
                    "run {run_id} finished, but its report is no longer kept (this coordinator keeps the last 3 finished runs for 86400 s: --max-finished-runs, --finished-run-ttl-seconds)"
                )
            );
        } else {
            let json = fetched.unwrap().into_inner().report_json;
            assert!(json.contains("\"verdict\""), "{json}");
        }
    }
    drop(runs);

    // The hostile agents leave: they are lost, then forgotten, and their connections closed.
    for (beat, inbound) in hostile {
        beat.abort();
        drop(inbound);
    }
    let last = std::sync::Mutex::new(Vec::new());
    eventually(
        "only the worker to be listed",
        PATIENCE,
        async || {
            let ids = listed(&url).await;
            let only_worker = ids == ["worker"];
            *last.lock().unwrap() = ids;
            only_worker.then_some(())
        },
        || format!("{:?}", last.lock().unwrap()),
    )
    .await;
    descriptors_back_to(&serve, idle_descriptors + 2).await;
}

/// Waits (at most [`PATIENCE`]) until the coordinator holds at most `before` descriptors
/// again, the connections of clients that have gone closed on its side too; the count then.
async fn descriptors_back_to(serve: &Serve, before: usize) -> usize {
    eventually(
        &format!("the coordinator's descriptors to return to {before}"),
        PATIENCE,
        async || {
            let now = serve.process.descriptors();
            (now <= before).then_some(now)
        },
        || serve.process.text(),
    )
    .await
}

/// Reads what the coordinator sends on `socket` (its HTTP/2 settings, say) until it closes
/// the connection: `"closed"`, or what happened instead within [`PATIENCE`].
fn closed_by_peer(mut socket: std::net::TcpStream) -> String {
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buffer = [0; 1_024];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return "closed".into(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return "closed".into(),
            Err(e) => return e.to_string(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_and_agents_answers_under_a_low_descriptor_limit() {
    let serve = Serve::start(
        &[
            "--plaintext",
            "--connection-setup-seconds",
            "2",
            "--connection-idle-seconds",
            "2",
        ],
        Some(64),
    )
    .await;
    let url = serve.url();
    let fresh = serve.process.descriptors();
    assert!(listed(&url).await.is_empty());
    let idle_descriptors = descriptors_back_to(&serve, fresh).await;

    // More silent sockets than the coordinator has descriptors.
    let silent: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(serve.addr).unwrap())
        .collect();
    // A legitimate client still gets its answer.
    assert!(listed(&url).await.is_empty());
    // Every silent socket is closed by the coordinator.
    let closed = tokio::task::spawn_blocking(move || {
        silent.into_iter().map(closed_by_peer).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(closed.iter().all(|c| c == "closed"), "{closed:?}");
    descriptors_back_to(&serve, idle_descriptors).await;

    // A connection that made a call and then sits idle is closed too.
    let mut runs = run_client(&link(&url)).await;
    runs.list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap();
    assert!(serve.process.descriptors() > idle_descriptors);
    descriptors_back_to(&serve, idle_descriptors).await;
    drop(runs);
    assert!(
        serve
            .process
            .text()
            .contains("Cannot accept connections; retrying.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_closed() {
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let made = fleetgate_async(&["certs", "--out", &certs.display().to_string()]).await;
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let path = |name: &str| certs.join(name).display().to_string();
    let (cert, key) = (path("coordinator.pem"), path("coordinator.key"));
    let serve = Serve::start(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--connection-setup-seconds",
            "2",
        ],
        None,
    )
    .await;
    let url = serve.url();
    let ca = path("ca.pem");
    let agents = ["agents", "--ca-file", &ca, "--coordinator", &url];
    let fresh = serve.process.descriptors();
    assert_eq!(fleetgate_async(&agents).await.status.code(), Some(0));
    let idle_descriptors = descriptors_back_to(&serve, fresh).await;
    // One socket never speaks; one starts a TLS record and stops.
    let silent = std::net::TcpStream::connect(serve.addr).unwrap();
    let mut stalled = std::net::TcpStream::connect(serve.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let closed = tokio::task::spawn_blocking(move || [silent, stalled].map(closed_by_peer))
        .await
        .unwrap();
    assert_eq!(closed, ["closed", "closed"]);
    descriptors_back_to(&serve, idle_descriptors).await;
    assert_eq!(fleetgate_async(&agents).await.status.code(), Some(0));
    descriptors_back_to(&serve, idle_descriptors).await;

    // A TLS connection that made a call is established: it outlives the setup limit (it is
    // only closed when idle, after 60 s).
    let tls = fleetgate_common::tls::LabCa::load(
        std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        std::fs::read_to_string(certs.join("ca.key")).unwrap(),
    )
    .unwrap()
    .client_tls(None)
    .unwrap();
    let mut runs = run_client(&CoordinatorLink::with_tls(url.clone(), tls)).await;
    runs.list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap();
    let open = serve.process.descriptors();
    assert!(open > idle_descriptors);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(serve.process.descriptors(), open);
    runs.list_agents(pb::ListAgentsRequest::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_the_same_id_is_refused_and_the_first_keeps_its_run() {
    let work = tempfile::tempdir().unwrap();
    let serve = Serve::start(&["--plaintext", "--heartbeat-ms", "200"], None).await;
    let url = serve.url();
    let first = plaintext_agent(&url, "twin", &work.path().join("first"), &[]);
    wait_for_agents(&link(&url), None, &["twin"], || first.text()).await;

    // A run on the first agent, followed until its soak is under way.
    let (run, events) = submit_in_background(link(&url), soak_spec(0.05, Duration::from_secs(120)));
    wait_for_soak(&events, "twin", || first.text()).await;

    // The clone is refused and stops; both sides name the id and the other's address.
    let (code, stderr) = plaintext_agent(&url, "twin", &work.path().join("second"), &[])
        .exit()
        .await;
    assert_eq!(code, Some(1), "{stderr}");
    let line = serve
        .process
        .text()
        .lines()
        .find(|l| l.contains("Agent refused: its id already has a live session from another peer."))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "no refusal in the coordinator's log:\n{}",
                serve.process.text()
            )
        });
    let field = |name: &str| {
        line.split(&format!(" {name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_owned()
    };
    assert_eq!(field("agent_id"), "twin", "{line}");
    let (holder, peer) = (field("holder"), field("peer"));
    assert!(
        holder.starts_with("127.0.0.1:") && peer.starts_with("127.0.0.1:"),
        "{line}"
    );
    assert_ne!(holder, peer);
    assert!(
        stderr.contains(&format!(
            "the coordinator at {url} refused this agent: agent id twin already has a live session from {holder} (two agents with one id? give each its own --agent-id)"
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("refused this agent"))
            .count(),
        1,
        "{stderr}"
    );

    // The first agent never lost its session: its run completes and passes.
    let report = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let job = &report.agents["twin"].jobs["gpumemprof_cpu"];
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{:#?}",
        report.failure_diagnostics
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_bounds_and_hello_limits_are_refused_with_exact_lines() {
    // Locally, before anything starts: exit 2 and one line naming the flag.
    for (flag, value, line) in [
        (
            "--deadline-seconds",
            "0",
            "Error: --deadline-seconds: must be from 1 to 604800, got 0\n",
        ),
        (
            "--deadline-seconds",
            "18446744073709551615",
            "Error: --deadline-seconds: must be from 1 to 604800, got 18446744073709551615\n",
        ),
        (
            "--deadline-seconds",
            "604801",
            "Error: --deadline-seconds: must be from 1 to 604800, got 604801\n",
        ),
        (
            "--iterations",
            "0",
            "Error: --iterations: must be from 1 to 10000000, got 0\n",
        ),
        (
            "--allocation-kb",
            "4294967295",
            "Error: --allocation-kb: must be from 1 to 1048576, got 4294967295\n",
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("report.json");
        let artifacts = work.path().join("artifacts");
        let refused = fleetgate_async(&[
            "run",
            flag,
            value,
            "--output",
            &out.display().to_string(),
            "--artifact-root",
            &artifacts.display().to_string(),
        ])
        .await;
        assert_eq!(refused.status.code(), Some(2), "{flag} {value}");
        assert_eq!(text(&refused.stderr), line);
        assert!(!out.exists());
        assert!(!work.path().join("artifacts").exists());
    }

    // Remotely: INVALID_ARGUMENT naming the field, and the coordinator carries on.
    let work = tempfile::tempdir().unwrap();
    let serve = Serve::start(&["--plaintext"], None).await;
    let url = serve.url();
    let link = link(&url);
    let mut runs = run_client(&link).await;
    let valid = pb::SubmitRunRequest::from(&soak_spec(60.0, Duration::from_secs(60)));
    for (change, line) in [
        (
            (|r: &mut pb::SubmitRunRequest| r.deadline_ms = u64::MAX) as fn(&mut _),
            "deadline_ms: must be from 1 to 604800000, got 18446744073709551615 (0: the coordinator's default)",
        ),
        (
            |r| r.workload_spec.as_mut().unwrap().allocation_kb = u32::MAX,
            "allocation_kb: must be from 1 to 1048576, got 4294967295",
        ),
        (
            |r| r.workload_spec.as_mut().unwrap().iterations = config::MAX_ITERATIONS + 1,
            "iterations: must be from 1 to 10000000, got 10000001",
        ),
    ] {
        let mut request = valid.clone();
        change(&mut request);
        let status = runs.submit_run(request).await.map(|_| ()).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), line);
    }
    drop(runs);

    // An agent whose labels are over a limit is refused and stops, saying which.
    let value = "v".repeat(300);
    let (code, stderr) = plaintext_agent(
        &url,
        "labelled",
        work.path(),
        &["--label", &format!("team={value}")],
    )
    .exit()
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the coordinator at {url} refused this agent: labels: value of \\\"team\\\" is 300 bytes, more than the limit of 256"
        )),
        "{stderr}"
    );
    assert!(listed(&url).await.is_empty());
}
