//! The manifest: the store's one source of truth, `STORE/manifest.json`.
//!
//! It lists every snapshot, its files, the object holding each file, and
//! the base each delta was coded against (by content hash). A delta's
//! parent is another snapshot of the store: the one after it (a reverse
//! delta, what lmc writes now: the newest snapshot is whole) or, in stores
//! written before version 3, the one before it. A snapshot
//! exists exactly when the manifest lists it: objects not listed are
//! leftovers of an interrupted write and are removed by the next writer.
//! The manifest is replaced atomically (temporary file, fsync, rename), so
//! a reader sees either the old list or the new one, never a mix.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const FORMAT: &str = "lmc-store";
/// The version of a manifest with no retired objects: what every lmc reads.
pub const VERSION: u32 = 1;
/// The version of a manifest that lists retired objects (see
/// [`Manifest::retired`]); written only then, so that a store whose
/// manifest lists none stays readable by an lmc from before retirement
/// (which refuses the `retired` field as unknown).
pub const VERSION_RETIRED: u32 = 2;
/// The version of a manifest in which some snapshot is a delta against a
/// later one (a reverse delta); written only then, so that a store an
/// older lmc can read stays readable by it. An lmc from before reverse
/// deltas refuses version 3 (it would restore such a snapshot wrongly).
pub const VERSION_REVERSE: u32 = 3;
/// The version of a manifest in which some snapshot is marked `deferred`
/// (whole until a writer re-encodes it, [`crate::Store::add_deferred`]);
/// written only then. It may also hold reverse deltas.
pub const VERSION_DEFERRED: u32 = 4;
/// The version of a manifest in which some file takes the sources of its
/// derived tensors from other files of its snapshot ([`FileEntry::sources`]);
/// written only then. It may also hold everything version 4 may. An lmc
/// from before refuses it (it could not decode such a file).
pub const VERSION_SOURCES: u32 = 5;

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `"lmc-store"`.
    pub format: String,
    /// 3 when a snapshot is a delta against a later one, else 2 when
    /// `retired` is not empty, else 1.
    pub version: u32,
    /// Incremented by every committed change; new objects carry it in their
    /// names, so a retried change never overwrites an object in use.
    pub generation: u64,
    /// Bounds the deltas a restore decodes to `keyframe_every - 1`: no
    /// snapshot's chain of parents holds more deltas than that.
    pub keyframe_every: u32,
    /// Snapshots in increasing step order.
    pub snapshots: Vec<Snapshot>,
    /// Objects that an earlier manifest named and this one does not, with
    /// when they stopped being named: readers that loaded the earlier
    /// manifest may still be decoding them, so writers delete them only
    /// once they are older than the grace period. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
}

/// An object no snapshot names any more, kept for the readers that may
/// still be using it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retired {
    /// The object's file name under `objects/`.
    pub object: String,
    /// Seconds since the Unix epoch when the manifest that stopped naming
    /// it was committed.
    pub since: u64,
}

/// Whether a snapshot was one file or a directory of files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
}

/// One snapshot: a checkpoint at a training step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub step: u64,
    pub kind: Kind,
    /// The step of the snapshot this one is a delta against, or none for a
    /// whole (full) snapshot. Written by this lmc: the snapshot just after
    /// it (a reverse delta); in a version 1 or 2 manifest: the one just
    /// before it.
    pub parent: Option<u64>,
    /// Whole for now: a deferred add ([`crate::Store::add_deferred`]) left
    /// it for a later writer to re-encode as a delta against the snapshot
    /// after it. Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// Deltas to decode to restore this one (the length of its chain of
    /// parents): 0 for a full snapshot, else the parent's plus 1.
    pub depth: u32,
    /// Seconds since the Unix epoch when it was added.
    pub added: u64,
    pub files: Vec<FileEntry>,
}

/// One file of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the checkpoint (for a single file: its name).
    pub path: String,
    /// Original length in bytes.
    pub len: u64,
    /// XXH3-128 of the original bytes, 32 hex digits.
    pub hash: String,
    /// The object's file name under `objects/`.
    pub object: String,
    /// Length of the object in bytes.
    pub stored: u64,
    /// For a delta: the hash of its base, the file at the same path in the
    /// parent snapshot (see [`counterpart`]).
    pub base: Option<String>,
    /// Unix permission bits, restored with the file.
    pub mode: Option<u32>,
    /// Paths of other files of the same snapshot whose tensors the derived
    /// tensors of this file's object take their source elements from, in
    /// the order the object lists them (FORMAT.md, "Sources in other
    /// files"; the object records each one's hash). Such a source takes no
    /// sources itself. Written only when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl Snapshot {
    pub fn original_len(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }

    pub fn stored_len(&self) -> u64 {
        self.files.iter().map(|f| f.stored).sum()
    }
}

