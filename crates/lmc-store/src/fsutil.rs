//! The file-system steps the store's crash safety rests on: atomic
//! replacement, fsync of files and directories, the writer lock, and the
//! failpoints the crash tests use.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// The writer lock: an exclusive `flock` on `STORE/lock`, held for as long
/// as the [`Lock`] lives. Only writers take it; readers take no lock at all
/// (they follow the committed manifest and the objects it names, which a
/// writer never deletes while a reader may still use them; see the crate
/// documentation).
///
/// The kernel releases a `flock` when the last descriptor of the open file
/// closes, however the process ends (`kill -9` included), so a dead writer
/// never leaves a lock behind: there is no lock *file* with a pid to go
/// stale. (The descriptor is opened close-on-exec, so no child a writer
/// might start keeps the lock alive either.) An lmc older than this one
/// takes a shared lock to read; a writer then waits for it like for
/// another writer.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// How long to go on trying for the writer lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Fail at once if another process holds it.
    #[default]
    No,
    /// Try again (with backoff) for up to this long.
    For(Duration),
    /// Try again until it is free.
    Forever,
}

/// The first pause between two tries for a busy lock, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

impl Lock {
    /// Takes the writer lock of the store in `root`, creating the lock file
    /// if needed. While it is busy and `wait` allows, tries again with a
    /// growing pause, calling `waiting` once before the first pause, until
    /// `cancel` (if any) is set.
    pub fn acquire(
        root: &Path,
        wait: Wait,
        cancel: Option<&AtomicBool>,
        waiting: &mut dyn FnMut(),
    ) -> Result<Lock> {
        let path = root.join("lock");
        let file = match std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && unwritable(&e) => {
                return Err(Error::Invalid(format!(
                    "store {} cannot be changed here ({}: {e}); it can still be listed, \
                     verified and restored from",
                    root.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        keep_trying(
            wait,
            cancel,
            waiting,
            (FIRST_PAUSE, LONGEST_PAUSE),
            || match file.try_lock() {
                Ok(()) => Ok(Ok(())),
                Err(std::fs::TryLockError::WouldBlock) => Ok(Err(())),
                Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
            },
            |(), still, advice| {
                format!(
                    "store {} is in use by another lmc process (a writer adding, pruning or \
                     removing, or an older lmc reading{still}); {advice}",
                    root.display(),
                )
            },
            || {
                format!(
                    "stopped waiting for another lmc process to finish with store {}",
                    root.display()
                )
            },
        )?;
        Ok(Lock { _file: file })
    }
}

/// Tries for a writer lock until `attempt` takes it (`Ok(Ok(t))`) or
/// fails: while it finds the lock busy (`Ok(Err(busy))`) and `wait`
/// allows, tries again with a pause growing from `pauses.0` to `pauses.1`,
/// calling `waiting` once before the first pause, until `cancel` (if any)
/// is set. The local lock and the object-storage one share it: `refused`
/// words the error for the holder `busy` given how long it was waited for
/// (`still`, empty after one try) and what to do (`advice`), `stopped` the
/// error for a cancelled wait.
pub(crate) fn keep_trying<T, B>(
    wait: Wait,
    cancel: Option<&AtomicBool>,
    waiting: &mut dyn FnMut(),
    pauses: (Duration, Duration),
    mut attempt: impl FnMut() -> Result<std::result::Result<T, B>>,
    refused: impl FnOnce(B, &str, &str) -> String,
    stopped: impl FnOnce() -> String,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = pauses.0;
    let mut first = true;
    loop {
        let busy = match attempt()? {
            Ok(t) => return Ok(t),
            Err(busy) => busy,
        };
        let waited = start.elapsed();
        let left = match wait {
            Wait::No => Duration::ZERO,
            Wait::For(d) => d.saturating_sub(waited),
            Wait::Forever => Duration::MAX,
        };
        if left.is_zero() {
            let still = if first {
                String::new()
            } else {
                format!(", still after {:.1} s", waited.as_secs_f64())
            };
            let advice = match wait {
                Wait::No => "try again when it has finished, or wait for it with --wait",
                _ => "try again when it has finished, or wait longer",
            };
            return Err(Error::Locked(refused(busy, &still, advice)));
        }
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Err(Error::Locked(stopped()));
        }
        if first {
            waiting();
            first = false;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(pauses.1);
    }
}

/// Whether opening the lock file failed because this process may not write
/// there (a read-only medium, a store others own).
fn unwritable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
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
