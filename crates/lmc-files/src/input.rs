//! What an input file is, and whether lmc may store it.
//!
//! One rule for every front end (`lmc compress`, `lmc compress DIR`,
//! `lmc snapshot add`, `Store::add_path`, Python's `compress_file` and the
//! DCP writer and reader): a file whose pickles `torch.load(weights_only=True)`
//! would refuse, or that lmc cannot follow far enough to tell, is refused
//! unless the caller allows pickle calls. lmc itself never runs a pickle;
//! the refusal protects whoever loads the file later with `torch.load`.

use std::path::Path;

use lmc_core::Dtype;
use lmc_tensors::{Detected, Format};

/// Why an input is not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The file's pickles would call or name code that
    /// `torch.load(weights_only=True)` refuses, or cannot be followed.
    #[error(
        "{path}: {}; lmc refuses checkpoints whose pickles torch.load(weights_only=True) \
         refuses or that it cannot check (that is how malicious checkpoints work). lmc \
         never runs a pickle: to store it anyway, byte for byte, allow pickle calls \
         (--allow-pickle-calls; allow_pickle_calls=True in Python)",
        refusals.join("; ")
    )]
    UnsafePickle { path: String, refusals: Vec<String> },
    /// A zip archive or legacy PyTorch file that cannot be read, so its
    /// pickles cannot be checked.
    #[error(
        "{path}: {error}; a file that may hold a pickle is refused when lmc cannot read it \
         (what it would do when loaded cannot be checked); to store it anyway, byte for \
         byte, allow pickle calls (--allow-pickle-calls; allow_pickle_calls=True in Python)"
    )]
    Uncheckable {
        path: String,
        // Not `source`: the message already says it, and error chains
        // would print it twice.
        error: lmc_tensors::Error,
    },
    #[error("{path}: {error}")]
    Damaged {
        path: String,
        error: lmc_tensors::Error,
    },
    #[error("{path} is already an lmc container")]
    AlreadyContainer { path: String },
    #[error(
        "{path} is an lmc directory stream (what `lmc decompress` restores a directory from); \
         compress the directory instead"
    )]
    DirectoryStream { path: String },
    #[error(
        "{path} is not a safetensors file, a PyTorch checkpoint or a NumPy array (it starts \
         like none of them); for a flat array of numbers use --dtype (dtype= in Python)"
    )]
    UnknownFormat { path: String },
    #[error(
        "unknown dtype {name:?} (expected one of BF16, F16, F32, F64, F8_E4M3, F8_E5M2, I8, \
         I16, I32, I64, U8, U16, U32, U64, BOOL)"
    )]
    UnknownDtype { name: String },
}

