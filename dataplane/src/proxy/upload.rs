//! A multipart upload on its way through: one task (the pump) reads the
//! client's body as it arrives, checks its size against
//! `--max-upload-bytes`, reads its framing ([`super::multipart`]) and tees
//! it into a replay buffer: the first [`MEMORY_BYTES`] in memory, the rest
//! in an unlinked temporary file (deleted when the last handle closes,
//! even after a crash). Each attempt's body ([`Replay`]) reads that buffer
//! from the start, waiting at its end for the pump, with the `model` part's
//! value replaced by the target's upstream model: the first attempt
//! streams the upload as it arrives, and a failover sends the whole upload
//! again, byte for byte. The request waits only for the `model` part
//! (routing needs it); memory per upload is bounded by the memory part
//! and a chunk per reader, whatever the upload's size. The temporary
//! files of all uploads together hold at most `--max-upload-spool-bytes`
//! ([`Spool`]): an upload that would pass it is refused with 503 (each
//! upload's share is reserved as its file grows, or at once from its
//! `content-length`, and given back when its last handle is dropped).
//! Each replay reports how far it has been sent ([`Sending`]): an
//! attempt's first-byte clock starts once its body is all sent. Once the
//! request is over, [`Audio`] reads the uploaded file back for a
//! measurement of its duration ([`super::duration`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, watch};

use super::error::ErrorKind;
use super::multipart::{self, ModelPart, Parser};
use crate::server::BoxError;

/// What of an upload is kept in memory before the rest goes to a file.
pub const MEMORY_BYTES: usize = 256 * 1024;
/// Largest piece an attempt's body reads at once.
const READ_BYTES: usize = 64 * 1024;
/// Beyond the memory part, the pump writes the file in blocks of at least
/// this much (and what is left at the end): a client sending many tiny
/// chunks costs one blocking write per block, not one per chunk.
const FILE_BLOCK: usize = 64 * 1024;

/// The file reads and writes of all uploads, at most this many at once
/// on the blocking pool: each blocking thread costs memory (its stack and
/// its allocator heap), and a few keep up with the network.
static FILE_IO: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Runs one file read or write on the blocking pool, within [`FILE_IO`].
async fn file_io<T: Send + 'static>(
    job: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Failed> {
    let _permit = FILE_IO
        .acquire()
        .await
        .map_err(|e| io_failed(&e.to_string()))?;
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| io_failed(&e.to_string()))?
        .map_err(|e| io_failed(&e.to_string()))
}

/// Default of `--max-upload-spool-bytes`: the temporary-file bytes of all
/// uploads in flight together (1 GiB: forty uploads of OpenAI's 25 MiB).
pub const DEFAULT_MAX_UPLOAD_SPOOL_BYTES: u64 = 1 << 30;

/// What the replay files of all uploads hold at once, against
/// `--max-upload-spool-bytes`: one counter, each upload's share reserved
/// before its bytes are written and given back when it is dropped.
#[derive(Debug)]
pub struct Spool {
    used: AtomicU64,
    cap: u64,
}

impl Spool {
    pub fn new(cap: u64) -> Arc<Spool> {
        Arc::new(Spool {
            used: AtomicU64::new(0),
            cap,
        })
    }

