//! rANS with 32 interleaved states and 16-bit renormalisation, for skewed
//! planes at several times the speed of [`crate::rans`]: that coder with
//! the layout of htscodecs' "rANS 32x16" (Bonfield, J. K. "CRAM 3.1:
//! advances in the CRAM file format", Bioinformatics 38(6), 2022; Giesen,
//! F. "Interleaved entropy coders", arXiv:1402.3392, 2014).
//!
//! Symbol *i* is coded by state *i* mod 32. A state lives in [2^15, 2^31),
//! so after a decode step it is at least 2^3 and one 16-bit word always
//! renormalises it: a step reads either nothing or one word, and 32 lanes
//! step in lock-step in SIMD registers ([`crate::kernels::rans32_decode`],
//! AVX2 or AVX-512 chosen at run time). The frequency table and its 12-bit
//! scale are those of [`crate::rans`].
//!
//! Block layout (normative text in FORMAT.md, "rANS32 block"):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | `max_symbol` |
//! | 1 or 2 each | frequency of symbols 0..=max_symbol, as in an rANS block |
//! | 32 x 4 | the decoder's initial states (u32 LE), lane 0 first |
//! | rest | the stream: 16-bit little-endian words |
//!
//! Decoding symbol *i* with `x = states[i % 32]`: `slot = x % 4096`, `s`
//! the symbol whose cumulative range holds `slot`, `x = f[s] * (x / 4096) +
//! slot - cum[s]`, then if `x < 2^15`, `x = x << 16 | next word`. A valid
//! block ends with every state back at 2^15 and the stream consumed.

use crate::codec::PlaneCodec;
use crate::error::DecodeError;
use crate::kernels::{self, RANS32_LANES, RANS32_LOW, Rans32EncTable, Rans32Table};
use crate::rans::{self, EncSymbol, SCALE_BITS};

/// Interleaved states.
pub const LANES: usize = RANS32_LANES;
/// Bytes of the states in a block.
pub const STATES_LEN: usize = 4 * LANES;
/// Most symbols a valid block decodes per stream word, counting two words
/// more for each state. Every frequency is below 4096 (a block of one
/// symbol is refused), so a step takes at least `floor(x / 4096)` from a
/// state `x >= 2^15`, at least 7/8 of `x / 4096`: 51,920 steps shrink a
/// state 2^16-fold, which each word undoes; an initial state (below 2^31)
/// holds 16 bits above the final 2^15. A block that claims more symbols
/// is refused before any is decoded.
const MAX_SYMBOLS_PER_WORD: u64 = 52_000;

/// Bytes a block of the symbols counted in `hist` would take (within a few
/// bytes); `None` if no symbol is present.
pub fn estimated_size(hist: &[u32; 256]) -> Option<usize> {
    rans::coded_size(hist).map(size_of_coded)
}

/// Bytes a block takes whose stream and table take `c`: the final states
/// carry part of the information (their bits above 2^15, about 8 a state
/// on average), so the stream is that much shorter.
pub fn size_of_coded(c: rans::CodedSize) -> usize {
    (c.stream + 2).saturating_sub(LANES) + c.table + STATES_LEN
}

