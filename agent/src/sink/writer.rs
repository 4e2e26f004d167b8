//! The sink's writer thread: encoding, group commit, rollover, retention pruning, cut-back on
//! failure, failure backoff, and the manifest.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::TryLockError;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use super::manifest::{self, Recovered, SegmentEntry, SessionStatus, SessionSummary};
use super::{
    Batch, Command, ESTIMATED_RECORD_BYTES, FaultOp, RawRecord, Shared, SinkConfig, SinkStats,
    lock, unix_now_ns,
};
use crate::record::RecordHeader;

/// Write attempts at close before the remaining records are dropped (with the default backoff
/// a dead disk delays close by at most 1 + 2 + 4 + 8 s).
const CLOSE_WRITE_ATTEMPTS: u32 = 5;

/// How soon the writer looks again for an idle batch when the sampling side held its lock.
const IDLE_RETRY: Duration = Duration::from_millis(1);

/// A batch waiting to be written. Its lines are in `Writer::encoded`, after those of the
/// batches before it.
#[derive(Debug, Clone, Copy)]
struct Queued {
    records: u64,
    bytes: usize,
}

/// The open descriptor of the current segment (always the last entry of `segments`).
#[derive(Debug)]
struct OpenSegment {
    file: File,
}

#[derive(Debug)]
pub(super) struct Writer {
    config: SinkConfig,
    sessions: Vec<SessionSummary>,
    segments: Vec<SegmentEntry>,
    next_index: u64,
    session_id: String,
    open: Option<OpenSegment>,
    /// Whether the last segment is this session's current segment.
    current: bool,
    /// A cut-back that failed: (file, size) to restore before the file is written again.
    pending_cutback: Option<(PathBuf, u64)>,
    /// The session's record header, sent by the sink's owner before the first sample.
    header: Option<RecordHeader>,
    /// Batches waiting to be written, oldest first.
    backlog: VecDeque<Queued>,
    /// The encoded lines of the backlog's batches, back to back: a group is written with one
    /// `write` of its prefix.
    encoded: Vec<u8>,
    retry_at: Option<Instant>,
    consecutive_failures: u32,
    manifest_dirty: bool,
    manifest_written: Instant,
    /// When to look next for a batch that has waited `flush_every` in the sampling side.
    idle_check_at: Instant,
    shared: Arc<Shared>,
    recycle: SyncSender<Batch>,
}

impl Writer {
    pub(super) fn new(
        config: SinkConfig,
        recovered: Recovered,
        session_id: String,
        shared: Arc<Shared>,
        recycle: SyncSender<Batch>,
    ) -> Self {
        // Room for a full backlog and the batch being encoded; every page touched now, so the
        // buffer is resident before any measurement.
        let mut encoded = vec![
            1u8;
            (config.max_queued_batches + 1)
                .saturating_mul(config.flush_every_events)
                .saturating_mul(ESTIMATED_RECORD_BYTES)
        ];
        encoded.clear();
        let backlog = VecDeque::with_capacity(config.max_queued_batches);
        let idle_check_at = Instant::now() + config.flush_every;
        let writer = Writer {
            config,
            sessions: recovered.sessions,
            segments: recovered.segments,
            next_index: recovered.next_index,
            session_id,
            open: None,
            current: false,
            pending_cutback: None,
            header: None,
            backlog,
            encoded,
            retry_at: None,
            consecutive_failures: 0,
            manifest_dirty: false,
            manifest_written: Instant::now(),
            idle_check_at,
            shared,
            recycle,
        };
        writer.publish_retained();
        writer
    }

