//! Huffman block decoder: four streams interleaved, up to four symbols a
//! table lookup (the loop itself is in [`crate::kernels`]).

use super::table::read_description;
use super::{MAX_CODE_LEN, STREAMS};
use crate::codec::PlaneCodec;
use crate::error::{DecodeError, TableFault};
use crate::kernels::{self, MULTI, StreamPos};

const TABLE_SIZE: usize = 1 << MAX_CODE_LEN;
const TABLE_MASK: u64 = TABLE_SIZE as u64 - 1;
const _: () = assert!(MAX_CODE_LEN == kernels::HUFFMAN_TABLE_BITS);
/// Whether a block of `n` symbols whose codes average `mean_bits` decodes
/// faster with the multi-symbol table (a walk of every code sequence that
/// fits in a lookup) than with the one-symbol table (each entry written
/// once), both built for the block. Measured by decoding
/// slices of real planes (pretrain BF16 weights and their XOR delta), one
/// symbol a lookup against up to four, in MB/s:
///
/// | bits a symbol | 4096 symbols | 16384 | 65536 |
/// |---|---|---|---|
/// | 1.2 | 602 / 514 | 955 / 1514 | 1092 / 3132 |
/// | 2.6 | 637 / 475 | 962 / 1418 | 1084 / 2813 |
/// | 5.3 | 613 / 460 | 940 / 1036 | 1091 / 1563 |
/// | 8.0 | 568 / 434 | 901 / 806 | 1067 / 997 |
fn multi_pays(n: usize, mean_bits: f64) -> bool {
    match mean_bits {
        m if m <= 4.0 => n >= 8192,
        m if m <= 7.0 => n >= 16384,
        _ => false,
    }
}
/// Blocks of fewer symbols are decoded by the plain loop alone.
const FAST_MIN_SYMBOLS: usize = 256;

/// A one-symbol table in the kernel's entry format (`bits | 1 << 8 |
/// symbol << 32`): what the kernel uses where a multi-symbol table would
/// not pay for its build, and what the tails are decoded with.
/// Every entry of `t` is written (the code is complete: the kernel's
/// check refuses a table where one is not).
fn single_table(codes: &[u32; 256], t: &mut [u64; TABLE_SIZE]) {
    for (s, &c) in codes.iter().enumerate() {
        let len = c >> 16;
        if len == 0 {
            continue;
        }
        let code = (c & 0xFFFF) as usize;
        let entry = u64::from(len) | 1 << 8 | (s as u64) << 32;
        for e in t[code..].iter_mut().step_by(1 << len) {
            *e = entry;
        }
    }
}

/// The mean code length, in bits, under the probabilities the lengths
/// imply (2^-len each): how many symbols a lookup of the multi-symbol
/// table would emit, about `MAX_CODE_LEN` over it.
fn implied_mean_bits(codes: &[u32; 256]) -> f64 {
    let scaled: u64 = codes
        .iter()
        .map(|&c| u64::from(c >> 16))
        .filter(|&len| len > 0)
        .map(|len| len << (MAX_CODE_LEN as u64 - len))
        .sum();
    scaled as f64 / TABLE_SIZE as f64
}

/// Reads the bits of stream `data` from bit `bit` on, least significant
/// first; past the end of the stream it reads zeros ([`check_consumed`]
/// then reports the overrun).
#[inline]
fn peek(data: &[u8], bit: u64) -> u64 {
    let byte = (bit >> 3) as usize;
    let word = match data.get(byte..byte + 8) {
        Some(w) => u64::from_le_bytes(w.try_into().unwrap()),
        None => data
            .iter()
            .skip(byte)
            .rev()
            .fold(0u64, |acc, &b| acc << 8 | b as u64),
    };
    word >> (bit & 7)
}

/// Checks that a stream of `len` bytes was consumed to its last byte
/// (`used` bits) and not beyond.
fn check_consumed(stream: usize, len: usize, used: u64) -> Result<(), DecodeError> {
    let avail = len as u64 * 8;
    if used > avail || avail - used >= 8 {
        return Err(DecodeError::Unconsumed {
            stream,
            bytes: len,
            bits_used: used,
        });
    }
    Ok(())
}

