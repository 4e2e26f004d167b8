//! The append-only telemetry sink: JSON-lines segments, an atomically rewritten manifest,
//! count/size rollover, oldest-first retention, and crash recovery.
//!
//! The sampling thread does not format records. A sample goes into the batch being filled as
//! a fixed-size [`SampleRecord`] (a copy of about a dozen numbers into a buffer allocated when
//! the sink opened); the rare records that carry text (start, stop, collector transitions, and
//! whatever [`TelemetrySink::append_with`] is given) are encoded by the caller into the same
//! batch. When the batch holds `flush_every_events` records it is handed to a writer thread
//! over a bounded queue, and the sampling side takes an empty batch from a fixed pool. The
//! writer also picks up a batch once `flush_every` has passed since the last hand-off, so a
//! batch that fills slowly is still written on time. Encoding the samples to JSON lines (with
//! the session's [`RecordHeader`], which the writer owns), writing, fsync, rollover, pruning
//! and manifest rewrites all happen on the writer thread, never on the sampling thread's path
//! (the reference did them inline, which put the disk's latency into its overhead figures).
//!
//! The writer encodes each batch as it arrives, appending its lines to one buffer that holds
//! every batch waiting to be written, back to back, and returns the batch to the pool. It then
//! commits a *group*: every waiting batch that belongs in the current segment, written with
//! one `write` of that contiguous buffer and fsynced once. Rollover is decided per batch
//! exactly as in the reference (after a batch, if the segment holds ≥ `rollover_max_events`
//! records or ≥ `rollover_max_bytes` bytes), so segment boundaries, rollover and pruning counts
//! do not depend on how batches were grouped. A failed write or fsync cuts the segment back to
//! its size before the group (no half line ever stays on disk), counts a failure, and retries
//! the same batches after a backoff (1 s doubling to 60 s); while the writer is failing,
//! batches beyond `max_queued_batches` are dropped and counted instead of growing memory.

mod manifest;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use manifest::{
    MANIFEST_FILE, MANIFEST_FORMAT, RecoveryReport, SegmentEntry, SessionStatus, SessionSummary,
    TORN_SUFFIX, segment_filename, segment_index,
};
use serde::Serialize;

use crate::record::{RecordHeader, SampleRecord};

/// Sink configuration. Defaults are the reference's always-on defaults.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Directory of segments and manifest; created with its parents.
    pub root_dir: PathBuf,
    /// Hand a batch to the writer once it holds this many records.
    pub flush_every_events: usize,
    /// … or once this much time has passed since the last hand-off.
    pub flush_every: Duration,
    /// Roll the segment over once it holds this many bytes.
    pub rollover_max_bytes: u64,
    /// … or this many records.
    pub rollover_max_events: u64,
    /// Keep at most this many segment files (the open one counted, never deleted).
    pub retention_max_files: usize,
    /// Keep at most this many bytes of segments (the open one counted, never deleted).
    pub retention_max_total_bytes: u64,
    /// Batches the writer may hold while it cannot write; beyond this, batches are dropped
    /// and counted. Also the capacity of the hand-off queue. The sink owns a fixed pool of
    /// `max_queued_batches + 2` batches (the queue's, the one being filled and the one the
    /// writer is encoding) and the writer one buffer for the encoded lines of a full backlog,
    /// all allocated and touched when it opens, so its memory does not grow while it runs.
    pub max_queued_batches: usize,
    /// First retry delay after a failed write.
    pub failure_backoff: Duration,
    /// Largest retry delay.
    pub failure_backoff_max: Duration,
    /// Injected I/O failures, for tests of the failure paths.
    #[doc(hidden)]
    pub faults: Option<FaultInjector>,
}

/// Encoded record size the buffers are sized for (records are about 500 bytes; larger ones
/// make a buffer grow once, and it keeps its size).
const ESTIMATED_RECORD_BYTES: usize = 640;

