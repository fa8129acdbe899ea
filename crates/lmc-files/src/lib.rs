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
//!   and renamed into place when complete.
//!
//! The crates above translate their arguments into these calls and the
//! errors back into their own.

#![forbid(unsafe_code)]

pub mod base;
pub mod input;
pub mod output;

pub use base::{Base, BaseError, load_base};
pub use input::{InputError, check_pickles, detect_base, detect_input, detect_member, parse_dtype};
pub use output::{folder_and_name, temp_beside};
