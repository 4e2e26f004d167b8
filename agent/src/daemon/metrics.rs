//! The agent daemon's Prometheus metrics (served by `--metrics-listen ADDR` at `/metrics`):
//! its link to the coordinator, the events of its jobs, and the counters of the last report
//! of each runtime (sink, history and collector health). Without `--metrics-listen` no
//! recorder is installed and each call is a no-op.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `fleetgate_agent_connected` | gauge | |
//! | `fleetgate_agent_sessions_total` | counter | `end`: disconnected, unreachable |
//! | `fleetgate_agent_job_events_total` | counter | `kind` |
//! | `fleetgate_agent_acks_received_total` | counter | |
//! | `fleetgate_agent_outbox_jobs` | gauge | |
//! | `fleetgate_agent_job_phase_done_ratio` | gauge | `phase` |
//! | `fleetgate_agent_jobs_queued` | gauge | |
//! | `fleetgate_agent_runtime_*` | gauge | `runtime` |

use fleetgate_common::job::JobUpdate;
use fleetgate_common::report::RuntimeSection;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const CONNECTED: &str = "fleetgate_agent_connected";
const SESSIONS: &str = "fleetgate_agent_sessions_total";
const JOB_EVENTS: &str = "fleetgate_agent_job_events_total";
const ACKS: &str = "fleetgate_agent_acks_received_total";
const OUTBOX_JOBS: &str = "fleetgate_agent_outbox_jobs";
const PHASE_DONE: &str = "fleetgate_agent_job_phase_done_ratio";
const QUEUED: &str = "fleetgate_agent_jobs_queued";

/// The runtime counters published from each job's report, with their help text.
const RUNTIME_COUNTERS: [(&str, &str); 8] = [
    (
        "fleetgate_agent_runtime_samples",
        "Samples the runtime's last soak took.",
    ),
    (
        "fleetgate_agent_runtime_collector_failure_events",
        "Collector failure events in the runtime's last soak.",
    ),
    (
        "fleetgate_agent_runtime_history_dropped_events",
        "History events dropped by the runtime's last soak.",
    ),
    (
        "fleetgate_agent_runtime_history_dropped_samples",
        "History samples dropped by the runtime's last soak.",
    ),
    (
        "fleetgate_agent_runtime_sink_rollovers",
        "Sink file rollovers in the runtime's last soak.",
    ),
    (
        "fleetgate_agent_runtime_sink_pruned_bytes",
        "Bytes the sink's retention pruned in the runtime's last soak.",
    ),
    (
        "fleetgate_agent_runtime_sink_retained_bytes",
        "Bytes the sink retained at the end of the runtime's last soak.",
    ),
    (
        "fleetgate_agent_runtime_collector_healthy",
        "1 if the runtime's collector was healthy at the end of its last soak, else 0.",
    ),
];

/// Registers the help text and unit of every metric (call once after the recorder is
/// installed).
pub(super) fn describe() {
    describe_gauge!(
        CONNECTED,
        Unit::Count,
        "1 while the agent has a session with its coordinator, else 0."
    );
    describe_counter!(
        SESSIONS,
        Unit::Count,
        "Sessions with the coordinator that ended, or attempts that failed, by how."
    );
    describe_counter!(
        JOB_EVENTS,
        Unit::Count,
        "Job events recorded in the outbox, by kind."
    );
    describe_counter!(
        ACKS,
        Unit::Count,
        "Acknowledgements received from the coordinator."
    );
    describe_gauge!(
        OUTBOX_JOBS,
        Unit::Count,
        "Jobs with events not yet acknowledged."
    );
    describe_gauge!(
        PHASE_DONE,
        Unit::Count,
        "Fraction of the running job's phase done (0 to 1)."
    );
    describe_gauge!(QUEUED, Unit::Count, "Jobs waiting to run.");
    for (name, help) in RUNTIME_COUNTERS {
        describe_gauge!(name, Unit::Count, help);
    }
}

/// The session with the coordinator started (`true`) or ended (`false`, with `end`).
pub(super) fn session(connected: bool, end: Option<&'static str>) {
    gauge!(CONNECTED).set(if connected { 1.0 } else { 0.0 });
    if let Some(end) = end {
        counter!(SESSIONS, "end" => end).increment(1);
    }
}

/// An acknowledgement arrived.
pub(super) fn ack_received() {
    counter!(ACKS).increment(1);
}

/// The outbox and queue sizes.
pub(super) fn backlog(outbox_jobs: usize, queued: usize) {
    gauge!(OUTBOX_JOBS).set(outbox_jobs as f64);
    gauge!(QUEUED).set(queued as f64);
}

/// A job's update was recorded.
pub(super) fn job_update(update: &JobUpdate) {
    counter!(JOB_EVENTS, "kind" => update.kind()).increment(1);
    match update {
        JobUpdate::Progress { phase, done, total } if *total > 0 => {
            gauge!(PHASE_DONE, "phase" => phase.name()).set(*done as f64 / *total as f64);
        }
        JobUpdate::Report { section } => runtime_report(section),
        _ => {}
    }
}

/// Publishes the runtime counters of a job's report section.
fn runtime_report(section: &RuntimeSection) {
    let Some(soak) = &section.soak else {
        return;
    };
    // A soak is named `<runtime>_soak`.
    let runtime = soak
        .name
        .strip_suffix("_soak")
        .unwrap_or(&soak.name)
        .to_owned();
    let values = [
        soak.sample_count as f64,
        soak.collector_failure_event_count as f64,
        soak.history_dropped_events as f64,
        soak.history_dropped_samples as f64,
        soak.rollover_count as f64,
        soak.pruned_bytes as f64,
        soak.final_retained_bytes as f64,
        if soak.collector_health_status == "healthy" {
            1.0
        } else {
            0.0
        },
    ];
    for ((name, _), value) in RUNTIME_COUNTERS.iter().zip(values) {
        gauge!(*name, "runtime" => runtime.clone()).set(value);
    }
}
