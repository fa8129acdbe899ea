//! Huffman block encoder.

use super::table::{canonical_codes, code_lengths, description_size, write_description};
use super::{MAX_CODE_LEN, STREAMS};

/// Upper bound (tight to a few bytes) on the size of the block [`encode`]
/// would write for data with histogram `hist` and these code lengths,
/// computed without encoding.
pub fn encoded_size(hist: &[u32; 256], lengths: &[u8; 256]) -> usize {
    let bits: u64 = hist
        .iter()
        .zip(lengths.iter())
        .map(|(&f, &l)| f as u64 * l as u64)
        .sum();
    // Each stream is padded to a whole byte: at most one byte a stream.
    description_size(lengths) + 4 * (STREAMS - 1) + (bits / 8) as usize + STREAMS
}

/// Encodes `symbols` (whose histogram is `hist`) as one Huffman block
/// appended to `out`, and returns the code lengths used.
///
/// Returns `None`, leaving `out` untouched, when fewer than two distinct
/// symbols occur: such data is a constant and is stored as one.
pub fn encode(symbols: &[u8], hist: &[u32; 256], out: &mut Vec<u8>) -> Option<[u8; 256]> {
    let lengths = code_lengths(hist, MAX_CODE_LEN);
    if lengths.iter().filter(|&&l| l > 0).count() < 2 {
        return None;
    }
    encode_with(symbols, &lengths, out);
    Some(lengths)
}

/// Encodes with given code lengths (every symbol of `symbols` must have one).
pub(crate) fn encode_with(symbols: &[u8], lengths: &[u8; 256], out: &mut Vec<u8>) {
    let codes = canonical_codes(lengths);
    write_description(lengths, out);
    let q = symbols.len() / STREAMS;
    let sizes_at = out.len();
    out.extend_from_slice(&[0u8; 4 * (STREAMS - 1)]);
    for k in 0..STREAMS {
        let part = if k + 1 < STREAMS {
            &symbols[k * q..(k + 1) * q]
        } else {
            &symbols[k * q..]
        };
        let len = encode_stream(part, &codes, out);
        if k + 1 < STREAMS {
            let at = sizes_at + 4 * k;
            out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        }
    }
}

/// Appends one bit stream; returns its length in bytes.
fn encode_stream(symbols: &[u8], codes: &[u32; 256], out: &mut Vec<u8>) -> usize {
    let start = out.len();
    // Worst case MAX_CODE_LEN bits a symbol, plus 8 bytes of slack for the
    // whole-word stores below.
    out.resize(start + symbols.len() * MAX_CODE_LEN as usize / 8 + 16, 0);
    let buf = &mut out[start..];
    let mut pos = 0usize;
    let mut acc = 0u64;
    let mut nbits = 0u32;
    let mut groups = symbols.chunks_exact(4);
    for g in &mut groups {
        // At most 7 + 4 * 11 = 51 bits pending: fits in the accumulator.
        for &s in g {
            let c = codes[s as usize];
            acc |= ((c & 0xFFFF) as u64) << nbits;
            nbits += c >> 16;
        }
        buf[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
        let whole = nbits >> 3;
        pos += whole as usize;
        acc >>= whole * 8;
        nbits &= 7;
    }
    for &s in groups.remainder() {
        let c = codes[s as usize];
        acc |= ((c & 0xFFFF) as u64) << nbits;
        nbits += c >> 16;
    }
    // Flush what is left (at most 7 + 3 * 11 bits), padding with zeros.
    let tail = nbits.div_ceil(8) as usize;
    buf[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
    pos += tail;
    out.truncate(start + pos);
    pos
}
