//! A store on object storage (`s3://bucket/prefix`, `gs://`, `az://`): the
//! same store as in a directory, its files kept as objects under the
//! prefix, and the two file-system steps its safety rests on replaced by
//! conditional writes (lmc_remote's [`Put`]):
//!
//! - The writer lock is an object, `PREFIX/lock`, created only if there is
//!   none (`If-None-Match: *`). It holds the writer's id and a lease: the
//!   time until which it is held. The writer renews the lease on a thread
//!   (every third of it) and once more just before each commit, each time
//!   as a write conditional on the version it last wrote (`If-Match`), so
//!   that a writer whose lock was taken over finds out and commits nothing.
//!   A lock whose lease has run out belongs to a writer that died (or was
//!   stopped longer than the lease): the next writer takes it over with a
//!   conditional write on the version it read, so that of two writers
//!   taking over at once one wins. A writer that finishes releases the lock
//!   by writing it with a lease that has run out.
//! - The manifest is written in one request (it appears whole or not at
//!   all) and only if it is still the version the writer loaded or last
//!   committed, so that even a writer that lost its lock without noticing
//!   can never replace a commit of another.
//!
//! Objects are uploaded (and complete) before the manifest names them, as
//! in a directory; what a writer that died left unnamed is deleted by the
//! next. The lease compares clocks of different machines: they must agree
//! to well within it ([`LEASE_VAR`], 30 s by default). And a commit must
//! end within the lease renewed just before it: a manifest write retried
//! for longer than that could land after another writer took the lock over
//! and deleted the objects it names, if that writer has not committed yet
//! (once it has, the write fails on the condition).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use lmc_remote::{Location, Put, Version};

use crate::fsutil::Wait;
use crate::{Error, Result, unix_now};

/// The environment variable that, set to a number of seconds, replaces
/// the writer lock's lease on object storage ([`DEFAULT_LEASE`]).
pub const LEASE_VAR: &str = "LMC_STORE_LOCK_LEASE";

/// How long a writer's lock on object storage holds without renewal:
/// after that, a writer that died no longer keeps others out.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

const LOCK: &str = "lock";

/// Where a store lives: a directory, or a prefix in object storage.
pub(crate) enum Where {
    Local(PathBuf),
    Remote(Location),
}

/// Reads `root` as lmc's front ends give it: a path, or a URL (`s3://`,
/// `gs://`, `az://`; `file:///abs/path` is the local directory).
pub(crate) fn locate(root: &Path) -> Result<Where> {
    let Some(s) = root.to_str().filter(|s| lmc_remote::is_url(s)) else {
        return Ok(Where::Local(root.to_path_buf()));
    };
    if let Some(path) = s.strip_prefix("file://") {
        let path = path.strip_prefix("localhost").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(Error::Invalid(format!(
                "{s}: a file:// URL names an absolute local path (file:///abs/path)"
            )));
        }
        return Ok(Where::Local(PathBuf::from(path)));
    }
    let prefix = Location::parse(s.trim_end_matches('/'))?;
    if !prefix.is_writable() {
        return Err(Error::Invalid(format!(
            "{s}: a snapshot store lives in object storage (s3://, gs://, az://) or a \
             directory, not behind an http(s):// URL"
        )));
    }
    Ok(Where::Remote(prefix))
}

/// The lease lock's contents.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LockBody {
    /// Who holds it: host, process and a random tag.
    owner: String,
    /// Unix seconds until which it is held; 0 once released.
    expires: u64,
}

fn default_lease() -> Duration {
    std::env::var(LEASE_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_LEASE, |s| Duration::from_secs(s.max(1)))
}

fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map_or_else(|| "unknown host".into(), |h| h.trim().to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host} pid {} tag {nanos:08x}", std::process::id())
}

/// The state the renewing thread and the writer share.
struct Shared {
    at: Location,
    owner: String,
    lease: Duration,
    /// The version last written, or why the lock was lost.
    version: Mutex<std::result::Result<Version, String>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn body(&self, expires: u64) -> Vec<u8> {
        serde_json::to_vec(&LockBody {
            owner: self.owner.clone(),
            expires,
        })
        .expect("a lock body serialises")
    }