/// Multi-symbol decode table: each entry holds every whole code found in
/// the next 11 bits, up to four: `bits | count << 8 | symbols << 32` (the
/// symbols as four bytes, first symbol lowest, unused ones zero). The bit
/// count sits lowest so the shift that consumes the bits takes the entry as
/// it is. Exponent planes spend ~2.6 bits a symbol, so a lookup emits three
/// or four symbols most of the time (huff0's "X2" decoder emits up to two).
struct MultiTable([u64; TABLE_SIZE]);

impl MultiTable {
    /// Walks the code sequences that fit in 11 bits, shortest codes first:
    /// every sequence of one to four codes writes its entry at each index
    /// whose low bits spell it, and longer sequences overwrite the entries
    /// of their prefixes. (Measured on an exponent-like code: 6 us a table,
    /// against 9 us decoding up to four codes per entry one after another
    /// and 15 us doing that without branches.)
    /// `codes`: the canonical codes of the block's lengths.
    fn build(&mut self, codes: &[u32; 256]) {
        // (symbol, code, length), shortest first, on the stack. The order
        // among codes of one length does not matter: their entries are
        // disjoint (the code is prefix-free).
        let mut syms = [(0u64, 0usize, 0u32); 256];
        let mut n = 0;
        for (s, &c) in codes.iter().enumerate() {
            if c >> 16 != 0 {
                syms[n] = (s as u64, (c & 0xFFFF) as usize, c >> 16);
                n += 1;
            }
        }
        let syms = &mut syms[..n];
        syms.sort_unstable_by_key(|&(_, _, len)| len);
        self.fill(syms, 0, 0, 0, 0);
    }

    /// Writes the entries of every sequence that extends `prefix` (its codes'
    /// bits, `used` of them; `count` symbols, `symbols` their bytes).
    fn fill(
        &mut self,
        syms: &[(u64, usize, u32)],
        prefix: usize,
        used: u32,
        count: u64,
        symbols: u64,
    ) {
        let shortest = syms.first().map_or(MAX_CODE_LEN + 1, |s| s.2);
        for &(sym, code, len) in syms {
            let u = used + len;
            if u > MAX_CODE_LEN {
                break;
            }
            let p = prefix | code << used;
            let sy = symbols | sym << (8 * count);
            let c = count + 1;
            let entry = u as u64 | c << 8 | sy << 32;
            for e in self.0[p..].iter_mut().step_by(1 << u) {
                *e = entry;
            }
            if c < MULTI as u64 && u + shortest <= MAX_CODE_LEN {
                self.fill(syms, p, u, c, sy);
            }
        }
    }
}

