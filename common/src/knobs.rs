//! Tuning knobs, from one table: [`KNOBS`] names every knob with its kind, bounds, default
//! and the metrics it acts on, and everything else reads it — the knobs file parser and
//! `--set`, the validation of knobs that arrive over the wire, the report's tuning advice, the
//! baseline comparison (which ignores the measurement knobs) and the agent's tracker set-up
//! (which takes its defaults from here). [`RuntimeKnobs`] holds one runtime's values; its
//! fields are also the `fleetgate-agent soak` flags.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-runtime tuning knobs, in the seed's tuning order. Unset knobs keep the runtime's
/// defaults; set ones are recorded in the report's config, so a regression baseline only
/// matches a run with the same knobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RuntimeKnobs {
    /// Sampling interval in seconds (also sets the soak and overhead sample counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_seconds)]
    pub sampling_interval_seconds: Option<f64>,
    /// Sink: records per batch handed to the writer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_count)]
    pub flush_every_events: Option<u64>,
    /// Sink: seconds before an idle batch is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_seconds)]
    pub flush_every_seconds: Option<f64>,
    /// Sink: roll a segment over at this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_count)]
    pub rollover_max_bytes: Option<u64>,
    /// Sink: roll a segment over at this many records.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_count)]
    pub rollover_max_events: Option<u64>,
    /// Sink: keep at most this many segment files.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_count)]
    pub retention_max_files: Option<u64>,
    /// Sink: keep at most this many bytes of segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_count)]
    pub retention_max_total_bytes: Option<u64>,
    /// History window of each ring (the TensorFlow tracker's `max_history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_count)]
    pub max_history: Option<u64>,
    /// Overhead measurement: unprofiled/tracked pairs always run (default
    /// [`DEFAULT_OVERHEAD_MIN_PAIRS`], from [`OVERHEAD_MIN_PAIRS_FLOOR`] to
    /// [`OVERHEAD_MAX_PAIRS`]). Not part of the config a baseline must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_pairs)]
    pub overhead_min_pairs: Option<u64>,
    /// Overhead measurement: seconds after which no further pair starts once the minimum is
    /// run (default [`DEFAULT_OVERHEAD_MAX_SECONDS`]). Not part of the config a baseline must
    /// match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_parser = parse_seconds)]
    pub overhead_max_seconds: Option<f64>,
}

/// Records per sink batch, unless `flush_every_events` is set.
pub const DEFAULT_FLUSH_EVERY_EVENTS: u64 = 50;
/// Seconds before an idle sink batch is written, unless `flush_every_seconds` is set.
pub const DEFAULT_FLUSH_EVERY_SECONDS: f64 = 2.0;
/// Segment rollover size, unless `rollover_max_bytes` is set (64 MiB).
pub const DEFAULT_ROLLOVER_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Segment rollover record count, unless `rollover_max_events` is set.
pub const DEFAULT_ROLLOVER_MAX_EVENTS: u64 = 10_000;
/// Segment files kept, unless `retention_max_files` is set.
pub const DEFAULT_RETENTION_MAX_FILES: u64 = 8;
/// Segment bytes kept, unless `retention_max_total_bytes` is set (512 MiB).
pub const DEFAULT_RETENTION_MAX_TOTAL_BYTES: u64 = 512 * 1024 * 1024;
/// Window of each history ring, unless `max_history` is set.
pub const DEFAULT_MAX_HISTORY: u64 = 10_000;
/// Pairs the overhead scenario runs at least, unless `overhead_min_pairs` is set. Thirty pairs
/// span more than a second of host time, so one short disturbance moves a few pairs (which the
/// Hodges–Lehmann estimate discounts) rather than the whole run: A/A runs of ten pairs measured
/// a tail of +8.5 points where thirty gave +5.8 (`docs/benchmarks.md`, "Gate trust").
pub const DEFAULT_OVERHEAD_MIN_PAIRS: u64 = 30;
/// Fewest pairs accepted: the 95 % signed-rank interval needs 6.
pub const OVERHEAD_MIN_PAIRS_FLOOR: u64 = 6;
/// Most pairs the overhead scenario runs (the exact signed-rank interval's range).
pub const OVERHEAD_MAX_PAIRS: u64 = 200;
/// Seconds after which the overhead scenario starts no further pair (once the minimum is run),
/// unless `overhead_max_seconds` is set.
pub const DEFAULT_OVERHEAD_MAX_SECONDS: f64 = 3.0;
/// The overhead scenario stops adding pairs once the 95 % interval of `runtime_overhead_pct`
/// is at most this many percentage points either side of its estimate (half its width).
pub const OVERHEAD_TARGET_HALF_WIDTH_PCT: f64 = 2.5;
/// Shortest seconds knob accepted (1 µs: anything shorter is no interval at all).
pub const MIN_SECONDS_KNOB: f64 = 1e-6;
/// Longest seconds knob accepted (one day, the longest profile).
pub const MAX_SECONDS_KNOB: f64 = 86_400.0;