    pub(super) fn run(mut self, rx: Receiver<Command>) {
        loop {
            // A retry is only due while there is something to write (a failed manifest
            // rewrite is retried at the next round anyway).
            let wake_at = match self.retry_at {
                Some(at) if !self.backlog.is_empty() => at.min(self.idle_check_at),
                _ => self.idle_check_at,
            };
            let mut close = None;
            match rx.recv_timeout(wake_at.saturating_duration_since(Instant::now())) {
                Ok(Command::Header(header)) => self.header = Some(*header),
                Ok(Command::Batch(batch)) => {
                    // The sampling side has just handed off, so the next batch is not due for
                    // `flush_every`.
                    self.idle_check_at = Instant::now() + self.config.flush_every;
                    self.enqueue(batch);
                    // Take what is already queued, up to the backlog bound: one group, one
                    // fsync. What stays in the queue pushes back on the sampling side.
                    while self.backlog.len() < self.config.max_queued_batches
                        && let Ok(command) = rx.try_recv()
                    {
                        match command {
                            Command::Header(header) => self.header = Some(*header),
                            Command::Batch(batch) => self.enqueue(batch),
                            Command::Close { status, reply } => {
                                close = Some((status, Some(reply)));
                                break;
                            }
                        }
                    }
                }
                Ok(Command::Close { status, reply }) => close = Some((status, Some(reply))),
                Err(RecvTimeoutError::Timeout) => self.take_idle_batch(),
                Err(RecvTimeoutError::Disconnected) => {
                    close = Some((SessionStatus::Incomplete, None))
                }
            }
            self.write_backlog(close.is_some());
            if let Some((status, reply)) = close {
                let stats = self.finish(status);
                if let Some(reply) = reply {
                    // The closing side may have given up waiting; nothing is lost either way.
                    reply.send(stats).ok();
                }
                return;
            }
            if self.manifest_dirty
                || (self.current && self.manifest_written.elapsed() >= self.config.flush_every)
            {
                self.rewrite_manifest(false);
            }
        }
    }