/// Decodes one Huffman block into `out`, whose length is the number of
/// symbols. Any malformed input gives an error, never a panic.
pub fn decode(block: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let (lengths, used) = read_description(block)?;
    let codes = super::table::canonical_codes(&lengths);
    let mut single = [0u64; TABLE_SIZE];
    single_table(&codes, &mut single);
    let sizes_len = 4 * (STREAMS - 1);
    let sizes = block
        .get(used..used + sizes_len)
        .ok_or(DecodeError::Truncated {
            codec: PlaneCodec::Huffman,
            part: "stream sizes",
            needed: used + sizes_len,
            available: block.len(),
        })?;
    // The streams lie one after another in `data`: stream k from
    // starts[k] to starts[k + 1].
    let data = &block[used + sizes_len..];
    let mut starts = [0usize; STREAMS + 1];
    for k in 0..STREAMS - 1 {
        let len = u32::from_le_bytes(sizes[4 * k..4 * k + 4].try_into().unwrap()) as usize;
        starts[k + 1] = starts[k] + len;
        if starts[k + 1] > data.len() {
            return Err(DecodeError::StreamOverrun {
                stream: k,
                claimed: len,
                available: data.len() - starts[k],
            });
        }
    }
    starts[STREAMS] = data.len();

    let n = out.len();
    let q = n / STREAMS;
    let bounds = [0, q, 2 * q, 3 * q, n];
    // Every code is at least one bit: a stream too short for its symbols
    // is refused before any is decoded, not after reading zeros to its end.
    for k in 0..STREAMS {
        let (len, symbols) = (starts[k + 1] - starts[k], bounds[k + 1] - bounds[k]);
        if (len as u64) * 8 < symbols as u64 {
            return Err(DecodeError::TooManySymbols {
                codec: PlaneCodec::Huffman,
                stream: k,
                bytes: len,
                symbols,
                limit: len as u64 * 8,
            });
        }
    }
    let mut pos: [StreamPos; STREAMS] = std::array::from_fn(|k| StreamPos {
        bit: starts[k] as u64 * 8,
        out: bounds[k],
    });

    // Fast loops: all streams at once, five lookups each per refill (5 x
    // 11 bits <= 55), each lookup emitting one to four symbols; then each
    // stream alone, since streams of unequal entropy stop the joint loop
    // at different distances from their ends.
    if n >= FAST_MIN_SYMBOLS {
        let mut built = MultiTable([0u64; TABLE_SIZE]);
        let entries = if multi_pays(n, implied_mean_bits(&codes)) {
            built.build(&codes);
            &built.0
        } else {
            &single
        };
        // A complete code fills every entry within the kernel's limits.
        let multi = kernels::HuffmanDecodeTable::new(entries).ok_or(DecodeError::BadTable {
            codec: PlaneCodec::Huffman,
            fault: TableFault::KernelLimits,
        })?;
        // Measured on MiniLM's BF16 exponent plane (examples/kernels.rs):
        // one symbol a lookup 1.39 GB/s; up to two, streams in pairs
        // 1.50 GB/s; up to two, four streams 1.63-1.78 GB/s; up to four,
        // four streams 2.79 GB/s.
        kernels::huffman_decode_best::<STREAMS, { kernels::CHECKED }>(
            &multi,
            data,
            [starts[1], starts[2], starts[3], starts[4]],
            out,
            [bounds[1], bounds[2], bounds[3], bounds[4]],
            &mut pos,
        );
        for k in 0..STREAMS {
            let mut one = [pos[k]];
            kernels::huffman_decode_best::<1, { kernels::CHECKED }>(
                &multi,
                data,
                [starts[k + 1]],
                out,
                [bounds[k + 1]],
                &mut one,
            );
            pos[k] = one[0];
        }
    }

    // Tails, one symbol at a time.
    for k in 0..STREAMS {
        let stream = &data[starts[k]..starts[k + 1]];
        let mut bit = pos[k].bit - starts[k] as u64 * 8;
        for x in out[pos[k].out..bounds[k + 1]].iter_mut() {
            let e = single[(peek(stream, bit) & TABLE_MASK) as usize];
            *x = (e >> 32) as u8;
            bit += e & 0xFF;
        }
        check_consumed(k, stream.len(), bit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{encode, encoded_size, histogram};
    use super::*;

    fn round_trip(data: &[u8]) -> usize {
        let hist = histogram(data);
        let mut block = Vec::new();
        let lengths = encode(data, &hist, &mut block).expect("two or more symbols");
        assert!(block.len() <= encoded_size(&hist, &lengths));
        let mut out = vec![0u8; data.len()];
        decode(&block, &mut out).unwrap();
        assert_eq!(out, data);
        block.len()
    }

    use crate::test_rng::lcg;

    /// The table built by walking code sequences equals the one built
    /// entry by entry, decoding codes one after another.
    #[test]
    fn multi_table_matches_direct_construction() {
        let mut rnd = lcg(9);
        for case in 0..50 {
            let data: Vec<u8> = (0..5000)
                .map(|_| ((rnd() % 1000) as u32).pow(2).trailing_zeros() as u8 * (case % 7 + 1))
                .chain(0..=(case * 5))
                .collect();
            let lengths = super::super::code_lengths(&histogram(&data), MAX_CODE_LEN);
            let codes = super::super::table::canonical_codes(&lengths);
            let mut single = [0u64; TABLE_SIZE];
            single_table(&codes, &mut single);
            let mut multi = MultiTable([0u64; TABLE_SIZE]);
            multi.build(&codes);
            assert!(
                kernels::HuffmanDecodeTable::new(&multi.0).is_some(),
                "case {case}"
            );
            for (i, &e) in multi.0.iter().enumerate() {
                let (mut used, mut count, mut syms) = (0u32, 0u64, 0u64);
                while count < MULTI as u64 {
                    let next = single[i >> used];
                    let len = (next & 0xFF) as u32;
                    if used + len > MAX_CODE_LEN {
                        break;
                    }
                    syms |= (next >> 32) << (8 * count);
                    used += len;
                    count += 1;
                }
                assert_eq!(
                    e & 0xFFFF,
                    used as u64 | count << 8,
                    "case {case}, entry {i}"
                );
                assert_eq!(e >> 32, syms, "case {case}, entry {i}");
            }
        }
    }

    #[test]
    fn small_and_odd_lengths() {
        for n in 2..200 {
            let data: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
            round_trip(&data);
        }
    }

    /// Every path of the decoder: the plain loop alone, the kernel with
    /// the one-symbol table and with the multi-symbol one, on short and
    /// long codes, at lengths on both sides of each bar.
    #[test]
    fn every_table_choice_round_trips() {
        let mut rnd = lcg(5);
        for n in [255, 256, 257, 8191, 8192, 8193, 16383, 16384, 16385, 70_000] {
            // Mostly zeros (about a bit a symbol), then 64 symbols (about 6).
            let short: Vec<u8> = (0..n)
                .map(|_| u8::from(rnd().is_multiple_of(16)) * (rnd() % 8) as u8)
                .collect();
            let long: Vec<u8> = (0..n).map(|_| (rnd() % 64) as u8).collect();
            for data in [short, long] {
                let codes = super::super::table::canonical_codes(&super::super::code_lengths(
                    &histogram(&data),
                    MAX_CODE_LEN,
                ));
                let mean = implied_mean_bits(&codes);
                assert!(mean <= 4.0 || (5.0..=7.0).contains(&mean), "{mean}");
                round_trip(&data);
            }
        }
    }

    #[test]
    fn all_256_symbols() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let size = round_trip(&data);
        assert!(size <= 100_000 + 200);
    }

    #[test]
    fn skewed_data_compresses_near_entropy() {
        let mut rnd = lcg(1);
        // Geometric-ish distribution: entropy about 2 bits.
        let data: Vec<u8> = (0..1_000_000)
            .map(|_| (rnd() as u32).trailing_zeros().min(40) as u8)
            .collect();
        let size = round_trip(&data);
        assert!(size < 1_000_000 * 21 / 80, "{size}");
    }

    #[test]
    fn skew_that_hits_the_length_limit() {
        let mut rnd = lcg(2);
        // One dominant symbol and a long tail of rare ones: unlimited
        // Huffman would give the rare ones more than 11 bits.
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                let r = rnd() % 100_000;
                if r < 99_000 { 0 } else { (r % 255 + 1) as u8 }
            })
            .collect();
        round_trip(&data);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rnd = lcg(3);
        let data: Vec<u8> = (0..5000).map(|_| (rnd() % 5) as u8).collect();
        let hist = histogram(&data);
        let mut block = Vec::new();
        encode(&data, &hist, &mut block).unwrap();
        let mut out = vec![0u8; data.len()];
        for i in 0..block.len() {
            let mut bad = block.clone();
            bad[i] ^= 1 << (rnd() % 8);
            let _ = decode(&bad, &mut out);
            let _ = decode(&bad[..i], &mut out);
        }
        // Asking for more symbols than were encoded reads past the end.
        let mut longer = vec![0u8; data.len() + 100];
        assert!(decode(&block, &mut longer).is_err());
    }
}