/// What values a knob takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobKind {
    /// A whole number, at least 1.
    Count,
    /// Seconds, from [`MIN_SECONDS_KNOB`] to [`MAX_SECONDS_KNOB`].
    Seconds,
    /// A number of overhead pairs, from [`OVERHEAD_MIN_PAIRS_FLOOR`] to [`OVERHEAD_MAX_PAIRS`].
    Pairs,
}

impl KnobKind {
    /// The rule a value must follow, as error messages state it.
    pub fn rule(self) -> String {
        match self {
            KnobKind::Count => "an integer >= 1".to_owned(),
            KnobKind::Seconds => {
                format!("a number of seconds from {MIN_SECONDS_KNOB} to {MAX_SECONDS_KNOB}")
            }
            KnobKind::Pairs => {
                format!("an integer from {OVERHEAD_MIN_PAIRS_FLOOR} to {OVERHEAD_MAX_PAIRS}")
            }
        }
    }

    /// Parses `text` by this kind's rule; the error quotes the text.
    pub fn parse(self, text: &str) -> Result<KnobValue, KnobValueError> {
        let invalid = || KnobValueError::invalid(self, format!("'{text}'"));
        match self {
            KnobKind::Count | KnobKind::Pairs => match text.trim().parse::<u64>() {
                Ok(n) if self.accepts_count(n) => Ok(KnobValue::Count(n)),
                _ => Err(invalid()),
            },
            KnobKind::Seconds => match text.trim().parse::<f64>() {
                Ok(x) if self.accepts_seconds(x) => Ok(KnobValue::Seconds(x)),
                _ => Err(invalid()),
            },
        }
    }

    fn accepts_count(self, n: u64) -> bool {
        match self {
            KnobKind::Count => n >= 1,
            KnobKind::Pairs => (OVERHEAD_MIN_PAIRS_FLOOR..=OVERHEAD_MAX_PAIRS).contains(&n),
            KnobKind::Seconds => false,
        }
    }

    fn accepts_seconds(self, x: f64) -> bool {
        self == KnobKind::Seconds
            && x.is_finite()
            && (MIN_SECONDS_KNOB..=MAX_SECONDS_KNOB).contains(&x)
    }
}

/// A knob's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KnobValue {
    /// A count or a number of pairs.
    Count(u64),
    /// Seconds.
    Seconds(f64),
}

impl std::fmt::Display for KnobValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KnobValue::Count(n) => write!(f, "{n}"),
            KnobValue::Seconds(x) => write!(f, "{x}"),
        }
    }
}

/// A knob's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KnobDefault {
    /// The same on every runtime.
    Fixed(KnobValue),
    /// The runtime's own default interval (0.1 s for gpumemprof, 1 s for tfmemprof).
    PerRuntime,
}

/// Where one knob lives in [`RuntimeKnobs`].
#[derive(Debug)]
enum Field<'a> {
    Count(&'a mut Option<u64>),
    Seconds(&'a mut Option<f64>),
}

/// One row of the knob table.
#[derive(Debug)]
pub struct Knob {
    /// The knob's name in knobs files, `--set`, the report and the wire.
    pub name: &'static str,
    /// What values it takes.
    pub kind: KnobKind,
    /// Its value when unset.
    pub default: KnobDefault,
    /// Whether it only changes how the overhead is measured, not what runs: a regression
    /// baseline matches a run whatever its value.
    pub measurement: bool,
    /// The metrics it acts on: a failing metric's diagnostic advises the first of these knobs
    /// (in table order) that the run has not changed.
    pub acts_on: &'static [&'static str],
    field: fn(&mut RuntimeKnobs) -> Field<'_>,
}

