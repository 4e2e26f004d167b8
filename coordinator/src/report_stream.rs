//! A report of any size on the wire: the coordinator sends it as ordered `ReportChunk`s of at
//! most [`REPORT_CHUNK_BYTES`] ([`ReportChunks`]): the compressed report it keeps (an LZ4
//! frame) to a client that asks for it, else the JSON inflated from it; the last chunk
//! carries the SHA-256 of all the bytes sent. The client puts them back together
//! ([`ReportAssembler`]), checking order, completeness, length and digest, and then, for a
//! frame, its content checksum and the JSON's length, before anything reads the JSON. No
//! message is ever larger than a chunk and its framing, whatever the report's size.

use std::io::Read as _;
use std::sync::Arc;

use fleetgate_common::report::{EncodedReport, ReportReader};
use fleetgate_proto::v1 as pb;
use sha2::{Digest as _, Sha256};

pub use fleetgate_proto::REPORT_CHUNK_BYTES;

/// Most bytes of report a client puts back together in memory (1 GiB): a report that says it
/// is larger is refused before anything is held. A 10,000-agent report is about 95 MB.
pub const MAX_REPORT_BYTES: u64 = 1 << 30;

/// What a client takes the report's chunks as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkForm {
    /// The JSON itself: what a client that predates the LZ4 form gets.
    Json,
    /// The LZ4 frame the coordinator keeps, sent as it is (about a twentieth of the JSON at
    /// 10,000 agents): no inflating, and fewer bytes to hash and to send.
    Lz4Frame,
}

impl ChunkForm {
    /// The form a request asks for with its `report_lz4` flag.
    pub fn asked(report_lz4: bool) -> Self {
        if report_lz4 {
            ChunkForm::Lz4Frame
        } else {
            ChunkForm::Json
        }
    }
}

/// Where the chunks' bytes come from.
#[derive(Debug)]
enum Source {
    /// The JSON, inflated from the kept frame a chunk at a time.
    Json(ReportReader),
    /// The kept frame.
    Frame(Arc<EncodedReport>),
}

/// A report cut into chunks, in order: its JSON, inflated from the compressed report a chunk
/// at a time, or the compressed report itself ([`ChunkForm`]); the digest is computed as the
/// chunks go, so nothing is done up front and nothing is held but the chunk being made. A
/// report that cannot be read back (damaged in memory, or shorter or longer than it was
/// encoded) ends the chunks with an error, never with a short last chunk.
#[derive(Debug)]
pub struct ReportChunks {
    source: Source,
    total: u64,
    json_bytes: u64,
    offset: u64,
    digest: Sha256,
    done: bool,
}

impl ReportChunks {
    /// The chunks of `report`, in `form`.
    pub fn new(report: Arc<EncodedReport>, form: ChunkForm) -> Self {
        let json_bytes = report.json_bytes();
        let (source, total) = match form {
            ChunkForm::Json => (Source::Json(EncodedReport::reader(report)), json_bytes),
            ChunkForm::Lz4Frame => {
                let total = report.held_bytes() as u64;
                (Source::Frame(report), total)
            }
        };
        ReportChunks {
            source,
            total,
            json_bytes,
            offset: 0,
            digest: Sha256::new(),
            done: false,
        }
    }

    /// The next chunk's bytes: up to a chunk's worth, fewer only at the end of the report.
    /// The JSON's reader refuses to end before the report's length; at the last chunk it is
    /// read to its end, so a byte past the report's length is refused too.
    fn read_chunk(&mut self) -> std::io::Result<Vec<u8>> {
        let want = (self.total - self.offset).min(REPORT_CHUNK_BYTES as u64);
        match &mut self.source {
            Source::Json(json) => {
                let mut data = Vec::with_capacity(want as usize);
                json.take(want).read_to_end(&mut data)?;
                if self.offset + want == self.total {
                    std::io::copy(json, &mut std::io::sink())?;
                }
                Ok(data)
            }
            Source::Frame(report) => {
                // `offset + want` is within the frame: `total` is its length.
                let (from, to) = (self.offset as usize, (self.offset + want) as usize);
                Ok(report.frame()[from..to].to_vec())
            }
        }
    }
}

