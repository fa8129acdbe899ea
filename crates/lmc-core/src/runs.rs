//! Run coding of planes dominated by one byte value: the planes of XOR
//! deltas, where most bytes are 0 (the element did not change there).
//!
//! An order-0 coder spends a step on every byte of such a plane, and
//! Huffman at least a bit; here a plane becomes two short streams, the
//! lengths of the runs of the `fill` byte before each other byte (the
//! tokens) and those other bytes (the literals), each coded by an entropy
//! coder. Decoding fills the plane with `fill` and puts each literal at
//! its place: one step per literal, not per byte, so a fine-tuning delta
//! with 90% of its bytes unchanged decodes a tenth of the symbols. The
//! run lengths also carry what an order-0 model of the plane misses where
//! changes cluster (the LMC paper's run-length step after byte grouping).
//!
//! Block layout (normative text in FORMAT.md, "Runs plane"):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | `fill` |
//! | 4 | literal count *t* (u32) |
//! | 1 | the tokens' codec (0 to 4) |
//! | 4 | the tokens' stored length *a* (u32) |
//! | *a* | the tokens, coded |
//! | 4 | the extra bits' length *e* in bytes (u32) |
//! | *e* | the extra bits |
//! | 1 | the literals' codec (0 to 4) |
//! | rest | the literals, coded |
//!
//! Each literal has a token, the length *r* of the run of `fill` before it,
//! coded as *v = r + 1* the way DEFLATE codes lengths: *v* < 16 is token
//! *v - 1*; a larger *v* of *k + 1* bits is token *15 + 2(k - 4) + h* (*h*
//! its bit below the top one) followed by its *k - 1* low bits in the extra
//! bits. The alphabet stays small (a table of a few dozen bytes, where one
//! byte a run length would need 255 symbols) and long runs cost a token.
//! Fill bytes after the last literal are implied by the plane's length.

use crate::codec::PlaneCodec;
use crate::error::DecodeError;

/// Bytes of the block's header fields around its three streams.
pub const OVERHEAD: usize = 1 + 4 + 1 + 4 + 4 + 1;
/// Tokens below this stand for *v = token + 1* alone.
const DIRECT: u8 = 15;
/// The largest token: *v* of 32 bits (k = 31).
pub const MAX_TOKEN: u8 = DIRECT + 2 * (31 - 4) + 1;

/// The token of run length *v = r + 1* (v >= 1), its extra bits and their count.
#[inline(always)]
fn token_of(v: u32) -> (u8, u32, u32) {
    if v <= u32::from(DIRECT) {
        return ((v - 1) as u8, 0, 0);
    }
    let k = 31 - v.leading_zeros(); // v has k + 1 bits, k >= 4
    let h = (v >> (k - 1)) & 1;
    let t = DIRECT as u32 + 2 * (k - 4) + h;
    (t as u8, v & ((1 << (k - 1)) - 1), k - 1)
}

/// For every token, the smallest *v* it stands for and its extra bits' count.
fn token_table() -> [(u32, u32); MAX_TOKEN as usize + 1] {
    std::array::from_fn(|t| {
        let t = t as u32;
        if t < u32::from(DIRECT) {
            (t + 1, 0)
        } else {
            let j = t - u32::from(DIRECT);
            let (k, h) = (4 + j / 2, j % 2);
            (1 << k | h << (k - 1), k - 1)
        }
    })
}

