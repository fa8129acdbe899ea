//! Errors of the core layer.
//!
//! Every variant says what was expected and what was found, and where: the
//! region of the container, the chunk, the plane and the byte offset. The CLI
//! adds the file name on top.

use std::fmt;

use crate::codec::PlaneCodec;

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
    #[error("corrupt {region}: {reason}")]
    Corrupt { region: Region, reason: Corruption },

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

    /// A plane could not be decoded. `offset`: the plane's first stored
    /// byte in the file.
    #[error(
        "corrupt payload: chunk {chunk} ({segment}), plane {plane} at byte offset {offset}: {reason}"
    )]
    PlaneDecode {
        chunk: usize,
        segment: String,
        plane: usize,
        offset: u64,
        /// Boxed: errors are rare, and `Error` is returned everywhere.
        #[source]
        reason: Box<DecodeError>,
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
    #[error("no tensor named {} in the container", quote_name(.0))]
    NoSuchTensor(String),

    /// A delta container was decoded without its base, or with the wrong one.
    #[error("{0}")]
    Base(String),

    /// A container whose derived tensors take source elements from other
    /// files (FORMAT.md, "Sources in other files") was decoded without
    /// them, or with the wrong ones; names the file and what was expected.
    #[error("{0}")]
    Source(String),

    /// The operation was cancelled (for example by Ctrl-C).
    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A corruption no caller tells apart, in words.
    pub(crate) fn corrupt(region: Region, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            region,
            reason: Corruption::Other(detail.into()),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(io) => io,
            Error::InvalidInput(_) | Error::NoSuchTensor(_) | Error::Base(_) | Error::Source(_) => {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
            }
            Error::Cancelled => std::io::Error::new(std::io::ErrorKind::Interrupted, e),
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// What is wrong with a container's header, index or length: the cases a
/// caller may want to tell apart typed, the rest in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    #[error(
        "file is {len} bytes, shorter than the {}-byte header (truncated, or not an lmc file)",
        crate::format::HEADER_LEN
    )]
    ShortFile { len: usize },

    #[error("bad magic bytes: not an lmc container")]
    BadMagic,

    /// `unknown_version`: the header's version field when this lmc reads no
    /// such version (the header is damaged, or from a newer lmc).
    #[error("{what} checksum mismatch (stored {stored:016x}, computed {computed:016x}){}", version_note(.unknown_version))]
    Checksum {
        what: &'static str,
        stored: u64,
        computed: u64,
        unknown_version: Option<u16>,
    },

    #[error("unknown flags {flags:#06x} or non-zero reserved bytes")]
    Flags { flags: u16 },

    /// The file's length is not header + payload + index; `described` is
    /// `None` when that sum overflows.
    #[error("file is {len} bytes but its header describes {} (header {} + payload {payload} + index {index}): truncated or extended",
        .described.map_or("more than 2^64".to_string(), |d| d.to_string()), crate::format::HEADER_LEN)]
    FileLength {
        len: u64,
        described: Option<u64>,
        payload: u64,
        index: u64,
    },

    /// The index ends inside a field.
    #[error("truncated at byte {at} while reading the {field}")]
    Truncated { at: usize, field: &'static str },

    /// A count (of segments, chunks, names) too large for the index that
    /// holds it, refused before anything is allocated for it.
    #[error("{what} {count} cannot fit in a {index_len}-byte index")]
    CountTooLarge {
        what: &'static str,
        count: usize,
        index_len: usize,
    },

    #[error("segments cover {covered} bytes, the header says the original has {original}")]
    Coverage { covered: u64, original: u64 },

    /// A chunk table entry is invalid.
    #[error("chunk {chunk} ({segment}): {fault}")]
    Chunk {
        chunk: usize,
        segment: String,
        fault: ChunkFault,
    },

    #[error("{0}")]
    Other(String),
}

fn version_note(unknown: &Option<u16>) -> String {
    match unknown {
        None => String::new(),
        Some(v) => format!(
            "; the header is damaged, or the container is of version {v}, \
             which this lmc cannot read (it reads versions 1 to {})",
            crate::format::VERSION
        ),
    }
}

