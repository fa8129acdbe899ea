//! lmc-tensors: how checkpoint files map onto lmc segments.
//!
//! A file format module reads a file's structure (never its tensor data)
//! and returns a layout: the list of [`SegmentSpec`]s that tiles the file,
//! tensors as tensor segments and everything else (headers, metadata,
//! padding) as byte segments. Compressing that layout and decompressing it
//! gives back the file byte for byte.
//!
//! Formats: [`safetensors`]; PyTorch checkpoints ([`torch`], zip and
//! legacy, with the [`pickle`] reader and the [`zip`] reader); NumPy
//! [`npy`] and `.npz` archives; and [`raw`] (a flat array of one dtype).
//! [`detect`] tells them apart by their contents. [`tree`] is lmc's own
//! stream of a whole directory.

#![forbid(unsafe_code)]

pub mod convert;
mod detect;
pub mod npy;
pub mod pickle;
pub mod raw;
pub mod safetensors;
pub mod torch;
pub mod tree;
pub mod zip;

pub use detect::{Detected, Format, detect, prefix_names};
use lmc_core::SegmentKind;
pub use lmc_core::SegmentSpec;
use lmc_core::error::quote_name;

/// A file that is not what it was taken for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    /// A safetensors header entry refused, with the tensor it describes;
    /// `offset`: where the entry puts the tensor's data in the file.
    #[error("not a valid safetensors file: tensor {}{}: {detail}", quote_name(.tensor), at(.offset))]
    SafetensorsTensor {
        tensor: String,
        offset: Option<u64>,
        detail: String,
    },
    #[error("not a valid zip archive: {0}")]
    Zip(String),
    /// A zip member refused; `offset`: its local header's in the archive.
    #[error("not a valid zip archive: member {}{}: {detail}", quote_name(.member), at(.offset))]
    ZipMember {
        member: String,
        offset: Option<u64>,
        detail: String,
    },
    /// An `.npy` member of an `.npz` archive refused; `offset`: its data's
    /// in the archive.
    #[error("not a valid .npy file: member {} at offset {offset}: {detail}", quote_name(.member))]
    NpzMember {
        member: String,
        offset: u64,
        detail: String,
    },
    #[error("not a valid PyTorch checkpoint: {0}")]
    Torch(String),
    #[error("not a valid .npy file: {0}")]
    Npy(String),
    #[error("not a valid lmc directory stream: {0}")]
    Tree(String),
    #[error("{0}")]
    Invalid(String),
}

fn at(offset: &Option<u64>) -> String {
    offset.map_or(String::new(), |o| format!(" at offset {o}"))
}

impl Error {
    /// The message without its "not a valid ..." prefix.
    pub(crate) fn detail(&self) -> String {
        match self {
            Error::Safetensors(m)
            | Error::Zip(m)
            | Error::Torch(m)
            | Error::Npy(m)
            | Error::Tree(m)
            | Error::Invalid(m) => m.clone(),
            Error::SafetensorsTensor {
                tensor,
                offset,
                detail,
            } => format!("tensor {}{}: {detail}", quote_name(tensor), at(offset)),
            Error::ZipMember {
                member,
                offset,
                detail,
            } => format!("member {}{}: {detail}", quote_name(member), at(offset)),
            Error::NpzMember {
                member,
                offset,
                detail,
            } => format!("member {} at offset {offset}: {detail}", quote_name(member)),
        }
    }
}

/// Longest message, in bytes, taken whole from a library that may echo
/// a file's contents (a JSON error quoting a hostile string).
const MESSAGE_SHOWN: usize = 400;

/// `msg` cut to [`MESSAGE_SHOWN`] bytes, its length said when cut.
pub(crate) fn bounded(msg: String) -> String {
    if msg.len() <= MESSAGE_SHOWN {
        return msg;
    }
    let mut end = MESSAGE_SHOWN;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &msg[..end], msg.len())
}

/// [`bounded`] of `parts` joined, without copying more than
/// [`MESSAGE_SHOWN`] bytes of them (a pickle can name one long string many
/// times for a few bytes each).
pub(crate) fn bounded_concat(parts: &[&str]) -> String {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= MESSAGE_SHOWN {
        return parts.concat();
    }
    let mut s = String::with_capacity(MESSAGE_SHOWN);
    for p in parts {
        let mut end = (MESSAGE_SHOWN - s.len()).min(p.len());
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        s.push_str(&p[..end]);
        if end < p.len() {
            break;
        }
    }
    format!("{s}... ({len} bytes)")
}

/// A part of a file with a known kind (usually a tensor), at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
    pub kind: SegmentKind,
}

/// The layout of a file of `file_len` bytes in which `regions` are known:
/// the regions in offset order, and byte segments for the bytes between
/// them. Regions must lie inside the file and must not overlap.
pub fn tile(file_len: u64, mut regions: Vec<Region>) -> Result<Vec<SegmentSpec>, Error> {
    regions.sort_by_key(|r| (r.offset, r.len));
    let mut out = Vec::with_capacity(regions.len() * 2 + 1);
    let mut at = 0u64;
    for r in regions {
        let end = r
            .offset
            .checked_add(r.len)
            .filter(|&e| e <= file_len)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} bytes at offset {} run past the end of the {file_len}-byte file",
                    r.len, r.offset
                ))
            })?;
        if r.offset < at {
            return Err(Error::Invalid(format!(
                "two parts of the file overlap at offset {}",
                r.offset
            )));
        }
        if r.offset > at {
            out.push(SegmentSpec {
                kind: SegmentKind::Bytes,
                len: r.offset - at,
            });
        }
        out.push(SegmentSpec {
            kind: r.kind,
            len: r.len,
        });
        at = end;
    }
    if at < file_len {
        out.push(SegmentSpec {
            kind: SegmentKind::Bytes,
            len: file_len - at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmc_core::Dtype;

    fn t(offset: u64, len: u64) -> Region {
        Region {
            offset,
            len,
            kind: SegmentKind::Tensor {
                name: format!("t{offset}"),
                dtype: Dtype::U8,
                shape: vec![len],
            },
        }
    }

    #[test]
    fn tiling() {
        let l = tile(10, vec![t(6, 2), t(2, 4)]).unwrap();
        let lens: Vec<_> = l
            .iter()
            .map(|s| (s.kind == SegmentKind::Bytes, s.len))
            .collect();
        assert_eq!(lens, [(true, 2), (false, 4), (false, 2), (true, 2)]);
        assert_eq!(tile(0, vec![]).unwrap(), vec![]);
        assert!(tile(10, vec![t(2, 4), t(5, 2)]).is_err());
        assert!(tile(10, vec![t(8, 4)]).is_err());
        assert!(tile(10, vec![t(u64::MAX, 4)]).is_err());
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    #[test]
    fn bounded_concat_is_bounded_of_the_join() {
        let long = "é".repeat(300);
        for (m, n) in [
            ("a", "b"),
            (&long[..], "x"),
            ("x", &long[..]),
            (&long[..], &long[..]),
        ] {
            for cut in [0, 1, 2, 399, 400] {
                let mut cut = cut.min(m.len());
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                let m = &m[..cut];
                assert_eq!(bounded_concat(&[m, ".", n]), bounded(format!("{m}.{n}")));
            }
            assert_eq!(bounded_concat(&[m, ".", n]), bounded(format!("{m}.{n}")));
        }
    }
}
