//! Monitoring runtimes: a collector feeding bounded history and the telemetry sink, under the
//! collector-health state machine, in the tracked default mode.
//!
//! A [`Tracker`] is a session driven from outside — `start`, `emit_sample` per sample,
//! `finish` — which is how the harness drives it (no background thread; the accelerated soak
//! calls `emit_sample` in a tight loop). Everything a runtime differs in (its collector, its
//! interval, whether it keeps a sample window) comes from [`RuntimeKind`] and the collector.

use std::time::{Duration, Instant};

use fleetgate_common::runtime::RuntimeKind;
use serde::Serialize;

use crate::collector::{AnyCollector, CollectError, Collector, RssCollector};
use crate::health::{CollectorHealth, HealthStatus, Transition};
use crate::history::BoundedHistory;
use crate::record::{
    Context, EventType, HeaderSpec, Identity, Reading, RecordBody, RecordHeader, SampleRecord,
    TransitionMeta, encode_record,
};
use crate::sink::{
    RecoveryReport, SessionSpec, SessionStatus, SinkConfig, SinkError, SinkStats, TelemetrySink,
    unix_now_ns,
};

/// Opens `kind`'s collector on this host, on GPU `device` for the per-GPU runtimes
/// (TensorFlow runtimes load libtensorflow and warm up a graph of about `allocation_kb` KiB);
/// a runtime that cannot run here is [`CollectError::Unavailable`] with the reason.
pub fn open_collector(
    kind: RuntimeKind,
    allocation_kb: u32,
    device: u32,
) -> Result<AnyCollector, CollectError> {
    match kind {
        RuntimeKind::GpumemprofCpu => Ok(Box::new(RssCollector::open()?)),
        RuntimeKind::GpumemprofCuda => Ok(Box::new(crate::nvml::NvmlCollector::open(device)?)),
        RuntimeKind::TfmemprofCpu => Ok(Box::new(crate::tensorflow::TfCollector::open(
            "/CPU:0",
            allocation_kb,
        )?)),
        RuntimeKind::TfmemprofGpu => {
            let gpus = crate::tensorflow::list_gpus()
                .map_err(|e| CollectError::Unavailable(e.to_string()))?;
            if gpus.is_empty() {
                return Err(CollectError::Unavailable(
                    "the loaded TensorFlow lists no GPU on this host".into(),
                ));
            }
            Ok(Box::new(crate::tensorflow::TfCollector::open(
                "/GPU:0",
                allocation_kb,
            )?))
        }
    }
}

/// Tracker configuration.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Which runtime.
    pub kind: RuntimeKind,
    /// Sampling interval (also the unit of the accelerated soak's equivalent time).
    pub sampling_interval: Duration,
    /// Window of each history ring (samples, events, alerts).
    pub max_history: usize,
    /// Alert when a sample exceeds this many bytes.
    pub alert_threshold_bytes: Option<u64>,
    /// Telemetry sink; `None` tracks without persistence.
    pub sink: Option<SinkConfig>,
    /// Host name written to records.
    pub host: String,
    /// Distributed identity written to records.
    pub identity: Identity,
}

impl TrackerConfig {
    /// Defaults for `kind` with a sink rooted at `sink_dir`.
    pub fn new(kind: RuntimeKind, sink_dir: Option<std::path::PathBuf>) -> Self {
        TrackerConfig {
            kind,
            sampling_interval: kind.default_interval(),
            max_history: usize::try_from(fleetgate_common::knobs::DEFAULT_MAX_HISTORY)
                .unwrap_or(usize::MAX),
            alert_threshold_bytes: None,
            sink: sink_dir.map(SinkConfig::new),
            host: fleetgate_common::host::host_name(),
            identity: Identity::default(),
        }
    }

    fn validate(&self) -> Result<(), TrackerError> {
        if self.sampling_interval.is_zero() {
            return Err(TrackerError::InvalidConfig(
                "sampling_interval must be > 0".into(),
            ));
        }
        if self.max_history < 1 {
            return Err(TrackerError::InvalidConfig(
                "max_history must be >= 1".into(),
            ));
        }
        Ok(())
    }
}

