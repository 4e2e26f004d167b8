//! `fleetgate`: the CLI that CI calls, and the coordinator server.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fleetgate_agent::worker::WorkerCommand;
use fleetgate_common::auth::Token;
use fleetgate_common::config::{GateMode, Profile, Workload};
use fleetgate_common::input::one_line;
use fleetgate_common::knobs::{Knobs, apply_knob_assignment, parse_knobs_file};
use fleetgate_common::report::{Report, Verdict, baseline_document};
use fleetgate_common::run::{Asset, RunSpec, Selection};
use fleetgate_common::runtime::RuntimeKind;
use fleetgate_common::tls::{
    ClientTlsFiles, CoordinatorLink, LabSetError, LabSetRequest, ServerTls, write_lab_set,
};
use fleetgate_common::{exit, telemetry};
use fleetgate_coordinator::client::{self, EmbeddedAgent};
use fleetgate_coordinator::plan::{self, RunError};
use fleetgate_coordinator::registry::CoordinatorSettings;
use fleetgate_coordinator::{output, service};
use fleetgate_proto::v1 as pb;

/// fleetgate: qualify always-on memory monitoring on this host and across a fleet.
#[derive(Debug, Parser)]
#[command(version, about)]
#[deny(missing_docs)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
enum Command {
    /// Run the v0.4 harness on a fleet (or, without --coordinator, on this host through an
    /// embedded coordinator and local agent) and gate the report.
    Run(Box<RunArgs>),
    /// Serve the coordinator: agents dial in, CLI clients submit runs.
    Serve(ServeArgs),
    /// List the agents a coordinator knows, with their facts and runtimes.
    Agents(AgentsArgs),
    /// Make a throwaway certificate authority for a lab, the coordinator's server certificate
    /// and one client certificate per agent (PEM files; keys readable by the owner only).
    Certs(CertsArgs),
    /// Run an agent daemon from this binary (the same agent as `fleetgate-agent run`).
    Agent(fleetgate_agent::daemon::DaemonArgs),
    /// Run one job in this process (used by the embedded agent; reads the job on stdin).
    #[command(hide = true)]
    Worker {
        /// Only probe which runtimes can run here, and print that as JSON.
        #[arg(long)]
        probe: bool,
    },
}

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct RunArgs {
    /// Coordinator URL (e.g. https://coordinator:7400); without it, an embedded coordinator
    /// and a local agent run the jobs on this host, over TLS on loopback.
    #[arg(long, env = "FLEETGATE_COORDINATOR")]
    coordinator: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    workload: Workload,
    /// Gate: absolute budgets, or a baseline plus tolerances.
    #[arg(long, value_enum, default_value = "budget")]
    gate_mode: GateMode,
    /// Budget file (budget gate) [default: the built-in copy of
    /// docs/benchmarks/v0.4_operating_budget.json].
    #[arg(long)]
    budgets: Option<PathBuf>,
    /// Baseline file (regression gate) [default for pr: the built-in copy of
    /// docs/benchmarks/v0.4_baseline.json].
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Tolerance file (regression gate) [default for pr: the built-in copy of
    /// docs/benchmarks/v0.4_tolerances.json].
    #[arg(long)]
    tolerances: Option<PathBuf>,
    /// Root of the per-runtime artifact directories (embedded agent).
    #[arg(long, default_value = "artifacts/benchmarks/operability")]
    artifact_root: PathBuf,
    /// RAM-backed directory for overhead trial files on the agents' hosts.
    #[arg(long)]
    overhead_scratch_root: Option<String>,
    /// Report path.
    #[arg(long, default_value = "artifacts/benchmarks/latest_v0.4.json")]
    output: PathBuf,
    /// Exit 4 when the gate fails and 6 when the verdict is inconclusive.
    #[arg(long)]
    check: bool,
    /// Comma-separated runtimes to run (also tfmemprof_gpu, on hosts whose TensorFlow sees a GPU).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gpumemprof_cpu,tfmemprof_cpu"
    )]
    runtimes: Vec<String>,
    /// Comma-separated agent ids to run on (default: every connected agent).
    #[arg(long, value_delimiter = ',')]
    agents: Vec<String>,
    /// Only agents with this label, as KEY=VALUE (repeatable).
    #[arg(long = "labels", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Only agents of this hardware class.
    #[arg(long)]
    hardware_class: Option<String>,
    /// Refuse the run (exit 6) unless at least this many agents match.
    #[arg(long, default_value_t = 1)]
    min_agents: u32,
    /// Whole-run deadline in seconds, 1 to 604800 (7 days) [default: 30 min for pr, 2 h for
    /// nightly].
    #[arg(long)]
    deadline_seconds: Option<u64>,
    /// Tuning knobs file: a JSON object mapping each runtime to an object of knob values.
    #[arg(long)]
    knobs: Option<PathBuf>,
    /// One tuning knob as RUNTIME.KNOB=VALUE (repeatable; overrides --knobs).
    #[arg(long = "set", value_name = "RUNTIME.KNOB=VALUE")]
    set: Vec<String>,
    /// Also write a Markdown summary here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write a JUnit XML file here (one test case per check).
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Record this run's config and metrics as a regression baseline file here (an
    /// intentional baseline refresh; review the numbers before committing it).
    #[arg(long)]
    write_baseline: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct ServeArgs {
    /// Address to listen on (loopback by default; opt in to wider binds).
    #[arg(long, env = "FLEETGATE_LISTEN", default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Heartbeat interval told to agents, in milliseconds (an agent silent for 3× is lost).
    #[arg(long, default_value_t = 2_000)]
    heartbeat_ms: u64,
    /// File holding the token agents must present [default: the FLEETGATE_AGENT_TOKEN
    /// environment variable, else none: any agent that reaches the port may join].
    #[arg(long, env = "FLEETGATE_AGENT_TOKEN_FILE")]
    agent_token_file: Option<PathBuf>,
    /// File holding the token clients must present to submit runs or list agents [default:
    /// the FLEETGATE_CLIENT_TOKEN environment variable, else none].
    #[arg(long, env = "FLEETGATE_CLIENT_TOKEN_FILE")]
    client_token_file: Option<PathBuf>,
    /// Most agent ids this coordinator keeps; a new agent beyond it is refused.
    #[arg(long, default_value_t = 1_000)]
    max_agents: usize,
    /// Seconds a lost or disconnected agent is kept after its last message before it is
    /// forgotten (unless a run in progress includes it).
    #[arg(long, default_value_t = 3_600)]
    lost_agent_ttl_seconds: u64,
    /// Most runs in progress at once; a submission beyond it is refused (exit 6).
    #[arg(long, default_value_t = 8)]
    max_runs: usize,
    /// Most finished runs whose reports are kept for `GetReport` (oldest dropped first).
    #[arg(long, default_value_t = 100)]
    max_finished_runs: usize,
    /// Seconds a finished run's report is kept.
    #[arg(long, default_value_t = 86_400)]
    finished_run_ttl_seconds: u64,
    /// Most MiB of finished reports kept (oldest dropped first; the newest is always kept).
    #[arg(long, default_value_t = 64)]
    max_finished_report_mib: usize,
    /// Seconds a new connection has to make its first call (TLS handshake and HTTP/2 preface
    /// included) before it is closed, 1 to 3600.
    #[arg(long, default_value_t = 10)]
    connection_setup_seconds: u64,
    /// Seconds a connection may stay open with no call in progress before it is closed, 1 to
    /// 86400.
    #[arg(long, default_value_t = 60)]
    connection_idle_seconds: u64,
    /// Sustained messages per second one agent may send (ten seconds' worth in a burst); an
    /// agent over it has its session closed and reconnects.
    #[arg(long, default_value_t = 1_000)]
    agent_messages_per_second: u32,
    /// Largest message accepted from an agent or a client, in MiB; a larger one ends its
    /// stream with OUT_OF_RANGE.
    #[arg(long, default_value_t = 16)]
    max_message_mib: usize,
    /// This coordinator's certificate chain (PEM) for TLS (see `fleetgate certs`).
    #[arg(long, env = "FLEETGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "FLEETGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signs agent certificates: every agent must then present a
    /// client certificate naming its agent id (mutual TLS).
    #[arg(long, env = "FLEETGATE_AGENT_CA", requires = "tls_cert")]
    agent_ca: Option<PathBuf>,
    /// Serve without TLS: tokens and results cross the network unencrypted.
    #[arg(
        long,
        env = "FLEETGATE_PLAINTEXT",
        value_parser = clap::builder::BoolishValueParser::new(),
        conflicts_with_all = ["tls_cert", "tls_key", "agent_ca"]
    )]
    plaintext: bool,
}