/// What is wrong with one chunk table entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkFault {
    #[error(
        "length {len} (index byte {at}) is above the {limit}-byte limit on a chunk \
             (earlier versions of lmc wrote larger chunks with --chunk-size above 4M: decode such a file with \
             one of them and compress it again)"
    )]
    TooLarge { len: u32, at: usize, limit: u32 },

    #[error(
        "length {len} (index byte {at}) is zero or not a multiple of the element width {width}"
    )]
    BadLength { len: u32, at: usize, width: usize },

    #[error("unknown transform {0}")]
    UnknownTransform(u8),

    /// A bitmap sparse chunk (transform 3) in a container without its flag.
    #[error("transform 3 (xor-bitmap) in a container without the bitmap flag")]
    TransformNotFlagged,

    #[error("{found} planes, {expected} expected")]
    PlaneCount { found: usize, expected: usize },

    #[error("plane {plane}: unknown codec {code}")]
    UnknownCodec { plane: usize, code: u8 },

    /// A codec whose header flag the container lacks.
    #[error("plane {plane}: {} codec in a container without the {} flag", .codec.name(), .codec.name())]
    CodecNotFlagged { plane: usize, codec: PlaneCodec },

    #[error(
        "split codec on plane 0, or on a sparse chunk's map or first plane (split planes are split by plane 0)"
    )]
    SplitFirst,

    #[error("plane {plane}: {} codec with stored length {stored} for {plane_len} bytes", .codec.name())]
    StoredLength {
        plane: usize,
        codec: PlaneCodec,
        stored: u32,
        plane_len: u32,
    },
}

/// The name of a codec as messages write it.
fn title(c: &PlaneCodec) -> &'static str {
    match c {
        PlaneCodec::Huffman => "Huffman",
        PlaneCodec::Rans => "rANS",
        PlaneCodec::Rans32 => "rANS32",
        other => other.name(),
    }
}

/// Why a plane's stored bytes do not decode: what its decoder expected and
/// what it found. Byte counts are relative to the plane's stored block;
/// [`Error::PlaneDecode`] adds the chunk, the plane and the file offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The block ends inside one of its parts.
    #[error("{} block truncated in its {part} ({needed} bytes needed, {available} present)", title(.codec))]
    Truncated {
        codec: PlaneCodec,
        part: &'static str,
        needed: usize,
        available: usize,
    },

    /// A bitmap map marks an element past the chunk's end.
    #[error("bitmap map has a bit set past the chunk's {elements} elements")]
    BitmapPadding { elements: usize },

    /// A length the plane implies differs from the one found.
    #[error("{} plane: {what} of {found} bytes, {expected} expected", title(.codec))]
    LengthMismatch {
        codec: PlaneCodec,
        what: &'static str,
        expected: usize,
        found: usize,
    },

    /// The code table (Huffman lengths, rANS frequencies) is unusable.
    #[error("{} table: {fault}", title(.codec))]
    BadTable {
        codec: PlaneCodec,
        fault: TableFault,
    },

    /// The stream is too short for the symbols the plane must hold, refused
    /// before decoding any.
    #[error("{} stream {stream} of {bytes} bytes cannot hold {symbols} symbols (at most {limit})", title(.codec))]
    TooManySymbols {
        codec: PlaneCodec,
        stream: usize,
        bytes: usize,
        symbols: usize,
        limit: u64,
    },

    /// A Huffman stream's recorded size runs past the block.
    #[error("Huffman stream {stream} claims {claimed} bytes, only {available} remain")]
    StreamOverrun {
        stream: usize,
        claimed: usize,
        available: usize,
    },

    /// A Huffman stream's symbols do not end in its last byte.
    #[error("Huffman stream {stream} is {bytes} bytes but its symbols use {bits_used} bits")]
    Unconsumed {
        stream: usize,
        bytes: usize,
        bits_used: u64,
    },

    /// An rANS state read from the block is outside [2^23, 2^31).
    #[error("rANS state {state} is {value:#x}, outside [2^23, 2^31)")]
    BadState { state: usize, value: u32 },

    /// The rANS stream runs out before the plane is complete.
    #[error("rANS stream ends before symbol {symbol}")]
    EndsEarly { symbol: usize },

    /// Decoding ended with states other than the initial ones or bytes left
    /// over.
    #[error("rANS block does not end cleanly (states {states:x?}, {left} stream bytes left)")]
    UncleanEnd { states: [u32; 4], left: usize },

    /// A state of an rANS32 block is outside [2^15, 2^31).
    #[error("rANS32 state of lane {lane} is {value:#x}, outside [2^15, 2^31)")]
    LaneState { lane: usize, value: u32 },

    /// An rANS32 stream is not a whole number of 16-bit words.
    #[error("rANS32 stream of {bytes} bytes is not a whole number of 16-bit words")]
    OddStream { bytes: usize },

    /// Decoding an rANS32 block ended with a lane's state other than its
    /// initial one, or with stream bytes left over.
    #[error(
        "rANS32 block does not end cleanly (lane {lane} ends at {state:#x}, not 0x8000; {left} stream bytes left)"
    )]
    LanesUnclean {
        lane: usize,
        state: u32,
        left: usize,
    },

    /// A split plane's part A runs over the room its part B needs.
    #[error(
        "split plane: part A of {claimed} bytes leaves no room for part B in {available} bytes"
    )]
    PartOverrun { claimed: usize, available: usize },

    /// A split plane's part is stored with a codec a part may not use.
    #[error("split plane: part {part} has codec {code}")]
    PartCodec { part: char, code: u8 },

    /// The plane-0 key leaves one part of a split plane empty (the encoder
    /// never splits so).
    #[error("split plane: {count} of {len} elements have plane-0 byte {key}, so a part is empty")]
    EmptyPart { key: u8, count: usize, len: usize },

    /// A part of a split plane does not decode.
    #[error("split plane, part {part}: {source}")]
    InPart {
        part: char,
        #[source]
        source: Box<DecodeError>,
    },

    /// A runs plane's stream is stored with a codec a stream may not use.
    #[error("runs plane: its {stream} have codec {code}")]
    StreamCodec { stream: &'static str, code: u8 },

    /// A stream of a runs plane does not decode.
    #[error("runs plane, {stream}: {source}")]
    InStream {
        stream: &'static str,
        #[source]
        source: Box<DecodeError>,
    },

    /// A runs plane's tokens place bytes beyond the plane's end.
    #[error("runs plane: tokens cover {covered} bytes of a {len}-byte plane")]
    RunsOverflow { covered: usize, len: usize },

    /// A runs plane's token is outside the alphabet.
    #[error("runs plane: token {token} is not a run length code")]
    BadToken { token: u8 },

    /// A runs plane's extra bits end before its tokens need them.
    #[error("runs plane: the {bytes} bytes of extra bits end before the last token")]
    ExtraBitsEnd { bytes: usize },

    /// A runs plane's extra bits go on after its last token.
    #[error("runs plane: {left} bits of the {bytes} bytes of extra bits are left over or not 0")]
    ExtraBitsLeft { bytes: usize, left: usize },

    /// A split plane was decoded without its chunk's plane 0.
    #[error("a split plane needs its chunk's plane 0 (decode_split)")]
    NeedsLead,

    /// zstd refused the frame.
    #[error("zstd: {0}")]
    Zstd(String),
}

