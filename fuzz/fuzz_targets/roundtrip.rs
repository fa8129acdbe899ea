//! Compress then decompress: the first byte picks the dtype and chunk size,
//! the rest is the data.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lmc_fuzz::roundtrip(data));
