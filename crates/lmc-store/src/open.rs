//! Opening a store: readers (no lock, the committed manifest), writers
//! (the writer lock, waiting if asked, clean-up of interrupted changes) and
//! creating one.

use std::path::Path;

use crate::fsutil::{Lock, Wait, sync_dir, write_atomic};
use crate::remote::{LeaseLock, Where, locate};
use crate::storage::Remote;
use crate::{
    CompressOptions, DEFAULT_KEYFRAME_EVERY, DEFAULT_RETIRE_GRACE, Error, Held, MANIFEST, Manifest,
    OBJECTS, RETIRE_GRACE_VAR, Result, Store,
};

/// How a writer opens a store ([`WriteOptions::open`]): whether to wait
/// for another writer, whether to create the store, its keyframe interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    wait: Wait,
    create: bool,
    keyframe_every: Option<u32>,
    retire_grace: Option<std::time::Duration>,
    lease: Option<std::time::Duration>,
    cancel: Option<&'static std::sync::atomic::AtomicBool>,
}

impl WriteOptions {
    pub fn new() -> WriteOptions {
        WriteOptions::default()
    }

    /// Whether (and how long) to wait while another writer holds the store
    /// (default: fail at once with [`Error::Locked`]).
    pub fn wait(self, wait: Wait) -> WriteOptions {
        WriteOptions { wait, ..self }
    }

    /// Creates the store if `root` holds none yet (default: fail).
    pub fn create(self, create: bool) -> WriteOptions {
        WriteOptions { create, ..self }
    }

    /// The chain bound (a restore decodes at most `k - 1` deltas): of a new
    /// store, or the new one of an existing store (default:
    /// [`DEFAULT_KEYFRAME_EVERY`] for a new store, an existing store's own).
    pub fn keyframe_every(self, k: u32) -> WriteOptions {
        WriteOptions {
            keyframe_every: Some(k),
            ..self
        }
    }

    /// How long to keep objects no snapshot names any more before deleting
    /// them (default: [`RETIRE_GRACE_VAR`] seconds if set, else
    /// [`DEFAULT_RETIRE_GRACE`]); also applies to the clean-up on opening.
    pub fn retire_grace(self, grace: std::time::Duration) -> WriteOptions {
        WriteOptions {
            retire_grace: Some(grace),
            ..self
        }
    }

    /// How long the writer lock of a store in object storage holds without
    /// renewal (default: [`crate::LEASE_VAR`] seconds if set, else
    /// [`crate::DEFAULT_LEASE`]): how long a writer that died keeps others out.
    pub fn lease(self, lease: std::time::Duration) -> WriteOptions {
        WriteOptions {
            lease: Some(lease),
            ..self
        }
    }

    /// Stops waiting for the lock once `flag` is set, and gives the store
    /// it as [`Store::set_cancel_flag`] does.
    pub fn cancel(self, flag: &'static std::sync::atomic::AtomicBool) -> WriteOptions {
        WriteOptions {
            cancel: Some(flag),
            ..self
        }
    }

    /// Opens (or creates) the store in `root` for writing, taking the writer
    /// lock and removing what an interrupted change left. While another
    /// writer holds the lock and the options say to wait, `waiting` is
    /// called once, then the lock is tried again with a growing pause.
    ///
    /// `root` may be a URL: `s3://bucket/prefix` (or `gs://`, `az://`) for
    /// a store in object storage (see `remote.rs`), `file:///abs/path` for
    /// a directory.
    pub fn open(self, root: impl AsRef<Path>, waiting: &mut dyn FnMut()) -> Result<Store> {
        if self.keyframe_every == Some(0) {
            return Err(Error::Invalid("--keyframe-every must be at least 1".into()));
        }
        let root = match locate(root.as_ref())? {
            Where::Local(root) => root,
            Where::Remote(prefix) => return self.open_location(prefix, waiting),
        };
        let root = root.as_path();
        if self.create {
            std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        } else {
            not_a_store_unless_manifest(root)?;
        }
        let lock = Lock::acquire(root, self.wait, self.cancel, waiting)?;
        // Looked at again under the lock: another writer may have created
        // the store while this one waited.
        let manifest_path = root.join(MANIFEST);
        let mut store = if manifest_path.is_file() {
            let mut manifest = Manifest::load(&manifest_path)?;
            if let Some(k) = self.keyframe_every {
                manifest.keyframe_every = k;
            }
            let mut store = Store::with(root, manifest, Some(Held::File(lock)));
            if let Some(g) = self.retire_grace {
                store.retire_grace = g;
            }
            store.collect_garbage()?;
            store
        } else if self.create {
            Store::init(
                root,
                self.keyframe_every.unwrap_or(DEFAULT_KEYFRAME_EVERY),
                lock,
            )?
        } else {
            return Err(not_a_store(root));
        };
        if let Some(g) = self.retire_grace {
            store.retire_grace = g;
        }
        store.cancel = self.cancel;
        Ok(store)
    }

