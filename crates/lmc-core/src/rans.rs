//! Order-0 range asymmetric numeral systems (rANS) for byte planes where
//! Huffman's whole-bit code lengths lose: very skewed planes, such as the
//! planes of an XOR delta between consecutive snapshots, where one symbol
//! (zero) has most of the probability and Huffman cannot spend less than one
//! bit on it.
//!
//! Duda, J. "Asymmetric numeral systems: entropy coding combining speed of
//! Huffman coding with compression rate of arithmetic coding."
//! arXiv:1311.2540, 2013. Four states are interleaved over one byte stream
//! (symbol *i* uses state *i* mod 4) so decoding overlaps four independent
//! dependency chains; states are 32-bit with byte-wise renormalisation.
//!
//! Block layout (normative text in FORMAT.md, "rANS block"):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | `max_symbol` |
//! | 1 or 2 each | frequency of symbols 0..=max_symbol: `f < 128` as one byte, else `0x80 | f >> 8`, `f & 0xFF` |
//! | 4 x 4 | the decoder's initial states (u32 LE) |
//! | rest | the byte stream |
//!
//! Frequencies sum to [`TOTAL`] = 4096. Decoding symbol *i* with state
//! `x = states[i % 4]`: `slot = x % 4096`, `s` the symbol whose cumulative
//! range holds `slot`, `x = f[s] * (x / 4096) + slot - cum[s]`, then while
//! `x < 2^23` shift in the next stream byte: `x = x << 8 | byte`. A valid
//! block ends with every state back at 2^23 and the stream consumed.

use crate::codec::PlaneCodec;
use crate::error::{DecodeError, TableFault};

/// log2 of the frequency total.
pub const SCALE_BITS: u32 = 12;
/// The frequencies of a block sum to this.
pub const TOTAL: u32 = 1 << SCALE_BITS;
/// Lower bound of a normalised state.
const LOW: u32 = 1 << 23;
const STATES: usize = 4;
/// Most symbols a valid block decodes per stream byte, counting 4 bytes
/// more for its states. With every frequency below 4096 (a block of one
/// symbol is refused), a step takes at least `x / 4096 - 1` from a state
/// `x >= 2^23`, so 22,722 steps shrink a state 256-fold, which each stream
/// byte undoes; the initial states (below 2^31) hold 8 bits each above the
/// final 2^23. A block that claims more symbols is refused before any is
/// decoded: otherwise a few bytes could keep the decoder busy on a whole
/// chunk of symbols before its end check fails.
const MAX_SYMBOLS_PER_BYTE: u64 = 22_730;

/// Scales a histogram to frequencies summing to [`TOTAL`], every present
/// symbol at least 1. `None` if no symbol is present.
pub fn normalize(hist: &[u32; 256]) -> Option<[u32; 256]> {
    let mut f = scaled(hist)?;
    // Rounding leaves the sum a little off (at most one per symbol). A
    // deficit goes to the most frequent symbol (lowest index among equals),
    // where it costs the least. A surplus is taken from the top down, as if
    // one unit at a time from the most frequent symbol: the largest
    // frequencies are lowered to a common level, and what is left below a
    // whole round of that level is taken from its lowest-index symbols.
    // (`tests::normalize_reference` is that unit-at-a-time loop, and the
    // tests hold this to it: a profile of delta coding had put 8% of the
    // time in it, on flat planes of 256 symbols.)
    let sum: u32 = f.iter().sum();
    if sum < TOTAL {
        let i = top_symbol(&f);
        f[i] += TOTAL - sum;
    } else if sum > TOTAL {
        lower_from_top(&mut f, sum - TOTAL);
    }
    Some(f)
}

/// Each present symbol's count scaled to [`TOTAL`], rounded, at least 1:
/// the first step of [`normalize`], its sum a little off.
fn scaled(hist: &[u32; 256]) -> Option<[u32; 256]> {
    let n: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    if n == 0 {
        return None;
    }
    let mut f = [0u32; 256];
    for (fs, &c) in f.iter_mut().zip(hist) {
        if c > 0 {
            *fs = ((u64::from(c) * u64::from(TOTAL) + n / 2) / n).max(1) as u32;
        }
    }
    Some(f)
}

/// The most frequent symbol, the lowest index among equals.
fn top_symbol(f: &[u32; 256]) -> usize {
    let mut best = 0;
    for (i, &x) in f.iter().enumerate() {
        if x > f[best] {
            best = i;
        }
    }
    best
}

