//! The report's serde model: the runtime sections jobs produce with their overhead and soak
//! blocks, the telemetry losses they record, the gate checks, the verdict, and the report
//! itself. Keys are emitted in a fixed order (struct field order, maps sorted), so two reports
//! of the same run diff cleanly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ComparableConfig, RunConfig};
use crate::report::fleet::{AgentSection, ClassSummary};
use crate::stats::{Estimate, Interval};

/// `version` of every report.
pub const REPORT_VERSION: &str = "v0.4";

/// Whether a runtime ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    /// It ran; its blocks are present.
    Ok,
    /// It could not run on this host (the reason says why).
    Unavailable,
}

/// One scenario's summary (`summary.json` in its directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSummary {
    /// `unprofiled` or `tracked_default`.
    pub name: String,
    /// Wall time of the timed region.
    pub wall_seconds: f64,
    /// Process CPU time of the timed region.
    pub cpu_seconds: f64,
    /// Workload checksum (the same for both scenarios of a trial).
    pub checksum: u64,
    /// Where the scenario's files are.
    pub artifact_dir: String,
    /// Bytes under `artifact_dir`, `summary.json` included.
    pub artifact_size_bytes: u64,
    /// Samples due (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_count: Option<u64>,
    /// Samples emitted (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emitted_samples: Option<u64>,
    /// Records the tracker produced (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_count: Option<u64>,
    /// Collector transitions (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collector_failure_event_count: Option<u64>,
    /// Tracker statistics (tracked only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<TrackerStats>,
    /// The sink's manifest (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
}

/// The overhead metrics of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverheadMetrics {
    /// Signed % of tracked vs unprofiled wall time.
    pub runtime_overhead_pct: f64,
    /// Signed % of tracked vs unprofiled CPU time.
    pub cpu_overhead_pct: f64,
    /// `max(0, tracked dir − unprofiled dir)`.
    pub artifact_growth_bytes: u64,
}

/// The two scenarios of the selected trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverheadScenarios {
    /// The workload alone.
    pub unprofiled: ScenarioSummary,
    /// The workload with the runtime tracking in its default mode.
    pub tracked_default: ScenarioSummary,
}

/// One unprofiled/tracked pair of the overhead scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverheadPair {
    /// Whether the tracked run went first (pairs alternate: AB, BA, AB, …).
    pub tracked_first: bool,
    /// `(tracked − unprofiled wall time) / samples`, in ns.
    pub added_wall_ns_per_sample: f64,
    /// `(tracked − unprofiled CPU time) / samples`, in ns.
    pub added_cpu_ns_per_sample: f64,
    /// Signed % of tracked vs unprofiled wall time.
    pub runtime_overhead_pct: f64,
    /// Signed % of tracked vs unprofiled CPU time.
    pub cpu_overhead_pct: f64,
}

/// Added cost per tracked sample, estimated from the pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AddedCost {
    /// Wall time, ns per sample.
    pub wall: Estimate,
    /// Process CPU time, ns per sample.
    pub cpu: Estimate,
}

/// The overhead metrics' estimates with their 95 % intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverheadEstimates {
    /// Hodges–Lehmann estimate of the per-pair `runtime_overhead_pct`.
    pub runtime_overhead_pct: Estimate,
    /// Hodges–Lehmann estimate of the per-pair `cpu_overhead_pct`.
    pub cpu_overhead_pct: Estimate,
}

/// The smallest true shift this run's pairs detect with 95 % probability by a one-sided test
/// at 2.5 % (the side of a two-sided 95 % interval), from the pairs' normal-scaled MAD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectableShift {
    /// Wall time, ns per sample.
    pub wall_ns_per_sample: f64,
    /// CPU time, ns per sample.
    pub cpu_ns_per_sample: f64,
    /// `runtime_overhead_pct`, in percentage points.
    pub runtime_overhead_pct: f64,
    /// `cpu_overhead_pct`, in percentage points.
    pub cpu_overhead_pct: f64,
}

/// Why the overhead scenario stopped adding pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairStop {
    /// The `runtime_overhead_pct` interval became narrow enough.
    Precision,
    /// The time cap was reached.
    TimeCap,
    /// The most pairs accepted were run.
    MaxPairs,
}