impl Knob {
    /// This knob's value in `knobs`, if set.
    pub fn get(&self, knobs: &RuntimeKnobs) -> Option<KnobValue> {
        let mut copy = *knobs;
        match (self.field)(&mut copy) {
            Field::Count(v) => v.map(KnobValue::Count),
            Field::Seconds(v) => v.map(KnobValue::Seconds),
        }
    }

    /// Parses `text` by this knob's rule.
    pub fn parse(&self, text: &str) -> Result<KnobValue, KnobValueError> {
        self.kind.parse(text)
    }

    /// Checks a value that arrived already parsed (over the wire).
    pub fn check(&self, value: KnobValue) -> Result<(), KnobValueError> {
        let ok = match value {
            KnobValue::Count(n) => self.kind.accepts_count(n),
            KnobValue::Seconds(x) => self.kind.accepts_seconds(x),
        };
        if ok {
            Ok(())
        } else {
            Err(KnobValueError::invalid(self.kind, value.to_string()))
        }
    }

    fn put(&self, knobs: &mut RuntimeKnobs, value: Option<KnobValue>) {
        match ((self.field)(knobs), value) {
            (Field::Count(slot), Some(KnobValue::Count(n))) => *slot = Some(n),
            (Field::Seconds(slot), Some(KnobValue::Seconds(x))) => *slot = Some(x),
            (Field::Count(slot), None) => *slot = None,
            (Field::Seconds(slot), None) => *slot = None,
            // A value of the other kind never comes from `parse`.
            (Field::Count(_), Some(KnobValue::Seconds(_)))
            | (Field::Seconds(_), Some(KnobValue::Count(_))) => {}
        }
    }
}

const OVERHEAD: &[&str] = &["runtime_overhead_pct", "cpu_overhead_pct"];

/// Every knob, in the seed's tuning order: sampling interval, sink flush cadence, rollover
/// size or count, retention limits, history window; then the overhead measurement's own.
pub static KNOBS: [Knob; 10] = [
    Knob {
        name: "sampling_interval_seconds",
        kind: KnobKind::Seconds,
        default: KnobDefault::PerRuntime,
        measurement: false,
        acts_on: &[
            "runtime_overhead_pct",
            "cpu_overhead_pct",
            "artifact_growth_bytes",
            "rollover_count",
            "pruned_segment_count",
            "pruned_bytes",
            "rss_growth_per_24h_equiv",
            "max_rss_delta_bytes",
            "history_dropped_events",
            "history_dropped_samples",
            "history_dropped_alerts",
            "collector_failure_event_count",
            "collector_health",
        ],
        field: |k| Field::Seconds(&mut k.sampling_interval_seconds),
    },
    Knob {
        name: "flush_every_events",
        kind: KnobKind::Count,
        default: KnobDefault::Fixed(KnobValue::Count(DEFAULT_FLUSH_EVERY_EVENTS)),
        measurement: false,
        acts_on: &[
            "runtime_overhead_pct",
            "cpu_overhead_pct",
            "artifact_growth_bytes",
            "rollover_count",
            "pruned_segment_count",
            "pruned_bytes",
            "rss_growth_per_24h_equiv",
            "max_rss_delta_bytes",
        ],
        field: |k| Field::Count(&mut k.flush_every_events),
    },
    Knob {
        name: "flush_every_seconds",
        kind: KnobKind::Seconds,
        default: KnobDefault::Fixed(KnobValue::Seconds(DEFAULT_FLUSH_EVERY_SECONDS)),
        measurement: false,
        acts_on: OVERHEAD,
        field: |k| Field::Seconds(&mut k.flush_every_seconds),
    },
    Knob {
        name: "rollover_max_bytes",
        kind: KnobKind::Count,
        default: KnobDefault::Fixed(KnobValue::Count(DEFAULT_ROLLOVER_MAX_BYTES)),
        measurement: false,
        acts_on: RETENTION,
        field: |k| Field::Count(&mut k.rollover_max_bytes),
    },
    Knob {
        name: "rollover_max_events",
        kind: KnobKind::Count,
        default: KnobDefault::Fixed(KnobValue::Count(DEFAULT_ROLLOVER_MAX_EVENTS)),
        measurement: false,
        acts_on: RETENTION,
        field: |k| Field::Count(&mut k.rollover_max_events),
    },
    Knob {
        name: "retention_max_files",
        kind: KnobKind::Count,
        default: KnobDefault::Fixed(KnobValue::Count(DEFAULT_RETENTION_MAX_FILES)),
        measurement: false,
        acts_on: RETENTION,
        field: |k| Field::Count(&mut k.retention_max_files),
    },
    Knob {
        name: "retention_max_total_bytes",
        kind: KnobKind::Count,
        default: KnobDefault::Fixed(KnobValue::Count(DEFAULT_RETENTION_MAX_TOTAL_BYTES)),
        measurement: false,
        acts_on: RETENTION,
        field: |k| Field::Count(&mut k.retention_max_total_bytes),
    },
    Knob {
        name: "max_history",
        kind: KnobKind::Count,
        default: KnobDefault::Fixed(KnobValue::Count(DEFAULT_MAX_HISTORY)),
        measurement: false,
        acts_on: &[
            "rss_growth_per_24h_equiv",
            "max_rss_delta_bytes",
            "history_dropped_events",
            "history_dropped_samples",
            "history_dropped_alerts",
        ],
        field: |k| Field::Count(&mut k.max_history),
    },
    Knob {
        name: "overhead_min_pairs",
        kind: KnobKind::Pairs,
        default: KnobDefault::Fixed(KnobValue::Count(DEFAULT_OVERHEAD_MIN_PAIRS)),
        measurement: true,
        acts_on: &[],
        field: |k| Field::Count(&mut k.overhead_min_pairs),
    },
    Knob {
        name: "overhead_max_seconds",
        kind: KnobKind::Seconds,
        default: KnobDefault::Fixed(KnobValue::Seconds(DEFAULT_OVERHEAD_MAX_SECONDS)),
        measurement: true,
        acts_on: &[],
        field: |k| Field::Seconds(&mut k.overhead_max_seconds),
    },
];

