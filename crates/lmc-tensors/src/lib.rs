//! lmc-tensors: how checkpoint files map onto lmc segments.
//!
//! A file format module reads a file's structure (never its tensor data)
//! and returns a layout: the list of [`SegmentSpec`]s that tiles the file,
//! tensors as tensor segments and everything else (headers, metadata,
//! padding) as byte segments. Compressing that layout and decompressing it
//! gives back the file byte for byte.
//!
//! Formats: [`safetensors`], and [`raw`] (a flat array of one dtype).

#![forbid(unsafe_code)]

pub mod convert;
pub mod raw;
pub mod safetensors;

pub use lmc_core::SegmentSpec;

/// A file that is not what it was taken for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    #[error("{0}")]
    Invalid(String),
}