thread_local! {
    /// Per-thread room for the encoder's words, reused from block to block.
    static ENC_SCRATCH: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What the encoder needs of one symbol: [`EncSymbol`] with this coder's
/// renormalisation bound.
fn enc_symbol(cum: u32, freq: u32) -> EncSymbol {
    let mut e = EncSymbol::new(cum, freq);
    // Emit a word while the state is at least this: the step then leaves
    // it below 2^31, and the decoder's step undoes it to at least 2^15.
    e.x_max = ((RANS32_LOW >> SCALE_BITS) << 16) * freq;
    e
}

/// The encoder's tables of the frequencies `freq` (summing to 4096, each
/// below it): each symbol's [`EncSymbol`], packed as the kernels read it.
fn enc_table(freq: &[u32; 256]) -> Rans32EncTable {
    let mut t = Rans32EncTable {
        rcp: [0; 256],
        packed: [0; 256],
    };
    let mut cum = 0;
    for (s, &f) in freq.iter().enumerate() {
        if f > 0 {
            let e = enc_symbol(cum, f);
            debug_assert!(e.bias < 1 << 13 && e.rcp_shift < 1 << 7);
            t.rcp[s] = e.rcp_freq;
            t.packed[s] = e.bias | f << 13 | e.rcp_shift << 25;
        }
        cum += f;
    }
    t
}

/// Appends a block coding `symbols` (whose histogram is `hist`) to `out`.
///
/// # Panics
/// If `hist` counts fewer than two symbols: a plane of one is stored as a
/// constant, and [`decode`] refuses a block of one.
pub fn encode(symbols: &[u8], hist: &[u32; 256], out: &mut Vec<u8>) {
    assert!(
        hist.iter().filter(|&&c| c > 0).count() >= 2,
        "rANS32 codes two symbols or more"
    );
    let freq = rans::normalize(hist).expect("two symbols");
    let table = enc_table(&freq);
    rans::write_freqs(&freq, out);
    // The stream is written back to front (the decoder reads it front to
    // back): at most one word a symbol, and one slot of room below the
    // last, since each step stores a word before knowing whether it counts.
    let x = ENC_SCRATCH.with_borrow_mut(|buf| {
        let cap = symbols.len() + 1;
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let buf = &mut buf[..cap];
        let mut pos = cap;
        let mut x = [RANS32_LOW; LANES];
        let n = symbols.len();
        let full = n / LANES * LANES;
        for i in (full..n).rev() {
            x[i % LANES] = kernels::rans32_put(&table, x[i % LANES], symbols[i], buf, &mut pos);
        }
        kernels::rans32_encode(&table, &symbols[..full], &mut x, buf, &mut pos);
        out.reserve(STATES_LEN + 2 * (cap - pos));
        for s in &x {
            out.extend_from_slice(&s.to_le_bytes());
        }
        for w in &buf[pos..] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        x
    });
    debug_assert!(x.iter().all(|&s| (RANS32_LOW..1 << 31).contains(&s)));
}

/// The parts of a block, checked: its decode table, initial states and
/// stream.
struct Parsed<'a> {
    table: Rans32Table,
    states: [u32; LANES],
    stream: &'a [u8],
}

/// Reads and checks a block's header for a plane of `n` symbols.
fn parse(block: &[u8], n: usize) -> Result<Parsed<'_>, DecodeError> {
    let (freq, pos) = rans::read_freqs(block, PlaneCodec::Rans32)?;
    let table = Rans32Table::new(&freq).expect("read_freqs checked the sum and the largest");
    let states_bytes = block
        .get(pos..pos + STATES_LEN)
        .ok_or(DecodeError::Truncated {
            codec: PlaneCodec::Rans32,
            part: "states",
            needed: pos + STATES_LEN,
            available: block.len(),
        })?;
    let mut states = [0u32; LANES];
    for (lane, (x, b)) in states
        .iter_mut()
        .zip(states_bytes.chunks_exact(4))
        .enumerate()
    {
        *x = u32::from_le_bytes(b.try_into().expect("4 bytes"));
        if !(RANS32_LOW..1 << 31).contains(x) {
            return Err(DecodeError::LaneState { lane, value: *x });
        }
    }
    let stream = &block[pos + STATES_LEN..];
    if !stream.len().is_multiple_of(2) {
        return Err(DecodeError::OddStream {
            bytes: stream.len(),
        });
    }
    let words = stream.len() as u64 / 2;
    let most = (words + 2 * LANES as u64).saturating_mul(MAX_SYMBOLS_PER_WORD);
    if n as u64 > most {
        return Err(DecodeError::TooManySymbols {
            codec: PlaneCodec::Rans32,
            stream: 0,
            bytes: stream.len(),
            symbols: n,
            limit: most,
        });
    }
    Ok(Parsed {
        table,
        states,
        stream,
    })
}

