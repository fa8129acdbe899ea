//! `Container::open` on arbitrary bytes, then `verify`, `read_tensor` and
//! `decompress_to`; again after repairing every checksum so that mutations
//! reach the plane decoders. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lmc_fuzz::decode(data));