/// A tracker could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// A configuration value is out of range.
    #[error("invalid tracker config: {0}")]
    InvalidConfig(String),
    /// The sink could not be opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The collector could not be opened.
    #[error(transparent)]
    Collector(#[from] CollectError),
}

/// One retained event (fixed size, so the ring never allocates per event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSummary {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Type.
    pub event_type: EventType,
    /// Primary memory value in bytes.
    pub value_bytes: u64,
    /// Change since the previous reading.
    pub change_bytes: i64,
}

/// One retained sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplePoint {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Primary memory value in bytes.
    pub value_bytes: u64,
}

/// One retained alert (alerts are not events and are not written to the sink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alert {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The value that crossed the threshold.
    pub value_bytes: u64,
    /// The threshold.
    pub threshold_bytes: u64,
}

/// What one `emit_sample` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleOutcome {
    /// A sample was taken (primary value in bytes).
    Sampled(u64),
    /// The collector is backing off: nothing was read or recorded.
    BackingOff,
    /// The read failed.
    Failed,
}

/// Tracker statistics: the reference trackers' keys, in bytes rather than megabytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackerStatistics {
    /// Runtime name.
    pub runtime: &'static str,
    /// Events retained in the history window (not the tick count).
    pub total_events: u64,
    /// Samples observed over the whole session.
    pub sample_count: u64,
    /// Peak over all samples.
    pub peak_memory_bytes: u64,
    /// Minimum over all samples.
    pub min_memory_bytes: u64,
    /// Average over all samples.
    pub average_memory_bytes: f64,
    /// Last good value, only while healthy.
    pub current_memory_bytes: Option<u64>,
    /// Session wall time so far.
    pub tracking_duration_seconds: f64,
    /// Window of each ring.
    pub history_window_limit: u64,
    /// Events kept.
    pub history_retained_events: u64,
    /// Events evicted.
    pub history_dropped_events: u64,
    /// Samples kept (0 for runtimes without a sample window).
    pub history_retained_samples: u64,
    /// Samples evicted.
    pub history_dropped_samples: u64,
    /// Alerts kept.
    pub history_retained_alerts: u64,
    /// Alerts evicted.
    pub history_dropped_alerts: u64,
    /// Degraded plus recovered transitions.
    pub collector_failure_event_count: u64,
    /// Health status.
    pub collector_health_status: HealthStatus,
    /// Whether telemetry is paused or partial.
    pub telemetry_partial: bool,
    /// Last collector error.
    pub collector_last_error: Option<String>,
    /// Failures in a row.
    pub collector_consecutive_failures: u32,
    /// Sink rollovers.
    pub rollover_count: u64,
    /// Segments pruned by retention.
    pub pruned_segment_count: u64,
    /// Bytes pruned.
    pub pruned_bytes: u64,
    /// Segments on disk.
    pub final_retained_files: u64,
    /// Bytes on disk.
    pub final_retained_bytes: u64,
    /// Failed sink writes.
    pub sink_flush_failures: u64,
    /// Records the sink had to drop.
    pub sink_dropped_records: u64,
    /// Last sink error.
    pub sink_last_error: Option<String>,
    /// Telemetry session id.
    pub session_id: String,
    /// Session status.
    pub session_status: SessionStatus,
    /// The sink's directory (none without a sink).
    pub sink_dir: Option<String>,
    /// Records the sink wrote and fsynced.
    pub sink_durable_records: u64,
    /// Bytes of the records the sink had to drop.
    pub sink_dropped_bytes: u64,
    /// First sink error, `<operation> <path>: <OS error>` (the last is `sink_last_error`).
    pub sink_first_error: Option<String>,
}

/// What `finish` returns.
#[derive(Debug, Clone)]
pub struct TrackerReport {
    /// Final statistics.
    pub statistics: TrackerStatistics,
    /// Final sink counters, if the tracker had a sink.
    pub sink: Option<SinkStats>,
    /// What the sink's startup recovery repaired.
    pub recovery: Option<RecoveryReport>,
}