/// The overhead block of a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverheadBlock {
    /// The representative pair's scenarios (a pair near the estimate: see `docs/harness.md`).
    pub scenarios: OverheadScenarios,
    /// The estimates: `runtime_overhead_pct` and `cpu_overhead_pct` are the Hodges–Lehmann
    /// estimates over the pairs; `artifact_growth_bytes` is the representative pair's
    /// (recomputed from the promoted summaries).
    pub metrics: OverheadMetrics,
    /// Pairs run.
    pub trial_count: u32,
    /// Always 0.5: the representative pair is one near the estimate (kept for readers of the
    /// five-trial format, whose pick was a quantile).
    pub trial_quantile: f64,
    /// 1-based index of the representative pair.
    pub selected_trial: u32,
    /// Every pair's metrics, in pair order.
    pub trial_metrics: Vec<OverheadMetrics>,
    /// Every pair's added cost, in pair order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<OverheadPair>,
    /// Added cost per tracked sample with its 95 % interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_ns_per_sample: Option<AddedCost>,
    /// The overhead metrics with their 95 % intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimates: Option<OverheadEstimates>,
    /// The smallest regression this run detects with 95 % probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectable_shift: Option<DetectableShift>,
    /// Why no more pairs were run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<PairStop>,
    /// Scratch root used for trial files, if any.
    pub scratch_root: Option<String>,
    /// The trials whose telemetry sink dropped records, failed a write or did not complete its
    /// session (the selected one included; absent when none did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telemetry_losses: Vec<TelemetryLoss>,
}

/// What one tracked scenario's telemetry sink lost or could not finish, read from the tracker
/// statistics the agent reports (`stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryLoss {
    /// `soak`, `retention_validation`, or `overhead trial <n>`.
    pub scenario: String,
    /// The sink's directory.
    pub sink_dir: String,
    /// Records written and fsynced.
    pub durable_records: u64,
    /// Records dropped because they could not be written.
    pub dropped_records: u64,
    /// Bytes of those records.
    pub dropped_bytes: u64,
    /// Failed writes, fsyncs, cut-backs, segment deletions and manifest writes.
    pub flush_failures: u64,
    /// How the telemetry session ended (`completed`, `incomplete`, `interrupted`, …).
    pub session_status: String,
    /// The first sink error, `<operation> <path>: <OS error>`.
    pub first_error: Option<String>,
    /// The last sink error.
    pub last_error: Option<String>,
}

impl TelemetryLoss {
    /// The loss recorded in a tracker's `stats`, or None when its sink kept everything and
    /// completed its session (or the statistics carry no session). `sink_dir` is used when the
    /// statistics do not name the sink's directory.
    pub fn from_stats(scenario: &str, stats: &TrackerStats, sink_dir: &str) -> Option<Self> {
        let loss = stats.loss.as_deref()?;
        Some(TelemetryLoss {
            scenario: scenario.to_owned(),
            sink_dir: loss.sink_dir.clone().unwrap_or_else(|| sink_dir.to_owned()),
            durable_records: loss.durable_records,
            dropped_records: loss.dropped_records,
            dropped_bytes: loss.dropped_bytes,
            flush_failures: loss.flush_failures,
            session_status: loss.session_status.clone(),
            first_error: loss.first_error.clone(),
            last_error: loss.last_error.clone(),
        })
    }

    /// Whether this loss makes the verdict inconclusive instead of failing the gate: the
    /// session did not complete although nothing was dropped and no write failed (the sink
    /// could not be closed, so what reached the disk is unknown). Dropped records and failed
    /// writes fail the gate.
    pub fn is_inconclusive(&self) -> bool {
        self.dropped_records == 0 && self.flush_failures == 0
    }
}

/// A tracker's statistics (`stats`): free-form JSON whose keys vary with the runtime and its
/// version, kept as the text the agent sent rather than as a [`serde_json::Value`]. At 10,000
/// agents the two maps of a soak section were about 10 KiB each in memory as values, for 2 KB
/// of text, and most of the time spent reading and writing a section. What the verdict needs
/// of them, the sink's losses, is read once when they are made ([`TelemetryLoss::from_stats`]).
///
/// Read under the same rules as any free-form field: an object that repeats a key is refused,
/// at any depth. Written as an object with its keys sorted, like every map of the report.
#[derive(Debug, Clone)]
pub struct TrackerStats {
    json: Box<serde_json::value::RawValue>,
    /// What the sink lost, when it lost anything or did not complete its session.
    loss: Option<Box<SinkLoss>>,
}

