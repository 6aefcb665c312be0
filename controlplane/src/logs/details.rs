//! A request log's details (its request and response headers and its
//! client, upstream and response bodies), stored apart from the summary in
//! `request_log_details` (migration 0024), compressed with zstd: since
//! migration 0038 (SQLite 0035) many records to a row, a *block*, before
//! that one row per record.
//!
//! Why apart: lists, stats and exports never read them, and they are kept
//! for less time than the summaries (`--body-retention-days`): PostgreSQL
//! drops their day partitions earlier, SQLite deletes them in batches. A
//! record whose details row is gone says so (`bodies_expired`), rather
//! than showing empty bodies.
//!
//! **Blocks.** A row of one record spent more on itself than on its
//! compressed details: its tuple header, time and id, and its entry in
//! the time index (about 90 of the 136 bytes a record took, against 46
//! of compressed data). So ingest puts the details of up to
//! [`MAX_BLOCK_RECORDS`] records of a batch, of one UTC day, in one row
//! (`blocks.rs` plans them); each summary row keeps how long after the
//! block's time its record came (`request_logs.details_offset_ms`), and
//! `logs get` reads the rows at that time and finds the record's id in
//! one. A block's `data` is `0x03`, a dictionary id (LEB128; 0 for none)
//! and a zstd frame of its records laid out by column ([`plain_block`]);
//! `0x04` when some of its records' long request bodies are stored by
//! content (`pieces.rs`, since migration 0039): the block holds their
//! pieces' hashes and their last piece, and a read takes the rest from
//! `request_log_pieces`.
//! A record whose block is gone (body retention) reads as expired, as
//! one without a row of its own does.
//!
//! A row of one record holds the request's time and the 16 bytes of its
//! id; `logs get` finds it through an index on the time (no primary key
//! since migration 0034: ingest writes a record's details once, with its
//! summary). Its `data` is one of:
//! - `{...}`: a JSON object of the five fields as strings, as migration
//!   0024 moved rows stored before it (SQL has no zstd);
//! - `0x01` and a zstd frame of the five fields, each a LEB128 length and
//!   its UTF-8 bytes, in [`FIELDS`] order;
//! - `0x02`, a dictionary id (LEB128) and such a frame compressed with that
//!   dictionary (`log_dictionaries`).
//!
//! All three read back byte for byte what was stored.
//!
//! **Details.** Bodies of a few hundred bytes hardly compress on their
//! own; what they share with each other (headers, the JSON of a protocol,
//! the application's prompts) is what a zstd dictionary holds. The control
//! plane trains one (`zstd::dict::from_samples`, [`DICT_BYTES`]) from the
//! first [`TRAIN_SAMPLES`] records it stores, stores it in
//! `log_dictionaries`, and compresses with it from then on; a day later it
//! samples again and trains a new one, so the dictionary follows the
//! traffic. Reads load a dictionary by id and keep it. Control planes
//! sharing a database each train their own and read everyone's, and pick
//! up the newest at least hourly. A dictionary goes once a newer one has
//! been in use long enough that body retention has removed every row
//! compressed with it (see [`purge_dictionaries`]).

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sqlx::AnyPool;
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::pieces;
use crate::store::{now_ms, Store, StoreError};

/// The detail fields in their stored order: the headers as JSON objects
/// of strings, then the three bodies.
pub const FIELDS: [&str; 5] = [
    "request_headers",
    "response_headers",
    "request_body",
    "response_body",
    "upstream_request_body",
];
/// The client's request body's place in [`FIELDS`].
pub const REQUEST_BODY: usize = 2;
/// The place of the body sent upstream (when translated) in [`FIELDS`].
pub const UPSTREAM_REQUEST_BODY: usize = 4;

/// The first byte of a zstd-compressed row.
const ZSTD: u8 = 1;
/// The first byte of a row compressed with a dictionary.
const ZSTD_DICT: u8 = 2;
/// The first byte of a block: many records' details in one row.
const BLOCK: u8 = 3;
/// The first byte of a block some of whose bodies are stored by content
/// (`pieces.rs`): after its ids, a column of each record's pieced fields.
const BLOCK_PIECES: u8 = 4;
/// Most records in a block. `logs get` decompresses the whole block for
/// one record (about a millisecond at [`MAX_BLOCK_PLAIN`]). Blocks this
/// large compress better, and PostgreSQL stores them out of line in TOAST
/// chunks of about 2 KB, where the last, partial chunk of each value
/// leaves part of a page empty: at 128 records a block (three chunks) that
/// cost 27% more than the data (docs/benchmarks.md, "Details in blocks").
pub const MAX_BLOCK_RECORDS: usize = 512;
/// A block is closed once its uncompressed details reach this; a record
/// larger than this has a block of its own.
pub const MAX_BLOCK_PLAIN: usize = 512 * 1024;
/// zstd's level: 3 is its default; the higher levels cost ingest several
/// times as much for a few percent on bodies this small.
const LEVEL: i32 = 3;
/// A stored row decompresses to at most this (bodies are capped by the data
/// plane, headers by ingest's validation): a damaged row cannot make a read
/// allocate without bound.
const MAX_DECODED: u64 = 512 * 1024 * 1024;
/// Records a dictionary is trained from.
pub const TRAIN_SAMPLES: usize = 2000;
/// Records larger than this are not samples (a few large bodies would
/// otherwise make up the whole training set, and a dictionary pays off
/// for small records: a large one compresses well on its own). It also
/// bounds what the samples hold: at most 8 MiB.
const MAX_SAMPLE_BYTES: usize = 4 * 1024;
/// The size of a trained dictionary (docs/benchmarks.md, "Bytes per row").
pub const DICT_BYTES: usize = 16 * 1024;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// A dictionary older than this is replaced by one trained on new samples.
const RETRAIN_MS: i64 = DAY_MS;
/// How often a control plane looks for a newer dictionary (another control
/// plane's) in the database.
const REFRESH_MS: i64 = 3600 * 1000;

/// Records this close to their body cutoff are stored without details.
const KEEP_MARGIN_MS: i64 = 3600 * 1000;

/// The five detail fields of a record, in [`FIELDS`] order.
pub type Fields = [String; 5];