/// The file among `parent_files` (of a snapshot of kind `parent_kind`)
/// that the file at `path` of a snapshot of kind `kind` is coded against:
/// the one at the same path, or, when both snapshots are single files, the
/// parent's file whatever its name (checkpoints are often named by step).
pub fn counterpart<'a, T>(
    parent_files: &'a [T],
    path_of: impl Fn(&T) -> &str,
    parent_kind: Kind,
    kind: Kind,
    path: &str,
) -> Option<&'a T> {
    if parent_kind == Kind::File && kind == Kind::File {
        return parent_files.first();
    }
    parent_files.iter().find(|f| path_of(f) == path)
}

pub fn hex(hash: u128) -> String {
    format!("{hash:032x}")
}

impl Manifest {
    pub fn new(keyframe_every: u32) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            generation: 0,
            keyframe_every,
            snapshots: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Reads and checks the manifest in `text`, read from `from` (a path
    /// or URL, for the errors).
    pub fn parse(text: &[u8], from: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(text)
            .map_err(|e| Error::Corrupt(format!("{from}: not a valid manifest: {e}")))?;
        m.check()
            .map_err(|d| Error::Corrupt(format!("{from}: {d}")))?;
        Ok(m)
    }

    /// The rules every manifest obeys; a manifest that breaks one was not
    /// written by lmc, and nothing is done with it.
    fn check(&self) -> std::result::Result<(), String> {
        if self.format != FORMAT || !(VERSION..=VERSION_SOURCES).contains(&self.version) {
            return Err(format!(
                "format {:?} version {}, expected {FORMAT:?} version {VERSION} to \
                 {VERSION_SOURCES} (a newer lmc may read it)",
                self.format, self.version
            ));
        }
        if self.version == VERSION && !self.retired.is_empty() {
            return Err(format!("version {VERSION} lists retired objects"));
        }
        for r in &self.retired {
            if !object_name_ok(&r.object) {
                return Err(format!("bad retired object name {:?}", r.object));
            }
        }
        if self.keyframe_every == 0 {
            return Err("keyframe_every is 0".into());
        }
        let mut prev: Option<&Snapshot> = None;
        let mut reverse = false;
        for s in &self.snapshots {
            if let Some(p) = prev
                && s.step <= p.step
            {
                return Err(format!("step {} follows step {}", s.step, p.step));
            }
            prev = Some(s);
        }
        for s in &self.snapshots {
            // Each delta's depth is its parent's plus one, so depths fall
            // along every chain of parents and no chain can loop.
            let parent = match s.parent {
                None if s.depth == 0 => None,
                Some(ps) if ps != s.step => match self.find(ps) {
                    Some(pi) if self.snapshots[pi].depth.checked_add(1) == Some(s.depth) => {
                        Some(&self.snapshots[pi])
                    }
                    _ => None,
                },
                _ => None,
            };
            if s.parent.is_some() != parent.is_some() || (s.parent.is_none() && s.depth != 0) {
                return Err(format!(
                    "step {}: parent {:?} and depth {} do not match the snapshots listed",
                    s.step, s.parent, s.depth
                ));
            }
            if let Some(p) = parent
                && p.step > s.step
            {
                reverse = true;
            }
            if s.deferred && (s.parent.is_some() || self.version != VERSION_DEFERRED) {
                return Err(format!(
                    "step {}: marked deferred (to re-encode as a delta), yet {}",
                    s.step,
                    if s.parent.is_some() {
                        "a delta already".to_string()
                    } else {
                        format!("in a version {} manifest", self.version)
                    }
                ));
            }
            if s.kind == Kind::File && s.files.len() != 1 {
                return Err(format!(
                    "step {}: a file snapshot with {} files",
                    s.step,
                    s.files.len()
                ));
            }
            check_sources(s, self.version)?;
            let mut paths = std::collections::HashSet::new();
            for f in &s.files {
                check_relative_path(&f.path).map_err(|e| format!("step {}: {e}", s.step))?;
                if !paths.insert(f.path.as_str()) {
                    return Err(format!("step {}: path {:?} listed twice", s.step, f.path));
                }
                if !object_name_ok(&f.object) {
                    return Err(format!("step {}: bad object name {:?}", s.step, f.object));
                }
                if f.hash.len() != 32 || u128::from_str_radix(&f.hash, 16).is_err() {
                    return Err(format!("step {}: bad hash {:?}", s.step, f.hash));
                }
                if let Some(b) = &f.base {
                    let parent_file = parent
                        .and_then(|p| counterpart(&p.files, |x| &x.path, p.kind, s.kind, &f.path));
                    if parent_file.map(|pf| &pf.hash) != Some(b) {
                        return Err(format!(
                            "step {}: {:?} is a delta against {b}, which the parent does not hold",
                            s.step, f.path
                        ));
                    }
                }
            }
        }
        if reverse && self.version < VERSION_REVERSE {
            return Err(format!(
                "version {} holds a delta against a later snapshot (only version {VERSION_REVERSE} or later may)",
                self.version
            ));
        }
        Ok(())
    }

    /// Sets every snapshot's `depth` from the parents (after a change of
    /// parents). The parents must form chains that end in full snapshots.
    pub(crate) fn set_depths(&mut self) {
        let n = self.snapshots.len();
        let mut depth: Vec<Option<u32>> = vec![None; n];
        for i in 0..n {
            // Walk up to a snapshot whose depth is known, then back down.
            let mut path = Vec::new();
            let mut j = i;
            let mut d = loop {
                if let Some(d) = depth[j] {
                    break d;
                }
                path.push(j);
                match self.snapshots[j].parent.and_then(|p| self.find(p)) {
                    Some(pj) if path.len() <= n => j = pj,
                    _ => {
                        let top = path.pop().expect("just pushed");
                        depth[top] = Some(0);
                        break 0;
                    }
                }
            };
            while let Some(k) = path.pop() {
                d += 1;
                depth[k] = Some(d);
            }
        }
        for (s, d) in self.snapshots.iter_mut().zip(depth) {
            s.depth = d.unwrap_or(0);
        }
    }

    /// The steps of the snapshots whose chain of parents passes through
    /// the snapshot at index `idx` (not itself), with their depth relative
    /// to it.
    pub(crate) fn dependents(&self, idx: usize) -> Vec<(usize, u32)> {
        let target = self.snapshots[idx].step;
        let mut out = Vec::new();
        for (i, s) in self.snapshots.iter().enumerate() {
            let mut cur = s;
            let mut hops = 0u32;
            while let Some(p) = cur.parent.and_then(|p| self.find(p)) {
                hops += 1;
                cur = &self.snapshots[p];
                if cur.step == target {
                    out.push((i, hops));
                    break;
                }
                if hops as usize > self.snapshots.len() {
                    break;
                }
            }
        }
        out
    }

    /// Index of the snapshot at `step`.
    pub fn find(&self, step: u64) -> Option<usize> {
        self.snapshots.binary_search_by_key(&step, |s| s.step).ok()
    }

    /// Every object the snapshots name.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.snapshots
            .iter()
            .flat_map(|s| s.files.iter().map(|f| f.object.as_str()))
    }

