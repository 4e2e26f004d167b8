//! The report's diagnostics: failures (unavailable runtimes, lost telemetry, collector and
//! retention problems, failed checks) and inconclusive checks, each line with the runtime's
//! context and the knob to adjust next, and the gate-power lines.

use std::collections::BTreeMap;

use crate::gate::strip_instance;
use crate::knobs::{Knobs, RuntimeKnobs};
use crate::report::metrics::format_value;
use crate::report::model::{
    BudgetCheck, RegressionCheck, RuntimeSection, RuntimeStatus, TelemetryLoss,
};
use crate::report::significance::{REGRESSION_ALPHA, format_p};

impl TelemetryLoss {
    /// What to do about it, for the diagnostic.
    fn advice(&self) -> &'static str {
        if self.scenario.starts_with("overhead") {
            "free space where the overhead trial files are written (the --overhead-scratch-root, else the artifact root --artifact-root)"
        } else if self.scenario == "soak" {
            "free space under the artifact root (--artifact-root) or move it to a larger filesystem, or keep fewer or smaller soak segments (retention_max_files, retention_max_total_bytes) so they fit"
        } else {
            "free space under the artifact root (--artifact-root) or move it to a larger filesystem; the soak's retained segments share it, so keep fewer or smaller ones (retention_max_files, retention_max_total_bytes)"
        }
    }
}

/// The directory of a sink whose manifest is `output_path`.
fn sink_dir_of(output_path: &str) -> String {
    std::path::Path::new(output_path)
        .parent()
        .map_or_else(|| output_path.to_owned(), |p| p.display().to_string())
}

/// Every telemetry loss of a runtime section: its overhead trials, its soak, its retention
/// validation, in that order.
pub fn telemetry_losses(section: &RuntimeSection) -> Vec<TelemetryLoss> {
    let mut losses = Vec::new();
    if let Some(o) = &section.overhead {
        losses.extend(o.telemetry_losses.iter().cloned());
        // The selected trial's own statistics, for reports whose agent did not list its trials.
        let tracked = &o.scenarios.tracked_default;
        let scenario = format!("overhead trial {}", o.selected_trial);
        if let Some(stats) = &tracked.stats
            && !losses.iter().any(|l| l.scenario == scenario)
            && let Some(loss) = TelemetryLoss::from_stats(
                &scenario,
                stats,
                &sink_dir_of(
                    tracked
                        .output_path
                        .as_deref()
                        .unwrap_or(&tracked.artifact_dir),
                ),
            )
        {
            losses.push(loss);
        }
    }
    if let Some(soak) = &section.soak {
        losses.extend(TelemetryLoss::from_stats(
            "soak",
            &soak.stats,
            &sink_dir_of(&soak.output_path),
        ));
        let rv = &soak.retention_validation;
        losses.extend(TelemetryLoss::from_stats(
            "retention_validation",
            &rv.stats,
            &sink_dir_of(&rv.output_path),
        ));
    }
    losses
}

/// Whether any runtime lost telemetry in a way that makes the verdict inconclusive (see
/// [`TelemetryLoss::is_inconclusive`]).
pub fn has_inconclusive_loss(runtimes: &BTreeMap<String, RuntimeSection>) -> bool {
    runtimes
        .values()
        .flat_map(telemetry_losses)
        .any(|l| l.is_inconclusive())
}

/// The diagnostic line of one loss of runtime `name`, with the runtime's context and advice.
fn loss_line(name: &str, loss: &TelemetryLoss, ctx: &str, knobs: Option<&RuntimeKnobs>) -> String {
    let errors = match (&loss.first_error, &loss.last_error) {
        (Some(first), Some(last)) if first != last => {
            format!("first error: {first}; last error: {last}")
        }
        (Some(e), _) | (None, Some(e)) => format!("error: {e}"),
        (None, None) => "no error recorded".to_owned(),
    };
    if loss.is_inconclusive() {
        return format!(
            "{name}: telemetry session of {} ended {} with nothing dropped and no failed write: the sink could not be closed, so what reached {} is unknown ({errors}); the verdict is inconclusive: rerun, and see the agent's log{ctx}; next knob: none (not a tuning problem)",
            loss.scenario, loss.session_status, loss.sink_dir
        );
    }
    let total = loss.durable_records.saturating_add(loss.dropped_records);
    let knob = if loss.scenario.starts_with("overhead") {
        "next knob: none (the trial's telemetry must fit where it is written)".to_owned()
    } else {
        next_knob_advice("telemetry_loss", knobs)
    };
    format!(
        "{name}: telemetry lost in {}: {} of {total} records dropped ({} bytes), {} failed sink writes, session {}; sink {}; {errors}; {}{ctx}; {knob}",
        loss.scenario,
        loss.dropped_records,
        loss.dropped_bytes,
        loss.flush_failures,
        loss.session_status,
        loss.sink_dir,
        loss.advice(),
    )
}