/// The dictionary new rows are compressed with.
pub struct Current {
    id: i64,
    created_ms: i64,
    dict: EncoderDictionary<'static>,
}

/// What storing one database's details needs: its dictionaries (the
/// current one, those read so far, the samples for the next) and the body
/// retention in force.
#[derive(Default)]
pub struct Details {
    /// `--body-retention-days` in effect; 0 keeps bodies (the default until
    /// the retention job sets it).
    body_days: AtomicU32,
    current: RwLock<Option<Arc<Current>>>,
    /// When the database was last asked for a newer dictionary (ms).
    checked_ms: AtomicI64,
    known: Mutex<HashMap<i64, Arc<DecoderDictionary<'static>>>>,
    samples: Mutex<Vec<Vec<u8>>>,
    training: AtomicBool,
    /// The body pieces (`pieces.rs`) of the batches this control plane
    /// committed.
    pieces: Arc<pieces::Known>,
}

fn bad(why: &str) -> StoreError {
    StoreError::Invalid(format!("stored log details are damaged: {why}"))
}

fn lock_err() -> StoreError {
    StoreError::Invalid("the log dictionaries' lock is poisoned".into())
}

impl Details {
    /// Sets the body retention in force (the retention job, at start).
    pub fn set_body_days(&self, days: u32) {
        self.body_days.store(days, Ordering::Relaxed);
    }

    /// `--body-retention-days` in effect (0: bodies are kept).
    pub fn body_days(&self) -> u32 {
        self.body_days.load(Ordering::Relaxed)
    }

    /// The body pieces stored by batches this control plane committed.
    pub fn known_pieces(&self) -> Arc<pieces::Known> {
        self.pieces.clone()
    }

    /// The dictionary to compress with now, if one was trained; looks for
    /// a newer one in the database at most every [`REFRESH_MS`].
    pub async fn current(&self, pool: &AnyPool) -> Result<Option<Arc<Current>>, StoreError> {
        let now = now_ms();
        let checked = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(checked) >= REFRESH_MS
            && self
                .checked_ms
                .compare_exchange(checked, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let newest: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(
                "SELECT id, created_ms, dict FROM log_dictionaries ORDER BY id DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            if let Some((id, created_ms, dict)) = newest {
                let newer = self
                    .current
                    .read()
                    .map_err(|_| lock_err())?
                    .as_ref()
                    .is_none_or(|c| c.id < id);
                if newer {
                    self.set_current(id, created_ms, &dict)?;
                }
            }
        }
        Ok(self.current.read().map_err(|_| lock_err())?.clone())
    }

    fn set_current(&self, id: i64, created_ms: i64, dict: &[u8]) -> Result<(), StoreError> {
        let current = Current {
            id,
            created_ms,
            dict: EncoderDictionary::copy(dict, LEVEL),
        };
        self.known
            .lock()
            .map_err(|_| lock_err())?
            .insert(id, Arc::new(DecoderDictionary::copy(dict)));
        *self.current.write().map_err(|_| lock_err())? = Some(Arc::new(current));
        Ok(())
    }

    /// Whether records stored now should be kept as samples: no dictionary
    /// yet, or one due for retraining, and too few samples. Reads the
    /// current dictionary anew, not a batch's: batches that began before a
    /// training ended must not start another.
    pub fn wants_samples(&self) -> bool {
        let due = self.current.read().is_ok_and(|c| {
            c.as_ref()
                .is_none_or(|c| now_ms().saturating_sub(c.created_ms) >= RETRAIN_MS)
        });
        due && !self.training.load(Ordering::Acquire)
            && self.samples.lock().is_ok_and(|s| s.len() < TRAIN_SAMPLES)
    }

    /// Keeps records' uncompressed details for the next training, and
    /// starts it (in the background) once there are enough.
    pub fn add_samples(&self, store: &Store, mut new: Vec<Vec<u8>>) {
        new.retain(|s| s.len() <= MAX_SAMPLE_BYTES);
        if !self.wants_samples() {
            return;
        }
        let ready = {
            let Ok(mut samples) = self.samples.lock() else {
                return;
            };
            let room = TRAIN_SAMPLES.saturating_sub(samples.len());
            new.truncate(room);
            samples.extend(new);
            samples.len() >= TRAIN_SAMPLES && !self.training.swap(true, Ordering::AcqRel)
        };
        if ready {
            let store = store.clone();
            tokio::spawn(async move {
                let dicts = store.details();
                let samples = dicts
                    .samples
                    .lock()
                    .map(|mut s| std::mem::take(&mut *s))
                    .unwrap_or_default();
                if let Err(e) = dicts.train(&store, samples).await {
                    tracing::warn!(error = %e, "cannot train a dictionary for log bodies; trying again later");
                }
                dicts.training.store(false, Ordering::Release);
            });
        }
    }