impl SinkConfig {
    /// The defaults for a sink rooted at `root_dir`: the knob table's
    /// ([`fleetgate_common::knobs`]) for what a knob can change.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        use fleetgate_common::knobs;
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        SinkConfig {
            root_dir: root_dir.into(),
            flush_every_events: size(knobs::DEFAULT_FLUSH_EVERY_EVENTS),
            flush_every: Duration::from_secs_f64(knobs::DEFAULT_FLUSH_EVERY_SECONDS),
            rollover_max_bytes: knobs::DEFAULT_ROLLOVER_MAX_BYTES,
            rollover_max_events: knobs::DEFAULT_ROLLOVER_MAX_EVENTS,
            retention_max_files: size(knobs::DEFAULT_RETENTION_MAX_FILES),
            retention_max_total_bytes: knobs::DEFAULT_RETENTION_MAX_TOTAL_BYTES,
            max_queued_batches: 16,
            failure_backoff: Duration::from_secs(1),
            failure_backoff_max: Duration::from_secs(60),
            faults: None,
        }
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), SinkError> {
        let bad = |field: &'static str, rule: &'static str| {
            Err(SinkError::InvalidConfig {
                field,
                message: format!("{field} must be {rule}"),
            })
        };
        if self.flush_every_events < 1 {
            return bad("flush_every_events", ">= 1");
        }
        if self.flush_every.is_zero() {
            return bad("flush_every_seconds", "> 0");
        }
        if self.rollover_max_bytes < 1 {
            return bad("rollover_max_bytes", ">= 1");
        }
        if self.rollover_max_events < 1 {
            return bad("rollover_max_events", ">= 1");
        }
        if self.retention_max_files < 1 {
            return bad("retention_max_files", ">= 1");
        }
        if self.retention_max_total_bytes < 1 {
            return bad("retention_max_total_bytes", ">= 1");
        }
        if self.retention_max_total_bytes < self.rollover_max_bytes {
            return bad("retention_max_total_bytes", ">= rollover_max_bytes");
        }
        if self.max_queued_batches < 1 {
            return bad("max_queued_batches", ">= 1");
        }
        if self.failure_backoff.is_zero() {
            return bad("failure_backoff_seconds", "> 0");
        }
        if self.failure_backoff_max < self.failure_backoff {
            return bad("failure_backoff_max_seconds", ">= failure_backoff_seconds");
        }
        Ok(())
    }
}

/// A sink could not be opened or closed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A configuration value is out of range.
    #[error("invalid telemetry sink config: {message}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// `<field> must be …`.
        message: String,
    },
    /// The sink directory could not be prepared.
    #[error("telemetry sink {path}: {error}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The writer thread died.
    #[error("telemetry sink writer thread stopped unexpectedly")]
    WriterGone,
}

/// Counters of a sink instance (not persisted; they start at zero for every instance).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    /// Rollovers by size or count (closing the last segment is not one).
    pub rollover_count: u64,
    /// Segments deleted by retention.
    pub pruned_segment_count: u64,
    /// Recorded bytes of the deleted segments.
    pub pruned_bytes: u64,
    /// Segments on disk, the open one included.
    pub final_retained_files: u64,
    /// Bytes of those segments.
    pub final_retained_bytes: u64,
    /// Records written and fsynced by this instance.
    pub durable_records: u64,
    /// Records not yet durable (in the batch or queued).
    pub buffered_records: u64,
    /// Encoded bytes not yet durable (samples still in the batch being filled count once the
    /// writer has encoded them).
    pub buffered_bytes: u64,
    /// Records dropped because the writer could not keep them.
    pub dropped_records: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
    /// Failed writes, fsyncs, cut-backs, segment deletions and manifest writes.
    pub flush_failures: u64,
    /// Failures in a row.
    pub consecutive_flush_failures: u64,
    /// Last failure, `<operation> <path>: <error>`.
    pub last_flush_error: Option<String>,
    /// First failure of this instance, in the same form (the one that usually names the
    /// cause: a full disk, a read-only mount).
    pub first_flush_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    rollover_count: AtomicU64,
    pruned_segment_count: AtomicU64,
    pruned_bytes: AtomicU64,
    retained_files: AtomicU64,
    retained_bytes: AtomicU64,
    durable_records: AtomicU64,
    queued_records: AtomicU64,
    queued_bytes: AtomicU64,
    dropped_records: AtomicU64,
    dropped_bytes: AtomicU64,
    flush_failures: AtomicU64,
    consecutive_flush_failures: AtomicU64,
}

