//! A runs block (codec 6) on arbitrary bytes (output length from the first
//! two bytes), and a run-coding round trip of the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lmc_fuzz::runs(data));