    async fn train(&self, store: &Store, samples: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let n = samples.len();
        let dict =
            tokio::task::spawn_blocking(move || zstd::dict::from_samples(&samples, DICT_BYTES))
                .await
                .map_err(|e| StoreError::Invalid(format!("dictionary training stopped: {e}")))?
                .map_err(|e| StoreError::Invalid(format!("dictionary training failed: {e}")))?;
        let created_ms = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO log_dictionaries (created_ms, dict) VALUES ($1, $2) RETURNING id",
        )
        .bind(created_ms)
        .bind(dict.as_slice())
        .fetch_one(store.pool())
        .await?;
        self.set_current(id, created_ms, &dict)?;
        tracing::info!(
            id,
            samples = n,
            bytes = dict.len(),
            "trained a dictionary for log bodies"
        );
        Ok(())
    }

    /// The decoder of dictionary `id`, read from the database the first
    /// time.
    async fn decoder(
        &self,
        pool: &AnyPool,
        id: i64,
    ) -> Result<Arc<DecoderDictionary<'static>>, StoreError> {
        if let Some(d) = self.known.lock().map_err(|_| lock_err())?.get(&id) {
            return Ok(d.clone());
        }
        let dict: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT dict FROM log_dictionaries WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        let dict = dict.ok_or_else(|| bad(&format!("its dictionary {id} is gone")))?;
        let d = Arc::new(DecoderDictionary::copy(&dict));
        self.known
            .lock()
            .map_err(|_| lock_err())?
            .insert(id, d.clone());
        Ok(d)
    }

    /// The fields of a stored row, exactly as stored, reading its
    /// dictionary if it has one.
    pub async fn decode(&self, pool: &AnyPool, data: &[u8]) -> Result<Fields, StoreError> {
        if data.first() == Some(&ZSTD_DICT) {
            let mut rest = &data[1..];
            let id = take_varint(&mut rest).ok_or_else(|| bad("a cut dictionary id"))?;
            let id = i64::try_from(id).map_err(|_| bad("a dictionary id too large"))?;
            let dict = self.decoder(pool, id).await?;
            return fields_of(&inflate(rest, Some(&dict))?);
        }
        decode(data)
    }

    /// The fields of the record `id` (its 16 stored bytes) in a stored
    /// block of the UTC day `day_ms`, its bodies stored by content read
    /// from that day's pieces on `conn`; `None` when the row is not a block
    /// or holds no such record (another batch's block of the same
    /// millisecond).
    pub async fn find_in_block(
        &self,
        pool: &AnyPool,
        conn: &mut sqlx::AnyConnection,
        data: &[u8],
        id: &[u8],
        day_ms: i64,
    ) -> Result<Option<Fields>, StoreError> {
        let Some(plain) = self.open_block(pool, data).await? else {
            return Ok(None);
        };
        let Some((mut raw, pieced)) = find_in_plain_block(&plain, id, data[0] == BLOCK_PIECES)?
        else {
            return Ok(None);
        };
        if pieced != 0 {
            let mut hashes: Vec<pieces::Hash> = Vec::new();
            for (f, field) in raw.iter().enumerate() {
                if pieced & (1 << f) != 0 {
                    hashes.extend(pieces::parts(field)?.0);
                }
            }
            let found = pieces::read(conn, day_ms, &hashes).await?;
            for (f, field) in raw.iter_mut().enumerate() {
                if pieced & (1 << f) != 0 {
                    *field = pieces::assemble(field, &found)?;
                }
            }
        }
        let mut fields: Fields = Default::default();
        for (field, bytes) in fields.iter_mut().zip(raw) {
            *field = String::from_utf8(bytes).map_err(|_| bad("a field that is not UTF-8"))?;
        }
        Ok(Some(fields))
    }

    /// The ids (16 bytes each) of the records a stored block holds; `None`
    /// when the row is not a block (a row of one record, whose id is the
    /// row's).
    pub async fn block_ids(
        &self,
        pool: &AnyPool,
        data: &[u8],
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let Some(plain) = self.open_block(pool, data).await? else {
            return Ok(None);
        };
        let read = read_block(&plain, data[0] == BLOCK_PIECES)?;
        Ok(Some(read.ids.iter().map(|i| i.to_vec()).collect()))
    }

    /// A stored block uncompressed; `None` for a row of another form.
    async fn open_block(&self, pool: &AnyPool, data: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((&(BLOCK | BLOCK_PIECES), mut rest)) = data.split_first() else {
            return Ok(None);
        };
        let dict_id = take_varint(&mut rest).ok_or_else(|| bad("a cut dictionary id"))?;
        let dict = match dict_id {
            0 => None,
            id => {
                let id = i64::try_from(id).map_err(|_| bad("a dictionary id too large"))?;
                Some(self.decoder(pool, id).await?)
            }
        };
        inflate(rest, dict.as_deref()).map(Some)
    }
}

/// A zstd frame decompressed, with its dictionary when it was made with
/// one, up to [`MAX_DECODED`] bytes.
fn inflate(frame: &[u8], dict: Option<&DecoderDictionary<'static>>) -> Result<Vec<u8>, StoreError> {
    let mut plain = Vec::new();
    let read = match dict {
        Some(d) => zstd::stream::Decoder::with_prepared_dictionary(frame, d)
            .and_then(|d| d.take(MAX_DECODED).read_to_end(&mut plain)),
        None => zstd::stream::Decoder::new(frame)
            .and_then(|d| d.take(MAX_DECODED).read_to_end(&mut plain)),
    };
    read.map_err(|_| bad("not a zstd frame"))?;
    Ok(plain)
}

/// Whether a record of `time_ms` is stored with its details now, under a
/// body retention of `days`: not when that retention removes them within
/// the hour anyway. On PostgreSQL that hour also keeps ingest off the day
/// partitions that retention is dropping (a row for a dropped day would
/// find none).
pub fn keeps(days: u32, time_ms: i64, now: i64) -> bool {
    days == 0
        || time_ms
            >= now
                .saturating_sub(i64::from(days).saturating_mul(DAY_MS))
                .saturating_add(KEEP_MARGIN_MS)
}

/// A record as a block takes it: its 16-byte id, its [`plain`] fields,
/// and which of them are in their stored form by content
/// (`pieces::stored_form`: pieces' hashes, then the last piece) rather
/// than as they came: bit `f` for field `f`.
pub type BlockRecord<'a> = (&'a [u8], &'a [u8], u8);

/// The uncompressed form of a block ([`BLOCK`]) of records, laid out by
/// column: the count; the ids, each as the difference of its first 6 bytes
/// (read as a 48-bit number; a UUIDv7 keeps its time there) from the
/// previous id's, then its other 10 bytes; then for each field in
/// [`FIELDS`] order, the records' lengths, then their bytes. Headers
/// beside headers and bodies beside bodies compress better than record
/// after record (11% on the log_volume corpus, 5% on varied traffic:
/// docs/benchmarks.md, "Details in blocks"), and nearby ids' times repeat
/// their high bytes. When a record has fields stored by content, a
/// [`BLOCK_PIECES`] block: after the ids, a byte a record says which (the
/// third value of its [`BlockRecord`]); the function's second value says
/// whether the block is one.
pub fn plain_block<'a>(
    records: impl ExactSizeIterator<Item = BlockRecord<'a>> + Clone,
) -> Result<(Vec<u8>, bool), StoreError> {
    let bytes: usize = records.clone().map(|(id, p, _)| id.len() + p.len()).sum();
    let pieced = records.clone().any(|(_, _, m)| m != 0);
    let mut out = Vec::with_capacity(bytes + 16);
    put_varint(&mut out, records.len() as u64);
    let mut fields = Vec::with_capacity(records.len());
    let mut masks = Vec::new();
    let mut previous = 0u64;
    for (id, plain, mask) in records {
        masks.push(mask);
        let id: &[u8; ID_BYTES] = id
            .try_into()
            .map_err(|_| bad("an id that is not 16 bytes"))?;
        let time = id_time(id);
        put_varint(&mut out, time.wrapping_sub(previous) & TIME_MASK);
        previous = time;
        out.extend_from_slice(&id[TIME_BYTES..]);
        fields.push(field_slices(plain)?);
    }
    if pieced {
        out.extend_from_slice(&masks);
    }
    for f in 0..FIELDS.len() {
        for r in &fields {
            put_varint(&mut out, r[f].len() as u64);
        }
        for r in &fields {
            out.extend_from_slice(r[f]);
        }
    }
    Ok((out, pieced))
}