    /// [`WriteOptions::open`] for the store in object storage under
    /// `prefix`, a location built with the settings a program gives
    /// ([`lmc_remote::Location::parse_with`]) rather than the environment's.
    pub fn open_location(
        self,
        prefix: lmc_remote::Location,
        waiting: &mut dyn FnMut(),
    ) -> Result<Store> {
        if self.keyframe_every == Some(0) {
            return Err(Error::Invalid("--keyframe-every must be at least 1".into()));
        }
        let mut remote = Remote {
            prefix,
            manifest_version: None,
        };
        if !self.create && remote.load()?.is_none() {
            return Err(remote_not_a_store(&remote));
        }
        let lock = LeaseLock::acquire(&remote.prefix, self.lease, self.wait, self.cancel, waiting)?;
        // Looked at again under the lock, as in a directory.
        let mut store = match remote.load()? {
            Some((mut manifest, version)) => {
                if let Some(k) = self.keyframe_every {
                    manifest.keyframe_every = k;
                }
                remote.manifest_version = Some(version);
                let mut store = Store::with_remote(remote, manifest, Some(Held::Lease(lock)));
                if let Some(g) = self.retire_grace {
                    store.retire_grace = g;
                }
                store.collect_garbage()?;
                store
            }
            None if self.create => Store::init_remote(
                remote,
                self.keyframe_every.unwrap_or(DEFAULT_KEYFRAME_EVERY),
                lock,
            )?,
            None => return Err(remote_not_a_store(&remote)),
        };
        if let Some(g) = self.retire_grace {
            store.retire_grace = g;
        }
        store.cancel = self.cancel;
        Ok(store)
    }
}

fn remote_not_a_store(remote: &Remote) -> Error {
    Error::Invalid(format!(
        "{} is not an lmc snapshot store (no {})",
        remote.prefix.url(),
        remote.manifest().url()
    ))
}

fn not_a_store(root: &Path) -> Error {
    if root.join(OBJECTS).is_dir() {
        return manifest_lost(root);
    }
    Error::Invalid(format!(
        "{} is not an lmc snapshot store (no {MANIFEST})",
        root.display()
    ))
}

/// A store whose objects are there but whose manifest is not: what can be
/// done by hand (lmc does not rebuild a manifest: it would have to guess
/// the paths, kinds and modes of the files, which only the manifest holds).
fn manifest_lost(root: &Path) -> Error {
    Error::Corrupt(format!(
        "{} holds {OBJECTS}/ but no {MANIFEST}: the list of snapshots is lost. Each object \
         is an lmc container of one file, named STEP-FILE-gGENERATION.lmc (the highest \
         generation of a step and file is its latest); `lmc info OBJECT` shows whether it \
         is a delta. A whole one restores with `lmc decompress OBJECT -o FILE`; a delta \
         with `lmc decompress OBJECT --base BASE -o FILE`, BASE being the same file of the \
         snapshot it was coded against (the next step, restored first; an older store: the \
         step before)",
        root.display()
    ))
}

fn not_a_store_unless_manifest(root: &Path) -> Result<()> {
    if root.join(MANIFEST).is_file() {
        Ok(())
    } else {
        Err(not_a_store(root))
    }
}

impl Store {
    /// Creates a store in `root` (a new or empty directory) and opens it for writing.
    pub fn create(root: impl AsRef<Path>, keyframe_every: u32) -> Result<Store> {
        if keyframe_every == 0 {
            return Err(Error::Invalid("--keyframe-every must be at least 1".into()));
        }
        let root = match locate(root.as_ref())? {
            Where::Local(root) => root,
            Where::Remote(prefix) => {
                let lock = LeaseLock::acquire(&prefix, None, Wait::No, None, &mut || {})?;
                let remote = Remote {
                    prefix,
                    manifest_version: None,
                };
                return Store::init_remote(remote, keyframe_every, lock);
            }
        };
        let root = root.as_path();
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let lock = Lock::acquire(root, Wait::No, None, &mut || {})?;
        Store::init(root, keyframe_every, lock)
    }