    /// Bytes reserved by the uploads in flight.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` more bytes, unless that would pass the cap.
    fn reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.cap)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Why an upload could not be read: the error the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failed {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Failed {
        Failed {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

/// How far the pump has got.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Bytes received and stored.
    len: u64,
    /// The body has ended, read whole.
    done: bool,
    failed: Option<Failed>,
}

/// The stored bytes: the memory part in one buffer (however small the
/// client's chunks), the rest in the file.
struct Store {
    memory: Mutex<Vec<u8>>,
    file: Mutex<Option<Arc<File>>>,
    spool: Arc<Spool>,
    /// The file's bytes reserved in the spool, given back on drop.
    reserved: AtomicU64,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.spool.release(*self.reserved.get_mut());
    }
}

impl Store {
    fn new(spool: Arc<Spool>) -> Store {
        Store {
            memory: Mutex::new(Vec::new()),
            file: Mutex::new(None),
            spool,
            reserved: AtomicU64::new(0),
        }
    }

    /// Reserves the spool for a file of `len` bytes (what is reserved
    /// already counts).
    fn reserve_file(&self, len: u64) -> Result<(), Failed> {
        let have = self.reserved.load(Ordering::Acquire);
        if len <= have {
            return Ok(());
        }
        if !self.spool.reserve(len - have) {
            return Err(spool_full(self.spool.cap));
        }
        self.reserved.fetch_add(len - have, Ordering::AcqRel);
        Ok(())
    }

    /// Reads the stored bytes at `pos` into `buf`, on the calling thread
    /// (a blocking one): 0 at the end of what is stored.
    fn read_blocking(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if pos < MEMORY_BYTES as u64 {
            let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            let from = (pos as usize).min(memory.len());
            let n = buf.len().min(memory.len() - from);
            buf[..n].copy_from_slice(&memory[from..from + n]);
            return Ok(n);
        }
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match file {
            Some(f) => f.read_at(buf, pos - MEMORY_BYTES as u64),
            None => Ok(0),
        }
    }

    /// Reads up to `max` stored bytes at `pos` (below what the pump has
    /// announced).
    async fn read(&self, pos: u64, max: usize) -> Result<Bytes, Failed> {
        if pos < MEMORY_BYTES as u64 {
            let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            let from = pos as usize;
            let to = memory.len().min(from.saturating_add(max));
            return match memory.get(from..to) {
                Some(piece) if !piece.is_empty() => Ok(Bytes::copy_from_slice(piece)),
                _ => Err(io_failed("a read past the memory part")),
            };
        }
        let file = self
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| io_failed("a read past the memory part before the file exists"))?;
        let at = pos - MEMORY_BYTES as u64;
        // Allocated here, not on the blocking thread: each of those would
        // keep a heap of its own.
        let mut buf = vec![0u8; max];
        file_io(move || {
            let n = file.read_at(&mut buf, at)?;
            buf.truncate(n);
            Ok(Bytes::from(buf))
        })
        .await
        .and_then(|b| {
            if b.is_empty() {
                Err(io_failed("short read"))
            } else {
                Ok(b)
            }
        })
    }

    /// Appends a chunk at `pos`.
    async fn write(&self, pos: u64, chunk: Bytes) -> Result<(), Failed> {
        let mut chunk = chunk;
        if pos < MEMORY_BYTES as u64 {
            let room = MEMORY_BYTES - pos as usize;
            // A copy: a slice would keep the whole of hyper's read buffer.
            let head = room.min(chunk.len());
            self.memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&chunk[..head]);
            chunk = chunk.slice(head..);
            if chunk.is_empty() {
                return Ok(());
            }
        }
        let at = pos.max(MEMORY_BYTES as u64) - MEMORY_BYTES as u64;
        self.reserve_file(at + chunk.len() as u64)?;
        let existing = self.file.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let file = match existing {
            Some(f) => f,
            None => {
                let f = file_io(tempfile::tempfile).await?;
                let f = Arc::new(f);
                *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&f));
                f
            }
        };
        file_io(move || file.write_all_at(&chunk, at)).await
    }
}

fn spool_full(cap: u64) -> Failed {
    Failed::new(
        ErrorKind::UploadCapacity,
        format!(
            "the gateway is buffering too many uploads to take this one \
             ({cap} bytes in all, its --max-upload-spool-bytes); retry shortly"
        ),
    )
}

fn io_failed(e: &str) -> Failed {
    crate::warn_limited!(error = %e, "an upload could not be buffered for replay");
    Failed::new(
        ErrorKind::UpstreamUnavailable,
        "the gateway could not buffer the upload",
    )
}

/// How far an attempt's body has been sent: what its first-byte clock
/// waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sending {
    /// Pieces handed to the connection so far.
    pub pieces: u64,
    /// The last piece is with the connection, which has not asked for the
    /// next: the upstream is taking it (or not).
    pub holding: bool,
    /// The whole body has been handed to the connection.
    pub done: bool,
}

/// One upload, as the request sees it.
pub struct Upload {
    store: Arc<Store>,
    progress: watch::Receiver<Progress>,
    parser: Arc<Mutex<Parser>>,
    /// The client's `content-length`, when it gave one.
    length: Option<u64>,
}

/// The pump reading an upload: stopped when the request is over.
pub struct Pumping {
    stop: Option<oneshot::Sender<()>>,
    pump: Option<tokio::task::JoinHandle<()>>,
}

impl Pumping {
    /// Stops reading the client's body (its rest is not needed once an
    /// upstream has answered) and waits until the pump has let it go, so
    /// that the server decides the connection's fate with it back.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(p) = self.pump.take() {
            let _ = p.await;
        }
    }
}