/// The bytes of an id that [`plain_block`] writes as a difference.
const TIME_BYTES: usize = 6;
const TIME_MASK: u64 = (1 << 48) - 1;

fn id_time(id: &[u8; ID_BYTES]) -> u64 {
    id[..TIME_BYTES]
        .iter()
        .fold(0u64, |t, &b| (t << 8) | u64::from(b))
}

/// The five fields of a record's [`plain`] form, as slices of it.
fn field_slices(plain: &[u8]) -> Result<[&[u8]; 5], StoreError> {
    let mut rest = plain;
    let mut next = || -> Result<&[u8], StoreError> {
        let len = take_len(&mut rest)?;
        let (field, after) = rest.split_at(len);
        rest = after;
        Ok(field)
    };
    let fields = [next()?, next()?, next()?, next()?, next()?];
    if !rest.is_empty() {
        return Err(bad("bytes after the last field"));
    }
    Ok(fields)
}

/// A LEB128 length that `rest` holds that many bytes after.
fn take_len(rest: &mut &[u8]) -> Result<usize, StoreError> {
    let len = take_varint(rest).ok_or_else(|| bad("a cut length"))?;
    usize::try_from(len)
        .ok()
        .filter(|l| *l <= rest.len())
        .ok_or_else(|| bad("a cut field"))
}

/// An uncompressed block read ([`plain_block`]): its ids, which fields of
/// each record are pieced, and each field's column (the records' lengths
/// and the bytes they take).
struct ReadBlock<'a> {
    ids: Vec<[u8; ID_BYTES]>,
    masks: Option<&'a [u8]>,
    columns: Vec<(Vec<usize>, &'a [u8])>,
}

/// Reads an uncompressed block; `pieced` for a [`BLOCK_PIECES`] block.
fn read_block(block: &[u8], pieced: bool) -> Result<ReadBlock<'_>, StoreError> {
    let mut rest = block;
    let n = take_varint(&mut rest).ok_or_else(|| bad("a cut block count"))?;
    // Each id takes at least 11 bytes: a count beyond that is damage.
    let n = usize::try_from(n)
        .ok()
        .filter(|n| n.saturating_mul(ID_BYTES - TIME_BYTES + 1) <= rest.len())
        .ok_or_else(|| bad("a block's ids are cut"))?;
    let mut ids = Vec::with_capacity(n);
    let mut time = 0u64;
    for _ in 0..n {
        let delta = take_varint(&mut rest).ok_or_else(|| bad("a cut id"))?;
        time = time.wrapping_add(delta) & TIME_MASK;
        let tail = rest
            .get(..ID_BYTES - TIME_BYTES)
            .ok_or_else(|| bad("a cut id"))?;
        let mut id = [0u8; ID_BYTES];
        id[..TIME_BYTES].copy_from_slice(&time.to_be_bytes()[8 - TIME_BYTES..]);
        id[TIME_BYTES..].copy_from_slice(tail);
        rest = &rest[ID_BYTES - TIME_BYTES..];
        ids.push(id);
    }
    let masks = if pieced {
        let (masks, after) = rest
            .split_at_checked(n)
            .ok_or_else(|| bad("a cut column of pieced fields"))?;
        rest = after;
        Some(masks)
    } else {
        None
    };
    let mut columns = Vec::with_capacity(FIELDS.len());
    for _ in 0..FIELDS.len() {
        // Each length takes a byte at least.
        if n > rest.len() {
            return Err(bad("a cut length"));
        }
        let mut lens = Vec::with_capacity(n);
        let mut total = 0usize;
        for _ in 0..n {
            let len = take_varint(&mut rest).ok_or_else(|| bad("a cut length"))?;
            let len = usize::try_from(len).map_err(|_| bad("a length too large"))?;
            total = total
                .checked_add(len)
                .ok_or_else(|| bad("a length too large"))?;
            lens.push(len);
        }
        if total > rest.len() {
            return Err(bad("a cut field"));
        }
        let (bytes, after) = rest.split_at(total);
        rest = after;
        columns.push((lens, bytes));
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the last field"));
    }
    Ok(ReadBlock {
        ids,
        masks,
        columns,
    })
}

/// A record's fields as its block stores them, and which of them are in
/// their stored form by content (bit `f` for field `f`).
type StoredFields = ([Vec<u8>; 5], u8);

/// The stored bytes of record `id`'s fields in an uncompressed block.
fn find_in_plain_block(
    block: &[u8],
    id: &[u8],
    pieced: bool,
) -> Result<Option<StoredFields>, StoreError> {
    let read = read_block(block, pieced)?;
    let Some(at) = read.ids.iter().position(|i| i.as_slice() == id) else {
        return Ok(None);
    };
    let mut fields: [Vec<u8>; 5] = Default::default();
    for (field, (lens, bytes)) in fields.iter_mut().zip(&read.columns) {
        let start: usize = lens[..at].iter().sum();
        *field = bytes[start..start + lens[at]].to_vec();
    }
    let mask = read.masks.map_or(0, |m| m[at]);
    if mask & !pieces::PIECED_BITS != 0 {
        return Err(bad("a field stored by content that cannot be"));
    }
    Ok(Some((fields, mask)))
}