/// One record of a batch.
#[derive(Debug, Clone, Copy)]
enum RawRecord {
    /// A sample, encoded by the writer.
    Sample(SampleRecord),
    /// A line the appending side encoded itself: the batch's `lines` up to this offset, from
    /// the end of the previous `Line`.
    Line { end: usize },
}

/// Records in arrival order, as the sampling side fills them and hands them to the writer.
/// Batches come from the sink's pool and go back to it once the writer has encoded them.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<RawRecord>,
    /// The encoded lines of the `Line` records, back to back.
    lines: Vec<u8>,
}

impl Batch {
    /// A pool batch for `records` records, its memory touched.
    fn with_capacity(records: usize) -> Self {
        let mut batch = Batch {
            records: vec![RawRecord::Line { end: 0 }; records],
            lines: vec![1u8; 2 * ESTIMATED_RECORD_BYTES],
        };
        batch.clear();
        batch
    }

    fn clear(&mut self) {
        self.records.clear();
        self.lines.clear();
    }
}

/// The batch being filled by the sampling thread.
#[derive(Debug)]
struct Pending {
    batch: Batch,
    /// The last hand-off.
    since: Instant,
}

/// State shared between the sampling side and the writer thread.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    first_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain counters and
    // buffers), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stats(&self) -> SinkStats {
        let c = &self.counters;
        let (pending_records, pending_bytes) = {
            let p = lock(&self.pending);
            (p.batch.records.len() as u64, p.batch.lines.len() as u64)
        };
        SinkStats {
            rollover_count: c.rollover_count.load(Ordering::Relaxed),
            pruned_segment_count: c.pruned_segment_count.load(Ordering::Relaxed),
            pruned_bytes: c.pruned_bytes.load(Ordering::Relaxed),
            final_retained_files: c.retained_files.load(Ordering::Relaxed),
            final_retained_bytes: c.retained_bytes.load(Ordering::Relaxed),
            durable_records: c.durable_records.load(Ordering::Relaxed),
            buffered_records: pending_records + c.queued_records.load(Ordering::Relaxed),
            buffered_bytes: pending_bytes + c.queued_bytes.load(Ordering::Relaxed),
            dropped_records: c.dropped_records.load(Ordering::Relaxed),
            dropped_bytes: c.dropped_bytes.load(Ordering::Relaxed),
            flush_failures: c.flush_failures.load(Ordering::Relaxed),
            consecutive_flush_failures: c.consecutive_flush_failures.load(Ordering::Relaxed),
            last_flush_error: lock(&self.last_error).clone(),
            first_flush_error: lock(&self.first_error).clone(),
        }
    }
}

#[derive(Debug)]
enum Command {
    /// The session's record header, which the writer encodes every sample with.
    Header(Box<RecordHeader>),
    Batch(Batch),
    Close {
        status: SessionStatus,
        reply: mpsc::Sender<SinkStats>,
    },
}

/// What a session registers in the ledger.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Host name.
    pub host: String,
    /// Writing process.
    pub pid: u32,
    /// Launcher job id.
    pub job_id: Option<String>,
    /// Global rank.
    pub rank: u32,
    /// Rank on the host.
    pub local_rank: u32,
    /// Number of ranks.
    pub world_size: u32,
    /// What opened the session.
    pub source: String,
}

/// An open sink with one running session. Close it with [`TelemetrySink::close`]; dropping it
/// closes the session as `incomplete`.
#[derive(Debug)]
pub struct TelemetrySink {
    shared: Arc<Shared>,
    tx: Option<SyncSender<Command>>,
    recycled: Receiver<Batch>,
    thread: Option<JoinHandle<()>>,
    flush_every_events: usize,
    /// Whether the writer has the record header, which samples need.
    has_header: bool,
    session_id: String,
    recovery: RecoveryReport,
}

