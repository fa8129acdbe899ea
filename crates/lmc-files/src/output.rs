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
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .prefix(&format!(".{name}."))
        .suffix(".lmc-tmp")
        .tempfile_in(&dir)?;
    Ok((tmp, dir))
}
