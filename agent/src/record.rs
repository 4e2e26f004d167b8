//! The telemetry record (TelemetryEvent v2 fields) and its allocation-free JSON line encoder.
//!
//! A record is encoded straight into a byte buffer: numbers through `itoa`, strings escaped
//! byte by byte, and the parts that never change within a session (collector, host, identity,
//! static metadata) are escaped once when the session starts. In the steady state encoding a
//! record performs no heap allocation at all.
//!
//! A `sample` record, the one written thousands of times a second, reaches the sink as a
//! [`SampleRecord`]: its varying fields only, fixed size and `Copy`. The sink's writer thread
//! encodes it with the session's [`RecordHeader`] into the same line [`encode_record`] writes,
//! so the sampling thread never formats a sample.

use crate::health::{HealthSnapshot, HealthStatus};

/// `schema_version` written in every record.
pub const TELEMETRY_SCHEMA_VERSION: u32 = 2;

/// What a record says happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventType {
    /// Tracking started.
    Start,
    /// Tracking stopped.
    Stop,
    /// One collector reading.
    #[default]
    Sample,
    /// The collector failed while healthy: telemetry paused until it recovers.
    CollectorDegraded,
    /// The collector answered again after a failure.
    CollectorRecovered,
}

impl EventType {
    /// The `event_type` string written to the record.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Start => "start",
            EventType::Stop => "stop",
            EventType::Sample => "sample",
            EventType::CollectorDegraded => "collector_degraded",
            EventType::CollectorRecovered => "collector_recovered",
        }
    }
}

/// Memory counters of one collector reading, in bytes.
///
/// Fields a collector cannot observe are `None` and encode as JSON `null`; the v2 schema
/// requires the allocator pair and `device_used_bytes`, which the encoder writes as `0` when
/// absent (only a `start` event before the first successful reading has none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Bytes the allocator (or, for RSS collectors, the process) has in use.
    pub allocated_bytes: u64,
    /// Bytes the allocator holds from the system.
    pub reserved_bytes: u64,
    /// Allocator bytes in active blocks, where known.
    pub active_bytes: Option<u64>,
    /// Allocator bytes in inactive split blocks, where known.
    pub inactive_bytes: Option<u64>,
    /// Bytes used on the device.
    pub device_used_bytes: u64,
    /// Bytes free on the device, where known.
    pub device_free_bytes: Option<u64>,
    /// Total bytes of the device, where known.
    pub device_total_bytes: Option<u64>,
}

/// The per-session constant part of every record, escaped once.
#[derive(Debug, Clone)]
pub struct RecordHeader {
    collector: String,
    sampling_interval_ms: u64,
    pid: u32,
    host: String,
    device_id: i64,
    /// `"key":value` pairs (already JSON) written first in every record's metadata.
    static_metadata: String,
    /// The identity suffix: `"job_id":…,"rank":…,"local_rank":…,"world_size":…`.
    identity: String,
}

/// Distributed identity of the monitored process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Job id, if the process belongs to a launcher job.
    pub job_id: Option<String>,
    /// Global rank.
    pub rank: u32,
    /// Rank on this host.
    pub local_rank: u32,
    /// Number of ranks.
    pub world_size: u32,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            job_id: None,
            rank: 0,
            local_rank: 0,
            world_size: 1,
        }
    }
}

/// What a [`RecordHeader`] is built from.
#[derive(Debug, Clone)]
pub struct HeaderSpec<'a> {
    /// Telemetry collector name (`fleetgate.cpu_tracker`, …).
    pub collector: &'a str,
    /// Sampling interval of the runtime, in milliseconds.
    pub sampling_interval_ms: u64,
    /// Process id of the monitored process.
    pub pid: u32,
    /// Host name.
    pub host: &'a str,
    /// Device id (−1 for host memory).
    pub device_id: i64,
    /// Telemetry session id.
    pub session_id: &'a str,
    /// Backend name written to metadata (`cpu`, `cuda`, `tensorflow`).
    pub backend: &'a str,
    /// Where readings come from, written to metadata.
    pub sampling_source: &'a str,
    /// Distributed identity.
    pub identity: &'a Identity,
}

