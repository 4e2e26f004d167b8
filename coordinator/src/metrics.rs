//! The coordinator's Prometheus metrics (served by `fleetgate serve --metrics-listen ADDR` at
//! `/metrics`): every name, its unit and help text in one place, and the calls that record
//! them. Without `--metrics-listen` no recorder is installed and each call is a no-op.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `fleetgate_coordinator_agents` | gauge | `state`: connected, lost, disconnected |
//! | `fleetgate_coordinator_agents_lost_total` | counter | |
//! | `fleetgate_coordinator_sessions_refused_total` | counter | `reason` |
//! | `fleetgate_coordinator_runs` | gauge | `state`: in_progress, finished_kept |
//! | `fleetgate_coordinator_runs_submitted_total` | counter | |
//! | `fleetgate_coordinator_runs_finished_total` | counter | `verdict` |
//! | `fleetgate_coordinator_run_duration_seconds` | histogram | `verdict` |
//! | `fleetgate_coordinator_jobs` | gauge | `status` |
//! | `fleetgate_coordinator_events_ingested_total` | counter | `kind` |
//! | `fleetgate_coordinator_acks_sent_total` | counter | |

use std::time::Duration;

use fleetgate_common::report::{JobStatus, Verdict};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

const AGENTS: &str = "fleetgate_coordinator_agents";
const AGENTS_LOST: &str = "fleetgate_coordinator_agents_lost_total";
const SESSIONS_REFUSED: &str = "fleetgate_coordinator_sessions_refused_total";
const RUNS: &str = "fleetgate_coordinator_runs";
const RUNS_SUBMITTED: &str = "fleetgate_coordinator_runs_submitted_total";
const RUNS_FINISHED: &str = "fleetgate_coordinator_runs_finished_total";
const RUN_DURATION: &str = "fleetgate_coordinator_run_duration_seconds";
const JOBS: &str = "fleetgate_coordinator_jobs";
const EVENTS_INGESTED: &str = "fleetgate_coordinator_events_ingested_total";
const ACKS_SENT: &str = "fleetgate_coordinator_acks_sent_total";

/// Registers the help text and unit of every metric (call once after the recorder is
/// installed).
pub fn describe() {
    describe_gauge!(
        AGENTS,
        Unit::Count,
        "Agents this coordinator knows, by state (connected: a live session; lost: silent past the heartbeat expiry; disconnected: session closed)."
    );
    describe_counter!(
        AGENTS_LOST,
        Unit::Count,
        "Agents declared lost after going silent past the heartbeat expiry."
    );
    describe_counter!(
        SESSIONS_REFUSED,
        Unit::Count,
        "Agent sessions and client calls refused, by reason."
    );
    describe_gauge!(
        RUNS,
        Unit::Count,
        "Runs in progress, and finished runs whose reports are kept."
    );
    describe_counter!(RUNS_SUBMITTED, Unit::Count, "Runs accepted.");
    describe_counter!(
        RUNS_FINISHED,
        Unit::Count,
        "Runs whose fleet report was built, by verdict."
    );
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Seconds from a run's acceptance to its fleet report, by verdict."
    );
    describe_gauge!(
        JOBS,
        Unit::Count,
        "Jobs of the runs in progress, by status."
    );
    describe_counter!(
        EVENTS_INGESTED,
        Unit::Count,
        "Job events from agents stored in order, by kind."
    );
    describe_counter!(
        ACKS_SENT,
        Unit::Count,
        "Acknowledgements sent to agents (duplicates and gaps included)."
    );
}

/// Histogram buckets for run durations, in seconds: a tiny run takes seconds, a nightly
/// one hours.
pub const RUN_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0,
];

/// The metric name the run-duration buckets apply to.
pub const RUN_DURATION_METRIC: &str = RUN_DURATION;

/// A session or call was refused for `reason` (a short snake_case word).
pub fn session_refused(reason: &'static str) {
    counter!(SESSIONS_REFUSED, "reason" => reason).increment(1);
}

/// An agent went silent past the heartbeat expiry.
pub fn agent_lost() {
    counter!(AGENTS_LOST).increment(1);
}

/// A job event of `kind` was stored.
pub fn event_ingested(kind: &'static str) {
    counter!(EVENTS_INGESTED, "kind" => kind).increment(1);
}

/// An acknowledgement was sent to an agent.
pub fn ack_sent() {
    counter!(ACKS_SENT).increment(1);
}

/// A run was accepted.
pub fn run_submitted() {
    counter!(RUNS_SUBMITTED).increment(1);
}

/// A run's report was built with `verdict`, `took` after its acceptance.
pub fn run_finished(verdict: Verdict, took: Duration) {
    counter!(RUNS_FINISHED, "verdict" => verdict.name()).increment(1);
    metrics::histogram!(RUN_DURATION, "verdict" => verdict.name()).record(took.as_secs_f64());
}

/// The registry's counts at one sweep.
#[derive(Debug, Default)]
pub struct Census {
    /// Agents with a live session.
    pub connected: usize,
    /// Agents lost (silent past the expiry).
    pub lost: usize,
    /// Agents known without a session that are not lost.
    pub disconnected: usize,
    /// Runs in progress.
    pub runs_in_progress: usize,
    /// Finished runs kept.
    pub runs_finished_kept: usize,
    /// Jobs of the runs in progress, by status.
    pub jobs: Vec<JobStatus>,
}

/// Publishes `census` as the gauges.
pub fn publish(census: &Census) {
    gauge!(AGENTS, "state" => "connected").set(census.connected as f64);
    gauge!(AGENTS, "state" => "lost").set(census.lost as f64);
    gauge!(AGENTS, "state" => "disconnected").set(census.disconnected as f64);
    gauge!(RUNS, "state" => "in_progress").set(census.runs_in_progress as f64);
    gauge!(RUNS, "state" => "finished_kept").set(census.runs_finished_kept as f64);
    for status in JobStatus::ALL {
        let n = census.jobs.iter().filter(|s| **s == status).count();
        gauge!(JOBS, "status" => status.name()).set(n as f64);
    }
}