/// What resolves an inconclusive overhead check.
const RESOLVE_ADVICE: &str = "more pairs (knob overhead_min_pairs, or overhead_max_seconds), the overhead trial files on a RAM scratch root (--overhead-scratch-root), or a quieter host";

/// One line per gated overhead metric: the smallest shift this run detects with 95 %
/// probability, in percentage points and ns per sample, and whether the budget's headroom or
/// the tolerance is tighter than that (with what would resolve it).
pub fn gate_power_lines(
    runtimes: &BTreeMap<String, RuntimeSection>,
    budget_checks: Option<&BTreeMap<String, BudgetCheck>>,
    regression_checks: Option<&BTreeMap<String, RegressionCheck>>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, section) in runtimes {
        let Some(o) = section.overhead.as_ref() else {
            continue;
        };
        let Some(d) = o.detectable_shift else {
            continue;
        };
        for (metric, pct, ns) in [
            (
                "runtime_overhead_pct",
                d.runtime_overhead_pct,
                d.wall_ns_per_sample,
            ),
            ("cpu_overhead_pct", d.cpu_overhead_pct, d.cpu_ns_per_sample),
        ] {
            let key = format!("{name}.{metric}");
            let what = if let Some(c) = budget_checks.and_then(|c| c.get(&key)) {
                Some(("budget headroom", c.max_allowed - c.value))
            } else {
                regression_checks
                    .and_then(|c| c.get(&key))
                    .map(|c| ("tolerance", c.max_regression))
            };
            let Some((threshold_name, threshold)) = what else {
                continue;
            };
            let head = format!(
                "{key}: {} pairs detect a shift of {} ({ns:.0} ns per sample) with 95% power",
                o.trial_count,
                format_value(metric, pct)
            );
            if threshold_name == "budget headroom" && threshold < 0.0 {
                lines.push(format!(
                    "{head}; the estimate is beyond the budget by {}",
                    format_value(metric, -threshold)
                ));
            } else if threshold < pct {
                lines.push(format!(
                    "{head}; the {threshold_name} of {} is tighter than that: resolve with {RESOLVE_ADVICE}",
                    format_value(metric, threshold)
                ));
            } else {
                lines.push(format!(
                    "{head}; the {threshold_name} is {}",
                    format_value(metric, threshold)
                ));
            }
        }
    }
    lines
}

/// One line per inconclusive check: its interval, the threshold it straddles (or, for a
/// regression that is not significant once the report's checks are corrected for, its p-values
/// and the number of comparisons), and what would resolve it.
pub fn inconclusive_diagnostics(
    budget_checks: Option<&BTreeMap<String, BudgetCheck>>,
    regression_checks: Option<&BTreeMap<String, RegressionCheck>>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (metric, c) in budget_checks.into_iter().flatten() {
        if c.inconclusive {
            lines.push(format!(
                "{metric}: inconclusive: {}{} straddles the budget {}; next knob: none (not a tuning problem: resolve with {RESOLVE_ADVICE})",
                format_value(metric, c.value),
                c.interval_note(metric),
                format_value(metric, c.max_allowed),
            ));
        }
    }
    let comparisons = regression_checks
        .into_iter()
        .flatten()
        .filter(|(_, c)| c.p_adjusted.is_some())
        .count();
    for (metric, c) in regression_checks.into_iter().flatten() {
        if c.not_significant() {
            lines.push(format!(
                "{metric}: inconclusive: delta {}{} > {}, but the regression is not significant after correcting for {comparisons} comparisons (p {}, Holm-adjusted p {} >= {}); next knob: none (not a tuning problem: resolve with {RESOLVE_ADVICE})",
                format_value(metric, c.delta),
                c.interval_note(metric),
                format_value(metric, c.max_regression),
                format_p(c.p_value.unwrap_or(f64::NAN)),
                format_p(c.p_adjusted.unwrap_or(f64::NAN)),
                REGRESSION_ALPHA,
            ));
        } else if c.inconclusive {
            lines.push(format!(
                "{metric}: inconclusive: delta {}{} exceeds the material shift {} but its interval does not exclude 0; next knob: none (not a tuning problem: resolve with {RESOLVE_ADVICE})",
                format_value(metric, c.delta),
                c.interval_note(metric),
                format_value(metric, c.material_shift.unwrap_or(c.max_regression)),
            ));
        }
    }
    lines
}

