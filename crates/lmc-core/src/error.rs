//! Errors of the core layer.
//!
//! Every variant says what was expected and what was found, and where: the
//! region of the container, the chunk, the plane and the byte offset. The CLI
//! adds the file name on top.

use std::fmt;

/// Which part of a container a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The fixed 64-byte header at the start of the file.
    Header,
    /// The index: segment list and chunk table.
    Index,
    /// The compressed chunk payloads.
    Payload,
    /// The file as a whole (length, whole-file hash).
    File,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Region::Header => "header",
            Region::Index => "index",
            Region::Payload => "payload",
            Region::File => "file",
        })
    }
}

/// An error from the core codec or container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The container is damaged or is not an lmc container.
    #[error("corrupt {region}: {detail}")]
    Corrupt { region: Region, detail: String },

    /// A chunk's stored bytes do not match the checksum recorded for them.
    #[error(
        "corrupt payload: chunk {chunk} ({segment}) at byte offset {offset}: checksum mismatch (stored {expected:016x}, computed {found:016x})"
    )]
    ChunkChecksum {
        chunk: usize,
        segment: String,
        offset: u64,
        expected: u64,
        found: u64,
    },

    /// A plane could not be decoded.
    #[error("corrupt payload: chunk {chunk} ({segment}), plane {plane}: {detail}")]
    PlaneDecode {
        chunk: usize,
        segment: String,
        plane: usize,
        detail: String,
    },

    /// The decoded file does not hash to the value recorded at compression time.
    #[error(
        "whole-file hash mismatch: the container records {expected:032x}, the decoded bytes hash to {found:032x}"
    )]
    FileHash { expected: u128, found: u128 },

    /// The container was written by a newer, incompatible version of lmc.
    #[error("unsupported container version {found} (this lmc reads versions 1 to {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },

    /// The input to the compressor is not what the caller described.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A tensor name asked for is not in the container.
    #[error("no tensor named {0:?} in the container")]
    NoSuchTensor(String),

    /// A delta container was decoded without its base, or with the wrong one.
    #[error("{0}")]
    Base(String),

    /// The operation was cancelled (for example by Ctrl-C).
    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn corrupt(region: Region, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            region,
            detail: detail.into(),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(io) => io,
            Error::InvalidInput(_) | Error::NoSuchTensor(_) | Error::Base(_) => {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
            }
            Error::Cancelled => std::io::Error::new(std::io::ErrorKind::Interrupted, e),
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest name, in bytes, that messages quote whole.
pub const NAME_SHOWN: usize = 200;

/// A name (of a tensor, an archive member) quoted for a message: whole up
/// to [`NAME_SHOWN`] bytes, else its start, an ellipsis and its length, so
/// that a hostile 70 KB name does not fill the screen.
pub fn quote_name(name: &str) -> String {
    if name.len() <= NAME_SHOWN {
        return format!("{name:?}");
    }
    let mut end = NAME_SHOWN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &name[..end], name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_short() {
        assert_eq!(quote_name("a.weight"), "\"a.weight\"");
        let long = "é".repeat(35_000);
        let q = quote_name(&long);
        assert!(q.len() < NAME_SHOWN + 30, "{q}");
        assert!(q.ends_with("\"... (70000 bytes)"), "{q}");
        assert_eq!(quote_name(&"n".repeat(NAME_SHOWN)).len(), NAME_SHOWN + 2);
    }
}
