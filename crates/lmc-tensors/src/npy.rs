//! NumPy `.npy` files (NEP 1, "A simple file format for NumPy arrays").
//!
//! ```text
//! | \x93NUMPY | major | minor | header length: u16 (v1) or u32 (v2, v3) | header | data |
//! ```
//! The header is a Python dict literal padded with spaces and ending in a
//! newline: `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
//! The magic, the header and its padding become one byte segment; the data
//! becomes a tensor segment when its dtype is one lmc groups (little-endian
//! or single-byte integers, floats, bools; complex numbers as pairs of
//! floats), otherwise a byte segment. A Fortran-order array's elements are
//! in column-major order, so its segment's shape is the array's shape
//! reversed (the order of the bytes); a 0-d array has shape `[]` and one
//! element. Bytes after the data, which NumPy never writes, are kept as a
//! byte segment.

use lmc_core::{Dtype, SegmentKind, SegmentSpec};

use crate::Error;

pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest header accepted (NumPy itself refuses headers over 10 000
/// bytes unless told otherwise; big structured dtypes can need more).
const MAX_HEADER: usize = 1 << 20;

/// Whether `bytes` start with the `.npy` magic.
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// What an `.npy` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Bytes before the data: magic, version, length, header text.
    pub len: usize,
    /// The dtype string, e.g. `<f4`; empty for a structured dtype.
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
}

/// Cut short: shapes and dtypes come from the header, which may be huge.
fn bad(msg: impl Into<String>) -> Error {
    Error::Npy(crate::bounded(msg.into()))
}

/// Reads the header of an `.npy` file.
pub fn header(bytes: &[u8]) -> Result<Header, Error> {
    if !looks_like(bytes) {
        return Err(bad("it does not start with \\x93NUMPY"));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(v) => (v[0], v[1]),
        None => return Err(bad("truncated before the version")),
    };
    let (prefix, hlen) = match major {
        1 => (
            10,
            bytes
                .get(8..10)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
        ),
        2 | 3 => (
            12,
            bytes
                .get(8..12)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize),
        ),
        _ => {
            return Err(bad(format!(
                "version {major}.{minor} is not one lmc knows (1, 2, 3)"
            )));
        }
    };
    let hlen = hlen.ok_or_else(|| bad("truncated before the header length"))?;
    if hlen > MAX_HEADER {
        return Err(bad(format!(
            "a {hlen}-byte header is larger than the {MAX_HEADER} allowed"
        )));
    }
    let text = bytes.get(prefix..prefix + hlen).ok_or_else(|| {
        bad(format!(
            "the {hlen}-byte header runs past the end of the {}-byte file (truncated?)",
            bytes.len()
        ))
    })?;
    let text = std::str::from_utf8(text).map_err(|_| bad("the header is not text"))?;
    let mut p = Literal {
        s: text.as_bytes(),
        at: 0,
    };
    let dict = p.dict()?;
    let mut h = Header {
        len: prefix + hlen,
        descr: String::new(),
        fortran_order: false,
        shape: Vec::new(),
    };
    let (mut descr, mut fortran, mut shape) = (false, false, false);
    for (k, v) in dict {
        match (k.as_str(), v) {
            ("descr", Lit::Str(s)) => (h.descr, descr) = (s, true),
            ("descr", Lit::Other) => descr = true,
            ("fortran_order", Lit::Bool(b)) => (h.fortran_order, fortran) = (b, true),
            ("shape", Lit::Tuple(t)) => (h.shape, shape) = (t, true),
            (k, _) => {
                return Err(bad(format!(
                    "unexpected header key or value for {}",
                    lmc_core::error::quote_name(k)
                )));
            }
        }
    }
    if !(descr && fortran && shape) {
        return Err(bad("the header lacks 'descr', 'fortran_order' or 'shape'"));
    }
    Ok(h)
}

/// How lmc groups the elements of a dtype string: the dtype and how many
/// of it make one element; `None` for bytes.
pub fn dtype(descr: &str) -> Option<(Dtype, u64)> {
    let (order, ty) = descr.split_at_checked(1)?;
    let one = match ty {
        "b1" => Dtype::Bool,
        "u1" => Dtype::U8,
        "i1" => Dtype::I8,
        _ if order == ">" => return None,
        "i2" => Dtype::I16,
        "u2" => Dtype::U16,
        "f2" => Dtype::F16,
        "i4" => Dtype::I32,
        "u4" => Dtype::U32,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i8" => Dtype::I64,
        "u8" => Dtype::U64,
        "c8" => return Some((Dtype::F32, 2)).filter(|_| order != ">"),
        "c16" => return Some((Dtype::F64, 2)).filter(|_| order != ">"),
        _ => return None,
    };
    matches!(order, "<" | "|" | "=" | ">").then_some((one, 1))
}