/// Metrics of the sink's size: every rollover and retention knob acts on them.
const RETENTION: &[&str] = &[
    "artifact_growth_bytes",
    "rollover_count",
    "pruned_segment_count",
    "pruned_bytes",
    "final_retained_bytes",
    "final_retained_files",
];

/// Knobs that a lost-telemetry diagnostic advises, most effective first: the retention
/// limits bound the disk the sink needs, the rollover limits its granularity.
pub fn telemetry_loss_knobs() -> [&'static Knob; 4] {
    [
        knob("retention_max_files"),
        knob("retention_max_total_bytes"),
        knob("rollover_max_events"),
        knob("rollover_max_bytes"),
    ]
}

/// The table's row for `name`.
///
/// # Panics
/// When no knob has that name (a programming error: names passed here are literals).
fn knob(name: &str) -> &'static Knob {
    find(name).unwrap_or_else(|| panic!("no knob named {name}"))
}

/// The table's row for `name`, if any.
pub fn find(name: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.name == name)
}

/// Every knob's name, comma-separated, in table order.
pub fn known_names() -> String {
    KNOBS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The knobs that act on `metric`, in table order.
pub fn acting_on(metric: &str) -> Vec<&'static Knob> {
    if metric == "telemetry_loss" {
        return telemetry_loss_knobs().to_vec();
    }
    KNOBS
        .iter()
        .filter(|k| k.acts_on.contains(&metric))
        .collect()
}

/// A knob value is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobValueError {
    /// No knob has this name.
    #[error("unknown knob (known: {})", known_names())]
    Unknown,
    /// The value breaks the knob's rule.
    #[error("must be {rule}, got {got}")]
    Invalid {
        /// The rule ([`KnobKind::rule`]).
        rule: String,
        /// The value as given.
        got: String,
    },
}

impl KnobValueError {
    fn invalid(kind: KnobKind, got: String) -> Self {
        KnobValueError::Invalid {
            rule: kind.rule(),
            got,
        }
    }
}

/// A runtime's knobs are not usable together or one of them is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobCheckError {
    /// One knob's value breaks its rule.
    #[error("{knob}: {error}")]
    Value {
        /// The knob.
        knob: &'static str,
        /// What is wrong.
        error: KnobValueError,
    },
    /// The sink would keep less than one segment.
    #[error("retention_max_total_bytes must be >= rollover_max_bytes")]
    RetentionBelowRollover,
}

fn parse_count(text: &str) -> Result<u64, KnobValueError> {
    match KnobKind::Count.parse(text)? {
        KnobValue::Count(n) => Ok(n),
        KnobValue::Seconds(_) => Err(KnobValueError::invalid(KnobKind::Count, text.to_owned())),
    }
}

