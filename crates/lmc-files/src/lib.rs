//! lmc-files: the one file layer under the CLI, the snapshot store and the
//! Python package.
//!
//! Every rule about files that more than one front end needs lives here
//! once, so the front ends cannot drift apart:
//!
//! - [`base`]: the base a delta container needs;
//! - [`input`]: what an input file is and whether lmc may store it (the
//!   pickle rule);
//! - [`output`]: outputs written to a temporary file beside the destination
//!   and renamed into place when complete, and only ever over a regular
//!   file ([`check_destination`]).
//! - [`mode`]: the one permission mask (rwx only, no set-ID or sticky bits).
//! - [`walk`]: a directory on disk listed as a directory stream's entries,
//!   each checked as a restore will check it.
//! - [`builder`]: a directory restored into a temporary directory and moved
//!   into place, and the rule for what an output may replace.
//! - [`restore`]: directory containers checked and restored through it.
//! - [`stream`]: a directory on disk as its directory stream, to compress.
//! - [`listing`]: a directory container's entries from their headers.
//! - [`file_at`]: a local file read at offsets, so that a container is
//!   opened by its header and index and only the chunks needed are read.
//! - [`memory`]: checkpoints and containers in memory and as `std::io`
//!   streams (`compress_to_vec`, `decompress_to_vec`, `Encoder`, `Decoder`).
//!
//! Paths inside a directory obey one rule, [`check_path`] (the directory
//! stream's, FORMAT.md). The crates above translate their arguments into
//! these calls and the errors ([`Error`], each naming its file) back into
//! their own.

#![forbid(unsafe_code)]

pub mod base;
pub mod builder;
pub mod error;
pub mod file_at;
pub mod input;
pub mod listing;
pub mod memory;
pub mod mode;
pub mod output;
pub mod restore;
pub mod stream;
pub mod walk;

pub use base::{Base, BaseError, load_base};
pub use builder::{DirBuilder, check_dir_destination};
pub use error::{Error, Result};
pub use file_at::FileAt;
pub use input::{
    InputError, check_pickles, check_saved_object, detect_base, detect_input, detect_member,
    parse_dtype,
};
pub use listing::{EntryInfo, list_tree};
pub use lmc_tensors::tree::check_path;
pub use memory::{Decoder, Encoder, compress_to_vec, decompress_to_vec};
pub use mode::{MODE_MASK, mode_of, set_mode};
pub use output::{
    Destination, DestinationError, check_destination, folder_and_name, temp_beside, temp_in,
};
pub use restore::{TreeSummary, check_tree, is_tree, is_tree_in, restore_tree};
pub use stream::{DirStream, check_outside, dir_stream};
pub use walk::{Item, Listing, walk};