/// A tracking session of one runtime.
#[derive(Debug)]
pub struct Tracker<C: Collector> {
    kind: RuntimeKind,
    collector: C,
    header: RecordHeader,
    sink: Option<TelemetrySink>,
    sink_dir: Option<String>,
    sink_error: Option<String>,
    events: BoundedHistory<EventSummary>,
    samples: Option<BoundedHistory<SamplePoint>>,
    alerts: BoundedHistory<Alert>,
    alert_threshold_bytes: Option<u64>,
    health: CollectorHealth,
    last_reading: Reading,
    last_value: Option<u64>,
    sample_count: u64,
    peak: u64,
    min: u64,
    sum: u128,
    started: Instant,
    session_id: String,
    recovery: Option<RecoveryReport>,
}

impl<C: Collector> Tracker<C> {
    /// Opens the sink (if configured), registers the session and records the `start` event.
    pub fn start(collector: C, config: TrackerConfig) -> Result<Self, TrackerError> {
        config.validate()?;
        let pid = std::process::id();
        let sink_dir = config
            .sink
            .as_ref()
            .map(|s| s.root_dir.display().to_string());
        let mut sink = match config.sink {
            Some(sink_config) => Some(TelemetrySink::open(
                sink_config,
                SessionSpec {
                    host: config.host.clone(),
                    pid,
                    job_id: config.identity.job_id.clone(),
                    rank: config.identity.rank,
                    local_rank: config.identity.local_rank,
                    world_size: config.identity.world_size,
                    source: config.kind.session_source().to_owned(),
                },
            )?),
            None => None,
        };
        let session_id = sink
            .as_ref()
            .map(|s| s.session_id().to_owned())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let info = collector.info();
        let header = RecordHeader::new(&HeaderSpec {
            collector: info.collector,
            sampling_interval_ms: u64::try_from(config.sampling_interval.as_millis())
                .unwrap_or(u64::MAX),
            pid,
            host: &config.host,
            device_id: info.device_id,
            session_id: &session_id,
            backend: info.backend,
            sampling_source: info.sampling_source,
            identity: &config.identity,
        });
        if let Some(sink) = &mut sink {
            // The sink's writer encodes the samples; this tracker keeps a copy for the rare
            // records it encodes itself.
            sink.set_record_header(header.clone());
        }
        let recovery = sink.as_ref().map(|s| s.recovery().clone());
        let mut tracker = Tracker {
            kind: config.kind,
            collector,
            header,
            sink,
            sink_dir,
            sink_error: None,
            events: BoundedHistory::new(config.max_history),
            samples: config
                .kind
                .keeps_sample_history()
                .then(|| BoundedHistory::new(config.max_history)),
            alerts: BoundedHistory::new(config.max_history),
            alert_threshold_bytes: config.alert_threshold_bytes,
            health: CollectorHealth::new(),
            last_reading: Reading::default(),
            last_value: None,
            sample_count: 0,
            peak: 0,
            min: u64::MAX,
            sum: 0,
            started: Instant::now(),
            session_id,
            recovery,
        };
        if let Ok(reading) = tracker.collector.read() {
            tracker.last_reading = reading;
        }
        let reading = tracker.last_reading;
        tracker.emit(
            EventType::Start,
            &reading,
            0,
            Context::Text("Memory tracking started"),
            None,
        );
        Ok(tracker)
    }

