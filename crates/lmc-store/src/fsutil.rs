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
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
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
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn acquire(root: &Path, exclusive: bool) -> Result<Lock> {
        let path = root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let got = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match got {
            Ok(()) => Ok(Lock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(format!(
                "store {} is in use by another lmc process ({}); try again when it has finished",
                root.display(),
                if exclusive {
                    "another process is reading or changing it"
                } else {
                    "another process is changing it"
                }
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
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
