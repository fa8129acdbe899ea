//! Reading an object: its length, ranges of it several at a time, or all
//! of it as a stream.

use std::io::Write;
use std::ops::Range;

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::location::Location;
use crate::runtime::block_on;

/// Ranged requests in flight at once for one read.
const CONCURRENT_RANGES: usize = 8;

/// An object in a store, looked up (its length known), read on demand.
#[derive(Debug, Clone)]
pub struct Object {
    location: Location,
    len: u64,
}

impl Object {
    /// Looks up the object at `url` (one HEAD request).
    pub fn open(url: &str) -> Result<Object> {
        Object::at(Location::parse(url)?)
    }

    /// Looks up the object at `location` (from [`Location::parse_with`]).
    pub fn at(location: Location) -> Result<Object> {
        let meta = block_on(location.store.head(&location.path))
            .map_err(location.err("open the object"))?;
        Ok(Object {
            len: meta.size,
            location,
        })
    }

    pub fn url(&self) -> &str {
        self.location.url()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads each range (within the object), up to eight requests in
    /// flight; an answer of another length than asked for is an error.
    pub fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let loc = &self.location;
        for r in ranges {
            if r.start > r.end || r.end > self.len {
                return Err(Error::OutOfRange {
                    url: loc.url().to_string(),
                    start: r.start,
                    end: r.end,
                    len: self.len,
                });
            }
        }
        block_on(
            futures::stream::iter(ranges.iter().cloned())
                .map(|r| async move {
                    if r.is_empty() {
                        return Ok(Vec::new());
                    }
                    let bytes = loc
                        .store
                        .get_range(&loc.path, r.clone())
                        .await
                        .map_err(loc.err("read a range of the object"))?;
                    if bytes.len() as u64 != r.end - r.start {
                        return Err(Error::ShortRead {
                            url: loc.url().to_string(),
                            start: r.start,
                            end: r.end,
                            got: bytes.len() as u64,
                        });
                    }
                    Ok(Vec::from(bytes))
                })
                .buffered(CONCURRENT_RANGES)
                .try_collect(),
        )
    }

    /// Copies the whole object to `out` as it arrives (memory bounded),
    /// checking that as many bytes came as the object has.
    pub fn copy_to(&self, out: &mut dyn Write) -> Result<u64> {
        let loc = &self.location;
        block_on(async {
            let got = loc
                .store
                .get(&loc.path)
                .await
                .map_err(loc.err("read the object"))?;
            let mut stream = got.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(loc.err("read the object"))?;
                out.write_all(&chunk).map_err(|source| Error::Io {
                    url: loc.url().to_string(),
                    what: "cannot write what was read",
                    source,
                })?;
                n += chunk.len() as u64;
            }
            if n != self.len {
                return Err(Error::ShortRead {
                    url: loc.url().to_string(),
                    start: 0,
                    end: self.len,
                    got: n,
                });
            }
            Ok(n)
        })
    }
}

impl Object {
    /// The whole object in memory (as a stream: one request).
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let cap = usize::try_from(self.len).map_err(|_| Error::Io {
            url: self.url().to_string(),
            what: "too large for this machine's memory",
            source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        })?;
        let mut v = Vec::with_capacity(cap);
        self.copy_to(&mut v)?;
        Ok(v)
    }
}

impl lmc_core::ReadAt for Object {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>> {
        Object::read_ranges(self, ranges).map_err(std::io::Error::from)
    }
}

/// Times a [`Spooled`] download reopens its stream after it broke.
const STREAM_RETRIES: u32 = 3;

