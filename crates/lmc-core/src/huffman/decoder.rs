//! Huffman block decoder: one table lookup a symbol, four streams interleaved.

use super::table::read_description;
use super::{MAX_CODE_LEN, STREAMS};

const TABLE_SIZE: usize = 1 << MAX_CODE_LEN;
const TABLE_MASK: u64 = TABLE_SIZE as u64 - 1;
/// Symbols decoded per stream between refills: 5 x 11 bits <= 56.
const BURST: usize = 5;

/// Decode table: entry = `symbol << 8 | code length`, indexed by the next
/// `MAX_CODE_LEN` bits of the stream.
struct Table([u16; TABLE_SIZE]);

impl Table {
    fn new(lengths: &[u8; 256]) -> Table {
        let codes = super::table::canonical_codes(lengths);
        let mut t = [0u16; TABLE_SIZE];
        for (s, &c) in codes.iter().enumerate() {
            let len = c >> 16;
            if len == 0 {
                continue;
            }
            let code = (c & 0xFFFF) as usize;
            let entry = (s as u16) << 8 | len as u16;
            let mut i = code;
            while i < TABLE_SIZE {
                t[i] = entry;
                i += 1 << len;
            }
        }
        Table(t)
    }
}

/// Reads a stream least significant bit first. Past the end it reads zeros;
/// [`BitReader::finish`] then reports the overrun.
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load into `buf`.
    pos: usize,
    buf: u64,
    /// Valid bits in `buf`.
    nbits: u32,
}

impl BitReader<'_> {
    #[inline(always)]
    fn can_refill_fast(&self) -> bool {
        self.pos + 8 <= self.data.len()
    }

    /// Tops the buffer up to at least 56 bits with one unaligned load
    /// (Giesen, "Reading bits in far too many ways", 2018, variant 4).
    #[inline(always)]
    fn refill_fast(&mut self) {
        let word: [u8; 8] = self.data[self.pos..self.pos + 8].try_into().unwrap();
        self.buf |= u64::from_le_bytes(word) << self.nbits;
        self.pos += ((63 - self.nbits) >> 3) as usize;
        self.nbits |= 56;
    }

    fn refill_slow(&mut self) {
        while self.nbits <= 56 {
            let b = self.data.get(self.pos).copied().unwrap_or(0);
            self.buf |= (b as u64) << self.nbits;
            self.pos += 1;
            self.nbits += 8;
        }
    }

    #[inline(always)]
    fn decode(&mut self, table: &Table) -> u8 {
        let e = table.0[(self.buf & TABLE_MASK) as usize];
        let len = (e & 0xFF) as u32;
        self.buf >>= len;
        self.nbits -= len;
        (e >> 8) as u8
    }

    /// Checks that the stream was consumed to its last byte and not beyond.
    fn finish(&self, stream: usize) -> Result<(), String> {
        let consumed_bits = self.pos as u64 * 8 - self.nbits as u64;
        let avail = self.data.len() as u64 * 8;
        if consumed_bits > avail || avail - consumed_bits >= 8 {
            return Err(format!(
                "Huffman stream {stream} is {} bytes but its symbols use {consumed_bits} bits",
                self.data.len()
            ));
        }
        Ok(())
    }
}

/// Multi-symbol decode table: each entry holds every whole code found in
/// the next 11 bits, up to four: `bits | count << 8 | symbols << 32` (the
/// symbols as four bytes, first symbol lowest). The bit count sits lowest
/// so the shift that consumes the bits takes the entry as it is (one step
/// less on the critical path). Exponent planes spend ~2.6 bits a symbol, so
/// a lookup emits three or four symbols most of the time (huff0's "X2"
/// decoder emits up to two).
struct MultiTable([u64; TABLE_SIZE]);

/// Most symbols one multi-table entry emits.
const MULTI: usize = 4;

impl MultiTable {
    fn new(single: &Table) -> MultiTable {
        let mut t = [0u64; TABLE_SIZE];
        for (i, e) in t.iter_mut().enumerate() {
            let (mut used, mut count, mut syms) = (0u32, 0u64, 0u64);
            while count < MULTI as u64 {
                let next = single.0[i >> used];
                let len = (next & 0xFF) as u32;
                if used + len > MAX_CODE_LEN {
                    break;
                }
                syms |= ((next >> 8) as u64) << (8 * count);
                used += len;
                count += 1;
            }
            // The first code always fits: every code is at most 11 bits.
            *e = used as u64 | count << 8 | syms << 32;
        }
        MultiTable(t)
    }
}

/// One stream's state in the fast loop, kept in locals.
struct Fast<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    nbits: u32,
    out: usize,
    end: usize,
}