/// The sink's side of [`TelemetryLoss`], read from the statistics once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SinkLoss {
    sink_dir: Option<String>,
    durable_records: u64,
    dropped_records: u64,
    dropped_bytes: u64,
    flush_failures: u64,
    session_status: String,
    first_error: Option<String>,
    last_error: Option<String>,
}

/// The top-level entries of a JSON object, borrowed from its text, in the order written.
struct Entries<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key<'a>(std::borrow::Cow<'a, str>);
        impl<'de> Deserialize<'de> for Key<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl<'de> serde::de::Visitor<'de> for KeyVisitor {
                    type Value = Key<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                        Ok(Key(std::borrow::Cow::Borrowed(v)))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                        Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
                    }
                }
                d.deserialize_str(KeyVisitor)
            }
        }
        struct EntriesVisitor;
        impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries<'de>, A::Error> {
                let mut entries: Vec<(
                    std::borrow::Cow<'de, str>,
                    &'de serde_json::value::RawValue,
                )> = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                // Sorted, a repeated key sits next to itself: n log n however many keys a
                // hostile section sends.
                let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
                keys.sort_unstable();
                if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
                    return Err(crate::input::repeated_key(pair[0]));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl TrackerStats {
    /// Statistics from their JSON text: checked (no repeated key at any depth) and the sink's
    /// losses read.
    fn from_json(json: Box<serde_json::value::RawValue>) -> Result<Self, serde_json::Error> {
        let loss = if json.get().starts_with('{') {
            let Entries(entries) = serde_json::from_str(json.get())?;
            for (_, value) in &entries {
                // Scalars are checked by the parse; objects and arrays for repeated keys.
                if value.get().starts_with(['{', '[']) {
                    crate::input::strict_check(value.get())?;
                }
            }
            SinkLoss::from_entries(&entries)
        } else {
            crate::input::strict_check(json.get())?;
            None
        };
        Ok(TrackerStats { json, loss })
    }

    /// Statistics from any serializable value (an agent's own statistics, a test's `json!`).
    /// A value that cannot be written as JSON gives `null` statistics.
    pub fn of(value: &impl Serialize) -> Self {
        serde_json::value::to_raw_value(value)
            .and_then(TrackerStats::from_json)
            .unwrap_or_else(|_| TrackerStats::of(&serde_json::Value::Null))
    }

    /// The statistics as a JSON value (parsed each time: for diagnostics and tests).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.json.get()).unwrap_or_default()
    }

    /// One statistic (`Null` when absent), parsed each time.
    pub fn get(&self, key: &str) -> serde_json::Value {
        self.to_value()
            .get_mut(key)
            .map(serde_json::Value::take)
            .unwrap_or_default()
    }

    /// These statistics with `key` set to `value`.
    pub fn with(&self, key: &str, value: serde_json::Value) -> Self {
        let mut all = self.to_value();
        if let Some(map) = all.as_object_mut() {
            map.insert(key.to_owned(), value);
        }
        TrackerStats::of(&all)
    }
}

impl SinkLoss {
    /// The loss the entries record, or None when the sink kept everything and completed its
    /// session (or the statistics carry no session).
    fn from_entries(
        entries: &[(std::borrow::Cow<'_, str>, &serde_json::value::RawValue)],
    ) -> Option<Box<Self>> {
        let value = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| serde_json::from_str::<serde_json::Value>(v.get()).ok())
        };
        let count = |key: &str| value(key).and_then(|v| v.as_u64());
        let text = |key: &str| {
            value(key).and_then(|v| v.as_str().map(|t| crate::input::one_line(t).into_owned()))
        };
        let session_status = text("session_status")?;
        let dropped_records = count("sink_dropped_records").unwrap_or(0);
        let flush_failures = count("sink_flush_failures").unwrap_or(0);
        if dropped_records == 0 && flush_failures == 0 && session_status == "completed" {
            return None;
        }
        Some(Box::new(SinkLoss {
            sink_dir: text("sink_dir"),
            durable_records: count("sink_durable_records").unwrap_or(0),
            dropped_records,
            dropped_bytes: count("sink_dropped_bytes").unwrap_or(0),
            flush_failures,
            session_status,
            first_error: text("sink_first_error"),
            last_error: text("sink_last_error"),
        }))
    }
}

