//! A directory on disk as the pieces of its directory stream: what
//! `lmc compress DIR` and Python's `compress_file` on a folder compress.
//! Each file's own layout (its tensors, through [`crate::detect_member`] and
//! the pickle rule) is spliced into the stream's, so a folder of
//! checkpoints compresses as well as its files one by one.

use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};

use lmc_core::{SegmentKind, SegmentSpec};
use lmc_tensors::prefix_names;
use lmc_tensors::tree::{self, Kind};

use crate::error::{Error, Result};

/// What a piece of the stream is made of.
enum Piece {
    /// `headers[i]`
    Header(usize),
    /// Bytes `range` of `files[i]`.
    File(usize, Range<usize>),
}

/// A directory's stream, ready to compress: [`DirStream::parts`] with
/// [`DirStream::layout`]. Holds the files as `read` gave them (maps, in the
/// CLI), so memory stays that of the chunks in flight.
pub struct DirStream<B> {
    headers: Vec<Vec<u8>>,
    files: Vec<B>,
    pieces: Vec<Piece>,
    /// One segment a piece: entry headers as bytes, each file's own layout
    /// with its tensors named `PATH:NAME`.
    pub layout: Vec<SegmentSpec>,
    /// What the user should hear about single files (stored as bytes, and
    /// why), with their paths.
    pub notes: Vec<(PathBuf, String)>,
}

impl<B: Deref<Target = [u8]>> DirStream<B> {
    /// One slice a segment of [`DirStream::layout`].
    pub fn parts(&self) -> Vec<&[u8]> {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Header(i) => &self.headers[*i][..],
                Piece::File(i, r) => &self.files[*i][r.clone()],
            })
            .collect()
    }

    /// The files in it.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The stream's length.
    pub fn len(&self) -> u64 {
        self.layout.iter().map(|s| s.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.layout.is_empty()
    }
}

/// Refuses an output inside the directory it is made from (it would be
/// read into itself).
pub fn check_outside(dir: &Path, dest: &Path) -> Result<()> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let (Ok(d), Ok(i)) = (parent.canonicalize(), dir.canonicalize())
        && d.starts_with(&i)
    {
        return Err(Error::InsideInput {
            path: dest.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Walks `dir` ([`crate::walk`]) and reads each file with `read`, checking
/// it by the pickle rule ([`crate::detect_member`]; refused unless
/// `allow_pickle_calls`).
pub fn dir_stream<B: Deref<Target = [u8]>>(
    dir: &Path,
    allow_pickle_calls: bool,
    mut read: impl FnMut(&Path) -> Result<B>,
) -> Result<DirStream<B>> {
    let listing = crate::walk(dir)?;
    let mut s = DirStream {
        headers: vec![tree::header(listing.root_mode).to_vec()],
        files: Vec::new(),
        pieces: vec![Piece::Header(0)],
        layout: vec![SegmentSpec {
            kind: SegmentKind::Bytes,
            len: tree::HEADER_LEN as u64,
        }],
        notes: Vec::new(),
    };
    let push_header = |s: &mut DirStream<B>, h: Vec<u8>| {
        s.layout.push(SegmentSpec {
            kind: SegmentKind::Bytes,
            len: h.len() as u64,
        });
        s.headers.push(h);
        s.pieces.push(Piece::Header(s.headers.len() - 1));
    };
    for mut it in listing.items {
        match it.entry.kind {
            Kind::Dir => push_header(&mut s, it.entry.to_bytes()),
            Kind::Symlink => {
                let mut h = it.entry.to_bytes();
                h.extend_from_slice(it.target.as_deref().unwrap_or_default().as_bytes());
                push_header(&mut s, h);
            }
            Kind::File => {
                let bytes = read(&it.source)?;
                let found = crate::detect_member(&it.source, &bytes, allow_pickle_calls)?;
                s.notes
                    .extend(found.notes.into_iter().map(|n| (it.source.clone(), n)));
                it.entry.format = found.format.code();
                // The file may have changed since it was listed.
                it.entry.len = bytes.len() as u64;
                push_header(&mut s, it.entry.to_bytes());
                let mut layout = found.layout;
                prefix_names(&mut layout, &format!("{}:", it.entry.path));
                let mut at = 0usize;
                for seg in layout {
                    let end = at + seg.len as usize;
                    s.pieces.push(Piece::File(s.files.len(), at..end));
                    s.layout.push(seg);
                    at = end;
                }
                s.files.push(bytes);
            }
        }
    }
    push_header(&mut s, tree::END.to_vec());
    Ok(s)
}