    /// Takes one sample at session time `at` (real elapsed time for live tracking, the
    /// sample's equivalent time in an accelerated soak). Does nothing while backing off.
    pub fn emit_sample(&mut self, index: u64, at: Duration) -> SampleOutcome {
        if !self.health.may_read(at) {
            return SampleOutcome::BackingOff;
        }
        match self.collector.read() {
            Err(err) => {
                let message = err.to_string();
                if let Some(Transition::Degraded {
                    from,
                    reason,
                    retry_delay,
                }) = self.health.record_failure(at, &message)
                {
                    let reading = self.last_reading;
                    self.emit(
                        EventType::CollectorDegraded,
                        &reading,
                        0,
                        Context::Text("Collector unavailable; telemetry paused until recovery."),
                        Some(TransitionMeta::Degraded {
                            from: from.as_str(),
                            reason: &reason,
                            retry_delay_s: retry_delay.as_secs_f64(),
                        }),
                    );
                }
                SampleOutcome::Failed
            }
            Ok(reading) => {
                if let Some(Transition::Recovered {
                    from,
                    previous_error,
                    previous_failure_count,
                }) = self.health.record_success()
                {
                    self.emit(
                        EventType::CollectorRecovered,
                        &reading,
                        0,
                        Context::Text("Collector recovered; full telemetry sampling resumed."),
                        Some(TransitionMeta::Recovered {
                            from: from.as_str(),
                            previous_error: &previous_error,
                            previous_failure_count,
                        }),
                    );
                }
                let value = reading.device_used_bytes;
                let change = signed_change(self.last_reading.device_used_bytes, value);
                self.sample_count += 1;
                self.peak = self.peak.max(value);
                self.min = self.min.min(value);
                self.sum += u128::from(value);
                self.last_value = Some(value);
                self.last_reading = reading;
                let now_ns = unix_now_ns();
                if let Some(samples) = &mut self.samples {
                    samples.push(SamplePoint {
                        timestamp_ns: now_ns,
                        value_bytes: value,
                    });
                }
                self.emit_sample_record(now_ns, &reading, change, index);
                if let Some(threshold) = self.alert_threshold_bytes
                    && value > threshold
                {
                    self.alerts.push(Alert {
                        timestamp_ns: now_ns,
                        value_bytes: value,
                        threshold_bytes: threshold,
                    });
                }
                SampleOutcome::Sampled(value)
            }
        }
    }

    /// Records a sample: its event summary, and for the sink a [`SampleRecord`] that the
    /// sink's writer thread encodes. Without a sink, or for a sample whose health carries an
    /// error text (none does today), it goes through `emit_at` like any other event.
    fn emit_sample_record(
        &mut self,
        timestamp_ns: u64,
        reading: &Reading,
        change: i64,
        index: u64,
    ) {
        let record = SampleRecord::new(
            timestamp_ns,
            reading,
            change,
            index,
            &self.health.snapshot(),
        );
        let (Some(sink), Some(record)) = (&mut self.sink, record) else {
            self.emit_at(
                timestamp_ns,
                EventType::Sample,
                reading,
                change,
                Context::Sample(index),
                None,
            );
            return;
        };
        sink.append_sample(&record);
        self.events.push(EventSummary {
            timestamp_ns,
            event_type: EventType::Sample,
            value_bytes: reading.device_used_bytes,
            change_bytes: change,
        });
    }

    fn emit(
        &mut self,
        event_type: EventType,
        reading: &Reading,
        change: i64,
        context: Context<'_>,
        transition: Option<TransitionMeta<'_>>,
    ) {
        self.emit_at(
            unix_now_ns(),
            event_type,
            reading,
            change,
            context,
            transition,
        );
    }

    fn emit_at(
        &mut self,
        timestamp_ns: u64,
        event_type: EventType,
        reading: &Reading,
        change: i64,
        context: Context<'_>,
        transition: Option<TransitionMeta<'_>>,
    ) {
        self.events.push(EventSummary {
            timestamp_ns,
            event_type,
            value_bytes: reading.device_used_bytes,
            change_bytes: change,
        });
        if let Some(sink) = &mut self.sink {
            let header = &self.header;
            let health = self.health.snapshot();
            sink.append_with(|out| {
                encode_record(
                    header,
                    &RecordBody {
                        timestamp_ns,
                        event_type,
                        reading,
                        change_bytes: change,
                        context,
                        health: &health,
                        transition,
                    },
                    out,
                );
            });
        }
    }

    /// Current statistics.
    pub fn statistics(&self) -> TrackerStatistics {
        let sink = self.sink.as_ref().map(TelemetrySink::stats);
        self.statistics_with(sink.as_ref(), SessionStatus::Running)
    }

