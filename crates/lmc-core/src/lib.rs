//! lmc-core: lossless compression of LLM checkpoint tensors.
//!
//! The layers, bottom up:
//! - [`huffman`]: our canonical, length-limited Huffman coder.
//! - [`planes`]: byte grouping of tensor elements into planes.
//! - [`rans`]: our rANS coder, for skewed planes where Huffman's whole bits lose.
//! - [`rans32`]: rANS with 32 states and SIMD decoding, the fast form of it.
//! - [`runs`]: run coding of planes dominated by one byte (XOR deltas).
//! - [`codec`]: per-plane choice of raw, constant, Huffman, rANS, runs or zstd.
//! - [`format`](mod@format): the container's bytes (see FORMAT.md).
//! - [`compress`](mod@compress) and [`container`]: the parallel pipeline, both directions.
//! - [`hash`]: the format's XXH3 checksums.
//! - [`stats`]: entropy and change measurements for `bench` and `analyze`.
//!
//! ```
//! use lmc_core::{compress, CompressOptions, Container, Dtype, SegmentKind, SegmentSpec};
//!
//! let weights: Vec<u8> = (0..4096u32).flat_map(|i| ((i % 7) as f32).to_le_bytes()).collect();
//! let layout = [SegmentSpec {
//!     kind: SegmentKind::Tensor { name: "w".into(), dtype: Dtype::F32, shape: vec![4096] },
//!     len: weights.len() as u64,
//! }];
//! let mut packed = std::io::Cursor::new(Vec::new());
//! compress(&weights, &layout, &CompressOptions::default(), &mut packed, &mut |_| true)?;
//!
//! let packed = packed.into_inner();
//! let container = Container::open(&packed)?;
//! let mut restored = Vec::new();
//! container.decompress_to(&mut restored, &mut |_| true)?;
//! assert_eq!(restored, weights);
//! # Ok::<(), lmc_core::Error>(())
//! ```

// Unsafe code lives in `kernels` alone, each kernel beside its safe twin.
#![deny(unsafe_code)]

pub mod codec;
pub mod compress;
pub mod container;
pub mod derive;
pub mod dtype;
pub mod error;
pub mod format;
pub mod hash;
pub mod huffman;
mod kernels;
pub mod planes;
pub mod ranged;
pub mod rans;
pub mod rans32;
pub mod runs;
pub mod stats;
#[cfg(test)]
mod test_rng;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use codec::Tuning;
pub use compress::{
    CompressOptions, CompressSummary, DEFAULT_CHUNK_SIZE, DeltaBase, MAX_CHUNK_SIZE, MAX_THREADS,
    MIN_CHUNK_SIZE, SegmentSpec, SourceInput, check_chunk_size, check_threads, compress,
    compress_delta, compress_parts, compress_with_sources, max_threads,
};
pub use container::Container;
pub use dtype::Dtype;
pub use error::{ChunkFault, Corruption, DecodeError, Error, Region, Result, TableFault};
pub use format::SegmentKind;
pub use ranged::{ReadAt, read_file_at};