/// What is wrong with a code table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableFault {
    #[error("a length beyond its max symbol {max_symbol}")]
    LengthBeyondMaxSymbol { max_symbol: u8 },
    #[error("code length {length} for symbol {symbol} exceeds {max}")]
    CodeTooLong { symbol: usize, length: u8, max: u32 },
    #[error("{found} symbols, at least 2 required")]
    TooFewSymbols { found: usize },
    #[error("code lengths are not a complete prefix code (Kraft sum {kraft}/{complete})")]
    Incomplete { kraft: u32, complete: u32 },
    #[error("decode table outside the kernel's limits")]
    KernelLimits,
    #[error("frequencies sum to {found}, not {expected}")]
    FrequencySum { found: u32, expected: u32 },
    #[error("codes symbol {symbol} alone (frequency {frequency}); only a constant plane may")]
    SingleSymbol { symbol: usize, frequency: u32 },
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

    #[test]
    fn plane_errors_say_where_and_what() {
        let e = Error::PlaneDecode {
            chunk: 3,
            segment: "tensor \"w\"".into(),
            plane: 1,
            offset: 4242,
            reason: Box::new(DecodeError::InPart {
                part: 'B',
                source: Box::new(DecodeError::StreamOverrun {
                    stream: 2,
                    claimed: 900,
                    available: 12,
                }),
            }),
        };
        assert_eq!(
            e.to_string(),
            "corrupt payload: chunk 3 (tensor \"w\"), plane 1 at byte offset 4242: \
             split plane, part B: Huffman stream 2 claims 900 bytes, only 12 remain"
        );
        let inner = std::error::Error::source(&e).unwrap();
        assert!(e.to_string().ends_with(&inner.to_string()));
        assert_eq!(
            std::io::Error::from(e).kind(),
            std::io::ErrorKind::InvalidData
        );
    }
}
