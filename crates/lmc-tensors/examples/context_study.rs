//! How much a context model could gain over order-0 coding per byte plane.
//! Chunk by chunk (256 KiB, lmc's default), for each file:
//!
//! Table 1 (stdout), empirical entropies: the order-0 bound of all planes,
//! and the file's ratio if the exponent plane (plane 0) were coded at its
//! conditional entropy given
//! - the previous element's exponent (`prev`, 256 contexts or `BUCKETS`,
//!   default 8: the chunk's most frequent exponents each a context, the
//!   others sharing one),
//! - the exponent one row up (`above`, the tensor's last dimension apart),
//! - both;
//!
//! and if the other planes were coded given the element's own exponent.
//! Each cell is `with tables (without)`: "with" adds an estimate of one code
//! table per used context (6 bits a used symbol, 1 byte a context).
//!
//! Table 2 (stdout), real sizes: the file's ratio with plane 0 as lmc codes
//! it now, as an order-0 rANS block, and as rANS blocks per context (lmc's
//! rANS table format, the states shared), the other planes as lmc codes them.
//!
//! Stderr: the other planes coded whole against split in two by whether the
//! element's plane-0 byte is the chunk's most frequent (lmc's split codec).
//!
//! An argument `NEW@BASE` studies the XOR delta of NEW against BASE
//! (consecutive snapshots of one run, same layout).
//!
//! ```text
//! cargo run --release -p lmc-tensors --example context_study -- FILE.safetensors [NEW@BASE] ...
//! ```

use lmc_core::{DEFAULT_CHUNK_SIZE, Dtype, SegmentKind, planes};

/// Empirical entropy in bits of the symbols counted in `h`, plus the table
/// estimate.
fn bits(h: &[u32]) -> (f64, f64) {
    let n: u64 = h.iter().map(|&c| u64::from(c)).sum();
    if n == 0 {
        return (0.0, 0.0);
    }
    let nf = n as f64;
    let mut b = 0.0;
    let mut used = 0;
    for &c in h {
        if c > 0 {
            used += 1;
            b -= f64::from(c) * (f64::from(c) / nf).log2();
        }
    }
    (b, 8.0 + 6.0 * f64::from(used))
}

/// Conditional entropy (bits) of `sym` given `ctx` (contexts < nctx).
fn cond_bits(nctx: usize, pairs: impl Iterator<Item = (usize, u8)>) -> (f64, f64) {
    let mut h = vec![[0u32; 256]; nctx];
    for (c, s) in pairs {
        h[c][s as usize] += 1;
    }
    let mut b = 0.0;
    let mut t = 0.0;
    for row in &h {
        let (x, y) = bits(row);
        b += x;
        t += y;
    }
    (b, t)
}

#[derive(Default, Clone, Copy)]
struct Acc {
    raw: f64,
    h0: f64,
    h0_t: f64,
    prev: f64,
    prev_t: f64,
    prev_b: f64,
    prev_b_t: f64,
    above: f64,
    above_t: f64,
    both: f64,
    both_t: f64,
    rest_h0: f64,
    rest_given_exp: f64,
    rest_given_exp_t: f64,
}

/// The bucket (`map`) of the exponent `back` elements before element `i`,
/// 0 where there is none; `back` is 1 for the previous element, the row
/// length for the one above.
fn ctx(e: &[u8], map: &[u8; 256], back: usize, i: usize) -> usize {
    if i >= back {
        map[e[i - back] as usize] as usize
    } else {
        0
    }
}

/// Maps each exponent to a bucket: the `k - 1` most frequent exponents of the
/// chunk get their own buckets, every other one shares the last.
fn rank_buckets(p: &[u8], k: usize) -> [u8; 256] {
    let mut h = [0u32; 256];
    for &b in p {
        h[b as usize] += 1;
    }
    let mut order: Vec<usize> = (0..256).collect();
    order.sort_by_key(|&s| std::cmp::Reverse(h[s]));
    let mut map = [(k - 1) as u8; 256];
    for (r, &s) in order.iter().take(k - 1).enumerate() {
        map[s] = r as u8;
    }
    map
}

