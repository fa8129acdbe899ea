//! `huffman::decode` on arbitrary bytes (output length from the first two
//! bytes), and an encode/decode round trip of the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lmc_fuzz::huffman(data));