/// The diagnostic's closing advice: the first knob (in the knob table's order) that acts on
/// the metric and that this run has not already changed.
pub fn next_knob_advice(metric: &str, knobs: Option<&RuntimeKnobs>) -> String {
    let relevant = crate::knobs::acting_on(metric);
    let untouched = relevant
        .iter()
        .find(|k| knobs.is_none_or(|set| k.get(set).is_none()));
    match (untouched, relevant.first()) {
        (Some(knob), _) => format!("next knob: {}", knob.name),
        (None, Some(_)) => format!(
            "next knob: none left (already tuned: {})",
            relevant
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, None) => "next knob: none (not a tuning problem)".to_owned(),
    }
}

/// `; collector=…, collector_failures=…, rollover_count=…, …` for a runtime.
fn context(section: &RuntimeSection) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &section.soak {
        parts.push(format!("collector={}", s.collector_health_status));
        parts.push(format!(
            "collector_failures={}",
            s.collector_failure_event_count
        ));
        for (k, v) in [
            ("rollover_count", s.rollover_count),
            ("pruned_segment_count", s.pruned_segment_count),
            ("pruned_bytes", s.pruned_bytes),
            ("final_retained_files", s.final_retained_files),
            ("final_retained_bytes", s.final_retained_bytes),
            ("history_retained_events", s.history_retained_events),
            ("history_dropped_events", s.history_dropped_events),
            ("history_retained_samples", s.history_retained_samples),
            ("history_dropped_samples", s.history_dropped_samples),
            ("history_retained_alerts", s.history_retained_alerts),
            ("history_dropped_alerts", s.history_dropped_alerts),
        ] {
            parts.push(format!("{k}={v}"));
        }
    } else if let Some(stats) = section
        .overhead
        .as_ref()
        .and_then(|o| o.scenarios.tracked_default.stats.as_ref())
    {
        let stats = stats.to_value();
        let status = stats["collector_health_status"]
            .as_str()
            .unwrap_or("healthy");
        parts.push(format!("collector={status}"));
        parts.push(format!(
            "collector_failures={}",
            stats["collector_failure_event_count"].as_u64().unwrap_or(0)
        ));
        for k in [
            "rollover_count",
            "pruned_segment_count",
            "pruned_bytes",
            "final_retained_files",
            "final_retained_bytes",
            "history_retained_events",
            "history_dropped_events",
            "history_retained_samples",
            "history_dropped_samples",
            "history_retained_alerts",
            "history_dropped_alerts",
        ] {
            if let Some(v) = stats[k].as_u64() {
                parts.push(format!("{k}={v}"));
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

/// Builds the failure diagnostics: runtime problems first (unavailable, lost telemetry,
/// collector failures, failed retention checks, unhealthy collector), then failed budget
/// checks, then failed regression checks (a two-sided counter below its baseline says so).
/// Each line carries the runtime's collector, sink and history context and ends with the knob
/// to adjust next.
pub fn failure_diagnostics(
    runtimes: &BTreeMap<String, RuntimeSection>,
    budget_checks: Option<&BTreeMap<String, BudgetCheck>>,
    regression_checks: Option<&BTreeMap<String, RegressionCheck>>,
    knobs: &Knobs,
) -> Vec<String> {
    // Runtime names may carry an agent (`<agent>/<runtime>`); knobs are per runtime.
    let plain = |name: &str| strip_instance(name.rsplit_once('/').map_or(name, |(_, rt)| rt));
    let mut lines = Vec::new();
    for (name, section) in runtimes {
        let knobs = knobs.get(&plain(name));
        if section.status != RuntimeStatus::Ok {
            lines.push(format!(
                "{name}: unavailable - {}; next knob: none (the runtime must be installed or enabled on this host)",
                section.reason.as_deref().unwrap_or("unknown")
            ));
            continue;
        }
        let ctx = context(section);
        let losses = telemetry_losses(section);
        for loss in &losses {
            lines.push(loss_line(name, loss, &ctx, knobs));
        }
        let Some(soak) = &section.soak else { continue };
        if soak.collector_failure_event_count > 0 {
            lines.push(format!(
                "{name}: collector failures observed ({}){ctx}; {}",
                soak.collector_failure_event_count,
                next_knob_advice("collector_failure_event_count", knobs)
            ));
        }
        let validation_lost = losses.iter().any(|l| l.scenario == "retention_validation");
        for check in soak.retention_validation.checks.failed() {
            let why = if validation_lost {
                "its sink lost telemetry, as the retention_validation line above says"
            } else {
                "forced-churn limits are fixed; the sink did not honour them"
            };
            lines.push(format!(
                "{name}: retention validation failed for {check}{ctx}; next knob: none ({why})"
            ));
        }
        if soak.collector_health_status != "healthy" {
            lines.push(format!(
                "{name}: collector health is {}{ctx}; {}",
                soak.collector_health_status,
                next_knob_advice("collector_health", knobs)
            ));
        }
    }
    // `[<agent>/]<runtime>.<metric>`: agent ids may hold dots, runtime and metric names do not.
    let runtime_of = |metric: &str| {
        metric
            .rsplit_once('.')
            .map_or(metric, |(rt, _)| rt)
            .to_owned()
    };
    let metric_of = |metric: &str| {
        metric
            .rsplit_once('.')
            .map_or(metric, |(_, m)| m)
            .to_owned()
    };
    let ctx_of = |metric: &str| {
        runtimes
            .get(&runtime_of(metric))
            .map(context)
            .unwrap_or_default()
    };
    for (metric, check) in budget_checks.into_iter().flatten() {
        if !check.passed && !check.inconclusive {
            lines.push(format!(
                "{metric}: {}{} > {}{}; {}",
                format_value(metric, check.value),
                check.interval_note(metric),
                format_value(metric, check.max_allowed),
                ctx_of(metric),
                next_knob_advice(&metric_of(metric), knobs.get(&plain(&runtime_of(metric))))
            ));
        }
    }
    for (metric, check) in regression_checks.into_iter().flatten() {
        if !check.passed && check.two_sided && check.delta < -check.max_regression {
            lines.push(format!(
                "{metric}: delta {} < -{}: current {} is below the baseline {}; this counter is deterministic, so less work than the baseline is not an improvement: the run lost telemetry or did not run its full length{}; next knob: none (find what cut the run short; if the change is intended, record a new baseline with --write-baseline)",
                format_value(metric, check.delta),
                format_value(metric, check.max_regression),
                format_value(metric, check.current_value),
                format_value(metric, check.baseline_value),
                ctx_of(metric),
            ));
        } else if !check.passed && !check.inconclusive {
            lines.push(format!(
                "{metric}: delta {}{} > {}{}; {}",
                format_value(metric, check.delta),
                check.interval_note(metric),
                format_value(metric, check.max_regression),
                ctx_of(metric),
                next_knob_advice(&metric_of(metric), knobs.get(&plain(&runtime_of(metric))))
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TrackerStats;

    fn stats(dropped: u64, failures: u64, status: &str) -> TrackerStats {
        TrackerStats::of(&serde_json::json!({
            "sink_flush_failures": failures,
            "sink_dropped_records": dropped,
            "sink_last_error": (failures > 0).then_some("write /art/sink/segment-000003.jsonl: No space left on device (os error 28)"),
            "session_id": "s",
            "session_status": status,
            "sink_dir": "/art/sink",
            "sink_durable_records": 1_000,
            "sink_dropped_bytes": dropped * 500,
            "sink_first_error": (failures > 0).then_some("write /art/sink/segment-000002.jsonl: No space left on device (os error 28)"),
        }))
    }

    #[test]
    fn a_loss_is_any_dropped_record_failed_write_or_unfinished_session() {
        let loss = |d, f, s| TelemetryLoss::from_stats("soak", &stats(d, f, s), "/fallback");
        assert_eq!(loss(0, 0, "completed"), None);
        let dropped = loss(1, 1, "incomplete").unwrap();
        assert_eq!(
            (
                dropped.dropped_records,
                dropped.flush_failures,
                dropped.is_inconclusive()
            ),
            (1, 1, false)
        );
        assert_eq!(dropped.sink_dir, "/art/sink");
        // A failed write that was retried loses nothing, and still fails the gate.
        let retried = loss(0, 1, "completed").unwrap();
        assert!(!retried.is_inconclusive());
        // A session that could not be closed, with nothing dropped: inconclusive.
        for status in ["incomplete", "interrupted", "running"] {
            assert!(loss(0, 0, status).unwrap().is_inconclusive(), "{status}");
        }
        // Statistics without the new keys still name a directory.
        let mut old = stats(3, 2, "incomplete").to_value();
        old.as_object_mut().unwrap().remove("sink_dir");
        let loss = TelemetryLoss::from_stats("soak", &old.into(), "/fallback").unwrap();
        assert_eq!(loss.sink_dir, "/fallback");
        // No session at all (no sink): nothing to judge.
        assert_eq!(
            TelemetryLoss::from_stats("soak", &serde_json::json!({}).into(), "/x"),
            None
        );
    }

    #[test]
    fn a_loss_line_says_what_where_and_what_to_do() {
        let loss =
            TelemetryLoss::from_stats("soak", &stats(195_452, 7, "incomplete"), "/x").unwrap();
        let line = loss_line("a1/gpumemprof_cpu", &loss, "; ctx", None);
        assert_eq!(
            line,
            "a1/gpumemprof_cpu: telemetry lost in soak: 195452 of 196452 records dropped \
             (97726000 bytes), 7 failed sink writes, session incomplete; sink /art/sink; \
             first error: write /art/sink/segment-000002.jsonl: No space left on device (os error 28); \
             last error: write /art/sink/segment-000003.jsonl: No space left on device (os error 28); \
             free space under the artifact root (--artifact-root) or move it to a larger filesystem, \
             or keep fewer or smaller soak segments (retention_max_files, retention_max_total_bytes) \
             so they fit; ctx; next knob: retention_max_files"
        );
        let tuned = RuntimeKnobs {
            retention_max_files: Some(2),
            ..RuntimeKnobs::default()
        };
        assert!(
            loss_line("r", &loss, "", Some(&tuned))
                .ends_with("next knob: retention_max_total_bytes")
        );
        let trial =
            TelemetryLoss::from_stats("overhead trial 2", &stats(0, 1, "completed"), "/x").unwrap();
        let line = loss_line("r", &trial, "", None);
        assert!(
            line.contains("telemetry lost in overhead trial 2: 0 of 1000 records dropped"),
            "{line}"
        );
        assert!(line.contains("--overhead-scratch-root"), "{line}");
        let open = TelemetryLoss::from_stats("soak", &stats(0, 0, "incomplete"), "/x").unwrap();
        let line = loss_line("r", &open, "", None);
        assert!(
            line.starts_with("r: telemetry session of soak ended incomplete with nothing dropped and no failed write"),
            "{line}"
        );
        assert!(line.contains("the verdict is inconclusive"), "{line}");
    }

    #[test]
    fn knob_advice_follows_the_tuning_order_and_skips_tuned_knobs() {
        assert_eq!(
            next_knob_advice("runtime_overhead_pct", None),
            "next knob: sampling_interval_seconds"
        );
        let tuned = RuntimeKnobs {
            sampling_interval_seconds: Some(0.5),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            next_knob_advice("runtime_overhead_pct", Some(&tuned)),
            "next knob: flush_every_events"
        );
        assert_eq!(
            next_knob_advice("final_retained_bytes", Some(&tuned)),
            "next knob: rollover_max_bytes"
        );
        assert!(next_knob_advice("unknown", None).contains("none"));
    }
}