    fn statistics_with(
        &self,
        sink: Option<&SinkStats>,
        status: SessionStatus,
    ) -> TrackerStatistics {
        let samples = self.samples.as_ref();
        let healthy = self.health.status() == HealthStatus::Healthy;
        let snapshot = self.health.snapshot();
        let s = sink.cloned().unwrap_or_default();
        TrackerStatistics {
            runtime: self.kind.name(),
            total_events: self.events.retained(),
            sample_count: self.sample_count,
            peak_memory_bytes: self.peak,
            min_memory_bytes: if self.sample_count == 0 { 0 } else { self.min },
            average_memory_bytes: if self.sample_count == 0 {
                0.0
            } else {
                self.sum as f64 / self.sample_count as f64
            },
            current_memory_bytes: if healthy { self.last_value } else { None },
            tracking_duration_seconds: self.started.elapsed().as_secs_f64(),
            history_window_limit: self.events.limit() as u64,
            history_retained_events: self.events.retained(),
            history_dropped_events: self.events.dropped(),
            history_retained_samples: samples.map_or(0, BoundedHistory::retained),
            history_dropped_samples: samples.map_or(0, BoundedHistory::dropped),
            history_retained_alerts: self.alerts.retained(),
            history_dropped_alerts: self.alerts.dropped(),
            collector_failure_event_count: self.health.failure_event_count(),
            collector_health_status: snapshot.status,
            telemetry_partial: snapshot.telemetry_partial,
            collector_last_error: snapshot.last_error.map(str::to_owned),
            collector_consecutive_failures: snapshot.consecutive_failures,
            rollover_count: s.rollover_count,
            pruned_segment_count: s.pruned_segment_count,
            pruned_bytes: s.pruned_bytes,
            final_retained_files: s.final_retained_files,
            final_retained_bytes: s.final_retained_bytes,
            sink_flush_failures: s.flush_failures,
            sink_dropped_records: s.dropped_records,
            sink_last_error: s.last_flush_error.or_else(|| self.sink_error.clone()),
            session_id: self.session_id.clone(),
            session_status: status,
            sink_dir: self.sink_dir.clone(),
            sink_durable_records: s.durable_records,
            sink_dropped_bytes: s.dropped_bytes,
            sink_first_error: s.first_flush_error.or_else(|| self.sink_error.clone()),
        }
    }

    /// Current sink counters, if the tracker has a sink.
    pub fn sink_stats(&self) -> Option<SinkStats> {
        self.sink.as_ref().map(TelemetrySink::stats)
    }

    /// Retained events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &EventSummary> {
        self.events.iter()
    }

    /// Records `stop`, closes the sink (everything buffered is written; nothing is read back)
    /// and returns the final statistics.
    pub fn finish(self) -> TrackerReport {
        self.close(SessionStatus::Completed)
    }

    /// Like [`Tracker::finish`], for a session cut short: the session is closed as
    /// `interrupted`.
    pub fn interrupt(self) -> TrackerReport {
        self.close(SessionStatus::Interrupted)
    }

    fn close(mut self, requested: SessionStatus) -> TrackerReport {
        let reading = self.last_reading;
        self.emit(
            EventType::Stop,
            &reading,
            0,
            Context::Text("Memory tracking stopped"),
            None,
        );
        let (sink, status) = match self.sink.take() {
            Some(sink) => match sink.close(requested) {
                Ok(stats) => {
                    let status = if stats.dropped_records > 0 {
                        SessionStatus::Incomplete
                    } else {
                        requested
                    };
                    (Some(stats), status)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "Telemetry sink close failed; session incomplete.");
                    self.sink_error = Some(err.to_string());
                    (None, SessionStatus::Incomplete)
                }
            },
            None => (None, requested),
        };
        TrackerReport {
            statistics: self.statistics_with(sink.as_ref(), status),
            sink,
            recovery: self.recovery.take(),
        }
    }
}

fn signed_change(previous: u64, current: u64) -> i64 {
    if current >= previous {
        i64::try_from(current - previous).unwrap_or(i64::MAX)
    } else {
        i64::try_from(previous - current).map_or(i64::MIN, |d| -d)
    }
}

#[cfg(test)]
mod tests;