/// An object downloaded front to back by one streaming GET into an
/// anonymous temporary file, on a thread of its own, and read at offsets
/// from there as the download passes them: a whole decode
/// (`Container::decompress_from`) decodes while the rest arrives. One
/// request instead of one per range: some servers pay for every request
/// in proportion to the object's size (moto reads the whole object for
/// each ranged GET: docs/BENCHMARKS.md, "Object storage"), every store a
/// round trip; and a chunk read twice (a derived tensor's source) is
/// downloaded once. Memory stays bounded; the disk holds the object until
/// this is dropped. A stream that breaks is reopened where it stopped, up
/// to three times.
pub struct Spooled {
    url: String,
    len: u64,
    file: std::fs::File,
    state: std::sync::Arc<SpoolState>,
}

#[derive(Default)]
struct SpoolState {
    progress: std::sync::Mutex<SpoolProgress>,
    grew: std::sync::Condvar,
    /// Set when the reader goes: the download stops.
    cancel: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct SpoolProgress {
    /// Bytes `0..done` of the object are in the file.
    done: u64,
    failed: Option<String>,
}

impl Object {
    /// Starts downloading this object into a temporary file, read as a
    /// [`lmc_core::ReadAt`] as it arrives ([`Spooled`]).
    pub fn spooled(&self) -> Result<Spooled> {
        let io = |what: &'static str| {
            let url = self.url().to_string();
            move |source| Error::Io { url, what, source }
        };
        let file =
            tempfile::tempfile().map_err(io("cannot create a temporary file for the download"))?;
        let mut writer = file
            .try_clone()
            .map_err(io("cannot create a temporary file for the download"))?;
        let state = std::sync::Arc::new(SpoolState::default());
        let (st, object) = (state.clone(), self.clone());
        std::thread::Builder::new()
            .name("lmc-download".into())
            .spawn(move || {
                let result = object.download_into(&mut writer, &st);
                let mut p = st
                    .progress
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Err(e) = result {
                    p.failed = Some(e.to_string());
                }
                st.grew.notify_all();
            })
            .map_err(io("cannot start the download"))?;
        Ok(Spooled {
            url: self.url().to_string(),
            len: self.len,
            file,
            state,
        })
    }

    fn download_into(&self, out: &mut std::fs::File, st: &SpoolState) -> Result<()> {
        let loc = &self.location;
        let mut done = 0u64;
        let mut retries = 0;
        while done < self.len {
            let opts = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(done..self.len)),
                ..Default::default()
            };
            let mut body = block_on(loc.store.get_opts(&loc.path, opts))
                .map_err(loc.err("read the object"))?
                .into_stream();
            loop {
                if st.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
                match block_on(body.next()) {
                    Some(Ok(b)) => {
                        let n = (b.len() as u64).min(self.len - done) as usize;
                        out.write_all(&b[..n]).map_err(|source| Error::Io {
                            url: self.url().to_string(),
                            what: "cannot write the download to a temporary file",
                            source,
                        })?;
                        done += n as u64;
                        let mut p = st
                            .progress
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        p.done = done;
                        st.grew.notify_all();
                    }
                    None if done < self.len => {
                        return Err(Error::ShortRead {
                            url: self.url().to_string(),
                            start: 0,
                            end: self.len,
                            got: done,
                        });
                    }
                    None => return Ok(()),
                    Some(Err(e)) if retries >= STREAM_RETRIES => {
                        return Err(loc.err("read the object")(e));
                    }
                    Some(Err(_)) => {
                        retries += 1;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        self.state
            .cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl lmc_core::ReadAt for Spooled {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.start > r.end || r.end > self.len {
                return Err(Error::OutOfRange {
                    url: self.url.clone(),
                    start: r.start,
                    end: r.end,
                    len: self.len,
                }
                .into());
            }
            {
                let mut p = self
                    .state
                    .progress
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while p.done < r.end {
                    if let Some(e) = &p.failed {
                        return Err(std::io::Error::other(e.clone()));
                    }
                    p = self
                        .state
                        .grew
                        .wait(p)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            lmc_core::read_file_at(&self.file, &mut buf, r.start).map_err(|source| Error::Io {
                url: self.url.clone(),
                what: "cannot read back the download",
                source,
            })?;
            out.push(buf);
        }
        Ok(out)
    }
}