impl TelemetrySink {
    /// Validates the config, creates the directory, recovers what a previous process left,
    /// registers a new running session and starts the writer thread.
    pub fn open(config: SinkConfig, session: SessionSpec) -> Result<Self, SinkError> {
        config.validate()?;
        let dir = config.root_dir.clone();
        let io_err = |error| SinkError::Io {
            path: dir.clone(),
            error,
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let now_ns = unix_now_ns();
        let mut recovered = manifest::recover(&dir, now_ns).map_err(io_err)?;
        let session_id = uuid::Uuid::new_v4().to_string();
        recovered.sessions.push(SessionSummary {
            session_id: session_id.clone(),
            status: SessionStatus::Running,
            started_at_ns: now_ns,
            ended_at_ns: None,
            host: session.host,
            pid: session.pid,
            job_id: session.job_id,
            rank: session.rank,
            local_rank: session.local_rank,
            world_size: session.world_size,
            source: session.source,
        });
        manifest::write_manifest(&dir, &recovered.sessions, &recovered.segments, true)
            .map_err(io_err)?;
        if recovered.report != RecoveryReport::default() {
            tracing::warn!(
                dir = %dir.display(),
                report = ?recovered.report,
                "Telemetry sink recovered state left by an earlier process."
            );
        }

        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                batch: Batch::default(),
                since: Instant::now(),
            }),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            first_error: Mutex::new(None),
        });
        let (tx, rx) = mpsc::sync_channel(config.max_queued_batches);
        let pool = config.max_queued_batches + 2;
        let (recycle_tx, recycled) = mpsc::sync_channel(pool + 8);
        for _ in 0..pool {
            // Every page is touched now, so the pool's memory is resident before any
            // measurement.
            recycle_tx
                .try_send(Batch::with_capacity(config.flush_every_events))
                .ok();
        }
        let recovery = recovered.report.clone();
        let flush_every_events = config.flush_every_events;
        let writer = writer::Writer::new(
            config,
            recovered,
            session_id.clone(),
            Arc::clone(&shared),
            recycle_tx,
        );
        let thread = std::thread::Builder::new()
            .name("fleetgate-sink-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err)?;
        Ok(TelemetrySink {
            shared,
            tx: Some(tx),
            recycled,
            thread: Some(thread),
            flush_every_events,
            has_header: false,
            session_id,
            recovery,
        })
    }

    /// The running session's id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// What startup recovery repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Gives the writer the session's record header, with which it encodes every sample
    /// appended by [`TelemetrySink::append_sample`]; set it once, before the first sample.
    pub fn set_record_header(&mut self, header: RecordHeader) {
        self.send(Command::Header(Box::new(header)));
        self.has_header = true;
    }

    /// Appends one sample; the writer thread encodes it. Nothing is formatted or allocated
    /// here: the sample is copied into the batch being filled. Hands the batch to the writer
    /// when it holds `flush_every_events` records; blocks only when the writer's queue is full
    /// (the writer drains it continuously, so this is backpressure, never a wait for the
    /// disk's fsync).
    ///
    /// # Panics
    ///
    /// If no record header was set ([`TelemetrySink::set_record_header`]).
    pub fn append_sample(&mut self, sample: &SampleRecord) {
        assert!(
            self.has_header,
            "a sample appended before the record header"
        );
        let mut pending = self.lock_pending();
        pending.batch.records.push(RawRecord::Sample(*sample));
        self.hand_off_if_full(&mut pending);
    }

    /// Appends one record encoded here: `encode` writes exactly one complete line. For the
    /// records that carry text; hands off and blocks as [`TelemetrySink::append_sample`].
    pub fn append_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.lock_pending();
        let batch = &mut pending.batch;
        encode(&mut batch.lines);
        let end = batch.lines.len();
        batch.records.push(RawRecord::Line { end });
        self.hand_off_if_full(&mut pending);
    }

    /// Locks the batch being filled; gives it a pool batch if the writer took the last one.
    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        let mut pending = lock(&self.shared.pending);
        if pending.batch.records.capacity() == 0 {
            pending.batch = self.spare();
        }
        pending
    }

    fn hand_off_if_full(&self, pending: &mut Pending) {
        if pending.batch.records.len() >= self.flush_every_events {
            let batch = take_batch(pending, self.spare());
            // Sent while holding the batch lock so that the writer's idle pick-up can never
            // overtake this batch (the writer only ever try-locks, so this cannot deadlock).
            self.send(Command::Batch(batch));
        }
    }

    /// A free batch from the pool. Waits while every batch is queued or being encoded: the
    /// pool is larger than the queue by two, so a wait ends as soon as the writer has encoded
    /// the batch in its hands.
    fn spare(&self) -> Batch {
        self.recycled.recv().unwrap_or_default()
    }

    /// Hands whatever is buffered to the writer now (it becomes durable asynchronously).
    pub fn flush(&mut self) {
        let mut pending = lock(&self.shared.pending);
        if !pending.batch.records.is_empty() {
            let batch = take_batch(&mut pending, self.spare());
            self.send(Command::Batch(batch));
        }
    }

    fn send(&self, command: Command) {
        if let Some(tx) = &self.tx {
            // A send only fails when the writer thread is gone; close() reports that.
            tx.send(command).ok();
        }
    }

    /// Current counters.
    pub fn stats(&self) -> SinkStats {
        self.shared.stats()
    }

    /// Writes everything still buffered, closes the last segment (not counted as a rollover),
    /// ends the session with `status` (or `incomplete` if records were dropped), rewrites the
    /// manifest durably and stops the writer. Nothing is read back from disk.
    pub fn close(mut self, status: SessionStatus) -> Result<SinkStats, SinkError> {
        self.close_inner(status)
    }

    fn close_inner(&mut self, status: SessionStatus) -> Result<SinkStats, SinkError> {
        self.flush();
        let Some(tx) = self.tx.take() else {
            return Err(SinkError::WriterGone);
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = tx.send(Command::Close {
            status,
            reply: reply_tx,
        });
        drop(tx);
        let stats = sent.ok().and_then(|()| reply_rx.recv().ok());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("Telemetry sink writer thread panicked.");
        }
        stats.ok_or(SinkError::WriterGone)
    }
}

