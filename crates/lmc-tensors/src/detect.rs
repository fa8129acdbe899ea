//! Telling checkpoint formats apart by their first bytes.

use lmc_core::{SegmentKind, SegmentSpec};

use crate::{Error, Region, npy, safetensors, tile, torch, zip};

/// The formats [`detect`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    Safetensors,
    /// A `torch.save` zip archive (PyTorch 1.6 and later).
    Torch,
    /// A `torch.save` file in the format before PyTorch 1.6.
    TorchLegacy,
    Npy,
    /// A zip archive of `.npy` files (`numpy.savez`, `savez_compressed`).
    Npz,
    /// Another zip archive: its stored `.npy` members are still split.
    Zip,
    /// Anything else: one byte segment.
    Unknown,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Safetensors,
        Format::Torch,
        Format::TorchLegacy,
        Format::Npy,
        Format::Npz,
        Format::Zip,
        Format::Unknown,
    ];

    /// A short name for people: `safetensors`, `pytorch`, `npy`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Torch => "pytorch",
            Format::TorchLegacy => "pytorch-legacy",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Zip => "zip",
            Format::Unknown => "bytes",
        }
    }

    /// The code of the format in a directory stream (FORMAT.md, appendix).
    pub fn code(self) -> u8 {
        match self {
            Format::Unknown => 0,
            Format::Safetensors => 1,
            Format::Torch => 2,
            Format::TorchLegacy => 3,
            Format::Npy => 4,
            Format::Npz => 5,
            Format::Zip => 6,
        }
    }

    pub fn from_code(c: u8) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.code() == c)
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub format: Format,
    /// Tiles the whole file.
    pub layout: Vec<SegmentSpec>,
    /// Things worth telling the user (parts stored as bytes and why; code a
    /// pickle would run if loaded). Empty for ordinary files.
    pub notes: Vec<String>,
    /// What in a PyTorch checkpoint's pickles `torch.load(weights_only=True)`
    /// would refuse (`data.pkl names posix.system (offset 2)`), or what lmc
    /// cannot follow: the mark of a checkpoint that may run code when
    /// loaded. Empty for other files. See [`crate::torch::pickle_refusals`].
    pub pickle_refusals: Vec<String>,
}

/// Recognises the format of `bytes` and returns its layout.
///
/// A file that starts like a known format but is damaged (truncated,
/// inconsistent, hostile: sizes past the end of the file, zip members
/// named `../x`) is an error; a file that starts like none of them is
/// [`Format::Unknown`] with one byte segment.
pub fn detect(bytes: &[u8]) -> Result<Detected, Error> {
    let len = bytes.len() as u64;
    // torch.load unpickles any file that is not a zip archive from its
    // first byte, whatever else it is: those are checked too.
    if safetensors::looks_like(bytes) {
        return Ok(Detected {
            format: Format::Safetensors,
            layout: safetensors::layout(bytes)?,
            notes: Vec::new(),
            pickle_refusals: torch::raw_pickle_refusals(bytes),
        });
    }
    if npy::looks_like(bytes) {
        return Ok(Detected {
            format: Format::Npy,
            layout: npy::layout(bytes, "array")?,
            notes: Vec::new(),
            pickle_refusals: torch::raw_pickle_refusals(bytes),
        });
    }
    if zip::looks_like(bytes) {
        let entries = zip::entries(bytes)?;
        if let Some(folder) = torch::torch_folder(&entries) {
            let (regions, summary, mut notes) = torch::zip_regions(bytes, &entries, folder)?;
            notes.extend(torch::notes(&summary));
            return Ok(Detected {
                format: Format::Torch,
                layout: tile(len, regions)?,
                notes,
                pickle_refusals: summary.refusals,
            });
        }
        let mut regions = Vec::new();
        let mut npz = false;
        for e in &entries {
            let Some(stem) = e.name.strip_suffix(".npy") else {
                continue;
            };
            npz = true;
            let data = e.data(bytes);
            if !e.is_stored() || !npy::looks_like(data) {
                continue;
            }
            let mut at = e.data_offset;
            for s in npy::layout(data, stem).map_err(|err| Error::NpzMember {
                member: e.name.clone(),
                offset: e.data_offset,
                detail: err.detail(),
            })? {
                if matches!(s.kind, SegmentKind::Tensor { .. }) {
                    regions.push(Region {
                        offset: at,
                        len: s.len,
                        kind: s.kind,
                    });
                }
                at += s.len;
            }
        }
        return Ok(Detected {
            format: if npz { Format::Npz } else { Format::Zip },
            layout: tile(len, regions)?,
            notes: Vec::new(),
            pickle_refusals: torch::zip_pickle_refusals(bytes, &entries, None),
        });
    }
    if torch::looks_like_legacy(bytes) {
        let (regions, summary, mut notes) = torch::legacy_regions(bytes)?;
        notes.extend(torch::notes(&summary));
        return Ok(Detected {
            format: Format::TorchLegacy,
            layout: tile(len, regions)?,
            notes,
            pickle_refusals: summary.refusals,
        });
    }
    Ok(Detected {
        format: Format::Unknown,
        layout: tile(len, Vec::new())?,
        notes: Vec::new(),
        pickle_refusals: torch::raw_pickle_refusals(bytes),
    })
}

/// Puts `prefix` before the name of every tensor of `layout`
/// (`model.safetensors:` + `embed.weight`).
pub fn prefix_names(layout: &mut [SegmentSpec], prefix: &str) {
    for s in layout {
        if let SegmentKind::Tensor { name, .. } = &mut s.kind {
            name.insert_str(0, prefix);
        }
    }
}