/// Size of a context-rANS block: one rANS frequency table per used context,
/// shared states, plus the bucket map (`map_bytes`).
fn ctx_rans(nctx: usize, map_bytes: usize, pairs: impl Iterator<Item = (usize, u8)>) -> f64 {
    let mut h = vec![[0u32; 256]; nctx];
    for (c, s) in pairs {
        h[c][s as usize] += 1;
    }
    let mut total = 20 + map_bytes;
    for row in &h {
        if let Some(sz) = lmc_core::rans::estimated_size(row) {
            total += sz - 20;
        }
    }
    total as f64
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let k: usize = std::env::var("BUCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    println!(
        "| file | order-0 bound | exp H0 | exp\\|prev (256) | exp\\|prev ({k}) | exp\\|above ({k}) | exp\\|prev,above ({k}x{k}) | rest H0 | rest\\|exp |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut lines = Vec::new();
    for f in &files {
        // `NEW@BASE`: the XOR delta of NEW against BASE (same layout, as
        // consecutive snapshots of one run have).
        let (f, bytes) = match f.split_once('@') {
            Some((new, base)) => {
                let (a, b) = (
                    std::fs::read(new).expect("readable"),
                    std::fs::read(base).expect("readable"),
                );
                // Tensor data start after each file's own header; the
                // headers may differ (metadata), the data regions may not.
                let data = |f: &[u8]| 8 + u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
                let (da, db) = (data(&a), data(&b));
                assert_eq!(
                    a.len() - da,
                    b.len() - db,
                    "{new} and {base} differ in data size"
                );
                let mut x = a.clone();
                for (p, q) in x[da..].iter_mut().zip(&b[db..]) {
                    *p ^= q;
                }
                (new, x)
            }
            None => (f.as_str(), std::fs::read(f).expect("readable")),
        };
        let layout = lmc_tensors::safetensors::layout(&bytes).expect("a safetensors file");
        let mut acc = Acc::default();
        let mut real = (0.0f64, 0.0f64);
        let mut real_k = [0.0f64; 6];
        let mut split_sz = [0.0f64; 3];
        let mut whole_sz = [0.0f64; 3];
        let mut off = 0usize;
        let mut pl: Vec<Vec<u8>> = Vec::new();
        for s in layout {
            let len = s.len as usize;
            let data = &bytes[off..off + len];
            off += len;
            let SegmentKind::Tensor { dtype, shape, .. } = s.kind else {
                continue;
            };
            if !matches!(dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32) || len == 0 {
                continue;
            }
            let w = dtype.width();
            let row = shape.last().copied().unwrap_or(1).max(1) as usize;
            let step = (DEFAULT_CHUNK_SIZE / w) * w;
            for chunk in data.chunks(step) {
                pl.resize_with(w, Vec::new);
                planes::split(dtype, chunk, &mut pl);
                let e = &pl[0];
                let n = e.len();
                let mut hh = [0u32; 256];
                for &b in e.iter() {
                    hh[b as usize] += 1;
                }
                let mut o = Vec::new();
                lmc_core::codec::encode_plane(e, lmc_core::codec::PlaneKind::Tensor, &mut o);
                real.0 += o.len() as f64;
                for kk in [4usize, 8, 16] {
                    let map = rank_buckets(e, kk);
                    let c = ctx_rans(kk, kk - 1, (0..n).map(|i| (ctx(e, &map, 1, i), e[i])));
                    let idx = match kk {
                        4 => 1,
                        8 => 2,
                        _ => 3,
                    };
                    real_k[idx] += c;
                    if kk <= 8 {
                        let c = ctx_rans(
                            kk * kk,
                            kk - 1 + 4,
                            (0..n).map(|i| (ctx(e, &map, row, i) * kk + ctx(e, &map, 1, i), e[i])),
                        );
                        real_k[idx + 3] += c;
                    }
                }
                real_k[0] += lmc_core::rans::estimated_size(&hh).unwrap_or(0) as f64;
                let mode = (0..256).max_by_key(|&s| hh[s]).unwrap() as u8;
                for (pi, p) in pl[1..].iter().enumerate() {
                    let mut o = Vec::new();
                    lmc_core::codec::encode_plane(p, lmc_core::codec::PlaneKind::Tensor, &mut o);
                    real.1 += o.len() as f64;
                    // Split by whether the element's exponent byte is the
                    // chunk's most frequent one, each part coded alone.
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    for (x, &y) in p.iter().zip(e.iter()) {
                        if y == mode { a.push(*x) } else { b.push(*x) }
                    }
                    let mut oa = Vec::new();
                    lmc_core::codec::encode_plane(&a, lmc_core::codec::PlaneKind::Tensor, &mut oa);
                    let mut ob = Vec::new();
                    lmc_core::codec::encode_plane(&b, lmc_core::codec::PlaneKind::Tensor, &mut ob);
                    let split = (oa.len() + ob.len() + 6).min(o.len());
                    split_sz[pi.min(3)] += split as f64;
                    whole_sz[pi.min(3)] += o.len() as f64;
                }
                acc.raw += chunk.len() as f64;
                let mut h = [0u32; 256];
                for &b in e {
                    h[b as usize] += 1;
                }
                let (b0, t0) = bits(&h);
                acc.h0 += b0;
                acc.h0_t += t0;
                let identity: [u8; 256] = std::array::from_fn(|s| s as u8);
                let (b, t) = cond_bits(256, (0..n).map(|i| (ctx(e, &identity, 1, i), e[i])));
                acc.prev += b;
                acc.prev_t += t;
                let map = rank_buckets(e, k);
                let (b, t) = cond_bits(k, (0..n).map(|i| (ctx(e, &map, 1, i), e[i])));
                acc.prev_b += b;
                acc.prev_b_t += t;
                let (b, t) = cond_bits(k, (0..n).map(|i| (ctx(e, &map, row, i), e[i])));
                acc.above += b;
                acc.above_t += t;
                let (b, t) = cond_bits(
                    k * k,
                    (0..n).map(|i| (ctx(e, &map, row, i) * k + ctx(e, &map, 1, i), e[i])),
                );
                acc.both += b;
                acc.both_t += t;
                for p in &pl[1..] {
                    let mut h = [0u32; 256];
                    for &b in p.iter() {
                        h[b as usize] += 1;
                    }
                    let (b0, t0) = bits(&h);
                    acc.rest_h0 += b0 + t0;
                    let (b, t) = cond_bits(k, (0..n).map(|i| (map[e[i] as usize] as usize, p[i])));
                    acc.rest_given_exp += b;
                    acc.rest_given_exp_t += t;
                }
            }
        }
        let total0 = acc.h0 + acc.h0_t + acc.rest_h0;
        let r = |exp_bits: f64, rest: f64| acc.raw * 8.0 / (exp_bits + rest);
        let per = |b: f64| b / (acc.raw * 8.0) * 100.0;
        println!(
            "| {} | {:.4} | {:.2}% | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.2}% | {:.4} ({:.4}) |",
            short(f),
            acc.raw * 8.0 / total0,
            per(acc.h0),
            r(acc.prev + acc.prev_t, acc.rest_h0),
            r(acc.prev, acc.rest_h0),
            r(acc.prev_b + acc.prev_b_t, acc.rest_h0),
            r(acc.prev_b, acc.rest_h0),
            r(acc.above + acc.above_t, acc.rest_h0),
            r(acc.above, acc.rest_h0),
            r(acc.both + acc.both_t, acc.rest_h0),
            r(acc.both, acc.rest_h0),
            per(acc.rest_h0),
            r(acc.h0 + acc.h0_t, acc.rest_given_exp + acc.rest_given_exp_t),
            r(acc.h0 + acc.h0_t, acc.rest_given_exp),
        );
        let rr = |x: f64| acc.raw / (x + real.1);
        eprintln!(
            "{}: planes 1.. coded whole {:?}, split by exponent == mode {:?}; file ratio {:.4} -> {:.4}",
            short(f),
            whole_sz,
            split_sz,
            rr(real.0),
            acc.raw / (real.0 + split_sz.iter().sum::<f64>())
        );
        lines.push(format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            short(f),
            rr(real.0),
            rr(real_k[0]),
            rr(real_k[1]),
            rr(real_k[2]),
            rr(real_k[3]),
            rr(real_k[4]),
            rr(real_k[5])
        ));
    }
    println!();
    println!(
        "| file | lmc now | rANS order-0 | ctx prev 4 | ctx prev 8 | ctx prev 16 | prev,above 4x4 | prev,above 8x8 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
}

fn short(p: &str) -> String {
    let path = std::path::Path::new(p);
    let parent = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{parent}/{}", path.file_name().unwrap().to_string_lossy())
}
