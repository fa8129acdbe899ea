//! Times each kernel of the pipeline on one file's bytes, one thread.
//!
//! `cargo run --release -p lmc-core --example kernels -- FILE [DTYPE]`
//! (DTYPE defaults to BF16; the file is taken as a flat array of it).

use std::time::Instant;

use lmc_core::{Dtype, codec, huffman, planes};

/// With `KERNEL=name` set, only that kernel runs (many times), for
/// `perf stat -e cycles:u`, which is steadier than wall time on a busy machine.
fn time<R>(name: &str, bytes: usize, mut f: impl FnMut() -> R) -> R {
    let only = std::env::var("KERNEL").ok();
    let mut r = f();
    if only.as_deref().is_some_and(|k| k != name) {
        return r;
    }
    let reps = if only.is_some() { 50 } else { 15 };
    let mut best = f64::MAX;
    for _ in 0..reps {
        let s = Instant::now();
        r = f();
        best = best.min(s.elapsed().as_secs_f64());
    }
    println!("{name:<28} {:>8.0} MB/s", bytes as f64 / 1e6 / best);
    r
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("read input");
    let dtype = args
        .get(2)
        .map_or(Dtype::BF16, |d| Dtype::from_name(d).expect("dtype"));
    let w = dtype.width();
    let data = &data[..data.len() / w * w];
    let n = data.len();
    let mut ps = vec![Vec::new(); w];
    time("split", n, || planes::split(dtype, data, &mut ps));
    if std::env::var("REPEATS").is_ok() {
        let mut prev = [0u8; 256];
        let (mut same, mut total) = (0, 0);
        for c in ps[0].chunks(128 << 10) {
            let l = huffman::code_lengths(&huffman::histogram(c), huffman::MAX_CODE_LEN);
            same += (l == prev) as usize;
            total += 1;
            prev = l;
        }
        println!("{same} of {total} chunks have the previous chunk's code lengths");
        return;
    }
    if std::env::var("SIZES").is_ok() {
        sizes(&ps[0]);
        return;
    }
    for (k, p) in ps.iter().enumerate() {
        let m = p.len();
        let hist = time(&format!("plane {k} histogram"), m, || huffman::histogram(p));
        let mut out = Vec::with_capacity(m * 2);
        let lengths = huffman::code_lengths(&hist, huffman::MAX_CODE_LEN);
        time(&format!("plane {k} huffman encode"), m, || {
            out.clear();
            huffman::encode(p, &hist, &mut out)
        });
        println!(
            "plane {k}: huffman {:.3} of raw",
            out.len() as f64 / m as f64
        );
        let _ = lengths;
        let mut back = vec![0u8; m];
        time(&format!("plane {k} huffman decode"), m, || {
            huffman::decode(&out, &mut back).unwrap()
        });
        assert_eq!(&back, p);
        let mut r = Vec::with_capacity(m * 2);
        time(&format!("plane {k} rans encode"), m, || {
            r.clear();
            lmc_core::rans::encode(p, &hist, &mut r)
        });
        println!("plane {k}: rans {:.3} of raw", r.len() as f64 / m as f64);
        time(&format!("plane {k} rans decode"), m, || {
            lmc_core::rans::decode(&r, &mut back).unwrap()
        });
        assert_eq!(&back, p);
        time(&format!("plane {k} rans32 encode"), m, || {
            r.clear();
            lmc_core::rans32::encode(p, &hist, &mut r)
        });
        println!("plane {k}: rans32 {:.3} of raw", r.len() as f64 / m as f64);
        time(&format!("plane {k} rans32 decode"), m, || {
            lmc_core::rans32::decode(&r, &mut back).unwrap()
        });
        assert_eq!(&back, p);
        let mut o2 = Vec::with_capacity(m);
        let c = time(&format!("plane {k} encode_plane"), m, || {
            o2.clear();
            codec::encode_plane(p, codec::PlaneKind::Tensor, &mut o2)
        });
        println!("plane {k}: chose {}", c.name());
    }
    let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_slice()).collect();
    let mut out = vec![0u8; n];
    time("merge", n, || planes::merge(dtype, &refs, &mut out));
    assert_eq!(out, data);
}

#[allow(dead_code)]
fn sizes(p: &[u8]) {
    for n in [
        1usize << 10,
        4 << 10,
        16 << 10,
        64 << 10,
        128 << 10,
        1 << 20,
    ] {
        let p = &p[..n.min(p.len())];
        let hist = huffman::histogram(p);
        let mut out = Vec::new();
        huffman::encode(p, &hist, &mut out);
        let mut back = vec![0u8; p.len()];
        let reps = (8 << 20) / n;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let s = Instant::now();
            for _ in 0..reps {
                huffman::decode(&out, &mut back).unwrap();
            }
            best = best.min(s.elapsed().as_secs_f64());
        }
        assert_eq!(back, p);
        println!(
            "decode {n:>8} symbols: {:>6.0} MB/s",
            (reps * n) as f64 / 1e6 / best
        );
    }
}