/// Takes `surplus` units from the largest frequencies, lowering them to a
/// common level, the remainder from that level's lowest-index symbols; no
/// frequency falls below 1 (a surplus is at most one unit a symbol, and
/// at most 256 symbols share 4096, so the level stays above that).
fn lower_from_top(f: &mut [u32; 256], mut surplus: u32) {
    // Present symbols by frequency, largest first, lowest index first among equals.
    let mut all = [0u8; 256];
    let mut present = 0;
    for s in 0..=255u8 {
        if f[s as usize] > 0 {
            all[present] = s;
            present += 1;
        }
    }
    let order = &mut all[..present];
    order.sort_unstable_by_key(|&s| (std::cmp::Reverse(f[s as usize]), s));
    // The first `k` symbols of `order` are at `level` (all at or above the rest).
    let mut k = 1;
    let mut level = f[order[0] as usize];
    loop {
        while k < order.len() && f[order[k] as usize] == level {
            k += 1;
        }
        let below = order.get(k).map_or(1, |&s| f[s as usize]).max(1);
        let room = (level - below) as u64 * k as u64;
        if (surplus as u64) < room || k == order.len() || below == 1 {
            break;
        }
        surplus -= room as u32;
        level = below;
    }
    let k32 = k as u32;
    let (rounds, rest) = (surplus / k32, surplus % k32);
    assert!(
        rounds < level,
        "a surplus with every symbol at 1 cannot happen: at most 256 of 4096"
    );
    let group = &mut order[..k];
    group.sort_unstable();
    for (j, &s) in group.iter().enumerate() {
        f[s as usize] = level - rounds - u32::from((j as u32) < rest);
    }
}

fn table_len(freq: &[u32; 256]) -> usize {
    let max = freq.iter().rposition(|&f| f > 0).unwrap_or(0);
    1 + freq[..=max]
        .iter()
        .map(|&f| if f < 128 { 1 } else { 2 })
        .sum::<usize>()
}

/// Bytes a block of the symbols counted in `hist` would take, frequencies
/// scaled as [`encode`] scales them (within a few bytes).
pub fn estimated_size(hist: &[u32; 256]) -> Option<usize> {
    let c = coded_size(hist)?;
    Some(c.stream + c.table + 4 * STATES + STATES)
}

/// What a block of the symbols counted in `hist` takes apart from its
/// states, with frequencies scaled by [`normalize`]: the same for this
/// coder and [`crate::rans32`], which share the table and the scale.
#[derive(Debug, Clone, Copy)]
pub struct CodedSize {
    /// The stream: the symbols' information at the scaled frequencies, in bytes.
    pub stream: usize,
    /// The frequency table.
    pub table: usize,
}

/// [`CodedSize`] of `hist`; `None` if no symbol is present.
pub fn coded_size(hist: &[u32; 256]) -> Option<CodedSize> {
    let freq = normalize(hist)?;
    let bits: f64 = hist
        .iter()
        .zip(&freq)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, &f)| f64::from(c) * (f64::from(SCALE_BITS) - f64::from(f).log2()))
        .sum();
    Some(CodedSize {
        stream: (bits / 8.0).ceil() as usize,
        table: table_len(&freq),
    })
}

/// Appends the frequency table of a block: `max_symbol`, then each
/// frequency up to it in one byte (below 128) or two.
pub(crate) fn write_freqs(freq: &[u32; 256], out: &mut Vec<u8>) {
    let max = freq.iter().rposition(|&f| f > 0).unwrap_or(0);
    out.push(max as u8);
    for &f in &freq[..=max] {
        if f < 128 {
            out.push(f as u8);
        } else {
            out.push(0x80 | (f >> 8) as u8);
            out.push(f as u8);
        }
    }
}

