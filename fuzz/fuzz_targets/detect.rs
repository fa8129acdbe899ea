//! The `detect` check of `src/parsers.rs` on arbitrary bytes. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lmc_fuzz::parsers::detect(data));