/// Decodes a block into `out` (its length is the symbol count). Malformed
/// blocks give an error, never a panic or a wrong result that passes.
pub fn decode(block: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let Parsed {
        table,
        mut states,
        stream,
    } = parse(block, out.len())?;
    let mut p = 0;
    let done = kernels::rans32_decode(&table, &mut states, stream, &mut p, out);
    finish(&table, &mut states, stream, &mut p, out, done)
}

/// The scalar reference decoder: [`decode`] one checked step at a time,
/// without the kernels. Tests hold the kernels to it.
pub fn decode_reference(block: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let Parsed {
        table,
        mut states,
        stream,
    } = parse(block, out.len())?;
    let mut p = 0;
    finish(&table, &mut states, stream, &mut p, out, 0)
}

/// Decodes symbols `from..` one checked step at a time, then checks the end.
fn finish(
    table: &Rans32Table,
    x: &mut [u32; LANES],
    stream: &[u8],
    p: &mut usize,
    out: &mut [u8],
    from: usize,
) -> Result<(), DecodeError> {
    for (i, o) in out.iter_mut().enumerate().skip(from) {
        let xj = &mut x[i % LANES];
        let (s, mut v) = kernels::rans32_step(table, *xj);
        if v < RANS32_LOW {
            let w = stream
                .get(*p..*p + 2)
                .ok_or(DecodeError::EndsEarly { symbol: i })?;
            v = v << 16 | u32::from(u16::from_le_bytes([w[0], w[1]]));
            *p += 2;
        }
        *o = s;
        *xj = v;
    }
    if let Some(lane) = x.iter().position(|&s| s != RANS32_LOW) {
        return Err(DecodeError::LanesUnclean {
            lane,
            state: x[lane],
            left: stream.len() - *p,
        });
    }
    if *p != stream.len() {
        return Err(DecodeError::LanesUnclean {
            lane: 0,
            state: x[0],
            left: stream.len() - *p,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::huffman::histogram;
    use crate::test_rng::lcg;

    fn encoded(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(data, &histogram(data), &mut out);
        out
    }

    /// Encodes, decodes with the kernels and with the reference, checks
    /// both give `data` back and the estimate is close; returns the size.
    fn round_trip(data: &[u8]) -> usize {
        let hist = histogram(data);
        if hist.iter().filter(|&&c| c > 0).count() < 2 {
            return 0; // a constant plane, never an rANS32 block
        }
        let mut out = vec![9u8; 3];
        encode(data, &hist, &mut out);
        let block = &out[3..];
        let mut back = vec![0u8; data.len()];
        decode(block, &mut back).unwrap();
        assert_eq!(back, data);
        let mut back = vec![1u8; data.len()];
        decode_reference(block, &mut back).unwrap();
        assert_eq!(back, data);
        let est = estimated_size(&hist).unwrap();
        assert!(
            block.len() <= est + 34 && est <= block.len() + 34,
            "estimate {est}, got {}",
            block.len()
        );
        block.len()
    }

    fn skewed(n: usize, zero_per_mille: u64, seed: u64) -> Vec<u8> {
        let mut rnd = lcg(seed);
        (0..n)
            .map(|_| {
                let r = rnd();
                if r % 1000 < zero_per_mille {
                    0
                } else {
                    (r >> 8) as u8
                }
            })
            .collect()
    }

    /// The reciprocal step equals the division it replaces for the states
    /// this coder's encoder holds before a step, [2^15, x_max).
    #[test]
    fn reciprocal_step_is_exact_on_this_range() {
        let mut rnd = lcg(3);
        for freq in 1..rans::TOTAL {
            let cum = (rans::TOTAL - freq) / 2;
            let e = enc_symbol(cum, freq);
            let check = |state: u32| {
                let want = ((state / freq) << SCALE_BITS) + state % freq + cum;
                assert_eq!(e.put(state), want, "freq {freq}, state {state}");
                assert!(want < 1 << 31, "freq {freq}, state {state}");
            };
            check(e.x_max >> 16);
            check(e.x_max - 1);
            for _ in 0..32 {
                let lo = e.x_max >> 16;
                check(lo + (rnd() % u64::from(e.x_max - lo)) as u32);
            }
        }
    }

    #[test]
    fn round_trips_every_lane_tail_and_beats_whole_bits() {
        for n in (0..300).chain([1000, 4095, 4096, 4097, 65536, 100_003]) {
            round_trip(&skewed(n, 900, n as u64 + 1));
            round_trip(&skewed(n, 0, n as u64 + 2));
        }
        round_trip(&(0..=255u8).cycle().take(10_000).collect::<Vec<_>>());
        let mut one_other = [7u8; 100];
        one_other[50] = 8;
        round_trip(&one_other);
        // 95% zeros: about 0.69 bits a symbol; Huffman needs >= 1.
        let size = round_trip(&skewed(1 << 20, 950, 1));
        assert!(size < (1 << 20) * 8 / 10 / 8, "{size}");
    }

    /// The most skewed blocks the encoder writes (frequencies 4095 and 1)
    /// decode, within the bound on symbols a word.
    #[test]
    fn the_most_skewed_blocks_fit_the_symbol_bound() {
        for n in [1000usize, 100_000, 4 << 20] {
            let mut d = vec![0u8; n];
            d[n / 3] = 1;
            let block = encoded(&d);
            // max_symbol, 4095 in two bytes, 1 in one, the states.
            let words = ((block.len() - 4 - STATES_LEN) / 2) as u64;
            assert!(
                n as u64 <= (words + 2 * LANES as u64) * MAX_SYMBOLS_PER_WORD,
                "{n}: {words}"
            );
            let mut back = vec![0u8; n];
            decode(&block, &mut back).unwrap();
            assert_eq!(back, d);
        }
    }

    /// The kernels (AVX-512, AVX2 or scalar, whichever this CPU runs) and
    /// the scalar twin agree on arbitrary tables, states, streams and
    /// lengths, byte for byte and in the states and position they leave.
    #[test]
    fn kernel_twins_agree() {
        let mut rnd = lcg(11);
        for case in 0..400 {
            let mut freq = [0u32; 256];
            let used = 2 + rnd() as usize % 40;
            let mut left = rans::TOTAL;
            for s in 0..used {
                let f = if s + 1 == used {
                    left
                } else {
                    1 + (rnd() as u32 % left.min(3000)).min(left - (used - s - 1) as u32 - 1)
                };
                freq[(s * 7 + case) % 256] += f;
                left -= f;
            }
            let table = Rans32Table::new(&freq).expect("a valid table");
            let states: [u32; LANES] =
                std::array::from_fn(|_| RANS32_LOW + (rnd() as u32 % ((1 << 31) - RANS32_LOW)));
            let slen = rnd() as usize % 3000;
            let stream: Vec<u8> = (0..slen).map(|_| rnd() as u8).collect();
            let olen = rnd() as usize % 4000;
            let (mut o1, mut o2) = (vec![0u8; olen], vec![1u8; olen]);
            let (mut x1, mut x2) = (states, states);
            let start = rnd() as usize % 8;
            let (mut p1, mut p2) = (start, start);
            let d1 = kernels::rans32_decode(&table, &mut x1, &stream, &mut p1, &mut o1);
            let d2 = kernels::rans32_decode_scalar(&table, &mut x2, &stream, &mut p2, &mut o2);
            assert_eq!((d1, p1, x1), (d2, p2, x2), "case {case}");
            assert_eq!(o1[..d1], o2[..d2], "case {case}");
        }
    }

    /// [`decode`] and [`decode_reference`] agree on valid blocks of every
    /// lane tail and on damaged ones: the same bytes or the same error.
    #[test]
    fn decode_matches_the_reference_on_valid_and_damaged_blocks() {
        let mut rnd = lcg(5);
        for n in (0..300).chain([4096, 70_000]) {
            let d = skewed(n, 850, n as u64 + 7);
            if histogram(&d).iter().filter(|&&c| c > 0).count() < 2 {
                continue;
            }
            let block = encoded(&d);
            for trial in 0..4 {
                let mut b = block.clone();
                if trial > 0 {
                    let at = rnd() as usize % b.len();
                    b[at] ^= 1 << (rnd() % 8);
                }
                let (mut o1, mut o2) = (vec![0u8; n], vec![0u8; n]);
                let r1 = decode(&b, &mut o1);
                let r2 = decode_reference(&b, &mut o2);
                assert_eq!(r1, r2, "n {n}, trial {trial}");
                if r1.is_ok() {
                    assert_eq!(o1, o2, "n {n}, trial {trial}");
                }
                if trial == 0 {
                    assert_eq!(o1, d);
                }
            }
        }
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let d = skewed(5000, 800, 3);
        let enc = encoded(&d);
        let mut out = vec![0u8; d.len()];
        for cut in [0, 1, 5, 100, enc.len() / 2, enc.len() - 2, enc.len() - 1] {
            assert!(decode(&enc[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut longer = enc.clone();
        longer.extend_from_slice(&[0, 0]);
        assert!(matches!(
            decode(&longer, &mut out),
            Err(DecodeError::LanesUnclean { .. })
        ));
        longer.push(0);
        assert_eq!(
            decode(&longer, &mut out),
            Err(DecodeError::OddStream {
                bytes: longer.len() - table_end(&enc) - STATES_LEN
            })
        );
        // Wrong symbol count.
        assert!(decode(&enc, &mut vec![0u8; d.len() + 1]).is_err());
        assert!(decode(&enc, &mut vec![0u8; d.len() - 1]).is_err());
        // A state below 2^15, or at 2^31.
        let at = table_end(&enc);
        for (lane, value) in [(0usize, RANS32_LOW - 1), (31, 1 << 31)] {
            let mut bad = enc.clone();
            bad[at + 4 * lane..at + 4 * lane + 4].copy_from_slice(&value.to_le_bytes());
            assert_eq!(
                decode(&bad, &mut out),
                Err(DecodeError::LaneState { lane, value })
            );
        }
        // Frequencies that do not sum to 4096.
        let mut bad = enc.clone();
        bad[1] ^= 1;
        assert!(matches!(
            decode(&bad, &mut out),
            Err(DecodeError::BadTable { .. })
        ));
        // A claim of more symbols than the stream can hold, refused before decoding.
        let mut tiny = enc[..at + STATES_LEN].to_vec();
        tiny.extend_from_slice(&[0, 0]);
        let mut big = vec![0u8; 4 << 20];
        assert!(matches!(
            decode(&tiny, &mut big),
            Err(DecodeError::TooManySymbols { .. })
        ));
        // Every single-bit corruption is an error or, never, a wrong result that passes.
        for at in 0..enc.len() {
            let mut bad = enc.clone();
            bad[at] ^= 0x10;
            if decode(&bad, &mut out).is_ok() {
                assert_ne!(out, d, "corruption at {at} decoded to the original");
            }
        }
    }

    /// Where the states start: after `max_symbol` and the frequencies.
    fn table_end(block: &[u8]) -> usize {
        rans::read_freqs(block, PlaneCodec::Rans32).unwrap().1
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_round_trip(data in proptest::collection::vec(proptest::num::u8::ANY, 1..3000)) {
            round_trip(&data);
        }

        #[test]
        fn skewed_bytes_round_trip(data in proptest::collection::vec(
            proptest::prop_oneof![30 => proptest::strategy::Just(0u8), 1 => proptest::num::u8::ANY], 1..5000)) {
            round_trip(&data);
        }

        #[test]
        fn arbitrary_blocks_never_panic(block in proptest::collection::vec(proptest::num::u8::ANY, 0..900), n in 0usize..3000) {
            let (mut o1, mut o2) = (vec![0u8; n], vec![0u8; n]);
            let r1 = decode(&block, &mut o1);
            proptest::prop_assert_eq!(&r1, &decode_reference(&block, &mut o2));
            if r1.is_ok() {
                proptest::prop_assert_eq!(o1, o2);
            }
        }
    }
}
