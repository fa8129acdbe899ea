//! lmc-files: the one file layer under the CLI, the snapshot store and the
//! Python package.
//!
//! Every rule about files that more than one front end needs lives here
//! once, so the front ends cannot drift apart:
//!
//! - [`output`]: outputs written to a temporary file beside the destination
//!   and renamed into place when complete, and only ever over a regular
//!   file ([`check_destination`]).
//!
//! The crates above translate their arguments into these calls and the
//! errors back into their own.

#![forbid(unsafe_code)]

pub mod output;

pub use output::{
    Destination, DestinationError, check_destination, folder_and_name, temp_beside, temp_in,
};