/// Reads the frequency table at the start of `block` (written by
/// [`write_freqs`]) and checks it: frequencies summing to [`TOTAL`], none
/// of them all of it. Returns the frequencies and the bytes read. Errors
/// name `codec`.
pub(crate) fn read_freqs(
    block: &[u8],
    codec: PlaneCodec,
) -> Result<([u32; 256], usize), DecodeError> {
    let mut pos = 0usize;
    let mut byte = |what: &'static str| -> Result<u8, DecodeError> {
        let b = *block.get(pos).ok_or(DecodeError::Truncated {
            codec,
            part: what,
            needed: pos + 1,
            available: block.len(),
        })?;
        pos += 1;
        Ok(b)
    };
    let max = byte("header")? as usize;
    let mut freq = [0u32; 256];
    for f in freq.iter_mut().take(max + 1) {
        let b = byte("frequency table")?;
        *f = if b < 0x80 {
            u32::from(b)
        } else {
            u32::from(b & 0x7F) << 8 | u32::from(byte("frequency table")?)
        };
    }
    let total: u32 = freq.iter().sum();
    if total != TOTAL {
        return Err(DecodeError::BadTable {
            codec,
            fault: TableFault::FrequencySum {
                found: total,
                expected: TOTAL,
            },
        });
    }
    // Its steps would leave the states unchanged and read nothing. Writers
    // store such a plane as a constant.
    if let Some(s) = freq.iter().position(|&f| f == TOTAL) {
        return Err(DecodeError::BadTable {
            codec,
            fault: TableFault::SingleSymbol {
                symbol: s,
                frequency: TOTAL,
            },
        });
    }
    Ok((freq, pos))
}

/// Appends a block coding `symbols` (whose histogram is `hist`) to `out`.
///
/// # Panics
/// If `hist` counts fewer than two symbols: a plane of one is stored as a
/// constant, and [`decode`] refuses a block of one.
pub fn encode(symbols: &[u8], hist: &[u32; 256], out: &mut Vec<u8>) {
    assert!(
        hist.iter().filter(|&&c| c > 0).count() >= 2,
        "rANS codes two symbols or more"
    );
    let freq = normalize(hist).expect("two symbols");
    let mut cum = [0u32; 256];
    let mut acc = 0;
    for (c, f) in cum.iter_mut().zip(&freq) {
        *c = acc;
        acc += f;
    }
    write_freqs(&freq, out);
    let states_at = out.len();
    out.extend_from_slice(&[0u8; 4 * STATES]);
    let syms: [EncSymbol; 256] = std::array::from_fn(|s| EncSymbol::new(cum[s], freq[s]));
    // The stream is written back to front (the decoder reads it front to
    // back) into scratch sized for the worst case: a symbol of frequency 1
    // costs 12 bits, so at most 2 bytes a symbol, plus the final flushes.
    let x = ENC_SCRATCH.with_borrow_mut(|buf| {
        let cap = 2 * symbols.len() + 16;
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let mut w = BackWriter {
            buf: &mut buf[..cap],
            pos: cap,
        };
        let n = symbols.len();
        let full = n / STATES * STATES;
        let mut x = [LOW; STATES];
        // The last symbols (past the last whole group) first, each with its state.
        for i in (full..n).rev() {
            x[i % STATES] = w.put(x[i % STATES], &syms[symbols[i] as usize]);
        }
        // Then whole groups, the four states in registers.
        let [mut x0, mut x1, mut x2, mut x3] = x;
        for g in symbols[..full].chunks_exact(STATES).rev() {
            x3 = w.put(x3, &syms[g[3] as usize]);
            x2 = w.put(x2, &syms[g[2] as usize]);
            x1 = w.put(x1, &syms[g[1] as usize]);
            x0 = w.put(x0, &syms[g[0] as usize]);
        }
        out.extend_from_slice(&w.buf[w.pos..]);
        [x0, x1, x2, x3]
    });
    for (j, s) in x.iter().enumerate() {
        out[states_at + 4 * j..states_at + 4 * j + 4].copy_from_slice(&s.to_le_bytes());
    }
}

thread_local! {
    /// Per-thread room for the encoder's stream, reused from block to block.
    static ENC_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes the stream from the end of `buf` towards its start.
struct BackWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl BackWriter<'_> {
    /// Codes one symbol into state `x`: renormalises (emits the low bytes
    /// while the state is too large for the symbol), then steps.
    #[inline(always)]
    fn put(&mut self, mut x: u32, e: &EncSymbol) -> u32 {
        while x >= e.x_max {
            self.pos -= 1;
            self.buf[self.pos] = x as u8;
            x >>= 8;
        }
        e.put(x)
    }
}

