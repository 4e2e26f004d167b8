//! The tuning-knob inputs: `knobs::parse_knobs_file` (the `--knobs` file) and, when the
//! bytes are UTF-8, `knobs::apply_knob_assignment` (one `--set <runtime>.<knob>=<value>`).
//!
//! Accepted: only known runtimes, no runtime without a knob, every count at least 1 (a number
//! of overhead pairs within its range), every number of seconds finite, within its range and
//! representable as a non-zero `Duration` (the runtimes turn them into one), every value one
//! the wire accepts too (the table's checks; only the combination of rollover and retention
//! is left to the run), and the knobs written back out as JSON parse to the same knobs.
//! Refused: one line that names the origin.

#![no_main]

use std::time::Duration;

use fleetgate_common::knobs::{
    self, KNOBS, KnobCheckError, Knobs, MAX_SECONDS_KNOB, MIN_SECONDS_KNOB, OVERHEAD_MAX_PAIRS,
    OVERHEAD_MIN_PAIRS_FLOOR, RuntimeKnobs,
};
use fleetgate_fuzz::{KNOWN_RUNTIMES, assert_one_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match knobs::parse_knobs_file("knobs.json", bytes, &KNOWN_RUNTIMES) {
        Ok(knobs) => {
            for (runtime, k) in &knobs {
                assert!(
                    KNOWN_RUNTIMES.contains(&runtime.as_str()),
                    "accepted runtime {runtime:?}"
                );
                assert!(!k.is_empty(), "kept {runtime} without a knob");
                valid(runtime, k);
            }
            let text = serde_json::to_vec(&knobs).expect("knobs serialize");
            match knobs::parse_knobs_file("knobs.json", &text, &KNOWN_RUNTIMES) {
                Ok(again) => assert_eq!(
                    again,
                    knobs,
                    "written back: {}",
                    String::from_utf8_lossy(&text)
                ),
                Err(e) => panic!(
                    "refused its own output ({e}): {}",
                    String::from_utf8_lossy(&text)
                ),
            }
        }
        Err(e) => {
            assert_eq!(e.origin, "knobs.json");
            assert_one_line("parse_knobs_file", &e.to_string());
        }
    }

    if let Ok(assignment) = std::str::from_utf8(bytes) {
        let mut knobs = Knobs::new();
        match knobs::apply_knob_assignment(&mut knobs, assignment, &KNOWN_RUNTIMES) {
            Ok(()) => {
                assert_eq!(knobs.len(), 1, "one assignment set {knobs:?}");
                for (runtime, k) in &knobs {
                    assert!(KNOWN_RUNTIMES.contains(&runtime.as_str()));
                    assert!(!k.is_empty(), "an accepted assignment set nothing");
                    valid(runtime, k);
                }
            }
            Err(e) => {
                assert_eq!(e.origin, "--set");
                assert_one_line("apply_knob_assignment", &e.to_string());
            }
        }
    }
});

/// Every knob that is set holds a value the runtimes can use, and one the wire accepts.
fn valid(runtime: &str, k: &RuntimeKnobs) {
    for (name, seconds) in [
        ("sampling_interval_seconds", k.sampling_interval_seconds),
        ("flush_every_seconds", k.flush_every_seconds),
        ("overhead_max_seconds", k.overhead_max_seconds),
    ] {
        if let Some(s) = seconds {
            assert!(s.is_finite() && s > 0.0, "{runtime}.{name} = {s} accepted");
            assert!(
                (MIN_SECONDS_KNOB..=MAX_SECONDS_KNOB).contains(&s),
                "{runtime}.{name} = {s} accepted out of range"
            );
            assert!(
                Duration::try_from_secs_f64(s).is_ok_and(|d| !d.is_zero()),
                "{runtime}.{name} = {s} accepted but is no non-zero Duration"
            );
        }
    }
    if let Some(interval) = k.sampling_interval() {
        assert!(
            !interval.is_zero(),
            "{runtime}: zero sampling interval accepted"
        );
    }
    assert!(!k.flush_every().is_zero(), "{runtime}: zero flush interval");
    assert!(
        !k.overhead_max_duration().is_zero(),
        "{runtime}: zero overhead time cap"
    );
    for (name, count) in [
        ("flush_every_events", k.flush_every_events),
        ("rollover_max_bytes", k.rollover_max_bytes),
        ("rollover_max_events", k.rollover_max_events),
        ("retention_max_files", k.retention_max_files),
        ("retention_max_total_bytes", k.retention_max_total_bytes),
        ("max_history", k.max_history),
    ] {
        if let Some(n) = count {
            assert!(n >= 1, "{runtime}.{name} = {n} accepted");
        }
    }
    if let Some(n) = k.overhead_min_pairs {
        assert!(
            (OVERHEAD_MIN_PAIRS_FLOOR..=OVERHEAD_MAX_PAIRS).contains(&n),
            "{runtime}.overhead_min_pairs = {n} accepted"
        );
    }
    for knob in &KNOBS {
        if let Some(value) = knob.get(k) {
            assert_eq!(
                knob.check(value),
                Ok(()),
                "{runtime}.{} = {value} accepted but the wire refuses it",
                knob.name
            );
        }
    }
    match k.check() {
        Ok(()) | Err(KnobCheckError::RetentionBelowRollover) => {}
        Err(e) => panic!("{runtime}: accepted knobs the wire refuses ({e}): {k:?}"),
    }
}
