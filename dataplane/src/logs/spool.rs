//! The request-log spool: an append-only, size-bounded queue on disk that
//! holds every record from the moment it is written until the control plane
//! has acknowledged it, across restarts.
//!
//! # On-disk format
//!
//! The spool folder holds segment files and one acknowledgement file:
//!
//! - `<first_sequence:020>.seg`: a segment. It starts with the 8-byte magic
//!   `LLMGWSP1`, followed by frames:
//!
//!   ```text
//!   len: u32 LE | crc: u32 LE | payload: len bytes
//!   ```
//!
//!   `payload` is a protobuf-encoded `llmgw.v1.RequestLog` whose `sequence`
//!   field holds the sequence number the spool assigned to it; `crc` is the
//!   CRC32 (IEEE) of the four `len` bytes followed by the payload. Sequences
//!   are consecutive within a segment and increase across segments.
//! - `acked`: the highest sequence the control plane acknowledged, as
//!   `seq: u64 LE | crc: u32 LE` (CRC32 of the eight `seq` bytes). It is
//!   replaced atomically (write `acked.tmp`, rename): always, and synced,
//!   before an acknowledgement deletes a segment; otherwise at most once per
//!   [`ACK_PERSIST_INTERVAL`] (a file create and rename per acknowledgement
//!   cost a busy data plane several percent of its CPU), and when the spool
//!   is dropped. So the file may lag the acknowledgements by up to that
//!   interval, never below a deleted segment: after a crash those records
//!   are resent. A missing or damaged file reads as 0: everything is
//!   resent. The control plane's idempotent ingest absorbs both.
//!
//! - `lock`: empty; the running data plane holds an exclusive OS lock on it
//!   (`flock`) for as long as the spool is open, so a second data plane
//!   pointed at the same folder refuses to start instead of interleaving
//!   sequences and deleting the other's segments. The lock goes with the
//!   process, so a crash never leaves a stale lock behind.
//!
//! # Recovery
//!
//! [`Spool::open`] scans every segment. The first frame that is incomplete,
//! fails its CRC, does not decode or breaks the sequence run ends the
//! segment: the file is truncated there (a write torn by a crash loses only
//! the frame being written). Segments left empty or wholly acknowledged are
//! deleted. The next sequence is one past the highest of every frame found
//! and the acknowledged sequence, so sequences never go back.
//!
//! # Durability
//!
//! [`Spool::append`] hands each batch to the kernel with one `write`: from
//! then on a killed process (SIGKILL, panic, OOM) loses nothing. Surviving a
//! machine crash or power loss also needs [`Spool::sync`] (`fdatasync`),
//! which the writer task calls after a batch at most once per sync interval;
//! see [`super::LogsConfig::sync_interval`].
//!
//! # Bounds
//!
//! Segments roll at `segment_bytes`. When the spool's total size exceeds
//! `max_bytes`, the oldest segment is deleted whether acknowledged or not;
//! its unacknowledged records are counted in [`SpoolStats::dropped_full`].
//! A segment is otherwise deleted only once every record in it is
//! acknowledged.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use llmgw_proto::v1 as pb;
use prost::Message;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::wire::LogRecord;

/// First bytes of every segment file; the digit is the format version.
pub const MAGIC: &[u8; 8] = b"LLMGWSP1";
/// `len` and `crc`, before each payload.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Largest encoded record the spool accepts; bigger ones are refused and
/// counted (the control plane takes batches of up to 64 MiB).
pub const MAX_RECORD_BYTES: usize = 32 << 20;
/// Name of the acknowledgement file.
pub const ACK_FILE: &str = "acked";
/// About how many bytes of frames [`Spool::append`] encodes before writing
/// them.
const WRITE_CHUNK_BYTES: usize = 256 << 10;
/// Name of the file the spool's exclusive lock is taken on.
pub const LOCK_FILE: &str = "lock";
/// Longest time an acknowledgement that deletes no segment waits before
/// the acknowledgement file is rewritten.
pub const ACK_PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
const ACK_TMP_FILE: &str = "acked.tmp";
const SEGMENT_EXT: &str = "seg";
/// Segments no smaller than this, so a tiny configuration still works.
const MIN_SEGMENT_BYTES: u64 = 64;

/// Sizes of a [`Spool`].
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// Upper bound of the spool's size on disk, in bytes.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size. Clamped to
    /// at most a quarter of `max_bytes`, so dropping the oldest segment
    /// always makes room.
    pub segment_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: super::DEFAULT_SPOOL_MAX_BYTES,
            segment_bytes: super::DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// A point-in-time view of the spool, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Segment files on disk.
    pub segments: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Records on disk not yet acknowledged.
    pub depth: u64,
    /// Sequence of the last record written; 0 before the first.
    pub last_written: u64,
    /// Highest sequence acknowledged by the control plane.
    pub acked: u64,
    /// Unacknowledged records lost because the size bound dropped their
    /// segment.
    pub dropped_full: u64,
    /// Segments dropped by the size bound.
    pub dropped_segments: u64,
    /// Records lost to failed writes (disk full, I/O errors).
    pub write_failed: u64,
    /// Records refused for being larger than [`MAX_RECORD_BYTES`].
    pub oversized: u64,
    /// Damaged frames found: cut off on recovery or skipped on read.
    pub corrupt: u64,
}

/// What [`Spool::read_from`] returns (tests only).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Records in sequence order, possibly none.
    pub records: Vec<pb::RequestLog>,
    /// Where the next read starts: one past the last frame read (damaged
    /// frames included), or past the last record written when there was
    /// nothing to read.
    pub next_seq: u64,
}