/// What the encoder needs of one symbol to code it without dividing: the
/// state `x` becomes `(x / f << 12) + x % f + cum`, computed as
/// `x + bias + q * (4096 - f)` with `q = x / f` from a multiplication by a
/// fixed-point reciprocal (Giesen, "rANS with static probability
/// distributions", 2014; exact for states below 2^31).
pub(crate) struct EncSymbol {
    /// Renormalise (emit a byte) while the state is at least this.
    pub(crate) x_max: u32,
    pub(crate) rcp_freq: u32,
    pub(crate) rcp_shift: u32,
    pub(crate) bias: u32,
    cmpl_freq: u32,
}

impl EncSymbol {
    pub(crate) fn new(cum: u32, freq: u32) -> EncSymbol {
        let x_max = ((LOW >> SCALE_BITS) << 8) * freq;
        let cmpl_freq = TOTAL - freq;
        if freq < 2 {
            // q = x (x * (2^32 - 1) >> 32 is x - 1 for x > 0), and the bias
            // puts back the one missing: x + cum + 4095 + (x - 1) * 4095 = x * 4096 + cum.
            EncSymbol {
                x_max,
                rcp_freq: u32::MAX,
                rcp_shift: 0,
                bias: cum + TOTAL - 1,
                cmpl_freq,
            }
        } else {
            let shift = 32 - (freq - 1).leading_zeros(); // ceil(log2(freq))
            EncSymbol {
                x_max,
                rcp_freq: (1u64 << (shift + 31)).div_ceil(u64::from(freq)) as u32,
                rcp_shift: shift - 1,
                bias: cum,
                cmpl_freq,
            }
        }
    }

    #[inline(always)]
    pub(crate) fn put(&self, x: u32) -> u32 {
        let q = ((u64::from(x) * u64::from(self.rcp_freq)) >> 32) as u32 >> self.rcp_shift;
        x.wrapping_add(self.bias)
            .wrapping_add(q.wrapping_mul(self.cmpl_freq))
    }
}

/// Decodes a block into `out` (its length is the symbol count). Malformed
/// blocks give an error, never a panic or a wrong result that passes.
pub fn decode(block: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let truncated = |part, needed| DecodeError::Truncated {
        codec: PlaneCodec::Rans,
        part,
        needed,
        available: block.len(),
    };
    let (freq, mut pos) = read_freqs(block, PlaneCodec::Rans)?;
    // One entry a slot: symbol (8 bits), frequency - 1 (12 bits) and
    // slot - cum[symbol] (12 bits), so a decode step is one lookup.
    let mut table = vec![0u32; TOTAL as usize];
    let mut acc = 0u32;
    for (s, &f) in freq.iter().enumerate() {
        for (k, e) in table[acc as usize..(acc + f) as usize]
            .iter_mut()
            .enumerate()
        {
            *e = s as u32 | (f - 1) << 8 | (k as u32) << 20;
        }
        acc += f;
    }
    let mut x = [0u32; STATES];
    for (j, xj) in x.iter_mut().enumerate() {
        let b = block
            .get(pos..pos + 4)
            .ok_or(truncated("states", pos + 4))?;
        *xj = u32::from_le_bytes(b.try_into().unwrap());
        pos += 4;
        if !(LOW..LOW << 8).contains(xj) {
            return Err(DecodeError::BadState {
                state: j,
                value: *xj,
            });
        }
    }
    let stream = &block[pos..];
    let most = (stream.len() as u64 + 4).saturating_mul(MAX_SYMBOLS_PER_BYTE);
    if out.len() as u64 > most {
        return Err(DecodeError::TooManySymbols {
            codec: PlaneCodec::Rans,
            stream: 0,
            bytes: stream.len(),
            symbols: out.len(),
            limit: most,
        });
    }
    let truncated = |symbol: usize| DecodeError::EndsEarly { symbol };
    // A state in [2^23, 2^31) leaves a step at 2^11 or more (frequency >= 1),
    // so renormalising takes at most two bytes a symbol, eight a group of four.
    let [mut x0, mut x1, mut x2, mut x3] = x;
    let mut p = 0usize;
    let skewed = bits_per_symbol(&freq) < BRANCHY_BELOW_BITS;
    let mut groups = out.chunks_exact_mut(STATES);
    let mut i = 0usize;
    for g in &mut groups {
        if p + 2 * STATES > stream.len() {
            // Near the end: the careful path, one symbol at a time.
            x = [x0, x1, x2, x3];
            for (k, o) in g.iter_mut().enumerate() {
                *o = step_checked(&table, &mut x[k], stream, &mut p)
                    .ok_or_else(|| truncated(i + k))?;
            }
            [x0, x1, x2, x3] = x;
        } else {
            let s: &[u8; 2 * STATES] = stream[p..p + 2 * STATES].try_into().unwrap();
            if skewed {
                let mut q = 0;
                g[0] = step_fast(&table, &mut x0, s, &mut q);
                g[1] = step_fast(&table, &mut x1, s, &mut q);
                g[2] = step_fast(&table, &mut x2, s, &mut q);
                g[3] = step_fast(&table, &mut x3, s, &mut q);
                p += q;
            } else {
                p += group_fast(&table, [&mut x0, &mut x1, &mut x2, &mut x3], s, g);
            }
        }
        i += STATES;
    }
    x = [x0, x1, x2, x3];
    for (k, o) in groups.into_remainder().iter_mut().enumerate() {
        *o = step_checked(&table, &mut x[k], stream, &mut p).ok_or_else(|| truncated(i + k))?;
    }
    if x != [LOW; STATES] || p != stream.len() {
        return Err(DecodeError::UncleanEnd {
            states: x,
            left: stream.len() - p,
        });
    }
    Ok(())
}

