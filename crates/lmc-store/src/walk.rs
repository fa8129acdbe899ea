//! The files of a checkpoint on disk, as a snapshot takes them.

use super::*;

/// A file of a checkpoint on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFile {
    /// Path in the checkpoint, `/`-separated (a single file: its name).
    pub path: String,
    /// Where it is on disk.
    pub source: PathBuf,
    pub mode: Option<u32>,
}

/// The files of a checkpoint on disk: a single file, or every regular file
/// under a directory (sorted by path), listed by the walk `lmc compress
/// DIR` uses ([`lmc_files::walk()`]: UTF-8 plain relative paths, modes
/// masked to rwx). Symbolic links and special files in a directory are
/// refused; folders are not kept (a restore makes those that hold files).
pub fn checkpoint_files(path: &Path) -> Result<(Kind, Vec<CheckpointFile>)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        let listing = lmc_files::walk(path)?;
        let mut out = Vec::new();
        for item in listing.items {
            match item.entry.kind {
                lmc_tensors::tree::Kind::File => out.push(CheckpointFile {
                    path: item.entry.path,
                    source: item.source,
                    mode: Some(item.entry.mode),
                }),
                lmc_tensors::tree::Kind::Dir => {}
                lmc_tensors::tree::Kind::Symlink => {
                    return Err(Error::Invalid(format!(
                        "{} is a symbolic link (to {:?}); snapshot stores keep regular files \
                         only (`lmc compress DIR` keeps links; copy the directory with \
                         `cp -rL` to store the files they point to)",
                        item.source.display(),
                        item.target.unwrap_or_default()
                    )));
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        if out.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: the directory holds no files",
                path.display()
            )));
        }
        Ok((Kind::Dir, out))
    } else if meta.is_file() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Invalid(format!("{}: file name is not UTF-8", path.display())))?
            .to_string();
        Ok((
            Kind::File,
            vec![CheckpointFile {
                path: name,
                source: path.to_path_buf(),
                mode: mode_of(&meta),
            }],
        ))
    } else {
        Err(Error::Invalid(format!(
            "{}: not a regular file or directory",
            path.display()
        )))
    }
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> Option<u32> {
    Some(lmc_files::mode_of(meta))
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}