impl Iterator for ReportChunks {
    type Item = std::io::Result<pb::ReportChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let data = match self.read_chunk() {
            Ok(data) => data,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.digest.update(&data);
        let end = self.offset + data.len() as u64;
        let last = end == self.total;
        let chunk = pb::ReportChunk {
            data,
            offset: self.offset,
            total_bytes: self.total,
            last,
            sha256: if last {
                std::mem::take(&mut self.digest).finalize().to_vec()
            } else {
                Vec::new()
            },
            lz4_frame: matches!(self.source, Source::Frame(_)),
            json_bytes: self.json_bytes,
        };
        self.offset = end;
        self.done = last;
        Some(Ok(chunk))
    }
}

/// Why the chunks received do not make the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportStreamError {
    /// A chunk starts after the end of what was received: bytes are missing.
    #[error("a gap in the report: a chunk at offset {offset}, but {received} bytes were received")]
    Gap {
        /// Where the chunk starts.
        offset: u64,
        /// Bytes received before it.
        received: u64,
    },
    /// A chunk starts before the end of what was received: bytes came twice.
    #[error(
        "a duplicate in the report: a chunk at offset {offset}, but {received} bytes were already received"
    )]
    Duplicate {
        /// Where the chunk starts.
        offset: u64,
        /// Bytes received before it.
        received: u64,
    },
    /// A chunk gives another total than the first one did.
    #[error("the report's length changed from {first} to {now} bytes between chunks")]
    LengthChanged {
        /// The first chunk's total.
        first: u64,
        /// This chunk's total.
        now: u64,
    },
    /// The chunks run past the declared length, or the last one ends before it.
    #[error(
        "the report's chunks end at {end} bytes, but the report is {total} bytes{}",
        if *.last { " (the last chunk came early)" } else { "" }
    )]
    Length {
        /// Where the chunk ends.
        end: u64,
        /// The declared length.
        total: u64,
        /// Whether the chunk was marked last.
        last: bool,
    },
    /// A chunk carries more data than a chunk may.
    #[error(
        "a report chunk of {bytes} bytes, more than the {REPORT_CHUNK_BYTES} a chunk may carry"
    )]
    ChunkTooLarge {
        /// Its data's size.
        bytes: usize,
    },
    /// The declared length is more than a client holds.
    #[error(
        "the report is {total} bytes, more than the {MAX_REPORT_BYTES} bytes this client accepts"
    )]
    TooLarge {
        /// The declared length.
        total: u64,
    },
    /// The digest of what was received is not the one the last chunk gives.
    #[error("the report's SHA-256 is {received}, but the coordinator sent {sent}")]
    Digest {
        /// Of the bytes received, hex.
        received: String,
        /// The last chunk's, hex.
        sent: String,
    },
    /// A chunk came after the last one.
    #[error("a report chunk came after the last one")]
    AfterLast,
    /// The stream ended before the last chunk.
    #[error("the report stopped after {received} of {total} bytes")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// The declared length (0: no chunk came).
        total: u64,
    },
    /// The reassembled report is not UTF-8.
    #[error("the report is not UTF-8")]
    NotUtf8,
    /// A chunk is in another form (JSON or LZ4 frame) than the first one, or gives another
    /// JSON length.
    #[error("the report's chunks changed form between chunks: {0}")]
    FormChanged(String),
    /// The LZ4 frame received does not inflate to the JSON it says it holds.
    #[error("the report's LZ4 frame does not inflate to its {json_bytes} bytes of JSON: {message}")]
    Inflate {
        /// The JSON length the chunks gave.
        json_bytes: u64,
        /// What the frame's reader said.
        message: String,
    },
}

/// The client's side: chunks in, the whole report out once the last one checks.
#[derive(Debug, Default)]
pub struct ReportAssembler {
    bytes: Vec<u8>,
    total: Option<u64>,
    /// The first chunk's form and JSON length.
    form: Option<(bool, u64)>,
    digest: Sha256,
    finished: bool,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        write!(hex, "{byte:02x}").ok();
    }
    hex
}

/// A chunk's form, for an error: `(lz4_frame, json_bytes)`.
fn describe_form((lz4_frame, json_bytes): (bool, u64)) -> String {
    if lz4_frame {
        format!("an LZ4 frame of {json_bytes} bytes of JSON")
    } else {
        format!("{json_bytes} bytes of JSON")
    }
}

