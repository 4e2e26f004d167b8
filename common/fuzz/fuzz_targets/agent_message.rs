//! Bytes from the network decoded as an `AgentMessage` (what an agent sends up its session),
//! then every conversion the coordinator applies to one: host facts, runtime availability and
//! the derived hardware class of a `Hello`, and the job update of a `JobEvent`.
//!
//! A decoded message encodes and decodes back to itself. Facts and availability convert to
//! domain values and back to the same wire values. A derived hardware class is a non-empty
//! slug. An accepted job event has a sequence number, its update is terminal exactly when it
//! is a report or a failure, and the update sent again as the agent would send it converts to
//! the same update (so a report section an agent writes is one the coordinator reads).
//! Refused events: one line that names a field.
//!
//! A `Hello` the limits accept holds nothing over a limit (labels, facts, runtimes, resumed
//! jobs, its encoded size); an accepted report section is within its size limit and a failure
//! reason within its length. Refused `Hello`s: one line that names a field.

#![no_main]

use fleetgate_common::convert::{self, *};
use fleetgate_common::host::{HostFacts, RuntimeAvailability, derive_hardware_class};
use fleetgate_common::job::JobUpdate;
use fleetgate_fuzz::assert_one_line;
use fleetgate_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = pb::AgentMessage::decode(bytes) else {
        return;
    };
    let again = pb::AgentMessage::decode(message.encode_to_vec().as_slice())
        .expect("a decoded message, encoded, decodes");
    assert_eq!(again, message, "encode and decode change the message");

    match message.body {
        Some(pb::agent_message::Body::Hello(hello)) => {
            match convert::check_hello(&hello) {
                Ok(()) => within_limits(&hello),
                Err(e) => {
                    assert!(!e.field.is_empty());
                    assert_one_line("check_hello", &e.to_string());
                }
            }
            let wire = hello.facts.unwrap_or_default();
            let facts = HostFacts::from(wire.clone());
            assert_eq!(
                pb::HostFacts::from(&facts),
                wire,
                "facts do not convert back"
            );
            let class = derive_hardware_class(&facts);
            assert!(
                !class.is_empty()
                    && class
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "hardware class {class:?} from {facts:?}"
            );
            for wire in hello.runtimes {
                let availability = RuntimeAvailability::from(wire.clone());
                assert_eq!(
                    pb::RuntimeAvailability::from(&availability),
                    wire,
                    "runtime availability does not convert back"
                );
            }
        }
        Some(pb::agent_message::Body::JobEvent(event)) => {
            let job_id = event.job_id.clone();
            let sequence = event.sequence;
            let kind = event.body.as_ref().map(std::mem::discriminant);
            let section_bytes = match &event.body {
                Some(pb::job_event::Body::Report(r)) => r.section_json.len(),
                _ => 0,
            };
            match convert::job_update_from_pb(event) {
                Ok(update) => {
                    assert!(sequence >= 1, "accepted sequence 0");
                    assert!(
                        section_bytes <= MAX_SECTION_BYTES,
                        "accepted a {section_bytes}-byte section"
                    );
                    if let JobUpdate::Failed { reason, .. } = &update {
                        assert!(
                            reason.len() <= MAX_FAILURE_REASON_BYTES,
                            "kept a {}-byte reason",
                            reason.len()
                        );
                    }
                    let terminal = matches!(
                        kind,
                        Some(k) if k == std::mem::discriminant(&pb::job_event::Body::Report(Default::default()))
                            || k == std::mem::discriminant(&pb::job_event::Body::Failed(Default::default()))
                    );
                    assert_eq!(update.is_terminal(), terminal, "{update:?}");
                    let resent = convert::job_event_to_pb(&job_id, sequence, &update);
                    assert_eq!(resent.job_id, job_id);
                    assert_eq!(resent.sequence, sequence);
                    match convert::job_update_from_pb(resent.clone()) {
                        Ok(back) => assert_eq!(back, update, "resent as {resent:?}"),
                        Err(e) => {
                            panic!("refused an update as the agent sends it ({e}): {resent:?}")
                        }
                    }
                }
                Err(e) => {
                    assert!(!e.field.is_empty());
                    assert_one_line("job_update_from_pb", &e.to_string());
                }
            }
        }
        Some(pb::agent_message::Body::Heartbeat(_)) | None => {}
    }
});

/// Every limit of an accepted `Hello` holds.
fn within_limits(hello: &pb::Hello) {
    assert!(hello.encoded_len() <= MAX_HELLO_BYTES, "{}", hello.encoded_len());
    assert!(hello.agent_id.len() <= MAX_ID_BYTES);
    assert!(hello.hardware_class.len() <= MAX_FACT_BYTES);
    assert!(hello.labels.len() <= MAX_LABELS);
    for (k, v) in &hello.labels {
        assert!(k.len() <= MAX_LABEL_KEY_BYTES && v.len() <= MAX_LABEL_VALUE_BYTES);
    }
    if let Some(f) = &hello.facts {
        for fact in [&f.hostname, &f.os, &f.kernel, &f.cpu_model] {
            assert!(fact.len() <= MAX_FACT_BYTES);
        }
        for reason in [&f.gpu_unavailable_reason, &f.tensorflow_unavailable_reason] {
            assert!(reason.len() <= MAX_REASON_BYTES);
        }
        assert!(f.gpus.len() <= MAX_GPUS);
        for g in &f.gpus {
            for fact in [
                &g.name,
                &g.uuid,
                &g.pci_bus_id,
                &g.driver_version,
                &g.cuda_driver_version,
            ] {
                assert!(fact.len() <= MAX_FACT_BYTES);
            }
        }
    }
    assert!(hello.runtimes.len() <= MAX_RUNTIMES);
    for r in &hello.runtimes {
        assert!(r.runtime.len() <= MAX_FACT_BYTES && r.unavailable_reason.len() <= MAX_REASON_BYTES);
    }
    assert!(hello.jobs.len() <= MAX_RESUME_JOBS);
    assert!(hello.jobs.iter().all(|j| j.job_id.len() <= MAX_ID_BYTES));
}
