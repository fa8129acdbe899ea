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
//! | 4 | token count *t* (u32) |
//! | 1 | the tokens' codec (0 to 4) |
//! | 4 | the tokens' stored length *a* (u32) |
//! | *a* | the tokens, coded |
//! | 1 | the literals' codec (0 to 4) |
//! | rest | the literals, coded |
//!
//! A token *r* < 255 stands for *r* fill bytes then the next literal; 255
//! for 255 fill bytes and no literal. Fill bytes after the last literal
//! are implied by the plane's length.

use crate::codec::PlaneCodec;
use crate::error::DecodeError;

/// The token standing for 255 fill bytes and no literal.
pub const ESCAPE: u8 = 255;
/// Bytes of the block's header fields around the two streams.
pub const OVERHEAD: usize = 1 + 4 + 1 + 4 + 1;

/// Splits `data` into tokens and literals (appended to the two vectors,
/// which are cleared first), runs counted of `fill`.
pub fn tokenize(data: &[u8], fill: u8, tokens: &mut Vec<u8>, literals: &mut Vec<u8>) {
    tokens.clear();
    literals.clear();
    let mut next = 0usize; // the position after the last literal
    let mut emit = |p: usize, tokens: &mut Vec<u8>, literals: &mut Vec<u8>| {
        let mut r = p - next;
        while r >= ESCAPE as usize {
            tokens.push(ESCAPE);
            r -= ESCAPE as usize;
        }
        tokens.push(r as u8);
        literals.push(data[p]);
        next = p + 1;
    };
    // 64 bytes a step: a mask of the bytes that are not `fill` (the
    // comparisons vectorise), then its set bits one by one, so a sparse
    // plane costs a step per literal and a few per 64 bytes.
    let mut blocks = data.chunks_exact(64);
    let mut at = 0usize;
    for block in &mut blocks {
        let mut mask = 0u64;
        for (k, &b) in block.iter().enumerate() {
            mask |= u64::from(b != fill) << k;
        }
        while mask != 0 {
            emit(at + mask.trailing_zeros() as usize, tokens, literals);
            mask &= mask - 1;
        }
        at += 64;
    }
    for (k, &b) in blocks.remainder().iter().enumerate() {
        if b != fill {
            emit(at + k, tokens, literals);
        }
    }
}

/// The parts of a runs block, its streams still coded.
pub struct Parsed<'a> {
    pub fill: u8,
    pub tokens: usize,
    pub token_codec: PlaneCodec,
    pub token_stream: &'a [u8],
    pub literal_codec: PlaneCodec,
    pub literal_stream: &'a [u8],
}

/// Reads a runs block's header for a plane of `n` bytes. Refuses token
/// counts above `n` (each token stands for at least one byte) before
/// anything is allocated for them.
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
    let tokens = u32::from_le_bytes([t0, t1, t2, t3]) as usize;
    if tokens > n {
        return Err(DecodeError::LengthMismatch {
            codec: PlaneCodec::Runs,
            what: "token count",
            expected: n,
            found: tokens,
        });
    }
    let a = u32::from_le_bytes([a0, a1, a2, a3]) as usize;
    if a >= rest.len() {
        return Err(truncated("tokens", 10 + a + 1));
    }
    let (token_stream, rest) = rest.split_at(a);
    let (lc, literal_stream) = (rest[0], &rest[1..]);
    let inner = |code: u8, stream: &'static str| match PlaneCodec::from_code(code) {
        Some(
            c @ (PlaneCodec::Raw
            | PlaneCodec::Constant
            | PlaneCodec::Huffman
            | PlaneCodec::Zstd
            | PlaneCodec::Rans),
        ) => Ok(c),
        _ => Err(DecodeError::StreamCodec { stream, code }),
    };
    Ok(Parsed {
        fill,
        tokens,
        token_codec: inner(tc, "tokens")?,
        token_stream,
        literal_codec: inner(lc, "literals")?,
        literal_stream,
    })
}

