//! The entries of a directory container read from their headers alone,
//! decoding only the chunks that hold them (for `lmc info`). Nothing is
//! judged here beyond what reading needs: a hostile stream is listed as it
//! is, and refused by a restore or a check.

use std::path::Path;

use lmc_core::Container;
use lmc_tensors::tree::{self, Entry};

use crate::error::{Error, Result};

/// One entry of a directory container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub entry: Entry,
    /// Where its header starts and where its body ends in the stream.
    pub start: u64,
    pub end: u64,
}

/// The root directory's mode and the entries of a directory container
/// (`source` names it in errors).
pub fn list_tree(source: &Path, c: &Container<'_>) -> Result<(u32, Vec<EntryInfo>)> {
    let refused = |msg: String| Error::Refused {
        path: source.to_path_buf(),
        source: lmc_tensors::Error::Tree(msg),
    };
    let tree_err = |e| Error::Refused {
        path: source.to_path_buf(),
        source: e,
    };
    let root_mode = tree::parse_header(&read_range(source, c, 0, tree::HEADER_LEN as u64)?)
        .map_err(tree_err)?;
    let total = c.header().original_len;
    let mut out = Vec::new();
    let mut at = tree::HEADER_LEN as u64;
    loop {
        let fixed = read_range(source, c, at, tree::ENTRY_LEN as u64)?;
        let path_len = u16::from_le_bytes([fixed[2], fixed[3]]) as u64;
        let head = read_range(
            source,
            c,
            at,
            (tree::ENTRY_LEN as u64 + path_len).min(total - at),
        )?;
        let Some((entry, n)) = tree::parse_entry(&head).map_err(tree_err)? else {
            return Ok((root_mode, out));
        };
        let end = (at + n as u64)
            .checked_add(entry.len)
            .filter(|&e| e <= total)
            .ok_or_else(|| {
                refused(format!(
                    "entry {:?} runs past the end of the stream",
                    entry.path
                ))
            })?;
        out.push(EntryInfo {
            entry,
            start: at,
            end,
        });
        at = end;
    }
}

/// Bytes `start..start + len` of a container's original, decoding only the
/// chunks that hold them.
fn read_range(source: &Path, c: &Container<'_>, start: u64, len: u64) -> Result<Vec<u8>> {
    let chunks = c.chunks();
    let end = start.saturating_add(len);
    let first = chunks.partition_point(|ch| ch.raw_offset + ch.raw_len as u64 <= start);
    let mut out = Vec::with_capacity(len.min(1 << 16) as usize);
    let mut buf = Vec::new();
    for (i, ch) in chunks.iter().enumerate().skip(first) {
        if ch.raw_offset >= end {
            break;
        }
        c.decode_chunk(i, &mut buf).map_err(|e| Error::Codec {
            path: source.to_path_buf(),
            source: e,
        })?;
        let from = (start.saturating_sub(ch.raw_offset) as usize).min(buf.len());
        let to = ((end - ch.raw_offset) as usize).min(buf.len());
        out.extend_from_slice(&buf[from..to.max(from)]);
    }
    if out.len() as u64 != len {
        return Err(Error::Refused {
            path: source.to_path_buf(),
            source: lmc_tensors::Error::Tree(format!(
                "the stream ends at offset {start} inside an entry header"
            )),
        });
    }
    Ok(out)
}
