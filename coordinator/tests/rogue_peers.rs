//! Rogue peers over real gRPC with mutual TLS on loopback: certificates from `fleetgate certs`;
//! a coordinator that requires agent certificates, an agent token and a client token, with
//! small limits; honest `fleetgate agent` processes; a rogue agent process with the wrong
//! token; an impostor holding the token and another agent's certificate; hand-driven rogue
//! sessions (events for jobs it was not given, repeated and skipped sequence numbers, an
//! oversized message, a flood); one agent too many; a run too many; clients that do not trust
//! the coordinator's CA or try plaintext; and `fleetgate run` / `fleetgate agents` as CI would
//! call them. The honest fleet's run completes with a report of the honest agents only.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_common::run::RunSpec;
use fleetgate_common::tls::{CoordinatorLink, LabCa, ServerTls};
use fleetgate_coordinator::client;
use fleetgate_coordinator::plan::RunError;
use fleetgate_coordinator::registry::CoordinatorSettings;
use fleetgate_proto::v1 as pb;
use pb::agent_message::Body;
use support::cli::{fleetgate_async, text, tiny_run};
use support::fleet::{fast_settings, in_process, wait_for_agents};
use support::hand_agent::{Session, session};
use support::process::{Process, agent_command};
use support::soak_spec;
use tonic::Code;
use tonic::transport::ClientTlsConfig;

const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
const CLIENT_TOKEN: &str = "client-token-fedcba9876543210";

/// The lab certificates made by `fleetgate certs` for this test.
struct Certs(PathBuf);

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// TLS settings trusting the lab CA, with a client certificate naming `cert_of` if given
    /// (issued by the same CA that `fleetgate certs` wrote).
    fn client_tls(&self, cert_of: Option<&str>) -> ClientTlsConfig {
        LabCa::load(self.read("ca.pem"), self.read("ca.key"))
            .unwrap()
            .client_tls(cert_of)
            .unwrap()
    }
}

/// `fleetgate agent` as `id`, presenting `cert_of`'s certificate (usually its own).
fn agent(
    url: &str,
    id: &str,
    cert_of: &str,
    certs: &Certs,
    dir: &Path,
    token: Option<&str>,
) -> Process {
    let mut command: Command = agent_command(url, id, &dir.join(id));
    command
        .arg("--ca-file")
        .arg(certs.path("ca.pem"))
        .arg("--cert-file")
        .arg(certs.path(&format!("agent-{cert_of}.pem")))
        .arg("--key-file")
        .arg(certs.path(&format!("agent-{cert_of}.key")));
    if let Some(token) = token {
        command.env("FLEETGATE_AGENT_TOKEN", token);
    }
    Process::spawn(command)
}

/// `fleetgate run` against the coordinator at `url`, trusting `ca`, of a tiny soak on three
/// agents.
fn run_args(
    url: &str,
    ca: &Path,
    out: &Path,
    artifacts: &Path,
    token_file: Option<&Path>,
) -> Vec<String> {
    let mut args: Vec<String> = tiny_run("soak", "gpumemprof_cpu")
        .into_iter()
        .chain([
            "--coordinator",
            url,
            "--check",
            "--min-agents",
            "3",
            "--output",
        ])
        .map(ToString::to_string)
        .collect();
    args.push(out.display().to_string());
    args.push("--ca-file".into());
    args.push(ca.display().to_string());
    args.push("--artifact-root".into());
    args.push(artifacts.display().to_string());
    if let Some(file) = token_file {
        args.push("--token-file".into());
        args.push(file.display().to_string());
    }
    args
}

/// Opens an agent session by hand as `id` with the agent token and `tls`; once welcomed, its
/// sender and inbound stream — or the status that refused it.
async fn raw_session(url: &str, tls: ClientTlsConfig, id: &str) -> Result<Session, tonic::Status> {
    let hello = pb::Hello {
        agent_id: id.to_owned(),
        protocol_version: fleetgate_proto::PROTOCOL_VERSION,
        ..pb::Hello::default()
    };
    let link = CoordinatorLink::with_tls(url.to_owned(), tls);
    session(&link, Some(Token::new(AGENT_TOKEN).unwrap()), hello).await
}

