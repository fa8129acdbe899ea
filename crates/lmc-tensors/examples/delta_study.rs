//! Which delta transform to use between consecutive snapshots: measures,
//! chunk by chunk (256 KiB, lmc's default), the bytes lmc's plane coder
//! needs for each tensor chunk coded
//! - whole (no delta),
//! - as its XOR with the previous snapshot,
//! - as the element-wise integer difference (wrapping) from it,
//! - and the best of the three per chunk,
//!
//! over consecutive pairs of safetensors files, tensors matched by name,
//! dtype and shape. Also reports how often the chosen plane codec was zstd
//! (the zero-run coder lmc falls back to on very skewed planes).
//!
//! ```text
//! cargo run --release -p lmc-tensors --example delta_study -- A.safetensors B.safetensors [C ...]
//! ```

use std::collections::HashMap;

use lmc_core::codec::{PlaneCodec, PlaneKind, encode_plane};
use lmc_core::{DEFAULT_CHUNK_SIZE, Dtype, SegmentKind, planes};

#[derive(Default, Clone, Copy)]
struct Totals {
    raw: u64,
    whole: u64,
    xor: u64,
    sub: u64,
    best: u64,
    planes: u64,
    zstd_planes_xor: u64,
    chunks: u64,
    best_xor: u64,
    best_sub: u64,
    best_whole: u64,
}

fn coded_size(
    dtype: Dtype,
    data: &[u8],
    planes_buf: &mut Vec<Vec<u8>>,
    out: &mut Vec<u8>,
) -> (u64, u64) {
    planes_buf.resize_with(dtype.width(), Vec::new);
    planes::split(dtype, data, planes_buf);
    let mut total = 0u64;
    let mut zstd = 0u64;
    for p in planes_buf.iter() {
        out.clear();
        let c = encode_plane(p, PlaneKind::Tensor, out);
        total += out.len() as u64 + 5; // + the plane's chunk-table entry
        zstd += u64::from(c == PlaneCodec::Zstd);
    }
    (total, zstd)
}

fn sub(dtype: Dtype, a: &[u8], b: &[u8]) -> Vec<u8> {
    let w = dtype.width();
    let mut out = Vec::with_capacity(a.len());
    for (x, y) in a.chunks_exact(w).zip(b.chunks_exact(w)) {
        let mut xv = [0u8; 8];
        let mut yv = [0u8; 8];
        xv[..w].copy_from_slice(x);
        yv[..w].copy_from_slice(y);
        let d = u64::from_le_bytes(xv).wrapping_sub(u64::from_le_bytes(yv));
        out.extend_from_slice(&d.to_le_bytes()[..w]);
    }
    out
}

fn tensors(bytes: &[u8]) -> HashMap<String, (Dtype, Vec<u64>, usize, usize)> {
    let layout = lmc_tensors::safetensors::layout(bytes).expect("a safetensors file");
    let mut m = HashMap::new();
    let mut off = 0usize;
    for s in layout {
        if let SegmentKind::Tensor { name, dtype, shape } = s.kind {
            m.insert(name, (dtype, shape, off, s.len as usize));
        }
        off += s.len as usize;
    }
    m
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.len() < 2 {
        eprintln!("usage: delta_study A.safetensors B.safetensors [C ...]");
        std::process::exit(2);
    }
    let mut planes_buf = Vec::new();
    let mut out = Vec::new();
    println!(
        "| pair | tensor bytes | whole | XOR | SUB | best per chunk | chunks best XOR/SUB/whole | zstd planes (XOR) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut all = Totals::default();
    for pair in files.windows(2) {
        let a = std::fs::read(&pair[0]).expect("readable");
        let b = std::fs::read(&pair[1]).expect("readable");
        let (ta, tb) = (tensors(&a), tensors(&b));
        let mut t = Totals::default();
        for (name, (dtype, shape, off, len)) in &tb {
            let Some((da, sa, oa, la)) = ta.get(name) else {
                continue;
            };
            if da != dtype || sa != shape || *len == 0 {
                continue;
            }
            let step = (DEFAULT_CHUNK_SIZE / dtype.width()) * dtype.width();
            let (new, old) = (&b[*off..off + len], &a[*oa..oa + la]);
            for (cn, co) in new.chunks(step).zip(old.chunks(step)) {
                let (w, _) = coded_size(*dtype, cn, &mut planes_buf, &mut out);
                let x: Vec<u8> = cn.iter().zip(co).map(|(p, q)| p ^ q).collect();
                let (xs, xz) = coded_size(*dtype, &x, &mut planes_buf, &mut out);
                let d = sub(*dtype, cn, co);
                let (ss, _) = coded_size(*dtype, &d, &mut planes_buf, &mut out);
                let best = w.min(xs).min(ss) + 1; // + a transform byte
                t.raw += cn.len() as u64;
                t.whole += w;
                t.xor += xs;
                t.sub += ss;
                t.best += best;
                t.planes += dtype.width() as u64;
                t.zstd_planes_xor += xz;
                t.chunks += 1;
                if xs <= ss && xs <= w {
                    t.best_xor += 1;
                } else if ss <= w {
                    t.best_sub += 1;
                } else {
                    t.best_whole += 1;
                }
            }
        }
        let r = |x: u64| t.raw as f64 / x.max(1) as f64;
        println!(
            "| {} -> {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {}/{}/{} | {}/{} |",
            short(&pair[0]),
            short(&pair[1]),
            t.raw,
            r(t.whole),
            r(t.xor),
            r(t.sub),
            r(t.best),
            t.best_xor,
            t.best_sub,
            t.best_whole,
            t.zstd_planes_xor,
            t.planes
        );
        all.raw += t.raw;
        all.whole += t.whole;
        all.xor += t.xor;
        all.sub += t.sub;
        all.best += t.best;
        all.best_xor += t.best_xor;
        all.best_sub += t.best_sub;
        all.best_whole += t.best_whole;
        all.zstd_planes_xor += t.zstd_planes_xor;
        all.planes += t.planes;
    }
    let r = |x: u64| all.raw as f64 / x.max(1) as f64;
    println!(
        "| all pairs | {} | {:.3} | {:.3} | {:.3} | {:.3} | {}/{}/{} | {}/{} |",
        all.raw,
        r(all.whole),
        r(all.xor),
        r(all.sub),
        r(all.best),
        all.best_xor,
        all.best_sub,
        all.best_whole,
        all.zstd_planes_xor,
        all.planes
    );
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
