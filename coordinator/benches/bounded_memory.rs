//! Coordinator memory under hostile input: a `fleetgate serve` process (default limits) gets
//! N `Hello`s as large as its limits allow, each on its own connection, then M runs whose
//! inputs are as large as its limits allow (4 MiB budget, baseline and tolerance documents,
//! a 64 KiB knobs document, 4 KiB paths, 32 maximal selection labels), each finished at once
//! by one agent. Prints the coordinator's RSS (`VmRSS`) and peak (`VmHWM`) after each stage,
//! its open descriptors, and what it still keeps. Not a test: nothing here asserts a figure.
//!
//! ```text
//! cargo bench -p fleetgate-coordinator --bench bounded_memory -- [--hellos 1000] [--runs 1000]
//! ```

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "../tests/support/hand_agent.rs"]
mod hand_agent;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fleetgate_common::config::{self, GateMode, Mode, Profile, Workload, WorkloadKind};
use fleetgate_common::convert;
use fleetgate_common::gate::AssetSource;
use fleetgate_common::knobs::{Knobs, RuntimeKnobs};
use fleetgate_common::report::RuntimeSection;
use fleetgate_common::run::{Asset, Quorum, RunSpec, Selection};
use fleetgate_common::tls::CoordinatorLink;
use fleetgate_coordinator::client;
use fleetgate_proto::v1 as pb;
use prost::Message as _;

struct Options {
    hellos: usize,
    runs: usize,
}

fn options() -> Options {
    let mut o = Options {
        hellos: 1_000,
        runs: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--hellos" => o.hellos = args.next().and_then(|v| v.parse().ok()).unwrap_or(1_000),
            "--runs" => o.runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(1_000),
            _ => {}
        }
    }
    o
}

/// `VmRSS` and `VmHWM` of a process, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn stage(pid: u32, name: &str, extra: &str) {
    let (now, peak) = rss(pid);
    println!(
        "{name:<44} RSS {now:>7.1} MiB  peak {peak:>7.1} MiB  descriptors {:>5}  {extra}",
        descriptors(pid)
    );
}

/// The selection labels of every run, and the labels of the agent that runs them: 32 at the
/// key and value limits.
fn maximal_labels() -> HashMap<String, String> {
    (0..convert::MAX_LABELS)
        .map(|i| {
            (
                format!("{i:02}{}", "k".repeat(convert::MAX_LABEL_KEY_BYTES - 2)),
                "v".repeat(convert::MAX_LABEL_VALUE_BYTES),
            )
        })
        .collect()
}

/// The largest `Hello` the coordinator accepts: every label and fact at its limit, then
/// runtimes with the longest reasons, then GPUs, while the whole stays within the limit.
fn hostile_hello(id: &str) -> pb::Hello {
    let fact = |c: &str| c.repeat(convert::MAX_FACT_BYTES);
    let mut hello = pb::Hello {
        agent_id: id.to_owned(),
        agent_version: fact("v"),
        protocol_version: fleetgate_proto::PROTOCOL_VERSION,
        facts: Some(pb::HostFacts {
            hostname: fact("h"),
            os: fact("o"),
            kernel: fact("k"),
            cpu_model: fact("c"),
            cpu_cores: 1,
            gpu_unavailable_reason: "g".repeat(convert::MAX_REASON_BYTES),
            tensorflow_unavailable_reason: "t".repeat(convert::MAX_REASON_BYTES),
            ..pb::HostFacts::default()
        }),
        labels: maximal_labels(),
        hardware_class: fact("x"),
        ..pb::Hello::default()
    };
    let runtime = pb::RuntimeAvailability {
        runtime: fact("r"),
        available: false,
        unavailable_reason: "u".repeat(convert::MAX_REASON_BYTES),
    };
    while hello.runtimes.len() < convert::MAX_RUNTIMES
        && hello.encoded_len() + runtime.encoded_len() + 4 <= convert::MAX_HELLO_BYTES
    {
        hello.runtimes.push(runtime.clone());
    }
    let gpu = pb::GpuFacts {
        name: fact("n"),
        uuid: fact("u"),
        pci_bus_id: fact("p"),
        driver_version: fact("d"),
        cuda_driver_version: fact("c"),
        ..pb::GpuFacts::default()
    };
    while let Some(facts) = hello.facts.as_mut()
        && facts.gpus.len() < convert::MAX_GPUS
    {
        facts.gpus.push(gpu.clone());
        if convert::check_hello(&hello).is_err() {
            if let Some(facts) = hello.facts.as_mut() {
                facts.gpus.pop();
            }
            break;
        }
    }
    assert_eq!(convert::check_hello(&hello), Ok(()));
    hello
}