impl Drop for TelemetrySink {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // Best effort: a sink dropped without close() still writes what it holds.
            if let Err(err) = self.close_inner(SessionStatus::Incomplete) {
                tracing::warn!(error = %err, "Telemetry sink dropped without a clean close.");
            }
        }
    }
}

fn take_batch(pending: &mut Pending, spare: Batch) -> Batch {
    pending.since = Instant::now();
    std::mem::replace(&mut pending.batch, spare)
}

/// Nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// I/O operations a [`FaultInjector`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Writing a group of batches into a segment.
    Write,
    /// fsync of a segment.
    Sync,
    /// Cutting a segment back after a failed write.
    Truncate,
}

/// Makes the next N sink operations of a kind fail with a chosen OS error (ENOSPC, EIO, …),
/// optionally after a partial write. Shared: tests keep a clone and arm it while the sink runs.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector(Arc<FaultState>);

#[derive(Debug, Default)]
struct FaultState {
    writes: AtomicU32,
    syncs: AtomicU32,
    truncates: AtomicU32,
    errno: AtomicU32,
    partial_bytes: AtomicUsize,
    injected: AtomicU64,
}

impl FaultInjector {
    /// A disarmed injector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `count` operations `op` fail with OS error `errno`; a failing write first
    /// writes `partial_bytes` bytes for real, as a full disk does.
    pub fn arm(&self, op: FaultOp, count: u32, errno: i32, partial_bytes: usize) {
        self.0.errno.store(errno.unsigned_abs(), Ordering::SeqCst);
        self.0.partial_bytes.store(partial_bytes, Ordering::SeqCst);
        self.counter(op).store(count, Ordering::SeqCst);
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.0.injected.load(Ordering::SeqCst)
    }

    fn counter(&self, op: FaultOp) -> &AtomicU32 {
        match op {
            FaultOp::Write => &self.0.writes,
            FaultOp::Sync => &self.0.syncs,
            FaultOp::Truncate => &self.0.truncates,
        }
    }

    /// `Some(error)` if this operation must fail; for writes also how many bytes to write first.
    fn take(&self, op: FaultOp) -> Option<(std::io::Error, usize)> {
        let counter = self.counter(op);
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        self.0.injected.fetch_add(1, Ordering::SeqCst);
        let errno = i32::try_from(self.0.errno.load(Ordering::SeqCst)).unwrap_or(5);
        Some((
            std::io::Error::from_raw_os_error(errno),
            self.0.partial_bytes.load(Ordering::SeqCst),
        ))
    }
}

#[cfg(test)]
mod tests;