/// Decodes `N` streams together until any runs short of input bytes for a
/// whole-word refill or of room for a burst. Arrays indexed by constants
/// are unrolled and kept in registers by the compiler.
#[inline(always)]
fn fast_n<const N: usize>(table: &MultiTable, out: &mut [u8], f: [&mut Fast; N]) {
    let data: [&[u8]; N] = std::array::from_fn(|k| f[k].data);
    let end: [usize; N] = std::array::from_fn(|k| f[k].end);
    let mut b: [u64; N] = std::array::from_fn(|k| f[k].buf);
    let mut n: [u32; N] = std::array::from_fn(|k| f[k].nbits);
    let mut i: [usize; N] = std::array::from_fn(|k| f[k].pos);
    let mut o: [usize; N] = std::array::from_fn(|k| f[k].out);
    'outer: loop {
        for k in 0..N {
            if i[k] + 8 > data[k].len() || o[k] + MULTI * BURST > end[k] {
                break 'outer;
            }
        }
        for k in 0..N {
            let word: [u8; 8] = data[k][i[k]..i[k] + 8].try_into().unwrap();
            b[k] |= u64::from_le_bytes(word) << n[k];
            i[k] += ((63 - n[k]) >> 3) as usize;
            n[k] |= 56;
        }
        for _ in 0..BURST {
            for k in 0..N {
                let e = table.0[(b[k] & TABLE_MASK) as usize];
                out[o[k]..o[k] + MULTI].copy_from_slice(&((e >> 32) as u32).to_le_bytes());
                o[k] += ((e >> 8) & 0xFF) as usize;
                b[k] >>= e & 63;
                n[k] -= (e & 0xFF) as u32;
            }
        }
    }
    for (k, fk) in f.into_iter().enumerate() {
        (fk.buf, fk.nbits, fk.pos, fk.out) = (b[k], n[k], i[k], o[k]);
    }
}

/// Decodes one Huffman block into `out`, whose length is the number of
/// symbols. Any malformed input gives an error, never a panic.
pub fn decode(block: &[u8], out: &mut [u8]) -> Result<(), String> {
    let (lengths, used) = read_description(block)?;
    let table = Table::new(&lengths);
    let sizes_len = 4 * (STREAMS - 1);
    let sizes = block
        .get(used..used + sizes_len)
        .ok_or("Huffman block too short for its stream sizes")?;
    let mut rest = &block[used + sizes_len..];
    let mut streams: [&[u8]; STREAMS] = [&[]; STREAMS];
    for (k, s) in streams.iter_mut().enumerate().take(STREAMS - 1) {
        let len = u32::from_le_bytes(sizes[4 * k..4 * k + 4].try_into().unwrap()) as usize;
        if len > rest.len() {
            return Err(format!(
                "Huffman stream {k} claims {len} bytes, only {} remain",
                rest.len()
            ));
        }
        let (a, b) = rest.split_at(len);
        *s = a;
        rest = b;
    }
    streams[STREAMS - 1] = rest;

    let n = out.len();
    let q = n / STREAMS;
    let bounds = [0, q, 2 * q, 3 * q, n];
    let mut f: [Fast; STREAMS] = std::array::from_fn(|k| Fast {
        data: streams[k],
        pos: 0,
        buf: 0,
        nbits: 0,
        out: bounds[k],
        end: bounds[k + 1],
    });

    // Fast loop: all streams at once, five lookups each per refill (5 x 11
    // bits <= 56), each lookup emitting one to four symbols.
    if n >= 64 {
        let multi = MultiTable::new(&table);
        let [f0, f1, f2, f3] = &mut f;
        // Measured on MiniLM's BF16 exponent plane (examples/kernels.rs):
        // one symbol a lookup 1.39 GB/s; up to two, streams in pairs
        // 1.50 GB/s; up to two, four streams 1.63-1.78 GB/s; up to four,
        // four streams 2.79 GB/s.
        fast_n(&multi, out, [f0, f1, f2, f3]);
    }

    // Tails, one stream and one symbol at a time, with bounds-checked refills.
    for (k, fk) in f.iter().enumerate() {
        let mut rd = BitReader {
            data: fk.data,
            pos: fk.pos,
            buf: fk.buf,
            nbits: fk.nbits,
        };
        for x in out[fk.out..fk.end].iter_mut() {
            if rd.nbits < MAX_CODE_LEN {
                if rd.can_refill_fast() {
                    rd.refill_fast();
                } else {
                    rd.refill_slow();
                }
            }
            *x = rd.decode(&table);
        }
        rd.finish(k)?;
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

    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        }
    }

    #[test]
    fn small_and_odd_lengths() {
        for n in 2..200 {
            let data: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
            round_trip(&data);
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
