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
