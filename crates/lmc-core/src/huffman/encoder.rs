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
    STREAMS_SCRATCH.with_borrow_mut(|scratch| {
        PAIRS.with_borrow_mut(|pairs| {
            crate::kernels::huffman_encode_best(symbols, lengths, out, scratch, pairs)
        })
    })
}

/// The encoder proper, given its per-thread buffers; inlined into both
/// builds of [`crate::kernels::huffman_encode_best`] (no closure between
/// them and the loops, which would keep the loops out of the BMI2 build).
#[inline(always)]
pub(crate) fn encode_streams(
    symbols: &[u8],
    lengths: &[u8; 256],
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    pairs: &mut Vec<u32>,
) {
    let codes = canonical_codes(lengths);
    write_description(lengths, out);
    let q = symbols.len() / STREAMS;
    let sizes_at = out.len();
    out.extend_from_slice(&[0u8; 4 * (STREAMS - 1)]);

    // Each stream gets a region of its worst-case size in scratch; the four
    // writers run interleaved (independent dependency chains), then the
    // streams are appended to `out` one after another.
    let parts: [&[u8]; STREAMS] = [
        &symbols[..q],
        &symbols[q..2 * q],
        &symbols[2 * q..3 * q],
        &symbols[3 * q..],
    ];
    let bound = |n: usize| n * MAX_CODE_LEN as usize / 8 + 16;
    let mut starts = [0usize; STREAMS];
    let mut total = 0;
    for k in 0..STREAMS {
        starts[k] = total;
        total += bound(parts[k].len());
    }
    let lens = {
        if scratch.len() < total {
            scratch.resize(total, 0);
        }
        let region = &mut scratch[..total];
        let mut w = starts.map(|s| StreamWriter {
            pos: s,
            acc: 0,
            nbits: 0,
        });

        // Interleaved part: groups of 4 symbols from each stream, coded two
        // at a time through the pair table. Filling the table costs (symbols
        // used)^2 writes, so a block with fewer symbols than that to code
        // (the random half of a split plane, say) codes them one by one.
        let used = lengths.iter().filter(|&&l| l > 0).count();
        let groups = if used * used <= symbols.len() {
            q / 4
        } else {
            0
        };
        if groups > 0 {
            let pairs = fill_pair_table(pairs, &codes);
            for g in 0..groups {
                let i = g * 4;
                for (k, wk) in w.iter_mut().enumerate() {
                    let syms: &[u8; 4] = parts[k][i..i + 4].try_into().unwrap();
                    wk.put_pairs(syms, pairs, region);
                }
            }
        }
        // The rest of each stream (stream 3 may be up to 3 symbols longer).
        let mut lens = [0usize; STREAMS];
        for (k, wk) in w.iter_mut().enumerate() {
            let rest = &parts[k][groups * 4..];
            let mut it = rest.chunks_exact(4);
            for c in &mut it {
                wk.put4(c.try_into().unwrap(), &codes, region);
            }
            for &s in it.remainder() {
                let c = codes[s as usize];
                wk.acc |= ((c & 0xFFFF) as u64) << wk.nbits;
                wk.nbits += c >> 16;
            }
            lens[k] = wk.finish(region) - starts[k];
        }
        for k in 0..STREAMS {
            out.extend_from_slice(&region[starts[k]..starts[k] + lens[k]]);
        }
        lens
    };
    for (k, &len) in lens.iter().enumerate().take(STREAMS - 1) {
        let o = sizes_at + 4 * k;
        out[o..o + 4].copy_from_slice(&(len as u32).to_le_bytes());
    }
}

/// Pair table entry: the two codes concatenated (first code in the low
/// bits; at most 22 bits) and their total length above them.
const PAIR_LEN_SHIFT: u32 = 27;
const PAIR_CODE_MASK: u32 = (1 << PAIR_LEN_SHIFT) - 1;

/// Fills the entries of `table` for every pair of coded symbols `(s1, s2)`,
/// indexed by `s1 | s2 << 8`: one lookup codes two symbols. Only the pairs
/// of symbols that occur are written, so the cost is (symbols used)^2, and
/// the entries in use stay few enough for L1 cache.
fn fill_pair_table<'t>(table: &'t mut Vec<u32>, codes: &[u32; 256]) -> &'t [u32; 1 << 16] {
    table.resize(1 << 16, 0);
    let used: Vec<(usize, u32, u32)> = codes
        .iter()
        .enumerate()
        .filter(|(_, c)| *c >> 16 != 0)
        .map(|(s, c)| (s, c & 0xFFFF, c >> 16))
        .collect();
    for &(s2, c2, l2) in &used {
        for &(s1, c1, l1) in &used {
            table[s1 | s2 << 8] = (c1 | c2 << l1) | (l1 + l2) << PAIR_LEN_SHIFT;
        }
    }
    table.as_slice().try_into().expect("length set above")
}

thread_local! {
    /// Per-thread pair table (256 KiB), reused from block to block.
    static PAIRS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread room for the four streams before they are appended.
    static STREAMS_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A bit writer over a region of the output, least significant bit first.
struct StreamWriter {
    pos: usize,
    acc: u64,
    nbits: u32,
}

impl StreamWriter {
    /// Appends four codes, then stores the whole bytes. At most
    /// 7 + 4 * 11 = 51 bits are pending, so the accumulator never overflows.
    #[inline(always)]
    fn put4(&mut self, syms: &[u8; 4], codes: &[u32; 256], buf: &mut [u8]) {
        for &s in syms {
            let c = codes[s as usize];
            self.acc |= ((c & 0xFFFF) as u64) << self.nbits;
            self.nbits += c >> 16;
        }
        buf[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let whole = self.nbits >> 3;
        self.pos += whole as usize;
        self.acc >>= whole * 8;
        self.nbits &= 7;
    }

    /// Appends four codes looked up as two pairs (see [`fill_pair_table`]).
    /// At most 7 + 2 * 22 = 51 bits are pending.
    #[inline(always)]
    fn put_pairs(&mut self, syms: &[u8; 4], pairs: &[u32; 1 << 16], buf: &mut [u8]) {
        let a = pairs[u16::from_le_bytes([syms[0], syms[1]]) as usize];
        let b = pairs[u16::from_le_bytes([syms[2], syms[3]]) as usize];
        self.acc |= ((a & PAIR_CODE_MASK) as u64) << self.nbits;
        self.nbits += a >> PAIR_LEN_SHIFT;
        self.acc |= ((b & PAIR_CODE_MASK) as u64) << self.nbits;
        self.nbits += b >> PAIR_LEN_SHIFT;
        buf[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let whole = self.nbits >> 3;
        self.pos += whole as usize;
        self.acc >>= whole * 8;
        self.nbits &= 7;
    }

    /// Writes the pending bits, zero-padded to a byte; returns the end position.
    fn finish(&mut self, buf: &mut [u8]) -> usize {
        buf[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        self.pos += self.nbits.div_ceil(8) as usize;
        self.pos
    }
}