    /// Writes a new lease if the lock is still the version last written.
    fn renew(&self) -> Result<()> {
        let mut version = self.version.lock().unwrap_or_else(|e| e.into_inner());
        let v = match &*version {
            Ok(v) => v.clone(),
            Err(why) => return Err(Error::Locked(why.clone())),
        };
        let expires = unix_now() + self.lease.as_secs();
        match self.at.put(&self.body(expires), Put::Update(v)) {
            Ok(v) => {
                *version = Ok(v);
                Ok(())
            }
            Err(lmc_remote::Error::Changed { .. }) => {
                let why = format!(
                    "this writer lost its lock {}: another writer took it over, its lease \
                     of {} s having run out (was this process stopped that long?); nothing \
                     more is committed",
                    self.at.url(),
                    self.lease.as_secs()
                );
                *version = Err(why.clone());
                Err(Error::Locked(why))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The writer lock of a store in object storage (see the module docs),
/// held until dropped.
pub(crate) struct LeaseLock {
    shared: Arc<Shared>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("at", &self.shared.at.url())
            .finish()
    }
}

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

impl LeaseLock {
    /// Takes the lock of the store under `prefix`, as [`crate::fsutil::Lock::acquire`]
    /// takes a directory's.
    pub(crate) fn acquire(
        prefix: &Location,
        lease: Option<Duration>,
        wait: Wait,
        cancel: Option<&AtomicBool>,
        waiting: &mut dyn FnMut(),
    ) -> Result<LeaseLock> {
        let at = prefix.join(LOCK);
        let shared = Shared {
            at: at.clone(),
            owner: owner_id(),
            lease: lease
                .unwrap_or_else(default_lease)
                .max(Duration::from_secs(1)),
            version: Mutex::new(Err(String::new())),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        };
        let version = crate::fsutil::keep_trying(
            wait,
            cancel,
            waiting,
            (FIRST_PAUSE, LONGEST_PAUSE),
            || loop {
                let expires = unix_now() + shared.lease.as_secs();
                return match at.put(&shared.body(expires), Put::Create) {
                    Ok(v) => Ok(Ok(v)),
                    Err(lmc_remote::Error::Exists { .. }) => match at.get()? {
                        // Released and deleted in between: try again at once.
                        None => continue,
                        Some((bytes, v)) => {
                            let held: LockBody = serde_json::from_slice(&bytes).map_err(|e| {
                                Error::Corrupt(format!(
                                    "{}: not an lmc writer lock ({e}); if no lmc writer is at \
                                     work, delete it",
                                    at.url()
                                ))
                            })?;
                            if held.expires > unix_now() {
                                Ok(Err(Some(held)))
                            } else {
                                match at.put(&shared.body(expires), Put::Update(v)) {
                                    Ok(v) => Ok(Ok(v)),
                                    // Another writer took it over first.
                                    Err(lmc_remote::Error::Changed { .. }) => Ok(Err(None)),
                                    Err(e) => Err(e.into()),
                                }
                            }
                        }
                    },
                    Err(e) => Err(e.into()),
                };
            },
            |busy: Option<LockBody>, still, advice| {
                let holder = busy.map_or_else(
                    || "another writer, which has just taken it over".to_string(),
                    |h| {
                        format!(
                            "{}, its lease running {} s more (a writer that died keeps \
                             others out until it runs out)",
                            h.owner,
                            h.expires.saturating_sub(unix_now())
                        )
                    },
                );
                format!(
                    "store {} is in use by another lmc writer: lock {} is held by \
                     {holder}{still}; {advice}",
                    prefix.url(),
                    at.url(),
                )
            },
            || {
                format!(
                    "stopped waiting for another lmc writer to finish with store {}",
                    prefix.url()
                )
            },
        )?;
        Ok(LeaseLock::start(shared, version))
    }

    /// Holds the lock written as `version`, renewing it on a thread.
    fn start(shared: Shared, version: Version) -> LeaseLock {
        *shared.version.lock().unwrap_or_else(|e| e.into_inner()) = Ok(version);
        let shared = Arc::new(shared);
        let s = shared.clone();
        let renewer = std::thread::Builder::new()
            .name("lmc-store-lease".into())
            .spawn(move || {
                let mut stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (guard, _) = s
                        .wake
                        .wait_timeout(stop, s.lease / 3)
                        .unwrap_or_else(|e| e.into_inner());
                    stop = guard;
                    if *stop {
                        return;
                    }
                    // A failed renewal is tried again next time; one that
                    // finds the lock taken over is remembered, and the next
                    // commit refuses.
                    let _ = s.renew();
                }
            })
            .ok();
        LeaseLock { shared, renewer }
    }

    /// Renews the lease, or fails if the lock was taken over: called just
    /// before a commit, which then has a whole lease to finish in.
    pub(crate) fn renew(&self) -> Result<()> {
        self.shared.renew()
    }
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        // Released by a lease that has run out, written only over this
        // writer's own version (the store offers no conditional delete).
        let version = self
            .shared
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Ok(v) = &*version {
            let _ = self
                .shared
                .at
                .put(&self.shared.body(0), Put::Update(v.clone()));
        }
    }
}