impl ReportAssembler {
    /// Nothing received yet.
    pub fn new() -> Self {
        ReportAssembler::default()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The declared length, once a chunk came.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Whether a chunk came.
    pub fn started(&self) -> bool {
        self.total.is_some()
    }

    /// Takes the next chunk. Returns the whole report's JSON when `chunk` is the last one and
    /// everything checks; `None` while more are to come.
    pub fn push(&mut self, chunk: pb::ReportChunk) -> Result<Option<String>, ReportStreamError> {
        if self.finished {
            return Err(ReportStreamError::AfterLast);
        }
        let total = *self.total.get_or_insert(chunk.total_bytes);
        if chunk.total_bytes != total {
            return Err(ReportStreamError::LengthChanged {
                first: total,
                now: chunk.total_bytes,
            });
        }
        let form = *self.form.get_or_insert((chunk.lz4_frame, chunk.json_bytes));
        if (chunk.lz4_frame, chunk.json_bytes) != form {
            return Err(ReportStreamError::FormChanged(format!(
                "the first chunk {}, this one {}",
                describe_form(form),
                describe_form((chunk.lz4_frame, chunk.json_bytes))
            )));
        }
        let (lz4_frame, json_bytes) = form;
        // The JSON is held whole once read, whatever form it came in.
        for total in [total, json_bytes] {
            if total > MAX_REPORT_BYTES {
                return Err(ReportStreamError::TooLarge { total });
            }
        }
        if chunk.data.len() > REPORT_CHUNK_BYTES {
            return Err(ReportStreamError::ChunkTooLarge {
                bytes: chunk.data.len(),
            });
        }
        let received = self.received();
        if chunk.offset > received {
            return Err(ReportStreamError::Gap {
                offset: chunk.offset,
                received,
            });
        }
        if chunk.offset < received {
            return Err(ReportStreamError::Duplicate {
                offset: chunk.offset,
                received,
            });
        }
        let end = received + chunk.data.len() as u64;
        if end > total || (chunk.last && end != total) {
            return Err(ReportStreamError::Length {
                end,
                total,
                last: chunk.last,
            });
        }
        self.digest.update(&chunk.data);
        if self.bytes.capacity() == 0 {
            // Room for the whole report at once (it is at most `MAX_REPORT_BYTES`), so the
            // bytes are never copied as they grow: at 10,000 agents 95 MB of JSON, or its
            // frame's 5 MB. Only the pages written are used; where the room cannot be had,
            // the buffer grows as it goes.
            self.bytes.try_reserve_exact(total as usize).ok();
        }
        self.bytes.extend_from_slice(&chunk.data);
        if !chunk.last {
            return Ok(None);
        }
        self.finished = true;
        let digest = std::mem::take(&mut self.digest).finalize();
        if digest.as_slice() != chunk.sha256.as_slice() {
            return Err(ReportStreamError::Digest {
                received: hex(&digest),
                sent: hex(&chunk.sha256),
            });
        }
        let bytes = std::mem::take(&mut self.bytes);
        if lz4_frame {
            return EncodedReport::from_frame(bytes, json_bytes)
                .json()
                .map(Some)
                .map_err(|e| ReportStreamError::Inflate {
                    json_bytes,
                    message: e.to_string(),
                });
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ReportStreamError::NotUtf8)
    }

    /// The error for a stream that ended here: [`ReportStreamError::Truncated`].
    pub fn truncated(&self) -> ReportStreamError {
        ReportStreamError::Truncated {
            received: self.received(),
            total: self.total.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `len` bytes: printable, different at every offset.
    fn report(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect::<String>()
    }

    /// A report of `len` bytes that LZ4 cannot shorten much: letters from a linear
    /// congruential generator.
    fn scrambled(len: usize) -> String {
        let mut state = 0x2545_f491_u64;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b'a' + ((state >> 33) % 26) as u8)
            })
            .collect()
    }

    /// The frame of `json`, said to hold `json_bytes` of JSON: a report that reads back
    /// shorter or longer than it claims.
    fn claiming(json: &str, json_bytes: u64) -> EncodedReport {
        EncodedReport::from_frame(EncodedReport::from_json(json).frame().to_vec(), json_bytes)
    }

    /// The chunks of `report` in `form`.
    fn chunks_in(report: EncodedReport, form: ChunkForm) -> Vec<pb::ReportChunk> {
        ReportChunks::new(Arc::new(report), form)
            .collect::<std::io::Result<_>>()
            .unwrap()
    }