/// The byte size of one element of a dtype string like `<f4`, `|S10`, `<U3`.
fn itemsize(descr: &str) -> Option<u64> {
    let ty = descr.get(1..)?;
    let digits = ty.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let kind = &ty[..ty.len() - digits.len()];
    let n: u64 = digits.parse().ok()?;
    match kind {
        "U" => n.checked_mul(4),
        "b" | "i" | "u" | "f" | "c" | "S" | "V" | "a" => Some(n),
        _ => None,
    }
}

/// The layout of an `.npy` file; tensors are named `name`.
pub fn layout(bytes: &[u8], name: &str) -> Result<Vec<SegmentSpec>, Error> {
    let h = header(bytes)?;
    let mut out = vec![SegmentSpec {
        kind: SegmentKind::Bytes,
        len: h.len as u64,
    }];
    let rest = (bytes.len() - h.len) as u64;
    let elems = h
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", h.shape)))?;
    // Object arrays hold a pickle after the header and structured dtypes a
    // record per element; both stay bytes.
    let Some(size) = itemsize(&h.descr) else {
        out.push(SegmentSpec {
            kind: SegmentKind::Bytes,
            len: rest,
        });
        return Ok(out);
    };
    let data_len = elems
        .checked_mul(size)
        .ok_or_else(|| bad(format!("shape {:?} of {} overflows", h.shape, h.descr)))?;
    if data_len > rest {
        return Err(bad(format!(
            "shape {:?} of {} needs {data_len} bytes of data, the file has {rest} (truncated?)",
            h.shape, h.descr
        )));
    }
    let mut shape = h.shape.clone();
    if h.fortran_order {
        shape.reverse();
    }
    let kind = match dtype(&h.descr) {
        Some((dtype, per)) => {
            if per > 1 {
                shape.push(per);
            }
            SegmentKind::Tensor {
                name: name.to_string(),
                dtype,
                shape,
            }
        }
        None => SegmentKind::Bytes,
    };
    out.push(SegmentSpec {
        kind,
        len: data_len,
    });
    if rest > data_len {
        out.push(SegmentSpec {
            kind: SegmentKind::Bytes,
            len: rest - data_len,
        });
    }
    Ok(out)
}

/// The values an `.npy` header holds.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
    /// A list (structured dtypes): skipped.
    Other,
}

/// A parser of the few Python literals an `.npy` header uses.
struct Literal<'a> {
    s: &'a [u8],
    at: usize,
}