impl Drop for Pumping {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Upload {
    /// Starts reading `body`: refused at once when its content type is
    /// not a multipart form or its stated length is over `limit`.
    /// Its temporary file is reserved in `spool`, at once for the
    /// stated length beyond the memory part (refused when that does not
    /// fit), else as it grows.
    pub fn start<B>(
        headers: &HeaderMap,
        body: B,
        limit: u64,
        spool: &Arc<Spool>,
    ) -> Result<(Upload, Pumping), Failed>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError> + Send,
    {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let boundary =
            multipart::boundary(content_type).map_err(|m| Failed::new(ErrorKind::BadRequest, m))?;
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let store = Arc::new(Store::new(Arc::clone(spool)));
        if let Some(n) = length {
            store.reserve_file(n.saturating_sub(MEMORY_BYTES as u64))?;
        }
        let parser = Arc::new(Mutex::new(Parser::new(&boundary)));
        let (tx, rx) = watch::channel(Progress::default());
        let (stop, stopped) = oneshot::channel();
        let pump = tokio::spawn(pump(
            body,
            Arc::clone(&store),
            Arc::clone(&parser),
            tx,
            stopped,
            limit,
        ));
        Ok((
            Upload {
                store,
                progress: rx,
                parser,
                length,
            },
            Pumping {
                stop: Some(stop),
                pump: Some(pump),
            },
        ))
    }

    /// Waits for the `model` part (the request cannot be routed before).
    pub async fn model(&mut self) -> Result<ModelPart, Failed> {
        loop {
            if let Some(m) = self.lock_parser().model() {
                return Ok(m.clone());
            }
            let p = self.progress.borrow_and_update().clone();
            if let Some(f) = p.failed {
                return Err(f);
            }
            if p.done {
                return Err(Failed::new(
                    ErrorKind::BadRequest,
                    "the multipart body has no 'model' field",
                ));
            }
            if self.progress.changed().await.is_err() {
                return Err(self.failure().unwrap_or_else(|| {
                    Failed::new(ErrorKind::BadRequest, "could not read the request body")
                }));
            }
        }
    }

    fn lock_parser(&self) -> std::sync::MutexGuard<'_, Parser> {
        self.parser.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The form as read so far (fields capped, files described).
    pub fn summary(&self) -> serde_json::Value {
        self.lock_parser().summary()
    }

    /// A view of the form for the log once the request is over.
    pub fn form(&self) -> Form {
        Form(Arc::clone(&self.parser))
    }

    /// Why the upload failed, if it did (over the limit, too slow, not a
    /// well-formed form).
    pub fn failure(&self) -> Option<Failed> {
        self.progress.borrow().failed.clone()
    }

    /// The uploaded file, for a measurement once the request is over.
    pub fn audio(&self) -> Audio {
        Audio {
            store: Arc::clone(&self.store),
            progress: self.progress.clone(),
            parser: Arc::clone(&self.parser),
        }
    }

    /// A body that sends the upload from its start with the `model`
    /// part's value replaced by `model`, reporting its progress to
    /// `sending` (reset here).
    pub fn replay(
        &self,
        part: &ModelPart,
        model: &str,
        sending: Option<Arc<watch::Sender<Sending>>>,
    ) -> Replay {
        if let Some(s) = &sending {
            s.send_replace(Sending::default());
        }
        let replacement = Bytes::copy_from_slice(model.as_bytes());
        let length = self
            .length
            .map(|n| n.saturating_sub(part.end - part.start) + replacement.len() as u64);
        let state = Reader {
            store: Arc::clone(&self.store),
            progress: self.progress.clone(),
            pos: 0,
            model: (part.start, part.end),
            replacement: Some(replacement),
            sending,
        };
        let stream = futures::stream::unfold(state, |mut r| async move {
            let next = r.next().await?;
            Some((next.map(Frame::data).map_err(BoxError::from), r))
        });
        Replay {
            stream: stream.boxed(),
            length,
        }
    }

