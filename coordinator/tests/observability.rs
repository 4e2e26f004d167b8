//! How operators watch a coordinator and its agents, checked with the clients they use: the
//! standard gRPC health service through Python's `grpcio-health-checking` client (plaintext
//! health port and the TLS main port, NOT_SERVING while draining), Prometheus metrics parsed
//! by the Python `prometheus_client` parser, JSON logs parsed line by line, and no ANSI
//! colours in redirected logs.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;
use support::cli::{fleetgate_async, text};
use support::fleet::{link, small_run, wait_for_agents};
use support::process::{Process, Serve, agent_command};
use support::tools::venv_program;
use support::{PATIENCE, eventually};

/// Asks a grpc.health.v1 server at `addr` (TLS with `ca` if given) for the status of the
/// server (`-`), both fleetgate services and an unknown one; one `service status` line each.
const HEALTH_CLIENT: &str = r#"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
addr = sys.argv[1]
if len(sys.argv) > 2:
    creds = grpc.ssl_channel_credentials(open(sys.argv[2], "rb").read())
    channel = grpc.secure_channel(addr, creds)
else:
    channel = grpc.insecure_channel(addr)
stub = health_pb2_grpc.HealthStub(channel)
for service in ["", "fleetgate.v1.AgentService", "fleetgate.v1.RunService", "no.such.Service"]:
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as e:
        status = e.code().name
    print(service or "-", status)
"#;

/// Scrapes each URL and parses it with prometheus_client's text parser; prints, per URL, the
/// content type and every sample as `name`, `labels`, `value`, and per family its type and
/// help text.
const SCRAPER: &str = r#"
import sys, json, urllib.request
from prometheus_client.parser import text_string_to_metric_families
out = {}
for url in sys.argv[1:]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        content_type = reply.headers.get("Content-Type")
        body = reply.read().decode()
    families = {}
    samples = []
    for family in text_string_to_metric_families(body):
        families[family.name] = {"type": family.type, "help": family.documentation}
        samples += [[s.name, s.labels, s.value] for s in family.samples]
    out[url] = {"content_type": content_type, "families": families, "samples": samples}
print(json.dumps(out))
"#;