    /// Makes a new store under `remote`'s prefix (which must hold nothing
    /// but the lock this process holds).
    fn init_remote(remote: Remote, keyframe_every: u32, lock: LeaseLock) -> Result<Store> {
        let found: Vec<String> = remote
            .prefix
            .list()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "lock")
            .collect();
        if let Some(first) = found.first() {
            let objects_only = found.iter().all(|k| k.starts_with("objects/"));
            return Err(if objects_only {
                Error::Corrupt(format!(
                    "{} holds {OBJECTS}/ but no {MANIFEST}: the list of snapshots is lost (see \
                     the same case of a store in a directory)",
                    remote.prefix.url()
                ))
            } else {
                Error::Invalid(format!(
                    "cannot create a store at {}: the prefix holds objects already ({first}...)",
                    remote.prefix.url()
                ))
            });
        }
        let mut store = Store::with_remote(
            remote,
            Manifest::new(keyframe_every),
            Some(Held::Lease(lock)),
        );
        let m = store.manifest.clone();
        store.write_manifest(&m)?;
        Ok(store)
    }

    fn with_remote(remote: Remote, manifest: Manifest, lock: Option<Held>) -> Store {
        let mut store = Store::with(Path::new(remote.prefix.url()), manifest, lock);
        store.remote = Some(remote);
        store
    }

    /// Makes a new store in `root`, whose writer lock this process holds.
    fn init(root: &Path, keyframe_every: u32, lock: Lock) -> Result<Store> {
        let lock = Held::File(lock);
        let entries = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "lock")
            .count();
        if entries > 0 && root.join(OBJECTS).is_dir() && !root.join(MANIFEST).exists() {
            return Err(manifest_lost(root));
        }
        if entries > 0 {
            return Err(Error::Invalid(format!(
                "cannot create a store in {}: the directory is not empty",
                root.display()
            )));
        }
        let objects = root.join(OBJECTS);
        std::fs::create_dir(&objects).map_err(|e| Error::io(&objects, e))?;
        sync_dir(root)?;
        let manifest = Manifest::new(keyframe_every);
        write_atomic(root, MANIFEST, &manifest.to_json())?;
        Ok(Store::with(root, manifest, Some(lock)))
    }

    fn with(root: &Path, manifest: Manifest, lock: Option<Held>) -> Store {
        let retire_grace = std::env::var(RETIRE_GRACE_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_RETIRE_GRACE, std::time::Duration::from_secs);
        Store {
            root: root.to_path_buf(),
            manifest,
            writable: lock.is_some(),
            options: CompressOptions::default(),
            observer: None,
            cancel: None,
            retire_grace,
            object_reader: None,
            remote: None,
            lock,
        }
    }

    /// Opens an existing store for reading (list, restore, verify). Readers
    /// take no lock, so they neither wait for a writer nor hold one up: they
    /// read the last committed manifest and the objects it names, and if a
    /// writer has meanwhile deleted one of those (it keeps them for
    /// [`DEFAULT_RETIRE_GRACE`] first), a restore or verify loads the newly
    /// committed manifest and tries once more.
    ///
    /// `root` may be a URL, as for [`WriteOptions::open`].
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = match locate(root.as_ref())? {
            Where::Local(root) => root,
            Where::Remote(prefix) => return Store::open_location(prefix),
        };
        let root = root.as_path();
        not_a_store_unless_manifest(root)?;
        let manifest = Manifest::load(&root.join(MANIFEST))?;
        Ok(Store::with(root, manifest, None))
    }

    /// [`Store::open`] for the store in object storage under `prefix` (see
    /// [`WriteOptions::open_location`]).
    pub fn open_location(prefix: lmc_remote::Location) -> Result<Store> {
        let remote = Remote {
            prefix,
            manifest_version: None,
        };
        let Some((manifest, _)) = remote.load()? else {
            return Err(remote_not_a_store(&remote));
        };
        Ok(Store::with_remote(remote, manifest, None))
    }

    /// Loads the manifest committed last (for a reader that lives long).
    pub fn reload(&mut self) -> Result<()> {
        self.manifest = self.load_manifest()?;
        Ok(())
    }

    /// Opens an existing store for writing (add, prune, remove), removing
    /// objects left by an interrupted change; fails at once if another
    /// writer holds it ([`WriteOptions`] can wait).
    pub fn open_mut(root: impl AsRef<Path>) -> Result<Store> {
        WriteOptions::new().open(root, &mut || {})
    }

    /// Opens `root` for writing, creating the store if `root` does not hold
    /// one yet; sets the keyframe interval.
    pub fn open_or_create(root: impl AsRef<Path>, keyframe_every: u32) -> Result<Store> {
        WriteOptions::new()
            .create(true)
            .keyframe_every(keyframe_every.max(1))
            .open(root, &mut || {})
    }

    /// How long a writer keeps objects no snapshot names any more before
    /// deleting them (default [`DEFAULT_RETIRE_GRACE`], or
    /// [`RETIRE_GRACE_VAR`] seconds).
    pub fn set_retire_grace(&mut self, grace: std::time::Duration) {
        self.retire_grace = grace;
    }
}