/// One decode step, branching on renormalisation; `s[*q..]` holds at least
/// the two bytes a step can need.
#[inline(always)]
fn step_fast(table: &[u32], x: &mut u32, s: &[u8], q: &mut usize) -> u8 {
    let e = table[(*x & (TOTAL - 1)) as usize];
    *x = ((e >> 8 & 0xFFF) + 1) * (*x >> SCALE_BITS) + (e >> 20);
    while *x < LOW {
        *x = *x << 8 | u32::from(s[*q]);
        *q += 1;
    }
    e as u8
}

/// Entropy in bits a symbol of the distribution `freq` (summing to
/// [`TOTAL`]) describes.
fn bits_per_symbol(freq: &[u32; 256]) -> f64 {
    freq.iter()
        .filter(|&&f| f > 0)
        .map(|&f| {
            let p = f64::from(f) / f64::from(TOTAL);
            -p * p.log2()
        })
        .sum()
}

/// Below this many bits a symbol, a state takes a byte on few steps, the
/// branch on it predicts well and [`step_fast`] beats [`group_fast`]
/// (criterion, `delta/rans-decode`, BF16 delta planes: 0.58 bits, branching
/// 329 MiB/s against 193 branch-free; 5.5 bits, 142 against 193-222).
const BRANCHY_BELOW_BITS: f64 = 3.0;

/// Decodes one group of four symbols (one a state) into `out`, reading
/// the bytes their renormalisation needs from `s` (the eight a group can
/// need at most); returns how many it read. Branch-free: after a step a
/// state is at least 2^11 (a frequency of at least 1 times at least 2^11),
/// so it takes 0, 1 or 2 bytes. All four steps are computed first and
/// their byte offsets after, so the four chains stay independent (a branch
/// on the byte count mispredicts on most symbols of a plane that is not
/// very skewed; stepping the states one after another through a shared
/// stream position serialises them).
#[inline(always)]
fn group_fast(table: &[u32], x: [&mut u32; STATES], s: &[u8; 2 * STATES], out: &mut [u8]) -> usize {
    let mut v = [0u32; STATES];
    let mut n = [0u32; STATES];
    for k in 0..STATES {
        let e = table[(*x[k] & (TOTAL - 1)) as usize];
        out[k] = e as u8;
        v[k] = ((e >> 8 & 0xFFF) + 1) * (*x[k] >> SCALE_BITS) + (e >> 20);
        n[k] = u32::from(v[k] < LOW) + u32::from(v[k] < LOW >> 8);
    }
    let mut q = 0usize;
    for k in 0..STATES {
        // q <= 6 here: at most two bytes for each earlier state.
        let two = u32::from(s[q]) << 8 | u32::from(s[q + 1]);
        *x[k] = v[k] << (8 * n[k]) | two >> (16 - 8 * n[k]);
        q += n[k] as usize;
    }
    q
}