/// A dtype by its safetensors name (`BF16`, `F32`).
pub fn parse_dtype(name: &str) -> Result<Dtype, InputError> {
    Dtype::from_name(name).ok_or_else(|| InputError::UnknownDtype { name: name.into() })
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Whether `bytes` could hold a pickle that `torch.load` would run: a zip
/// archive (a `torch.save` file) or a legacy PyTorch file.
fn may_hold_pickle(bytes: &[u8]) -> bool {
    lmc_tensors::zip::looks_like(bytes) || lmc_tensors::torch::looks_like_legacy(bytes)
}

/// Refuses `found` (read from `path`) if its pickles fail the rule, unless
/// `allow_pickle_calls`.
pub fn check_pickles(
    path: &Path,
    found: &Detected,
    allow_pickle_calls: bool,
) -> Result<(), InputError> {
    if found.pickle_refusals.is_empty() || allow_pickle_calls {
        return Ok(());
    }
    Err(InputError::UnsafePickle {
        path: shown(path),
        refusals: found.pickle_refusals.clone(),
    })
}

/// The layout of a file given to `lmc compress` (or Python's
/// `compress_file`): a raw array of `dtype` if one is given, else whatever
/// format lmc recognises, its pickles checked. A file in no known format,
/// an lmc container and a directory stream are refused: compressing them
/// would work, but as plain bytes, which is rarely what was meant.
pub fn detect_input(
    path: &Path,
    bytes: &[u8],
    dtype: Option<Dtype>,
    allow_pickle_calls: bool,
) -> Result<Detected, InputError> {
    if let Some(d) = dtype {
        return Ok(Detected {
            format: Format::Unknown,
            layout: lmc_tensors::raw::layout(bytes.len() as u64, d, "data"),
            notes: Vec::new(),
            pickle_refusals: Vec::new(),
        });
    }
    if bytes.starts_with(&lmc_core::format::MAGIC) {
        return Err(InputError::AlreadyContainer { path: shown(path) });
    }
    if lmc_tensors::tree::looks_like(bytes) {
        return Err(InputError::DirectoryStream { path: shown(path) });
    }
    let found = lmc_tensors::detect(bytes).map_err(|error| {
        if may_hold_pickle(bytes) && !allow_pickle_calls {
            InputError::Uncheckable {
                path: shown(path),
                error,
            }
        } else {
            InputError::Damaged {
                path: shown(path),
                error,
            }
        }
    })?;
    // The danger first: a plain pickle is also a file of no known format.
    check_pickles(path, &found, allow_pickle_calls)?;
    if found.format == Format::Unknown {
        return Err(InputError::UnknownFormat { path: shown(path) });
    }
    Ok(found)
}

/// The layout of a base file (`--base`): as [`detect_input`], without the
/// pickle rule (a base is read, never stored).
pub fn detect_base(
    path: &Path,
    bytes: &[u8],
    dtype: Option<Dtype>,
) -> Result<Detected, InputError> {
    detect_input(path, bytes, dtype, true)
}

/// The layout of one file of a directory or a snapshot: whatever format lmc
/// recognises; a file in no known format, or damaged, is one byte segment
/// (with a note saying why). The pickle rule applies as in
/// [`detect_input`], and a file that may hold a pickle but cannot be read
/// is refused (unless `allow_pickle_calls`).
pub fn detect_member(
    path: &Path,
    bytes: &[u8],
    allow_pickle_calls: bool,
) -> Result<Detected, InputError> {
    match lmc_tensors::detect(bytes) {
        Ok(found) => {
            check_pickles(path, &found, allow_pickle_calls)?;
            Ok(found)
        }
        Err(error) if may_hold_pickle(bytes) && !allow_pickle_calls => {
            Err(InputError::Uncheckable {
                path: shown(path),
                error,
            })
        }
        Err(e) => {
            let found = Detected {
                format: Format::Unknown,
                layout: lmc_tensors::tile(bytes.len() as u64, Vec::new())
                    .expect("an empty region list tiles any length"),
                notes: vec![format!("stored as plain bytes ({e})")],
                pickle_refusals: lmc_tensors::torch::raw_pickle_refusals(bytes),
            };
            check_pickles(path, &found, allow_pickle_calls)?;
            Ok(found)
        }
    }
}

/// Refuses the bytes of an object saved with `torch.save` (a DCP item,
/// `what`) unless they are a `torch.save` archive or legacy file whose
/// pickles pass the rule: DCP hands them to `torch.load(weights_only=False)`,
/// which would unpickle anything else from its first byte.
pub fn check_saved_object(
    what: &str,
    bytes: &[u8],
    allow_pickle_calls: bool,
) -> Result<(), InputError> {
    if allow_pickle_calls {
        return Ok(());
    }
    let path = Path::new(what);
    match lmc_tensors::detect(bytes) {
        Ok(found) if matches!(found.format, Format::Torch | Format::TorchLegacy) => {
            check_pickles(path, &found, false)
        }
        Ok(_) => Err(InputError::UnsafePickle {
            path: what.to_string(),
            refusals: vec![
                "it is not a torch.save archive, and torch.load would unpickle it from its first byte"
                    .into(),
            ],
        }),
        Err(error) => Err(InputError::Uncheckable {
            path: what.to_string(),
            error,
        }),
    }
}
