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

#![no_main]

use fleetgate_common::convert;
use fleetgate_common::fleet::{HostFacts, RuntimeAvailability, derive_hardware_class};
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
            match convert::job_update_from_pb(event) {
                Ok(update) => {
                    assert!(sequence >= 1, "accepted sequence 0");
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
