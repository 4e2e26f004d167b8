//! A finished report as the coordinator keeps it and sends it: its JSON, compressed.
//!
//! A 10,000-agent report is about 95 MB of JSON, most of it the same keys and shapes agent
//! after agent. The coordinator writes it straight through an LZ4 frame encoder
//! ([`EncodedReport::encode`]), so the whole JSON is never held at once, and keeps only the
//! compressed bytes (a few MB) for the clients that stream it and for the finished runs it
//! keeps. Readers inflate it a piece at a time ([`EncodedReport::reader`]); what they read is
//! byte for byte what `serde_json::to_writer` wrote.

use std::io::{self, Read, Write};
use std::sync::Arc;

use lz4_flex::frame::{FrameDecoder, FrameEncoder, FrameInfo};
use serde::Serialize;

/// A report's JSON, kept as one LZ4 frame, with its length.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedReport {
    lz4: Vec<u8>,
    json_bytes: u64,
}

impl std::fmt::Debug for EncodedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedReport")
            .field("json_bytes", &self.json_bytes)
            .field("held_bytes", &self.lz4.len())
            .finish()
    }
}

/// Counts the bytes written through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The JSON written between two calls to the frame encoder.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// An LZ4 frame with a checksum of its content, so damaged bytes read as an error.
fn encoder() -> FrameEncoder<Vec<u8>> {
    FrameEncoder::with_frame_info(FrameInfo::new().content_checksum(true), Vec::new())
}

impl EncodedReport {
    /// `report` as compact JSON, compressed as it is written.
    pub fn encode<T: Serialize + ?Sized>(report: &T) -> io::Result<Self> {
        // serde_json writes a token at a time: the frame encoder takes them in blocks.
        let mut out = io::BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            Counted {
                inner: encoder(),
                bytes: 0,
            },
        );
        serde_json::to_writer(&mut out, report)?;
        let counted = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        let lz4 = counted.inner.finish().map_err(io::Error::other)?;
        Ok(EncodedReport {
            lz4,
            json_bytes: counted.bytes,
        })
    }

    /// JSON text as it is, compressed.
    pub fn from_json(json: &str) -> Self {
        let mut encoder = encoder();
        // Writing to a Vec cannot fail, and neither can finishing the frame into one.
        encoder.write_all(json.as_bytes()).ok();
        EncodedReport {
            lz4: encoder.finish().unwrap_or_default(),
            json_bytes: json.len() as u64,
        }
    }

    /// A report received as its LZ4 `frame` (as [`Self::frame`] gives it), said to hold
    /// `json_bytes` of JSON. Nothing is checked here: reading it ([`Self::json`]) refuses a
    /// damaged frame, one that fails its content checksum, and any other length.
    pub fn from_frame(frame: Vec<u8>, json_bytes: u64) -> Self {
        EncodedReport {
            lz4: frame,
            json_bytes,
        }
    }

    /// The compressed bytes: one LZ4 frame, with a checksum of its content.
    pub fn frame(&self) -> &[u8] {
        &self.lz4
    }

    /// Bytes of JSON it holds.
    pub fn json_bytes(&self) -> u64 {
        self.json_bytes
    }

    /// Bytes it takes in memory (the compressed frame).
    pub fn held_bytes(&self) -> usize {
        self.lz4.len()
    }

    /// The JSON, inflated whole.
    pub fn json(&self) -> io::Result<String> {
        let mut json = String::with_capacity(usize::try_from(self.json_bytes).unwrap_or(0));
        Exact::new(FrameDecoder::new(self.lz4.as_slice()), self.json_bytes)
            .read_to_string(&mut json)?;
        Ok(json)
    }

    /// The JSON, inflated as it is read; the reader shares the report.
    pub fn reader(report: Arc<EncodedReport>) -> ReportReader {
        let json_bytes = report.json_bytes;
        ReportReader(Exact::new(
            FrameDecoder::new(Frame { report, at: 0 }),
            json_bytes,
        ))
    }
}

/// Reads the JSON out of `inner` and refuses it to end anywhere but at the length it was
/// encoded to: an end before it, or a byte past it, is an error (`InvalidData`), so no reader
/// of a report mistakes a damaged or truncated one for a shorter report.
#[derive(Debug)]
struct Exact<R> {
    inner: R,
    read: u64,
    expected: u64,
}

impl<R> Exact<R> {
    fn new(inner: R, expected: u64) -> Self {
        Exact {
            inner,
            read: 0,
            expected,
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if (n == 0 && self.read != self.expected) || self.read > self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the report reads back as {} bytes, not the {} it was encoded to",
                    self.read, self.expected
                ),
            ));
        }
        Ok(n)
    }
}

/// The compressed bytes of a shared report, read from the start.
#[derive(Debug)]
struct Frame {
    report: Arc<EncodedReport>,
    at: usize,
}

