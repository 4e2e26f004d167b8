//! The sink's writer thread: group commit, rollover, retention pruning, cut-back on failure,
//! failure backoff, and the manifest.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use super::manifest::{self, Recovered, SegmentEntry, SessionStatus, SessionSummary};
use super::{Batch, Command, FaultOp, Shared, SinkConfig, SinkStats, lock, unix_now_ns};

/// Write attempts at close before the remaining records are dropped (with the default backoff
/// a dead disk delays close by at most 1 + 2 + 4 + 8 s).
const CLOSE_WRITE_ATTEMPTS: u32 = 5;

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
    backlog: VecDeque<Batch>,
    retry_at: Option<Instant>,
    consecutive_failures: u32,
    manifest_dirty: bool,
    manifest_written: Instant,
    shared: Arc<Shared>,
    recycle: SyncSender<Vec<u8>>,
}

impl Writer {
    pub(super) fn new(
        config: SinkConfig,
        recovered: Recovered,
        session_id: String,
        shared: Arc<Shared>,
        recycle: SyncSender<Vec<u8>>,
    ) -> Self {
        let writer = Writer {
            config,
            sessions: recovered.sessions,
            segments: recovered.segments,
            next_index: recovered.next_index,
            session_id,
            open: None,
            current: false,
            pending_cutback: None,
            backlog: VecDeque::new(),
            retry_at: None,
            consecutive_failures: 0,
            manifest_dirty: false,
            manifest_written: Instant::now(),
            shared,
            recycle,
        };
        writer.publish_retained();
        writer
    }

    pub(super) fn run(mut self, rx: Receiver<Command>) {
        loop {
            let timeout = match self.retry_at {
                Some(at) => at
                    .saturating_duration_since(Instant::now())
                    .min(self.config.flush_every),
                None => self.config.flush_every,
            };
            let mut close = None;
            match rx.recv_timeout(timeout) {
                Ok(Command::Batch(batch)) => {
                    self.enqueue(batch);
                    // Take what is already queued, up to the backlog bound: one group, one
                    // fsync. What stays in the queue pushes back on the sampling side.
                    while self.backlog.len() < self.config.max_queued_batches
                        && let Ok(command) = rx.try_recv()
                    {
                        match command {
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

    /// A batch that has waited `flush_every` without reaching the record threshold.
    fn take_idle_batch(&mut self) {
        let batch = {
            // try_lock: if the sampling side holds the lock it is not idle, and it may be
            // waiting for a buffer this thread is about to free.
            let mut pending = match self.shared.pending.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            if pending.records == 0 || pending.since.elapsed() < self.config.flush_every {
                return;
            }
            // The sampling side takes a pooled buffer for its next record.
            super::take_batch(&mut pending, Vec::new())
        };
        self.enqueue(batch);
    }

    /// Adds a batch to the backlog. The backlog only fills up while writes are failing (a
    /// healthy writer empties it every round); then the newest batch is dropped and counted,
    /// so a dead disk costs records, not memory, and never blocks the sampling side.
    fn enqueue(&mut self, batch: Batch) {
        let c = &self.shared.counters;
        if self.backlog.len() >= self.config.max_queued_batches {
            c.dropped_records
                .fetch_add(batch.records, Ordering::Relaxed);
            c.dropped_bytes
                .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
            self.recycle(batch.bytes);
            return;
        }
        c.queued_records.fetch_add(batch.records, Ordering::Relaxed);
        c.queued_bytes
            .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
        self.backlog.push_back(batch);
    }

    fn recycle(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        // A full pool means this buffer is surplus (made for an idle flush): free it.
        self.recycle.try_send(bytes).ok();
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
                for batch in std::mem::take(&mut self.backlog) {
                    c.queued_records.fetch_sub(batch.records, Ordering::Relaxed);
                    c.queued_bytes
                        .fetch_sub(batch.bytes.len() as u64, Ordering::Relaxed);
                    c.dropped_records
                        .fetch_add(batch.records, Ordering::Relaxed);
                    c.dropped_bytes
                        .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
                }
                tracing::error!(
                    dir = %self.config.root_dir.display(),
                    "Telemetry sink could not write its remaining records at close; they were dropped."
                );
                return;
            }
        }
    }

    /// Writes the backlog's leading batches that belong in the current segment, fsyncs once,
    /// then commits them: counts, rollover, pruning.
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
        let mut rolls = false;
        for batch in &self.backlog {
            events += batch.records;
            bytes += batch.bytes.len() as u64;
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
        let written: io::Result<()> = (|| {
            for batch in self.backlog.iter().take(run) {
                match faults.as_ref().and_then(|f| f.take(FaultOp::Write)) {
                    Some((err, partial)) => {
                        open.file
                            .write_all(&batch.bytes[..partial.min(batch.bytes.len())])?;
                        return Err(err);
                    }
                    None => open.file.write_all(&batch.bytes)?,
                }
            }
            if let Some((err, _)) = faults.as_ref().and_then(|f| f.take(FaultOp::Sync)) {
                return Err(err);
            }
            open.file.sync_data()
        })();
        if let Err(err) = written {
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
            return Err((format!("write {}", path.display()), err));
        }

        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        let mut run_records = 0;
        for _ in 0..run {
            if let Some(batch) = self.backlog.pop_front() {
                run_records += batch.records;
                c.queued_records.fetch_sub(batch.records, Ordering::Relaxed);
                c.queued_bytes
                    .fetch_sub(batch.bytes.len() as u64, Ordering::Relaxed);
                self.recycle(batch.bytes);
            }
        }
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