/// A JSON document of `{"version": "v0.4", <key>: {...}}` padded with metric entries to just
/// under the input limit, keeping the shipped entries.
fn padded(key: &str, shipped: &serde_json::Value, extra: serde_json::Value) -> Vec<u8> {
    let limit = usize::try_from(fleetgate_common::input::MAX_INPUT_BYTES).unwrap_or(usize::MAX);
    let mut map = shipped.as_object().cloned().unwrap_or_default();
    let mut i = 0_u64;
    loop {
        let entry = format!("pad-{i:08}/gpumemprof_cpu.extra_metric_with_a_long_name");
        let mut doc = serde_json::json!({"version": "v0.4"});
        doc[key] = serde_json::Value::Object(map.clone());
        if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
            doc.extend(extra.clone());
        }
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        if bytes.len() + 80 * 1_024 > limit {
            return bytes;
        }
        // Add entries in chunks, so building the document stays quick.
        for _ in 0..1_000 {
            map.insert(format!("{entry}-{i}"), serde_json::json!(1.0e18));
            i += 1;
        }
    }
}

/// A run with every input at its limit, selecting the worker agent by id, labels and class.
fn maximal_spec(class: &str) -> RunSpec {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shipped: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join("docs/benchmarks/v0.4_operating_budget.json")).unwrap(),
    )
    .unwrap();
    let budgets = padded("budgets", &shipped["budgets"], serde_json::json!({}));
    let tolerances = padded("tolerances", &shipped["budgets"], serde_json::json!({}));
    let baseline = padded(
        "metrics",
        &shipped["budgets"],
        serde_json::json!({"config": {}}),
    );
    let path = "p".repeat(convert::MAX_PATH_BYTES);
    let mut knobs = Knobs::new();
    knobs.insert(
        "gpumemprof_cpu".into(),
        RuntimeKnobs {
            sampling_interval_seconds: Some(60.0),
            ..RuntimeKnobs::default()
        },
    );
    RunSpec {
        workload: Workload {
            profile: Profile::Pr,
            mode: Mode::Soak,
            iterations: config::MAX_ITERATIONS,
            allocation_kb: config::MAX_ALLOCATION_KB,
            kind: WorkloadKind::Reference,
        },
        gate_mode: GateMode::Budget,
        runtimes: vec!["gpumemprof_cpu".into()],
        selection: Selection {
            agent_ids: vec!["worker".into()],
            labels: maximal_labels().into_iter().collect(),
            hardware_class: Some(class.to_owned()),
            min_agents: 1,
            quorum: Quorum::new(0.5).unwrap(),
        },
        deadline: Some(Duration::from_secs(config::MAX_DEADLINE_SECONDS)),
        knobs,
        overhead_scratch_root: Some(format!("/{}", "s".repeat(convert::MAX_PATH_BYTES - 1))),
        budgets: Some(Asset {
            name: path.clone(),
            bytes: budgets,
            source: AssetSource::Path,
        }),
        baseline: Some(Asset {
            name: path.clone(),
            bytes: baseline,
            source: AssetSource::Path,
        }),
        tolerances: Some(Asset {
            name: path,
            bytes: tolerances,
            source: AssetSource::Path,
        }),
    }
}

/// Opens a plaintext session with `hello`; the sender of its messages and its inbound stream.
async fn session(url: &str, hello: pb::Hello) -> Option<hand_agent::Session> {
    hand_agent::session(&CoordinatorLink::plaintext(url.to_owned()), None, hello)
        .await
        .ok()
}

