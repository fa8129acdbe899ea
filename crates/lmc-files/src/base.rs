//! The base of a delta container: whether one is needed, and its bytes.

use std::ops::Deref;
use std::path::Path;

use lmc_core::Container;

/// Why the base a container needs cannot be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaseError {
    #[error(
        "{input} is a delta container: give its base (--base; base= in Python): a {len}-byte \
         file with XXH3-128 {hash:032x}"
    )]
    Missing { input: String, len: u64, hash: u128 },
    #[error("{input} is not a delta container; the base {base} is not needed")]
    NotNeeded { input: String, base: String },
    #[error("base {base} is itself a delta container; decompress it first and give the result")]
    Chained { base: String },
    /// The caller's reader failed; its message names the file.
    #[error("{error}")]
    Read {
        base: String,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("base {base}: {error}")]
    Codec {
        base: String,
        error: lmc_core::Error,
    },
}

/// A base's bytes: the file as the caller read it, or the original decoded
/// from a full `.lmc` of it.
#[derive(Debug)]
pub enum Base<B> {
    File(B),
    Decoded(Vec<u8>),
}

impl<B: Deref<Target = [u8]>> Deref for Base<B> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Base::File(b) => b,
            Base::Decoded(v) => v,
        }
    }
}

/// The base `container` (read from `input`) needs: `None` for a full
/// container; for a delta, the file at `base` read with `read`, or, if that
/// file is a full `.lmc` of the base, the original decoded from it. The
/// base's length and hash are checked when the container is given it
/// ([`Container::with_base`]).
pub fn load_base<B: Deref<Target = [u8]>>(
    input: &Path,
    container: &Container<'_>,
    base: Option<&Path>,
    read: impl FnOnce(&Path) -> Result<B, Box<dyn std::error::Error + Send + Sync>>,
) -> Result<Option<Base<B>>, BaseError> {
    let want = match (container.base_ref(), base) {
        (None, None) => return Ok(None),
        (None, Some(b)) => {
            return Err(BaseError::NotNeeded {
                input: input.display().to_string(),
                base: b.display().to_string(),
            });
        }
        (Some(want), None) => {
            return Err(BaseError::Missing {
                input: input.display().to_string(),
                len: want.len,
                hash: want.hash,
            });
        }
        (Some(want), Some(_)) => want,
    };
    let path = base.expect("matched above");
    let shown = || path.display().to_string();
    let bytes = read(path).map_err(|error| BaseError::Read {
        base: shown(),
        error,
    })?;
    let b: &[u8] = &bytes;
    if !b.starts_with(&lmc_core::format::MAGIC) || b.len() as u64 == want.len {
        return Ok(Some(Base::File(bytes)));
    }
    let codec = |error| BaseError::Codec {
        base: shown(),
        error,
    };
    let c = Container::open(b).map_err(codec)?;
    if c.base_ref().is_some() {
        return Err(BaseError::Chained { base: shown() });
    }
    // A full container of the base cannot decode to more than the delta
    // says its base is; refusing a longer one bounds the allocation.
    if c.header().original_len != want.len {
        return Ok(Some(Base::File(bytes)));
    }
    let mut v = Vec::with_capacity(want.len as usize);
    c.decompress_to(&mut v, &mut |_| true).map_err(codec)?;
    Ok(Some(Base::Decoded(v)))
}