    /// Takes the batch being filled if `flush_every` has passed since the last hand-off
    /// without it reaching the record threshold, and sets when to look again.
    fn take_idle_batch(&mut self) {
        let flush_every = self.config.flush_every;
        let batch = {
            // try_lock: if the sampling side holds the lock it is appending right now, and it
            // may be waiting for a batch this thread is about to free.
            let mut pending = match self.shared.pending.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    self.idle_check_at = Instant::now() + IDLE_RETRY;
                    return;
                }
            };
            let due = pending.since + flush_every;
            let now = Instant::now();
            if pending.batch.records.is_empty() {
                self.idle_check_at = now + flush_every;
                return;
            }
            if now < due {
                self.idle_check_at = due;
                return;
            }
            self.idle_check_at = now + flush_every;
            // The sampling side takes a pool batch for its next record.
            super::take_batch(&mut pending, Batch::default())
        };
        self.enqueue(batch);
    }

    /// Encodes a batch onto the end of `encoded`, returns the batch to the pool, and adds it
    /// to the backlog. The backlog only fills up while writes are failing (a healthy writer
    /// empties it every round); then the newest batch is dropped and counted, so a dead disk
    /// costs records, not memory, and never blocks the sampling side.
    fn enqueue(&mut self, mut batch: Batch) {
        let start = self.encoded.len();
        self.encode(&batch);
        let queued = Queued {
            records: batch.records.len() as u64,
            bytes: self.encoded.len() - start,
        };
        batch.clear();
        // Every batch came from the pool, so the pool has room for it.
        self.recycle.try_send(batch).ok();
        let c = &self.shared.counters;
        if self.backlog.len() >= self.config.max_queued_batches {
            self.encoded.truncate(start);
            c.dropped_records
                .fetch_add(queued.records, Ordering::Relaxed);
            c.dropped_bytes
                .fetch_add(queued.bytes as u64, Ordering::Relaxed);
            return;
        }
        c.queued_records
            .fetch_add(queued.records, Ordering::Relaxed);
        c.queued_bytes
            .fetch_add(queued.bytes as u64, Ordering::Relaxed);
        self.backlog.push_back(queued);
    }

    /// Appends a batch's records to `encoded` as JSON lines, in order: samples encoded with
    /// the session's header, lines the appending side encoded copied as they are.
    fn encode(&mut self, batch: &Batch) {
        let mut line_start = 0;
        for record in &batch.records {
            match record {
                RawRecord::Sample(sample) => {
                    let header = self
                        .header
                        .as_ref()
                        .expect("the sink sends the record header before any sample");
                    sample.encode(header, &mut self.encoded);
                }
                RawRecord::Line { end } => {
                    self.encoded
                        .extend_from_slice(&batch.lines[line_start..*end]);
                    line_start = *end;
                }
            }
        }
    }

    /// Writes queued batches, one segment run (write all, fsync once) at a time. While the
    /// writer is backing off after a failure it returns at once, except when closing: then it
    /// waits out the backoff and tries up to [`CLOSE_WRITE_ATTEMPTS`] times before dropping
    /// (and counting) what it still holds.
    fn write_backlog(&mut self, closing: bool) {
        let mut failed_attempts = 0;
        while !self.backlog.is_empty() {
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if now < at {
                    if !closing {
                        return;
                    }
                    std::thread::sleep(at - now);
                }
            }
            let Err(err) = self.write_run() else { continue };
            self.record_failure(err);
            failed_attempts += 1;
            if !closing {
                return;
            }
            if failed_attempts >= CLOSE_WRITE_ATTEMPTS {
                let c = &self.shared.counters;
                for queued in std::mem::take(&mut self.backlog) {
                    c.queued_records
                        .fetch_sub(queued.records, Ordering::Relaxed);
                    c.queued_bytes
                        .fetch_sub(queued.bytes as u64, Ordering::Relaxed);
                    c.dropped_records
                        .fetch_add(queued.records, Ordering::Relaxed);
                    c.dropped_bytes
                        .fetch_add(queued.bytes as u64, Ordering::Relaxed);
                }
                self.encoded.clear();
                tracing::error!(
                    dir = %self.config.root_dir.display(),
                    "Telemetry sink could not write its remaining records at close; they were dropped."
                );
                return;
            }
        }
    }

    /// Writes the backlog's leading batches that belong in the current segment with one
    /// `write`, fsyncs once, then commits them: counts, rollover, pruning.
    fn write_run(&mut self) -> Result<(), (String, io::Error)> {
        self.ensure_open()?;
        let seg = self.segments.len() - 1;
        let (start_events, start_bytes) = {
            let s = &self.segments[seg];
            (s.event_count, s.size_bytes)
        };
        // Decide the run up front: batch sizes are known, so the rollover point is too.
        let (mut events, mut bytes) = (start_events, start_bytes);
        let mut run = 0;
        let mut run_bytes = 0;
        let mut rolls = false;
        for queued in &self.backlog {
            events += queued.records;
            bytes += queued.bytes as u64;
            run_bytes += queued.bytes;
            run += 1;
            if events >= self.config.rollover_max_events || bytes >= self.config.rollover_max_bytes
            {
                rolls = true;
                break;
            }
        }
        let path = self.config.root_dir.join(&self.segments[seg].filename);
        let faults = self.config.faults.clone();
        let open = self.open.as_mut().ok_or_else(|| {
            (
                format!("write {}", path.display()),
                io::Error::other("segment not open"),
            )
        })?;
        let group = &self.encoded[..run_bytes];
        // The error names the operation that failed: the write, or the fsync after it.
        let written: Result<(), (&str, io::Error)> = (|| {
            if let Some((err, partial)) = faults.as_ref().and_then(|f| f.take(FaultOp::Write)) {
                let partial = open.file.write_all(&group[..partial.min(group.len())]);
                return Err(("write", partial.err().unwrap_or(err)));
            }
            open.file.write_all(group).map_err(|e| ("write", e))?;
            if let Some((err, _)) = faults.as_ref().and_then(|f| f.take(FaultOp::Sync)) {
                return Err(("sync", err));
            }
            open.file.sync_data().map_err(|e| ("sync", e))
        })();
        if let Err((op, err)) = written {
            // Never leave a partial line: cut the segment back to its size before the run.
            let cut = match faults.as_ref().and_then(|f| f.take(FaultOp::Truncate)) {
                Some((e, _)) => Err(e),
                None => open.file.set_len(start_bytes),
            };
            if let Err(cut_err) = cut {
                tracing::warn!(
                    path = %path.display(),
                    error = %cut_err,
                    "Telemetry segment cut-back failed; it will be cut before the next write."
                );
                self.pending_cutback = Some((path.clone(), start_bytes));
                self.open = None;
            }
            return Err((format!("{op} {}", path.display()), err));
        }

        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        let mut run_records = 0;
        for queued in self.backlog.drain(..run) {
            run_records += queued.records;
            c.queued_records
                .fetch_sub(queued.records, Ordering::Relaxed);
            c.queued_bytes
                .fetch_sub(queued.bytes as u64, Ordering::Relaxed);
        }
        self.encoded.drain(..run_bytes);
        let s = &mut self.segments[seg];
        s.event_count = events;
        s.size_bytes = bytes;
        s.closed = rolls;
        c.durable_records.fetch_add(run_records, Ordering::Relaxed);
        self.record_success();
        if rolls {
            self.open = None;
            self.current = false;
            c.rollover_count.fetch_add(1, Ordering::Relaxed);
            self.manifest_dirty = true;
        }
        self.prune();
        self.publish_retained();
        Ok(())
    }

    /// Makes sure the last segment is this session's open segment, creating one if needed.
    fn ensure_open(&mut self) -> Result<(), (String, io::Error)> {
        if self.current && self.open.is_some() {
            return Ok(());
        }
        if self.current {
            // The descriptor was dropped after a failed cut-back: reopen, finishing the cut.
            let path = self
                .config
                .root_dir
                .join(&self.segments[self.segments.len() - 1].filename);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| (format!("open {}", path.display()), e))?;
            if let Some((cut_path, size)) = self.pending_cutback.clone()
                && cut_path == path
            {
                // Only ever shorten: a file already shorter than the cut is left alone.
                let len = file
                    .metadata()
                    .map_err(|e| (format!("stat {}", path.display()), e))?
                    .len();
                if len >= size {
                    self.cut_back(&file, size)
                        .map_err(|e| (format!("cut back {}", path.display()), e))?;
                }
                self.pending_cutback = None;
            }
            self.open = Some(OpenSegment { file });
            return Ok(());
        }
        let filename = manifest::segment_filename(self.next_index);
        let path = self.config.root_dir.join(&filename);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| (format!("create {}", path.display()), e))?;
        // Make the new file's directory entry durable once, so fsynced data is reachable.
        manifest::sync_dir(&self.config.root_dir)
            .map_err(|e| (format!("sync {}", self.config.root_dir.display()), e))?;
        self.next_index += 1;
        self.segments.push(SegmentEntry {
            filename,
            event_count: 0,
            size_bytes: 0,
            closed: false,
            session_id: Some(self.session_id.clone()),
        });
        self.open = Some(OpenSegment { file });
        self.current = true;
        self.manifest_dirty = true;
        Ok(())
    }

    /// Truncates a segment back to `size` (through the fault injector in tests).
    fn cut_back(&self, file: &File, size: u64) -> io::Result<()> {
        match self
            .config
            .faults
            .as_ref()
            .and_then(|f| f.take(FaultOp::Truncate))
        {
            Some((e, _)) => Err(e),
            None => file.set_len(size),
        }
    }

    /// Deletes the oldest closed segments while the retained files or bytes exceed the limits.
    /// The open segment counts toward both limits but is never deleted.
    fn prune(&mut self) {
        loop {
            let files = self.segments.len();
            let bytes: u64 = self.segments.iter().map(|s| s.size_bytes).sum();
            if files <= self.config.retention_max_files
                && bytes <= self.config.retention_max_total_bytes
            {
                return;
            }
            let Some(pos) = self.segments.iter().position(|s| s.closed) else {
                return;
            };
            let path = self.config.root_dir.join(&self.segments[pos].filename);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.record_failure((format!("delete {}", path.display()), e));
                    return;
                }
            }
            let mut torn = path.into_os_string();
            torn.push(manifest::TORN_SUFFIX);
            // The segment's quarantined torn tail, if it ever had one, goes with it.
            std::fs::remove_file(PathBuf::from(torn)).ok();
            let removed = self.segments.remove(pos);
            let c = &self.shared.counters;
            c.pruned_segment_count.fetch_add(1, Ordering::Relaxed);
            c.pruned_bytes
                .fetch_add(removed.size_bytes, Ordering::Relaxed);
            self.manifest_dirty = true;
        }
    }

    fn publish_retained(&self) {
        let c = &self.shared.counters;
        c.retained_files
            .store(self.segments.len() as u64, Ordering::Relaxed);
        c.retained_bytes.store(
            self.segments.iter().map(|s| s.size_bytes).sum(),
            Ordering::Relaxed,
        );
    }

    fn rewrite_manifest(&mut self, durable: bool) {
        match manifest::write_manifest(
            &self.config.root_dir,
            &self.sessions,
            &self.segments,
            durable,
        ) {
            Ok(()) => {
                self.manifest_dirty = false;
                self.manifest_written = Instant::now();
            }
            Err(e) => {
                // Records are already durable; the manifest is rewritten at the next group.
                let what = format!(
                    "write {}",
                    self.config.root_dir.join(manifest::MANIFEST_FILE).display()
                );
                self.record_failure((what, e));
            }
        }
    }

    fn record_failure(&mut self, (what, err): (String, io::Error)) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let c = &self.shared.counters;
        c.flush_failures.fetch_add(1, Ordering::Relaxed);
        c.consecutive_flush_failures
            .store(u64::from(self.consecutive_failures), Ordering::Relaxed);
        let message = format!("{what}: {err}");
        if self.consecutive_failures == 1 {
            tracing::warn!(error = %message, "Telemetry sink write failed; retrying with backoff.");
        }
        lock(&self.shared.first_error).get_or_insert_with(|| message.clone());
        *lock(&self.shared.last_error) = Some(message);
        let exponent = (self.consecutive_failures - 1).min(16);
        let delay = self
            .config
            .failure_backoff
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.config.failure_backoff_max);
        self.retry_at = Some(Instant::now() + delay);
    }

    fn record_success(&mut self) {
        if self.consecutive_failures > 0 {
            tracing::info!(
                failures = self.consecutive_failures,
                "Telemetry sink writes recovered."
            );
        }
        self.consecutive_failures = 0;
        self.retry_at = None;
        self.shared
            .counters
            .consecutive_flush_failures
            .store(0, Ordering::Relaxed);
    }

    /// Closes the last segment (not a rollover), ends the session, writes the manifest durably.
    fn finish(&mut self, status: SessionStatus) -> SinkStats {
        self.open = None;
        if let Some((path, size)) = self.pending_cutback.take() {
            // Last chance to take a half-written batch back off the disk.
            let cut = OpenOptions::new().write(true).open(&path).and_then(|f| {
                if f.metadata()?.len() >= size {
                    f.set_len(size)?;
                }
                f.sync_all()
            });
            if let Err(e) = cut {
                self.record_failure((format!("cut back {}", path.display()), e));
            }
        }
        if self.current {
            if let Some(last) = self.segments.last_mut() {
                last.closed = true;
            }
            self.current = false;
        }
        let dropped = self.shared.counters.dropped_records.load(Ordering::Relaxed);
        let status = if dropped > 0 && status == SessionStatus::Completed {
            SessionStatus::Incomplete
        } else {
            status
        };
        if let Some(session) = self
            .sessions
            .iter_mut()
            .find(|s| s.session_id == self.session_id)
        {
            session.status = status;
            session.ended_at_ns = Some(unix_now_ns());
        }
        self.rewrite_manifest(true);
        self.publish_retained();
        self.shared.stats()
    }
}
