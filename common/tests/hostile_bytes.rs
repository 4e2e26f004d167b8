//! Arbitrary and mutated bytes thrown at every parser that takes outside input: the asset and
//! knob parsers (files from a repository or a ConfigMap) and the decoding of agent messages
//! into domain types (bytes from the network). None may panic; every refusal is one line.
//! `PROPTEST_CASES` raises the case count for a longer run.

use fleetgate_common::host::{HostFacts, RuntimeAvailability};
use fleetgate_common::job::JobAssignment;
use fleetgate_common::{convert, gate, input};
use fleetgate_proto::v1 as pb;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

const BUDGET: &[u8] = include_bytes!("../../docs/benchmarks/v0.4_operating_budget.json");
const BASELINE: &[u8] = include_bytes!("../../docs/benchmarks/v0.4_baseline.json");
const TOLERANCES: &[u8] = include_bytes!("../../docs/benchmarks/v0.4_tolerances.json");

/// Applies byte edits (replace, insert, delete at a position) to `base`.
fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(at, op, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match op % 3 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

fn one_line<T>(result: Result<T, String>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert!(!e.is_empty());
        prop_assert!(!e.contains('\n'), "{e}");
    }
    Ok(())
}

fn parse_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
    let known = [
        "gpumemprof_cpu",
        "gpumemprof_cuda",
        "tfmemprof_cpu",
        "tfmemprof_gpu",
    ];
    one_line(input::parse_json(bytes).map_err(|e| e.to_string()))?;
    one_line(gate::parse_budgets("b.json", Some(bytes)).map_err(|e| e.to_string()))?;
    one_line(gate::parse_baseline("a.json", Some(bytes)).map_err(|e| e.to_string()))?;
    one_line(gate::parse_tolerances("t.json", Some(bytes)).map_err(|e| e.to_string()))?;
    one_line(
        fleetgate_common::knobs::parse_knobs_file("k.json", bytes, &known)
            .map_err(|e| e.to_string()),
    )?;
    Ok(())
}

fn decode_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = pb::AgentMessage::decode(bytes) {
        match message.body {
            Some(pb::agent_message::Body::JobEvent(event)) => {
                one_line(convert::job_update_from_pb(event).map_err(|e| e.to_string()))?;
            }
            Some(pb::agent_message::Body::Hello(hello)) => {
                std::hint::black_box(HostFacts::from(hello.facts.unwrap_or_default()));
                for r in hello.runtimes {
                    std::hint::black_box(RuntimeAvailability::from(r));
                }
            }
            _ => {}
        }
    }
    if let Ok(spec) = pb::JobSpec::decode(bytes) {
        one_line(JobAssignment::try_from(spec).map_err(|e| e.to_string()))?;
    }
    Ok(())
}

/// A report event whose section is `json`, plain or compressed as an agent sends it.
fn report_event(json: &[u8], deflated: bool) -> Vec<u8> {
    let mut event = pb::JobEvent {
        job_id: "run-1-0".into(),
        sequence: 3,
        body: Some(pb::job_event::Body::Report(pb::RuntimeReport {
            section_json: String::from_utf8_lossy(json).into_owned(),
            section_json_deflate: Vec::new(),
        })),
    };
    if deflated {
        convert::compress_section(&mut event);
    }
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::JobEvent(event)),
    }
    .encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000)
    ))]

    #[test]
    fn arbitrary_bytes_never_break_a_file_parser(bytes in vec(any::<u8>(), 0..2048)) {
        parse_every_way(&bytes)?;
    }

    #[test]
    fn mutated_shipped_assets_never_break_a_file_parser(
        which in 0usize..3,
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        parse_every_way(&mutate([BUDGET, BASELINE, TOLERANCES][which], &edits))?;
    }

    #[test]
    fn arbitrary_bytes_never_break_message_decoding(bytes in vec(any::<u8>(), 0..1024)) {
        decode_every_way(&bytes)?;
    }

    #[test]
    fn mutated_report_events_never_break_message_decoding(
        edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
        json_edits in vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4),
        deflated in any::<bool>(),
    ) {
        let section = mutate(br#"{"runtime": "gpumemprof_cpu", "metrics": {"a": 1.5}, "nested": [[{"b": null}]]}"#, &json_edits);
        decode_every_way(&mutate(&report_event(&section, deflated), &edits))?;
    }
}
