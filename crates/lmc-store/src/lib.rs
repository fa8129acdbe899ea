//! lmc-store: one training run's checkpoint snapshots in a directory: the
//! newest stored whole, each older one as a delta against the one after it
//! (a reverse delta), so that restoring the newest, what resuming training
//! does, decodes one container per file however long the store, and any
//! other a bounded chain ([`Manifest::keyframe_every`]).
//!
//! ```text
//! STORE/
//!   manifest.json     the list of snapshots (see [`manifest`]); replaced atomically
//!   lock              flock'ed by the one writer at work; readers take no lock
//!   objects/          one lmc container per file per snapshot
//!     000000000200-0000-g7.lmc
//! ```
//!
//! A snapshot is a checkpoint file or a directory of files. Each file is
//! compressed by lmc. An add ([`Store::add`], in `add.rs`) codes the new
//! snapshot whole, then re-encodes the snapshot before it against it: where
//! the new snapshot has a file at the same path, tensors with the same
//! name, dtype and shape are coded as their XOR with it (a version 2
//! container, checked against its base's hash); every other byte is kept
//! in the delta as it is, so each snapshot is recovered whole from its
//! delta and its successor. Stores written by lmc before reverse deltas
//! (each snapshot a delta against the one before) are read as they are;
//! [`Store::convert`] re-encodes them. In a directory snapshot, a file
//! with BF16 or F16 tensors takes the sources of its derived tensors from
//! the snapshot's F32-only files (`sources`; [`FileEntry::sources`]), so
//! BF16 weights that round their fp32 masters cost a reference in every
//! snapshot; a restore decodes those files first. The modules follow the
//! operations: `add`, `background` (adds on another thread), `restore`,
//! `verify`, `prune` (also remove and convert), `walk` (checkpoints on
//! disk), `commit` (commits, retirement, garbage collection), `open`, and
//! `sources` (which files take sources from which).
//!
//! Crash safety: a change writes its new objects first (fsync), then
//! commits by replacing the manifest atomically, then removes objects no
//! longer listed. A crash before the commit leaves the old manifest and
//! every object it lists; a crash after leaves the new one. Objects no
//! manifest lists are removed by the next writer. One writer at a time:
//! the lock refuses a second, or makes it wait ([`WriteOptions::wait`]).
//!
//! Concurrent readers: a reader ([`Store::open`]) takes no lock; it reads
//! the last committed manifest and the objects it names. A change that
//! stops naming an object (prune, remove) retires it: the new manifest
//! lists it under `retired` with the commit time, and writers delete it
//! only once it is older than the grace period ([`DEFAULT_RETIRE_GRACE`]),
//! so a reader that loaded the old manifest can finish. A reader that
//! still finds an object gone (it took longer than that) loads the newly
//! committed manifest and tries once more.
//!
//! In object storage: `Store::open("s3://bucket/prefix")` (also `gs://`,
//! `az://`; `file:///abs/path` is a directory) opens the same store kept
//! as objects under the prefix, through lmc-remote; every operation is the
//! same code, only the steps in `storage` differ (see [`Store::is_remote`]).
//! The flock becomes a lease lock object created only if absent and taken
//! over, once its lease has run out, by a write conditional on its version;
//! the manifest is committed by a write conditional on the version the
//! writer read, so a writer that lost its lock can never overwrite another's
//! commit; objects are uploaded whole before the manifest names them
//! (`remote`, FORMAT.md "In object storage").
//!
//! ```
//! # fn main() -> Result<(), lmc_store::Error> {
//! use lmc_store::{Store, TensorInput};
//! use lmc_core::Dtype;
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = Store::create(dir.path().join("run"), 8)?;
//! for step in [10u64, 20, 30] {
//!     let w: Vec<u8> = (0..4096u32).flat_map(|i| ((i + step as u32) as f32).to_le_bytes()).collect();
//!     let t = [TensorInput { name: "w".into(), dtype: Dtype::F32, shape: vec![4096], data: &w }];
//!     store.add_tensors(step, "model.safetensors", &t, &Default::default())?;
//! }
//! let files = store.restore_files(20)?;
//! assert_eq!(files[0].path, "model.safetensors");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod add;
mod background;
mod commit;
mod fsutil;
pub mod manifest;
mod open;
mod prune;
mod remote;
mod restore;
mod sources;
mod storage;
mod verify;
mod walk;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use lmc_core::{CompressOptions, Container, DeltaBase, Dtype, SegmentKind, SegmentSpec};
use lmc_tensors::safetensors::TensorInfo;