    /// Resolves when the upload fails (never, if it does not): an
    /// attempt in progress ends at once with the upload's error.
    pub async fn failed(&self) -> Failed {
        let mut rx = self.progress.clone();
        loop {
            if let Some(f) = rx.borrow_and_update().failed.clone() {
                return f;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The form of an upload, read when its record is finished.
#[derive(Clone)]
pub struct Form(Arc<Mutex<Parser>>);

impl Form {
    pub fn summary(&self) -> serde_json::Value {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).summary()
    }
}

/// A finished upload's stored bytes, kept for the measurement of its
/// audio's duration ([`super::duration`]) after the response.
pub struct Audio {
    store: Arc<Store>,
    progress: watch::Receiver<Progress>,
    parser: Arc<Mutex<Parser>>,
}

impl Audio {
    /// The audio file (the `file` part, else the first file) as a
    /// seekable reader, and its file name; an error when the upload was
    /// not received whole or has no file.
    pub fn file(&self) -> Result<(UploadFile, String), String> {
        let p = self.progress.borrow().clone();
        if !p.done {
            return Err("the upload was not received whole".into());
        }
        let parser = self.parser.lock().unwrap_or_else(|e| e.into_inner());
        let f = parser
            .file_part("file")
            .ok_or_else(|| "the upload has no file".to_string())?;
        Ok((
            UploadFile {
                store: Arc::clone(&self.store),
                start: f.start,
                len: f.size,
                pos: 0,
            },
            f.filename.clone(),
        ))
    }
}

/// One file part of a stored upload, read on a blocking thread.
pub struct UploadFile {
    store: Arc<Store>,
    /// Where the part's contents start in the body, and their length.
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for UploadFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self
            .store
            .read_blocking(self.start + self.pos, &mut buf[..max])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for UploadFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = at.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "a seek before the start")
        })?;
        Ok(self.pos)
    }
}

impl UploadFile {
    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
}

fn too_large(limit: u64) -> Failed {
    Failed::new(
        ErrorKind::BodyTooLarge,
        format!("the upload is larger than {limit} bytes (the gateway's --max-upload-bytes)"),
    )
}