impl Literal<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), Error> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(bad(format!(
                "header: expected {:?} at byte {}",
                c as char, self.at
            )))
        }
    }

    fn dict(&mut self) -> Result<Vec<(String, Lit)>, Error> {
        self.expect(b'{')?;
        let mut out = Vec::new();
        while !self.eat(b'}') {
            let Lit::Str(k) = self.value(0)? else {
                return Err(bad(format!(
                    "header: a key at byte {} is not a string",
                    self.at
                )));
            };
            self.expect(b':')?;
            let v = self.value(0)?;
            out.push((k, v));
            if !self.eat(b',') {
                self.expect(b'}')?;
                break;
            }
        }
        self.ws();
        if self.at != self.s.len() {
            return Err(bad(format!(
                "header: text after the dict at byte {}",
                self.at
            )));
        }
        Ok(out)
    }

    fn value(&mut self, depth: usize) -> Result<Lit, Error> {
        if depth > 32 {
            return Err(bad("header: nested too deep"));
        }
        self.ws();
        let rest = &self.s[self.at..];
        match rest.first() {
            Some(&q @ (b'\'' | b'"')) => {
                let n = rest[1..]
                    .iter()
                    .position(|&c| c == q)
                    .ok_or_else(|| bad("header: unterminated string"))?;
                let s = String::from_utf8_lossy(&rest[1..1 + n]).into_owned();
                self.at += n + 2;
                Ok(Lit::Str(s))
            }
            Some(b'(') | Some(b'[') => {
                let close = if rest[0] == b'(' { b')' } else { b']' };
                self.at += 1;
                let mut ints = Vec::new();
                let mut other = rest[0] == b'[';
                while !self.eat(close) {
                    self.ws();
                    let digits = self.s[self.at..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                    if digits > 0 {
                        let t = std::str::from_utf8(&self.s[self.at..self.at + digits]).unwrap();
                        ints.push(
                            t.parse::<u64>()
                                .map_err(|_| bad("header: dimension too large"))?,
                        );
                        self.at += digits;
                        self.eat(b'L'); // Python 2 longs
                    } else {
                        self.value(depth + 1)?;
                        other = true;
                    }
                    if !self.eat(b',') {
                        self.expect(close)?;
                        break;
                    }
                }
                Ok(if other { Lit::Other } else { Lit::Tuple(ints) })
            }
            _ if rest.starts_with(b"True") => {
                self.at += 4;
                Ok(Lit::Bool(true))
            }
            _ if rest.starts_with(b"False") => {
                self.at += 5;
                Ok(Lit::Bool(false))
            }
            _ => {
                let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return Err(bad(format!("header: unexpected text at byte {}", self.at)));
                }
                self.at += digits;
                Ok(Lit::Other)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `.npy` file as NumPy 1.x/2.x writes it (version 1.0, header padded
    /// so that the data starts at a multiple of 64).
    pub fn npy(descr: &str, fortran: bool, shape: &[u64], data: &[u8]) -> Vec<u8> {
        let shape = match shape.len() {
            1 => format!("({},)", shape[0]),
            _ => format!(
                "({})",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn tensor(l: &[SegmentSpec]) -> (Dtype, Vec<u64>, u64) {
        match &l[1].kind {
            SegmentKind::Tensor { dtype, shape, .. } => (*dtype, shape.clone(), l[1].len),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn dtypes_shapes_and_orders() {
        let f = npy("<f4", false, &[3, 4], &[0; 48]);
        let l = layout(&f, "x").unwrap();
        assert_eq!(l[0].len % 64, 0);
        assert_eq!(tensor(&l), (Dtype::F32, vec![3, 4], 48));
        let f = npy("<f2", true, &[3, 4], &[0; 24]);
        assert_eq!(
            tensor(&layout(&f, "x").unwrap()),
            (Dtype::F16, vec![4, 3], 24)
        );
        let f = npy("<f8", false, &[], &[0; 8]);
        assert_eq!(tensor(&layout(&f, "x").unwrap()), (Dtype::F64, vec![], 8));
        let f = npy("|b1", false, &[5], &[1; 5]);
        assert_eq!(tensor(&layout(&f, "x").unwrap()), (Dtype::Bool, vec![5], 5));
        let f = npy("<c8", false, &[2], &[0; 16]);
        assert_eq!(
            tensor(&layout(&f, "x").unwrap()),
            (Dtype::F32, vec![2, 2], 16)
        );
        let f = npy("<i8", false, &[0, 3], &[]);
        assert_eq!(
            tensor(&layout(&f, "x").unwrap()),
            (Dtype::I64, vec![0, 3], 0)
        );
        // Big-endian and strings stay bytes, sized right.
        for (d, n) in [(">f4", 8), ("<U2", 16), ("|S3", 6)] {
            let f = npy(d, false, &[2], &vec![7; n]);
            let l = layout(&f, "x").unwrap();
            assert_eq!(l.len(), 2, "{d}");
            assert_eq!(
                (l[1].kind.clone(), l[1].len),
                (SegmentKind::Bytes, n as u64),
                "{d}"
            );
        }
        // Trailing bytes are kept.
        let f = npy("<i2", false, &[2], &[1, 2, 3, 4, 5]);
        let l = layout(&f, "x").unwrap();
        assert_eq!(l.iter().map(|s| s.len).sum::<u64>(), f.len() as u64);
        assert_eq!(l[2].len, 1);
    }

    #[test]
    fn headers_numpy_writes() {
        // Version 2.0 (u32 length), a structured dtype, Python 2 longs.
        let text = "{'descr': [('a', '<f4'), ('b', '<i2')], 'fortran_order': False, 'shape': (2L, 3L), }\n";
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[2, 0]);
        f.extend_from_slice(&(text.len() as u32).to_le_bytes());
        f.extend_from_slice(text.as_bytes());
        f.extend_from_slice(&[0; 36]);
        let h = header(&f).unwrap();
        assert_eq!(h.shape, vec![2, 3]);
        assert_eq!(h.descr, "");
        let l = layout(&f, "x").unwrap();
        assert_eq!(
            l[1],
            SegmentSpec {
                kind: SegmentKind::Bytes,
                len: 36
            }
        );
    }

    #[test]
    fn bad_files_are_refused() {
        let good = npy("<f4", false, &[3, 4], &[0; 48]);
        for n in 0..good.len() {
            assert!(layout(&good[..n], "x").is_err(), "{n}");
        }
        for bad in [
            "{'descr': '<f4', 'shape': (3,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), } x",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (3,), }",
            "{'descr: '<f4'",
        ] {
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&[1, 0]);
            f.extend_from_slice(&(bad.len() as u16).to_le_bytes());
            f.extend_from_slice(bad.as_bytes());
            f.extend_from_slice(&[0; 12]);
            assert!(layout(&f, "x").is_err(), "{bad}");
        }
        let mut f = good.clone();
        f[6] = 9;
        assert!(
            layout(&f, "x")
                .unwrap_err()
                .to_string()
                .contains("version 9.0")
        );
    }
}
