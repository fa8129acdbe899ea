//! Where the committed fuzz inputs are: shared by the stable tests that
//! replay them (`crates/lmc-core/tests/fuzz_corpus.rs`,
//! `crates/lmc-files/tests/fuzz_parsers.rs`), which include this file.

use std::path::{Path, PathBuf};

/// Every file under `fuzz/corpus/<target>` and `fuzz/regressions/<target>`
/// of the fuzz folder `fuzz`, sorted.
pub fn inputs(fuzz: &Path, target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