impl RecordHeader {
    /// Escapes the constant parts of a session's records once.
    pub fn new(spec: &HeaderSpec<'_>) -> Self {
        let mut static_metadata = String::new();
        let mut w = JsonWriter(&mut static_metadata);
        w.key("session_id");
        w.string(spec.session_id);
        w.0.push(',');
        w.key("backend");
        w.string(spec.backend);
        w.0.push(',');
        w.key("sampling_source");
        w.string(spec.sampling_source);

        let mut identity = String::new();
        let mut w = JsonWriter(&mut identity);
        w.key("job_id");
        match &spec.identity.job_id {
            Some(job) => w.string(job),
            None => w.0.push_str("null"),
        }
        identity.push_str(&format!(
            ",\"rank\":{},\"local_rank\":{},\"world_size\":{}",
            spec.identity.rank, spec.identity.local_rank, spec.identity.world_size
        ));

        let mut collector = String::new();
        JsonWriter(&mut collector).string(spec.collector);
        let mut host = String::new();
        JsonWriter(&mut host).string(spec.host);
        RecordHeader {
            collector,
            sampling_interval_ms: spec.sampling_interval_ms,
            pid: spec.pid,
            host,
            device_id: spec.device_id,
            static_metadata,
            identity,
        }
    }
}

/// Transition details written into the metadata of `collector_degraded` /
/// `collector_recovered` records.
#[derive(Debug, Clone, Copy)]
pub enum TransitionMeta<'a> {
    /// Healthy → unhealthy.
    Degraded {
        /// Status left.
        from: &'a str,
        /// The collector's error.
        reason: &'a str,
        /// Seconds until the next read is tried.
        retry_delay_s: f64,
    },
    /// Unhealthy → healthy.
    Recovered {
        /// Status left.
        from: &'a str,
        /// The last error before recovery.
        previous_error: &'a str,
        /// Consecutive failures before recovery.
        previous_failure_count: u32,
    },
}

/// The varying part of one record.
#[derive(Debug, Clone, Copy)]
pub struct RecordBody<'a> {
    /// Wall-clock time of the event, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Event type.
    pub event_type: EventType,
    /// Memory counters.
    pub reading: &'a Reading,
    /// Change since the previous reading, in bytes.
    pub change_bytes: i64,
    /// Human-readable context.
    pub context: Context<'a>,
    /// Collector health at the time the record is built.
    pub health: &'a HealthSnapshot<'a>,
    /// Transition details, for transition events.
    pub transition: Option<TransitionMeta<'a>>,
}

/// The `context` field; formatted while encoding so that no string is built per record.
#[derive(Debug, Clone, Copy)]
pub enum Context<'a> {
    /// A fixed text.
    Text(&'a str),
    /// `operability sample <index>`, the context of harness-driven samples.
    Sample(u64),
}

/// A `sample` record before encoding: the fields that vary from one sample to the next,
/// with no string, so it is fixed size and `Copy`. [`SampleRecord::encode`] writes exactly the
/// line [`encode_record`] writes for the same sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRecord {
    /// Wall-clock time of the sample, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Memory counters.
    pub reading: Reading,
    /// Change since the previous reading, in bytes.
    pub change_bytes: i64,
    /// Sample index, written as the context `operability sample <index>`.
    pub index: u64,
    /// Collector health status.
    pub health_status: HealthStatus,
    /// Whether telemetry is partial or paused.
    pub telemetry_partial: bool,
    /// Collector failures in a row.
    pub consecutive_failures: u32,
    /// Session-clock second at which the next read is tried, while backing off.
    pub next_retry_s: Option<f64>,
}