impl Read for Frame {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.report.lz4.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

/// A shared report's JSON, inflated as it is read ([`EncodedReport::reader`]); it ends only
/// at the length the report was encoded to, else it gives an error.
pub struct ReportReader(Exact<FrameDecoder<Frame>>);

impl std::fmt::Debug for ReportReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReportReader")
            .field(self.0.inner.get_ref())
            .finish()
    }
}

impl Read for ReportReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report-like document of about `agents` × 200 bytes, different for each agent.
    fn document(agents: usize) -> serde_json::Value {
        let runtimes: serde_json::Map<String, serde_json::Value> = (0..agents)
            .map(|i| {
                (
                    format!("agent-{i:05}/gpumemprof_cpu"),
                    serde_json::json!({
                        "status": "ok",
                        "peak_rss_bytes": 1_000_000 + i * 7,
                        "ratio": i as f64 / 3.0,
                        "note": "é ✓ \"quoted\"",
                    }),
                )
            })
            .collect();
        serde_json::json!({ "version": "v0.4", "runtimes": runtimes })
    }

    #[test]
    fn it_inflates_to_the_bytes_serde_json_writes_and_holds_less() {
        let doc = document(5_000);
        let plain = serde_json::to_string(&doc).unwrap();
        let encoded = EncodedReport::encode(&doc).unwrap();
        assert_eq!(encoded.json_bytes(), plain.len() as u64);
        assert_eq!(encoded.json().unwrap(), plain);
        // Repeated keys and shapes: a fifth of the text or less.
        assert!(
            encoded.held_bytes() * 5 < plain.len(),
            "{} of {}",
            encoded.held_bytes(),
            plain.len()
        );
        let from_text = EncodedReport::from_json(&plain);
        assert_eq!(from_text.json_bytes(), plain.len() as u64);
        assert_eq!(from_text.json().unwrap(), plain);
    }

    #[test]
    fn a_frame_sent_elsewhere_reads_back_only_whole_and_undamaged() {
        let plain = serde_json::to_string(&document(2_000)).unwrap();
        let encoded = EncodedReport::encode(&document(2_000)).unwrap();
        let frame = encoded.frame().to_vec();
        let json_bytes = encoded.json_bytes();
        assert_eq!(frame.len(), encoded.held_bytes());

        let received = EncodedReport::from_frame(frame.clone(), json_bytes);
        assert_eq!(received, encoded);
        assert_eq!(received.json().unwrap(), plain);

        // Another length than the JSON's, either way, is refused.
        for claimed in [json_bytes - 1, json_bytes + 1] {
            let err = EncodedReport::from_frame(frame.clone(), claimed)
                .json()
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{claimed}: {err}");
        }
        // A byte changed anywhere in the compressed blocks, or the frame cut short, is refused
        // (the content checksum, or the frame's own structure).
        for at in [frame.len() / 3, frame.len() / 2, frame.len() - 5] {
            let mut damaged = frame.clone();
            damaged[at] ^= 0x20;
            assert!(
                EncodedReport::from_frame(damaged, json_bytes)
                    .json()
                    .is_err(),
                "a byte changed at {at} of {}",
                frame.len()
            );
        }
        let cut = frame[..frame.len() - 100].to_vec();
        assert!(EncodedReport::from_frame(cut, json_bytes).json().is_err());
    }

    #[test]
    fn a_reader_gives_the_same_bytes_in_pieces_of_any_size() {
        let plain = serde_json::to_string(&document(2_000)).unwrap();
        let shared = Arc::new(EncodedReport::from_json(&plain));
        for piece in [1, 7, 4096, 1 << 20] {
            let mut reader = EncodedReport::reader(Arc::clone(&shared));
            let mut read = Vec::new();
            let mut buf = vec![0; piece];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                read.extend_from_slice(&buf[..n]);
            }
            assert_eq!(read, plain.as_bytes(), "pieces of {piece}");
        }
    }

    #[test]
    fn an_empty_report_is_empty() {
        let encoded = EncodedReport::from_json("");
        assert_eq!(encoded.json_bytes(), 0);
        assert_eq!(encoded.json().unwrap(), "");
        let mut read = Vec::new();
        EncodedReport::reader(Arc::new(encoded))
            .read_to_end(&mut read)
            .unwrap();
        assert!(read.is_empty());
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_shorter_report() {
        let plain = serde_json::to_string(&document(500)).unwrap();
        let mut encoded = EncodedReport::from_json(&plain);
        let cut = encoded.lz4.len() / 2;
        encoded.lz4.truncate(cut);
        assert!(encoded.json().is_err());
        let mut read = Vec::new();
        assert!(
            EncodedReport::reader(Arc::new(encoded))
                .read_to_end(&mut read)
                .is_err()
        );
    }
}
