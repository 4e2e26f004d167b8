//! Reports of any size reach the client, over real gRPC on loopback: a report larger than the
//! largest message arrives whole through `client::submit` (in ordered chunks of at most 1 MiB)
//! and through `StreamReport`, while `GetReport` refuses it by name; a report stream cut
//! mid-report by a proxy is exit 7 for `fleetgate run --coordinator`, with no report file and
//! no temporary file left, and `RunError::Unreachable` naming how much arrived for the client.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetgate_common::report::{Report, RuntimeSection};
use fleetgate_common::tls::CoordinatorLink;
use fleetgate_coordinator::client;
use fleetgate_coordinator::plan::RunError;
use fleetgate_coordinator::registry::CoordinatorSettings;
use fleetgate_coordinator::report_stream::REPORT_CHUNK_BYTES;
use fleetgate_coordinator::service::{Coordinator, MAX_MESSAGE_BYTES};
use fleetgate_proto::v1 as pb;
use prost::Message as _;
use sha2::Digest as _;
use support::cli::{fleetgate_async, text, tiny_run};
use support::fleet::{Proxy, in_process, link, run_client, wait_for_agents};
use support::hand_agent::{answer_every_job, session};
use support::{PATIENCE, soak_spec};

/// Coordinator settings for agents whose every event is a megabyte: heartbeats every 5 s, so
/// an agent whose heartbeats queue behind its event (a loaded machine, a debug build) is not
/// taken for lost.
fn patient_settings() -> CoordinatorSettings {
    CoordinatorSettings {
        heartbeat_interval: Duration::from_secs(5),
        ..CoordinatorSettings::default()
    }
}

/// The reason each agent gives for its runtime being unavailable: close to the 1 MiB a report
/// section may be, and twice in the report (its runtime and its diagnostics), so a few agents
/// make a report of many mebibytes. Letters from a generator seeded by the agent's id, which
/// LZ4 cannot shorten, so the report's compressed form is as many mebibytes.
fn big_reason(id: &str) -> String {
    let mut state = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let letters: String = (0..1_000_000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'a' + ((state >> 33) % 26) as u8)
        })
        .collect();
    format!("{id}: {letters}")
}

/// Starts `count` hand-driven agents on `url`, each answering every job at once with a runtime
/// section of about 1 MB; their ids, once all are connected.
async fn big_agents(url: &str, count: usize) -> (Vec<String>, Vec<tokio::task::JoinHandle<()>>) {
    let ids: Vec<String> = (0..count).map(|i| format!("big-{i:03}")).collect();
    let mut tasks = Vec::new();
    for id in &ids {
        let hello = pb::Hello {
            agent_id: id.clone(),
            protocol_version: fleetgate_proto::PROTOCOL_VERSION,
            facts: Some(pb::HostFacts {
                hostname: id.clone(),
                cpu_model: "Test CPU".into(),
                cpu_cores: 2,
                ..pb::HostFacts::default()
            }),
            ..pb::Hello::default()
        };
        let session = session(&link(url), None, hello).await.unwrap();
        tasks.push(answer_every_job(
            session,
            Duration::from_millis(100),
            RuntimeSection::unavailable(big_reason(id)),
        ));
    }
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_for_agents(&link(url), None, &names, String::new).await;
    (ids, tasks)
}

/// What the client saw of one report chunk.
#[derive(Debug, Clone, PartialEq)]
struct SeenChunk {
    offset: u64,
    bytes: usize,
    total: u64,
    last: bool,
    sha256: Vec<u8>,
    lz4_frame: bool,
    json_bytes: u64,
    /// The whole event's encoded size.
    encoded: usize,
}

/// A run on every agent of `coordinator` (the shipped budget, which its agents' unavailable
/// runtimes leave inconclusive); the report and the chunks seen, in order.
async fn submit_recording_chunks(
    link: &CoordinatorLink,
) -> (Result<Report, RunError>, Vec<SeenChunk>, String) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let run_id = Arc::new(Mutex::new(String::new()));
    let (chunks, id) = (Arc::clone(&seen), Arc::clone(&run_id));
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        client::submit(
            link,
            None,
            &soak_spec(60.0, Duration::from_secs(120)),
            &mut |event| {
                id.lock().unwrap().clone_from(&event.run_id);
                if let Some(pb::run_event::Body::ReportChunk(c)) = &event.body {
                    chunks.lock().unwrap().push(SeenChunk {
                        offset: c.offset,
                        bytes: c.data.len(),
                        total: c.total_bytes,
                        last: c.last,
                        sha256: c.sha256.clone(),
                        lz4_frame: c.lz4_frame,
                        json_bytes: c.json_bytes,
                        encoded: event.encoded_len(),
                    });
                }
            },
        ),
    )
    .await
    .expect("no report within 300 s");
    let chunks = seen.lock().unwrap().clone();
    let id = run_id.lock().unwrap().clone();
    (report, chunks, id)
}