/// The length of a stored id (`row::stored_id`): a UUID's bytes.
const ID_BYTES: usize = 16;

/// The uncompressed form of the fields: each a LEB128 length and its bytes.
pub fn plain(fields: [&str; 5]) -> Vec<u8> {
    plain_bytes(fields.map(str::as_bytes))
}

/// [`plain`] of fields as bytes (a pieced field's hashes).
pub fn plain_bytes(fields: [&[u8]; 5]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(fields.iter().map(|f| f.len() + 3).sum());
    for f in fields {
        put_varint(&mut plain, f.len() as u64);
        plain.extend_from_slice(f);
    }
    plain
}

/// Compresses a batch's [`plain`] fields into their stored form: with the
/// dictionary when there is one (`0x02`, its id, a zstd frame), else
/// `0x01` and a zstd frame. One compression context serves the whole
/// batch: creating one per record (as `zstd::stream::Encoder` does) was
/// the largest cost of ingest (`ZSTD_createCCtx`, 14% of the control
/// plane's samples in `perf`).
pub struct Packer<'a> {
    cctx: zstd::bulk::Compressor<'a>,
    /// The format byte, and the dictionary's id when there is one.
    head: Vec<u8>,
    /// A block's dictionary id (LEB128, 0 for none), after its format byte.
    block_dict: Vec<u8>,
    scratch: Vec<u8>,
}

impl<'a> Packer<'a> {
    pub fn new(dict: Option<&'a Current>) -> Result<Self, StoreError> {
        let mut block_dict = Vec::new();
        put_varint(&mut block_dict, dict.map_or(0, |d| d.id.unsigned_abs()));
        let (cctx, head) = match dict {
            Some(d) => {
                let mut head = vec![ZSTD_DICT];
                put_varint(&mut head, d.id.unsigned_abs());
                (
                    zstd::bulk::Compressor::with_prepared_dictionary(&d.dict),
                    head,
                )
            }
            None => (zstd::bulk::Compressor::new(LEVEL), vec![ZSTD]),
        };
        let mut cctx = cctx.map_err(compress_failed)?;
        // Small frames: no checksum (the database keeps its own), no
        // dictionary id (the row has it), and the content size in the
        // header, so reads allocate once.
        use zstd::zstd_safe::CParameter;
        for p in [
            CParameter::ChecksumFlag(false),
            CParameter::DictIdFlag(false),
            CParameter::ContentSizeFlag(true),
        ] {
            cctx.set_parameter(p).map_err(compress_failed)?;
        }
        Ok(Packer {
            cctx,
            head,
            block_dict,
            scratch: Vec::new(),
        })
    }

    /// The stored form of a block of records ([`plain_block`]).
    pub fn pack_block<'r>(
        &mut self,
        records: impl ExactSizeIterator<Item = BlockRecord<'r>> + Clone,
    ) -> Result<Vec<u8>, StoreError> {
        let (plain, pieced) = plain_block(records)?;
        let mut head = Vec::with_capacity(1 + self.block_dict.len());
        head.push(if pieced { BLOCK_PIECES } else { BLOCK });
        head.extend_from_slice(&self.block_dict);
        frame(&mut self.cctx, &mut self.scratch, &head, &plain)
    }

    /// The stored form of `plain`.
    pub fn pack(&mut self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        frame(&mut self.cctx, &mut self.scratch, &self.head, plain)
    }
}