impl From<serde_json::Value> for TrackerStats {
    fn from(value: serde_json::Value) -> Self {
        TrackerStats::of(&value)
    }
}

impl PartialEq for TrackerStats {
    /// Equal as JSON values (key order and spacing aside).
    fn eq(&self, other: &Self) -> bool {
        self.json.get() == other.json.get() || self.to_value() == other.to_value()
    }
}

impl Serialize for TrackerStats {
    /// Scalars are written as they were read; objects and arrays (rare in statistics) as values,
    /// so that a pretty writer lays them out like the rest of the report.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        fn write<S: serde::Serializer>(
            json: &serde_json::value::RawValue,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            if json.get().starts_with(['{', '[']) {
                serde_json::from_str::<serde_json::Value>(json.get())
                    .map_err(serde::ser::Error::custom)?
                    .serialize(serializer)
            } else {
                json.serialize(serializer)
            }
        }
        struct Raw<'a>(&'a serde_json::value::RawValue);
        impl Serialize for Raw<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                write(self.0, serializer)
            }
        }
        if !self.json.get().starts_with('{') {
            return write(&self.json, serializer);
        }
        let Entries(mut entries) =
            serde_json::from_str(self.json.get()).map_err(serde::ser::Error::custom)?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map = serializer.serialize_map(Some(entries.len()))?;
        for (key, value) in &entries {
            map.serialize_entry(key, &Raw(value))?;
        }
        map.end()
    }
}

/// The name under which serde_json hands a value's text to a `Deserialize` that asks for it
/// (what `Box<RawValue>` asks for); any other deserializer sees an ordinary newtype.
const RAW_JSON_TOKEN: &str = "$serde_json::private::RawValue";

impl<'de> Deserialize<'de> for TrackerStats {
    /// From serde_json (text or [`serde_json::Value`]): the text as it is. From any other
    /// deserializer, e.g. the buffered content of a tagged enum such as a worker's
    /// `JobUpdate`: read as a value under the same rules, then written as text.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatsVisitor;
        impl<'de> serde::de::Visitor<'de> for StatsVisitor {
            type Value = Box<serde_json::value::RawValue>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tracker statistics (any JSON value)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                match map.next_key::<std::borrow::Cow<'de, str>>()? {
                    Some(key) if key == RAW_JSON_TOKEN => {
                        let text: String = map.next_value()?;
                        serde_json::value::RawValue::from_string(text)
                            .map_err(serde::de::Error::custom)
                    }
                    _ => Err(serde::de::Error::custom(
                        "tracker statistics handed over as a map, not as JSON text",
                    )),
                }
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                let value = crate::input::strict_value(deserializer)?;
                serde_json::value::to_raw_value(&value).map_err(serde::de::Error::custom)
            }
        }
        let json = deserializer.deserialize_newtype_struct(RAW_JSON_TOKEN, StatsVisitor)?;
        TrackerStats::from_json(json).map_err(|e| {
            // The position within the statistics means nothing to the reader of the document:
            // the document's own parser adds where the statistics end.
            let mut message = e.to_string();
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            serde::de::Error::custom(message)
        })
    }
}

/// The four checks of the forced-churn retention validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionChecks {
    /// `rollover_count > 0`.
    pub rollover_observed: bool,
    /// `pruned_segment_count > 0`.
    pub pruning_observed: bool,
    /// `final_retained_files <= retention_max_files`.
    pub retained_files_bounded: bool,
    /// `final_retained_bytes <= retention_max_total_bytes`.
    pub retained_bytes_bounded: bool,
}

impl RetentionChecks {
    /// The failed checks, by name.
    pub fn failed(&self) -> Vec<&'static str> {
        [
            ("rollover_observed", self.rollover_observed),
            ("pruning_observed", self.pruning_observed),
            ("retained_files_bounded", self.retained_files_bounded),
            ("retained_bytes_bounded", self.retained_bytes_bounded),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
    }
}

/// The retention-validation block of a soak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionValidationBlock {
    /// Most samples it could emit.
    pub sample_limit: u64,
    /// Samples it emitted before both rollover and pruning were seen.
    pub emitted_samples: u64,
    /// Tracker statistics at the end.
    pub stats: TrackerStats,
    /// The checks.
    pub checks: RetentionChecks,
    /// All checks passed.
    pub passed: bool,
    /// Where its files are.
    pub artifact_dir: String,
    /// The sink's manifest.
    pub output_path: String,
    /// Bytes under `artifact_dir`.
    pub artifact_size_bytes: u64,
}