/// Reads the client's body into the store until its end, the limit, an
/// error or a stop.
async fn pump<B>(
    mut body: B,
    store: Arc<Store>,
    parser: Arc<Mutex<Parser>>,
    tx: watch::Sender<Progress>,
    mut stopped: oneshot::Receiver<()>,
    limit: u64,
) where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    // Received (counted against the limit), and stored (what readers may
    // read): beyond the memory part, chunks gather in `block` first.
    let mut len = 0u64;
    let mut stored = 0u64;
    let mut block = bytes::BytesMut::new();
    let failed = loop {
        let frame = tokio::select! {
            biased;
            _ = &mut stopped => return,
            f = body.frame() => f,
        };
        let chunk = match frame {
            None => {
                let end = parser
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .finish()
                    .map_err(|m| Failed::new(ErrorKind::BadRequest, m));
                if let Err(f) = end {
                    break f;
                }
                if !block.is_empty() {
                    if let Err(f) = store.write(stored, block.split().freeze()).await {
                        break f;
                    }
                }
                tx.send_modify(|p| {
                    p.len = len;
                    p.done = true;
                });
                return;
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                break if let Some(slow) = e.downcast_ref::<llmgw_listener::SlowBody>() {
                    Failed::new(ErrorKind::BodyTimeout, slow.to_string())
                } else {
                    Failed::new(ErrorKind::BadRequest, "could not read the request body")
                };
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        if chunk.is_empty() {
            continue;
        }
        if len + chunk.len() as u64 > limit {
            break too_large(limit);
        }
        let parsed = parser
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .feed(&chunk);
        if let Err(m) = parsed {
            break Failed::new(ErrorKind::BadRequest, format!("the multipart body: {m}"));
        }
        len += chunk.len() as u64;
        let write = if stored < MEMORY_BYTES as u64 && block.is_empty() {
            Some(chunk)
        } else {
            block.extend_from_slice(&chunk);
            (block.len() >= FILE_BLOCK).then(|| block.split().freeze())
        };
        if let Some(bytes) = write {
            if let Err(f) = store.write(stored, bytes).await {
                break f;
            }
            stored = len;
            tx.send_modify(|p| p.len = stored);
        }
    };
    // The client's body goes back to the server before anyone hears of
    // the failure: it then closes the connection, with notice, after the
    // error answer, without reading the rest.
    drop(body);
    tx.send_modify(|p| p.failed = Some(failed));
}

/// One attempt's reading position.
struct Reader {
    store: Arc<Store>,
    progress: watch::Receiver<Progress>,
    pos: u64,
    /// The `model` value's range, replaced by `replacement` once.
    model: (u64, u64),
    replacement: Option<Bytes>,
    sending: Option<Arc<watch::Sender<Sending>>>,
}

impl Reader {
    /// The next piece, with the attempt told how far the body is sent.
    async fn next(&mut self) -> Option<Result<Bytes, Failed>> {
        if let Some(s) = &self.sending {
            // Asked for more: the connection took the last piece.
            s.send_if_modified(|s| std::mem::replace(&mut s.holding, false));
        }
        let next = self.read().await;
        if let Some(s) = &self.sending {
            let end = match &next {
                None => true,
                Some(Ok(_)) => self.at_end(),
                Some(Err(_)) => false,
            };
            s.send_modify(|s| {
                if next.is_some() {
                    s.pieces += 1;
                    s.holding = true;
                }
                s.done |= end;
            });
        }
        next
    }

    /// Whether every byte of the whole upload has been read.
    fn at_end(&self) -> bool {
        let p = self.progress.borrow();
        p.done && self.pos >= p.len && self.replacement.is_none()
    }

    async fn read(&mut self) -> Option<Result<Bytes, Failed>> {
        loop {
            if self.pos == self.model.0 {
                if let Some(r) = self.replacement.take() {
                    self.pos = self.model.1;
                    if !r.is_empty() {
                        return Some(Ok(r));
                    }
                    continue;
                }
            }
            let p = self.progress.borrow_and_update().clone();
            if let Some(f) = p.failed {
                return Some(Err(f));
            }
            if self.pos < p.len {
                let until = if self.pos < self.model.0 {
                    self.model.0.min(p.len)
                } else {
                    p.len
                };
                let max = (until - self.pos).min(READ_BYTES as u64) as usize;
                return Some(match self.store.read(self.pos, max).await {
                    Ok(b) => {
                        self.pos += b.len() as u64;
                        Ok(b)
                    }
                    Err(f) => Err(f),
                });
            }
            if p.done {
                return None;
            }
            if self.progress.changed().await.is_err() {
                // The pump stopped before the end: the request is over.
                return Some(Err(Failed::new(
                    ErrorKind::BadRequest,
                    "the upload was not read to its end",
                )));
            }
        }
    }
}

/// An attempt's upload body; its length is known when the client's was.
pub struct Replay {
    stream: BoxStream<'static, Result<Frame<Bytes>, BoxError>>,
    length: Option<u64>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.stream.poll_next_unpin(cx)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Chunks =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

    /// A client body of `chunks`.
    fn client(chunks: Vec<Vec<u8>>) -> Chunks {
        StreamBody::new(futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok(Frame::data(Bytes::from(c))))
                .collect::<Vec<_>>(),
        ))
    }

    fn form(model: &str, file: &[u8]) -> Vec<u8> {
        let mut b =
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
                .to_vec();
        b.extend_from_slice(file);
        b.extend_from_slice(b"\r\n--XX\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n");
        b.extend_from_slice(model.as_bytes());
        b.extend_from_slice(b"\r\n--XX--\r\n");
        b
    }

    fn unlimited() -> Arc<Spool> {
        Spool::new(u64::MAX)
    }

    fn headers(len: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("multipart/form-data; boundary=XX"),
        );
        if let Some(n) = len {
            h.insert(http::header::CONTENT_LENGTH, n.into());
        }
        h
    }

    /// `len` bytes counting up modulo `m`.
    fn pattern(len: usize, m: usize) -> Vec<u8> {
        (0..len).map(|i| (i % m) as u8).collect()
    }

    /// An upload of `body` in pieces of `chunk` bytes, its length stated,
    /// read up to its `model` part.
    async fn uploaded(body: &[u8], chunk: usize) -> (Upload, Pumping, ModelPart) {
        let chunks: Vec<Vec<u8>> = body.chunks(chunk).map(<[u8]>::to_vec).collect();
        let (mut up, pumping) = Upload::start(
            &headers(Some(body.len())),
            client(chunks),
            1 << 30,
            &unlimited(),
        )
        .unwrap();
        let part = up.model().await.unwrap();
        (up, pumping, part)
    }

    async fn read(body: Replay) -> Result<(Vec<u8>, Option<u64>), BoxError> {
        let hint = body.size_hint().exact();
        let bytes = body.collect().await?.to_bytes();
        Ok((bytes.to_vec(), hint))
    }

    #[tokio::test]
    async fn every_attempt_replays_the_whole_upload_with_its_model() {
        // A file larger than the memory part, then the model: the request
        // waits for it; each replay sends every byte, but the model's.
        let file = pattern(MEMORY_BYTES * 2 + 5, 253);
        let body = form("client-model", &file);
        let (up, pumping, part) = uploaded(&body, 7_777).await;
        assert_eq!(part.value, "client-model");
        for model in ["a", "a-much-longer-upstream-model"] {
            let (got, hint) = read(up.replay(&part, model, None)).await.unwrap();
            assert_eq!(got, form(model, &file));
            assert_eq!(hint, Some(got.len() as u64));
        }
        assert_eq!(up.form().summary()["file"]["bytes"], file.len());
        pumping.stop().await;
    }

    #[tokio::test]
    async fn tiny_chunks_are_stored_in_one_buffer_and_written_in_blocks() {
        // One byte a chunk, past the memory part: the memory part is one
        // buffer of its size, and the file is written in blocks.
        let file = pattern(MEMORY_BYTES + 3 * FILE_BLOCK + 11, 241);
        let body = form("m", &file);
        let (up, pumping, part) = uploaded(&body, 1).await;
        let (got, _) = read(up.replay(&part, "upstream", None)).await.unwrap();
        assert_eq!(got, form("upstream", &file));
        assert_eq!(up.store.memory.lock().unwrap().len(), MEMORY_BYTES);
        pumping.stop().await;
    }

    #[tokio::test]
    async fn an_upload_over_the_limit_fails_its_replays() {
        let file = vec![7u8; 100_000];
        let mut body =
            b"--XX\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n".to_vec();
        body.extend_from_slice(&form("x", &file));
        let chunks: Vec<Vec<u8>> = body.chunks(1000).map(<[u8]>::to_vec).collect();
        let (mut up, _pumping) =
            Upload::start(&headers(None), client(chunks), 50_000, &unlimited()).unwrap();
        let part = up.model().await.unwrap();
        let err = read(up.replay(&part, "up", None)).await.unwrap_err();
        assert!(err.to_string().contains("larger than 50000 bytes"), "{err}");
        assert_eq!(up.failure().map(|f| f.kind), Some(ErrorKind::BodyTooLarge));
        // A stated length over the limit is refused at once.
        let refused = Upload::start(&headers(Some(50_001)), client(vec![]), 50_000, &unlimited());
        assert_eq!(refused.err().map(|f| f.kind), Some(ErrorKind::BodyTooLarge));
        // As is a body that is not a form.
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let refused = Upload::start(&h, client(vec![]), 50_000, &unlimited());
        assert_eq!(refused.err().map(|f| f.kind), Some(ErrorKind::BadRequest));
    }

    #[tokio::test]
    async fn a_form_without_a_model_or_unclosed_is_a_bad_request() {
        let (mut up, _p) = Upload::start(
            &headers(None),
            client(vec![
                b"--XX\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n1\r\n--XX--".to_vec(),
            ]),
            1000,
            &unlimited(),
        )
        .unwrap();
        let f = up.model().await.unwrap_err();
        assert_eq!(f.kind, ErrorKind::BadRequest);
        assert!(f.message.contains("no 'model'"), "{f}");
        let (mut up, _p) = Upload::start(
            &headers(None),
            client(vec![
                b"--XX\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n1".to_vec(),
            ]),
            1000,
            &unlimited(),
        )
        .unwrap();
        let f = up.model().await.unwrap_err();
        assert!(f.message.contains("closing boundary"), "{f}");
    }

    #[tokio::test]
    async fn the_store_spills_to_a_file_and_reads_back_every_byte() {
        let store = Store::new(unlimited());
        let data: Vec<u8> = (0..MEMORY_BYTES * 3 + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut pos = 0;
        for chunk in data.chunks(10_007) {
            store
                .write(pos as u64, Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
            pos += chunk.len();
        }
        assert!(store.file.lock().unwrap().is_some());
        let mut back = Vec::new();
        while back.len() < data.len() {
            let max = (data.len() - back.len()).min(READ_BYTES);
            let b = store.read(back.len() as u64, max).await.unwrap();
            back.extend_from_slice(&b);
        }
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn the_spool_caps_the_files_of_all_uploads_and_gets_them_back() {
        let spool = Spool::new(100_000);
        let file = vec![1u8; MEMORY_BYTES + 80_000];
        let body = form("m", &file);
        // A stated length reserves its file at once: 80,000 bytes and the
        // form's framing.
        let chunks: Vec<Vec<u8>> = body.chunks(50_000).map(<[u8]>::to_vec).collect();
        let (mut a, pumping_a) =
            Upload::start(&headers(Some(body.len())), client(chunks), 1 << 30, &spool).unwrap();
        let reserved = (body.len() - MEMORY_BYTES) as u64;
        assert_eq!(spool.used(), reserved);
        // Another that says it needs more than is left: refused before a
        // byte is read.
        let other = form("m", &vec![2u8; MEMORY_BYTES + 30_000]);
        let refused = Upload::start(&headers(Some(other.len())), client(vec![]), 1 << 30, &spool);
        let f = refused.err().unwrap();
        assert_eq!(f.kind, ErrorKind::UploadCapacity);
        assert!(f.message.contains("--max-upload-spool-bytes"), "{f}");
        // One without a length fails once its file would pass the cap.
        let chunks: Vec<Vec<u8>> = other.chunks(10_000).map(<[u8]>::to_vec).collect();
        let (mut c, _pumping_c) =
            Upload::start(&headers(None), client(chunks), 1 << 30, &spool).unwrap();
        let part = c.model().await.unwrap();
        let err = read(c.replay(&part, "up", None)).await.unwrap_err();
        assert!(err.to_string().contains("too many uploads"), "{err}");
        assert_eq!(c.failure().map(|f| f.kind), Some(ErrorKind::UploadCapacity));
        // The first is whole, and every byte of it replays.
        let part = a.model().await.unwrap();
        let (got, _) = read(a.replay(&part, "up", None)).await.unwrap();
        assert_eq!(got, form("up", &file));
        // Dropped, each gives its share back.
        drop(c);
        assert_eq!(spool.used(), reserved);
        pumping_a.stop().await;
        drop(a);
        assert_eq!(spool.used(), 0);
    }

    #[tokio::test]
    async fn a_replay_says_how_far_it_has_been_sent() {
        let file = pattern(READ_BYTES * 3, 249);
        let body = form("m", &file);
        let (up, pumping, part) = uploaded(&body, READ_BYTES).await;
        let (tx, rx) = watch::channel(Sending::default());
        let tx = Arc::new(tx);
        let mut replay = up.replay(&part, "up", Some(Arc::clone(&tx)));
        assert_eq!(*rx.borrow(), Sending::default());
        let mut sent = Vec::new();
        let first = replay.frame().await.unwrap().unwrap().into_data().unwrap();
        sent.extend_from_slice(&first);
        // A piece handed over: the connection's turn, not done.
        assert_eq!(
            *rx.borrow(),
            Sending {
                pieces: 1,
                holding: true,
                done: false
            }
        );
        while let Some(f) = replay.frame().await {
            sent.extend_from_slice(&f.unwrap().into_data().unwrap());
            if rx.borrow().done {
                break;
            }
        }
        // Done with its last piece, every byte sent.
        assert!(rx.borrow().done);
        assert_eq!(sent, form("up", &file));
        // The next replay starts over.
        let _again = up.replay(&part, "up", Some(tx));
        assert_eq!(*rx.borrow(), Sending::default());
        pumping.stop().await;
    }

    #[tokio::test]
    async fn the_uploaded_file_reads_back_from_memory_and_file() {
        use std::io::{Read as _, Seek as _};
        let file = pattern(MEMORY_BYTES * 2 + 333, 239);
        let body = form("m", &file);
        let (up, pumping, part) = uploaded(&body, 40_000).await;
        let audio = up.audio();
        // Read whole through a replay: the upload is then all stored.
        read(up.replay(&part, "up", None)).await.unwrap();
        let (mut f, name) = audio.file().unwrap();
        assert_eq!((name.as_str(), f.len()), ("a.wav", file.len() as u64));
        let back = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            f.read_to_end(&mut all).unwrap();
            f.seek(SeekFrom::End(-10)).unwrap();
            let mut tail = Vec::new();
            f.read_to_end(&mut tail).unwrap();
            assert!(f.seek(SeekFrom::Current(-100)).is_ok());
            assert!(f
                .seek(SeekFrom::Start(0))
                .and_then(|_| f.seek(SeekFrom::Current(-1)))
                .is_err());
            (all, tail)
        })
        .await
        .unwrap();
        assert_eq!(back.0, file);
        assert_eq!(back.1, file[file.len() - 10..]);
        pumping.stop().await;
    }
}