/// The report as `StreamReport` sends it (its JSON, or with `report_lz4` its LZ4 frame),
/// concatenated here without any check, and the last chunk's digest.
async fn raw_stream_report(url: &str, run_id: &str, report_lz4: bool) -> (Vec<u8>, Vec<u8>) {
    let mut runs = run_client(&link(url))
        .await
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = runs
        .stream_report(pb::StreamReportRequest {
            run_id: run_id.to_owned(),
            report_lz4,
        })
        .await
        .unwrap()
        .into_inner();
    let (mut bytes, mut sha256) = (Vec::new(), Vec::new());
    while let Some(response) = stream.message().await.unwrap() {
        let chunk = response.chunk.unwrap();
        assert_eq!(chunk.lz4_frame, report_lz4);
        bytes.extend_from_slice(&chunk.data);
        sha256 = chunk.sha256;
    }
    (bytes, sha256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_larger_than_any_message_arrives_whole_in_ordered_chunks() {
    let coordinator: Coordinator = in_process(patient_settings()).await;
    let url = coordinator.url();
    // About 2 MB of report per agent: over the 64 MiB a message may carry.
    let (ids, _agents) = big_agents(&url, 36).await;
    let (report, chunks, run_id) = submit_recording_chunks(&link(&url)).await;
    let report = report.unwrap();

    // Every agent and its whole reason are in the report the client put back together.
    assert_eq!(report.agents.len(), ids.len());
    for id in &ids {
        let job = &report.agents[id.as_str()].jobs["gpumemprof_cpu"];
        assert!(
            report.runtimes[&format!("{id}/gpumemprof_cpu")]
                .reason
                .as_deref()
                == Some(big_reason(id).as_str()),
            "{id}: {job:?}"
        );
    }

    // Chunks in order, back to back, each at most 1 MiB of data and no event much larger;
    // only the last is marked last and carries the digest. The client asked for the
    // compressed form: every chunk is of the LZ4 frame and gives the JSON's length.
    let total = chunks[0].total;
    let json_bytes = chunks[0].json_bytes;
    assert!(
        chunks
            .iter()
            .all(|c| c.lz4_frame && c.json_bytes == json_bytes)
    );
    assert!(
        total > MAX_MESSAGE_BYTES as u64,
        "the report is only {total} bytes"
    );
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.offset, offset, "chunk {i}");
        assert_eq!(chunk.total, total, "chunk {i}");
        assert!(chunk.bytes <= REPORT_CHUNK_BYTES, "chunk {i}: {chunk:?}");
        assert!(
            chunk.encoded <= REPORT_CHUNK_BYTES + 256,
            "chunk {i}: {chunk:?}"
        );
        let is_last = i + 1 == chunks.len();
        assert_eq!(chunk.last, is_last, "chunk {i}");
        assert_eq!(
            chunk.sha256.len(),
            if is_last { 32 } else { 0 },
            "chunk {i}"
        );
        if !is_last {
            assert_eq!(chunk.bytes, REPORT_CHUNK_BYTES, "chunk {i}");
        }
        offset += chunk.bytes as u64;
    }
    assert_eq!(offset, total);
    assert_eq!(
        chunks.len() as u64,
        total.div_ceil(REPORT_CHUNK_BYTES as u64)
    );

    // The coordinator's own copy, byte for byte: its frame has the length and digest the
    // chunks gave; its JSON (what a client that does not ask for the frame gets) has the
    // length they gave, the digest its last chunk gives, and reads as the report the client
    // returned.
    let (frame, frame_digest) = raw_stream_report(&url, &run_id, true).await;
    assert_eq!(frame.len() as u64, total);
    assert_eq!(sha2::Sha256::digest(&frame).as_slice(), frame_digest);
    assert_eq!(frame_digest, chunks.last().unwrap().sha256);
    let (kept, json_digest) = raw_stream_report(&url, &run_id, false).await;
    assert_eq!(kept.len() as u64, json_bytes);
    assert_eq!(sha2::Sha256::digest(&kept).as_slice(), json_digest);
    let kept: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(serde_json::to_value(&report).unwrap(), kept);

    // `client::fetch_report` (StreamReport, checked) gives the same report.
    let fetched = client::fetch_report(&link(&url), None, &run_id)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&fetched).unwrap(), kept);

    // The one-message GetReport refuses it by name and points at StreamReport.
    let status = run_client(&link(&url))
        .await
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .get_report(pb::GetReportRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        format!(
            "the report of run {run_id} is {json_bytes} bytes, more than one message may carry ({MAX_MESSAGE_BYTES} bytes); fetch it with StreamReport, or use a client that takes the report in chunks"
        )
    );
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_predates_chunks_gets_the_report_whole() {
    let coordinator = in_process(patient_settings()).await;
    let url = coordinator.url();
    let (_ids, _agents) = big_agents(&url, 1).await;
    let mut request = pb::SubmitRunRequest::from(&soak_spec(60.0, Duration::from_secs(60)));
    assert!(!request.report_chunks);
    request.report_chunks = false;
    let mut stream = run_client(&link(&url))
        .await
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .submit_run(request)
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(event) = stream.message().await.unwrap() {
        assert!(
            !matches!(event.body, Some(pb::run_event::Body::ReportChunk(_))),
            "a chunk for a client that did not ask for them"
        );
        last = event.body;
    }
    let Some(pb::run_event::Body::ReportJson(json)) = last else {
        panic!("the last event is not the whole report: {last:?}");
    };
    let report: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(report.agents.len(), 1);
    coordinator.shutdown().await;
}