    /// The chunks of `json` as JSON, kept compressed as the coordinator keeps it.
    fn chunks_of(json: &str) -> Vec<pb::ReportChunk> {
        chunks_in(EncodedReport::from_json(json), ChunkForm::Json)
    }

    fn assemble(
        chunks: impl IntoIterator<Item = pb::ReportChunk>,
    ) -> Result<String, ReportStreamError> {
        let mut assembler = ReportAssembler::new();
        for chunk in chunks {
            if let Some(json) = assembler.push(chunk)? {
                return Ok(json);
            }
        }
        Err(assembler.truncated())
    }

    #[test]
    fn chunks_are_in_order_at_most_a_mebibyte_and_put_back_together() {
        let json = report(3 * REPORT_CHUNK_BYTES + 5);
        let chunks = chunks_of(&json);
        let shape: Vec<(u64, usize, bool)> = chunks
            .iter()
            .map(|c| (c.offset, c.data.len(), c.last))
            .collect();
        let mib = REPORT_CHUNK_BYTES as u64;
        assert_eq!(
            shape,
            [
                (0, REPORT_CHUNK_BYTES, false),
                (mib, REPORT_CHUNK_BYTES, false),
                (2 * mib, REPORT_CHUNK_BYTES, false),
                (3 * mib, 5, true),
            ]
        );
        assert!(chunks.iter().all(|c| c.total_bytes == json.len() as u64));
        assert!(chunks[..3].iter().all(|c| c.sha256.is_empty()));
        assert_eq!(
            hex(&chunks[3].sha256),
            crate::plan::sha256_hex(json.as_bytes())
        );
        assert_eq!(assemble(chunks).unwrap(), json);
    }

    #[test]
    fn a_small_or_empty_report_is_one_last_chunk() {
        for len in [0, 1, REPORT_CHUNK_BYTES] {
            let json = report(len);
            let chunks = chunks_of(&json);
            assert_eq!(chunks.len(), 1, "{len}");
            assert!(chunks[0].last);
            assert_eq!(assemble(chunks).unwrap(), json);
        }
    }

