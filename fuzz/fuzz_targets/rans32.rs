//! An rANS32 block (codec 7) on arbitrary bytes (output length from the
//! first two bytes), decoded by the kernels and by the scalar reference,
//! and an rANS32 round trip of the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lmc_fuzz::rans32(data));