/// Names of the entries in `dir` (none when it does not exist), sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_stream_cut_mid_report_is_exit_7_with_no_report_file() {
    let coordinator = in_process(patient_settings()).await;
    let url = coordinator.url();
    let (ids, _agents) = big_agents(&url, 6).await;
    let work = tempfile::tempdir().unwrap();
    let cli_run = |coordinator_url: &str, output: &std::path::Path| {
        let mut args: Vec<String> = tiny_run("soak", "gpumemprof_cpu")
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend([
            "--coordinator".into(),
            coordinator_url.to_owned(),
            "--plaintext".into(),
            "--output".into(),
            output.display().to_string(),
        ]);
        args
    };

    // Whole, the CLI writes the report (about 12 MB of JSON, in 1 MiB chunks).
    let whole = work.path().join("whole/report.json");
    let out = fleetgate_async(&cli_run(&url, &whole)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written: Report = serde_json::from_slice(&std::fs::read(&whole).unwrap()).unwrap();
    assert_eq!(written.agents.len(), ids.len());

    // Through a proxy that closes the connection once 4 MiB went to the client: the accepted
    // and progress events are a few KiB, so the cut falls inside the report.
    let proxy = Proxy::start(coordinator.addr).await;
    proxy.cut_after(4 << 20);
    let cut = work.path().join("cut/report.json");
    let out = fleetgate_async(&cli_run(&proxy.url(), &cut)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    // Progress lines, then the error: one line, the last.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("Error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    assert!(
        errors[0].starts_with(&format!(
            "Error: lost the coordinator at {} after ",
            proxy.url()
        )) && errors[0].contains(" bytes of the report: "),
        "{stderr}"
    );
    assert!(!cut.exists());
    // No temporary file either: the folder holds nothing.
    assert_eq!(entries(&work.path().join("cut")), Vec::<String>::new());

    // The client itself says how much of the report arrived.
    let err = tokio::time::timeout(
        PATIENCE,
        client::submit(
            &link(&proxy.url()),
            None,
            &soak_spec(60.0, Duration::from_secs(60)),
            &mut |_| {},
        ),
    )
    .await
    .expect("the cut client did not give up")
    .unwrap_err();
    let RunError::Unreachable(message) = &err else {
        panic!("{err:?}");
    };
    let (received, total) = message
        .split_once(" after ")
        .and_then(|(_, rest)| rest.split_once(" bytes of the report"))
        .and_then(|(counts, _)| counts.split_once(" of "))
        .map(|(r, t)| (r.parse::<u64>().unwrap(), t.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("{message}"));
    assert!(received > 0 && received < total, "{message}");
    assert_eq!(received % REPORT_CHUNK_BYTES as u64, 0, "{message}");
    coordinator.shutdown().await;
}
