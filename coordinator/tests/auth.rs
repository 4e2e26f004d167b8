//! Tokens over real gRPC on loopback: a coordinator that requires an agent token and a client
//! token, honest `fleetgate agent` processes that present the agent token, a rogue agent that
//! does not, and `fleetgate run` / `fleetgate agents` as CI would call them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_coordinator::client;
use fleetgate_coordinator::registry::CoordinatorSettings;
use fleetgate_coordinator::service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
const CLIENT_TOKEN: &str = "client-token-fedcba9876543210";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `fleetgate agent` process; killed when dropped.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn agent(url: &str, id: &str, dir: &Path, token: Option<&str>) -> AgentProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    cmd.arg("agent")
        .args(["--coordinator", url, "--agent-id", id])
        .args(["--reconnect-max-ms", "300"])
        .arg("--artifact-root")
        .arg(dir.join(id).join("artifacts"))
        .arg("--state-dir")
        .arg(dir.join(id).join("state"))
        .env("FLEETGATE_LOG", "warn")
        .env_remove("FLEETGATE_AGENT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("FLEETGATE_AGENT_TOKEN", token);
    }
    AgentProcess(cmd.spawn().unwrap())
}

/// `fleetgate <args>` from the repository root, off the async runtime.
async fn fleetgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .current_dir(repo())
            .env("FLEETGATE_LOG", "warn")
            .env_remove("FLEETGATE_CLIENT_TOKEN")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn run_args(url: &str, out: &Path, artifacts: &Path, token_file: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--coordinator",
        url,
        "--mode",
        "soak",
        "--check",
        "--runtimes",
        "gpumemprof_cpu",
        "--iterations",
        "50",
        "--set",
        "gpumemprof_cpu.sampling_interval_seconds=60",
        "--min-agents",
        "3",
        "--output",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.push(out.display().to_string());
    args.push("--artifact-root".into());
    args.push(artifacts.display().to_string());
    if let Some(file) = token_file {
        args.push("--token-file".into());
        args.push(file.display().to_string());
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_token_holders_join_or_submit_and_the_honest_fleet_completes() {
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_millis(200),
        sweep_interval: Duration::from_millis(50),
        agent_token: Some(Token::new(AGENT_TOKEN).unwrap()),
        client_token: Some(Token::new(CLIENT_TOKEN).unwrap()),
        ..CoordinatorSettings::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = service::serve(listener, settings, CancellationToken::new()).unwrap();
    let url = coordinator.url();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let client_token = Token::new(CLIENT_TOKEN).unwrap();

    // A rogue agent with the client's token (a wrong one) is refused and stops, saying why
    // without echoing what it sent.
    let mut rogue = agent(&url, "rogue", dir, Some(CLIENT_TOKEN));
    let status = tokio::task::spawn_blocking(move || {
        let status = rogue.0.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(rogue.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    let (status, stderr) = status;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the coordinator at {url} refused this agent: missing or wrong agent token"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(CLIENT_TOKEN), "token echoed: {stderr}");

    let _honest: Vec<AgentProcess> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| agent(&url, id, dir, Some(AGENT_TOKEN)))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let agents = loop {
        let agents = client::list_agents(&url, Some(&client_token))
            .await
            .unwrap();
        if agents.iter().filter(|a| a.state == "connected").count() == 3 {
            break agents;
        }
        assert!(tokio::time::Instant::now() < deadline, "{agents:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ids: Vec<&str> = agents.iter().map(|a| a.agent_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["a1", "a2", "a3"],
        "the rogue agent was never registered"
    );

    // Listing without the client token is refused.
    let listed = fleetgate(vec!["agents".into(), "--coordinator".into(), url.clone()]).await;
    assert_eq!(listed.status.code(), Some(2), "{}", text(&listed.stderr));
    assert_eq!(
        text(&listed.stderr),
        format!(
            "Error: the coordinator at {url} refused this client: missing or wrong client token (set --token-file or FLEETGATE_CLIENT_TOKEN)\n"
        )
    );

    // A run without the token is refused before anything is dispatched; with it, the three
    // honest agents complete it.
    let out = dir.join("report.json");
    let artifacts = dir.join("client-artifacts");
    let refused = fleetgate(run_args(&url, &out, &artifacts, None)).await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("refused this client: missing or wrong client token"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!out.exists());

    let token_file = dir.join("client.token");
    std::fs::write(&token_file, format!("{CLIENT_TOKEN}\n")).unwrap();
    let accepted = fleetgate(run_args(&url, &out, &artifacts, Some(&token_file))).await;
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
