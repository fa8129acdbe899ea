//! Listing a directory on disk as the entries of a directory stream: the
//! one walk behind `lmc compress DIR` and the snapshot store's directory
//! snapshots.
//!
//! Every entry is checked as a restore will check it ([`lmc_tensors::tree`]),
//! so nothing is listed that lmc would refuse to restore: names are UTF-8
//! plain relative paths, there are only regular files, directories and
//! symbolic links, and each link resolves inside the directory, following
//! the directory's own links ([`lmc_tensors::tree::Index::check_links`]).

use std::fs;
use std::path::{Path, PathBuf};

use lmc_tensors::tree::{self, Entry, Index, Kind};

use crate::error::{Error, Result};
use crate::mode::mode_of;

/// One thing found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its entry header: kind, mode (masked), path; `len` as listed, for a
    /// file its length when it was listed, for a link its target's.
    pub entry: Entry,
    /// Where it is on disk.
    pub source: PathBuf,
    /// A link's target.
    pub target: Option<String>,
}

/// A directory listed by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The permission bits of the directory itself (masked).
    pub root_mode: u32,
    /// Depth first, each folder's entries sorted by name (bytewise), a
    /// folder before its contents: the order of a directory stream.
    pub items: Vec<Item>,
}

/// Lists `root` (following `root` itself if it is a link, never the links
/// inside it).
pub fn walk(root: &Path) -> Result<Listing> {
    let meta = fs::metadata(root).map_err(|e| Error::io("stat", root, e))?;
    if !meta.is_dir() {
        return Err(Error::WrongKind {
            path: root.to_path_buf(),
            what: "not a directory",
        });
    }
    let mut items = Vec::new();
    let mut index = Index::new();
    walk_dir(root, "", &mut index, &mut items)?;
    index.check_links().map_err(|e| Error::LinkOutside {
        path: root.join(&e.link),
        target: e.target,
        reason: e.reason,
    })?;
    Ok(Listing {
        root_mode: mode_of(&meta),
        items,
    })
}

fn walk_dir(dir: &Path, rel: &str, index: &mut Index, out: &mut Vec<Item>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .and_then(|r| r.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| Error::io("list", dir, e))?;
    names.sort();
    for name in names {
        let source = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(Error::NotUtf8 { path: source });
        };
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        // Also what bounds the depth of this recursion: MAX_PATH bytes.
        tree::check_path(&path).map_err(|e| Error::Refused {
            path: source.clone(),
            source: e,
        })?;
        let meta = fs::symlink_metadata(&source).map_err(|e| Error::io("stat", &source, e))?;
        let ft = meta.file_type();
        let (kind, len, target) = if ft.is_symlink() {
            let t = fs::read_link(&source).map_err(|e| Error::io("read the link", &source, e))?;
            let Some(t) = t.to_str().map(str::to_string) else {
                return Err(Error::NotUtf8 { path: source });
            };
            if let Err(why) = tree::check_link(&path, &t) {
                let reason = if t.starts_with('/') {
                    "is an absolute path".to_string()
                } else if t.is_empty() || t.len() > tree::MAX_PATH || t.contains('\0') {
                    format!("lmc cannot store ({why})")
                } else {
                    "leads outside the directory".to_string()
                };
                return Err(Error::LinkOutside {
                    path: source,
                    target: t,
                    reason,
                });
            }
            (Kind::Symlink, t.len() as u64, Some(t))
        } else if ft.is_dir() {
            (Kind::Dir, 0, None)
        } else if ft.is_file() {
            (Kind::File, meta.len(), None)
        } else {
            return Err(Error::Special { path: source });
        };
        index
            .add(kind, &path, target.as_deref())
            .map_err(|e| Error::Refused {
                path: source.clone(),
                source: e,
            })?;
        out.push(Item {
            entry: Entry {
                kind,
                format: 0,
                mode: mode_of(&meta),
                path: path.clone(),
                len,
            },
            source: source.clone(),
            target,
        });
        if kind == Kind::Dir {
            walk_dir(&source, &path, index, out)?;
        }
    }
    Ok(())
}