impl SampleRecord {
    /// The record of sample `index`, taken while the collector's health is `health`. `None`
    /// when the health carries an error text, which a `SampleRecord` has no room for (no sample
    /// does today: a sample follows a good read, and a good read clears the error); such a
    /// sample is encoded whole with [`encode_record`].
    pub fn new(
        timestamp_ns: u64,
        reading: &Reading,
        change_bytes: i64,
        index: u64,
        health: &HealthSnapshot<'_>,
    ) -> Option<Self> {
        if health.last_error.is_some() {
            return None;
        }
        Some(SampleRecord {
            timestamp_ns,
            reading: *reading,
            change_bytes,
            index,
            health_status: health.status,
            telemetry_partial: health.telemetry_partial,
            consecutive_failures: health.consecutive_failures,
            next_retry_s: health.next_retry_s,
        })
    }

    /// Appends the record as a single JSON line to `out`.
    pub fn encode(&self, header: &RecordHeader, out: &mut Vec<u8>) {
        encode_record(
            header,
            &RecordBody {
                timestamp_ns: self.timestamp_ns,
                event_type: EventType::Sample,
                reading: &self.reading,
                change_bytes: self.change_bytes,
                context: Context::Sample(self.index),
                health: &HealthSnapshot {
                    status: self.health_status,
                    telemetry_partial: self.telemetry_partial,
                    last_error: None,
                    consecutive_failures: self.consecutive_failures,
                    next_retry_s: self.next_retry_s,
                },
                transition: None,
            },
            out,
        );
    }
}

/// Appends one record as a single JSON line (terminated by `\n`) to `out`.
pub fn encode_record(header: &RecordHeader, body: &RecordBody<'_>, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"schema_version\":");
    out.extend_from_slice(n.format(TELEMETRY_SCHEMA_VERSION).as_bytes());
    out.extend_from_slice(b",\"timestamp_ns\":");
    out.extend_from_slice(n.format(body.timestamp_ns).as_bytes());
    out.extend_from_slice(b",\"event_type\":\"");
    out.extend_from_slice(body.event_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"collector\":");
    out.extend_from_slice(header.collector.as_bytes());
    out.extend_from_slice(b",\"sampling_interval_ms\":");
    out.extend_from_slice(n.format(header.sampling_interval_ms).as_bytes());
    out.extend_from_slice(b",\"pid\":");
    out.extend_from_slice(n.format(header.pid).as_bytes());
    out.extend_from_slice(b",\"host\":");
    out.extend_from_slice(header.host.as_bytes());
    out.extend_from_slice(b",\"device_id\":");
    out.extend_from_slice(n.format(header.device_id).as_bytes());
    let r = body.reading;
    out.extend_from_slice(b",\"allocator_allocated_bytes\":");
    out.extend_from_slice(n.format(r.allocated_bytes).as_bytes());
    out.extend_from_slice(b",\"allocator_reserved_bytes\":");
    out.extend_from_slice(n.format(r.reserved_bytes).as_bytes());
    out.extend_from_slice(b",\"allocator_active_bytes\":");
    opt_u64(out, &mut n, r.active_bytes);
    out.extend_from_slice(b",\"allocator_inactive_bytes\":");
    opt_u64(out, &mut n, r.inactive_bytes);
    out.extend_from_slice(b",\"allocator_change_bytes\":");
    out.extend_from_slice(n.format(body.change_bytes).as_bytes());
    out.extend_from_slice(b",\"device_used_bytes\":");
    out.extend_from_slice(n.format(r.device_used_bytes).as_bytes());
    out.extend_from_slice(b",\"device_free_bytes\":");
    opt_u64(out, &mut n, r.device_free_bytes);
    out.extend_from_slice(b",\"device_total_bytes\":");
    opt_u64(out, &mut n, r.device_total_bytes);
    out.extend_from_slice(b",\"context\":\"");
    match body.context {
        Context::Text(text) => escape_into(out, text),
        Context::Sample(index) => {
            out.extend_from_slice(b"operability sample ");
            out.extend_from_slice(n.format(index).as_bytes());
        }
    }
    out.extend_from_slice(b"\",\"metadata\":{");
    out.extend_from_slice(header.static_metadata.as_bytes());
    encode_health(body.health, out, &mut n);
    if let Some(transition) = body.transition {
        encode_transition(&transition, out, &mut n);
    }
    out.extend_from_slice(b"},");
    out.extend_from_slice(header.identity.as_bytes());
    out.extend_from_slice(b"}\n");
}