fn parse_seconds(text: &str) -> Result<f64, KnobValueError> {
    match KnobKind::Seconds.parse(text)? {
        KnobValue::Seconds(x) => Ok(x),
        KnobValue::Count(_) => Err(KnobValueError::invalid(KnobKind::Seconds, text.to_owned())),
    }
}

fn parse_pairs(text: &str) -> Result<u64, KnobValueError> {
    match KnobKind::Pairs.parse(text)? {
        KnobValue::Count(n) => Ok(n),
        KnobValue::Seconds(_) => Err(KnobValueError::invalid(KnobKind::Pairs, text.to_owned())),
    }
}

impl RuntimeKnobs {
    /// Whether no knob is set.
    pub fn is_empty(&self) -> bool {
        *self == RuntimeKnobs::default()
    }

    /// Whether the knob `name` is set.
    pub fn is_set(&self, name: &str) -> bool {
        find(name).is_some_and(|k| k.get(self).is_some())
    }

    /// Sets knob `name` from its text form; the error says what is wrong with the value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), KnobValueError> {
        let knob = find(name).ok_or(KnobValueError::Unknown)?;
        let value = knob.parse(value)?;
        knob.put(self, Some(value));
        Ok(())
    }

    /// Checks knobs that arrived already parsed (over the wire, or built in code) by the
    /// table's rules, and that the sink keeps at least one segment; the error names the knob.
    pub fn check(&self) -> Result<(), KnobCheckError> {
        for knob in &KNOBS {
            if let Some(value) = knob.get(self) {
                knob.check(value).map_err(|error| KnobCheckError::Value {
                    knob: knob.name,
                    error,
                })?;
            }
        }
        let rollover = self
            .rollover_max_bytes
            .unwrap_or(DEFAULT_ROLLOVER_MAX_BYTES);
        let retained = self
            .retention_max_total_bytes
            .unwrap_or(DEFAULT_RETENTION_MAX_TOTAL_BYTES);
        if retained < rollover {
            return Err(KnobCheckError::RetentionBelowRollover);
        }
        Ok(())
    }

    /// Sampling interval, if set (clamped to the accepted range, so it never panics).
    pub fn sampling_interval(&self) -> Option<Duration> {
        self.sampling_interval_seconds.map(seconds)
    }

    /// Seconds before an idle sink batch is written.
    pub fn flush_every(&self) -> Duration {
        seconds(
            self.flush_every_seconds
                .unwrap_or(DEFAULT_FLUSH_EVERY_SECONDS),
        )
    }

    /// Pairs the overhead scenario runs at least.
    pub fn overhead_min_pairs(&self) -> u64 {
        self.overhead_min_pairs
            .unwrap_or(DEFAULT_OVERHEAD_MIN_PAIRS)
            .clamp(OVERHEAD_MIN_PAIRS_FLOOR, OVERHEAD_MAX_PAIRS)
    }

    /// Time cap of the overhead scenario (clamped to the accepted range, so it never panics).
    pub fn overhead_max_duration(&self) -> Duration {
        seconds(
            self.overhead_max_seconds
                .unwrap_or(DEFAULT_OVERHEAD_MAX_SECONDS),
        )
    }

    /// These knobs without the measurement knobs (those a baseline need not match).
    pub fn without_measurement(&self) -> RuntimeKnobs {
        let mut out = *self;
        for knob in KNOBS.iter().filter(|k| k.measurement) {
            knob.put(&mut out, None);
        }
        out
    }
}

/// A seconds knob as a duration, clamped to the accepted range so it never panics.
fn seconds(x: f64) -> Duration {
    Duration::from_secs_f64(x.clamp(MIN_SECONDS_KNOB, MAX_SECONDS_KNOB))
}

