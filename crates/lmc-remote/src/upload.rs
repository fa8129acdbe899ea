//! Writing an object by multipart upload: parts go out while the caller
//! writes, memory stays bounded, and nothing is visible under the key until
//! [`Upload::finish`] completes the upload. An upload dropped without
//! finishing (an error, Ctrl-C) is aborted, so the store keeps no parts.

use std::io::Write;

use object_store::WriteMultipart;

use crate::error::{Error, Result};
use crate::location::Location;
use crate::runtime::block_on;

/// Bytes of one part (S3 wants at least 5 MiB for all parts but the last).
pub(crate) const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once: with [`PART_BYTES`], at most 72 MiB held.
pub(crate) const PARTS_IN_FLIGHT: usize = 8;

/// An object being written; `Write` takes its bytes in order.
pub struct Upload {
    /// `None` once finished or aborted.
    writer: Option<WriteMultipart>,
    location: Location,
    written: u64,
}

impl Upload {
    /// Starts a multipart upload to `url`.
    pub fn create(url: &str) -> Result<Upload> {
        Upload::to(Location::parse(url)?)
    }

    pub fn to(location: Location) -> Result<Upload> {
        if !location.is_writable() {
            return Err(read_only(&location));
        }
        let upload = block_on(location.store.put_multipart(&location.path))
            .map_err(location.err("start an upload"))?;
        Ok(Upload {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)),
            location,
            written: 0,
        })
    }

    pub fn url(&self) -> &str {
        self.location.url()
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sends what is left and completes the upload: only now does the
    /// object appear under its key.
    pub fn finish(mut self) -> Result<()> {
        let writer = self.writer.take().expect("an upload is finished once");
        block_on(writer.finish())
            .map(|_| ())
            .map_err(self.location.err("complete the upload"))
    }

    /// Aborts the upload: the store drops the parts sent.
    pub fn abort(mut self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<()> {
        match self.writer.take() {
            Some(w) => block_on(w.abort()).map_err(self.location.err("abort the upload")),
            None => Ok(()),
        }
    }
}

/// The error for a write to a URL that cannot be written (http(s)://).
pub(crate) fn read_only(location: &Location) -> Error {
    Error::BadUrl {
        url: location.url().to_string(),
        reason: "http(s):// URLs are read only; write to s3://, gs://, az:// or file://".into(),
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let writer = self.writer.as_mut().ok_or_else(|| {
            std::io::Error::other(format!("{}: the upload is over", self.location.url()))
        })?;
        // Waits while too many parts are in flight: this is what bounds the
        // memory, and where a part's failure (after its retries) comes out.
        block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT))
            .map_err(self.location.err("upload a part"))?;
        // A full part is spawned as a task of the runtime.
        let _entered = crate::runtime::runtime().enter();
        writer.write(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Not finished: an error or a cancel. Best effort; a store that
        // cannot be reached keeps the parts until its lifecycle rules
        // remove them, but never shows them as an object.
        let _ = self.abort_inner();
    }
}
