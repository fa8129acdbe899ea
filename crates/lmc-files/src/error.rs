//! What can go wrong in the file layer: each error names the file, the
//! link or the directory it is about.

use std::path::PathBuf;

/// An error of the file layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: "create", "write", "list", ...
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A name on disk that is not UTF-8 (directory streams and manifests
    /// hold UTF-8 paths).
    #[error("{} has a name that is not UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    /// Something that is not a regular file, a directory or a symbolic
    /// link (a socket, a device, a pipe).
    #[error("{} is not a regular file, a directory or a symbolic link", path.display())]
    Special { path: PathBuf },
    /// A symbolic link whose target lmc could not restore as it is.
    #[error(
        "{} is a symbolic link to {target:?}, which {reason}; lmc restores directories \
         exactly and keeps only links that resolve inside them (copy the directory with \
         `cp -rL` to store the files they point to)",
        path.display()
    )]
    LinkOutside {
        path: PathBuf,
        target: String,
        /// "leads outside the directory", "is an absolute path", ...
        reason: String,
    },
    /// A directory stream, a path or a link refused by the rules of
    /// [`lmc_tensors::tree`]; `path` is the container, the directory or
    /// the file it was found in.
    #[error("{}: {source}", path.display())]
    Refused {
        path: PathBuf,
        source: lmc_tensors::Error,
    },
    /// A container that does not decode.
    #[error("{}: {source}", path.display())]
    Codec {
        path: PathBuf,
        source: lmc_core::Error,
    },
    /// The destination exists and replacing it was not asked for.
    #[error("{} already exists (use --force to replace it)", path.display())]
    Exists { path: PathBuf },
    /// The destination is a directory with something in it: lmc never
    /// deletes a directory's contents, even when asked to replace it.
    #[error(
        "{} is a directory that is not empty; lmc does not delete a directory's contents, \
         even with --force (remove it first, or restore somewhere else)",
        path.display()
    )]
    NotEmpty { path: PathBuf },
    /// The destination is a directory and the output a file, or the other
    /// way round.
    #[error("{} is {what}", path.display())]
    WrongKind { path: PathBuf, what: &'static str },
    /// An output inside the directory it is made from.
    #[error("output {} is inside the directory being compressed ({})", path.display(), dir.display())]
    InsideInput { path: PathBuf, dir: PathBuf },
    /// A file the caller could not read (its message names it).
    #[error("{0}")]
    Read(String),
    /// An input lmc will not store (the pickle rule) or cannot read.
    #[error(transparent)]
    Input(#[from] crate::InputError),
    /// The base of a delta container cannot be had.
    #[error(transparent)]
    Base(#[from] crate::BaseError),
    /// An output's destination may not be replaced (a device, a pipe).
    #[error(transparent)]
    Destination(#[from] crate::DestinationError),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