/// The number of literals `tokens` place, if they fit in a plane of `n`
/// bytes.
pub fn count_literals(tokens: &[u8], n: usize) -> Result<usize, DecodeError> {
    // Byte-wide counts over blocks of 255 tokens: they vectorise.
    let (mut escapes, mut covered) = (0usize, 0usize);
    for c in tokens.chunks(255) {
        escapes += usize::from(c.iter().map(|&t| u8::from(t == ESCAPE)).sum::<u8>());
        covered += c.iter().map(|&t| u32::from(t)).sum::<u32>() as usize;
    }
    let literals = tokens.len() - escapes;
    let covered = covered + literals;
    if covered > n {
        return Err(DecodeError::RunsOverflow { covered, len: n });
    }
    Ok(literals)
}

/// Fills `out` with `fill` and puts `literals` where `tokens` say.
/// `tokens` must have passed [`count_literals`] for `out.len()` with
/// `literals.len()` literals; otherwise an error (never a panic).
pub fn place(tokens: &[u8], literals: &[u8], fill: u8, out: &mut [u8]) -> Result<(), DecodeError> {
    out.fill(fill);
    let mut pos = 0usize;
    let mut lits = literals.iter();
    for &t in tokens {
        pos += usize::from(t);
        if t != ESCAPE {
            let (Some(slot), Some(&lit)) = (out.get_mut(pos), lits.next()) else {
                return Err(DecodeError::RunsOverflow {
                    covered: pos + 1,
                    len: out.len(),
                });
            };
            *slot = lit;
            pos += 1;
        }
    }
    Ok(())
}

thread_local! {
    /// Per-thread room for a block's decoded tokens and literals.
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decodes a runs block into `out` (its length is the plane's). Malformed
/// blocks give an error, never a panic; nothing is allocated beyond twice
/// the plane's length.
pub fn decode(stored: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let n = out.len();
    let p = parse(stored, n)?;
    DECODED.with_borrow_mut(|buf| {
        buf.resize(p.tokens, 0);
        let in_stream = |stream| {
            move |e| DecodeError::InStream {
                stream,
                source: Box::new(e),
            }
        };
        crate::codec::decode_plane(p.token_codec, p.token_stream, &mut buf[..p.tokens])
            .map_err(in_stream("tokens"))?;
        let nlit = count_literals(&buf[..p.tokens], n)?;
        buf.resize(p.tokens + nlit, 0);
        let (tokens, literals) = buf.split_at_mut(p.tokens);
        crate::codec::decode_plane(p.literal_codec, p.literal_stream, literals)
            .map_err(in_stream("literals"))?;
        place(tokens, literals, p.fill, out)
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

    fn untokenize(tokens: &[u8], literals: &[u8], fill: u8, n: usize) -> Vec<u8> {
        let nlit = count_literals(tokens, n).unwrap();
        assert_eq!(nlit, literals.len());
        let mut out = vec![!fill; n];
        place(tokens, literals, fill, &mut out).unwrap();
        out
    }

    #[test]
    fn tokens_round_trip() {
        let (mut t, mut l) = (Vec::new(), Vec::new());
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
                tokenize(&d, fill, &mut t, &mut l);
                assert!(l.iter().all(|&b| b != fill));
                assert_eq!(untokenize(&t, &l, fill, n), d, "n {n}, fill {fill}");
            }
        }
        // Runs of exactly 254, 255, 256 and 510 fill bytes.
        for r in [254usize, 255, 256, 510, 511, 100_000] {
            let mut d = vec![0u8; r + 2];
            d[r] = 9;
            tokenize(&d, 0, &mut t, &mut l);
            assert_eq!(l, [9]);
            assert_eq!(t.len(), r / 255 + 1);
            assert_eq!(untokenize(&t, &l, 0, d.len()), d);
        }
    }

    #[test]
    fn tokens_that_overflow_the_plane_are_errors() {
        assert_eq!(count_literals(&[3, 0], 5), Ok(2));
        assert_eq!(
            count_literals(&[3, 1], 5),
            Err(DecodeError::RunsOverflow { covered: 6, len: 5 })
        );
        assert!(count_literals(&[255; 3], 764).is_err());
        // More literals asked for than given, or a token list not checked.
        let mut out = [0u8; 5];
        assert!(place(&[0, 0], &[1], 0, &mut out).is_err());
        assert!(place(&[9], &[1], 0, &mut out).is_err());
    }
}
