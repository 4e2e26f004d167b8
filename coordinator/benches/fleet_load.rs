//! Coordinator load benchmark: a `fleetgate serve` process against N simulated agents on
//! loopback, each on its own gRPC connection, each streaming job progress events at a fixed
//! rate and then its job's report. Prints the coordinator's CPU use, peak RSS, the events it
//! ingested per second, the time from the last job result to the report reaching the client
//! (whole: all its chunks, checked; and when its first chunk came), and the report's size. Not a test: nothing here asserts a
//! figure.
//!
//! ```text
//! cargo bench -p fleetgate-coordinator --bench fleet_load -- [--agents 100,1000]
//!     [--rate 10] [--seconds 10] [--tls]
//! ```
//!
//! Plaintext by default (the coordinator's own cost); `--tls` runs every connection with
//! mutual TLS, each simulated agent presenting its own certificate from a lab CA.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetgate_common::config::{GateMode, Mode, Profile};
use fleetgate_common::convert;
use fleetgate_common::job::JobUpdate;
use fleetgate_common::report::RuntimeSection;
use fleetgate_common::run::{Asset, RunSpec, Selection};
use fleetgate_common::tls::{CertUse, CoordinatorLink, LabCa};
use fleetgate_coordinator::client;
use fleetgate_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::ClientTlsConfig;

struct Options {
    agents: Vec<usize>,
    rate: u64,
    seconds: u64,
    tls: bool,
}

fn options() -> Options {
    let mut o = Options {
        agents: vec![100, 1_000],
        rate: 10,
        seconds: 10,
        tls: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agents" => {
                o.agents = args
                    .next()
                    .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
                    .unwrap_or_default();
            }
            "--rate" => o.rate = args.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--seconds" => o.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--tls" => o.tls = true,
            _ => {}
        }
    }
    o
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / rustix::param::clock_ticks_per_second() as f64
}

/// A memory figure of a process from its `/proc/PID/status` (`VmHWM`, `VmRSS`), in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Peak RSS (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM")
}

/// A real runtime section (from a small real soak) that every simulated agent reports.
fn sample_section() -> RuntimeSection {
    let dir = std::env::temp_dir().join(format!("fleetgate-load-{}", std::process::id()));
    let job = fleetgate_agent::worker::WorkerInput {
        artifact_root: dir.clone(),
        job: fleetgate_common::job::JobSpec {
            runtime: fleetgate_common::runtime::RuntimeKind::GpumemprofCpu,
            device: None,
            workload: fleetgate_common::config::Workload {
                profile: Profile::Pr,
                mode: Mode::Soak,
                iterations: 1,
                allocation_kb: 1,
                kind: fleetgate_common::config::WorkloadKind::Reference,
            },
            knobs: fleetgate_common::knobs::RuntimeKnobs {
                sampling_interval_seconds: Some(60.0),
                ..Default::default()
            },
            scratch_root: None,
        },
    };
    let event = fleetgate_agent::worker::run_job_events(
        &job,
        &std::sync::atomic::AtomicBool::new(false),
        &|_| {},
    );
    std::fs::remove_dir_all(&dir).ok();
    match event {
        JobUpdate::Report { section } => *section,
        other => panic!("sample soak failed: {other:?}"),
    }
}