/// A tuning-knob input could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}: {}: {}",
    crate::input::one_line(.origin),
    crate::input::one_line(.key),
    crate::input::one_line(.message)
)]
pub struct KnobError {
    /// The knobs file, or `--set`.
    pub origin: String,
    /// `<runtime>.<knob>` (or the runtime alone).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Knobs of every runtime, by runtime name.
pub type Knobs = BTreeMap<String, RuntimeKnobs>;

/// Reads a knobs file: a JSON object `{"<runtime>": {"<knob>": value, …}, …}`. Every value
/// is checked; `known_runtimes` are the runtime names this build has.
pub fn parse_knobs_file(
    origin: &str,
    text: &[u8],
    known_runtimes: &[&str],
) -> Result<Knobs, KnobError> {
    let err = |key: &str, message: String| KnobError {
        origin: origin.to_owned(),
        key: key.to_owned(),
        message,
    };
    let value = crate::input::parse_json(text).map_err(|e| err("(file)", e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| err("(file)", "must be a JSON object of runtimes".into()))?;
    let mut knobs = Knobs::new();
    for (runtime, entries) in object {
        if !known_runtimes.contains(&runtime.as_str()) {
            return Err(err(
                runtime,
                format!("unknown runtime (known: {})", known_runtimes.join(", ")),
            ));
        }
        let entries = entries
            .as_object()
            .ok_or_else(|| err(runtime, "must be a JSON object of knobs".into()))?;
        let slot = knobs.entry(runtime.clone()).or_default();
        for (name, v) in entries {
            let key = format!("{runtime}.{name}");
            let text = match v {
                serde_json::Value::Number(n) => n.to_string(),
                other => return Err(err(&key, format!("must be a number, got {other}"))),
            };
            slot.set(name, &text)
                .map_err(|m| err(&key, m.to_string()))?;
        }
    }
    knobs.retain(|_, k| !k.is_empty());
    Ok(knobs)
}

/// Applies one `--set <runtime>.<knob>=<value>` to `knobs`.
pub fn apply_knob_assignment(
    knobs: &mut Knobs,
    assignment: &str,
    known_runtimes: &[&str],
) -> Result<(), KnobError> {
    let err = |key: &str, message: String| KnobError {
        origin: "--set".to_owned(),
        key: key.to_owned(),
        message,
    };
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| err(assignment, "expected <runtime>.<knob>=<value>".into()))?;
    let (runtime, name) = key
        .split_once('.')
        .ok_or_else(|| err(key, "expected <runtime>.<knob>".into()))?;
    if !known_runtimes.contains(&runtime) {
        return Err(err(
            key,
            format!("unknown runtime (known: {})", known_runtimes.join(", ")),
        ));
    }
    knobs
        .entry(runtime.to_owned())
        .or_default()
        .set(name, value)
        .map_err(|m| err(key, m.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 1] = ["gpumemprof_cpu"];

    #[test]
    fn knob_file_and_flags_are_checked_key_by_key() {
        let k = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"sampling_interval_seconds": 0.5, "max_history": 100}}"#,
            &KNOWN,
        )
        .unwrap();
        assert_eq!(k["gpumemprof_cpu"].sampling_interval_seconds, Some(0.5));
        assert_eq!(k["gpumemprof_cpu"].max_history, Some(100));

