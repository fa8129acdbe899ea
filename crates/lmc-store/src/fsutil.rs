//! The file-system steps the store's crash safety rests on: atomic
//! replacement, fsync of files and directories, the store lock, and the
//! failpoints the crash tests use.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Makes a directory's entries (new names, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in `dir`,
/// fsync, rename over `name`, fsync of `dir`. Readers see the old file or
/// the new one, never part of the new one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut tmp = lmc_files::temp_in(dir, ".tmp-", "").map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    failpoint("commit:before-rename");
    let dest = dir.join(name);
    tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
    failpoint("commit:before-dir-sync");
    sync_dir(dir)
}

/// The store's lock: `STORE/lock`, held exclusively by a writer and shared
/// by readers for as long as the [`Lock`] lives. The operating system
/// releases it when the process ends, however it ends.
///
/// Readers need no write access: they open the lock file read-only (a
/// shared `flock` needs no more), and where even that is impossible (a
/// store on a read-only medium made without one, or a lock file they may
/// not read) they read without the lock. That is safe because a reader
/// only ever follows the committed manifest, which a writer replaces
/// atomically, and objects are named by content and checked on decode: a
/// writer at work (one that can write where this reader cannot) can at
/// worst remove an object a reader is about to open, which fails clearly,
/// never silently.
#[derive(Debug)]
pub struct Lock {
    _file: Option<File>,
}

impl Lock {
    pub fn acquire(root: &Path, exclusive: bool) -> Result<Lock> {
        let path = root.join("lock");
        let opened = if exclusive {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        } else {
            std::fs::File::open(&path)
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if !exclusive && unlockable(&e) => return Ok(Lock { _file: None }),
            Err(e) if exclusive && unlockable(&e) && e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Invalid(format!(
                    "store {} cannot be changed here ({}: {e}); it can still be listed, \
                     verified and restored from",
                    root.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let got = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match got {
            Ok(()) => Ok(Lock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(format!(
                "store {} is in use by another lmc process ({}); try again when it has finished",
                root.display(),
                if exclusive {
                    "another process is reading or changing it"
                } else {
                    "another process is changing it"
                }
            ))),
            // Some file systems (a few network ones) have no locks at all.
            Err(std::fs::TryLockError::Error(e))
                if !exclusive && e.kind() == std::io::ErrorKind::Unsupported =>
            {
                Ok(Lock { _file: None })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

/// Whether a reader may go on without the lock after failing to open it:
/// the store has none (made on a medium that is now read-only) or this user
/// may not read it.
fn unlockable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
    )
}

/// The environment variable that names a failpoint for crash tests.
pub const FAILPOINT_VAR: &str = "LMC_STORE_FAILPOINT";

/// Crash-test hook: if `LMC_STORE_FAILPOINT` names this point, the process
/// aborts here at once, as if killed (no destructors, no cleanup). The
/// tests use it to show that a crash at any step of a change leaves the
/// store as it was before the change, or as it is after it.
pub fn failpoint(name: &str) {
    if std::env::var_os(FAILPOINT_VAR).is_some_and(|v| v == name) {
        std::process::abort();
    }
}
