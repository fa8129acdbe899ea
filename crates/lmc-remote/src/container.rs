//! Containers in a store: opening one by its header and index, and writing
//! one as it is coded.
//!
//! A container is written front to back and then its 64-byte header again
//! at offset 0 (`lmc_core::compress` seeks back once, when it knows the
//! lengths and the hash). Where the store takes parts by number, in any
//! order (S3, GCS, Azure), [`ContainerUpload`] keeps the first part, which
//! holds the header, in memory and sends every later part as soon as it is
//! full, so coding and uploading overlap; the first part goes last. Other
//! stores (`file://`) get the container spooled to an anonymous temporary
//! file and uploaded by [`ContainerUpload::finish`]. Either way nothing is
//! visible under the key until `finish` completes, and an upload dropped
//! before that is aborted.

use std::collections::VecDeque;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use object_store::multipart::{MultipartStore, PartId};
use object_store::{MultipartId, PutPayload};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::location::Location;
use crate::object::Object;
use crate::runtime::{block_on, runtime};
use crate::upload::{PART_BYTES, PARTS_IN_FLIGHT, Upload};

impl Object {
    /// The container this object holds, opened by its header and index
    /// (two ranged reads); its chunks are then read as they are needed
    /// (`Container::read_tensor_from`, `decompress_from`, with this object
    /// as the source).
    pub fn open_container(&self) -> Result<lmc_core::Container<'static>> {
        lmc_core::Container::open_from(self).map_err(|source| Error::Container {
            url: self.url().to_string(),
            source,
        })
    }
}

/// Whether `e` came from a store, so that its message names the URL
/// already and a front end need not name the input again.
pub fn from_store(e: &lmc_core::Error) -> bool {
    matches!(e, lmc_core::Error::Io(io) if io.get_ref().is_some_and(|r| r.is::<Error>()))
}

/// A container being written to an object: `Write` and `Seek`, where a
/// seek back may reach only the first [`PART_BYTES`] (the header's place).
pub struct ContainerUpload {
    location: Location,
    sink: Sink,
}

enum Sink {
    Parts(Parts),
    Spool(std::io::BufWriter<std::fs::File>),
    /// Finished or aborted.
    Done,
}

/// A multipart upload with numbered parts: part 0 held back, the others
/// sent as they fill.
struct Parts {
    store: Arc<dyn MultipartStore>,
    id: MultipartId,
    /// Bytes `0..PART_BYTES` of the object: part 0, sent by `finish`.
    head: Vec<u8>,
    /// The part being filled, number `next`.
    tail: Vec<u8>,
    next: usize,
    /// Parts sent and not yet answered, in order.
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    /// Parts 1.. answered, in order.
    done: Vec<PartId>,
    pos: u64,
    len: u64,
}

impl ContainerUpload {
    /// Starts writing a container to `url`.
    pub fn create(url: &str) -> Result<ContainerUpload> {
        ContainerUpload::to(Location::parse(url)?)
    }

    pub fn to(location: Location) -> Result<ContainerUpload> {
        if !location.is_writable() {
            return Err(crate::upload::read_only(&location));
        }
        let sink = match &location.multipart {
            Some(store) => {
                let id = block_on(store.create_multipart(&location.path))
                    .map_err(location.err("start an upload"))?;
                Sink::Parts(Parts {
                    store: store.clone(),
                    id,
                    head: Vec::new(),
                    tail: Vec::new(),
                    next: 1,
                    in_flight: VecDeque::new(),
                    done: Vec::new(),
                    pos: 0,
                    len: 0,
                })
            }
            None => {
                let f = tempfile::tempfile().map_err(|source| Error::Io {
                    url: location.url().to_string(),
                    what: "cannot create a temporary file to hold the upload",
                    source,
                })?;
                Sink::Spool(std::io::BufWriter::with_capacity(1 << 20, f))
            }
        };
        Ok(ContainerUpload { location, sink })
    }

    pub fn url(&self) -> &str {
        self.location.url()
    }

    /// Sends what is left and completes the upload: only now does the
    /// object appear under its key. Returns its length.
    pub fn finish(mut self) -> Result<u64> {
        let loc = self.location.clone();
        match std::mem::replace(&mut self.sink, Sink::Done) {
            Sink::Parts(mut p) => {
                let result = p.finish(&loc);
                if result.is_err() {
                    p.abort(&loc);
                }
                result
            }
            Sink::Spool(w) => {
                let io = |what: &'static str| {
                    let url = loc.url().to_string();
                    move |source| Error::Io { url, what, source }
                };
                let mut f = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .map_err(io("cannot write the spooled upload"))?;
                f.seek(SeekFrom::Start(0))
                    .map_err(io("cannot read back the spooled upload"))?;
                let mut up = Upload::to(loc.clone())?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = std::io::Read::read(&mut f, &mut buf)
                        .map_err(io("cannot read back the spooled upload"))?;
                    if n == 0 {
                        break;
                    }
                    up.write_all(&buf[..n]).map_err(io("cannot upload"))?;
                }
                let n = up.written();
                up.finish()?;
                Ok(n)
            }
            Sink::Done => unreachable!("finish takes the upload"),
        }
    }
}