        let e =
            parse_knobs_file("k.json", br#"{"gpumemprof_cpu": {"nope": 1}}"#, &KNOWN).unwrap_err();
        assert_eq!(e.key, "gpumemprof_cpu.nope");
        assert!(
            e.to_string()
                .starts_with("k.json: gpumemprof_cpu.nope: unknown knob")
        );
        let e = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"flush_every_events": 0}}"#,
            &KNOWN,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.json: gpumemprof_cpu.flush_every_events: must be an integer >= 1, got '0'"
        );
        let e = parse_knobs_file("k.json", br#"{"tf": {}}"#, &KNOWN).unwrap_err();
        assert_eq!(e.key, "tf");
        let e = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"sampling_interval_seconds": "fast"}}"#,
            &KNOWN,
        )
        .unwrap_err();
        assert!(e.message.contains("must be a number"));
        assert!(parse_knobs_file("k.json", b"[", &KNOWN).is_err());

        let mut knobs = k;
        apply_knob_assignment(&mut knobs, "gpumemprof_cpu.rollover_max_events=500", &KNOWN)
            .unwrap();
        assert_eq!(knobs["gpumemprof_cpu"].rollover_max_events, Some(500));
        let e = apply_knob_assignment(
            &mut knobs,
            "gpumemprof_cpu.sampling_interval_seconds=-1",
            &KNOWN,
        )
        .unwrap_err();
        assert_eq!(e.origin, "--set");
        assert!(apply_knob_assignment(&mut knobs, "gpumemprof_cpu", &KNOWN).is_err());
    }

    #[test]
    fn overhead_measurement_knobs_are_checked_and_not_compared_with_a_baseline() {
        let mut k = RuntimeKnobs::default();
        assert_eq!(k.overhead_min_pairs(), DEFAULT_OVERHEAD_MIN_PAIRS);
        assert_eq!(
            k.overhead_max_duration(),
            Duration::from_secs_f64(DEFAULT_OVERHEAD_MAX_SECONDS)
        );
        for bad in ["5", "201", "x"] {
            assert_eq!(
                k.set("overhead_min_pairs", bad).unwrap_err().to_string(),
                format!("must be an integer from 6 to 200, got '{bad}'")
            );
        }
        k.set("overhead_min_pairs", "6").unwrap();
        k.set("overhead_max_seconds", "20").unwrap();
        assert_eq!(k.overhead_min_pairs(), 6);
        assert_eq!(k.overhead_max_duration(), Duration::from_secs(20));
        assert!(k.set("overhead_max_seconds", "0").is_err());
        let wire = RuntimeKnobs {
            overhead_min_pairs: Some(2),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            wire.check().unwrap_err().to_string(),
            "overhead_min_pairs: must be an integer from 6 to 200, got 2"
        );
    }

    #[test]
    fn seconds_knobs_must_become_real_durations_and_errors_stay_one_line() {
        let mut k = RuntimeKnobs::default();
        for bad in ["1e30", "1e-10", "inf", "0"] {
            assert_eq!(
                k.set("sampling_interval_seconds", bad)
                    .unwrap_err()
                    .to_string(),
                format!("must be a number of seconds from 0.000001 to 86400, got '{bad}'")
            );
        }
        let wire = RuntimeKnobs {
            flush_every_seconds: Some(1e30),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            wire.check().unwrap_err().to_string(),
            "flush_every_seconds: must be a number of seconds from 0.000001 to 86400, got 1000000000000000000000000000000"
        );
        let e = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"x\ny": 1}}"#,
            &["gpumemprof_cpu"],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.json: gpumemprof_cpu.x\\ny: unknown knob (known: sampling_interval_seconds, flush_every_events, flush_every_seconds, rollover_max_bytes, rollover_max_events, retention_max_files, retention_max_total_bytes, max_history, overhead_min_pairs, overhead_max_seconds)"
        );
    }
    #[test]
    fn the_table_drives_parsing_checks_and_advice() {
        // Every field of RuntimeKnobs has a row, and the rows round-trip through set/get.
        let mut k = RuntimeKnobs::default();
        for knob in &KNOBS {
            let text = match knob.kind {
                KnobKind::Count => "7",
                KnobKind::Pairs => "12",
                KnobKind::Seconds => "0.5",
            };
            k.set(knob.name, text).unwrap();
            assert!(k.is_set(knob.name), "{}", knob.name);
            assert_eq!(knob.get(&k).unwrap().to_string(), text);
        }
        assert_eq!(
            serde_json::to_value(k).unwrap().as_object().unwrap().len(),
            KNOBS.len()
        );
        assert_eq!(k.without_measurement().overhead_min_pairs, None);
        assert_eq!(k.without_measurement().overhead_max_seconds, None);
        assert_eq!(k.without_measurement().max_history, Some(7));
        assert_eq!(
            k.set("nope", "1").unwrap_err().to_string(),
            format!("unknown knob (known: {})", known_names())
        );
        // Defaults: a sink that keeps less than one segment is refused, naming the knob.
        let small = RuntimeKnobs {
            retention_max_total_bytes: Some(1_000),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            small.check().unwrap_err().to_string(),
            "retention_max_total_bytes must be >= rollover_max_bytes"
        );
        let ok = RuntimeKnobs {
            retention_max_total_bytes: Some(1_000),
            rollover_max_bytes: Some(1_000),
            ..RuntimeKnobs::default()
        };
        assert_eq!(ok.check(), Ok(()));
        // Advice order is the table's, except for lost telemetry (retention first).
        let names = |metric| acting_on(metric).iter().map(|k| k.name).collect::<Vec<_>>();
        assert_eq!(
            names("runtime_overhead_pct"),
            [
                "sampling_interval_seconds",
                "flush_every_events",
                "flush_every_seconds"
            ]
        );
        assert_eq!(
            names("final_retained_files"),
            [
                "rollover_max_bytes",
                "rollover_max_events",
                "retention_max_files",
                "retention_max_total_bytes"
            ]
        );
        assert_eq!(
            names("history_dropped_samples"),
            ["sampling_interval_seconds", "max_history"]
        );
        assert_eq!(names("telemetry_loss")[0], "retention_max_files");
        assert!(names("peak_memory").is_empty());
    }
}
