//! Outputs that appear whole or not at all.

use std::path::{Path, PathBuf};

/// The folder `dest` lies in (`.` for a bare name) and its file name: where
/// and under what name to make its temporary twin.
pub fn folder_and_name(dest: &Path) -> (PathBuf, String) {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

/// A temporary file beside `dest`, in the same folder so that it can be
/// renamed over `dest` (named `.NAME.XXXXXX.lmc-tmp`), with the usual mode
/// for new files, 0666 less the umask (tempfile's own is owner-only).
/// Returns it with that folder. Dropped without being persisted, it is
/// removed.
pub fn temp_beside(dest: &Path) -> std::io::Result<(tempfile::NamedTempFile, PathBuf)> {
    let (dir, name) = folder_and_name(dest);
    let tmp = temp_in(&dir, &format!(".{name}."), ".lmc-tmp")?;
    Ok((tmp, dir))
}

/// A temporary file in `dir` named `PREFIX` + random + `SUFFIX`, with the
/// usual mode for new files, 0666 less the umask (tempfile's own is
/// owner-only, which would keep everyone else from reading what is renamed
/// into place: an output, or a snapshot store's objects and manifest).
pub fn temp_in(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.prefix(prefix).suffix(suffix).tempfile_in(dir)
}

/// What stands at an output's destination before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Nothing (or a dangling symbolic link).
    Absent,
    /// A regular file, or a symbolic link to one: renaming the output over
    /// it replaces it (the link itself, not what it points to).
    File,
}

/// Why an output cannot go to its destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// The destination is a device, a pipe, a socket or a folder. Outputs
    /// are renamed into place, which would replace it (`/dev/null` with a
    /// regular file), so lmc refuses.
    #[error(
        "{} is {kind}, not a regular file; lmc writes an output beside its destination and \
         renames it into place, which would replace it: give the path of a file",
        path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The destination could not be inspected.
    #[error("cannot inspect {}: {source}", path.display())]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The rule every front end applies before writing `dest`: only a regular
/// file (or a link to one) may be replaced. Says whether one is there.
pub fn check_destination(dest: &Path) -> Result<Destination, DestinationError> {
    let meta = match std::fs::metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Destination::Absent),
        Err(source) => {
            return Err(DestinationError::Inspect {
                path: dest.to_path_buf(),
                source,
            });
        }
    };
    if meta.is_file() {
        return Ok(Destination::File);
    }
    Err(DestinationError::NotAFile {
        path: dest.to_path_buf(),
        kind: kind_of(&meta),
    })
}

/// What a non-regular file is, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        assert_eq!(check_destination(&file).unwrap(), Destination::Absent);
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(check_destination(&file).unwrap(), Destination::File);
        let err = check_destination(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DestinationError::NotAFile {
                    kind: "a directory",
                    ..
                }
            ),
            "{err}"
        );
        #[cfg(unix)]
        {
            let link = dir.path().join("l");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            assert_eq!(check_destination(&link).unwrap(), Destination::File);
            let null = Path::new("/dev/null");
            if null.exists() {
                let err = check_destination(null).unwrap_err();
                assert!(
                    matches!(
                        err,
                        DestinationError::NotAFile {
                            kind: "a character device",
                            ..
                        }
                    ),
                    "{err}"
                );
                assert!(err.to_string().contains("/dev/null"), "{err}");
            }
        }
    }
}