impl Parts {
    /// Sends `part` as part number `self.next`, waiting first while
    /// [`PARTS_IN_FLIGHT`] are (this bounds the memory).
    fn send(&mut self, loc: &Location, part: Vec<u8>) -> Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.settle_one(loc)?;
        }
        let (store, path, id, idx) = (
            self.store.clone(),
            loc.path.clone(),
            self.id.clone(),
            self.next,
        );
        self.next += 1;
        self.in_flight.push_back(runtime().spawn(async move {
            store
                .put_part(&path, &id, idx, PutPayload::from(part))
                .await
        }));
        Ok(())
    }

    /// Waits for the oldest part in flight.
    fn settle_one(&mut self, loc: &Location) -> Result<()> {
        if let Some(h) = self.in_flight.pop_front() {
            let part = block_on(h)
                .map_err(|e| Error::Io {
                    url: loc.url().to_string(),
                    what: "a part's upload task ended early",
                    source: std::io::Error::other(e),
                })?
                .map_err(loc.err("upload a part"))?;
            self.done.push(part);
        }
        Ok(())
    }

    fn append(&mut self, loc: &Location, mut buf: &[u8]) -> Result<()> {
        if self.head.len() < PART_BYTES {
            let n = buf.len().min(PART_BYTES - self.head.len());
            self.head.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
        }
        while !buf.is_empty() {
            let n = buf.len().min(PART_BYTES - self.tail.len());
            self.tail.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.tail.len() == PART_BYTES {
                let part = std::mem::replace(&mut self.tail, Vec::with_capacity(PART_BYTES));
                self.send(loc, part)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, loc: &Location) -> Result<u64> {
        if !self.tail.is_empty() {
            let part = std::mem::take(&mut self.tail);
            self.send(loc, part)?;
        }
        while !self.in_flight.is_empty() {
            self.settle_one(loc)?;
        }
        let head = std::mem::take(&mut self.head);
        let first = block_on(
            self.store
                .put_part(&loc.path, &self.id, 0, PutPayload::from(head)),
        )
        .map_err(loc.err("upload a part"))?;
        let mut parts = Vec::with_capacity(self.done.len() + 1);
        parts.push(first);
        parts.append(&mut self.done);
        block_on(self.store.complete_multipart(&loc.path, &self.id, parts))
            .map_err(loc.err("complete the upload"))?;
        Ok(self.len)
    }

    /// Best effort: a store that cannot be reached keeps the parts until
    /// its lifecycle rules remove them, but never shows them as an object.
    fn abort(&mut self, loc: &Location) {
        for h in self.in_flight.drain(..) {
            h.abort();
        }
        let _ = block_on(self.store.abort_multipart(&loc.path, &self.id));
    }
}

impl Write for ContainerUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let loc = &self.location;
        match &mut self.sink {
            Sink::Spool(w) => w.write(buf),
            Sink::Done => Err(std::io::Error::other(format!(
                "{}: the upload is over",
                loc.url()
            ))),
            Sink::Parts(p) => {
                if p.pos == p.len {
                    p.append(loc, buf)?;
                    p.len += buf.len() as u64;
                } else {
                    // A rewrite of what was written: only within part 0,
                    // which is still here.
                    let start = p.pos as usize;
                    let dst = start
                        .checked_add(buf.len())
                        .and_then(|end| p.head.get_mut(start..end))
                        .ok_or_else(|| {
                            std::io::Error::new(
                                std::io::ErrorKind::Unsupported,
                                format!(
                                    "{}: an upload can rewrite only its first {PART_BYTES} bytes",
                                    loc.url()
                                ),
                            )
                        })?;
                    dst.copy_from_slice(buf);
                }
                p.pos += buf.len() as u64;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Spool(w) => w.flush(),
            _ => Ok(()),
        }
    }
}

impl Seek for ContainerUpload {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match &mut self.sink {
            Sink::Spool(w) => w.seek(pos),
            Sink::Done => Err(std::io::Error::other("the upload is over")),
            Sink::Parts(p) => {
                let to = match pos {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::End(d) => p.len.checked_add_signed(d),
                    SeekFrom::Current(d) => p.pos.checked_add_signed(d),
                };
                match to {
                    Some(n) if n <= p.len => {
                        p.pos = n;
                        Ok(n)
                    }
                    _ => Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "{}: a seek outside the {} bytes written",
                            self.location.url(),
                            p.len
                        ),
                    )),
                }
            }
        }
    }
}

impl Drop for ContainerUpload {
    fn drop(&mut self) {
        // Not finished: an error or a cancel.
        if let Sink::Parts(p) = &mut self.sink {
            p.abort(&self.location);
        }
    }
}