pub use background::{AddHandle, FinishHandle};
pub use fsutil::{FAILPOINT_VAR, Wait};
use fsutil::{Lock, failpoint};
pub use lmc_files::{folder_and_name, temp_beside};
pub use manifest::{FileEntry, Kind, Manifest, Retired, Snapshot};
use manifest::{check_relative_path, counterpart, hex};
pub use open::WriteOptions;
pub use prune::PruneReport;
pub use remote::{DEFAULT_LEASE, LEASE_VAR};
pub use walk::{CheckpointFile, checkpoint_files};

/// The mode of a restored file added without one (from memory).
const FILE_MODE: u32 = 0o644;
/// The mode of the folders of a restored directory snapshot (snapshots
/// keep files, not folders).
const DIR_MODE: u32 = 0o755;

/// Default bound on a chain: a restore decodes at most 15 deltas (a full
/// snapshot at least every 16). Chosen by measurement (docs/BENCHMARKS.md,
/// "Snapshot store").
pub const DEFAULT_KEYFRAME_EVERY: u32 = 16;

const MANIFEST: &str = "manifest.json";
const OBJECTS: &str = "objects";

/// How long an object no snapshot names any more is kept for readers that
/// loaded an older manifest (see the crate documentation): 15 minutes.
pub const DEFAULT_RETIRE_GRACE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The environment variable that, set to a number of seconds, replaces
/// [`DEFAULT_RETIRE_GRACE`] for the writers of this process (tests use 0
/// or 1 to make writers delete retired objects at once).
pub const RETIRE_GRACE_VAR: &str = "LMC_STORE_RETIRE_GRACE";

/// What can go wrong with a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Codec {
        context: String,
        source: lmc_core::Error,
    },
    /// The store's files contradict each other or are damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Another process holds the store.
    #[error("{0}")]
    Locked(String),
    /// A request that cannot be carried out (a step out of order, a bad path).
    #[error("{0}")]
    Invalid(String),
    #[error("no snapshot at step {0} in the store")]
    NoSuchStep(u64),
    /// A snapshot cannot be restored because an object on its chain (its
    /// own, or a later or earlier snapshot's it is a delta against) is
    /// missing or damaged. Snapshots whose chains do not pass through that
    /// object still restore.
    #[error(
        "step {step} cannot be restored: it needs object {object} ({path:?} of step {of_step}), \
         which is missing or damaged: {source}"
    )]
    Needs {
        step: u64,
        of_step: u64,
        path: String,
        object: String,
        source: Box<Error>,
    },
    /// From the file layer: a checkpoint directory lmc cannot store, a
    /// destination it may not replace, a restore that failed (each names
    /// its path).
    #[error(transparent)]
    Files(#[from] lmc_files::Error),
    /// From object storage (a store at a URL): what failed, on which URL.
    /// (Boxed: object_store's errors are large.)
    #[error(transparent)]
    Remote(Box<lmc_remote::Error>),
}

impl From<lmc_remote::Error> for Error {
    fn from(e: lmc_remote::Error) -> Error {
        Error::Remote(Box::new(e))
    }
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One file of a checkpoint to add: its path in the checkpoint and its
/// bytes, as the pieces of `layout` (one slice per segment).
#[derive(Debug, Clone)]
pub struct FileInput<'a> {
    pub path: String,
    pub parts: Vec<&'a [u8]>,
    pub layout: Vec<SegmentSpec>,
    pub mode: Option<u32>,
    /// The whole file, when the parts are its pieces in one buffer: the
    /// base the parent snapshot is coded against without copying it.
    whole: Option<&'a [u8]>,
}

impl<'a> FileInput<'a> {
    /// A file given as its bytes: files in a format lmc knows are split into
    /// their tensors, anything else is stored as plain bytes. No pickle
    /// check: for files from outside, use [`FileInput::checked`].
    pub fn from_bytes(path: impl Into<String>, bytes: &'a [u8], mode: Option<u32>) -> Self {
        Self::with_layout(path, bytes, layout_for(bytes), mode)
    }

    /// [`FileInput::from_bytes`] for a file read from `source`, refused if
    /// its pickles fail lmc's rule ([`lmc_files::detect_member`]) unless
    /// `allow_pickle_calls`.
    pub fn checked(
        path: impl Into<String>,
        source: &Path,
        bytes: &'a [u8],
        mode: Option<u32>,
        allow_pickle_calls: bool,
    ) -> Result<Self> {
        let found = lmc_files::detect_member(source, bytes, allow_pickle_calls)
            .map_err(lmc_files::Error::from)?;
        Ok(Self::with_layout(path, bytes, found.layout, mode))
    }

