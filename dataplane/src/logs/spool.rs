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
//!   are consecutive within a segment and increase across segments; the
//!   file name is the sequence of its first frame.
//! - `acked`: the highest sequence the control plane acknowledged. The file
//!   is [`ACK_FILE_BYTES`] long, written in full when the spool opens and
//!   from then on only overwritten in place, so recording an
//!   acknowledgement never needs new disk space (a full disk cannot stop
//!   the spool from being trimmed; copy-on-write filesystems such as btrfs
//!   or ZFS are the exception). It holds two slots of [`ACK_SLOT_BYTES`],
//!   each
//!
//!   ```text
//!   magic "LLMGWAK1" | generation: u64 LE | acked: u64 LE | crc: u32 LE | zeros
//!   ```
//!
//!   (`crc` is the CRC32 of the 24 bytes before it). Writes alternate
//!   between the slots (slot = generation mod 2), so a torn write leaves
//!   the other slot intact; reading takes the valid slot of the highest
//!   generation. Before this format the file was 12 bytes,
//!   `seq: u64 LE | crc: u32 LE`, replaced by rename; such a file is read
//!   and upgraded in place when the spool opens (slot 1 first, which lies
//!   past the old bytes, then slot 0), so that one of the two formats reads
//!   back at every moment. The file is written always, and synced, before
//!   an acknowledgement deletes a segment; otherwise at most once per
//!   [`ACK_PERSIST_INTERVAL`], and when the spool is dropped. So it may lag
//!   the acknowledgements by up to that interval, never below a deleted
//!   segment: after a crash those records are resent. A missing or damaged
//!   file reads as 0: everything is resent. The control plane's idempotent
//!   ingest absorbs both.
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
//! its unacknowledged records are lost ([`LossReason::SpoolFull`]). Before
//! each write the spool also checks the disk's free space (`statvfs`): a
//! write that would leave less than `min_free_bytes` free first drops the
//! oldest segments the same way ([`LossReason::DiskReserve`]), and if only
//! the segment being written is left and there is still no room, the new
//! records are refused (same reason). So the spool never fills the disk
//! itself, and when others do, writes that fail are counted
//! ([`LossReason::WriteError`]) and the next write tries again: as soon as
//! space returns (acknowledged segments deleted, other files removed),
//! writing resumes without a restart. A segment is otherwise deleted only
//! once every record in it is acknowledged. Every record lost is counted
//! once in the shared [`Losses`].
//!
//! # Property tests
//!
//! The frame reader (recovery and reads) is checked with `proptest` on
//! truncated and corrupted segment files: it never panics and never returns
//! a record that differs from one written. CI runs a few dozen cases per
//! property; for a longer run:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test -p llmgw-dataplane --lib logs::spool::proptests
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use bytes::Bytes;
use llmgw_proto::v1 as pb;
use prost::Message;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::loss::{LossReason, Losses};
use super::recent::{self, Recent};
use super::wake::ShipWake;
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
/// First bytes of each slot of the acknowledgement file.
pub const ACK_MAGIC: &[u8; 8] = b"LLMGWAK1";
/// One slot of the acknowledgement file: a disk sector, so that a torn
/// write of one slot cannot damage the other.
pub const ACK_SLOT_BYTES: usize = 512;
/// Size of the acknowledgement file: two slots.
pub const ACK_FILE_BYTES: u64 = 2 * ACK_SLOT_BYTES as u64;
/// Bytes of a slot in use: magic, generation, acked, crc.
const ACK_SLOT_USED: usize = 28;
/// About how many bytes of frames [`Spool::append`] encodes before writing
/// them.
const WRITE_CHUNK_BYTES: usize = 256 << 10;
/// Name of the file the spool's exclusive lock is taken on.
pub const LOCK_FILE: &str = "lock";
/// Longest time an acknowledgement that deletes no segment waits before
/// the acknowledgement file is rewritten.
pub const ACK_PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Left behind by versions that replaced the acknowledgement file by
/// rename; deleted at open.
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
    /// Free space the spool leaves on its filesystem; 0 turns the check
    /// off. See the module documentation.
    pub min_free_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: super::DEFAULT_SPOOL_MAX_BYTES,
            segment_bytes: super::DEFAULT_SEGMENT_BYTES,
            min_free_bytes: super::DEFAULT_SPOOL_MIN_FREE_BYTES,
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
    /// Records lost to the free-space reserve (`min_free_bytes`).
    pub dropped_reserve: u64,
    /// Segments dropped by the size bound or the free-space reserve.
    pub dropped_segments: u64,
    /// Records lost to failed writes (disk full, I/O errors).
    pub write_failed: u64,
    /// Records refused for being larger than [`MAX_RECORD_BYTES`].
    pub oversized: u64,
    /// Damaged frames found: cut off on recovery or skipped on read.
    pub corrupt: u64,
    /// Records lost to damaged frames.
    pub lost_corrupt: u64,
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
    /// Frames from sequence `seq0` on, `expected` bytes of them by the
    /// index; `data` is shorter if the file was cut since.
    Some {
        path: PathBuf,
        seq0: u64,
        data: Vec<u8>,
        expected: usize,
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
    /// Closed segments whose data has not been synced yet, by path: a
    /// segment deleted before its sync drops its descriptor too, or its
    /// space would stay in use.
    unsynced: Vec<(PathBuf, File)>,
    next_seq: u64,
    acked: u64,
    /// The acknowledgement file, preallocated; `None` only if it could not
    /// be created (no space at all), in which case every persist tries
    /// again.
    ack_file: Option<AckFile>,
    /// What the acknowledgement file holds, and when it was written.
    ack_persisted: u64,
    ack_persisted_at: Option<std::time::Instant>,
    total_bytes: u64,
    /// Sequences of damaged frames already counted as lost, so a frame read
    /// again (after a reconnect) is not counted twice. Pruned as
    /// acknowledgements pass them.
    corrupt_seen: BTreeSet<u64>,
}

impl Inner {
    fn last_written(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }
}

