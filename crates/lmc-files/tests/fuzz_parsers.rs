//! Replays the file-format fuzz corpus (`fuzz/corpus/{pickle,zip,npy,
//! detect,tree}` and `fuzz/regressions/...`) through the checks the
//! cargo-fuzz targets run (`fuzz/src/parsers.rs`, included here), then a
//! short deterministic mutation run over the same seeds: CI's fuzz run on
//! stable, without cargo-fuzz or nightly.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/parsers.rs"]
mod parsers;

#[path = "../../../fuzz/src/corpus.rs"]
mod corpus;

fn inputs(target: &str) -> Vec<PathBuf> {
    corpus::inputs(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz"),
        target,
    )
}

/// xorshift64*: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation: flip a bit, set a byte to an edge value, cut the tail,
/// duplicate or delete a span.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return;
    }
    let at = rng.below(data.len());
    match rng.below(5) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = [0, 1, 0x7f, 0x80, 0xff, b'.', b'\n'][rng.below(7)],
        2 => data.truncate(at),
        3 => {
            let end = (at + 1 + rng.below(16)).min(data.len());
            let span = data[at..end].to_vec();
            data.splice(at..at, span);
        }
        _ => {
            let end = (at + 1 + rng.below(16)).min(data.len());
            data.drain(at..end);
        }
    }
}

/// Replays `target`'s corpus, then `rounds` mutants of each input (a few
/// mutations stacked), through `check`.
fn run(target: &str, check: fn(&[u8]), rounds: usize) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target} is empty or missing"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for path in &files {
        let seed = std::fs::read(path).unwrap();
        let replay = |data: &[u8], what: &str| {
            if std::panic::catch_unwind(|| check(data)).is_err() {
                panic!("{what} of {} fails the {target} check", path.display());
            }
        };
        replay(&seed, "the input");
        for round in 0..rounds {
            let mut data = seed.clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut data);
            }
            replay(&data, &format!("mutant {round}"));
        }
    }
}

#[test]
fn pickle_corpus_and_mutants() {
    run("pickle", parsers::pickle, 400);
}

#[test]
fn zip_corpus_and_mutants() {
    run("zip", parsers::zip, 300);
}

#[test]
fn npy_corpus_and_mutants() {
    run("npy", parsers::npy, 300);
}

#[test]
fn detect_corpus_and_mutants() {
    run("detect", parsers::detect, 300);
}

#[test]
fn tree_corpus_and_mutants() {
    run("tree", parsers::tree, 2000);
}
