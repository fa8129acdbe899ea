//! Checkpoints and containers in memory, and as `std::io` streams: what a
//! Rust program calls when its bytes are not in a file.
//!
//! - [`compress_to_vec`] / [`decompress_to_vec`]: bytes in, bytes out, by
//!   the CLI's rules (the format detected as `lmc compress` detects it, its
//!   pickles checked; the whole-file hash checked on the way back).
//! - [`Encoder`]: a [`Write`] that takes a checkpoint and writes its
//!   container to the writer it wraps on [`Encoder::finish`].
//! - [`Decoder`]: a [`Read`] of the original file, decoded a few chunks
//!   at a time as it is read, the whole-file hash checked at the end.
//!
//! A container is read at random (its index comes after the chunks) and a
//! checkpoint is coded from its whole layout, so both adapters hold their
//! input in memory: [`Encoder`] the checkpoint written to it, [`Decoder`]
//! the container read from its reader. [`Decoder`] holds only a few chunks
//! of the output at a time.

use std::io::{Cursor, Read, Write};
use std::path::Path;

use lmc_core::{CompressOptions, Container};

/// Compresses `input` (a checkpoint in any format lmc detects; `name` names
/// it in errors) into a container, as `lmc compress` does. Checkpoints
/// whose pickles would run code are refused unless `allow_pickle_calls`.
pub fn compress_to_vec(
    name: &str,
    input: &[u8],
    options: &CompressOptions,
    allow_pickle_calls: bool,
) -> Result<Vec<u8>, crate::Error> {
    let path = Path::new(name);
    let detected = crate::detect_input(path, input, None, allow_pickle_calls)?;
    let mut out = Cursor::new(Vec::new());
    lmc_core::compress(input, &detected.layout, options, &mut out, &mut |_| true)
        .map_err(|e| codec_error(name, e))?;
    Ok(out.into_inner())
}

/// Decodes a container (with its base, if it is a delta: the base file's
/// bytes) into the original file, checking every byte against the
/// whole-file hash.
pub fn decompress_to_vec(
    name: &str,
    container: &[u8],
    base: Option<&[u8]>,
) -> Result<Vec<u8>, crate::Error> {
    let c = open(container, base).map_err(|e| codec_error(name, e))?;
    let len = usize::try_from(c.header().original_len).map_err(|_| {
        crate::Error::Read(format!("{name}: holds a file too large for memory here"))
    })?;
    let mut out = vec![0u8; len];
    c.decompress_into(&mut out, &mut |_| true)
        .map_err(|e| codec_error(name, e))?;
    Ok(out)
}

fn open<'a>(container: &'a [u8], base: Option<&'a [u8]>) -> lmc_core::Result<Container<'a>> {
    let c = Container::open(container)?;
    match (base, c.base_ref()) {
        (Some(b), _) => c.with_base(b),
        (None, Some(b)) => Err(lmc_core::Error::Base(format!(
            "a delta container: decoding it needs its base, a {}-byte file with XXH3-128 {:032x}",
            b.len, b.hash
        ))),
        (None, None) => Ok(c),
    }
}

fn codec_error(name: &str, source: lmc_core::Error) -> crate::Error {
    crate::Error::Codec {
        path: name.into(),
        source,
    }
}

/// A [`Write`] that compresses what is written to it: the checkpoint is
/// gathered in memory and, on [`Encoder::finish`], coded into the wrapped
/// writer (a container is written with a seek back to its header, so it is
/// coded in memory first and then written out in one piece). Dropped
/// without `finish`, it writes nothing.
pub struct Encoder<W: Write> {
    inner: W,
    name: String,
    input: Vec<u8>,
    options: CompressOptions,
    allow_pickle_calls: bool,
}

impl<W: Write> Encoder<W> {
    /// `name` names the checkpoint in errors.
    pub fn new(inner: W, name: &str, options: CompressOptions) -> Encoder<W> {
        Encoder {
            inner,
            name: name.to_string(),
            input: Vec::new(),
            options,
            allow_pickle_calls: false,
        }
    }

    /// Accepts checkpoints whose pickles would call code (refused by default).
    pub fn allow_pickle_calls(mut self, allow: bool) -> Encoder<W> {
        self.allow_pickle_calls = allow;
        self
    }

    /// Codes the checkpoint, writes the container and flushes; gives back
    /// the writer.
    pub fn finish(mut self) -> Result<W, crate::Error> {
        let c = compress_to_vec(
            &self.name,
            &self.input,
            &self.options,
            self.allow_pickle_calls,
        )?;
        let io = |source| crate::Error::Io {
            action: "write the container of",
            path: self.name.clone().into(),
            source,
        };
        self.inner.write_all(&c).map_err(io)?;
        self.inner.flush().map_err(io)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.input.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Chunks decoded per refill of a [`Decoder`].
const DECODER_BATCH: usize = 8;

/// A [`Read`] of the original file of a container: the container is read
/// from the wrapped reader when the decoder is made, and its chunks are
/// decoded a few at a time as the file is read, each checked against its
/// checksum. At the end, the whole-file hash is checked: a read that
/// reaches the end of a file whose hash does not match fails with
/// [`std::io::ErrorKind::InvalidData`] (as `gzip -dc` reports a bad
/// trailer), so a consumer that reads to the end never takes a wrong file
/// for a good one.
pub struct Decoder {
    container: Vec<u8>,
    base: Option<Vec<u8>>,
    chunks: usize,
    next_chunk: usize,
    buf: Vec<u8>,
    pos: usize,
    hasher: lmc_core::hash::Xxh3_128,
    done: u64,
    checked: bool,
}

impl Decoder {
    /// Reads the container from `reader` (with the base file's bytes if it
    /// is a delta) and checks its header and index.
    pub fn new(mut reader: impl Read, base: Option<Vec<u8>>) -> Result<Decoder, crate::Error> {
        let mut container = Vec::new();
        reader
            .read_to_end(&mut container)
            .map_err(|e| crate::Error::Read(format!("cannot read the container: {e}")))?;
        let chunks = open(&container, base.as_deref())
            .map_err(|e| codec_error("the container", e))?
            .chunks()
            .len();
        Ok(Decoder {
            container,
            base,
            chunks,
            next_chunk: 0,
            buf: Vec::new(),
            pos: 0,
            hasher: lmc_core::hash::Xxh3_128::new(),
            done: 0,
            checked: false,
        })
    }

    /// Decodes the next batch of chunks into `buf`; at the end, checks the
    /// whole-file hash and length.
    fn refill(&mut self) -> std::io::Result<()> {
        let bad = |e: lmc_core::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let c = open(&self.container, self.base.as_deref()).map_err(bad)?;
        self.buf.clear();
        self.pos = 0;
        let end = (self.next_chunk + DECODER_BATCH).min(self.chunks);
        let mut one = Vec::new();
        for i in self.next_chunk..end {
            c.decode_chunk(i, &mut one).map_err(bad)?;
            self.buf.extend_from_slice(&one);
        }
        self.next_chunk = end;
        self.hasher.update(&self.buf);
        self.done += self.buf.len() as u64;
        if self.next_chunk == self.chunks && !self.checked {
            self.checked = true;
            let h = c.header();
            let found = self.hasher.digest128();
            if found != h.original_hash || self.done != h.original_len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the decoded file ({} bytes, XXH3-128 {found:032x}) is not the one the \
                         container holds ({} bytes, {:032x})",
                        self.done, h.original_len, h.original_hash
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Read for Decoder {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.checked {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
