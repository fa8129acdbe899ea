//! Replays the fuzz corpus and the saved crash regressions through the same
//! checks the cargo-fuzz targets run (`fuzz/src/lib.rs`, included here), so
//! that CI covers them on stable without cargo-fuzz or nightly.
//!
//! - `fuzz/corpus/<target>/*`: the minimised corpus of each target;
//! - `fuzz/regressions/<target>/*`: inputs that once crashed a target.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/lib.rs"]
mod lmc_fuzz;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;

fn inputs(target: &str) -> Vec<PathBuf> {
    corpus::inputs(&fuzz_dir(), target)
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(target);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let run = std::panic::catch_unwind(|| check(&data));
        if run.is_err() {
            panic!("fuzz input {} fails the {target} check", path.display());
        }
    }
    files.len()
}

#[test]
fn decode_corpus_and_regressions_never_panic() {
    let n = replay("decode", lmc_fuzz::decode);
    assert!(n > 0, "fuzz/corpus/decode is empty or missing");
}

#[test]
fn huffman_corpus_and_regressions_never_panic() {
    replay("huffman", lmc_fuzz::huffman);
}

#[test]
fn runs_corpus_and_regressions_never_panic() {
    let n = replay("runs", lmc_fuzz::runs);
    assert!(n > 0, "fuzz/corpus/runs is empty or missing");
}

#[test]
fn rans32_corpus_and_regressions_never_panic() {
    let n = replay("rans32", lmc_fuzz::rans32);
    assert!(n > 0, "fuzz/corpus/rans32 is empty or missing");
    // A mutation pass: every byte of every seed changed three ways (the
    // length, the table, the states and the stream all get hit).
    for path in inputs("rans32") {
        let seed = std::fs::read(&path).unwrap();
        for i in 0..seed.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut m = seed.clone();
                m[i] ^= flip;
                lmc_fuzz::rans32(&m);
            }
        }
    }
}

/// Writes `fuzz/corpus/rans32/`'s seeds: valid blocks of skewed and flat
/// planes at lengths around a round of 32, with their output lengths.
/// Run once (`cargo test -p lmc-core --test fuzz_corpus -- --ignored`).
#[test]
#[ignore]
fn write_rans32_seeds() {
    let dir = fuzz_dir().join("corpus/rans32");
    std::fs::create_dir_all(&dir).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for (k, (n, zeros)) in [
        (31usize, 900u64),
        (64, 900),
        (100, 500),
        (700, 950),
        (3000, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let plane: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 1000 < zeros { 0 } else { (x >> 40) as u8 }
            })
            .collect();
        let mut seed = (n as u16).to_le_bytes().to_vec();
        lmc_core::rans32::encode(&plane, &lmc_core::huffman::histogram(&plane), &mut seed);
        std::fs::write(dir.join(format!("seed-{k}")), seed).unwrap();
    }
}

#[test]
fn roundtrip_corpus_and_regressions_round_trip() {
    replay("roundtrip", lmc_fuzz::roundtrip);
}

/// The seed containers in the decode corpus are valid: they open and verify.
/// (The minimised corpus also holds broken ones, which need only not panic.)
#[test]
fn decode_corpus_holds_valid_containers() {
    let valid = inputs("decode")
        .iter()
        .filter(|p| {
            let data = std::fs::read(p).unwrap();
            lmc_core::Container::open(&data).is_ok_and(|c| c.verify(&mut |_| true).is_ok())
        })
        .count();
    assert!(valid > 0, "no valid container in fuzz/corpus/decode");
}

/// Single-byte changes all over the golden split-plane, runs-plane,
/// sparse-chunk (runs map and bitmap) and rANS32 delta containers, each run through the decode check, which repairs the
/// checksums so that the change reaches the plane decoders: a mutation
/// pass on stable, over the split and runs planes' paths in particular.
#[test]
fn mutated_split_runs_and_sparse_containers_never_panic() {
    for golden in ["split", "runs", "sparse", "rans32", "bitmap"] {
        let path = fuzz_dir().join(format!("../tests/data/{golden}/next.safetensors.lmc"));
        let seed = std::fs::read(path).unwrap();
        // Every byte of the header and the start of the payload (the chunk's
        // planes), every 13th after that, with three kinds of change.
        let positions = (0..seed.len()).filter(|&i| i < 600 || i % 13 == 0);
        for i in positions {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut m = seed.clone();
                m[i] ^= x;
                let run = std::panic::catch_unwind(|| lmc_fuzz::decode(&m));
                assert!(run.is_ok(), "byte {i} ^ {x:#x} of the {golden} seed panics");
            }
        }
    }
}

/// Single-byte changes at every byte of the derived-tensor seed
/// (`fuzz/corpus/decode/seed-derived`: copies and roundings, by name and
/// at an offset), each run through the decode check, which repairs the
/// checksums so that changed references (source, op, element offset)
/// reach the index checks and the decoders: a mutation pass on stable.
#[test]
fn mutated_derived_container_never_panics() {
    // And its delta twin (`seed-derived-delta`: a BF16 tensor derived from
    // a delta tensor).
    for name in ["seed-derived", "seed-derived-delta"] {
        let seed = std::fs::read(fuzz_dir().join("corpus/decode").join(name)).unwrap();
        for i in 0..seed.len() {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut m = seed.clone();
                m[i] ^= x;
                let run = std::panic::catch_unwind(|| lmc_fuzz::decode(&m));
                assert!(run.is_ok(), "byte {i} ^ {x:#x} of {name} panics");
            }
        }
    }
}