/// The trend of a soak's RSS checkpoints: a leak shows as a slope, not as a difference of two
/// readings that one allocator step can move either way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RssTrend {
    /// Checkpoints the trend is fitted to (the warm-up baseline and every one after it).
    pub checkpoints: u64,
    /// Theil–Sen slope (median of the pairwise slopes), bytes per equivalent second.
    pub slope_bytes_per_second: f64,
    /// The slope × 86,400: the growth of 24 h of equivalent time.
    pub growth_per_24h_equiv: f64,
    /// Lower bound of its 95 % interval (Sen's, from the normal approximation of Kendall's S);
    /// absent when too few checkpoints give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_per_24h_equiv_lo: Option<f64>,
    /// Upper bound of its 95 % interval: the budget gate passes the soak when this is within
    /// the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_per_24h_equiv_hi: Option<f64>,
    /// Mann–Kendall statistic S (concordant minus discordant pairs of checkpoints).
    pub mann_kendall_s: i64,
    /// Its one-sided p-value for an increasing trend (normal approximation with the tie
    /// correction and continuity correction); 1 when every reading is equal.
    pub mann_kendall_p_increasing: f64,
    /// RSS projected to 24 h of equivalent time after the warm-up: the fitted line's value there.
    pub projected_rss_at_24h_equiv_bytes: f64,
    /// The endpoint estimate (last − first reading over the measured window, × 86,400), kept
    /// for comparison with the seed's formula.
    pub endpoint_growth_per_24h_equiv: f64,
    /// Median RSS of the first third of the checkpoints.
    pub early_window_median_bytes: f64,
    /// Median RSS of the last third of the checkpoints.
    pub late_window_median_bytes: f64,
    /// Theil–Sen growth per 24 h of equivalent time over the last half of the checkpoints: a
    /// leak that starts late shows here before it moves the whole-soak slope.
    pub late_window_growth_per_24h_equiv: f64,
}

/// One RSS reading of a soak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RssCheckpoint {
    /// Equivalent seconds since the warm-up checkpoint (the trend's time axis).
    pub equivalent_seconds: f64,
    /// The process's RSS there.
    pub rss_bytes: u64,
}

/// The soak block of a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakBlock {
    /// `<runtime>_soak`.
    pub name: String,
    /// Profile.
    pub profile: String,
    /// Samples emitted.
    pub sample_count: u64,
    /// Samples × interval.
    pub equivalent_seconds: f64,
    /// Equivalent hours.
    pub equivalent_hours: f64,
    /// Wall time of the sample loop and finish.
    pub wall_seconds: f64,
    /// Process CPU time over the same span.
    pub cpu_seconds: f64,
    /// Samples per wall second.
    pub samples_per_second: f64,
    /// Where the soak's files are.
    pub artifact_dir: String,
    /// The sink's manifest.
    pub output_path: String,
    /// Bytes under `artifact_dir`.
    pub artifact_size_bytes: u64,
    /// RSS growth per 24 h of equivalent time: the Theil–Sen slope of the checkpoints after the
    /// warm-up (see [`RssTrend`]), or, with fewer than 3 checkpoints, the endpoint delta over
    /// the measured window normalised to 24 h.
    pub rss_growth_per_24h_equiv: f64,
    /// The leak trend of the RSS checkpoints, from the warm-up baseline on (absent with fewer
    /// than 3 checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_trend: Option<RssTrend>,
    /// The RSS checkpoints the trend is fitted to, in order (absent in reports that predate
    /// them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rss_checkpoints: Vec<RssCheckpoint>,
    /// Largest RSS increase over the baseline at any checkpoint.
    pub max_rss_delta_bytes: u64,
    /// Samples up to and including the baseline checkpoint.
    pub rss_warmup_sample_count: u64,
    /// Samples after it.
    pub rss_measured_sample_count: u64,
    /// Equivalent seconds after it.
    pub rss_measured_equivalent_seconds: f64,
    /// Checkpoints read.
    pub rss_checkpoint_count: u64,
    /// RSS at the first checkpoint.
    pub rss_baseline_bytes: u64,
    /// RSS at the last checkpoint.
    pub rss_final_bytes: u64,
    /// Final − baseline.
    pub rss_delta_bytes: i64,
    /// RSS after finish.
    pub rss_after_finish_bytes: u64,
    /// After-finish − final (reported, never gated).
    pub finalization_rss_delta_bytes: i64,
    /// Collector transitions.
    pub collector_failure_event_count: u64,
    /// Events evicted from the history window.
    pub history_dropped_events: u64,
    /// Samples evicted.
    pub history_dropped_samples: u64,
    /// Alerts evicted.
    pub history_dropped_alerts: u64,
    /// Sink rollovers.
    pub rollover_count: u64,
    /// Segments pruned.
    pub pruned_segment_count: u64,
    /// Bytes pruned.
    pub pruned_bytes: u64,
    /// Segments retained.
    pub final_retained_files: u64,
    /// Bytes retained.
    pub final_retained_bytes: u64,
    /// Events kept.
    pub history_retained_events: u64,
    /// Samples kept.
    pub history_retained_samples: u64,
    /// Alerts kept.
    pub history_retained_alerts: u64,
    /// Collector health at the end.
    pub collector_health_status: String,
    /// Tracker statistics at the end.
    pub stats: TrackerStats,
    /// The forced-churn subtest.
    pub retention_validation: RetentionValidationBlock,
}