/// Counters that are not losses (those go to [`Losses`]).
#[derive(Debug, Default)]
struct Counters {
    dropped_segments: AtomicU64,
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
    /// The latest writes' frames, for the shipper ([`super::recent`]).
    /// Taken after `inner` when both are held; readers take it alone.
    recent: Mutex<Recent>,
    counters: Counters,
    losses: Arc<Losses>,
    written: watch::Sender<u64>,
    /// Which writes wake the shipper ([`super::wake`]).
    ship_wake: ShipWake,
    acked: watch::Sender<u64>,
    /// Completed syncs, counted.
    synced: watch::Sender<u64>,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir` and recovers what a
    /// previous run left there; see the module documentation. Losses are
    /// counted in a [`Losses`] of its own.
    pub fn open(dir: impl Into<PathBuf>, opts: SpoolOptions) -> io::Result<Spool> {
        Spool::open_with_losses(dir, opts, Arc::default())
    }

    /// [`Spool::open`], counting losses in `losses`.
    pub fn open_with_losses(
        dir: impl Into<PathBuf>,
        opts: SpoolOptions,
        losses: Arc<Losses>,
    ) -> io::Result<Spool> {
        let dir = dir.into();
        let opts = SpoolOptions {
            max_bytes: opts.max_bytes.max(4 * MIN_SEGMENT_BYTES),
            segment_bytes: opts.segment_bytes.clamp(
                MIN_SEGMENT_BYTES,
                (opts.max_bytes / 4).max(MIN_SEGMENT_BYTES),
            ),
            min_free_bytes: opts.min_free_bytes,
        };
        fs::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;
        let counters = Counters::default();
        let ack_state = read_ack_state(&dir);
        let acked = ack_state.acked();
        // Its space is welcome back.
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
        // Sequences from which a damaged segment lost its frames, for the
        // losses count once the next segment's first sequence is known.
        let mut cut_from: Option<u64> = None;
        for (name_seq, path) in names {
            if let Some(from) = cut_from.take() {
                losses.add(
                    LossReason::Corrupt,
                    name_seq.saturating_sub(from.max(acked.saturating_add(1))),
                );
            }
            let Some((seg, damaged)) = recover_segment(&path, name_seq, &counters)? else {
                continue;
            };
            if damaged {
                cut_from = Some(seg.first_seq + seg.records());
            }
            max_seq = max_seq.max(seg.last_seq());
            if seg.offsets.is_empty() || seg.last_seq() <= acked {
                remove_file_logged(&seg.path);
                continue;
            }
            total_bytes += seg.len;
            segments.push_back(seg);
        }
        if let Some(from) = cut_from {
            // The last segment's cut frames are unknown in number: a write
            // torn by a crash is one.
            if from > acked {
                losses.add(LossReason::Corrupt, 1);
            }
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
                ack_file: None,
                ack_persisted: acked,
                ack_persisted_at: None,
                total_bytes,
                corrupt_seen: BTreeSet::new(),
            }),
            recent: Mutex::new(Recent::new(recent::RECENT_MAX_BYTES)),
            counters,
            losses,
            written: watch::Sender::new(next_seq - 1),
            ship_wake: ShipWake::default(),
            acked: watch::Sender::new(acked),
            synced: watch::Sender::new(0),
        };
        {
            let mut inner = spool.lock();
            match spool.prepare_ack_file(&mut inner, ack_state) {
                Ok(()) => {}
                // The spool still works; every persist tries again.
                Err(e) => error!(
                    dir = %spool.dir.display(),
                    error = %e,
                    "cannot preallocate the spool acknowledgement file"
                ),
            }
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

    /// The loss counters this spool adds to.
    pub fn losses(&self) -> &Arc<Losses> {
        &self.losses
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps only the newest `n` kept writes in memory, each one write's
    /// part in one segment (tests: so that frames damaged in the file are
    /// read from it).
    #[cfg(test)]
    pub(crate) fn keep_newest_writes(&self, n: usize) {
        self.recent().keep_newest(n);
    }

    /// The lock if it is free now: for the runtime's threads, which must
    /// not wait while the I/O thread holds it through a `write`.
    fn try_lock(&self) -> Option<MutexGuard<'_, Inner>> {
        match self.inner.try_lock() {
            Ok(inner) => Some(inner),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Assigns each record the next sequence, writes them in one go and
    /// returns the last sequence written (`None` if nothing was). The data
    /// is in the kernel's page cache on return; [`Spool::sync`] makes it
    /// durable. On an error, the records of the failed write are lost and
    /// counted; their sequences are not reused. Records refused by the
    /// free-space reserve are counted and use no sequence.
    pub fn append<R: Into<LogRecord>>(&self, records: Vec<R>) -> io::Result<Option<u64>> {
        // In place when the records already are `LogRecord`s.
        let mut records: Vec<LogRecord> = records.into_iter().map(Into::into).collect();
        let mut inner = self.lock();

        // An oversized record is dropped without using up a sequence. The
        // lengths measured here (each record once, with its sequence) size
        // the buffer and the reserve check.
        let before = records.len();
        let mut lens = Vec::with_capacity(records.len());
        let mut seq = inner.next_seq;
        records.retain_mut(|record| {
            record.fields.sequence = seq;
            let len = record.encoded_len();
            if len > MAX_RECORD_BYTES {
                debug!(
                    id = record.fields.id,
                    bytes = len,
                    max = MAX_RECORD_BYTES,
                    "request log too large for the spool"
                );
                return false;
            }
            lens.push(len);
            seq += 1;
            true
        });
        self.losses
            .add(LossReason::Oversized, (before - records.len()) as u64);
        if records.is_empty() {
            return Ok(None);
        }
        let total: usize = lens.iter().map(|n| n + FRAME_HEADER_BYTES).sum();
        // Each segment this write may start costs its header too.
        let headers = (total as u64 / self.opts.segment_bytes + 1) * MAGIC.len() as u64;
        if !self.make_room(&mut inner, total as u64 + headers) {
            self.losses
                .add(LossReason::DiskReserve, records.len() as u64);
            return Ok(None);
        }

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
            // Kept as written for the shipper; the next group gets a
            // buffer of its own.
            let data = Bytes::from(std::mem::take(&mut buf));
            last = match self.write_frames(&mut inner, &data, &frames, last, later) {
                Ok(l) => l.or(last),
                Err(e) => {
                    self.recent().clear();
                    // Whatever the shipper holds is no longer in memory:
                    // it reads it from the file now, not at its linger's end.
                    self.ship_wake.wake();
                    return Err(e);
                }
            };
        }
        self.enforce_bound(&mut inner);
        drop(inner);
        if let Some(l) = last {
            self.publish_written(l);
        }
        Ok(last)
    }

    /// Writes encoded frames to the active segment(s), rolling segments
    /// as they fill, and keeps what was written in [`Spool::recent`];
    /// returns the last sequence written. On an error the frames not
    /// written, and `later` records not yet encoded, are counted as lost,
    /// and readers learn of what was written (`last` included).
    fn write_frames(
        &self,
        inner: &mut Inner,
        buf: &Bytes,
        frames: &[(u64, usize, usize)],
        mut last: Option<u64>,
        later: u64,
    ) -> io::Result<Option<u64>> {
        let mut i = 0;
        while i < frames.len() {
            let seq = frames[i].0;
            if let Err(e) = self.ensure_active(inner, seq) {
                self.losses
                    .add(LossReason::WriteError, (frames.len() - i) as u64 + later);
                if let Some(l) = last {
                    self.publish_written(l);
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
                self.losses
                    .add(LossReason::WriteError, (frames.len() - i) as u64 + later);
                if let Some(l) = last {
                    self.publish_written(l);
                }
                return Err(e);
            }
            if let Some(seg) = inner.segments.back_mut() {
                for &(_, start, _) in &frames[i..j] {
                    seg.offsets.push(seg_len + (start - frames[i].1) as u64);
                }
                self.recent().push(recent::KeptWrite {
                    data: buf.clone(),
                    frames: frames[i..j].to_vec(),
                    segment: seg.first_seq,
                });
                seg.len += chunk.len() as u64;
                if seg.len >= self.opts.segment_bytes {
                    // Roll: the next frame starts a new segment.
                    let path = seg.path.clone();
                    if let Some(file) = inner.active.take() {
                        inner.unsynced.push((path, file));
                    }
                }
            }
            inner.total_bytes += chunk.len() as u64;
            last = Some(frames[j - 1].0);
            i = j;
        }
        Ok(last)
    }

    /// Makes sure that writing `need` more bytes leaves the free-space
    /// reserve free, dropping the oldest segments (never the newest, so
    /// that sequences survive a restart) while it would not; false if even
    /// that is not enough.
    fn make_room(&self, inner: &mut Inner, need: u64) -> bool {
        let reserve = self.opts.min_free_bytes;
        if reserve == 0 {
            return true;
        }
        let mut free = match free_bytes(&self.dir) {
            Ok(free) => free,
            Err(e) => {
                // Not knowing is no reason to lose records: the write
                // itself will tell.
                debug!(error = %e, "cannot read the spool filesystem's free space");
                return true;
            }
        };
        let want = need.saturating_add(reserve);
        while free < want && inner.segments.len() > 1 {
            let Some(seg) = inner.segments.pop_front() else {
                break;
            };
            free = free.saturating_add(seg.len);
            self.drop_segment(inner, seg, LossReason::DiskReserve);
        }
        free >= want
    }

    /// Makes everything written so far durable (`fdatasync`). The lock is
    /// not held while the disk works.
    pub fn sync(&self) -> io::Result<()> {
        let (closed, active) = {
            let mut inner = self.lock();
            let active = inner.active.as_ref().map(File::try_clone).transpose()?;
            (std::mem::take(&mut inner.unsynced), active)
        };
        for file in closed.iter().map(|(_, f)| f).chain(active.iter()) {
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
    /// [`RawReadBatch::next_seq`] for more. Damaged frames are skipped and
    /// counted ([`LossReason::Corrupt`], once per frame).
    pub fn read_raw_from(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<RawReadBatch> {
        if let Some(batch) = self.recent().read(from, max_records, max_bytes) {
            return Ok(batch);
        }
        Ok(match self.read_frames(from, max_records, max_bytes)? {
            Frames::None { next_seq } => RawReadBatch {
                records: Vec::new(),
                next_seq,
            },
            Frames::Some {
                path,
                seq0,
                data,
                expected,
            } => self.raw_frames(&path, seq0, Bytes::from(data), expected),
        })
    }

    /// [`Spool::read_raw_from`] if it needs no I/O: served from the
    /// frames of the latest writes kept in memory ([`super::recent`]),
    /// under their own lock, never the one a `write` holds. `None`: call
    /// `read_raw_from` (on a blocking thread). For the shipper, which
    /// reads what was just written, so that a read costs no trip to the
    /// blocking pool.
    pub fn read_raw_in_memory(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<RawReadBatch> {
        self.recent().read(from, max_records, max_bytes)
    }

    /// Bytes of frames from sequence `from` on that the spool still holds
    /// in memory; `None` if `from` is no longer (or not yet) there.
    pub fn bytes_in_memory_from(&self, from: u64) -> Option<usize> {
        self.recent().bytes_from(from)
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
                let Some(&start) = seg.offsets.get(first) else {
                    return Err(io::Error::other("spool segment index out of step"));
                };
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
            let expected = usize::try_from(end - start).map_err(io::Error::other)?;
            return Ok(Frames::Some {
                path,
                seq0,
                data,
                expected,
            });
        }
        Err(io::Error::other("spool segments keep disappearing"))
    }

    fn raw_frames(&self, path: &Path, seq0: u64, data: Bytes, expected: usize) -> RawReadBatch {
        let mut records = Vec::new();
        let mut pos = 0usize;
        let mut seq = seq0;
        while pos < expected {
            match check_frame(data.get(pos..).unwrap_or_default()) {
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
        let next_seq = if pos < expected { seq + 1 } else { seq };
        RawReadBatch { records, next_seq }
    }

    /// Counts a damaged frame, once however often it is read.
    fn count_corrupt(&self, path: &Path, seq: u64, why: &str) {
        if !self.lock().corrupt_seen.insert(seq) {
            return;
        }
        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        self.losses.add(LossReason::Corrupt, 1);
        debug!(
            segment = %path.display(),
            sequence = seq,
            reason = why,
            "damaged request log in the spool: skipped"
        );
    }

    /// Records that the control plane stored everything up to `seq`:
    /// deletes the segments it completes, after persisting it (see the
    /// module documentation for when the file is written). Persisting
    /// overwrites the preallocated file in place, so it needs no disk
    /// space; if it fails all the same, a later call tries again, with the
    /// segments kept until then.
    pub fn ack(&self, seq: u64) -> io::Result<()> {
        let mut inner = self.lock();
        let seq = seq.min(inner.last_written());
        let advanced = seq > inner.acked;
        if advanced {
            self.advance_ack(&mut inner, seq);
        }
        let acked = inner.acked;
        let done = Self::segments_done(&inner, acked);
        if !advanced && done == 0 {
            return Ok(());
        }
        let due = Self::ack_file_due(&inner, acked, done);
        let persisted = if due {
            self.persist_ack_locked(&mut inner, done > 0)
        } else {
            Ok(())
        };
        if advanced {
            self.acked.send_replace(acked);
        }
        persisted?;
        for _ in 0..done {
            if inner.segments.len() == 1 {
                inner.active = None;
            }
            if let Some(seg) = inner.segments.pop_front() {
                debug!(segment = %seg.path.display(), "acknowledged segment deleted");
                self.remove_segment(&mut inner, &seg);
            }
        }
        Ok(())
    }

    /// [`Spool::ack`] if it needs no I/O and waits for no lock: it deletes
    /// no segment and the acknowledgement file is not due to be written.
    /// False: nothing was done, call `ack` (on a blocking thread).
    pub fn ack_in_memory(&self, seq: u64) -> bool {
        let Some(mut inner) = self.try_lock() else {
            return false;
        };
        let seq = seq.min(inner.last_written()).max(inner.acked);
        if Self::segments_done(&inner, seq) > 0 || Self::ack_file_due(&inner, seq, 0) {
            return false;
        }
        if seq > inner.acked {
            self.advance_ack(&mut inner, seq);
            self.acked.send_replace(seq);
        }
        true
    }

    fn advance_ack(&self, inner: &mut Inner, seq: u64) {
        inner.acked = seq;
        self.recent().forget_through(seq);
        inner.corrupt_seen = inner.corrupt_seen.split_off(&seq.saturating_add(1));
    }

    /// How many of the oldest segments `acked` covers wholly.
    fn segments_done(inner: &Inner, acked: u64) -> usize {
        inner
            .segments
            .iter()
            .take_while(|s| s.last_seq() <= acked)
            .count()
    }

    /// Whether acknowledging `acked` must write the acknowledgement file:
    /// always before `done` segments are deleted (synced, or a restart
    /// would reuse their sequences), otherwise at most once per
    /// [`ACK_PERSIST_INTERVAL`].
    fn ack_file_due(inner: &Inner, acked: u64, done: usize) -> bool {
        done > 0
            || (inner.ack_persisted != acked
                && inner
                    .ack_persisted_at
                    .is_none_or(|t| t.elapsed() >= ACK_PERSIST_INTERVAL))
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
        if inner.ack_file.is_none() {
            self.prepare_ack_file(inner, AckState::Missing)?;
        }
        let acked = inner.acked;
        match inner.ack_file.as_mut() {
            Some(file) => file.write(acked, durable)?,
            None => return Err(io::Error::other("no acknowledgement file")),
        }
        inner.ack_persisted = acked;
        inner.ack_persisted_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Opens the acknowledgement file and makes it the preallocated
    /// two-slot format holding `inner.acked` (upgrading a file of the old
    /// format in place). If the disk has no room even for that, the oldest
    /// segments are dropped until it has: not the newest, so that sequences
    /// survive a restart, unless it is wholly acknowledged (it then holds
    /// nothing to lose, and keeping it would keep the disk full).
    fn prepare_ack_file(&self, inner: &mut Inner, state: AckState) -> io::Result<()> {
        loop {
            match AckFile::prepare(&self.dir, state, inner.acked) {
                Ok(file) => {
                    inner.ack_file = Some(file);
                    inner.ack_persisted = inner.acked;
                    return Ok(());
                }
                Err(e) => {
                    let acked = inner.acked;
                    let droppable = inner.segments.len() > 1
                        || inner
                            .segments
                            .front()
                            .is_some_and(|s| s.last_seq() <= acked);
                    if !droppable {
                        return Err(e);
                    }
                    if inner.segments.len() == 1 {
                        inner.active = None;
                    }
                    let Some(seg) = inner.segments.pop_front() else {
                        return Err(e);
                    };
                    warn!(
                        error = %e,
                        segment = %seg.path.display(),
                        "no room for the spool acknowledgement file: oldest segment dropped"
                    );
                    self.drop_segment(inner, seg, LossReason::DiskReserve);
                }
            }
        }
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

    /// The writes' wake-ups of the shipper.
    pub fn ship_wake(&self) -> &ShipWake {
        &self.ship_wake
    }

    /// Tells readers that records up to `last` are written. In this
    /// order (the value first, then the question whether to wake the
    /// shipper), which is what keeps a wake from being lost
    /// ([`super::wake`]).
    fn publish_written(&self, last: u64) {
        self.written.send_replace(last);
        self.ship_wake
            .written(last, |from| self.recent().bytes_from(from));
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
        let l = &self.losses;
        SpoolStats {
            segments: inner.segments.len(),
            bytes: inner.total_bytes,
            depth: inner.segments.iter().map(|s| s.unacked(inner.acked)).sum(),
            last_written: inner.last_written(),
            acked: inner.acked,
            dropped_full: l.count(LossReason::SpoolFull),
            dropped_reserve: l.count(LossReason::DiskReserve),
            dropped_segments: c.dropped_segments.load(Ordering::Relaxed),
            write_failed: l.count(LossReason::WriteError),
            oversized: l.count(LossReason::Oversized),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            lost_corrupt: l.count(LossReason::Corrupt),
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
                self.remove_segment(inner, &seg);
            }
        }
    }

    /// Deletes a segment taken out of `inner.segments`, with its space.
    fn remove_segment(&self, inner: &mut Inner, seg: &Segment) {
        inner.total_bytes = inner.total_bytes.saturating_sub(seg.len);
        // An open descriptor would keep the space in use.
        inner.unsynced.retain(|(p, _)| *p != seg.path);
        remove_file_logged(&seg.path);
    }

    /// Deletes a segment taken out of `inner.segments` by a bound, counting
    /// its unacknowledged records as lost for `reason`.
    fn drop_segment(&self, inner: &mut Inner, seg: Segment, reason: LossReason) {
        // Out of memory first: from the moment they count as lost, no read
        // serves them.
        self.recent().forget_through(seg.last_seq());
        let lost = seg.unacked(inner.acked);
        self.losses.add(reason, lost);
        self.counters
            .dropped_segments
            .fetch_add(1, Ordering::Relaxed);
        debug!(
            segment = %seg.path.display(),
            records = lost,
            first_sequence = seg.first_seq,
            last_sequence = seg.last_seq(),
            reason = reason.label(),
            "spool segment dropped unshipped"
        );
        self.remove_segment(inner, &seg);
    }

    /// Drops the oldest segments while the spool is over its size bound.
    /// The active segment is never dropped.
    fn enforce_bound(&self, inner: &mut Inner) {
        while inner.total_bytes > self.opts.max_bytes && inner.segments.len() > 1 {
            let Some(seg) = inner.segments.pop_front() else {
                break;
            };
            self.drop_segment(inner, seg, LossReason::SpoolFull);
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

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
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

/// Scans a segment named after sequence `first_seq`, truncating it after
/// its last good frame; the flag tells whether it was damaged. `None` for
/// a file that is not a segment (renamed aside) or had no complete header
/// (deleted).
fn recover_segment(
    path: &Path,
    first_seq: u64,
    counters: &Counters,
) -> io::Result<Option<(Segment, bool)>> {
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
    let mut damage = None;
    while pos < data.len() {
        match parse_frame(&data[pos..]) {
            Ok((record, size)) => {
                if record.sequence != first_seq + offsets.len() as u64 {
                    damage = Some("sequence out of order");
                    break;
                }
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
    Ok(Some((
        Segment {
            path: path.to_path_buf(),
            first_seq,
            offsets,
            len: pos as u64,
        },
        damage.is_some(),
    )))
}

/// Bytes `start..end` of a file; fewer if the file is shorter (cut since
/// it was indexed), which the frame checks then report.
fn read_range(path: &Path, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let len = usize::try_from(end - start).map_err(io::Error::other)?;
    let mut data = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut data)?;
    Ok(data)
}

/// What the acknowledgement file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckState {
    /// No file, or an empty one.
    Missing,
    /// The newest valid slot.
    Slots { generation: u64, acked: u64 },
    /// The 12-byte format of earlier versions.
    Legacy { acked: u64 },
    /// Nothing readable: everything is resent.
    Damaged,
}

impl AckState {
    fn acked(self) -> u64 {
        match self {
            AckState::Slots { acked, .. } | AckState::Legacy { acked } => acked,
            AckState::Missing | AckState::Damaged => 0,
        }
    }
}

fn encode_ack_slot(generation: u64, acked: u64) -> [u8; ACK_SLOT_BYTES] {
    let mut slot = [0u8; ACK_SLOT_BYTES];
    slot[..8].copy_from_slice(ACK_MAGIC);
    slot[8..16].copy_from_slice(&generation.to_le_bytes());
    slot[16..24].copy_from_slice(&acked.to_le_bytes());
    let crc = crc32fast::hash(&slot[..24]);
    slot[24..ACK_SLOT_USED].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// (generation, acked) of a valid slot.
fn decode_ack_slot(slot: &[u8]) -> Option<(u64, u64)> {
    let slot = slot.get(..ACK_SLOT_USED)?;
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(slot.get(i..i + 8)?.try_into().ok()?))
    };
    let crc = u32::from_le_bytes(slot.get(24..28)?.try_into().ok()?);
    if &slot[..8] != ACK_MAGIC || crc32fast::hash(&slot[..24]) != crc {
        return None;
    }
    Some((u64_at(8)?, u64_at(16)?))
}

fn parse_ack_file(data: &[u8]) -> AckState {
    if data.is_empty() {
        return AckState::Missing;
    }
    let newest = (0..2)
        .filter_map(|i| decode_ack_slot(data.get(i * ACK_SLOT_BYTES..)?))
        .max_by_key(|&(generation, _)| generation);
    if let Some((generation, acked)) = newest {
        return AckState::Slots { generation, acked };
    }
    // The old format, or an upgrade torn before slot 0 was written.
    if let Some(old) = data.get(..12) {
        let (seq, crc) = old.split_at(8);
        if crc32fast::hash(seq).to_le_bytes() == crc {
            let mut b = [0u8; 8];
            b.copy_from_slice(seq);
            return AckState::Legacy {
                acked: u64::from_le_bytes(b),
            };
        }
    }
    AckState::Damaged
}

fn read_ack_state(dir: &Path) -> AckState {
    let path = dir.join(ACK_FILE);
    let mut data = Vec::new();
    let read = File::open(&path).and_then(|f| f.take(ACK_FILE_BYTES).read_to_end(&mut data));
    match read {
        Ok(_) => {
            let state = parse_ack_file(&data);
            if state == AckState::Damaged {
                warn!(file = %path.display(), "spool acknowledgement file is damaged: resending everything");
            }
            state
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => AckState::Missing,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read the spool acknowledgement file: resending everything");
            AckState::Damaged
        }
    }
}

/// The acknowledged sequence recorded in the spool folder `dir`, as a
/// restart would read it; `None` if nothing readable is recorded. For
/// tests and tools: it reads the file without taking the spool's lock.
pub fn persisted_ack(dir: &Path) -> Option<u64> {
    match read_ack_state(dir) {
        AckState::Slots { acked, .. } | AckState::Legacy { acked } => Some(acked),
        AckState::Missing | AckState::Damaged => None,
    }
}

/// The acknowledgement file, preallocated, overwritten in place.
#[derive(Debug)]
struct AckFile {
    file: File,
    /// Generation of the newest slot written; the next write takes the
    /// other slot.
    generation: u64,
}

impl AckFile {
    /// Opens the file, and unless it already has its full size in the
    /// two-slot format, writes both slots with `acked` (slot 1 first,
    /// which lies past an old-format file's bytes) and syncs it.
    fn prepare(dir: &Path, state: AckState, acked: u64) -> io::Result<AckFile> {
        let path = dir.join(ACK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let generation = match state {
            AckState::Slots { generation, .. } => generation,
            _ => 0,
        };
        let mut ack = AckFile { file, generation };
        if matches!(state, AckState::Slots { .. }) && ack.file.metadata()?.len() >= ACK_FILE_BYTES {
            return Ok(ack);
        }
        // Slot 1 first, then slot 0.
        if ack.generation % 2 == 1 {
            ack.generation += 1;
        }
        ack.write(acked, true)?;
        ack.write(acked, true)?;
        ack.file.sync_all()?;
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            debug!(error = %e, "cannot sync the spool folder");
        }
        Ok(ack)
    }

    /// Writes `acked` to the slot after the newest, in place.
    fn write(&mut self, acked: u64, durable: bool) -> io::Result<()> {
        let generation = self.generation + 1;
        let offset = (generation % 2) * ACK_SLOT_BYTES as u64;
        self.file
            .write_all_at(&encode_ack_slot(generation, acked), offset)?;
        if durable {
            self.file.sync_data()?;
        }
        self.generation = generation;
        Ok(())
    }
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
            min_free_bytes: 0,
        }
    }

    /// Appends the records named by `ids`, in one write.
    fn append_ids(spool: &Spool, ids: std::ops::Range<usize>) {
        spool
            .append(ids.map(|i| rec(&i.to_string())).collect())
            .unwrap();
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
    fn reads_from_memory_equal_reads_from_the_file() {
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
        // Both writes, each in parts, one per segment.
        assert!(spool.recent().len() > 2);
        drop(spool);
        let reopened = Spool::open(dir.path(), opts(1 << 20, 1 << 12)).unwrap();
        assert_eq!(reopened.recent().len(), 0);
        let from_file = reads(&reopened);
        let seqs = |r: &[(Vec<(u64, Bytes)>, u64)]| -> Vec<(Vec<u64>, u64)> {
            r.iter()
                .map(|(v, n)| (v.iter().map(|x| x.0).collect(), *n))
                .collect()
        };
        assert_eq!(seqs(&from_memory), seqs(&from_file));
        assert!(from_memory == from_file, "same sequences, different bytes");
        // Acknowledged segments go; memory never serves what is gone.
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
        assert_eq!(reopened.recent().len(), 1);
        reopened.ack(61).unwrap();
        assert_eq!(reopened.recent().len(), 0);
        let b = reopened.read_raw_from(61, 10, 1 << 20).unwrap();
        assert!(b.records.is_empty());
        assert_eq!(b.next_seq, 62);
    }

    #[test]
    fn in_memory_reads_serve_recent_writes_until_acknowledged_and_never_wait_for_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 20)).unwrap();
        append_ids(&spool, 0..3);
        append_ids(&spool, 3..6);
        let seqs = |b: &RawReadBatch| b.records.iter().map(|r| r.sequence).collect::<Vec<_>>();
        // Both writes are served, across them, as the file would serve them.
        let mem = spool.read_raw_in_memory(2, 10, 1 << 20).unwrap();
        // The file's read, without memory.
        let file = match spool.read_frames(2, 10, 1 << 20).unwrap() {
            Frames::Some {
                path,
                seq0,
                data,
                expected,
            } => spool.raw_frames(&path, seq0, Bytes::from(data), expected),
            Frames::None { .. } => panic!("nothing in the file"),
        };
        assert_eq!((seqs(&mem), mem.next_seq), (vec![2, 3, 4, 5, 6], 7));
        assert_eq!((seqs(&file), file.next_seq), (vec![2, 3, 4, 5, 6], 7));
        assert!(mem
            .records
            .iter()
            .zip(&file.records)
            .all(|(m, f)| m.payload == f.payload));
        // The lock a write holds (the I/O thread inside `write`) is not the
        // one an in-memory read takes.
        // Nor does an in-memory acknowledgement wait for it.
        let held = spool.lock();
        assert!(spool.read_raw_in_memory(4, 10, 1 << 20).is_some());
        assert!(!spool.ack_in_memory(4));
        drop(held);
        // What the control plane acknowledged leaves memory with its write.
        spool.ack(3).unwrap();
        assert!(spool.read_raw_in_memory(3, 10, 1 << 20).is_none());
        assert_eq!(
            seqs(&spool.read_raw_in_memory(4, 10, 1 << 20).unwrap()),
            [4, 5, 6]
        );
    }

    #[test]
    fn records_of_a_segment_dropped_by_the_bound_are_not_served_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        // Segments of 1 KiB, at most 4 of them.
        let spool = Spool::open(dir.path(), opts(4 << 10, 1 << 10)).unwrap();
        append_ids(&spool, 0..10);
        let first_seg_last = spool.lock().segments[0].last_seq();
        assert!(spool.read_raw_in_memory(1, 100, 1 << 20).is_some());
        // Enough more to push the first segments out.
        for i in 0..8 {
            append_ids(&spool, 10 + i * 10..20 + i * 10);
        }
        assert!(spool.stats().dropped_full > 0);
        let first_left = spool.lock().segments[0].first_seq;
        assert!(first_left > first_seg_last);
        // Lost and counted: neither memory nor the file serves them.
        assert!(spool.read_raw_in_memory(1, 100, 1 << 20).is_none());
        let b = spool.read_raw_from(1, 100, 1 << 20).unwrap();
        assert_eq!(b.records.first().map(|r| r.sequence), Some(first_left));
    }

    #[test]
    fn a_failed_write_empties_memory_and_the_file_still_serves_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 20)).unwrap();
        append_ids(&spool, 0..3);
        assert!(spool.read_raw_in_memory(1, 10, 1 << 20).is_some());
        // The active segment, reopened read-only: the next write fails.
        let seg = segment_files(dir.path()).pop().unwrap();
        spool.lock().active = Some(File::open(&seg).unwrap());
        // A shipper holding 1 to 3 for a fuller batch is woken: they are
        // to be read from the file now.
        spool.ship_wake().hold(Some(super::super::wake::Held {
            from: 1,
            max_records: 100,
            max_bytes: 1 << 20,
        }));
        let waker = std::task::Waker::noop();
        {
            // The permit the writes before stored is taken first.
            let mut before = std::pin::pin!(spool.ship_wake().notified());
            assert!(std::future::Future::poll(
                before.as_mut(),
                &mut std::task::Context::from_waker(waker)
            )
            .is_ready());
        }
        let mut woken = std::pin::pin!(spool.ship_wake().notified());
        let failed = spool.append((3..5).map(|i| rec(&i.to_string())).collect());
        assert!(failed.is_err());
        assert!(std::future::Future::poll(
            woken.as_mut(),
            &mut std::task::Context::from_waker(waker)
        )
        .is_ready());
        assert_eq!(spool.stats().write_failed, 2);
        assert!(spool.read_raw_in_memory(1, 10, 1 << 20).is_none());
        let b = spool.read_raw_from(1, 10, 1 << 20).unwrap();
        let seqs: Vec<u64> = b.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, [1, 2, 3]);
        // The next write goes to a new segment, and is served from memory.
        append_ids(&spool, 5..6);
        let last = spool.last_written();
        let mem = spool.read_raw_in_memory(last, 10, 1 << 20).unwrap();
        assert_eq!(mem.records.len(), 1);
        assert!(spool.read_raw_in_memory(1, 10, 1 << 20).is_none());
    }

    #[test]
    fn in_memory_acks_leave_the_file_and_segment_deletion_to_ack() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        append_ids(&spool, 0..30);
        let segments = segment_files(dir.path()).len();
        assert!(segments > 2, "{segments}");
        let first_segment_last = spool.lock().segments[0].last_seq();
        // Nothing persisted yet: the file is due, so `ack` must do it.
        assert!(!spool.ack_in_memory(1));
        assert_eq!(spool.acked(), 0);
        spool.ack(1).unwrap();
        assert_eq!(persisted_ack(dir.path()), Some(1));
        // Within the persist interval and inside the first segment: in
        // memory only, the file unchanged.
        let mut acked = spool.subscribe_acked();
        assert!(spool.ack_in_memory(first_segment_last - 1));
        assert_eq!(spool.acked(), first_segment_last - 1);
        assert_eq!(*acked.borrow_and_update(), first_segment_last - 1);
        assert_eq!(persisted_ack(dir.path()), Some(1));
        // Going back is a no-op that needs nothing.
        assert!(spool.ack_in_memory(2));
        assert_eq!(spool.acked(), first_segment_last - 1);
        // Completing a segment needs the file written first: refused here,
        // done by `ack`.
        assert!(!spool.ack_in_memory(first_segment_last));
        assert_eq!(segment_files(dir.path()).len(), segments);
        spool.ack(first_segment_last).unwrap();
        assert_eq!(persisted_ack(dir.path()), Some(first_segment_last));
        assert_eq!(segment_files(dir.path()).len(), segments - 1);
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
        // A later write, and only it kept in memory, so the damaged frames
        // are read from the file.
        spool.append(vec![rec("3")]).unwrap();
        spool.keep_newest_writes(1);
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

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn the_ack_file_is_preallocated_and_overwritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACK_FILE);
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        // Full size before the first acknowledgement.
        assert_eq!(fs::metadata(&path).unwrap().len(), ACK_FILE_BYTES);
        assert_eq!(persisted_ack(dir.path()), Some(0));
        let ino = inode(&path);
        spool
            .append((0..40).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        for seq in 1..=40 {
            spool.ack(seq).unwrap();
            spool.persist_ack(false).unwrap();
            assert_eq!(persisted_ack(dir.path()), Some(seq));
        }
        // Same file, same size: nothing was created, renamed or grown.
        assert_eq!(inode(&path), ino);
        assert_eq!(fs::metadata(&path).unwrap().len(), ACK_FILE_BYTES);
        assert!(!dir.path().join(ACK_TMP_FILE).exists());
        drop(spool);
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        assert_eq!(spool.acked(), 40);
    }

    #[test]
    fn a_torn_slot_leaves_the_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..10).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        spool.ack(4).unwrap();
        spool.persist_ack(true).unwrap();
        spool.ack(9).unwrap();
        spool.persist_ack(true).unwrap();
        drop(spool);
        // Damage the newest slot: the one before it is read.
        let path = dir.path().join(ACK_FILE);
        let mut data = fs::read(&path).unwrap();
        let newest = (0..2)
            .max_by_key(|i| decode_ack_slot(&data[i * ACK_SLOT_BYTES..]).unwrap().0)
            .unwrap();
        data[newest * ACK_SLOT_BYTES + 17] ^= 1;
        fs::write(&path, &data).unwrap();
        assert_eq!(persisted_ack(dir.path()), Some(4));
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        assert_eq!(spool.acked(), 4);
        assert_eq!(spool.depth(), 6);
    }

    #[test]
    fn an_old_format_ack_file_is_read_and_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        spool
            .append((0..30).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        drop(spool);
        // What earlier versions wrote: seq | crc, by rename.
        let path = dir.path().join(ACK_FILE);
        let old = |seq: u64| {
            let mut data = seq.to_le_bytes().to_vec();
            data.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
            data
        };
        fs::write(&path, old(12)).unwrap();
        fs::write(dir.path().join(ACK_TMP_FILE), old(13)).unwrap();
        let ino = inode(&path);
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        assert_eq!(spool.acked(), 12);
        assert_eq!(spool.depth(), 18);
        // Upgraded in the same file; the old temporary file is gone.
        assert_eq!(inode(&path), ino);
        assert_eq!(fs::metadata(&path).unwrap().len(), ACK_FILE_BYTES);
        assert!(!dir.path().join(ACK_TMP_FILE).exists());
        spool.ack(20).unwrap();
        drop(spool);
        assert_eq!(persisted_ack(dir.path()), Some(20));

        // An upgrade torn after slot 1: slot 1 is read.
        let mut torn = old(7);
        torn.resize(ACK_SLOT_BYTES, 0);
        torn.extend_from_slice(&encode_ack_slot(1, 7));
        assert_eq!(
            parse_ack_file(&torn),
            AckState::Slots {
                generation: 1,
                acked: 7
            }
        );
        // Torn while writing slot 1: the old bytes still are.
        torn.truncate(ACK_SLOT_BYTES + 10);
        assert_eq!(parse_ack_file(&torn), AckState::Legacy { acked: 7 });
    }

    #[test]
    fn a_reserve_beyond_the_free_space_drops_the_oldest_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        spool
            .append((0..30).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        spool.ack(5).unwrap();
        drop(spool);
        let losses = Arc::new(Losses::default());
        let no_room = SpoolOptions {
            min_free_bytes: u64::MAX / 4,
            ..opts(1 << 20, 1 << 10)
        };
        let spool = Spool::open_with_losses(dir.path(), no_room, Arc::clone(&losses)).unwrap();
        assert_eq!(spool.depth(), 25);
        let segments = segment_files(dir.path());
        assert!(segments.len() > 2, "{segments:?}");
        let last = spool
            .append((0..3).map(|i| rec(&format!("new{i}"))).collect())
            .unwrap();
        assert_eq!(last, None);
        // Every segment but the newest dropped, then the new records
        // refused; each counted once, no sequence used.
        assert_eq!(segment_files(dir.path()), segments[segments.len() - 1..]);
        let kept = spool.depth();
        assert!(kept > 0 && kept < 25, "{kept}");
        assert_eq!(losses.count(LossReason::DiskReserve), 25 - kept + 3);
        assert_eq!(losses.total(), 25 - kept + 3);
        assert_eq!(spool.stats().dropped_reserve, 25 - kept + 3);
        assert_eq!(spool.last_written(), 30);
        drop(spool);
        // Room again: writing resumes where the sequences left off.
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 10)).unwrap();
        assert_eq!(spool.depth(), kept);
        assert_eq!(spool.append(vec![rec("again")]).unwrap(), Some(31));
    }

    #[test]
    fn a_damaged_frame_read_twice_is_counted_once() {
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
        spool.append(vec![rec("3")]).unwrap();
        spool.keep_newest_writes(1);
        for _ in 0..3 {
            let raw = spool.read_raw_from(1, 10, 1 << 20).unwrap();
            assert_eq!(raw.records.len(), 2);
        }
        let s = spool.stats();
        assert_eq!((s.corrupt, s.lost_corrupt), (1, 1), "{s:?}");
    }

    #[test]
    fn a_segment_cut_short_after_open_is_skipped_frame_by_frame() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, 1 << 18)).unwrap();
        spool
            .append((0..6).map(|i| rec(&i.to_string())).collect())
            .unwrap();
        spool.append(vec![rec("6")]).unwrap();
        spool.keep_newest_writes(1);
        let seg = segment_files(dir.path()).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        // Cut in the middle: frames 4 to 7 are gone from the file.
        let frame = (len - MAGIC.len() as u64) / 7;
        let cut = MAGIC.len() as u64 + 3 * frame + frame / 2;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let mut seqs = Vec::new();
        let mut next = 1;
        for _ in 0..20 {
            let b = spool.read_raw_from(next, 100, 1 << 20).unwrap();
            seqs.extend(b.records.iter().map(|r| r.sequence));
            next = b.next_seq;
            if next > spool.last_written() {
                break;
            }
        }
        // The last write's frame comes from memory; the cut ones are lost.
        assert_eq!(seqs, [1, 2, 3, 7]);
        assert_eq!(spool.stats().lost_corrupt, 3);
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

/// Property tests of the frame reader on damaged segment files; see the
/// module documentation for the longer run.
#[cfg(test)]
mod proptests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// Cases per property: `PROPTEST_CASES`, or a few dozen for CI.
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48)
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// What happens to one segment file.
    #[derive(Debug, Clone)]
    enum Damage {
        /// XOR one byte with a non-zero mask.
        Flip(Index, u8),
        /// Cut the file short.
        Truncate(Index),
        /// Overwrite a run of bytes with others.
        Overwrite(Index, Vec<u8>),
        /// Insert bytes.
        Insert(Index, Vec<u8>),
        /// Copy a run of the file over another place in it (a misdirected
        /// write: well-formed frames in the wrong place).
        Copy(Index, Index, Index),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        let bytes = proptest::collection::vec(any::<u8>(), 1..24);
        prop_oneof![
            (any::<Index>(), 1u8..).prop_map(|(i, m)| Damage::Flip(i, m)),
            any::<Index>().prop_map(Damage::Truncate),
            (any::<Index>(), bytes.clone()).prop_map(|(i, b)| Damage::Overwrite(i, b)),
            (any::<Index>(), bytes).prop_map(|(i, b)| Damage::Insert(i, b)),
            (any::<Index>(), any::<Index>(), any::<Index>())
                .prop_map(|(a, b, n)| Damage::Copy(a, b, n)),
        ]
    }

    fn apply(data: &mut Vec<u8>, d: &Damage) {
        if data.is_empty() {
            return;
        }
        let len = data.len();
        match d {
            Damage::Flip(i, m) => data[i.index(len)] ^= m,
            Damage::Truncate(i) => data.truncate(i.index(len)),
            Damage::Overwrite(i, b) => {
                let at = i.index(len);
                let end = (at + b.len()).min(len);
                data[at..end].copy_from_slice(&b[..end - at]);
            }
            Damage::Insert(i, b) => {
                let at = i.index(len + 1);
                data.splice(at..at, b.iter().copied());
            }
            Damage::Copy(from, to, n) => {
                let from = from.index(len);
                let to = to.index(len);
                let n = n.index(len - from.max(to)) + 1;
                let run = data[from..from + n].to_vec();
                data[to..to + n].copy_from_slice(&run);
            }
        }
    }

    /// A record of `body` bytes.
    fn record(i: usize, body: usize) -> pb::RequestLog {
        pb::RequestLog {
            id: format!("r{i}"),
            model: "m".into(),
            request_body: "b".repeat(body),
            ..Default::default()
        }
    }

    struct Written {
        dir: tempfile::TempDir,
        spool: Spool,
        /// The payload written for each sequence.
        payloads: HashMap<u64, Vec<u8>>,
    }

    fn opts(segment_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes,
            min_free_bytes: 0,
        }
    }

    fn write(bodies: &[usize], batches: usize, segment_bytes: u64) -> Written {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(segment_bytes)).unwrap();
        let mut payloads = HashMap::new();
        let per_batch = bodies.len().div_ceil(batches.max(1)).max(1);
        for (b, chunk) in bodies.chunks(per_batch).enumerate() {
            let records: Vec<pb::RequestLog> = chunk
                .iter()
                .enumerate()
                .map(|(i, &n)| record(b * per_batch + i, n))
                .collect();
            let first = spool.last_written() + 1;
            for (seq, r) in (first..).zip(&records) {
                let r = pb::RequestLog {
                    sequence: seq,
                    ..r.clone()
                };
                payloads.insert(seq, r.encode_to_vec());
            }
            spool.append(records).unwrap();
        }
        Written {
            dir,
            spool,
            payloads,
        }
    }

    fn damage_segments(dir: &Path, damages: &[(Index, Damage)]) {
        let mut segs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .collect();
        segs.sort();
        if segs.is_empty() {
            return;
        }
        for (which, d) in damages {
            let path = &segs[which.index(segs.len())];
            let mut data = fs::read(path).unwrap();
            apply(&mut data, d);
            // In place, as the disk would: the spool may hold it open.
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(0).unwrap();
            file.write_all_at(&data, 0).unwrap();
        }
    }

    /// Reads everything from sequence 1 with the given limits, checking
    /// each record against what was written; returns the sequences.
    fn read_all(
        spool: &Spool,
        payloads: &HashMap<u64, Vec<u8>>,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<u64>, TestCaseError> {
        let mut seqs: Vec<u64> = Vec::new();
        let mut next = 1;
        // Each read moves on by at least one sequence.
        for _ in 0..=payloads.len() + 1 {
            if next > spool.last_written() {
                return Ok(seqs);
            }
            let b = spool
                .read_raw_from(next, max_records, max_bytes)
                .map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
            for r in &b.records {
                let want = payloads.get(&r.sequence);
                prop_assert!(
                    want.is_some_and(|w| w[..] == r.payload[..]),
                    "sequence {} returned bytes that were not written",
                    r.sequence
                );
                prop_assert!(seqs.last().is_none_or(|&l| l < r.sequence));
                seqs.push(r.sequence);
            }
            prop_assert!(b.next_seq > next || !b.records.is_empty());
            next = b.next_seq.max(next + 1);
        }
        Err(TestCaseError::fail("reading did not reach the end"))
    }

    proptest! {
        #![proptest_config(config())]

        /// Recovery after damage: no panic, and every record it keeps and
        /// serves is byte for byte one that was written, in order.
        #[test]
        fn recovery_keeps_only_records_that_were_written(
            bodies in proptest::collection::vec(0usize..300, 1..40),
            batches in 1usize..4,
            segment_bytes in 256u64..4096,
            damages in proptest::collection::vec((any::<Index>(), damage()), 1..4),
            max_records in 1usize..20,
            max_bytes in 1usize..4096,
        ) {
            let w = write(&bodies, batches, segment_bytes);
            let Written { dir, spool, payloads } = w;
            drop(spool);
            damage_segments(dir.path(), &damages);
            let spool = Spool::open(dir.path(), opts(segment_bytes))
                .map_err(|e| TestCaseError::fail(format!("open failed: {e}")))?;
            let seqs = read_all(&spool, &payloads, max_records, max_bytes)?;
            prop_assert_eq!(seqs.len() as u64, spool.depth());
            // What is kept is written again after a reopen, unchanged.
            drop(spool);
            let spool = Spool::open(dir.path(), opts(segment_bytes)).unwrap();
            prop_assert_eq!(read_all(&spool, &payloads, 100, 1 << 20)?, seqs);
            prop_assert_eq!(spool.stats().corrupt, 0);
        }

        /// Damage after the spool indexed its files: reads skip the damaged
        /// frames, never return one, count each once, and reach the end.
        #[test]
        fn reads_skip_frames_damaged_after_open(
            bodies in proptest::collection::vec(0usize..300, 2..40),
            segment_bytes in 256u64..4096,
            damages in proptest::collection::vec((any::<Index>(), damage()), 1..4),
            max_records in 1usize..20,
            max_bytes in 1usize..4096,
        ) {
            // Two writes, and only the last one's part in its last segment
            // kept in memory, so most frames are read from the files.
            let w = write(&bodies, 2, segment_bytes);
            w.spool.keep_newest_writes(1);
            damage_segments(w.dir.path(), &damages);
            let first = read_all(&w.spool, &w.payloads, max_records, max_bytes)?;
            let lost = w.spool.stats().lost_corrupt;
            // Records served plus records counted lost never exceed those
            // written, and a second pass counts nothing again.
            prop_assert!(first.len() as u64 + lost <= w.payloads.len() as u64);
            let again = read_all(&w.spool, &w.payloads, max_records, max_bytes)?;
            prop_assert_eq!(w.spool.stats().lost_corrupt, lost);
            prop_assert_eq!(again, first);
        }

        /// The frame and acknowledgement parsers on arbitrary bytes.
        #[test]
        fn parsers_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(size) = check_frame(&data) {
                prop_assert!(size <= data.len() && size >= FRAME_HEADER_BYTES);
            }
            let _ = parse_frame(&data);
            let _ = super::super::wire::record_sequence(&data);
            let _ = parse_ack_file(&data);
        }

        /// Any damage to one slot leaves the other slot's value readable.
        #[test]
        fn a_damaged_slot_leaves_the_other(
            acked in any::<u64>(),
            generation in 1u64..1000,
            damage in damage(),
        ) {
            let mut data = Vec::new();
            let (newer, older) = (generation % 2, 1 - generation % 2);
            let mut slots = [[0u8; ACK_SLOT_BYTES]; 2];
            slots[newer as usize] = encode_ack_slot(generation, acked);
            slots[older as usize] = encode_ack_slot(generation - 1, acked / 2);
            for s in slots {
                data.extend_from_slice(&s);
            }
            // Damage confined to the newer slot.
            let start = newer as usize * ACK_SLOT_BYTES;
            let mut slot = data[start..start + ACK_SLOT_BYTES].to_vec();
            apply(&mut slot, &damage);
            slot.resize(ACK_SLOT_BYTES, 0);
            data[start..start + ACK_SLOT_BYTES].copy_from_slice(&slot);
            let state = parse_ack_file(&data);
            let intact = decode_ack_slot(&data[start..]) == Some((generation, acked));
            if intact {
                prop_assert_eq!(state, AckState::Slots { generation, acked });
            } else {
                prop_assert_eq!(state, AckState::Slots { generation: generation - 1, acked: acked / 2 });
            }
        }
    }
}