    pub(crate) fn with_layout(
        path: impl Into<String>,
        bytes: &'a [u8],
        layout: Vec<SegmentSpec>,
        mode: Option<u32>,
    ) -> Self {
        let mut parts = Vec::with_capacity(layout.len());
        let mut off = 0usize;
        for s in &layout {
            parts.push(&bytes[off..off + s.len as usize]);
            off += s.len as usize;
        }
        FileInput {
            path: path.into(),
            parts,
            layout,
            mode,
            whole: Some(bytes),
        }
    }

    /// A file given as pieces (one slice per segment of `layout`), held
    /// anywhere in memory.
    pub fn from_parts(
        path: impl Into<String>,
        parts: Vec<&'a [u8]>,
        layout: Vec<SegmentSpec>,
        mode: Option<u32>,
    ) -> Self {
        let whole = match parts.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        FileInput {
            path: path.into(),
            parts,
            layout,
            mode,
            whole,
        }
    }

    /// The file's bytes in one slice: borrowed when they are, else copied.
    pub(crate) fn whole(&self) -> std::borrow::Cow<'a, [u8]> {
        match self.whole {
            Some(b) => std::borrow::Cow::Borrowed(b),
            None => std::borrow::Cow::Owned(self.parts.concat()),
        }
    }

    /// The sum of the parts' lengths.
    pub(crate) fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }
}

/// A tensor held in memory, for [`Store::add_tensors`].
#[derive(Debug, Clone)]
pub struct TensorInput<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Little-endian element bytes.
    pub data: &'a [u8],
}

/// A restored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: Option<u32>,
}

/// What [`Store::verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub files: usize,
    /// Original bytes decoded and checked.
    pub bytes: u64,
    /// Files under `objects/` that no snapshot lists (left by an
    /// interrupted change; the next writer removes them).
    pub unreferenced: Vec<String>,
}

/// The layout lmc uses for a file in a store: whatever
/// [`lmc_tensors::detect`] recognises (safetensors, PyTorch, NumPy),
/// otherwise (or if the file is damaged) one byte segment.
pub fn layout_for(bytes: &[u8]) -> Vec<SegmentSpec> {
    if let Ok(found) = lmc_tensors::detect(bytes) {
        return found.layout;
    }
    if bytes.is_empty() {
        Vec::new()
    } else {
        vec![SegmentSpec {
            kind: SegmentKind::Bytes,
            len: bytes.len() as u64,
        }]
    }
}

/// The bytes of an object file, as an [`ObjectReader`] gives them.
pub type ObjectBytes = Box<dyn std::ops::Deref<Target = [u8]>>;

/// Reads an object file whole (see [`Store::set_object_reader`]). A file
/// that is not there must give an error of kind `NotFound`.
pub type ObjectReader = Box<dyn Fn(&Path) -> std::io::Result<ObjectBytes> + Send + Sync>;

/// Told what a long operation is doing: `("encoding", "step 200 model.safetensors")`.
pub type Observer = Box<dyn Fn(&str, &str) + Send + Sync>;

/// An open store.
pub struct Store {
    root: PathBuf,
    manifest: Manifest,
    writable: bool,
    options: CompressOptions,
    observer: Option<Observer>,
    cancel: Option<&'static std::sync::atomic::AtomicBool>,
    retire_grace: std::time::Duration,
    object_reader: Option<ObjectReader>,
    /// Where the store is kept in object storage; `None` for a directory.
    remote: Option<storage::Remote>,
    /// Held by a writer; a reader holds no lock.
    lock: Option<Held>,
}