/// `head` and a zstd frame of `plain`.
fn frame(
    cctx: &mut zstd::bulk::Compressor<'_>,
    scratch: &mut Vec<u8>,
    head: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, StoreError> {
    scratch.clear();
    scratch.reserve(zstd::zstd_safe::compress_bound(plain.len()));
    cctx.compress_to_buffer(plain, scratch)
        .map_err(compress_failed)?;
    let mut out = Vec::with_capacity(head.len() + scratch.len());
    out.extend_from_slice(head);
    out.extend_from_slice(scratch);
    Ok(out)
}

fn compress_failed(e: std::io::Error) -> StoreError {
    StoreError::Invalid(format!("cannot compress a log's details: {e}"))
}

/// The stored form of one record's [`plain`] fields ([`Packer`] for many).
pub fn encode(plain: &[u8], dict: Option<&Current>) -> Result<Vec<u8>, StoreError> {
    Packer::new(dict)?.pack(plain)
}

/// The fields of a stored row without a dictionary, exactly as stored.
pub fn decode(data: &[u8]) -> Result<Fields, StoreError> {
    match data.first() {
        Some(b'{') => {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(data).map_err(|_| bad("not a JSON object"))?;
            let mut take = |name: &str| match v.remove(name) {
                Some(serde_json::Value::String(s)) => Ok(s),
                None | Some(serde_json::Value::Null) => Ok(String::new()),
                Some(_) => Err(bad("a field that is not a string")),
            };
            Ok([
                take(FIELDS[0])?,
                take(FIELDS[1])?,
                take(FIELDS[2])?,
                take(FIELDS[3])?,
                take(FIELDS[4])?,
            ])
        }
        Some(&ZSTD) => fields_of(&inflate(&data[1..], None)?),
        Some(&ZSTD_DICT) => Err(bad("a dictionary's row read without it")),
        _ => Err(bad("an unknown format")),
    }
}

fn fields_of(plain: &[u8]) -> Result<Fields, StoreError> {
    let mut rest = plain;
    let mut next = || -> Result<String, StoreError> {
        let len = take_varint(&mut rest).ok_or_else(|| bad("a cut length"))?;
        let len = usize::try_from(len).map_err(|_| bad("a length too large"))?;
        if len > rest.len() {
            return Err(bad("a cut field"));
        }
        let (field, after) = rest.split_at(len);
        rest = after;
        String::from_utf8(field.to_vec()).map_err(|_| bad("a field that is not UTF-8"))
    };
    let fields = [next()?, next()?, next()?, next()?, next()?];
    if !rest.is_empty() {
        return Err(bad("bytes after the last field"));
    }
    Ok(fields)
}

/// Deletes the dictionaries no stored row can use any more: those older
/// than the newest one created two days before `body_cutoff_ms` (rows are
/// compressed with the newest dictionary; a record's time is at most a day
/// ahead of its arrival, and PostgreSQL drops bodies a whole day at a
/// time, so every row of an older dictionary is before the cutoff). The
/// newest dictionary always stays. Returns how many went.
pub async fn purge_dictionaries(store: &Store, body_cutoff_ms: i64) -> Result<u64, StoreError> {
    // By the data, not only this control plane's setting: another one on
    // the same database may keep bodies longer.
    let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(time_ms) FROM request_log_details")
        .fetch_one(store.pool())
        .await?;
    let body_cutoff_ms = oldest.map_or(body_cutoff_ms, |t| t.min(body_cutoff_ms));
    let done = sqlx::query(
        "DELETE FROM log_dictionaries WHERE id < \
         (SELECT MAX(id) FROM log_dictionaries WHERE created_ms < $1)",
    )
    .bind(body_cutoff_ms.saturating_sub(2 * DAY_MS))
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_byte_for_byte() {
        let long = "é\u{1F600}\"\\\n".repeat(10_000);
        for fields in [
            ["", "", "", "", ""],
            [
                r#"{"content-type":"application/json"}"#,
                "{}",
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                "not json at all \u{0}",
                &long,
            ],
        ] {
            let stored = encode(&plain(fields), None).unwrap();
            assert_eq!(stored[0], ZSTD);
            let back = decode(&stored).unwrap();
            assert_eq!(back.each_ref().map(String::as_str), fields);
        }
        // Long repeated bodies compress.
        assert!(encode(&plain(["", "", &long, "", ""]), None).unwrap().len() < long.len() / 10);
    }

    #[test]
    fn dictionary_rows_read_back_with_their_dictionary() {
        let samples: Vec<Vec<u8>> = (0..500).map(|n| payload(1, n)).collect();
        let dict = zstd::dict::from_samples(&samples, DICT_BYTES).unwrap();
        let current = Current {
            id: 300,
            created_ms: 0,
            dict: EncoderDictionary::copy(&dict, LEVEL),
        };
        let row = payload(1, 9999);
        let stored = encode(&row, Some(&current)).unwrap();
        assert_eq!(stored[..3], [ZSTD_DICT, 0xac, 0x02]);
        // Smaller than without it.
        assert!(stored.len() < encode(&row, None).unwrap().len());
        // Not readable without it, and read back exactly with it.
        assert!(decode(&stored).is_err());
        let dicts = Details::default();
        dicts.set_current(300, 0, &dict).unwrap();
        let decoder = dicts.known.lock().unwrap().get(&300).unwrap().clone();
        let mut back = Vec::new();
        zstd::stream::Decoder::with_prepared_dictionary(&stored[3..], &decoder)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, row);
        assert!(fields_of(&back).is_ok());
    }

    #[test]
    fn migrated_rows_are_json_objects() {
        let stored = serde_json::json!({
            "request_headers": "{\"a\":\"b\"}",
            "response_headers": "",
            "request_body": "{\"model\": \"x\" }",
            "response_body": "ok",
            "upstream_request_body": "",
        })
        .to_string();
        let back = decode(stored.as_bytes()).unwrap();
        assert_eq!(back[0], "{\"a\":\"b\"}");
        assert_eq!(back[2], "{\"model\": \"x\" }");
        assert_eq!(back[3], "ok");
    }

    #[test]
    fn damaged_rows_are_errors() {
        let mut stored = encode(&plain(["a", "b", "c", "d", "e"]), None).unwrap();
        for bad in [
            &b""[..],
            b"\x07abc",
            b"\x01not zstd",
            b"{\"request_body\":1}",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        stored.truncate(stored.len() - 2);
        assert!(decode(&stored).is_err());
    }

    #[tokio::test]
    async fn blocks_find_each_record_by_id() {
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect("sqlite::memory:").await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let samples: Vec<Vec<u8>> = (0..500).map(|n| payload(1, n)).collect();
        let dict = zstd::dict::from_samples(&samples, DICT_BYTES).unwrap();
        let dicts = Details::default();
        dicts.set_current(5, 0, &dict).unwrap();
        let current = dicts.current.read().unwrap().clone().unwrap();
        let ids: Vec<Vec<u8>> = (0..40u8).map(|n| vec![n; ID_BYTES]).collect();
        let plains: Vec<Vec<u8>> = (0..40).map(|n| payload(1, 10_000 + n)).collect();
        let each = || {
            ids.iter()
                .zip(&plains)
                .map(|(i, p)| (i.as_slice(), p.as_slice(), 0))
        };
        for (with, head) in [(None, [BLOCK, 0]), (Some(&*current), [BLOCK, 5])] {
            let stored = Packer::new(with).unwrap().pack_block(each()).unwrap();
            assert_eq!(stored[..2], head);
            // Smaller than its records compressed one by one, ids and all.
            let alone: usize = plains.iter().map(|p| encode(p, with).unwrap().len()).sum();
            assert!(stored.len() < alone, "{} against {alone}", stored.len());
            for (id, p) in ids.iter().zip(&plains) {
                let found = dicts
                    .find_in_block(&pool, &mut conn, &stored, id, 0)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(found, fields_of(p).unwrap());
            }
            assert!(dicts
                .find_in_block(&pool, &mut conn, &stored, &[99; ID_BYTES], 0)
                .await
                .unwrap()
                .is_none());
            assert_eq!(dicts.block_ids(&pool, &stored).await.unwrap().unwrap(), ids);
            // Damaged: an error, not a record's details.
            let mut cut = stored.clone();
            cut.truncate(cut.len() - 3);
            assert!(dicts
                .find_in_block(&pool, &mut conn, &cut, &ids[0], 0)
                .await
                .is_err());
        }
        // A row of one record is not a block.
        let row = encode(&plains[0], None).unwrap();
        assert!(dicts
            .find_in_block(&pool, &mut conn, &row, &ids[0], 0)
            .await
            .unwrap()
            .is_none());
        assert!(dicts.block_ids(&pool, &row).await.unwrap().is_none());
        // Counts and lengths past the end are errors.
        assert!(find_in_plain_block(&[0x7f], &ids[0], false).is_err());
        let (mut block, pieced) =
            plain_block([(ids[0].as_slice(), plains[0].as_slice(), 0)].into_iter()).unwrap();
        assert!(!pieced);
        block.push(0);
        assert!(
            find_in_plain_block(&block, &ids[0], false).is_err(),
            "bytes after the last field"
        );
        block.truncate(block.len() - 2);
        assert!(
            find_in_plain_block(&block, &ids[0], false).is_err(),
            "a cut field"
        );
        assert!(plain_block([(&[1u8; 15][..], plains[0].as_slice(), 0)].into_iter()).is_err());
        // Ids in any order, times going back included, read back whole.
        let odd: Vec<Vec<u8>> = [[0xffu8; 16], [0; 16], [0x80; 16], [7; 16]]
            .iter()
            .map(|i| i.to_vec())
            .collect();
        let (block, _) =
            plain_block(odd.iter().map(|i| (i.as_slice(), plains[1].as_slice(), 0))).unwrap();
        let read = read_block(&block, false).unwrap();
        assert_eq!(read.ids.iter().map(|i| i.to_vec()).collect::<Vec<_>>(), odd);
        let (raw, mask) = find_in_plain_block(&block, &odd[2], false)
            .unwrap()
            .unwrap();
        assert_eq!(mask, 0);
        assert_eq!(
            raw.map(|f| String::from_utf8(f).unwrap()),
            fields_of(&plains[1]).unwrap()
        );
    }

    #[tokio::test]
    async fn pieced_bodies_read_back_from_their_day() {
        sqlx::any::install_default_drivers();
        // One connection: each has a memory database of its own.
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query(
            "CREATE TABLE request_log_pieces (day_ms INTEGER NOT NULL, hash BLOB NOT NULL, \
             data BLOB NOT NULL, PRIMARY KEY (day_ms, hash))",
        )
        .execute(&pool)
        .await
        .unwrap();
        let dicts = Details::default();
        let day = 20_000 * DAY_MS;
        // 100 kB of words in no order, then what differs.
        let system = pieces::words(11, 100_000);
        let bodies: Vec<String> = (0..3)
            .map(|n| format!("{{\"system\":\"{system}\",\"turn\":{n}}}"))
            .collect();
        let mut cctx = pieces::compressor().unwrap();
        let mut stored = std::collections::BTreeMap::new();
        let mut cut = 0;
        // Records: 0 and 2 with their request bodies by pieces (and 2 its
        // upstream body too), 1 with a small body as bytes.
        let records: Vec<(Vec<u8>, Vec<u8>, u8)> = (0..3u8)
            .map(|n| {
                let body = bodies[usize::from(n)].as_bytes();
                let (refs, cuts) = pieces::stored_form(body).unwrap();
                cut += cuts.len();
                for (h, r) in cuts {
                    stored.insert(h, pieces::pack(&mut cctx, &body[r]).unwrap());
                }
                let (request, upstream, mask) = match n {
                    0 => (refs.clone(), Vec::new(), 0b100),
                    1 => (b"{}".to_vec(), Vec::new(), 0),
                    _ => (refs.clone(), refs, 0b10100),
                };
                let mut p = Vec::new();
                for f in [&b"{}"[..], b"{}", &request, b"ok", &upstream] {
                    put_varint(&mut p, f.len() as u64);
                    p.extend_from_slice(f);
                }
                (vec![n + 1; ID_BYTES], p, mask)
            })
            .collect();
        // The bodies share their pieces (all but the last, kept in the
        // block): stored once.
        assert!(stored.len() > 4, "{} pieces", stored.len());
        assert_eq!(cut, 3 * stored.len());
        for (h, data) in &stored {
            sqlx::query("INSERT INTO request_log_pieces VALUES ($1, $2, $3)")
                .bind(day)
                .bind(h.as_slice())
                .bind(data.as_slice())
                .execute(&pool)
                .await
                .unwrap();
        }
        let block = Packer::new(None)
            .unwrap()
            .pack_block(
                records
                    .iter()
                    .map(|(i, p, m)| (i.as_slice(), p.as_slice(), *m)),
            )
            .unwrap();
        assert_eq!(block[..2], [BLOCK_PIECES, 0]);
        // Read on the caller's connection, the pool's only one.
        let mut conn = pool.acquire().await.unwrap();
        let mut get = async |n: u8, day| {
            dicts
                .find_in_block(&pool, &mut conn, &block, &[n + 1; ID_BYTES], day)
                .await
        };
        let first = get(0, day).await.unwrap().unwrap();
        assert_eq!(first[2], bodies[0]);
        assert_eq!(first[3], "ok");
        assert_eq!(first[4], "");
        assert_eq!(get(1, day).await.unwrap().unwrap()[2], "{}");
        let third = get(2, day).await.unwrap().unwrap();
        assert_eq!(
            (third[2].as_str(), third[4].as_str()),
            (bodies[2].as_str(), bodies[2].as_str())
        );
        assert_eq!(
            dicts.block_ids(&pool, &block).await.unwrap().unwrap().len(),
            3
        );
        // Another day's pieces are not this block's: an error, not a body.
        assert!(get(0, day + DAY_MS).await.is_err());
        drop(conn);
        // A mask naming a field that is never stored by content (the
        // response body's, one past the fields) is damage.
        for bad in [0b1000, 0x80] {
            let (plain, _) = plain_block(
                records
                    .iter()
                    .map(|(i, p, m)| (i.as_slice(), p.as_slice(), *m | bad)),
            )
            .unwrap();
            assert!(find_in_plain_block(&plain, &[1; ID_BYTES], true).is_err());
        }
        let (plain, _) = plain_block(
            records
                .iter()
                .map(|(i, p, m)| (i.as_slice(), p.as_slice(), *m)),
        )
        .unwrap();
        // The column of masks cut off: an error. It starts after the count
        // and the ids (each a difference of its time, then 10 bytes).
        let mut ids_end = vec![records.len() as u8];
        let mut previous = 0u64;
        for (id, _, _) in &records {
            let time = id_time(id.as_slice().try_into().unwrap());
            put_varint(&mut ids_end, time.wrapping_sub(previous) & TIME_MASK);
            previous = time;
            ids_end.extend_from_slice(&id[TIME_BYTES..]);
        }
        assert_eq!(plain[..ids_end.len()], ids_end[..]);
        assert!(read_block(&plain[..ids_end.len() + 1], true).is_err());
    }

    /// The payload (before compression) of record `n` of two corpora:
    /// `bench/log_volume.sh`'s (small chat requests, one template) and a
    /// varied one (prose of random words, several protocols, realistic
    /// SDK headers).
    fn payload(corpus: u8, n: u64) -> Vec<u8> {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        let fields: [String; 5] = if corpus == 0 {
            let model = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "o3"][(h % 4) as usize];
            let (input, output) = (20 + (h >> 16) % 3000, 5 + (h >> 24) % 800);
            [
                r#"{"authorization":"[redacted]","content-type":"application/json"}"#.into(),
                r#"{"content-type":"application/json"}"#.into(),
                format!(
                    r#"{{"model":"{model}","messages":[{{"role":"user","content":"Summarise ticket {n} in two sentences, please."}}],"max_tokens":256}}"#
                ),
                format!(
                    r#"{{"id":"chatcmpl-{n}","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"The customer reports an issue; support replied with a fix."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{input},"completion_tokens":{output}}}}}"#
                ),
                String::new(),
            ]
        } else {
            const WORDS: [&str; 24] = [
                "the", "gateway", "request", "model", "answer", "stream", "token", "user",
                "report", "error", "quickly", "with", "and", "of", "retry", "provider", "latency",
                "summary", "please", "write", "function", "table", "data", "plan",
            ];
            let mut x = h | 1;
            let mut text = |words: u64| {
                let mut t = String::new();
                for _ in 0..words {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    t.push_str(WORDS[(x % 24) as usize]);
                    t.push(' ');
                }
                t
            };
            let q = text(10 + h % 60);
            let a = text(20 + (h >> 8) % 120);
            let anthropic = h.is_multiple_of(2);
            let req_id = format!("{:032x}", h.wrapping_mul(31));
            if anthropic {
                [
                    format!(
                        r#"{{"accept":"application/json","anthropic-version":"2023-06-01","content-type":"application/json","user-agent":"Anthropic/Python 0.40.0","x-api-key":"[redacted]","x-stainless-arch":"x64","x-stainless-lang":"python","x-stainless-os":"Linux","x-stainless-package-version":"0.40.0","x-stainless-retry-count":"0","x-stainless-runtime":"CPython","x-stainless-runtime-version":"3.12.{}"}}"#,
                        h % 9
                    ),
                    format!(
                        r#"{{"content-type":"application/json","request-id":"req_{req_id}","anthropic-ratelimit-requests-remaining":"{}"}}"#,
                        h % 4000
                    ),
                    format!(
                        r#"{{"model":"claude-sonnet-4","max_tokens":1024,"system":"You are a helpful assistant.","messages":[{{"role":"user","content":"{q}"}}]}}"#
                    ),
                    format!(
                        r#"{{"id":"msg_{req_id}","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{{"type":"text","text":"{a}"}}],"stop_reason":"end_turn","usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
                        h % 900,
                        h % 400
                    ),
                    String::new(),
                ]
            } else {
                [
                    format!(
                        r#"{{"authorization":"[redacted]","content-type":"application/json","user-agent":"OpenAI/Python 1.57.{}","x-stainless-lang":"python","x-stainless-os":"Linux"}}"#,
                        h % 5
                    ),
                    format!(
                        r#"{{"content-type":"application/json","x-request-id":"req_{req_id}","openai-processing-ms":"{}"}}"#,
                        h % 3000
                    ),
                    format!(
                        r#"{{"model":"gpt-4o","messages":[{{"role":"system","content":"Answer briefly."}},{{"role":"user","content":"{q}"}}],"temperature":0.{}}}"#,
                        h % 10
                    ),
                    format!(
                        r#"{{"id":"chatcmpl-{req_id}","object":"chat.completion","created":{},"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":"{a}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
                        1_700_000_000 + n,
                        h % 900,
                        h % 400,
                        h % 1300
                    ),
                    String::new(),
                ]
            }
        };
        let mut out = Vec::new();
        for f in &fields {
            put_varint(&mut out, f.len() as u64);
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    /// Bytes per row with no dictionary and with dictionaries trained on
    /// the same traffic (the first rows) or on the other corpus. Run with
    /// `cargo test --release -p llmgw-controlplane --lib
    /// logs::details::tests::dictionary_figures -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: prints figures"]
    fn dictionary_figures() {
        const TRAIN: u64 = 2000;
        const ROWS: u64 = 20_000;
        let train = |corpus: u8, size: usize| {
            let samples: Vec<Vec<u8>> = (0..TRAIN).map(|n| payload(corpus, n)).collect();
            zstd::dict::from_samples(&samples, size).unwrap()
        };
        for corpus in [0u8, 1] {
            let rows: Vec<Vec<u8>> = (TRAIN..TRAIN + ROWS).map(|n| payload(corpus, n)).collect();
            let raw: usize = rows.iter().map(Vec::len).sum();
            let mean = |dict: Option<&[u8]>| {
                let mut c = match dict {
                    Some(d) => zstd::bulk::Compressor::with_dictionary(LEVEL, d).unwrap(),
                    None => zstd::bulk::Compressor::new(LEVEL).unwrap(),
                };
                c.include_checksum(false).unwrap();
                c.include_dictid(false).unwrap();
                // The row's format byte (and a dictionary's id) included.
                let head = if dict.is_some() { 2 } else { 1 };
                let total: usize = rows
                    .iter()
                    .map(|r| c.compress(r).unwrap().len() + head)
                    .sum();
                total as f64 / ROWS as f64
            };
            println!(
                "corpus {corpus}: raw {:.1} bytes/row",
                raw as f64 / ROWS as f64
            );
            println!("  no dictionary: {:.1} bytes/row", mean(None));
            for size in [4096, 16384, 65536] {
                let own = mean(Some(&train(corpus, size)));
                let other = mean(Some(&train(1 - corpus, size)));
                println!(
                    "  dictionary of {size} B: from its own first {TRAIN} rows {own:.1} bytes/row, \
                     from the other corpus {other:.1} bytes/row"
                );
            }
        }
    }
}
