//! Bytes from the network decoded as a `CoordinatorMessage` (what an agent receives down its
//! session), then the conversion the agent applies to a job assignment.
//!
//! An accepted job has an id and a runtime, knobs that pass the same checks as a knobs file
//! (so no knob can panic the worker later), and converts back to a wire spec that converts to
//! the same job. Its workload size and deadline are within their bounds, so the agent's
//! arithmetic on them cannot overflow. Refused jobs: one line that names a field.

#![no_main]

use std::time::{Duration, Instant};

use fleetgate_common::config;
use fleetgate_common::convert::{JobRequest, MAX_DEADLINE_UNIX_MS};
use fleetgate_fuzz::assert_one_line;
use fleetgate_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = pb::CoordinatorMessage::decode(bytes) else {
        return;
    };
    let Some(pb::coordinator_message::Body::AssignJob(assign)) = message.body else {
        return;
    };
    let Some(spec) = assign.job else {
        return;
    };
    match JobRequest::try_from(spec) {
        Ok(job) => {
            assert!(!job.job_id.is_empty() && !job.runtime.is_empty(), "{job:?}");
            assert_eq!(job.knobs.validate(), Ok(()), "{job:?}");
            assert!(
                (1..=config::MAX_ITERATIONS).contains(&job.iterations)
                    && (1..=config::MAX_ALLOCATION_KB).contains(&job.allocation_kb),
                "{job:?}"
            );
            assert!(job.deadline_unix_ms <= MAX_DEADLINE_UNIX_MS, "{job:?}");
            // The agent waits at most until the deadline, from any clock reading.
            assert!(
                Instant::now()
                    .checked_add(Duration::from_millis(job.deadline_unix_ms))
                    .is_some(),
                "{job:?}"
            );
            let _ = job.knobs.sampling_interval();
            let wire = pb::JobSpec::from(&job);
            match JobRequest::try_from(wire.clone()) {
                Ok(back) => assert_eq!(back, job, "sent again as {wire:?}"),
                Err(e) => panic!("refused a job as the coordinator sends it ({e}): {wire:?}"),
            }
        }
        Err(e) => {
            assert!(!e.field.is_empty());
            assert_one_line("JobRequest::try_from", &e.to_string());
        }
    }
});