/// One runtime's section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSection {
    /// Whether it ran.
    pub status: RuntimeStatus,
    /// Why it could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Effective sampling interval in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_interval: Option<f64>,
    /// Overhead block (modes `overhead` and `all`). Boxed, as is the soak block: a section
    /// is moved between the registry, the report and its maps, and a fleet holds one per job,
    /// so it stays a few dozen bytes wide instead of carrying both blocks' room inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead: Option<Box<OverheadBlock>>,
    /// Soak block (modes `soak` and `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<Box<SoakBlock>>,
}

impl RuntimeSection {
    /// A runtime that could not run, and why.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        RuntimeSection {
            status: RuntimeStatus::Unavailable,
            reason: Some(reason.into()),
            default_interval: None,
            overhead: None,
            soak: None,
        }
    }
}

/// One budget check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheck {
    /// Measured value.
    pub value: f64,
    /// The budget.
    pub max_allowed: f64,
    /// The budget file key that applied (agent, hardware class, or plain runtime key).
    pub threshold_key: String,
    /// Without an interval `value <= max_allowed`; with one, its upper bound `hi <=
    /// max_allowed` (the budget is shown to hold).
    pub passed: bool,
    /// Lower bound of the value's 95 % interval (measured metrics such as the overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lo: Option<f64>,
    /// Upper bound of the value's 95 % interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hi: Option<f64>,
    /// The interval straddles the budget (`lo <= max_allowed < hi`): neither shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
}

/// One regression check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionCheck {
    /// Measured value.
    pub current_value: f64,
    /// Baseline value.
    pub baseline_value: f64,
    /// `current − baseline`.
    pub delta: f64,
    /// Allowed increase.
    pub max_regression: f64,
    /// The tolerance file key that applied (agent, hardware class, or plain runtime key).
    pub threshold_key: String,
    /// `delta <= max_regression`, and for a two-sided check also `delta >= −max_regression`.
    pub passed: bool,
    /// Whether the check is two-sided (see
    /// [`TWO_SIDED_METRICS`](crate::report::TWO_SIDED_METRICS)): it then also fails when
    /// `delta < −max_regression`.
    #[serde(default)]
    pub two_sided: bool,
    /// Lower bound of the 95 % interval of `delta` (measured metrics such as the overhead and
    /// the RSS growth: the current value's interval minus the baseline, widened by a
    /// calibrated baseline's uncertainty). With an interval the check is the dual criterion,
    /// with `m` the material shift: it fails when `delta_lo > 0` and `delta > m`, is
    /// inconclusive when `delta > m` but `delta_lo <= 0`, and otherwise passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_lo: Option<f64>,
    /// Upper bound of the 95 % interval of `delta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_hi: Option<f64>,
    /// Neither a material regression nor its absence is shown (by the dual criterion, or
    /// because the regression is not significant once every interval-gated check of the
    /// report is corrected for; see `p_adjusted`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
    /// The A/A noise of `delta` on this agent's hardware class, from a calibrated baseline's
    /// distribution (absent for a point baseline, whose noise counts as 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<f64>,
    /// The shift that counts as a regression, `max(max_regression, 3 × noise)` (present with
    /// `noise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material_shift: Option<f64>,
    /// One-sided p-value of "delta > 0" from the normal approximation of the interval (checks
    /// with an interval): `1 − Φ(delta / se)`, `se = (delta_hi − delta_lo) / (2 × 1.959964)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// `p_value` adjusted by Holm's method over every check of the report that has one. A
    /// check the dual criterion fails is inconclusive when this is at least 0.025.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_adjusted: Option<f64>,
}