/// How the CLI reaches and authenticates to a coordinator.
#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct ClientArgs {
    /// File holding the coordinator's client token [default: the FLEETGATE_CLIENT_TOKEN
    /// environment variable, else no token].
    #[arg(long, env = "FLEETGATE_CLIENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the coordinator's certificate [default: the system's
    /// trusted roots].
    #[arg(long, env = "FLEETGATE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Talk to an http:// coordinator without TLS: the token and the report cross the network
    /// unencrypted.
    #[arg(
        long,
        env = "FLEETGATE_PLAINTEXT",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    plaintext: bool,
}

impl ClientArgs {
    fn token(&self) -> Result<Option<Token>, RunError> {
        Token::load(self.token_file.as_deref(), "FLEETGATE_CLIENT_TOKEN")
            .map_err(|e| RunError::Usage(e.to_string()))
    }

    fn link(&self, url: &str) -> Result<CoordinatorLink, RunError> {
        let files = ClientTlsFiles {
            ca: self.ca_file.clone(),
            ..ClientTlsFiles::default()
        };
        CoordinatorLink::new("--coordinator", url, &files, self.plaintext)
            .map_err(|e| RunError::Usage(e.to_string()))
    }
}

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct CertsArgs {
    /// Directory to write into (created owner-only if missing). A CA already there (ca.pem,
    /// ca.key) is reused, so certificates added later chain to the same CA.
    #[arg(long, default_value = "fleetgate-certs")]
    out: PathBuf,
    /// Host name or IP address agents and clients use to reach the coordinator (repeatable)
    /// [default: localhost and 127.0.0.1; the server certificate is then only made when none
    /// exists].
    #[arg(long = "coordinator-name", value_name = "NAME", value_delimiter = ',')]
    coordinator_names: Vec<String>,
    /// Agent id to make a client certificate for (repeatable).
    #[arg(long = "agent", value_name = "AGENT_ID", value_delimiter = ',')]
    agents: Vec<String>,
    /// Replace certificates and keys already in the directory (a complete CA is still reused),
    /// and make a reused CA key readable by its owner only. Without it, a command that would
    /// replace any of them writes nothing and exits 2.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct AgentsArgs {
    /// Coordinator URL: https://HOST:PORT, or http://HOST:PORT with --plaintext.
    #[arg(
        long,
        env = "FLEETGATE_COORDINATOR",
        default_value = "https://127.0.0.1:7400"
    )]
    coordinator: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Worker { probe } = args.command {
        // A worker's stdout carries its events; its logs go to stderr like everyone's.
        telemetry::init(telemetry::LogFormat::Text, "warn");
        let result = if probe {
            fleetgate_agent::worker::run_probe_process()
        } else {
            fleetgate_agent::worker::run_worker_process()
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "Worker failed.");
                ExitCode::from(exit::ERROR as u8)
            }
        };
    }
    if let Command::Agent(daemon_args) = args.command {
        telemetry::init(telemetry::LogFormat::Text, "info");
        let started = std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|program| {
                daemon_args.into_config(WorkerCommand {
                    program,
                    args: vec!["worker".into()],
                })
            })
            .and_then(fleetgate_agent::daemon::run_until_signal);
        return match started {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "Agent failed.");
                ExitCode::from(exit::ERROR as u8)
            }
        };
    }
    let level = if matches!(args.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    telemetry::init(telemetry::LogFormat::Text, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the async runtime.");
            return ExitCode::from(exit::ERROR as u8);
        }
    };
    let code = runtime.block_on(async {
        match args.command {
            Command::Run(run) => run_command(*run).await,
            Command::Serve(serve) => serve_command(serve).await,
            Command::Agents(agents) => agents_command(agents).await,
            Command::Certs(certs) => certs_command(&certs),
            Command::Agent(_) | Command::Worker { .. } => exit::ERROR,
        }
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[expect(clippy::print_stderr, reason = "errors go to stderr")]
async fn run_command(args: RunArgs) -> i32 {
    match run(args).await {
        Ok(code) => code,
        Err(err) => {
            // One line even when the message quotes a remote peer's text.
            eprintln!("Error: {}", one_line(&err.to_string()));
            err.exit_code()
        }
    }
}

fn read_knobs(args: &RunArgs) -> Result<Knobs, RunError> {
    let known: Vec<&str> = RuntimeKind::ALL.iter().map(|k| k.name()).collect();
    let mut knobs = match &args.knobs {
        Some(path) => {
            let text = fleetgate_common::input::read_file(path).map_err(|e| {
                RunError::InvalidInput(format!("{}: cannot be read: {e}", path.display()))
            })?;
            parse_knobs_file(&path.display().to_string(), &text, &known)
                .map_err(|e| RunError::InvalidInput(e.to_string()))?
        }
        None => Knobs::new(),
    };
    for assignment in &args.set {
        apply_knob_assignment(&mut knobs, assignment, &known)
            .map_err(|e| RunError::InvalidInput(e.to_string()))?;
    }
    Ok(knobs)
}

fn run_spec(args: &RunArgs) -> Result<RunSpec, RunError> {
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .ok_or_else(|| RunError::Usage(format!("--labels {label}: expected KEY=VALUE")))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    // A flag names a file; without one the run uses the built-in copy of the shipped file
    // (resolved by `plan::plan`, which also refuses regression defaults outside `pr`).
    let read = |path: &Option<PathBuf>, what: &'static str| {
        path.as_deref()
            .map(|p| Asset::read(p, what))
            .transpose()
            .map_err(|e| RunError::InvalidInput(e.to_string()))
    };
    let (budgets, baseline, tolerances) = match args.gate_mode {
        GateMode::Budget => (read(&args.budgets, "Budget file")?, None, None),
        GateMode::Regression => {
            if args.workload.profile != Profile::Pr
                && (args.baseline.is_none() || args.tolerances.is_none())
            {
                return Err(RunError::Usage(plan::REGRESSION_DEFAULTS_PR_ONLY.into()));
            }
            (
                None,
                read(&args.baseline, "Baseline file")?,
                read(&args.tolerances, "Tolerance file")?,
            )
        }
    };
    Ok(RunSpec {
        workload: args.workload,
        gate_mode: args.gate_mode,
        runtimes: args.runtimes.clone(),
        selection: Selection {
            agent_ids: args.agents.clone(),
            labels,
            hardware_class: args.hardware_class.clone(),
            min_agents: args.min_agents,
        },
        deadline: args.deadline_seconds.map(Duration::from_secs),
        knobs: read_knobs(args)?,
        overhead_scratch_root: args.overhead_scratch_root.clone(),
        budgets,
        baseline,
        tolerances,
    })
}

/// A file named by `flag`, if given.
fn given_path<'a>(flag: &'a str, path: Option<&'a PathBuf>) -> Option<output::NamedPath<'a>> {
    path.map(|p| output::NamedPath {
        flag,
        path: p.as_path(),
    })
}

/// The outputs a run writes, with their flags.
fn run_outputs(args: &RunArgs) -> Vec<output::NamedPath<'_>> {
    [
        given_path("--output", Some(&args.output)),
        given_path("--markdown", args.markdown.as_ref()),
        given_path("--junit", args.junit.as_ref()),
        given_path("--write-baseline", args.write_baseline.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The files a run reads: those given by flags (the default gate assets are built into the
/// binary, so no file of theirs is read).
fn run_inputs(args: &RunArgs) -> Vec<output::NamedPath<'_>> {
    [
        given_path("--budgets", args.budgets.as_ref()),
        given_path("--baseline", args.baseline.as_ref()),
        given_path("--tolerances", args.tolerances.as_ref()),
        given_path("--knobs", args.knobs.as_ref()),
        given_path("--token-file", args.client.token_file.as_ref()),
        given_path("--ca-file", args.client.ca_file.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Refuses, before anything runs, output paths that clash (exit 2) or cannot hold a file
/// (exit 1).
fn check_outputs(args: &RunArgs) -> Result<(), RunError> {
    output::check_outputs(&run_outputs(args), &run_inputs(args)).map_err(|e| {
        if e.is_usage() {
            RunError::Usage(e.to_string())
        } else {
            RunError::Internal(e.to_string())
        }
    })
}

fn write_file(flag: &str, path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    output::write_output(flag, path, bytes).map_err(|e| RunError::Internal(e.to_string()))
}

fn json_bytes(value: &impl serde::Serialize) -> Result<Vec<u8>, RunError> {
    let mut json =
        serde_json::to_vec_pretty(value).map_err(|e| RunError::Internal(e.to_string()))?;
    json.push(b'\n');
    Ok(json)
}

/// The run's numbers within their documented bounds (a usage error naming the flag).
fn check_bounds(args: &RunArgs) -> Result<(), RunError> {
    use fleetgate_common::config;
    let usage = |flag: &str, e: config::OutOfRange| RunError::Usage(format!("{flag}: {e}"));
    if let Some(seconds) = args.deadline_seconds {
        config::deadline_from_seconds(seconds).map_err(|e| usage("--deadline-seconds", e))?;
    }
    config::check_iterations(args.workload.iterations).map_err(|e| usage("--iterations", e))?;
    config::check_allocation_kb(args.workload.allocation_kb)
        .map_err(|e| usage("--allocation-kb", e))?;
    Ok(())
}

/// This host's agent id: its name, made safe for file names.
fn local_agent_id() -> String {
    let name: String = fleetgate_agent::runtime::host_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches('.').to_owned();
    if name.is_empty() {
        "local".to_owned()
    } else {
        name
    }
}

async fn run(args: RunArgs) -> Result<i32, RunError> {
    // How to reach the coordinator is checked first: a transport mistake is a usage error,
    // whatever else is wrong.
    let token = args.client.token()?;
    let link = match &args.coordinator {
        Some(url) => Some(args.client.link(url)?),
        None if args.client.plaintext || args.client.ca_file.is_some() => {
            return Err(RunError::Usage(
                "--plaintext and --ca-file need --coordinator (the embedded default always uses TLS)"
                    .into(),
            ));
        }
        None => None,
    };
    check_bounds(&args)?;
    // Then the outputs, before any gate asset is read: nothing is worth running whose report
    // cannot be written.
    check_outputs(&args)?;
    let spec = run_spec(&args)?;
    // Everything checkable is checked before anything is sent or created: with the embedded
    // agent that includes threshold coverage, since the one agent and its class are known.
    let checked = plan::plan(spec.clone())?;
    if args.coordinator.is_none() {
        let agent_id = local_agent_id();
        let class = tokio::task::spawn_blocking(|| {
            fleetgate_common::host::derive_hardware_class(&fleetgate_agent::facts::host_facts())
        })
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?;
        checked.require_coverage(std::slice::from_ref(&agent_id), &|_| Some(class.clone()))?;
    }
    // Ctrl+C or SIGTERM: the embedded agent stops its worker gracefully (the telemetry session
    // is closed as interrupted); see `client::run_embedded`.
    let interrupt = tokio_util::sync::CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        fleetgate_common::shutdown::signal().await;
        on_signal.cancel();
    });
    let mut display = ProgressDisplay::new(std::io::stderr().is_terminal());
    let mut on_event = |event: &pb::RunEvent| display.update(event);
    let run = async {
        match &link {
            Some(link) => client::submit(link, token.as_ref(), &spec, &mut on_event).await,
            None => {
                let program = std::env::current_exe().map_err(|e| {
                    RunError::Internal(format!("cannot find this program to start workers: {e}"))
                })?;
                let agent = EmbeddedAgent {
                    agent_id: local_agent_id(),
                    artifact_root: args.artifact_root.clone(),
                    state_dir: args.artifact_root.join(".fleetgate-agent"),
                    worker: WorkerCommand {
                        program,
                        args: vec!["worker".into()],
                    },
                };
                client::run_embedded(&spec, agent, &mut on_event, &interrupt).await
            }
        }
    };
    let report = tokio::select! {
        report = run => report,
        // A remote run's stream is dropped: its coordinator cancels the run on the agents.
        () = interrupt.cancelled(), if args.coordinator.is_some() => Err(RunError::Interrupted),
    };
    let report = report?;
    finish(&args, &report)
}

fn finish(args: &RunArgs, report: &Report) -> Result<i32, RunError> {
    write_file("--output", &args.output, &json_bytes(report)?)?;
    if let Some(path) = &args.markdown {
        write_file("--markdown", path, output::markdown(report).as_bytes())?;
    }
    if let Some(path) = &args.junit {
        write_file("--junit", path, output::junit(report).as_bytes())?;
    }
    if let Some(path) = &args.write_baseline {
        let host = fleetgate_agent::runtime::host_name();
        write_file(
            "--write-baseline",
            path,
            &json_bytes(&baseline_document(report, &host))?,
        )?;
    }
    let mut stdout = std::io::stdout().lock();
    for line in output::console_lines(report, &args.output.display().to_string()) {
        // A closed stdout (a pipe to `head`) must not turn a finished run into a failure.
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    Ok(match (args.check, report.verdict) {
        (false, _) | (true, Verdict::Pass) => exit::OK,
        (true, Verdict::Fail) => exit::GATE_FAILED,
        (true, Verdict::Inconclusive) => exit::INCONCLUSIVE,
    })
}

#[expect(clippy::print_stderr, reason = "errors go to stderr")]
async fn serve_command(args: ServeArgs) -> i32 {
    let tokens =
        Token::load(args.agent_token_file.as_deref(), "FLEETGATE_AGENT_TOKEN").and_then(|agent| {
            Token::load(args.client_token_file.as_deref(), "FLEETGATE_CLIENT_TOKEN")
                .map(|client| (agent, client))
        });
    let (agent_token, client_token) = match tokens {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return exit::USAGE;
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match ServerTls::load(cert, key, args.agent_ca.as_deref()) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("Error: {e}");
                return exit::USAGE;
            }
        },
        _ if args.plaintext => {
            tracing::warn!(listen = %args.listen, "Serving without TLS (--plaintext): tokens and results cross the network unencrypted.");
            None
        }
        _ => {
            eprintln!(
                "Error: serve needs --tls-cert and --tls-key (a lab set: `fleetgate certs`), or --plaintext to serve without TLS"
            );
            return exit::USAGE;
        }
    };
    if tls.as_ref().is_some_and(|t| !t.agent_certs_required) {
        tracing::info!(listen = %args.listen, "No --agent-ca: agents are not bound to their ids by certificates; any agent-token holder can use any agent id.");
    }
    if agent_token.is_none() {
        tracing::warn!(listen = %args.listen, "No agent token: any process that reaches this port can join as an agent (set --agent-token-file or FLEETGATE_AGENT_TOKEN).");
    }
    if client_token.is_none() {
        tracing::warn!(listen = %args.listen, "No client token: any process that reaches this port can submit runs (set --client-token-file or FLEETGATE_CLIENT_TOKEN).");
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error: cannot listen on {}: {e}", args.listen);
            return exit::ERROR;
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.clamp(50, 3_600_000)),
        agent_token,
        client_token,
        max_agents: args.max_agents.max(1),
        lost_agent_ttl: Duration::from_secs(args.lost_agent_ttl_seconds),
        max_runs: args.max_runs.max(1),
        max_finished_runs: args.max_finished_runs.max(1),
        finished_run_ttl: Duration::from_secs(args.finished_run_ttl_seconds),
        max_finished_report_bytes: args.max_finished_report_mib.clamp(1, 1 << 20) << 20,
        connection_setup_timeout: Duration::from_secs(
            args.connection_setup_seconds.clamp(1, 3_600),
        ),
        connection_idle_timeout: Duration::from_secs(args.connection_idle_seconds.clamp(1, 86_400)),
        agent_messages_per_second: args.agent_messages_per_second.max(1),
        max_message_bytes: args.max_message_mib.clamp(1, 1024) << 20,
        tls,
        ..CoordinatorSettings::default()
    };
    let coordinator = match service::serve(listener, settings, shutdown.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: cannot start the coordinator: {e}");
            return exit::ERROR;
        }
    };
    fleetgate_common::shutdown::signal().await;
    tracing::info!("Coordinator shutting down.");
    coordinator.shutdown().await;
    exit::OK
}

#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the agent list is the command's output"
)]
async fn agents_command(args: AgentsArgs) -> i32 {
    let connection = args
        .client
        .token()
        .and_then(|token| Ok((token, args.client.link(&args.coordinator)?)));
    let (token, link) = match connection {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return e.exit_code();
        }
    };
    let agents = match client::list_agents(&link, token.as_ref()).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e.to_string()));
            return e.exit_code();
        }
    };
    if args.json {
        let list: Vec<serde_json::Value> = agents
            .iter()
            .map(|a| {
                let facts = fleetgate_common::host::HostFacts::from(a.facts.clone().unwrap_or_default());
                serde_json::json!({
                    "agent_id": a.agent_id,
                    "state": a.state,
                    "hardware_class": a.hardware_class,
                    "labels": a.labels,
                    "facts": facts,
                    "runtimes": a.runtimes.iter().map(|r| serde_json::json!({
                        "runtime": r.runtime, "available": r.available, "reason": r.unavailable_reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return exit::OK;
    }
    println!(
        "{:<24} {:<13} {:<32} {:>5} {:>9}  runtimes",
        "AGENT", "STATE", "HARDWARE CLASS", "CORES", "MEMORY"
    );
    for a in &agents {
        let facts = a.facts.clone().unwrap_or_default();
        let runtimes: Vec<String> = a
            .runtimes
            .iter()
            .map(|r| {
                if r.available {
                    r.runtime.clone()
                } else {
                    format!("{} (unavailable: {})", r.runtime, r.unavailable_reason)
                }
            })
            .collect();
        println!(
            "{:<24} {:<13} {:<32} {:>5} {:>7}Gi  {}",
            a.agent_id,
            a.state,
            a.hardware_class,
            facts.cpu_cores,
            facts.memory_total_bytes >> 30,
            runtimes.join(", ")
        );
    }
    exit::OK
}

/// Progress on stderr: a live bar per agent on a terminal, a plain line per tenth otherwise.
/// Writes the lab CA (reused when present), the coordinator's certificate and the agents'.
#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the files written are the command's output"
)]
fn certs_command(args: &CertsArgs) -> i32 {
    match write_certs(args) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            exit::OK
        }
        Err((code, message)) => {
            eprintln!("Error: {message}");
            code
        }
    }
}

fn write_certs(args: &CertsArgs) -> Result<Vec<PathBuf>, (i32, String)> {
    for id in &args.agents {
        if !fleetgate_common::ids::is_safe_id(id) {
            return Err((
                exit::USAGE,
                format!("--agent {id}: use letters, digits, '-', '_' or '.' (at most 128)"),
            ));
        }
    }
    let request = LabSetRequest {
        dir: args.out.clone(),
        coordinator_names: args.coordinator_names.clone(),
        agents: args.agents.clone(),
        force: args.force,
    };
    write_lab_set(&request).map_err(|e| {
        let code = match e {
            LabSetError::Exists { .. } => exit::USAGE,
            LabSetError::UnusableCa { .. } => exit::INVALID_INPUT,
            _ => exit::ERROR,
        };
        (code, one_line(&e.to_string()).into_owned())
    })
}

struct ProgressDisplay {
    terminal: bool,
    rows: BTreeMap<String, String>,
    last_tenth: BTreeMap<String, u64>,
    drawn: usize,
}

impl ProgressDisplay {
    fn new(terminal: bool) -> Self {
        ProgressDisplay {
            terminal,
            rows: BTreeMap::new(),
            last_tenth: BTreeMap::new(),
            drawn: 0,
        }
    }

    #[expect(clippy::print_stderr, reason = "progress goes to stderr")]
    fn update(&mut self, event: &pb::RunEvent) {
        let p = match &event.body {
            Some(pb::run_event::Body::Progress(p)) => p,
            Some(pb::run_event::Body::Accepted(a)) => {
                eprintln!(
                    "Run {} accepted on {} agent(s): {}",
                    event.run_id,
                    a.agent_ids.len(),
                    a.agent_ids.join(", ")
                );
                return;
            }
            Some(pb::run_event::Body::Diagnostic(d)) => {
                eprintln!("{d}");
                return;
            }
            _ => return,
        };
        let total = p.total.max(1);
        let pct = p.done.min(total) * 100 / total;
        let label = format!("{} {} {}", p.agent_id, p.runtime, p.phase);
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (pct * WIDTH / 100) as usize;
            let row = format!(
                "{label:<56} [{}{}] {pct:>3}% {}/{}",
                "#".repeat(filled),
                " ".repeat(WIDTH as usize - filled),
                p.done,
                p.total
            );
            self.rows.insert(p.agent_id.clone(), row);
            // Redraw one line per agent in place.
            if self.drawn > 0 {
                eprint!("\x1b[{}A", self.drawn);
            }
            for row in self.rows.values() {
                eprintln!("\r\x1b[2K{row}");
            }
            self.drawn = self.rows.len();
        } else {
            let key = format!("{} {} {}", p.agent_id, p.runtime, p.phase);
            let tenth = pct / 10;
            if self.last_tenth.get(&key) != Some(&tenth) {
                self.last_tenth.insert(key, tenth);
                eprintln!("{label}: {}/{} ({pct}%)", p.done, p.total);
            }
        }
    }
}
