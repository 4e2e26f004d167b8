//! Bytes from the network decoded as a `CoordinatorMessage` (what an agent receives down its
//! session), then the conversion the agent applies to a job assignment.
//!
//! An accepted job has an id and a runtime of the catalogue (the one the wire names), knobs
//! that pass the knob table's checks (so no knob can panic the worker later), and converts
//! back to a wire spec that converts to the same job. Its workload size and deadline are
//! within their bounds, so the agent's arithmetic on them cannot overflow. Refused jobs: one
//! line that names a field.

#![no_main]

use std::time::{Duration, Instant};

use fleetgate_common::config;
use fleetgate_common::convert::MAX_DEADLINE_UNIX_MS;
use fleetgate_common::job::JobAssignment;
use fleetgate_common::runtime::RuntimeKind;
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
    let runtime = spec.runtime.clone();
    match JobAssignment::try_from(spec) {
        Ok(job) => {
            assert!(!job.job_id.is_empty(), "{job:?}");
            assert_eq!(
                RuntimeKind::from_name(&runtime),
                Some(job.spec.runtime),
                "{job:?}"
            );
            assert_eq!(job.spec.knobs.check(), Ok(()), "{job:?}");
            let workload = &job.spec.workload;
            assert_eq!(workload.check(), Ok(()), "{job:?}");
            assert!(
                (1..=config::MAX_ITERATIONS).contains(&workload.iterations)
                    && (1..=config::MAX_ALLOCATION_KB).contains(&workload.allocation_kb),
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
            let _ = job.spec.knobs.sampling_interval();
            let _ = job.spec.knobs.flush_every();
            let _ = job.spec.knobs.overhead_max_duration();
            let _ = job.spec.dir_name();
            let _ = job
                .spec
                .runtime
                .plan(&job.spec.knobs, workload.profile, workload.iterations);
            let wire = pb::JobSpec::from(&job);
            match JobAssignment::try_from(wire.clone()) {
                Ok(back) => assert_eq!(back, job, "sent again as {wire:?}"),
                Err(e) => panic!("refused a job as the coordinator sends it ({e}): {wire:?}"),
            }
        }
        Err(e) => {
            assert!(!e.field.is_empty());
            assert_one_line("JobAssignment::try_from", &e.to_string());
        }
    }
});