/// Runs `script` with `args` in the test tools' Python; its stdout (it must exit 0).
async fn python(script: &str, args: &[String]) -> String {
    let mut command = venv_program("python");
    command.arg("-c").arg(script).args(args);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The address a process logged after `marker`.
async fn logged_addr(process: &Process, marker: &str) -> SocketAddr {
    eventually(
        marker,
        PATIENCE,
        async || process.after(marker).and_then(|a| a.parse().ok()),
        || process.text(),
    )
    .await
}

/// The value of the sample `name` whose labels include `labels`, if any.
fn sample(scrape: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape["samples"].as_array()?.iter().find_map(|s| {
        let matches = s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v));
        matches.then(|| s[2].as_f64()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_a_finished_run_parse_as_prometheus_and_health_is_serving() {
    let serve = Serve::start(
        &[
            "--plaintext",
            "--metrics-listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ],
        None,
    )
    .await;
    let coordinator_metrics =
        logged_addr(&serve.process, "Serving metrics at /metrics. addr=").await;
    let health = logged_addr(&serve.process, "Serving grpc.health.v1 without TLS. addr=").await;
    let work = tempfile::tempdir().unwrap();
    let mut command = agent_command(&serve.url(), "observed", work.path());
    command
        .args(["--plaintext", "--metrics-listen", "127.0.0.1:0"])
        .env("FLEETGATE_LOG", "info");
    let agent = Process::spawn(command);
    let agent_metrics = logged_addr(&agent, "Serving metrics at /metrics. addr=").await;
    let link = link(&serve.url());
    wait_for_agents(&link, None, &["observed"], || agent.text()).await;

    let statuses = python(HEALTH_CLIENT, &[health.to_string()]).await;
    assert_eq!(
        statuses.lines().collect::<Vec<_>>(),
        [
            "- SERVING",
            "fleetgate.v1.AgentService SERVING",
            "fleetgate.v1.RunService SERVING",
            "no.such.Service NOT_FOUND"
        ],
        "{statuses}"
    );

    let report = small_run(&link).await;
    let urls = [
        format!("http://{coordinator_metrics}/metrics"),
        format!("http://{agent_metrics}/metrics"),
    ];
    // The gauges are published at the coordinator's sweep: wait for the finished run there.
    let scrapes: Value = eventually(
        "the coordinator's gauges to show the finished run",
        PATIENCE,
        async || {
            let scrapes: Value = serde_json::from_str(&python(SCRAPER, &urls).await).unwrap();
            let kept = sample(
                &scrapes[&urls[0]],
                "fleetgate_coordinator_runs",
                &[("state", "finished_kept")],
            );
            (kept == Some(1.0)).then_some(scrapes)
        },
        || serve.process.text(),
    )
    .await;
    let coordinator = &scrapes[&urls[0]];
    let agent_scrape = &scrapes[&urls[1]];
    for scrape in [coordinator, agent_scrape] {
        assert_eq!(
            scrape["content_type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        // Prometheus naming: our prefix, counters end in _total, every family has help text.
        for (name, family) in scrape["families"].as_object().unwrap() {
            assert!(name.starts_with("fleetgate_"), "{name}");
            assert!(
                family["help"].as_str().is_some_and(|h| !h.is_empty()),
                "{name} has no help"
            );
        }
        for s in scrape["samples"].as_array().unwrap() {
            let family = &scrape["families"][s[0].as_str().unwrap().trim_end_matches("_total")];
            if family["type"] == "counter" {
                assert!(s[0].as_str().unwrap().ends_with("_total"), "{s}");
            }
        }
    }
    let verdict = report.verdict.name();
    assert_eq!(
        sample(
            coordinator,
            "fleetgate_coordinator_agents",
            &[("state", "connected")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            coordinator,
            "fleetgate_coordinator_runs_finished_total",
            &[("verdict", verdict)]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            coordinator,
            "fleetgate_coordinator_run_duration_seconds_count",
            &[("verdict", verdict)]
        ),
        Some(1.0)
    );
    let job = report.agents["observed"].jobs.values().next().unwrap();
    let events = job.events as f64;
    let ingested: f64 = coordinator["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == "fleetgate_coordinator_events_ingested_total")
        .map(|s| s[2].as_f64().unwrap())
        .sum();
    assert_eq!(ingested, events, "every stored event is counted once");
    assert!(sample(coordinator, "fleetgate_coordinator_acks_sent_total", &[]).unwrap() >= events);
    assert_eq!(
        sample(agent_scrape, "fleetgate_agent_connected", &[]),
        Some(1.0)
    );
    assert!(
        sample(
            agent_scrape,
            "fleetgate_agent_job_events_total",
            &[("kind", "report")]
        ) == Some(1.0)
    );
    assert!(sample(agent_scrape, "fleetgate_agent_acks_received_total", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(
            agent_scrape,
            "fleetgate_agent_runtime_collector_healthy",
            &[("runtime", "gpumemprof_cpu")]
        ),
        Some(1.0),
        "{}",
        agent_scrape["samples"]
    );
    assert!(
        sample(
            agent_scrape,
            "fleetgate_agent_runtime_samples",
            &[("runtime", "gpumemprof_cpu")]
        )
        .unwrap()
            > 0.0
    );
    drop(agent);
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_port_serves_health_and_a_draining_coordinator_reports_not_serving() {
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs");
    let made = fleetgate_async(&["certs", "--out", &certs.display().to_string()]).await;
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let cert = certs.join("coordinator.pem").display().to_string();
    let key = certs.join("coordinator.key").display().to_string();
    let serve = Serve::start(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--health-listen",
            "127.0.0.1:0",
            "--drain-seconds",
            "300",
        ],
        None,
    )
    .await;
    let health = logged_addr(&serve.process, "Serving grpc.health.v1 without TLS. addr=").await;
    // The main port, over TLS, with no token: health is not secret.
    let ca = certs.join("ca.pem").display().to_string();
    let main = format!("localhost:{}", serve.addr.port());
    let statuses = python(HEALTH_CLIENT, &[main, ca]).await;
    assert!(statuses.starts_with("- SERVING\n"), "{statuses}");
    assert!(statuses.contains("no.such.Service NOT_FOUND"), "{statuses}");

    let pid = rustix::process::Pid::from_raw(serve.process.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let drained = eventually(
        "the health port to report NOT_SERVING",
        PATIENCE,
        async || {
            let statuses = python(HEALTH_CLIENT, &[health.to_string()]).await;
            statuses.starts_with("- NOT_SERVING").then_some(statuses)
        },
        || serve.process.text(),
    )
    .await;
    assert!(
        drained.contains("fleetgate.v1.RunService NOT_SERVING"),
        "{drained}"
    );
    assert!(
        serve
            .process
            .said("Draining: health NOT_SERVING before shutdown.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_and_text_logs_have_no_colours_off_a_terminal() {
    for format in ["json", "text"] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
        support::cli::clean(&mut command);
        command
            .args([
                "--log-format",
                format,
                "serve",
                "--plaintext",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("FLEETGATE_LOG", "info")
            // Colours would be allowed by the environment: only the pipe forbids them.
            .env_remove("NO_COLOR");
        let serve = Process::spawn(command);
        eventually(
            "the coordinator to listen",
            PATIENCE,
            async || serve.said("Coordinator listening").then_some(()),
            || serve.text(),
        )
        .await;
        let logged = serve.text();
        assert!(
            !logged.contains('\u{1b}'),
            "ANSI escape in {format} logs: {logged:?}"
        );
        let lines: Vec<&str> = logged.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty());
        if format == "json" {
            for line in &lines {
                let object: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(
                    object["level"].is_string() && object["fields"]["message"].is_string(),
                    "{line}"
                );
            }
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("\"message\":\"Coordinator listening.\""))
            );
        } else {
            assert!(
                lines
                    .iter()
                    .all(|l| serde_json::from_str::<Value>(l).is_err())
            );
        }
        serve.stop().await;
    }
}