    /// Whether some snapshot is a delta against a later one.
    pub fn has_reverse_deltas(&self) -> bool {
        self.snapshots
            .iter()
            .any(|s| s.parent.is_some_and(|p| p > s.step))
    }

    /// The manifest as written: version 5 exactly when a file takes
    /// sources from other files, else 4 exactly when a snapshot is marked
    /// deferred, else 3 exactly when a snapshot is a delta against a later
    /// one, else 2 exactly when it lists retired objects (the lowest
    /// version that can say what it holds).
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.version = if m
            .snapshots
            .iter()
            .any(|s| s.files.iter().any(|f| !f.sources.is_empty()))
        {
            VERSION_SOURCES
        } else if m.snapshots.iter().any(|s| s.deferred) {
            VERSION_DEFERRED
        } else if m.has_reverse_deltas() {
            VERSION_REVERSE
        } else if m.retired.is_empty() {
            VERSION
        } else {
            VERSION_RETIRED
        };
        let mut v = serde_json::to_vec_pretty(&m).expect("a manifest always serialises");
        v.push(b'\n');
        v
    }
}

/// The rules of [`FileEntry::sources`] in snapshot `s` of a manifest of
/// `version`: each source is another file of the snapshot, listed once,
/// that takes no sources itself (so there are no chains and no cycles).
fn check_sources(s: &Snapshot, version: u32) -> std::result::Result<(), String> {
    for f in &s.files {
        if f.sources.is_empty() {
            continue;
        }
        if version < VERSION_SOURCES {
            return Err(format!(
                "step {}: {:?} takes sources from other files in a version {version} manifest (only version {VERSION_SOURCES} or later may)",
                s.step, f.path
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for src in &f.sources {
            let why = if src == &f.path {
                Some("itself (a cycle)".to_string())
            } else if !seen.insert(src.as_str()) {
                Some("twice".to_string())
            } else {
                match s.files.iter().find(|x| &x.path == src) {
                    None => Some("a file the snapshot does not hold".to_string()),
                    Some(x) if !x.sources.is_empty() => Some(format!(
                        "a file that takes sources itself (from {:?}); chains and cycles are refused",
                        x.sources
                    )),
                    Some(_) => None,
                }
            };
            if let Some(why) = why {
                return Err(format!(
                    "step {}: {:?} takes sources from {src:?}, {why}",
                    s.step, f.path
                ));
            }
        }
    }
    Ok(())
}

/// An object's name: a plain file name under `objects/`, not hidden.
fn object_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.')
}

/// A path inside a checkpoint: relative, `/`-separated, no `.`, `..` or
/// empty components, no backslash or NUL; the rule of every path lmc
/// stores ([`lmc_files::check_path`]). Paths from a manifest are checked
/// before any file is written under them (and again by the restore), so a
/// hostile manifest cannot write outside the output.
pub fn check_relative_path(p: &str) -> std::result::Result<(), String> {
    lmc_files::check_path(p).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        for good in ["a", "a/b.safetensors", "x/y/z"] {
            assert!(check_relative_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a\\b",
            "a/",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
    }
}