/// What [`Spool::read_raw_from`] returns.
#[derive(Debug, Default)]
pub struct RawReadBatch {
    /// Records in sequence order, possibly none.
    pub records: Vec<RawRecord>,
    /// Where the next read starts: one past the last frame read (damaged
    /// frames included), or past the last record written when there was
    /// nothing to read.
    pub next_seq: u64,
}

/// One record as the spool holds it.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub sequence: u64,
    /// The protobuf encoding of the `RequestLog`.
    pub payload: Bytes,
}

/// The outcome of reading a range of frames.
enum Frames {
    /// Nothing at or after the sequence asked for.
    None { next_seq: u64 },
    /// Whole frames from sequence `seq0` on.
    Some {
        path: PathBuf,
        seq0: u64,
        data: Vec<u8>,
    },
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    /// Start of each frame; frame `i` holds sequence `first_seq + i`.
    offsets: Vec<u64>,
    /// File length: the end of the last frame.
    len: u64,
}

impl Segment {
    fn records(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Sequence of the last frame; `first_seq - 1` when empty.
    fn last_seq(&self) -> u64 {
        (self.first_seq + self.records()).saturating_sub(1)
    }

    /// Records in this segment with a sequence above `acked`.
    fn unacked(&self, acked: u64) -> u64 {
        if self.offsets.is_empty() {
            return 0;
        }
        let first_unacked = self.first_seq.max(acked.saturating_add(1));
        (self.last_seq() + 1).saturating_sub(first_unacked)
    }

    /// End of frame `i`.
    fn frame_end(&self, i: usize) -> u64 {
        self.offsets.get(i + 1).copied().unwrap_or(self.len)
    }
}

#[derive(Debug)]
struct Inner {
    segments: VecDeque<Segment>,
    /// The last segment, open for appending; `None` until the next append
    /// starts a new segment.
    active: Option<File>,
    /// Closed segments whose data has not been synced yet.
    unsynced: Vec<File>,
    next_seq: u64,
    acked: u64,
    /// What the acknowledgement file holds, and when it was written.
    ack_persisted: u64,
    ack_persisted_at: Option<std::time::Instant>,
    total_bytes: u64,
    /// The frames of the last write, kept in memory: the shipper usually
    /// asks for exactly these next, and reading them back from the file
    /// (and checking what was just written) was a tenth of the log
    /// pipeline's work.
    tail: Option<Tail>,
}

/// Frames as written, in one buffer.
#[derive(Debug)]
struct Tail {
    data: Bytes,
    /// (sequence, start, end) of each frame in `data`, consecutive.
    frames: Vec<(u64, usize, usize)>,
}

impl Inner {
    fn last_written(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }
}

#[derive(Debug, Default)]
struct Counters {
    dropped_full: AtomicU64,
    dropped_segments: AtomicU64,
    write_failed: AtomicU64,
    oversized: AtomicU64,
    corrupt: AtomicU64,
}

/// The spool of one data plane. All methods do blocking file I/O: call them
/// from `spawn_blocking` or a dedicated thread, never on the async runtime.
/// A single writer is expected; reads, acknowledgements and stats may come
/// from anywhere at the same time.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Holds the folder's exclusive lock while the spool is open.
    _lock: File,
    opts: SpoolOptions,
    inner: Mutex<Inner>,
    counters: Counters,
    written: watch::Sender<u64>,
    acked: watch::Sender<u64>,
    /// Completed syncs, counted.
    synced: watch::Sender<u64>,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir` and recovers what a
    /// previous run left there; see the module documentation.
    pub fn open(dir: impl Into<PathBuf>, opts: SpoolOptions) -> io::Result<Spool> {
        let dir = dir.into();
        let opts = SpoolOptions {
            max_bytes: opts.max_bytes.max(4 * MIN_SEGMENT_BYTES),
            segment_bytes: opts.segment_bytes.clamp(
                MIN_SEGMENT_BYTES,
                (opts.max_bytes / 4).max(MIN_SEGMENT_BYTES),
            ),
        };
        fs::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;
        let counters = Counters::default();
        let acked = read_ack_file(&dir);
        let _ = fs::remove_file(dir.join(ACK_TMP_FILE));

        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            let Some(n) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            names.push((n, path));
        }
        names.sort();

        let mut segments = VecDeque::new();
        let mut max_seq = 0u64;
        let mut total_bytes = 0u64;
        for (_, path) in names {
            let Some(seg) = recover_segment(&path, &counters)? else {
                continue;
            };
            if seg.offsets.is_empty() || seg.last_seq() <= acked {
                max_seq = max_seq.max(seg.last_seq());
                remove_file_logged(&seg.path);
                continue;
            }
            max_seq = max_seq.max(seg.last_seq());
            total_bytes += seg.len;
            segments.push_back(seg);
        }

        let next_seq = max_seq.max(acked) + 1;
        let spool = Spool {
            dir,
            _lock: lock,
            opts,
            inner: Mutex::new(Inner {
                segments,
                active: None,
                unsynced: Vec::new(),
                next_seq,
                acked,
                ack_persisted: acked,
                ack_persisted_at: None,
                total_bytes,
                tail: None,
            }),
            counters,
            written: watch::Sender::new(next_seq - 1),
            acked: watch::Sender::new(acked),
            synced: watch::Sender::new(0),
        };
        {
            let mut inner = spool.lock();
            spool.enforce_bound(&mut inner);
            let depth: u64 = inner.segments.iter().map(|s| s.unacked(acked)).sum();
            info!(
                dir = %spool.dir.display(),
                segments = inner.segments.len(),
                bytes = inner.total_bytes,
                unacked = depth,
                acked,
                next_sequence = next_seq,
                "request-log spool opened"
            );
        }
        Ok(spool)
    }

    /// The spool's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force (after clamping).
    pub fn options(&self) -> SpoolOptions {
        self.opts
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Assigns each record the next sequence, writes them in one go and
    /// returns the last sequence written (`None` if nothing was). The data
    /// is in the kernel's page cache on return; [`Spool::sync`] makes it
    /// durable. On an error, the records of the failed write are lost and
    /// counted; their sequences are not reused.
    pub fn append<R: Into<LogRecord>>(&self, records: Vec<R>) -> io::Result<Option<u64>> {
        // In place when the records already are `LogRecord`s.
        let mut records: Vec<LogRecord> = records.into_iter().map(Into::into).collect();
        let mut inner = self.lock();

        // Sequences first: an oversized record is dropped without using
        // one up. The lengths measured here size the buffer.
        let mut lens = Vec::with_capacity(records.len());
        let mut seq = inner.next_seq;
        for record in &mut records {
            record.fields.sequence = seq;
            let len = record.encoded_len();
            if len <= MAX_RECORD_BYTES {
                seq += 1;
            }
            lens.push(len);
        }
        let total: usize = lens
            .iter()
            .filter(|&&n| n <= MAX_RECORD_BYTES)
            .map(|n| n + FRAME_HEADER_BYTES)
            .sum();

        // Encode and write in groups of about WRITE_CHUNK_BYTES, so that a
        // burst of large records (a thousand streams ending together) never
        // needs all of its encoding in memory at once; each record is freed
        // as soon as it is encoded.
        let mut pending = records.into_iter().zip(lens).peekable();
        let mut buf = Vec::with_capacity(total.min(WRITE_CHUNK_BYTES));
        // (sequence, start, end) of each frame in `buf`.
        let mut frames: Vec<(u64, usize, usize)> = Vec::new();
        let mut last = None;
        while pending.peek().is_some() {
            buf.clear();
            frames.clear();
            while let Some((record, len)) = pending.next_if(|(_, len)| {
                frames.is_empty() || buf.len() + len + FRAME_HEADER_BYTES <= WRITE_CHUNK_BYTES
            }) {
                let seq = inner.next_seq;
                if len > MAX_RECORD_BYTES {
                    let n = self.counters.oversized.fetch_add(1, Ordering::Relaxed) + 1;
                    warn!(
                        id = record.fields.id,
                        bytes = len,
                        max = MAX_RECORD_BYTES,
                        oversized = n,
                        "request log too large for the spool: dropped"
                    );
                    continue;
                }
                debug_assert_eq!(record.fields.sequence, seq);
                let start = buf.len();
                let len32 = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
                buf.reserve(FRAME_HEADER_BYTES + len);
                buf.extend_from_slice(&len32);
                buf.extend_from_slice(&[0; 4]);
                // The room is reserved, so the checked `encode` (which
                // measures the record again) is not needed.
                record.encode_raw(&mut buf);
                let crc = frame_crc(len32, &buf[start + FRAME_HEADER_BYTES..]);
                buf[start + 4..start + FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
                frames.push((seq, start, buf.len()));
                inner.next_seq += 1;
            }
            // Records of later groups are lost too if this write fails.
            let later = pending.len() as u64;
            last = match self.write_frames(&mut inner, &buf, &frames, last, later) {
                Ok(l) => l.or(last),
                Err(e) => {
                    inner.tail = None;
                    return Err(e);
                }
            };
            inner.tail = (!frames.is_empty()).then(|| Tail {
                data: Bytes::from(std::mem::take(&mut buf)),
                frames: std::mem::take(&mut frames),
            });
        }
        self.enforce_bound(&mut inner);
        drop(inner);
        if let Some(l) = last {
            self.written.send_replace(l);
        }
        Ok(last)
    }

    /// Writes encoded frames to the active segment(s), rolling segments
    /// as they fill; returns the last sequence written. On an error the
    /// frames not written, and `later` records not yet encoded, are counted
    /// as lost, and readers learn of what was written (`last` included).
    fn write_frames(
        &self,
        inner: &mut Inner,
        buf: &[u8],
        frames: &[(u64, usize, usize)],
        mut last: Option<u64>,
        later: u64,
    ) -> io::Result<Option<u64>> {
        let mut i = 0;
        while i < frames.len() {
            let seq = frames[i].0;
            if let Err(e) = self.ensure_active(inner, seq) {
                self.count_failed((frames.len() - i) as u64 + later);
                if let Some(l) = last {
                    self.written.send_replace(l);
                }
                return Err(e);
            }
            let Some(seg) = inner.segments.back() else {
                return Err(io::Error::other("spool has no active segment"));
            };
            let seg_len = seg.len;
            // As many frames as fit the segment, at least one.
            let room = self.opts.segment_bytes.saturating_sub(seg_len);
            let mut j = i + 1;
            while j < frames.len() && (frames[j].2 - frames[i].1) as u64 <= room {
                j += 1;
            }
            let chunk = &buf[frames[i].1..frames[j - 1].2];
            let written = match inner.active.as_mut() {
                Some(file) => file.write_all(chunk),
                None => Err(io::Error::other("spool has no active segment")),
            };
            if let Err(e) = written {
                self.abandon_active(inner, seg_len);
                self.count_failed((frames.len() - i) as u64 + later);
                if let Some(l) = last {
                    self.written.send_replace(l);
                }
                return Err(e);
            }
            if let Some(seg) = inner.segments.back_mut() {
                for &(_, start, _) in &frames[i..j] {
                    seg.offsets.push(seg_len + (start - frames[i].1) as u64);
                }
                seg.len += chunk.len() as u64;
                if seg.len >= self.opts.segment_bytes {
                    // Roll: the next frame starts a new segment.
                    if let Some(file) = inner.active.take() {
                        inner.unsynced.push(file);
                    }
                }
            }
            inner.total_bytes += chunk.len() as u64;
            last = Some(frames[j - 1].0);
            i = j;
        }
        Ok(last)
    }

    /// Makes everything written so far durable (`fdatasync`). The lock is
    /// not held while the disk works.
    pub fn sync(&self) -> io::Result<()> {
        let (closed, active) = {
            let mut inner = self.lock();
            let active = inner.active.as_ref().map(File::try_clone).transpose()?;
            (std::mem::take(&mut inner.unsynced), active)
        };
        for file in closed.iter().chain(active.iter()) {
            file.sync_data()?;
        }
        self.synced.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Counts completed [`Spool::sync`] calls.
    pub fn subscribe_synced(&self) -> watch::Receiver<u64> {
        self.synced.subscribe()
    }

    /// [`Spool::read_raw_from`], decoded: for tests, which look at records.
    #[cfg(test)]
    pub fn read_from(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<ReadBatch> {
        let raw = self.read_raw_from(from, max_records, max_bytes)?;
        let records = raw
            .records
            .into_iter()
            .map(|r| pb::RequestLog::decode(r.payload).map_err(io::Error::other))
            .collect::<io::Result<_>>()?;
        Ok(ReadBatch {
            records,
            next_seq: raw.next_seq,
        })
    }

    /// Reads records from sequence `from` on (skipping any that are gone),
    /// at most `max_records` and, past the first, `max_bytes` of frames,
    /// each as the encoded `RequestLog` its frame holds (checksum and
    /// sequence checked), ready to be shipped as it is (see `super::wire`).
    /// Reads stay within one segment; call again from
    /// [`RawReadBatch::next_seq`] for more.
    pub fn read_raw_from(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<RawReadBatch> {
        if let Some(batch) = self.read_tail(from, max_records, max_bytes) {
            return Ok(batch);
        }
        Ok(match self.read_frames(from, max_records, max_bytes)? {
            Frames::None { next_seq } => RawReadBatch {
                records: Vec::new(),
                next_seq,
            },
            Frames::Some { path, seq0, data } => self.raw_frames(&path, seq0, Bytes::from(data)),
        })
    }

    /// A read served from the frames of the last write, if they hold
    /// `from` and the spool still does.
    fn read_tail(&self, from: u64, max_records: usize, max_bytes: usize) -> Option<RawReadBatch> {
        let inner = self.lock();
        let tail = inner.tail.as_ref()?;
        let first = tail.frames.first()?.0;
        let i = usize::try_from(from.checked_sub(first)?).ok()?;
        let start = tail.frames.get(i)?.1;
        // Still in the spool (not acknowledged and deleted, nor dropped by
        // the size bound), and like a read from the file, within the one
        // segment that holds `from`.
        let segment_end = inner
            .segments
            .iter()
            .find(|s| !s.offsets.is_empty() && s.first_seq <= from && from <= s.last_seq())?
            .last_seq();
        let mut records = Vec::new();
        for &(seq, s, e) in &tail.frames[i..] {
            if seq > segment_end
                || (!records.is_empty() && (records.len() >= max_records || e - start > max_bytes))
            {
                break;
            }
            records.push(RawRecord {
                sequence: seq,
                payload: tail.data.slice(s + FRAME_HEADER_BYTES..e),
            });
        }
        let next_seq = records.last().map_or(from, |r| r.sequence + 1);
        Some(RawReadBatch { records, next_seq })
    }

    /// The frames of one read, in one buffer.
    fn read_frames(&self, from: u64, max_records: usize, max_bytes: usize) -> io::Result<Frames> {
        let max_records = max_records.max(1);
        // A segment may be deleted between finding it and opening it (an
        // acknowledgement or the size bound): look again.
        for _ in 0..16 {
            let (path, seq0, start, end) = {
                let inner = self.lock();
                let Some(seg) = inner
                    .segments
                    .iter()
                    .find(|s| !s.offsets.is_empty() && s.last_seq() >= from)
                else {
                    return Ok(Frames::None {
                        next_seq: from.max(inner.next_seq),
                    });
                };
                let first = usize::try_from(from.saturating_sub(seg.first_seq)).unwrap_or(0);
                let start = seg.offsets[first];
                let mut last = first;
                while last + 1 < seg.offsets.len()
                    && last + 1 - first < max_records
                    && seg.frame_end(last + 1) - start <= max_bytes as u64
                {
                    last += 1;
                }
                (
                    seg.path.clone(),
                    seg.first_seq + first as u64,
                    start,
                    seg.frame_end(last),
                )
            };
            let data = match read_range(&path, start, end) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            return Ok(Frames::Some { path, seq0, data });
        }
        Err(io::Error::other("spool segments keep disappearing"))
    }

    fn raw_frames(&self, path: &Path, seq0: u64, data: Bytes) -> RawReadBatch {
        let mut records = Vec::new();
        let mut pos = 0usize;
        let mut seq = seq0;
        while pos < data.len() {
            match check_frame(&data[pos..]) {
                Ok(size) => {
                    let payload = data.slice(pos + FRAME_HEADER_BYTES..pos + size);
                    match super::wire::record_sequence(&payload) {
                        Some(s) if s == seq => records.push(RawRecord {
                            sequence: seq,
                            payload,
                        }),
                        Some(_) => self.count_corrupt(path, seq, "sequence out of order"),
                        None => self.count_corrupt(path, seq, "record does not decode"),
                    }
                    pos += size;
                }
                Err(why) => {
                    // Frame boundaries come from the index, so the damage is
                    // confined to this frame: the next read resumes after it.
                    self.count_corrupt(path, seq, why);
                    break;
                }
            }
            seq += 1;
        }
        // Resume after everything in the range, damaged frames included.
        let next_seq = if pos < data.len() { seq + 1 } else { seq };
        RawReadBatch { records, next_seq }
    }

    fn count_corrupt(&self, path: &Path, seq: u64, why: &str) {
        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        error!(
            segment = %path.display(),
            sequence = seq,
            reason = why,
            "damaged request log in the spool: skipped"
        );
    }

    /// Records that the control plane stored everything up to `seq`:
    /// deletes the segments it completes, after persisting it (see the
    /// module documentation for when the file is written).
    pub fn ack(&self, seq: u64) -> io::Result<()> {
        let mut inner = self.lock();
        let seq = seq.min(inner.last_written());
        if seq <= inner.acked {
            return Ok(());
        }
        inner.acked = seq;
        let done = inner
            .segments
            .iter()
            .take_while(|s| s.last_seq() <= seq)
            .count();
        // The acknowledgement must be on disk before the records it covers
        // go, or a restart would reuse their sequences.
        let due = done > 0
            || inner
                .ack_persisted_at
                .is_none_or(|t| t.elapsed() >= ACK_PERSIST_INTERVAL);
        let persisted = if due {
            self.persist_ack_locked(&mut inner, done > 0)
        } else {
            Ok(())
        };
        self.acked.send_replace(seq);
        persisted?;
        for _ in 0..done {
            if inner.segments.len() == 1 {
                inner.active = None;
            }
            if let Some(seg) = inner.segments.pop_front() {
                inner.total_bytes = inner.total_bytes.saturating_sub(seg.len);
                debug!(segment = %seg.path.display(), "acknowledged segment deleted");
                remove_file_logged(&seg.path);
            }
        }
        Ok(())
    }

    /// Writes the acknowledgement file now if it lags (graceful shutdown
    /// calls this; dropping the spool does too).
    pub fn persist_ack(&self, durable: bool) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.ack_persisted == inner.acked {
            return Ok(());
        }
        self.persist_ack_locked(&mut inner, durable)
    }

    fn persist_ack_locked(&self, inner: &mut Inner, durable: bool) -> io::Result<()> {
        write_ack_file(&self.dir, inner.acked, durable)?;
        inner.ack_persisted = inner.acked;
        inner.ack_persisted_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Highest acknowledged sequence.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Sequence of the last record written; 0 before the first.
    pub fn last_written(&self) -> u64 {
        self.lock().last_written()
    }

    /// Changes whenever records are written; holds the last sequence.
    pub fn subscribe_written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Changes whenever an acknowledgement advances; holds its sequence.
    pub fn subscribe_acked(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    /// Records on disk not yet acknowledged.
    pub fn depth(&self) -> u64 {
        let inner = self.lock();
        inner.segments.iter().map(|s| s.unacked(inner.acked)).sum()
    }

    pub fn stats(&self) -> SpoolStats {
        let inner = self.lock();
        let c = &self.counters;
        SpoolStats {
            segments: inner.segments.len(),
            bytes: inner.total_bytes,
            depth: inner.segments.iter().map(|s| s.unacked(inner.acked)).sum(),
            last_written: inner.last_written(),
            acked: inner.acked,
            dropped_full: c.dropped_full.load(Ordering::Relaxed),
            dropped_segments: c.dropped_segments.load(Ordering::Relaxed),
            write_failed: c.write_failed.load(Ordering::Relaxed),
            oversized: c.oversized.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
        }
    }

    /// Opens a new segment starting at `seq` unless one is open.
    fn ensure_active(&self, inner: &mut Inner, seq: u64) -> io::Result<()> {
        if inner.active.is_some() {
            return Ok(());
        }
        let path = self.dir.join(format!("{seq:020}.{SEGMENT_EXT}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        if let Err(e) = file.write_all(MAGIC) {
            drop(file);
            remove_file_logged(&path);
            return Err(e);
        }
        // Make the new name itself durable; best effort.
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            debug!(error = %e, "cannot sync the spool folder");
        }
        debug!(segment = %path.display(), "spool segment started");
        inner.total_bytes += MAGIC.len() as u64;
        inner.segments.push_back(Segment {
            path,
            first_seq: seq,
            offsets: Vec::new(),
            len: MAGIC.len() as u64,
        });
        inner.active = Some(file);
        Ok(())
    }

    /// After a failed write: cut the partial frames off (best effort) and
    /// stop appending to this segment.
    fn abandon_active(&self, inner: &mut Inner, good_len: u64) {
        if let Some(file) = inner.active.take() {
            if let Err(e) = file.set_len(good_len) {
                warn!(error = %e, "cannot truncate a failed spool write; recovery will");
            }
        }
        let empty = inner.segments.back().is_some_and(|s| s.offsets.is_empty());
        if empty {
            if let Some(seg) = inner.segments.pop_back() {
                inner.total_bytes = inner.total_bytes.saturating_sub(seg.len);
                remove_file_logged(&seg.path);
            }
        }
    }

    fn count_failed(&self, n: u64) {
        let total = self.counters.write_failed.fetch_add(n, Ordering::Relaxed) + n;
        error!(
            records = n,
            total_lost = total,
            "cannot write request logs to the spool: records lost"
        );
    }

    /// Drops the oldest segments while the spool is over its size bound.
    /// The active segment is never dropped.
    fn enforce_bound(&self, inner: &mut Inner) {
        while inner.total_bytes > self.opts.max_bytes && inner.segments.len() > 1 {
            let Some(seg) = inner.segments.pop_front() else {
                break;
            };
            inner.total_bytes = inner.total_bytes.saturating_sub(seg.len);
            let lost = seg.unacked(inner.acked);
            let total = self
                .counters
                .dropped_full
                .fetch_add(lost, Ordering::Relaxed)
                + lost;
            self.counters
                .dropped_segments
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                segment = %seg.path.display(),
                records = lost,
                first_sequence = seg.first_seq,
                last_sequence = seg.last_seq(),
                total_dropped = total,
                max_bytes = self.opts.max_bytes,
                "request-log spool is full: oldest segment dropped unshipped"
            );
            remove_file_logged(&seg.path);
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = self.persist_ack(false) {
            warn!(error = %e, "cannot record the last log acknowledgement on disk");
        }
    }
}

/// Takes the exclusive lock on the folder's lock file without waiting. A
/// folder in use is an error of kind [`io::ErrorKind::ResourceBusy`] that
/// names the folder.
fn lock_dir(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "the request-log spool folder {} is in use by another data plane \
                 (it holds the lock on {}); give each data plane its own --spool-dir",
                dir.display(),
                path.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}

fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// Checks one frame at the start of `data` (lengths and checksum) and
/// returns its size.
fn check_frame(data: &[u8]) -> Result<usize, &'static str> {
    let (Some(len), Some(crc)) = (data.get(0..4), data.get(4..8)) else {
        return Err("incomplete frame header");
    };
    let len: [u8; 4] = len.try_into().map_err(|_| "bad frame header")?;
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| "bad frame header")?);
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_RECORD_BYTES {
        return Err("frame length out of range");
    }
    let Some(payload) = data.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + n) else {
        return Err("incomplete frame");
    };
    if frame_crc(len, payload) != crc {
        return Err("checksum mismatch");
    }
    Ok(FRAME_HEADER_BYTES + n)
}

/// Parses one frame at the start of `data`: the record and the frame's size.
fn parse_frame(data: &[u8]) -> Result<(pb::RequestLog, usize), &'static str> {
    let size = check_frame(data)?;
    let payload = &data[FRAME_HEADER_BYTES..size];
    let record = pb::RequestLog::decode(payload).map_err(|_| "record does not decode")?;
    Ok((record, size))
}

/// Scans a segment, truncating it after its last good frame. `None` for a
/// file that is not a segment (renamed aside) or had no complete header
/// (deleted).
fn recover_segment(path: &Path, counters: &Counters) -> io::Result<Option<Segment>> {
    let data = fs::read(path)?;
    if data.len() < MAGIC.len() {
        warn!(segment = %path.display(), "spool segment without a header (torn at creation): deleted");
        remove_file_logged(path);
        return Ok(None);
    }
    if &data[..MAGIC.len()] != MAGIC {
        let aside = path.with_extension("seg.unknown");
        error!(
            segment = %path.display(),
            renamed_to = %aside.display(),
            "spool file is not a segment of this format: set aside"
        );
        fs::rename(path, &aside)?;
        return Ok(None);
    }
    let mut pos = MAGIC.len();
    let mut offsets = Vec::new();
    let mut first_seq = None;
    let mut damage = None;
    while pos < data.len() {
        match parse_frame(&data[pos..]) {
            Ok((record, size)) => {
                let expected = first_seq.map(|f: u64| f + offsets.len() as u64);
                if expected.is_some_and(|e| e != record.sequence) {
                    damage = Some("sequence out of order");
                    break;
                }
                first_seq.get_or_insert(record.sequence);
                offsets.push(pos as u64);
                pos += size;
            }
            Err(why) => {
                damage = Some(why);
                break;
            }
        }
    }
    if let Some(why) = damage {
        counters.corrupt.fetch_add(1, Ordering::Relaxed);
        warn!(
            segment = %path.display(),
            reason = why,
            kept_records = offsets.len(),
            cut_bytes = data.len() - pos,
            "spool segment ends in a damaged frame (torn write?): truncated"
        );
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(pos as u64)?;
        file.sync_all()?;
    }
    Ok(Some(Segment {
        path: path.to_path_buf(),
        first_seq: first_seq.unwrap_or(0),
        offsets,
        len: pos as u64,
    }))
}

fn read_range(path: &Path, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut data = vec![0; usize::try_from(end - start).map_err(io::Error::other)?];
    file.read_exact(&mut data)?;
    Ok(data)
}

fn read_ack_file(dir: &Path) -> u64 {
    let path = dir.join(ACK_FILE);
    match fs::read(&path) {
        Ok(data) if data.len() == 12 => {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&data[..8]);
            let mut crc = [0u8; 4];
            crc.copy_from_slice(&data[8..]);
            if crc32fast::hash(&seq) == u32::from_le_bytes(crc) {
                return u64::from_le_bytes(seq);
            }
            warn!(file = %path.display(), "spool acknowledgement file is damaged: resending everything");
            0
        }
        Ok(_) => {
            warn!(file = %path.display(), "spool acknowledgement file is damaged: resending everything");
            0
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read the spool acknowledgement file: resending everything");
            0
        }
    }
}

fn write_ack_file(dir: &Path, seq: u64, durable: bool) -> io::Result<()> {
    let tmp = dir.join(ACK_TMP_FILE);
    let mut data = Vec::with_capacity(12);
    data.extend_from_slice(&seq.to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let mut file = File::create(&tmp)?;
    file.write_all(&data)?;
    if durable {
        file.sync_data()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(ACK_FILE))
}

fn remove_file_logged(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(file = %path.display(), error = %e, "cannot delete a spool file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> pb::RequestLog {
        pb::RequestLog {
            id: id.into(),
            model: "gpt".into(),
            request_body: "x".repeat(100),
            ..Default::default()
        }
    }

    fn opts(max: u64, seg: u64) -> SpoolOptions {
        SpoolOptions {
            max_bytes: max,
            segment_bytes: seg,
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    fn read_all(spool: &Spool, from: u64) -> Vec<pb::RequestLog> {
        let mut out = Vec::new();
        let mut next = from;
        loop {
            let b = spool.read_from(next, 7, 1 << 20).unwrap();
            if b.records.is_empty() && b.next_seq > spool.last_written() {
                return out;
            }
            next = b.next_seq;
            out.extend(b.records);
        }
    }

    #[test]
    fn sequences_are_assigned_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        let last = spool
            .append((0..20).map(|i| rec(&format!("r{i}"))).collect())
            .unwrap();
        assert_eq!(last, Some(20));
        assert!(segment_files(dir.path()).len() > 1, "segments roll");
        let got = read_all(&spool, 1);
        let seqs: Vec<u64> = got.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        assert_eq!(got[4].id, "r4");
        let tail = read_all(&spool, 15);
        assert_eq!(tail.first().map(|r| r.sequence), Some(15));
        assert_eq!(spool.depth(), 20);
    }

    #[test]
    fn read_respects_record_and_byte_limits() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..10).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        assert_eq!(spool.read_from(1, 3, 1 << 20).unwrap().records.len(), 3);
        let one = spool.read_from(2, 100, 1).unwrap();
        assert_eq!(one.records.len(), 1, "at least one record per read");
        assert_eq!(one.next_seq, 3);
        let none = spool.read_from(11, 100, 1 << 20).unwrap();
        assert!(none.records.is_empty());
        assert_eq!(none.next_seq, 11);
    }

    #[test]
    fn ack_deletes_whole_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        spool
            .append((0..30).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        let before = segment_files(dir.path()).len();
        spool.ack(12).unwrap();
        let after = segment_files(dir.path()).len();
        assert!(after < before, "{after} < {before}");
        assert_eq!(spool.depth(), 18);
        assert_eq!(read_all(&spool, 13).len(), 18);
        drop(spool);

        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        assert_eq!(spool.acked(), 12);
        assert_eq!(spool.depth(), 18);
        assert_eq!(spool.last_written(), 30);
        spool.ack(30).unwrap();
        assert!(segment_files(dir.path()).is_empty());
        drop(spool);

        // Sequences continue past everything acknowledged.
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        assert_eq!(spool.append(vec![rec("next")]).unwrap(), Some(31));
    }

    #[test]
    fn a_second_spool_on_the_same_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        let e = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        let msg = e.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("in use by another data plane"), "{msg}");
        // The lock goes with the spool.
        drop(spool);
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        assert_eq!(spool.append(vec![rec("after")]).unwrap(), Some(1));
    }

    #[test]
    fn torn_tail_is_cut_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..5).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        drop(spool);
        let seg = segment_files(dir.path()).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();

        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        assert_eq!(spool.stats().corrupt, 1);
        let got = read_all(&spool, 1);
        assert_eq!(got.len(), 4);
        assert_eq!(spool.append(vec![rec("again")]).unwrap(), Some(5));
        assert!(fs::metadata(&seg).unwrap().len() < len);
    }

    #[test]
    fn flipped_bit_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..3).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        drop(spool);
        let seg = segment_files(dir.path()).pop().unwrap();
        let mut data = fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 10] ^= 0x40;
        fs::write(&seg, &data).unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        assert_eq!(read_all(&spool, 1).len(), 2);
    }

    #[test]
    fn a_large_batch_is_written_in_groups_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 30, 1 << 20)).unwrap();
        // About 1.2 MiB: several write groups and two segments.
        let records: Vec<pb::RequestLog> = (0..300)
            .map(|i| pb::RequestLog {
                request_body: "x".repeat(4096),
                ..rec(&i.to_string())
            })
            .collect();
        assert_eq!(spool.append(records).unwrap(), Some(300));
        let back = read_all(&spool, 1);
        let seqs: Vec<u64> = back.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
        assert_eq!(back[299].id, "299");
        assert!(segment_files(dir.path()).len() >= 2);
        drop(spool);
        let spool = Spool::open(dir.path(), opts(1 << 30, 1 << 20)).unwrap();
        assert_eq!(spool.depth(), 300);
        assert_eq!(spool.stats().corrupt, 0);
    }

    #[test]
    fn raw_reads_return_the_encoded_records() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..5).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        let decoded = spool.read_from(2, 3, 1 << 20).unwrap();
        let raw = spool.read_raw_from(2, 3, 1 << 20).unwrap();
        assert_eq!(raw.next_seq, decoded.next_seq);
        let from_raw: Vec<pb::RequestLog> = raw
            .records
            .iter()
            .map(|r| pb::RequestLog::decode(&r.payload[..]).unwrap())
            .collect();
        assert_eq!(from_raw, decoded.records);
        // The bytes are the records as appended, numbered from 1.
        let appended: Vec<pb::RequestLog> = (1..4u64)
            .map(|i| pb::RequestLog {
                sequence: i + 1,
                ..rec(&i.to_string())
            })
            .collect();
        assert_eq!(from_raw, appended);
        let seqs: Vec<u64> = raw.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, [2, 3, 4]);
        let past = spool.read_raw_from(6, 3, 1 << 20).unwrap();
        assert!(past.records.is_empty());
        assert_eq!(past.next_seq, 6);
    }

    #[test]
    fn reads_of_the_last_write_from_memory_equal_reads_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 12)).unwrap();
        spool
            .append((0..4).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        // Spans segments (4 KiB each).
        spool
            .append((4..60).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        let limits = [
            (1, 1 << 20),
            (7, 1 << 20),
            (100, 1 << 20),
            (100, 600),
            (3, 1),
        ];
        let reads = |spool: &Spool| -> Vec<(Vec<(u64, Bytes)>, u64)> {
            let mut out = Vec::new();
            for from in [1, 4, 5, 6, 30, 59, 60, 61] {
                for (n, bytes) in limits {
                    let b = spool.read_raw_from(from, n, bytes).unwrap();
                    let recs = b.records.into_iter().map(|r| (r.sequence, r.payload));
                    out.push((recs.collect(), b.next_seq));
                }
            }
            out
        };
        let from_memory = reads(&spool);
        assert!(spool.lock().tail.is_some());
        drop(spool);
        let reopened = Spool::open(dir.path(), opts(1 << 20, 1 << 12)).unwrap();
        assert!(reopened.lock().tail.is_none());
        let from_file = reads(&reopened);
        let seqs = |r: &[(Vec<(u64, Bytes)>, u64)]| -> Vec<(Vec<u64>, u64)> {
            r.iter()
                .map(|(v, n)| (v.iter().map(|x| x.0).collect(), *n))
                .collect()
        };
        assert_eq!(seqs(&from_memory), seqs(&from_file));
        assert!(from_memory == from_file, "same sequences, different bytes");
        // Acknowledged segments go; the tail never serves what is gone.
        reopened.ack(58).unwrap();
        reopened.append(vec![rec("60")]).unwrap();
        let mut got = Vec::new();
        let mut next = 59;
        loop {
            let b = reopened.read_raw_from(next, 10, 1 << 20).unwrap();
            if b.records.is_empty() {
                break;
            }
            got.extend(b.records.iter().map(|r| r.sequence));
            next = b.next_seq;
        }
        assert_eq!(got, [59, 60, 61]);
        reopened.ack(61).unwrap();
        assert!(reopened.lock().tail.is_some());
        let b = reopened.read_raw_from(61, 10, 1 << 20).unwrap();
        assert!(b.records.is_empty());
        assert_eq!(b.next_seq, 62);
    }

    #[test]
    fn raw_reads_skip_a_frame_damaged_after_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..3).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        let seg = segment_files(dir.path()).pop().unwrap();
        let mut data = fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 10] ^= 0x40;
        fs::write(&seg, &data).unwrap();
        // A later write, so the damaged frames are read from the file and
        // not from the frames of the last write kept in memory.
        spool.append(vec![rec("3")]).unwrap();
        let raw = spool.read_raw_from(1, 10, 1 << 20).unwrap();
        let seqs: Vec<u64> = raw.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(raw.next_seq, 4);
        assert_eq!(spool.stats().corrupt, 1);
    }

    #[test]
    fn size_bound_drops_the_oldest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(4096, 1024)).unwrap();
        spool
            .append((0..60).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        let s = spool.stats();
        assert!(s.bytes <= 4096, "{s:?}");
        assert!(s.dropped_segments > 0 && s.dropped_full > 0, "{s:?}");
        assert_eq!(s.depth + s.dropped_full, 60, "{s:?}");
        let got = read_all(&spool, 1);
        assert_eq!(got.last().map(|r| r.sequence), Some(60));
        assert_eq!(got.len() as u64, s.depth);
    }

    #[test]
    fn oversized_records_are_refused_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 30, 1 << 20)).unwrap();
        let mut big = rec("big");
        big.response_body = "y".repeat(MAX_RECORD_BYTES + 1);
        let last = spool.append(vec![rec("a"), big, rec("b")]).unwrap();
        assert_eq!(last, Some(2));
        assert_eq!(spool.stats().oversized, 1);
        let ids: Vec<_> = read_all(&spool, 1).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn foreign_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("00000000000000000001.seg"),
            b"not a spool file",
        )
        .unwrap();
        fs::write(dir.path().join("00000000000000000009.seg"), b"LLM").unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        assert_eq!(spool.last_written(), 0);
        assert!(dir.path().join("00000000000000000001.seg.unknown").exists());
        assert!(segment_files(dir.path()).is_empty());
        assert_eq!(spool.append(vec![rec("a")]).unwrap(), Some(1));
    }

    #[test]
    fn damaged_ack_file_means_resend_everything() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..4).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        spool.ack(2).unwrap();
        drop(spool);
        fs::write(dir.path().join(ACK_FILE), b"garbage").unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        assert_eq!(spool.acked(), 0);
        assert_eq!(spool.depth(), 4);
    }
}