/// Why the first simulated agent that could not connect failed.
static FIRST_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// One simulated agent: registers, then for its job streams `rate` progress events a second
/// for `seconds` (`pace`), then the report. Returns when its stream ends.
async fn simulated_agent(
    link: CoordinatorLink,
    id: String,
    (rate, seconds): (u64, u64),
    report: Arc<pb::job_event::Body>,
    sent: Arc<AtomicU64>,
    last_result: Arc<std::sync::Mutex<Option<Instant>>>,
    failed: Arc<AtomicU64>,
) {
    let hello = pb::Hello {
        agent_id: id.clone(),
        agent_version: "load".into(),
        protocol_version: fleetgate_proto::PROTOCOL_VERSION,
        facts: Some(pb::HostFacts {
            hostname: id.clone(),
            cpu_model: "Simulated CPU".into(),
            cpu_cores: 8,
            memory_total_bytes: 32 << 30,
            ..Default::default()
        }),
        runtimes: vec![pb::RuntimeAvailability {
            runtime: "gpumemprof_cpu".into(),
            available: true,
            unavailable_reason: String::new(),
        }],
        ..Default::default()
    };
    // Like a real agent, retry a session that fails to open (10,000 agents dialling at once
    // overflow the listener's accept queue on a loaded machine), with a growing pause.
    let mut attempt = 0;
    let (tx, response) = loop {
        let (tx, rx) = mpsc::channel(1_024);
        tx.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(hello.clone())),
        })
        .await
        .ok();
        let opened = match link.endpoint().unwrap().connect().await {
            Ok(channel) => AgentServiceClient::new(channel)
                .session(ReceiverStream::new(rx))
                .await
                .map_err(|status| status.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match opened {
            Ok(response) => break (tx, response),
            Err(_) if attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => {
                FIRST_FAILURE.get_or_init(|| e);
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    let mut inbound = response.into_inner();
    while let Ok(Some(message)) = inbound.message().await {
        let Some(pb::coordinator_message::Body::AssignJob(assign)) = message.body else {
            continue;
        };
        let Some(job) = assign.job else { continue };
        let tx = tx.clone();
        let (report, sent, last_result) = (
            Arc::clone(&report),
            Arc::clone(&sent),
            Arc::clone(&last_result),
        );
        tokio::spawn(async move {
            let total = rate * seconds;
            let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            for (i, sequence) in (1..=total).enumerate() {
                ticker.tick().await;
                let update = JobUpdate::Progress {
                    phase: "soak".into(),
                    done: i as u64 + 1,
                    total,
                };
                let event = convert::job_event_to_pb(&job.job_id, sequence, &update);
                if tx
                    .send(pb::AgentMessage {
                        body: Some(pb::agent_message::Body::JobEvent(event)),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let event = pb::JobEvent {
                job_id: job.job_id.clone(),
                sequence: total + 1,
                body: Some((*report).clone()),
            };
            tx.send(pb::AgentMessage {
                body: Some(pb::agent_message::Body::JobEvent(event)),
            })
            .await
            .ok();
            sent.fetch_add(1, Ordering::Relaxed);
            *last_result.lock().unwrap() = Some(Instant::now());
        });
    }
}

/// Mutual TLS for one benchmark run: the lab CA and the coordinator's files.
struct LabTls {
    ca: LabCa,
    dir: tempfile::TempDir,
}

impl LabTls {
    fn new() -> Self {
        let ca = LabCa::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let server = ca
            .issue(&["127.0.0.1".to_owned()], CertUse::Server)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        LabTls { ca, dir }
    }

    fn serve_args(&self) -> Vec<String> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            path("server.pem"),
            "--tls-key".into(),
            path("server.key"),
            "--agent-ca".into(),
            path("ca.pem"),
        ]
    }

    /// Trust in the CA, with agent `id`'s own certificate if given.
    fn client(&self, id: Option<&str>) -> ClientTlsConfig {
        self.ca.client_tls(id).unwrap()
    }
}

async fn run(n: usize, rate: u64, seconds: u64, tls: bool, report: Arc<pb::job_event::Body>) {
    let lab = tls.then(LabTls::new);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let transport = match &lab {
        Some(lab) => lab.serve_args(),
        None => vec!["--plaintext".to_owned()],
    };
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--heartbeat-ms",
            "5000",
            // Room for every simulated agent whatever the default.
            "--max-agents",
            &n.max(1).to_string(),
        ])
        .args(&transport)
        // Quiet unless asked (`FLEETGATE_LOG=info` shows how long each report took to build).
        .env(
            "FLEETGATE_LOG",
            std::env::var("FLEETGATE_LOG").unwrap_or_else(|_| "error".to_owned()),
        )
        .spawn()
        .expect("start fleetgate serve");
    let pid = server.id();
    let link_for = |id: Option<&str>| match &lab {
        Some(lab) => CoordinatorLink::with_tls(format!("https://127.0.0.1:{port}"), lab.client(id)),
        None => CoordinatorLink::plaintext(format!("http://127.0.0.1:{port}")),
    };
    let link = link_for(None);
    while client::list_agents(&link, None).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle_rss = peak_rss(pid);
    let sent = Arc::new(AtomicU64::new(0));
    let last_result = Arc::new(std::sync::Mutex::new(None));
    let failed = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let id = format!("sim-{i:04}");
        tokio::spawn(simulated_agent(
            link_for(Some(&id)),
            id,
            (rate, seconds),
            Arc::clone(&report),
            Arc::clone(&sent),
            Arc::clone(&last_result),
            Arc::clone(&failed),
        ));
    }
    loop {
        let agents = client::list_agents(&link, None).await.unwrap_or_default();
        let connected = agents.iter().filter(|a| a.state == "connected").count();
        if connected >= n {
            break;
        }
        // An agent that gave up connecting never will: say so, do not wait.
        let failed = failed.load(Ordering::Relaxed);
        if failed > 0 && connected as u64 + failed >= n as u64 {
            println!(
                "agents {n:>5}: only {connected} connected, {failed} could not connect; the first: {}",
                FIRST_FAILURE.get().map_or("", String::as_str)
            );
            server.kill().ok();
            server.wait().ok();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the connected agents cost before any job runs.
    let connected_rss = status_bytes(pid, "VmRSS");
    let budgets = serde_json::json!({
        "version": "v0.4",
        "budgets": fleetgate_common::report::SOAK_METRICS.iter()
            .map(|m| (format!("gpumemprof_cpu.{m}"), serde_json::json!(1e18)))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
    });
    let spec = RunSpec {
        workload: fleetgate_common::config::Workload {
            profile: Profile::Pr,
            mode: Mode::Soak,
            iterations: 1,
            allocation_kb: 1,
            kind: fleetgate_common::config::WorkloadKind::Reference,
        },
        gate_mode: GateMode::Budget,
        runtimes: vec!["gpumemprof_cpu".into()],
        selection: Selection {
            min_agents: u32::try_from(n).unwrap_or(u32::MAX),
            ..Selection::default()
        },
        deadline: Some(Duration::from_secs(seconds * 4 + 60)),
        knobs: [(
            "gpumemprof_cpu".to_owned(),
            fleetgate_common::knobs::RuntimeKnobs {
                sampling_interval_seconds: Some(60.0),
                ..Default::default()
            },
        )]
        .into(),
        overhead_scratch_root: None,
        budgets: Some(Asset {
            name: "load-budgets.json".into(),
            bytes: budgets.to_string().into_bytes(),
            source: fleetgate_common::gate::AssetSource::Path,
        }),
        baseline: None,
        tolerances: None,
    };
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut first_chunk = None;
    let mut last_chunk = None;
    let report = client::submit(&link, None, &spec, &mut |event| {
        if matches!(event.body, Some(pb::run_event::Body::ReportChunk(_))) {
            first_chunk.get_or_insert_with(Instant::now);
            last_chunk = Some(Instant::now());
        }
    })
    .await;
    let report_at = Instant::now();
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let events = sent.load(Ordering::Relaxed);
    let last = last_result.lock().unwrap().unwrap_or(report_at);
    let since_last = |at: Option<Instant>| {
        at.unwrap_or(report_at)
            .saturating_duration_since(last)
            .as_secs_f64()
            * 1_000.0
    };
    match report {
        Ok(report) => println!(
            "agents {n:>5}: {events} events in {wall:.2} s = {:.0} events/s ingested; coordinator CPU {cpu:.2} s = {:.3} cores; peak RSS {:.1} MiB (idle {:.1} MiB, agents connected {:.1} MiB = {:.1} KiB per agent); last result → report {:.0} ms (chunks from {:.0} to {:.0} ms); report agents {}, {:.1} MB",
            events as f64 / wall,
            cpu / wall,
            peak_rss(pid) as f64 / (1 << 20) as f64,
            idle_rss as f64 / (1 << 20) as f64,
            connected_rss as f64 / (1 << 20) as f64,
            connected_rss.saturating_sub(idle_rss) as f64 / 1024.0 / n.max(1) as f64,
            report_at.saturating_duration_since(last).as_secs_f64() * 1_000.0,
            since_last(first_chunk),
            since_last(last_chunk),
            report.agents.len(),
            serde_json::to_vec(&report).map_or(0, |r| r.len()) as f64 / 1e6,
        ),
        Err(e) => println!("agents {n:>5}: run failed: {e}"),
    }
    server.kill().ok();
    server.wait().ok();
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Encoded once, as an agent encodes it: each real agent encodes its own section on its own
    // host, and encoding the same one 10,000 times here would take the coordinator's CPU in
    // the very second the benchmark times.
    let mut event = convert::job_event_to_pb(
        "",
        1,
        &JobUpdate::Report {
            section: Box::new(sample_section()),
        },
    );
    // Compressed, as agents send it to a coordinator of this build.
    convert::compress_section(&mut event);
    let report = Arc::new(event.body.expect("a report event"));
    println!(
        "== coordinator load: simulated agents on loopback, {} progress events/s each for {} s, then a report; {} ==",
        o.rate,
        o.seconds,
        if o.tls { "mutual TLS" } else { "plaintext" }
    );
    for n in o.agents {
        runtime.block_on(run(n, o.rate, o.seconds, o.tls, Arc::clone(&report)));
    }
}
