//! Canonical, length-limited Huffman coding of byte streams.
//!
//! Huffman, David A. "A Method for the Construction of Minimum-Redundancy
//! Codes." Proc. IRE 40(9), 1952. Codes are canonical (Schwartz & Kallick,
//! 1964), so a table is described by its code lengths alone, and limited to
//! [`MAX_CODE_LEN`] bits so a decoder resolves every symbol with one lookup
//! in a 2^11-entry table that stays in L1 cache (the choice of zstd's huff0).
//!
//! A block is cut into [`STREAMS`] independent bit streams decoded in one
//! interleaved loop: the lookups of the streams do not depend on each other,
//! so the CPU overlaps them.
//!
//! Layout of an encoded block (normative text in FORMAT.md, "Huffman plane"):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | `max_symbol`: largest symbol with a code |
//! | ceil((max_symbol+1)/2) | code length of symbols 0..=max_symbol, 4 bits each, low nibble first; 0 = no code |
//! | 3 x 4 | byte length of streams 0, 1, 2 (u32 LE); stream 3 takes the rest |
//! | ... | the four streams |
//!
//! Stream `k < 3` holds symbols `[k*q, (k+1)*q)` with `q = n / 4`; stream 3
//! holds `[3q, n)`. Bits are written least significant first; each code is
//! stored bit-reversed so the decoder can index its table with the low bits.

mod decoder;
pub(crate) mod encoder;
mod table;

pub use decoder::decode;
pub use encoder::{encode, encoded_size};
pub use table::{code_lengths, histogram};

/// Longest code, in bits. Also the decode table's index width.
pub const MAX_CODE_LEN: u32 = 11;
/// Number of interleaved streams per block.
pub const STREAMS: usize = 4;