    #[test]
    fn a_report_that_reads_back_short_or_long_ends_the_chunks_with_an_error() {
        let json = report(2 * REPORT_CHUNK_BYTES + 10);
        // Encoded from more bytes than are there: the last chunk would come short.
        let short = Arc::new(claiming(&json, json.len() as u64 + 3));
        let chunks: Vec<std::io::Result<pb::ReportChunk>> =
            ReportChunks::new(short, ChunkForm::Json).collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks[..2].iter().all(|c| c.is_ok()));
        let err = chunks[2].as_ref().unwrap_err().to_string();
        assert_eq!(
            err,
            "the report reads back as 2097162 bytes, not the 2097165 it was encoded to"
        );
        // Encoded from fewer: the bytes past the end are not sent as if they were the end.
        let long = Arc::new(claiming(&json, json.len() as u64 - 3));
        let chunks: Vec<std::io::Result<pb::ReportChunk>> =
            ReportChunks::new(long, ChunkForm::Json).collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks[2].is_err());
    }

    #[test]
    fn the_frame_is_sent_as_kept_in_ordered_chunks_and_inflates_to_the_json() {
        let json = scrambled(2 * REPORT_CHUNK_BYTES + 100_000);
        let kept = EncodedReport::from_json(&json);
        let frame = kept.frame().to_vec();
        let chunks = chunks_in(kept, ChunkForm::Lz4Frame);
        assert_eq!(
            chunks.len() as u64,
            (frame.len() as u64).div_ceil(REPORT_CHUNK_BYTES as u64)
        );
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        let mut sent = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            assert!(chunk.lz4_frame, "chunk {i}");
            assert_eq!(chunk.json_bytes, json.len() as u64, "chunk {i}");
            assert_eq!(chunk.total_bytes, frame.len() as u64, "chunk {i}");
            assert_eq!(chunk.offset, sent.len() as u64, "chunk {i}");
            assert_eq!(chunk.last, i + 1 == chunks.len(), "chunk {i}");
            sent.extend_from_slice(&chunk.data);
        }
        // The frame byte for byte, and the digest is the frame's.
        assert_eq!(sent, frame);
        assert_eq!(
            hex(&chunks.last().unwrap().sha256),
            crate::plan::sha256_hex(&frame)
        );
        assert_eq!(assemble(chunks).unwrap(), json);

        // A report of repeated shapes goes in a fraction of its JSON's bytes; the JSON form
        // of the same report carries every byte and says so.
        let json = report(3 * REPORT_CHUNK_BYTES);
        let chunks = chunks_in(EncodedReport::from_json(&json), ChunkForm::Lz4Frame);
        assert_eq!(chunks.len(), 1);
        assert!(
            chunks[0].data.len() * 20 < json.len(),
            "{}",
            chunks[0].data.len()
        );
        assert_eq!(assemble(chunks).unwrap(), json);
        let plain = chunks_of(&json);
        assert!(
            plain
                .iter()
                .all(|c| !c.lz4_frame && c.json_bytes == json.len() as u64)
        );
    }

    #[test]
    fn chunks_from_a_coordinator_that_predates_the_frame_form_read_as_json() {
        // Such a coordinator sends neither `lz4_frame` nor `json_bytes`.
        let json = report(2 * REPORT_CHUNK_BYTES + 10);
        let chunks: Vec<pb::ReportChunk> = chunks_of(&json)
            .into_iter()
            .map(|c| pb::ReportChunk {
                lz4_frame: false,
                json_bytes: 0,
                ..c
            })
            .collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(assemble(chunks).unwrap(), json);
    }

    #[test]
    fn a_frame_that_does_not_inflate_to_its_json_is_refused_by_name() {
        let json = scrambled(REPORT_CHUNK_BYTES + 10);
        // The frame holds one byte less than the chunks say: sent whole and with the right
        // digest, it is still refused once inflated.
        let long = claiming(&json, json.len() as u64 + 1);
        let err = assemble(chunks_in(long, ChunkForm::Lz4Frame)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the report's LZ4 frame does not inflate to its {} bytes of JSON: the report reads back as {} bytes, not the {} it was encoded to",
                json.len() + 1,
                json.len(),
                json.len() + 1
            )
        );
        // A byte of the frame changed (and the digest made again over what is sent): its
        // content checksum refuses it.
        let mut chunks = chunks_in(EncodedReport::from_json(&json), ChunkForm::Lz4Frame);
        let last = chunks.len() - 1;
        chunks[0].data[1_000] ^= 0x01;
        let mut digest = Sha256::new();
        for chunk in &chunks {
            digest.update(&chunk.data);
        }
        chunks[last].sha256 = digest.finalize().to_vec();
        assert!(matches!(
            assemble(chunks),
            Err(ReportStreamError::Inflate { json_bytes, .. }) if json_bytes == json.len() as u64
        ));
    }

    #[test]
    fn chunks_that_change_form_or_claim_too_much_json_are_refused() {
        let json = scrambled(2 * REPORT_CHUNK_BYTES);
        let mut chunks = chunks_in(EncodedReport::from_json(&json), ChunkForm::Lz4Frame);
        chunks[1].lz4_frame = false;
        assert_eq!(
            assemble(chunks).unwrap_err().to_string(),
            format!(
                "the report's chunks changed form between chunks: the first chunk an LZ4 frame of {0} bytes of JSON, this one {0} bytes of JSON",
                json.len()
            )
        );
        let mut chunks = chunks_in(EncodedReport::from_json(&json), ChunkForm::Lz4Frame);
        chunks[1].json_bytes += 1;
        assert!(matches!(
            assemble(chunks),
            Err(ReportStreamError::FormChanged(_))
        ));
        // A small frame that says it inflates to more than a client holds: refused at its
        // first chunk, before anything is inflated.
        let mut chunks = chunks_in(EncodedReport::from_json(&json), ChunkForm::Lz4Frame);
        for chunk in &mut chunks {
            chunk.json_bytes = MAX_REPORT_BYTES + 1;
        }
        let mut assembler = ReportAssembler::new();
        assert_eq!(
            assembler.push(chunks.remove(0)).unwrap_err(),
            ReportStreamError::TooLarge {
                total: MAX_REPORT_BYTES + 1
            }
        );
    }

    fn three_chunks() -> Vec<pb::ReportChunk> {
        chunks_of(&report(2 * REPORT_CHUNK_BYTES + 10))
    }

    #[test]
    fn a_gap_is_named() {
        let mut chunks = three_chunks();
        chunks.remove(1);
        assert_eq!(
            assemble(chunks).unwrap_err().to_string(),
            "a gap in the report: a chunk at offset 2097152, but 1048576 bytes were received"
        );
    }

    #[test]
    fn a_duplicate_is_named() {
        let mut chunks = three_chunks();
        chunks.insert(1, chunks[0].clone());
        assert_eq!(
            assemble(chunks).unwrap_err().to_string(),
            "a duplicate in the report: a chunk at offset 0, but 1048576 bytes were already received"
        );
    }

    #[test]
    fn chunks_out_of_order_are_refused() {
        let mut chunks = three_chunks();
        chunks.swap(1, 2);
        assert!(matches!(
            assemble(chunks),
            Err(ReportStreamError::Gap {
                offset: 2_097_152,
                received: 1_048_576
            })
        ));
    }

    #[test]
    fn a_wrong_digest_is_named_with_both_digests() {
        let mut chunks = three_chunks();
        chunks[1].data[7] ^= 1;
        let err = assemble(chunks.clone()).unwrap_err();
        let ReportStreamError::Digest { received, sent } = &err else {
            panic!("{err}");
        };
        assert_eq!(sent, &hex(&chunks[2].sha256));
        assert_ne!(received, sent);
        assert!(
            err.to_string().starts_with("the report's SHA-256 is "),
            "{err}"
        );

        let mut no_digest = three_chunks();
        no_digest[2].sha256.clear();
        assert!(matches!(
            assemble(no_digest),
            Err(ReportStreamError::Digest { sent, .. }) if sent.is_empty()
        ));
    }

    #[test]
    fn a_stream_that_ends_before_the_last_chunk_is_truncated() {
        let mut chunks = three_chunks();
        chunks.pop();
        assert_eq!(
            assemble(chunks).unwrap_err().to_string(),
            "the report stopped after 2097152 of 2097162 bytes"
        );
        assert_eq!(
            assemble([]).unwrap_err().to_string(),
            "the report stopped after 0 of 0 bytes"
        );
    }

    #[test]
    fn lengths_that_do_not_add_up_are_refused() {
        // The last chunk ends before the declared length.
        let mut early = three_chunks();
        early[1].last = true;
        assert_eq!(
            assemble(early).unwrap_err().to_string(),
            "the report's chunks end at 2097152 bytes, but the report is 2097162 bytes (the last chunk came early)"
        );
        // A chunk runs past it.
        let mut long = three_chunks();
        long[2].data.extend_from_slice(b"more");
        assert!(matches!(
            assemble(long),
            Err(ReportStreamError::Length {
                end: 2_097_166,
                total: 2_097_162,
                last: true
            })
        ));
        // The total changes between chunks.
        let mut changed = three_chunks();
        changed[1].total_bytes += 1;
        assert!(matches!(
            assemble(changed),
            Err(ReportStreamError::LengthChanged { .. })
        ));
        // A chunk after the last.
        let mut after = three_chunks();
        after.push(after[2].clone());
        let mut assembler = ReportAssembler::new();
        for chunk in after.drain(..3) {
            assembler.push(chunk).unwrap();
        }
        assert_eq!(
            assembler.push(after.remove(0)),
            Err(ReportStreamError::AfterLast)
        );
    }

    #[test]
    fn oversized_reports_and_chunks_are_refused_before_they_are_held() {
        let mut assembler = ReportAssembler::new();
        let huge = pb::ReportChunk {
            total_bytes: MAX_REPORT_BYTES + 1,
            ..pb::ReportChunk::default()
        };
        assert_eq!(
            assembler.push(huge),
            Err(ReportStreamError::TooLarge {
                total: MAX_REPORT_BYTES + 1
            })
        );
        let mut assembler = ReportAssembler::new();
        let fat = pb::ReportChunk {
            data: vec![b'x'; REPORT_CHUNK_BYTES + 1],
            total_bytes: 2 * REPORT_CHUNK_BYTES as u64,
            ..pb::ReportChunk::default()
        };
        assert_eq!(
            assembler.push(fat),
            Err(ReportStreamError::ChunkTooLarge {
                bytes: REPORT_CHUNK_BYTES + 1
            })
        );
        assert_eq!(assembler.received(), 0);
    }
}