/// A writer's lock: a directory's `flock`, or a lease in object storage.
#[derive(Debug)]
enum Held {
    // Only held, never read: dropping it unlocks.
    #[allow(dead_code)]
    File(Lock),
    Lease(remote::LeaseLock),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("snapshots", &self.manifest.snapshots.len())
            .field("writable", &self.writable)
            .finish()
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// The store's directory, or for a store in object storage its URL.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the store is kept in object storage (opened from a URL).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn snapshots(&self) -> &[Snapshot] {
        &self.manifest.snapshots
    }

    /// Calls `f(action, what)` as each file is encoded or decoded.
    pub fn set_observer(&mut self, f: Observer) {
        self.observer = Some(f);
    }

    /// Reads objects with `f` instead of `std::fs::read`: the CLI maps them
    /// into memory (its one module with `unsafe` code), which spares the
    /// copy and the page faults of reading a container whole. Objects are
    /// never changed once written, only deleted after the grace period.
    pub fn set_object_reader(&mut self, f: ObjectReader) {
        self.object_reader = Some(f);
    }

    /// Stops work in progress (with an error, nothing committed) once `flag` is set.
    pub fn set_cancel_flag(&mut self, flag: &'static std::sync::atomic::AtomicBool) {
        self.cancel = Some(flag);
    }

    fn tell(&self, action: &str, what: &str) {
        if let Some(f) = &self.observer {
            f(action, what);
        }
    }

    fn go_on(&self) -> bool {
        self.cancel
            .is_none_or(|c| !c.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Sets the chunk size used for new objects.
    pub fn set_chunk_size(&mut self, bytes: usize) {
        self.options = self.options.clone().chunk_size(bytes);
    }

    /// Sets how new objects are compressed (chunk size and tuning, e.g.
    /// `CompressOptions::default().best(true)` for the smallest store).
    pub fn set_options(&mut self, options: CompressOptions) {
        self.options = options;
    }

    fn objects(&self) -> PathBuf {
        self.root.join(OBJECTS)
    }

    /// The object that holds the snapshot at `step` whole, if the snapshot
    /// is one file stored whole (not a delta): a plain container, which a
    /// reader may open and decode tensor by tensor, straight into its own
    /// buffers, instead of restoring the file (the newest snapshot is always
    /// so). The object stays readable after a later add retires it, for the
    /// store's grace period, as for any reader.
    ///
    /// The object's header is checked against the manifest (the file's
    /// hash), so that a reader decoding parts of it gets that snapshot's
    /// bytes or an error; its chunks are checked as they are decoded.
    ///
    /// For a store in object storage, the object's URL (as a path): a
    /// reader opens it with the environment's settings and reads only the
    /// chunks it needs, in ranged requests.
    pub fn whole_file(&self, step: u64) -> Result<Option<PathBuf>> {
        let Some(i) = self.manifest.find(step) else {
            return Ok(None);
        };
        let snap = &self.manifest.snapshots[i];
        let (Kind::File, [f]) = (snap.kind, snap.files.as_slice()) else {
            return Ok(None);
        };
        if f.base.is_some() || !f.sources.is_empty() {
            return Ok(None);
        }
        let path = self.objects().join(&f.object);
        let mut head = [0u8; lmc_core::format::HEADER_LEN];
        let read = match &self.remote {
            None => std::fs::File::open(&path).and_then(|mut o| {
                use std::io::Read;
                o.read_exact(&mut head)
            }),
            Some(r) => lmc_remote::Object::at(r.objects().join(&f.object))
                .and_then(|o| {
                    let header = 0..head.len() as u64;
                    o.read_ranges(std::slice::from_ref(&header))
                })
                .map(|got| head.copy_from_slice(&got[0]))
                .map_err(std::io::Error::from),
        };
        let ctx = |why: String| {
            Error::Invalid(format!(
                "step {step}: object {} ({}): {why}",
                f.object, f.path
            ))
        };
        read.map_err(|e| ctx(format!("cannot be read: {e}")))?;
        // The header's own checksum, then the file hash it records (the
        // reader that opens the object checks the rest of the header).
        let sum = u64::from_le_bytes(head[56..64].try_into().expect("8 bytes"));
        if lmc_core::hash::xxh3_64(&head[..56]) != sum {
            return Err(ctx("its header is damaged".into()));
        }
        let hash = u128::from_le_bytes(head[24..40].try_into().expect("16 bytes"));
        if hex(hash) != f.hash {
            return Err(ctx(format!(
                "holds a file with hash {hash:032x}, the manifest says {}",
                f.hash
            )));
        }
        Ok(Some(path))
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::Invalid(
                "the store was opened for reading only".into(),
            ))
        }
    }
}

/// Objects written by a change that has not committed yet: removed if the
/// change fails, kept once it commits.
struct Cleanup {
    dir: PathBuf,
    /// The objects' prefix, for a store in object storage.
    remote: Option<lmc_remote::Location>,
    names: Vec<String>,
}

impl Cleanup {
    fn push(&mut self, name: &str) {
        self.names.push(name.to_string());
    }
    fn keep(mut self) {
        self.names.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.names {
            match &self.remote {
                Some(objects) => {
                    let _ = objects.join(n).delete();
                }
                None => {
                    let _ = std::fs::remove_file(self.dir.join(n));
                }
            }
        }
    }
}