/// Splits `data` into tokens, extra bits and literals (the vectors are
/// cleared first), runs counted of `fill`.
pub fn tokenize(
    data: &[u8],
    fill: u8,
    tokens: &mut Vec<u8>,
    extra: &mut Vec<u8>,
    literals: &mut Vec<u8>,
) {
    tokens.clear();
    extra.clear();
    literals.clear();
    // Room for most planes' streams, so pushes seldom grow them.
    tokens.reserve(data.len() / 2);
    literals.reserve(data.len() / 2);
    let mut w = TokenWriter::default();
    let mut emit = |p: usize, tokens: &mut Vec<u8>, literals: &mut Vec<u8>, extra: &mut Vec<u8>| {
        w.put(p, tokens, extra);
        literals.push(data[p]);
    };
    // Eight bytes a step: a word with the high bit set in each byte that is
    // not `fill` (no carry crosses bytes: (x & 0x7F) + 0x7F <= 0xFE), then
    // its set bits one by one, so a sparse plane costs a step per literal
    // and a few per word.
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let fills = u64::from_ne_bytes([fill; 8]);
    let mut words = data.chunks_exact(8);
    let mut at = 0usize;
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes")) ^ fills;
        if x != 0 {
            let mut hi = (((x & LOW7) + LOW7) | x) & !LOW7;
            while hi != 0 {
                emit(
                    at + (hi.trailing_zeros() / 8) as usize,
                    tokens,
                    literals,
                    extra,
                );
                hi &= hi - 1;
            }
        }
        at += 8;
    }
    for (k, &b) in words.remainder().iter().enumerate() {
        if b != fill {
            emit(at + k, tokens, literals, extra);
        }
    }
    w.bits.finish(extra);
}

/// The tokens and extra bits of literals at `positions` (increasing),
/// into the vectors (cleared first).
pub fn tokens_at(positions: &[u32], tokens: &mut Vec<u8>, extra: &mut Vec<u8>) {
    tokens.clear();
    extra.clear();
    tokens.reserve(positions.len());
    let mut w = TokenWriter::default();
    for &p in positions {
        w.put(p as usize, tokens, extra);
    }
    w.bits.finish(extra);
}

/// Writes the token and extra bits of each literal in turn.
#[derive(Default)]
struct TokenWriter {
    bits: BitWriter,
    /// The position after the last literal.
    next: usize,
}

impl TokenWriter {
    /// The token of a literal at position `p` (after the last one).
    #[inline(always)]
    fn put(&mut self, p: usize, tokens: &mut Vec<u8>, extra: &mut Vec<u8>) {
        // Planes are at most 4 MiB (format::MAX_CHUNK_LEN): v fits in u32.
        let (t, x, nb) = token_of((p - self.next + 1) as u32);
        tokens.push(t);
        self.bits.put(x, nb, extra);
        self.next = p + 1;
    }
}

/// Packs bits least significant first.
#[derive(Default)]
struct BitWriter {
    acc: u64,
    n: u32,
}

