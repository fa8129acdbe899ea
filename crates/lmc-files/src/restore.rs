//! Directory containers: recognising one, checking its stream, restoring
//! it to disk through a [`DirBuilder`], and listing its entries from their
//! headers alone (for `lmc info`).

use std::path::Path;

use lmc_core::compress::Progress;
use lmc_core::{Container, SegmentKind};
use lmc_tensors::tree::{self, Entry, Sink};

use crate::builder::DirBuilder;
use crate::error::{Error, Result};

/// Whether a container holds a directory stream (its first chunk starts
/// with the stream's magic). A first chunk that does not decode says no:
/// decoding the container as a file then reports the damage.
pub fn is_tree(c: &Container<'_>) -> bool {
    is_tree_in(c, None).unwrap_or(false)
}

/// [`is_tree`] for a container opened over its index alone
/// ([`Container::open_from`]): its first chunk is read from `src`, and a
/// failure to read it (not to decode it) is an error, not a "no".
pub fn is_tree_in(
    c: &Container<'_>,
    src: Option<&dyn lmc_core::ReadAt>,
) -> lmc_core::Result<bool> {
    let Some(first) = c.segments().first() else {
        return Ok(false);
    };
    if first.kind != SegmentKind::Bytes
        || first.len < tree::MAGIC.len() as u64
        || first.chunk_count == 0
    {
        return Ok(false);
    }
    let mut buf = Vec::new();
    let decoded = match src {
        Some(src) => c.decode_chunk_from(src, first.first_chunk, &mut buf),
        None => c.decode_chunk(first.first_chunk, &mut buf),
    };
    match decoded {
        Err(e @ lmc_core::Error::Io(_)) => Err(e),
        Err(_) => Ok(false),
        Ok(()) => Ok(tree::looks_like(&buf)),
    }
}

/// What a restore or a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSummary {
    pub files: u64,
    /// Bytes of the directory stream.
    pub stream_len: u64,
}

/// Passes a checked stream's entries to a [`DirBuilder`], keeping the
/// builder's own error (which names the file) for the caller.
struct BuilderSink {
    builder: DirBuilder,
    failed: Option<Error>,
}

impl BuilderSink {
    fn keep(&mut self, r: Result<()>) -> Result<(), lmc_tensors::Error> {
        r.map_err(|e| {
            let msg = e.to_string();
            self.failed = Some(e);
            lmc_tensors::Error::Invalid(msg)
        })
    }
}

impl Sink for BuilderSink {
    fn dir(&mut self, e: &Entry) -> Result<(), lmc_tensors::Error> {
        let r = self.builder.dir(&e.path, e.mode);
        self.keep(r)
    }
    fn file_start(&mut self, e: &Entry) -> Result<(), lmc_tensors::Error> {
        let r = self.builder.begin_file(&e.path, e.mode);
        self.keep(r)
    }
    fn file_data(&mut self, data: &[u8]) -> Result<(), lmc_tensors::Error> {
        let r = self.builder.write(data);
        self.keep(r)
    }
    fn file_end(&mut self) -> Result<(), lmc_tensors::Error> {
        let r = self.builder.end_file();
        self.keep(r)
    }
    fn symlink(&mut self, e: &Entry, target: &str) -> Result<(), lmc_tensors::Error> {
        let r = self.builder.link(&e.path, target);
        self.keep(r)
    }
}

/// Feeds decoded bytes to the stream reader, keeping its error.
struct TreeWriter<S> {
    reader: tree::Reader,
    sink: S,
    refused: Option<lmc_tensors::Error>,
}

impl<S: Sink> std::io::Write for TreeWriter<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Err(e) = self.reader.feed(buf, &mut self.sink) {
            let msg = e.to_string();
            self.refused = Some(e);
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<S: Sink + Send> TreeWriter<S> {
    fn new(sink: S) -> Self {
        TreeWriter {
            reader: tree::Reader::new(),
            sink,
            refused: None,
        }
    }

    /// Decodes `c` through the reader. `source` names the container in
    /// errors; `failed` takes the sink's own error, preferred to the rest.
    fn run(
        &mut self,
        source: &Path,
        c: &Container<'_>,
        progress: Progress<'_>,
        failed: impl Fn(&mut S) -> Option<Error>,
    ) -> Result<()> {
        let decoded = c.decompress_to(self, progress);
        if let Some(e) = failed(&mut self.sink) {
            return Err(e);
        }
        let refused = |e| Error::Refused {
            path: source.to_path_buf(),
            source: e,
        };
        if let Some(e) = self.refused.take() {
            return Err(refused(e));
        }
        decoded.map_err(|e| Error::Codec {
            path: source.to_path_buf(),
            source: e,
        })?;
        self.reader.finish().map_err(refused)
    }
}

/// Decodes a directory container (`source` names it in errors) and checks
/// its stream, writing nothing.
pub fn check_tree(source: &Path, c: &Container<'_>, progress: Progress<'_>) -> Result<TreeSummary> {
    let mut w = TreeWriter::new(tree::NullSink);
    w.run(source, c, progress, |_| None)?;
    Ok(TreeSummary {
        files: w.reader.files,
        stream_len: c.header().original_len,
    })
}

/// Restores a directory container (`source` names it in errors) to
/// `dest`: written into a temporary directory beside it, every entry
/// checked as it arrives, links created and modes applied only after the
/// whole stream and its hash were checked, then moved into place. On any
/// error nothing is left, at `dest` or beside it. An existing `dest` is
/// replaced only with `force`, and never when it is a directory that is
/// not empty ([`crate::check_dir_destination`]).
pub fn restore_tree(
    source: &Path,
    c: &Container<'_>,
    dest: &Path,
    force: bool,
    sync: bool,
    progress: Progress<'_>,
) -> Result<TreeSummary> {
    let builder = DirBuilder::create(dest, force, sync)?;
    let mut w = TreeWriter::new(BuilderSink {
        builder,
        failed: None,
    });
    w.run(source, c, progress, |s| s.failed.take())?;
    let files = w.reader.files;
    let root_mode = w.reader.root_mode;
    w.sink.builder.finish(root_mode)?;
    Ok(TreeSummary {
        files,
        stream_len: c.header().original_len,
    })
}
