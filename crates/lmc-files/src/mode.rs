//! Permission bits: the one mask lmc keeps, read from and written to disk.
//!
//! Only rwx for user, group and others travel ([`MODE_MASK`]): set-user-ID,
//! set-group-ID and sticky bits are neither stored nor restored, whatever a
//! container or a store's manifest says, so restoring as root never makes a
//! set-ID file.

use std::path::Path;

pub use lmc_tensors::tree::MODE_MASK;

/// The permission bits of a file or directory, masked.
#[cfg(unix)]
pub fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & MODE_MASK
}

/// The permission bits of a file or directory: on systems without Unix
/// modes, read-only or not.
#[cfg(not(unix))]
pub fn mode_of(meta: &std::fs::Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

/// Sets `path`'s permission bits to `mode`, masked.
#[cfg(unix)]
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & MODE_MASK))
}

/// Sets `path` read-only when `mode` gives its owner no write permission.
#[cfg(not(unix))]
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    let mut p = std::fs::metadata(path)?.permissions();
    p.set_readonly(mode & 0o200 == 0);
    std::fs::set_permissions(path, p)
}