/// The fleet's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed on every agent.
    Pass,
    /// A check failed (or a diagnostic was raised) with every agent accounted for.
    Fail,
    /// An agent was lost, timed out or failed, or a required runtime was unavailable: the
    /// run proves nothing either way.
    Inconclusive,
}

impl Verdict {
    /// The verdict's name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The baseline as recorded in a regression report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineSnapshot {
    /// Baseline file version.
    pub version: String,
    /// Its (matching) config.
    pub config: ComparableConfig,
    /// Its metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Its A/A distributions, when it was calibrated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub distributions: BTreeMap<String, crate::gate::MetricDistribution>,
}

/// Which fleetgate made a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generator {
    /// The program (`fleetgate`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The git commit it was built from (12 hex digits, `-dirty` when the tree had changes), or
    /// `unknown`.
    pub commit: String,
}

/// The v0.4 report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `v0.4`.
    pub version: String,
    /// The fleetgate that made it (set by the coordinator; absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub timestamp_utc: String,
    /// Profile name.
    pub profile: String,
    /// Mode name.
    pub mode: String,
    /// Gate mode name.
    pub gate_mode: String,
    /// What ran.
    pub config: RunConfig,
    /// Per runtime, by name.
    pub runtimes: BTreeMap<String, RuntimeSection>,
    /// Flattened `<runtime>.<metric>` values that the gate reads.
    pub metrics: BTreeMap<String, f64>,
    /// The 95 % intervals of the measured metrics among them (the overhead percentages): the
    /// gates decide these by their bounds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_intervals: BTreeMap<String, Interval>,
    /// What the gate can resolve: per gated overhead metric, the smallest regression this
    /// run detects with 95 % probability, and a line wherever a budget or tolerance is tighter
    /// than that. Advice only: it does not change the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_power: Vec<String>,
    /// Per agent whose metric lies far from its hardware class's (an outlier of the class
    /// summary), one line naming it. Advice only: it does not change the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet_advice: Vec<String>,
    /// One line per gated metric and hardware class whose series in the run history has a
    /// change point among its last few runs (`fleetgate run` with a history). Advice only: it
    /// does not change the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_advice: Vec<String>,
    /// Budgets (budget gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budgets: Option<BTreeMap<String, f64>>,
    /// Budget checks (budget gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_checks: Option<BTreeMap<String, BudgetCheck>>,
    /// Baseline (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSnapshot>,
    /// Tolerances (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerances: Option<BTreeMap<String, f64>>,
    /// Regression checks (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression_checks: Option<BTreeMap<String, RegressionCheck>>,
    /// Everything that failed, with context and the knob to adjust next.
    pub failure_diagnostics: Vec<String>,
    /// Every check passed and no diagnostic was raised (on every agent, tolerated ones too).
    pub passed: bool,
    /// `pass`, `fail`, or `inconclusive` (an agent lost, timed out or failed, a required
    /// runtime unavailable, or a telemetry session that could not be closed: never a silent
    /// pass), decided per hardware class by the run's quorum: with a quorum below 1 the verdict
    /// can be `pass` while `passed` is false, when every failing agent was tolerated.
    pub verdict: Verdict,
    /// Per agent: facts, hardware class, labels, how its part ended, its jobs.
    pub agents: BTreeMap<String, AgentSection>,
    /// Per hardware class: its agents, how many passed against its quorum, the worst and
    /// median of every metric, and its outliers.
    pub hardware_classes: BTreeMap<String, ClassSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<TrackerStats, String> {
        crate::input::parse_json_as::<TrackerStats>(text.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn tracker_stats_write_the_json_they_read_with_sorted_keys() {
        let text = r#"{"z": 1, "a": "x\"y", "m": {"k": [1, 2.5, null]}, "b": -3, "f": 0.1}"#;
        let stats = parsed(text).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        // Compact and pretty, byte for byte what the same statistics as a value write.
        assert_eq!(
            serde_json::to_string(&stats).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
        assert_eq!(
            serde_json::to_string_pretty(&stats).unwrap(),
            serde_json::to_string_pretty(&value).unwrap()
        );
        assert_eq!(stats.to_value(), value);
        assert_eq!(stats.get("b"), -3);
        assert_eq!(stats.get("absent"), serde_json::Value::Null);
        assert_eq!(stats.with("b", 4.into()).get("b"), 4);
        // Read from a value (a report held as one) the same as from text.
        assert_eq!(
            serde_json::from_value::<TrackerStats>(value.clone()).unwrap(),
            stats
        );
        assert_eq!(TrackerStats::from(value.clone()), stats);
        // Through the buffered content of an internally tagged enum, as a worker's updates are.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "event")]
        enum Tagged {
            Stats { stats: TrackerStats },
        }
        let tagged = serde_json::json!({"event": "Stats", "stats": value});
        let Tagged::Stats { stats: buffered } = serde_json::from_str(&tagged.to_string()).unwrap();
        assert_eq!(buffered, stats);
        assert_eq!(
            serde_json::to_string(&buffered).unwrap(),
            serde_json::to_string(&stats).unwrap()
        );
        let twice = r#"{"event": "Stats", "stats": {"k": 1, "k": 2}}"#;
        let error = serde_json::from_str::<Tagged>(twice)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("key 'k' appears twice"), "{error}");
        for other in ["null", "3", "[1, {\"a\": 2}]", "\"text\""] {
            let stats = parsed(other).unwrap();
            let value: serde_json::Value = serde_json::from_str(other).unwrap();
            assert_eq!(serde_json::to_value(&stats).unwrap(), value, "{other}");
        }
    }

    #[test]
    fn tracker_stats_find_a_repeated_key_among_many() {
        let mut keys: Vec<String> = (0..50_000).map(|i| format!("\"k{i}\": {i}")).collect();
        assert!(parsed(&format!("{{{}}}", keys.join(","))).is_ok());
        keys.push("\"k17\": 0".to_owned());
        assert_eq!(
            parsed(&format!("{{{}}}", keys.join(","))).unwrap_err(),
            "invalid JSON: key 'k17' appears twice"
        );
    }

    #[test]
    fn tracker_stats_refuse_a_repeated_key_at_any_depth() {
        for (text, key) in [
            (r#"{"a": 1, "a": 2}"#, "a"),
            (r#"{"a": {"b": 1, "c": {"d": 1, "d": 1}}}"#, "d"),
            (r#"{"a": [{"e": 1, "e": 1}]}"#, "e"),
            (r#"[{"f": 1, "f": 1}]"#, "f"),
            (r#"{"g\u0061": 1, "ga": 2}"#, "ga"),
        ] {
            let error = parsed(text).unwrap_err();
            assert!(
                error.starts_with(&format!("invalid JSON: key '{key}' appears twice")),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn tracker_stats_read_the_sinks_losses_once() {
        let lost = TrackerStats::from(serde_json::json!({
            "session_status": "incomplete",
            "sink_dropped_records": 7,
            "sink_flush_failures": 2,
            "sink_durable_records": 93,
            "sink_dropped_bytes": 700,
            "sink_first_error": "write a:\nfull",
            "other": {"nested": true},
        }));
        let loss = TelemetryLoss::from_stats("soak", &lost, "/fallback").unwrap();
        assert_eq!(
            (
                loss.sink_dir.as_str(),
                loss.durable_records,
                loss.dropped_records,
                loss.dropped_bytes,
                loss.flush_failures,
                loss.session_status.as_str(),
                loss.first_error.as_deref(),
                loss.last_error.as_deref(),
            ),
            (
                "/fallback",
                93,
                7,
                700,
                2,
                "incomplete",
                Some("write a:\\nfull"),
                None
            )
        );
        let clean = lost
            .with("session_status", "completed".into())
            .with("sink_dropped_records", 0.into())
            .with("sink_flush_failures", 0.into());
        assert_eq!(TelemetryLoss::from_stats("soak", &clean, "/x"), None);
    }
}