/// One decode step that checks for the end of the stream.
#[inline]
fn step_checked(table: &[u32], x: &mut u32, stream: &[u8], p: &mut usize) -> Option<u8> {
    let e = table[(*x & (TOTAL - 1)) as usize];
    *x = ((e >> 8 & 0xFFF) + 1) * (*x >> SCALE_BITS) + (e >> 20);
    while *x < LOW {
        *x = *x << 8 | u32::from(*stream.get(*p)?);
        *p += 1;
    }
    Some(e as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::huffman::histogram;

    fn round_trip(data: &[u8]) -> usize {
        let hist = histogram(data);
        if hist.iter().filter(|&&c| c > 0).count() < 2 {
            return 0; // a constant plane, never an rANS block
        }
        let mut out = vec![9u8; 2];
        encode(data, &hist, &mut out);
        let mut back = vec![0u8; data.len()];
        decode(&out[2..], &mut back).unwrap();
        assert_eq!(back, data);
        let est = estimated_size(&hist).unwrap();
        let got = out.len() - 2;
        assert!(
            got <= est + 8 && est <= got + 8,
            "estimate {est}, got {got}"
        );
        got
    }

    /// The reciprocal step equals the division it replaces, for every
    /// frequency and every state the encoder can hold before the step.
    #[test]
    fn reciprocal_step_is_exact() {
        let mut x = 88172645463325252u64;
        for freq in 1..=TOTAL {
            let cum = (TOTAL - freq) / 2;
            let e = EncSymbol::new(cum, freq);
            let check = |state: u32| {
                let want = ((state / freq) << SCALE_BITS) + state % freq + cum;
                assert_eq!(e.put(state), want, "freq {freq}, state {state}");
            };
            // Renormalisation leaves the state in [x_max / 256, x_max).
            let lo = e.x_max >> 8;
            check(lo);
            check(e.x_max - 1);
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                check(lo + (x % u64::from(e.x_max - lo)) as u32);
            }
        }
    }

    /// The unit-at-a-time form of the rounding fix in [`normalize`]: what
    /// the closed form must equal.
    fn normalize_reference(hist: &[u32; 256]) -> Option<[u32; 256]> {
        let mut f = scaled(hist)?;
        // Fix the total by moving the largest frequencies (rounding errors are
        // at most one per symbol, so this takes at most 256 steps).
        // Rounding leaves the sum a little off: the difference goes to the
        // most frequent symbol (then, if it cannot take all of a surplus without
        // falling to the next one, to the next most frequent, and so on), where
        // it costs the least. Bulk moves, so a plane of 256 symbols costs a
        // few scans, not one per unit.
        let mut sum: u32 = f.iter().sum();
        while sum != TOTAL {
            // The most frequent symbol (lowest index among equals), and the
            // largest frequency below it.
            let (i, &top) = f
                .iter()
                .enumerate()
                .max_by_key(|&(i, &x)| (x, std::cmp::Reverse(i)))
                .expect("256 symbols");
            if sum < TOTAL {
                f[i] += TOTAL - sum;
                sum = TOTAL;
            } else {
                let next = f
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &x)| x)
                    .max()
                    .unwrap_or(0)
                    .max(1);
                // Down to the next one (or to 1), at least one unit: ties then
                // alternate between the symbols that share the top.
                let take = (sum - TOTAL)
                    .min(top.saturating_sub(next).max(1))
                    .min(top - 1);
                assert!(
                    take > 0,
                    "a surplus with every symbol at 1 cannot happen: at most 256 of 4096"
                );
                f[i] -= take;
                sum -= take;
            }
        }
        Some(f)
    }

    #[test]
    fn normalize_equals_the_unit_at_a_time_reference() {
        let mut x = 11u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..5000 {
            let mut h = [0u32; 256];
            let used = 1 + (next() % 256) as usize;
            let scale = [1, 3, 30, 1000, 100_000][case % 5];
            for hs in h.iter_mut().take(used) {
                *hs = (next() % scale) as u32 + u32::from(case % 7 != 0);
            }
            if case % 3 == 0 {
                h[(next() % 256) as usize] = (next() % 5_000_000) as u32;
            }
            assert_eq!(normalize(&h), normalize_reference(&h), "case {case}: {h:?}");
        }
    }

    #[test]
    fn normalize_sums_to_total_and_keeps_every_symbol() {
        let mut x = 7u64;
        for case in 0..2000 {
            let mut h = [0u32; 256];
            let used = 1 + case % 256;
            for (s, hs) in h.iter_mut().enumerate().take(used) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *hs = match case % 4 {
                    0 => 1,
                    1 => (x % 5) as u32 + 1,
                    2 => {
                        if s == 0 {
                            1_000_000
                        } else {
                            (x % 3) as u32 + 1
                        }
                    }
                    _ => (x % 100_000) as u32 + 1,
                };
            }
            let f = normalize(&h).unwrap();
            assert_eq!(f.iter().sum::<u32>(), TOTAL, "case {case}");
            for s in 0..256 {
                assert_eq!(f[s] > 0, h[s] > 0, "case {case}, symbol {s}");
            }
        }
    }

    fn skewed(n: usize, zero_per_mille: u64, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 1000 < zero_per_mille {
                    0
                } else {
                    (x >> 32) as u8
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_and_beats_whole_bits_on_skew() {
        for n in [1, 2, 3, 4, 5, 17, 1000, 65536] {
            round_trip(&skewed(n, 900, n as u64));
        }
        round_trip(&(0..=255u8).cycle().take(10_000).collect::<Vec<_>>());
        let mut one_other = [7u8; 100];
        one_other[50] = 8;
        round_trip(&one_other);
        // 95% zeros: about 0.29 + 0.05 * 8 = 0.69 bits a symbol; Huffman needs >= 1.
        let d = skewed(65536, 950, 1);
        let size = round_trip(&d);
        assert!(size < 65536 * 8 / 10 / 8, "{size}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_round_trip(data in proptest::collection::vec(
            proptest::prop_oneof![9 => proptest::strategy::Just(0u8), 1 => proptest::num::u8::ANY], 1..3000)) {
            round_trip(&data);
        }

        #[test]
        fn arbitrary_blocks_never_panic(block in proptest::collection::vec(proptest::num::u8::ANY, 0..600), n in 0usize..2000) {
            let mut out = vec![0u8; n];
            let _ = decode(&block, &mut out);
        }
    }

    /// The most skewed blocks the encoder writes (one symbol apart from the
    /// others: frequencies 4095 and 1) decode, within the bound on symbols
    /// a stream byte; a block of one symbol is refused.
    #[test]
    fn the_most_skewed_blocks_fit_the_symbol_bound() {
        for n in [1000usize, 100_000, 1 << 20, 4 << 20] {
            let mut d = vec![0u8; n];
            d[n / 3] = 1;
            let mut block = Vec::new();
            encode(&d, &histogram(&d), &mut block);
            // max_symbol, 4095 in two bytes, 1 in one, four states.
            let stream = (block.len() - 4 - 16) as u64;
            assert!(
                n as u64 <= (stream + 4) * MAX_SYMBOLS_PER_BYTE,
                "{n}: {stream}"
            );
            let mut back = vec![0u8; n];
            decode(&block, &mut back).unwrap();
            assert_eq!(back, d);
        }
        let mut one = vec![0u8, 0x90, 0x00];
        for _ in 0..4 {
            one.extend_from_slice(&LOW.to_le_bytes());
        }
        assert_eq!(
            decode(&one, &mut [0u8; 10]),
            Err(DecodeError::BadTable {
                codec: PlaneCodec::Rans,
                fault: TableFault::SingleSymbol {
                    symbol: 0,
                    frequency: TOTAL
                }
            })
        );
    }

    #[test]
    fn normalisation_keeps_every_symbol() {
        let mut h = [1u32; 256];
        h[0] = 1_000_000;
        let f = normalize(&h).unwrap();
        assert_eq!(f.iter().sum::<u32>(), TOTAL);
        assert!(f.iter().all(|&x| x >= 1));
        assert_eq!(normalize(&[0; 256]), None);
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let d = skewed(5000, 800, 3);
        let mut enc = Vec::new();
        encode(&d, &histogram(&d), &mut enc);
        let mut out = vec![0u8; d.len()];
        for cut in [0, 1, 5, enc.len() / 2, enc.len() - 1] {
            assert!(decode(&enc[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(decode(&longer, &mut out).is_err());
        // Wrong symbol count.
        assert!(decode(&enc, &mut vec![0u8; d.len() + 1]).is_err());
        // Every single-byte corruption is either an error or, never, a wrong result that passes.
        for at in (0..enc.len()).step_by(7) {
            let mut bad = enc.clone();
            bad[at] ^= 0x21;
            if decode(&bad, &mut out).is_ok() {
                assert_ne!(out, d, "corruption at {at} decoded to the original");
            }
        }
    }
}