/// The agent that finishes every run: it answers each job with a real report section at once.
async fn worker(url: &str, class: &str) {
    let section: RuntimeSection = serde_json::from_str(include_str!(
        "../../common/fuzz/seeds/json_input/section_ok.json"
    ))
    .unwrap();
    let hello = pb::Hello {
        agent_id: "worker".into(),
        protocol_version: fleetgate_proto::PROTOCOL_VERSION,
        facts: Some(pb::HostFacts {
            hostname: "worker".into(),
            cpu_model: "Bench CPU".into(),
            cpu_cores: 2,
            ..pb::HostFacts::default()
        }),
        labels: maximal_labels(),
        hardware_class: class.to_owned(),
        ..pb::Hello::default()
    };
    let session = session(url, hello).await.expect("worker session");
    hand_agent::answer_every_job(session, Duration::from_secs(1), section);
}

async fn run(o: &Options) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["serve", "--plaintext", "--listen", "127.0.0.1:0"])
        .args(["--max-agents", &(o.hellos + 1).to_string()])
        .env("FLEETGATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("start fleetgate serve");
    let pid = server.id();
    let addr = loop {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("Coordinator listening."))
            .and_then(|l| l.split("addr=").nth(1))
        {
            break addr.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = format!("http://{addr}");
    let link = CoordinatorLink::plaintext(url.clone());
    stage(pid, "idle", "");

    // Hostile Hellos, each at the limit, on their own connections.
    let hello = hostile_hello("hostile-0000");
    let started = Instant::now();
    let mut sessions = Vec::new();
    for batch in (0..o.hellos).collect::<Vec<_>>().chunks(50) {
        let opened = futures_join(batch.iter().map(|i| {
            let url = url.clone();
            let mut hello = hello.clone();
            hello.agent_id = format!("hostile-{i:04}");
            async move { session(&url, hello).await }
        }))
        .await;
        sessions.extend(opened.into_iter().flatten());
    }
    let listed = client::list_agents(&link, None)
        .await
        .map_or(0, |a| a.len());
    stage(
        pid,
        &format!("{} hostile Hellos connected", sessions.len()),
        &format!(
            "({} bytes each; `agents` lists {listed}; {:.1} s)",
            hello.encoded_len(),
            started.elapsed().as_secs_f64()
        ),
    );
    drop(sessions);
    let deadline = Instant::now() + Duration::from_secs(60);
    while descriptors(pid) > 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = client::list_agents(&link, None)
        .await
        .map_or(0, |a| a.len());
    stage(
        pid,
        "hostile agents gone (kept until their TTL)",
        &format!("(`agents` lists {listed})"),
    );

    // Runs with maximal inputs, each finished at once by the worker.
    let class = "c".repeat(convert::MAX_FACT_BYTES);
    worker(&url, &class).await;
    let spec = maximal_spec(&class);
    let request_bytes = pb::SubmitRunRequest::from(&spec).encoded_len();
    let started = Instant::now();
    let mut run_ids = Vec::new();
    let mut report_bytes = 0;
    let every = (o.runs / 10).max(1);
    for i in 1..=o.runs {
        let mut run_id = String::new();
        let report = client::submit(&link, None, &spec, &mut |e| run_id.clone_from(&e.run_id))
            .await
            .expect("run");
        report_bytes = serde_json::to_vec(&report).map_or(0, |r| r.len());
        run_ids.push(run_id);
        if i % every == 0 && i < o.runs {
            stage(pid, &format!("  {i} runs finished"), "");
        }
    }
    let mut kept = 0;
    for run_id in &run_ids {
        let fetched = client::fetch_report(&link, None, run_id).await;
        kept += usize::from(fetched.is_ok());
    }
    stage(
        pid,
        &format!("{} runs with maximal inputs finished", run_ids.len()),
        &format!(
            "({:.1} MiB requests, {:.1} KiB reports; {kept} reports kept; {:.1} s)",
            request_bytes as f64 / (1 << 20) as f64,
            report_bytes as f64 / 1024.0,
            started.elapsed().as_secs_f64()
        ),
    );
    let listed = client::list_agents(&link, None)
        .await
        .map_or(0, |a| a.len());
    stage(pid, "end", &format!("(`agents` lists {listed})"));
    server.kill().ok();
    server.wait().ok();
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(value) = task.await {
            out.push(value);
        }
    }
    out
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "== coordinator memory: {} maximal Hellos, then {} runs with maximal inputs (default limits) ==",
        o.hellos, o.runs
    );
    runtime.block_on(run(&o));
}
