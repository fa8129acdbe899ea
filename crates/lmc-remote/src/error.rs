//! Errors of the object-storage layer: each names the URL.

/// An error of [`crate`]: what was being done, to which URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot name an object (unknown scheme, no bucket or key).
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: String },

    /// The store answered with an error (after retries).
    #[error("{url}: cannot {op}: {source}")]
    Store {
        url: String,
        op: &'static str,
        #[source]
        source: object_store::Error,
    },

    /// A create-only write found an object already there.
    #[error("{url}: already exists")]
    Exists { url: String },

    /// A write conditional on the version read found another version:
    /// another process replaced or deleted the object since.
    #[error("{url}: changed by another process since it was read")]
    Changed { url: String },

    /// A ranged read came back shorter or longer than asked for.
    #[error("{url}: bytes {start}..{end} asked for, {got} came back: a truncated answer, refused")]
    ShortRead {
        url: String,
        start: u64,
        end: u64,
        got: u64,
    },

    /// A range asked for lies outside the object.
    #[error("{url}: bytes {start}..{end} asked for, the object has {len}")]
    OutOfRange {
        url: String,
        start: u64,
        end: u64,
        len: u64,
    },

    /// The object is not a container lmc can read (its header or index).
    #[error("{url}: {source}")]
    Container {
        url: String,
        #[source]
        source: lmc_core::Error,
    },

    /// A local read or write failed while copying to or from the store.
    #[error("{url}: {what}: {source}")]
    Io {
        url: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the object asked for is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        let kind = match &e {
            Error::ShortRead { .. } | Error::OutOfRange { .. } => std::io::ErrorKind::UnexpectedEof,
            Error::BadUrl { .. } => std::io::ErrorKind::InvalidInput,
            Error::Store {
                source: object_store::Error::NotFound { .. },
                ..
            } => std::io::ErrorKind::NotFound,
            Error::Io { source, .. } => source.kind(),
            Error::Container {
                source: lmc_core::Error::Io(io),
                ..
            } => io.kind(),
            Error::Container { .. } => std::io::ErrorKind::InvalidData,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}