fn job_event(job_id: &str, sequence: u64) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(Body::JobEvent(pb::JobEvent {
            job_id: job_id.to_owned(),
            sequence,
            body: Some(pb::job_event::Body::Started(pb::JobStarted {
                worker_pid: 1,
            })),
        })),
    }
}

/// A tiny soak-only budget run of gpumemprof_cpu on three agents.
fn tiny_spec() -> RunSpec {
    let mut spec = soak_spec(60.0, Duration::from_secs(120));
    spec.selection.min_agents = 3;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_peers_are_refused_or_contained_and_the_honest_fleet_completes() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let made = fleetgate_async(&[
        "certs",
        "--out",
        &dir.join("certs").display().to_string(),
        "--agent",
        "a1,a2,a3,rogue,flooder,bulky,extra",
    ])
    .await;
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let certs = Certs(dir.join("certs"));
    let settings = CoordinatorSettings {
        agent_token: Some(Token::new(AGENT_TOKEN).unwrap()),
        client_token: Some(Token::new(CLIENT_TOKEN).unwrap()),
        max_agents: 5,
        max_runs: 1,
        agent_messages_per_second: 100,
        max_message_bytes: 1 << 20,
        tls: Some(
            ServerTls::load(
                &certs.path("coordinator.pem"),
                &certs.path("coordinator.key"),
                Some(&certs.path("ca.pem")),
            )
            .unwrap(),
        ),
        ..fast_settings()
    };
    let coordinator = in_process(settings).await;
    let url = coordinator.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let link = CoordinatorLink::with_tls(url.clone(), certs.client_tls(None));
    let client_token = Token::new(CLIENT_TOKEN).unwrap();

    // A rogue agent with the client's token (a wrong one) is refused and stops, saying why
    // without echoing what it sent.
    let (code, stderr) = agent(&url, "rogue", "rogue", &certs, dir, Some(CLIENT_TOKEN))
        .exit()
        .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the coordinator at {url} refused this agent: missing or wrong agent token"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(CLIENT_TOKEN), "token echoed: {stderr}");

    // An impostor with the join token and a1's certificate cannot register as a2 (nor take
    // over a2's jobs later): the certificate names the only id it may use.
    let (code, stderr) = agent(&url, "a2", "a1", &certs, dir, Some(AGENT_TOKEN))
        .exit()
        .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the coordinator at {url} refused this agent: agent id a2 is not named by this connection's client certificate (this coordinator requires one per agent: --agent-ca)"
        )),
        "{stderr}"
    );

    let honest: Vec<Process> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| agent(&url, id, id, &certs, dir, Some(AGENT_TOKEN)))
        .collect();
    let agents = wait_for_agents(&link, Some(&client_token), &["a1", "a2", "a3"], || {
        honest
            .iter()
            .map(Process::text)
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    let mut ids: Vec<&str> = agents.iter().map(|a| a.agent_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["a1", "a2", "a3"],
        "the rogue agent was never registered"
    );

    // A client that does not trust the coordinator's CA, or that tries plaintext, gets
    // nowhere; listing without the client token is refused.
    let untrusting = fleetgate_async(&["agents", "--coordinator", &url]).await;
    assert_eq!(
        untrusting.status.code(),
        Some(7),
        "{}",
        text(&untrusting.stderr)
    );
    assert!(
        text(&untrusting.stderr).contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        text(&untrusting.stderr)
    );
    let plain_url = url.replace("https://", "http://");
    let plaintext = fleetgate_async(&["agents", "--plaintext", "--coordinator", &plain_url]).await;
    assert_eq!(
        plaintext.status.code(),
        Some(7),
        "{}",
        text(&plaintext.stderr)
    );
    assert!(
        text(&plaintext.stderr).contains("(if the coordinator serves TLS, use https://)"),
        "{}",
        text(&plaintext.stderr)
    );
    let ca_file = certs.path("ca.pem").display().to_string();
    let listed = fleetgate_async(&["agents", "--ca-file", &ca_file, "--coordinator", &url]).await;
    assert_eq!(listed.status.code(), Some(2), "{}", text(&listed.stderr));
    assert_eq!(
        text(&listed.stderr),
        format!(
            "Error: the coordinator at {url} refused this client: missing or wrong client token (set --token-file or FLEETGATE_CLIENT_TOKEN)\n"
        )
    );

    // A token holder misbehaving: events for jobs it was never given, with repeated and
    // skipped sequence numbers, are ignored; then a flood closes its session with a status
    // before the flood reaches the registry.
    let (rogue_tx, mut rogue_in) = raw_session(&url, certs.client_tls(Some("flooder")), "flooder")
        .await
        .unwrap();
    for sequence in [1, 1, 7, 3] {
        rogue_tx.send(job_event("run-0-0", sequence)).await.unwrap();
    }
    let flood = tokio::spawn(async move {
        let heartbeat = pb::AgentMessage {
            body: Some(Body::Heartbeat(pb::Heartbeat::default())),
        };
        for _ in 0..100_000 {
            if rogue_tx.send(heartbeat.clone()).await.is_err() {
                break;
            }
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rogue_in.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the flooder's session ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the flood was not stopped");
    assert_eq!(closed.code(), Code::ResourceExhausted, "{closed:?}");
    assert_eq!(
        closed.message(),
        "agent flooder sent more than 100 messages per second; reconnect and resend from the acknowledged point"
    );
    flood.abort();

    // A message over the size limit ends the sender's stream with OUT_OF_RANGE.
    let (bulky_tx, mut bulky_in) = raw_session(&url, certs.client_tls(Some("bulky")), "bulky")
        .await
        .unwrap();
    let oversized = pb::AgentMessage {
        body: Some(Body::JobEvent(pb::JobEvent {
            job_id: "run-0-0".into(),
            sequence: 1,
            body: Some(pb::job_event::Body::Report(pb::RuntimeReport {
                section_json: "x".repeat(2 << 20),
                section_json_deflate: Vec::new(),
            })),
        })),
    };
    bulky_tx.send(oversized).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match bulky_in.message().await {
                Ok(Some(_)) => {}
                other => break other,
            }
        }
    })
    .await
    .expect("the oversized message did not end the stream");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    drop(bulky_tx);

    // The sixth agent id is one too many.
    let refused = raw_session(&url, certs.client_tls(Some("extra")), "extra")
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "this coordinator already knows 5 agents, its limit (--max-agents); a lost agent is forgotten 3600 s after its last message (--lost-agent-ttl-seconds)"
    );

    // One run at a time: a second submission while the first is in progress is refused.
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let task_link = link.clone();
    let first = tokio::spawn(async move {
        let mut accepted_tx = Some(accepted_tx);
        let token = Token::new(CLIENT_TOKEN).unwrap();
        let spec = tiny_spec();
        client::submit(&task_link, Some(&token), &spec, &mut |e| {
            if matches!(e.body, Some(pb::run_event::Body::Accepted(_)))
                && let Some(tx) = accepted_tx.take()
            {
                tx.send(()).ok();
            }
        })
        .await
    });
    accepted_rx.await.unwrap();
    match client::submit(&link, Some(&client_token), &tiny_spec(), &mut |_| {}).await {
        Err(RunError::Inconclusive(m)) => assert_eq!(
            m,
            "1 runs are in progress, this coordinator's limit (--max-runs); submit again when one ends"
        ),
        other => panic!("{other:?}"),
    }
    let report = first.await.unwrap().unwrap();
    assert_eq!(
        report.agents.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a1", "a2", "a3"]
    );

    // A run without the token is refused before anything is dispatched; with it, the three
    // honest agents complete it.
    let out = dir.join("report.json");
    let artifacts = dir.join("client-artifacts");
    let ca = certs.path("ca.pem");
    let refused = fleetgate_async(&run_args(&url, &ca, &out, &artifacts, None)).await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("refused this client: missing or wrong client token"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!out.exists());

    let token_file = dir.join("client.token");
    std::fs::write(&token_file, format!("{CLIENT_TOKEN}\n")).unwrap();
    let accepted = fleetgate_async(&run_args(&url, &ca, &out, &artifacts, Some(&token_file))).await;
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}\n{}",
        text(&accepted.stdout),
        text(&accepted.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let agents = report["agents"]
        .as_object()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        agents.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a1", "a2", "a3"],
        "{report}"
    );
    assert!(
        agents.values().all(|a| a["status"] == "completed"),
        "{report}"
    );
    assert_eq!(report["verdict"], "pass", "{report}");
    coordinator.shutdown().await;
}
