//! Bytes from the network decoded as a `SubmitRunRequest` (what a client sends the
//! coordinator), turned into a `RunSpec` (which runs `convert::check_submit_run` first); and
//! the same bytes read as the CLI's `--deadline-seconds` and as a deadline built in code.
//!
//! Accepted: the deadline is 0 (the coordinator's default) or within 1 ms to the documented
//! maximum, and the coordinator's arithmetic with it (now plus the deadline, on the monotonic
//! and the wall clock) cannot overflow; the workload's `iterations` and `allocation_kb` are
//! within their bounds; every string and list within its limit; the knobs name at most
//! `MAX_RUNTIMES` runtimes, each with at least one knob, and every runtime's knobs pass the
//! knob table's checks; and the run sent again as the CLI sends it converts to the same run.
//! Refused: one line that names a field, and a request `check_submit_run` refuses is refused
//! for the same reason.

#![no_main]

use std::time::{Duration, Instant, SystemTime};

use fleetgate_common::config::{self, MAX_DEADLINE_SECONDS};
use fleetgate_common::convert::{self, *};
use fleetgate_common::run::RunSpec;
use fleetgate_fuzz::assert_one_line;
use fleetgate_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(request) = pb::SubmitRunRequest::decode(bytes) {
        let checked = convert::check_submit_run(&request);
        match RunSpec::try_from(request.clone()) {
            Ok(spec) => {
                assert_eq!(checked, Ok(()), "accepted what check_submit_run refuses");
                accepted(&request, &spec);
            }
            Err(e) => {
                assert!(!e.field.is_empty());
                assert_one_line("RunSpec::try_from", &e.to_string());
                if let Err(first) = checked {
                    assert_eq!(e, first, "refused for another reason than check_submit_run");
                }
            }
        }
    }

    let Some(head) = bytes.first_chunk::<12>() else {
        return;
    };
    let [a, b, c, d, e, f, g, h, i, j, k, l] = *head;
    let seconds = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
    match config::deadline_from_seconds(seconds) {
        Ok(deadline) => {
            assert!((1..=MAX_DEADLINE_SECONDS).contains(&seconds));
            usable(deadline);
        }
        Err(e) => {
            assert!(seconds == 0 || seconds > MAX_DEADLINE_SECONDS, "{seconds}");
            assert_one_line("deadline_from_seconds", &e.to_string());
        }
    }
    let nanos = u32::from_le_bytes([i, j, k, l]) % 1_000_000_000;
    let deadline = Duration::new(seconds, nanos);
    match config::check_deadline(deadline) {
        Ok(d) => {
            assert_eq!(d, deadline);
            assert!(!d.is_zero() && d <= Duration::from_secs(MAX_DEADLINE_SECONDS));
            usable(d);
        }
        Err(e) => {
            assert!(deadline.is_zero() || deadline > Duration::from_secs(MAX_DEADLINE_SECONDS));
            assert_one_line("check_deadline", &e.to_string());
        }
    }
});

/// The coordinator's arithmetic with an accepted deadline cannot overflow.
fn usable(deadline: Duration) {
    assert!(Instant::now().checked_add(deadline).is_some());
    assert!(SystemTime::now().checked_add(deadline).is_some());
    let millis = u64::try_from(deadline.as_millis()).expect("a bounded deadline fits in u64");
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    assert!(
        now_ms
            .checked_add(millis)
            .is_some_and(|ms| ms <= MAX_DEADLINE_UNIX_MS)
    );
}

fn accepted(r: &pb::SubmitRunRequest, spec: &RunSpec) {
    if r.deadline_ms != 0 {
        match config::deadline_from_millis(r.deadline_ms) {
            Ok(deadline) => usable(deadline),
            Err(e) => panic!("accepted deadline_ms {} ({e})", r.deadline_ms),
        }
    }
    match spec.deadline {
        Some(d) => usable(d),
        None => assert_eq!(r.deadline_ms, 0),
    }
    let w = &spec.workload;
    assert_eq!(config::check_iterations(w.iterations), Ok(w.iterations));
    assert_eq!(
        config::check_allocation_kb(w.allocation_kb),
        Ok(w.allocation_kb)
    );
    assert!(r.runtimes.len() <= MAX_RUNTIMES);
    assert!(r.runtimes.iter().all(|n| n.len() <= MAX_FACT_BYTES));
    assert!(r.agent_ids.len() <= MAX_SELECTED_AGENTS);
    assert!(r.agent_ids.iter().all(|id| id.len() <= MAX_ID_BYTES));
    assert!(r.labels.len() <= MAX_LABELS);
    for (k, v) in &r.labels {
        assert!(k.len() <= MAX_LABEL_KEY_BYTES && v.len() <= MAX_LABEL_VALUE_BYTES);
    }
    for path in [
        &r.overhead_scratch_root,
        &r.budgets_path,
        &r.baseline_path,
        &r.tolerances_path,
    ] {
        assert!(path.len() <= MAX_PATH_BYTES);
    }
    assert!(
        r.knobs.len() <= MAX_RUNTIMES,
        "{} knob runtimes",
        r.knobs.len()
    );
    assert!(spec.knobs.len() <= MAX_RUNTIMES);
    for (runtime, k) in &spec.knobs {
        assert!(runtime.len() <= MAX_FACT_BYTES);
        assert!(
            r.knobs.contains_key(runtime),
            "knobs for {runtime:?} from nowhere"
        );
        assert!(!k.is_empty(), "kept {runtime:?} without a knob");
        assert_eq!(k.check(), Ok(()), "{runtime}: {k:?}");
    }
    let wire = pb::SubmitRunRequest::from(spec);
    match RunSpec::try_from(wire.clone()) {
        Ok(back) => assert_eq!(&back, spec, "sent again as {wire:?}"),
        Err(e) => panic!("refused a run as the CLI sends it ({e}): {wire:?}"),
    }
}