impl BitWriter {
    #[inline(always)]
    fn put(&mut self, x: u32, nb: u32, out: &mut Vec<u8>) {
        self.acc |= u64::from(x) << self.n;
        self.n += nb;
        if self.n >= 32 {
            out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    fn finish(self, out: &mut Vec<u8>) {
        let bytes = self.n.div_ceil(8) as usize;
        out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

/// The parts of a runs block, its streams still coded.
pub struct Parsed<'a> {
    pub fill: u8,
    pub literals: usize,
    pub token_codec: PlaneCodec,
    pub token_stream: &'a [u8],
    pub extra: &'a [u8],
    pub literal_codec: PlaneCodec,
    pub literal_stream: &'a [u8],
}

/// Reads a runs block's header for a plane of `n` bytes. Refuses literal
/// counts above `n` before anything is allocated for them.
pub fn parse(stored: &[u8], n: usize) -> Result<Parsed<'_>, DecodeError> {
    let truncated = |part, needed| DecodeError::Truncated {
        codec: PlaneCodec::Runs,
        part,
        needed,
        available: stored.len(),
    };
    let &[fill, t0, t1, t2, t3, tc, a0, a1, a2, a3, ref rest @ ..] = stored else {
        return Err(truncated("header", 10));
    };
    let literals = u32::from_le_bytes([t0, t1, t2, t3]) as usize;
    if literals > n {
        return Err(DecodeError::LengthMismatch {
            codec: PlaneCodec::Runs,
            what: "literal count",
            expected: n,
            found: literals,
        });
    }
    let a = u32::from_le_bytes([a0, a1, a2, a3]) as usize;
    let Some((token_stream, rest)) = rest.split_at_checked(a) else {
        return Err(truncated("tokens", 10 + a));
    };
    let Some((e, rest)) = rest.split_first_chunk::<4>() else {
        return Err(truncated("extra bits' length", 10 + a + 4));
    };
    let e = u32::from_le_bytes(*e) as usize;
    let Some((extra, rest)) = rest.split_at_checked(e) else {
        return Err(truncated("extra bits", 14 + a + e));
    };
    let Some((&lc, literal_stream)) = rest.split_first() else {
        return Err(truncated("literals' codec", 14 + a + e + 1));
    };
    let inner = |code: u8, stream: &'static str| match PlaneCodec::from_code(code) {
        Some(
            c @ (PlaneCodec::Raw
            | PlaneCodec::Constant
            | PlaneCodec::Huffman
            | PlaneCodec::Zstd
            | PlaneCodec::Rans
            | PlaneCodec::Rans32),
        ) => Ok(c),
        _ => Err(DecodeError::StreamCodec { stream, code }),
    };
    Ok(Parsed {
        fill,
        literals,
        token_codec: inner(tc, "tokens")?,
        token_stream,
        extra,
        literal_codec: inner(lc, "literals")?,
        literal_stream,
    })
}

/// Fills `out` with `fill` and puts each literal after the run its token
/// and extra bits give. Tokens above [`MAX_TOKEN`], runs past the plane's
/// end, extra bits that run out or are left over are errors (never a panic).
pub fn place(
    tokens: &[u8],
    extra: &[u8],
    literals: &[u8],
    fill: u8,
    out: &mut [u8],
) -> Result<(), DecodeError> {
    if tokens.len() != literals.len() {
        return Err(DecodeError::LengthMismatch {
            codec: PlaneCodec::Runs,
            what: "literals",
            expected: tokens.len(),
            found: literals.len(),
        });
    }
    out.fill(fill);
    POSITIONS.with_borrow_mut(|positions| {
        positions.resize(tokens.len(), 0);
        walk(tokens, extra, out.len(), positions)?;
        // walk checked every position against out.len().
        for (&at, &l) in positions.iter().zip(literals) {
            if let Some(o) = out.get_mut(at as usize) {
                *o = l;
            }
        }
        Ok(())
    })
}

thread_local! {
    /// Per-thread room for a runs block's literal positions.
    static POSITIONS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes into `positions` (one a token) the position of each literal, in
/// order, that `tokens` and `extra` give in a plane of `n` bytes; each is
/// below `n`. The rules of [`place`].
fn walk(tokens: &[u8], extra: &[u8], n: usize, positions: &mut [u32]) -> Result<(), DecodeError> {
    let table = token_table();
    // The extra bits' reader, in locals so that its state stays in
    // registers: `acc` holds `held` bits read from `extra[..next]` (and,
    // above them, copies of later bytes that the next refill puts back
    // in the same places).
    let (mut acc, mut held, mut next) = (0u64, 0u32, 0usize);
    let mut pos = 0usize; // where the next run starts
    for (&t, at) in tokens.iter().zip(positions.iter_mut()) {
        let &(base, nb) = table
            .get(usize::from(t))
            .ok_or(DecodeError::BadToken { token: t })?;
        if held < nb {
            if let Some(w) = extra.get(next..next + 8) {
                acc |= u64::from_le_bytes(w.try_into().expect("8 bytes")) << held;
                let k = (63 - held) / 8;
                next += k as usize;
                held += 8 * k;
            } else {
                while held <= 56 && next < extra.len() {
                    acc |= u64::from(extra[next]) << held;
                    next += 1;
                    held += 8;
                }
                if held < nb {
                    return Err(DecodeError::ExtraBitsEnd { bytes: extra.len() });
                }
            }
        }
        let x = acc & ((1u64 << nb) - 1);
        acc >>= nb;
        held -= nb;
        // v = base + x >= 1: the run, then the literal.
        pos += base as usize + x as usize;
        if pos > n {
            return Err(DecodeError::RunsOverflow {
                covered: pos,
                len: n,
            });
        }
        // n <= 2^22 (a chunk's plane): positions fit in u32.
        *at = (pos - 1) as u32;
    }
    // Every byte read, and what is left of the last one all 0.
    if next != extra.len() || held >= 8 || acc != 0 {
        return Err(DecodeError::ExtraBitsLeft {
            bytes: extra.len(),
            left: (extra.len() - next) * 8 + held as usize,
        });
    }
    Ok(())
}

/// The positions of the literals of the runs block `stored` for a plane
/// of `n` bytes, into `positions`, if its literals are one byte other than
/// its fill (a constant stream; a map of changed elements is so), without
/// writing the plane. `Ok(false)` if they are not, and the plane must be
/// decoded instead.
pub fn literal_positions(
    stored: &[u8],
    n: usize,
    positions: &mut Vec<u32>,
) -> Result<bool, DecodeError> {
    let p = parse(stored, n)?;
    if p.literal_codec != PlaneCodec::Constant
        || p.literal_stream.len() != 1
        || p.literal_stream[0] == p.fill
        || p.fill != 0
    {
        return Ok(false);
    }
    DECODED.with_borrow_mut(|buf| {
        buf.resize(p.literals, 0);
        crate::codec::decode_plane(p.token_codec, p.token_stream, buf).map_err(|e| {
            DecodeError::InStream {
                stream: "tokens",
                source: Box::new(e),
            }
        })?;
        positions.resize(p.literals, 0);
        walk(buf, p.extra, n, positions)
    })?;
    Ok(true)
}

thread_local! {
    /// Per-thread room for a block's decoded tokens and literals.
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decodes a runs block into `out` (its length is the plane's). Malformed
/// blocks give an error, never a panic; nothing is allocated beyond twice
/// the plane's length.
pub fn decode(stored: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let p = parse(stored, out.len())?;
    DECODED.with_borrow_mut(|buf| {
        buf.resize(2 * p.literals, 0);
        let (tokens, literals) = buf.split_at_mut(p.literals);
        let in_stream = |stream| {
            move |e| DecodeError::InStream {
                stream,
                source: Box::new(e),
            }
        };
        crate::codec::decode_plane(p.token_codec, p.token_stream, tokens)
            .map_err(in_stream("tokens"))?;
        crate::codec::decode_plane(p.literal_codec, p.literal_stream, literals)
            .map_err(in_stream("literals"))?;
        place(tokens, p.extra, literals, p.fill, out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(n: usize, per_mille: u64, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 1000 < per_mille {
                    (x >> 40) as u8
                } else {
                    0
                }
            })
            .collect()
    }

    fn untokenize(tokens: &[u8], extra: &[u8], literals: &[u8], fill: u8, n: usize) -> Vec<u8> {
        let mut out = vec![!fill; n];
        place(tokens, extra, literals, fill, &mut out).unwrap();
        out
    }

    #[test]
    fn every_run_length_has_one_token() {
        let table = token_table();
        for v in (1..70_000u32).chain([1 << 22, (1 << 22) + 1, u32::MAX]) {
            let (t, x, nb) = token_of(v);
            assert!(t <= MAX_TOKEN);
            let (base, bits) = table[t as usize];
            assert_eq!(bits, nb, "{v}");
            assert!(nb == 0 || x < 1 << nb);
            assert_eq!(base + x, v, "{v}");
        }
    }

    #[test]
    fn tokens_round_trip() {
        let (mut t, mut e, mut l) = (Vec::new(), Vec::new(), Vec::new());
        for (n, pm) in [
            (0, 0),
            (1, 1000),
            (63, 500),
            (64, 100),
            (1000, 5),
            (70_000, 100),
        ] {
            for fill in [0u8, 7] {
                let mut d = sparse(n, pm, n as u64 + 1);
                for b in &mut d {
                    if *b == 0 {
                        *b = fill;
                    }
                }
                tokenize(&d, fill, &mut t, &mut e, &mut l);
                assert!(l.iter().all(|&b| b != fill));
                assert_eq!(untokenize(&t, &e, &l, fill, n), d, "n {n}, fill {fill}");
            }
        }
        for r in [14usize, 15, 16, 254, 255, 256, 100_000, (4 << 20) - 1] {
            let mut d = vec![0u8; r + 2];
            d[r] = 9;
            tokenize(&d, 0, &mut t, &mut e, &mut l);
            assert_eq!((t.len(), &l[..]), (1, &[9u8][..]));
            assert_eq!(untokenize(&t, &e, &l, 0, d.len()), d);
        }
    }

    #[test]
    fn bad_tokens_and_bits_are_errors() {
        let mut out = [0u8; 5];
        // Runs of 3 and 0 then literals: 5 bytes.
        assert_eq!(place(&[3, 0], &[], &[1, 2], 0, &mut out), Ok(()));
        assert_eq!(out, [0, 0, 0, 1, 2]);
        assert_eq!(
            place(&[3, 1], &[], &[1, 2], 0, &mut out),
            Err(DecodeError::RunsOverflow { covered: 6, len: 5 })
        );
        assert_eq!(
            place(&[MAX_TOKEN + 1], &[], &[1], 0, &mut out),
            Err(DecodeError::BadToken {
                token: MAX_TOKEN + 1
            })
        );
        // A token that needs extra bits the stream does not have, bits
        // left over, and more tokens than literals.
        assert!(place(&[DIRECT], &[], &[1], 0, &mut [0u8; 100]).is_err());
        assert!(place(&[0], &[0], &[1], 0, &mut out).is_err());
        assert!(place(&[0], &[1], &[1], 0, &mut out).is_err());
        assert!(place(&[0, 0], &[], &[1], 0, &mut out).is_err());
    }

    /// The spec's reader, a bit at a time: the positions, or None where
    /// the block is invalid.
    fn reference(tokens: &[u8], extra: &[u8], n: usize) -> Option<Vec<usize>> {
        let table = token_table();
        let bit = |j: usize| extra.get(j / 8).map(|b| u32::from(b >> (j % 8) & 1));
        let (mut j, mut pos, mut out) = (0usize, 0usize, Vec::new());
        for &t in tokens {
            let (base, nb) = *table.get(usize::from(t))?;
            let mut x = 0u32;
            for i in 0..nb {
                x |= bit(j)? << i;
                j += 1;
            }
            pos += (base + x) as usize;
            if pos > n {
                return None;
            }
            out.push(pos - 1);
        }
        let rest_zero = (j..extra.len() * 8).all(|i| bit(i) == Some(0));
        (extra.len() == j.div_ceil(8) && rest_zero).then_some(out)
    }

    proptest::proptest! {
        #[test]
        fn walk_agrees_with_the_bitwise_reader(
            tokens in proptest::collection::vec(0u8..=MAX_TOKEN + 2, 0..40),
            extra in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            n in 0usize..5_000_000,
        ) {
            let mut got = vec![0u32; tokens.len()];
            let r = walk(&tokens, &extra, n, &mut got);
            let got: Vec<usize> = got.iter().map(|&p| p as usize).collect();
            proptest::prop_assert_eq!(r.ok().map(|()| got), reference(&tokens, &extra, n));
        }

        #[test]
        fn encoded_extra_bits_walk_back(runs in proptest::collection::vec(0u32..3_000_000, 0..60)) {
            // A plane with literal 1 after each run.
            let n: usize = runs.iter().map(|&r| r as usize + 1).sum();
            let (mut tokens, mut extra, mut bits) = (Vec::new(), Vec::new(), BitWriter::default());
            for &r in &runs {
                let (t, x, nb) = token_of(r + 1);
                tokens.push(t);
                bits.put(x, nb, &mut extra);
            }
            bits.finish(&mut extra);
            let mut got = vec![0u32; tokens.len()];
            walk(&tokens, &extra, n, &mut got).unwrap();
            let got: Vec<usize> = got.iter().map(|&p| p as usize).collect();
            proptest::prop_assert_eq!(Some(got), reference(&tokens, &extra, n));
        }
    }
}