fn encode_health(h: &HealthSnapshot<'_>, out: &mut Vec<u8>, n: &mut itoa::Buffer) {
    out.extend_from_slice(b",\"collector_health_status\":\"");
    out.extend_from_slice(h.status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"telemetry_partial\":");
    out.extend_from_slice(if h.telemetry_partial {
        b"true"
    } else {
        b"false"
    });
    out.extend_from_slice(b",\"collector_partial_fields\":[],\"collector_last_error\":");
    match h.last_error {
        Some(err) => quoted(out, err),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"collector_consecutive_failures\":");
    out.extend_from_slice(n.format(h.consecutive_failures).as_bytes());
    out.extend_from_slice(b",\"collector_next_retry_s\":");
    match h.next_retry_s {
        Some(s) => float(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn encode_transition(t: &TransitionMeta<'_>, out: &mut Vec<u8>, n: &mut itoa::Buffer) {
    match *t {
        TransitionMeta::Degraded {
            from,
            reason,
            retry_delay_s,
        } => {
            out.extend_from_slice(
                b",\"collector_transition\":\"degraded\",\"collector_degraded_from\":",
            );
            quoted(out, from);
            out.extend_from_slice(b",\"collector_degradation_reason\":");
            quoted(out, reason);
            out.extend_from_slice(b",\"collector_retry_delay_s\":");
            float(out, retry_delay_s);
        }
        TransitionMeta::Recovered {
            from,
            previous_error,
            previous_failure_count,
        } => {
            out.extend_from_slice(
                b",\"collector_transition\":\"recovered\",\"collector_recovered_from\":",
            );
            quoted(out, from);
            out.extend_from_slice(b",\"collector_previous_error\":");
            quoted(out, previous_error);
            out.extend_from_slice(b",\"collector_previous_failure_count\":");
            out.extend_from_slice(n.format(previous_failure_count).as_bytes());
        }
    }
}

fn opt_u64(out: &mut Vec<u8>, n: &mut itoa::Buffer, value: Option<u64>) {
    match value {
        Some(v) => out.extend_from_slice(n.format(v).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

fn quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape_into(out, text);
    out.push(b'"');
}

/// Finite floats in Rust's shortest round-trip form (only transition events carry floats, so
/// the one allocation here is off the steady-state path); non-finite ones as `null`.
fn float(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(format!("{value:?}").as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends `text` with JSON string escaping.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
}

/// Builds escaped JSON fragments into a `String` (used once per session).
struct JsonWriter<'a>(&'a mut String);

impl JsonWriter<'_> {
    fn key(&mut self, key: &str) {
        self.string(key);
        self.0.push(':');
    }

    fn string(&mut self, value: &str) {
        let mut bytes = Vec::with_capacity(value.len() + 2);
        quoted(&mut bytes, value);
        // Escaping only ever inserts ASCII, so valid UTF-8 stays valid.
        self.0.push_str(&String::from_utf8_lossy(&bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthStatus;

    fn header() -> RecordHeader {
        RecordHeader::new(&HeaderSpec {
            collector: "fleetgate.cpu_tracker",
            sampling_interval_ms: 100,
            pid: 42,
            host: "host \"a\"\n",
            device_id: -1,
            session_id: "s-1",
            backend: "cpu",
            sampling_source: "/proc/self/statm",
            identity: &Identity::default(),
        })
    }

    #[test]
    fn record_is_one_valid_json_line_with_every_v2_field() {
        let health = HealthSnapshot::healthy();
        let reading = Reading {
            allocated_bytes: 1 << 20,
            reserved_bytes: 1 << 20,
            device_used_bytes: 1 << 20,
            ..Reading::default()
        };
        let mut out = Vec::new();
        encode_record(
            &header(),
            &RecordBody {
                timestamp_ns: 1_700_000_000_000_000_000,
                event_type: EventType::Sample,
                reading: &reading,
                change_bytes: -4096,
                context: Context::Sample(7),
                health: &health,
                transition: None,
            },
            &mut out,
        );
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "schema_version",
            "timestamp_ns",
            "event_type",
            "collector",
            "sampling_interval_ms",
            "pid",
            "host",
            "device_id",
            "allocator_allocated_bytes",
            "allocator_reserved_bytes",
            "allocator_active_bytes",
            "allocator_inactive_bytes",
            "allocator_change_bytes",
            "device_used_bytes",
            "device_free_bytes",
            "device_total_bytes",
            "context",
            "metadata",
            "job_id",
            "rank",
            "local_rank",
            "world_size",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["schema_version"], 2);
        assert_eq!(v["host"], "host \"a\"\n");
        assert_eq!(v["allocator_change_bytes"], -4096);
        assert_eq!(v["context"], "operability sample 7");
        assert_eq!(v["device_free_bytes"], serde_json::Value::Null);
        assert_eq!(v["metadata"]["session_id"], "s-1");
        assert_eq!(v["metadata"]["collector_health_status"], "healthy");
        assert_eq!(v["world_size"], 1);
    }

    #[test]
    fn a_sample_record_encodes_the_same_line_as_the_full_encoder() {
        let reading = Reading {
            allocated_bytes: 3 << 20,
            reserved_bytes: 4 << 20,
            active_bytes: Some(2 << 20),
            inactive_bytes: None,
            device_used_bytes: 3 << 20,
            device_free_bytes: Some(12),
            device_total_bytes: None,
        };
        let healths = [
            HealthSnapshot::healthy(),
            HealthSnapshot {
                status: HealthStatus::Degraded,
                telemetry_partial: true,
                last_error: None,
                consecutive_failures: 3,
                next_retry_s: Some(12.5),
            },
        ];
        for health in &healths {
            let mut full = Vec::new();
            encode_record(
                &header(),
                &RecordBody {
                    timestamp_ns: 1_700_000_000_123_456_789,
                    event_type: EventType::Sample,
                    reading: &reading,
                    change_bytes: -4096,
                    context: Context::Sample(41),
                    health,
                    transition: None,
                },
                &mut full,
            );
            let sample =
                SampleRecord::new(1_700_000_000_123_456_789, &reading, -4096, 41, health).unwrap();
            let mut out = b"previous line\n".to_vec();
            sample.encode(&header(), &mut out);
            assert_eq!(&out[b"previous line\n".len()..], &full[..]);
        }
        let failing = HealthSnapshot {
            last_error: Some("EIO"),
            ..HealthSnapshot::healthy()
        };
        assert_eq!(SampleRecord::new(1, &reading, 0, 0, &failing), None);
    }

    #[test]
    fn transition_metadata_is_escaped_and_complete() {
        let health = HealthSnapshot {
            status: HealthStatus::Unhealthy,
            telemetry_partial: true,
            last_error: Some("read \"statm\": EIO"),
            consecutive_failures: 1,
            next_retry_s: Some(1.0),
        };
        let mut out = Vec::new();
        encode_record(
            &header(),
            &RecordBody {
                timestamp_ns: 1,
                event_type: EventType::CollectorDegraded,
                reading: &Reading::default(),
                change_bytes: 0,
                context: Context::Text("Collector unavailable; telemetry paused until recovery."),
                health: &health,
                transition: Some(TransitionMeta::Degraded {
                    from: "healthy",
                    reason: "read \"statm\": EIO",
                    retry_delay_s: 1.0,
                }),
            },
            &mut out,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["metadata"]["collector_transition"], "degraded");
        assert_eq!(
            v["metadata"]["collector_degradation_reason"],
            "read \"statm\": EIO"
        );
        assert_eq!(v["metadata"]["collector_retry_delay_s"], 1.0);
        assert_eq!(v["metadata"]["collector_health_status"], "unhealthy");
    }
}
