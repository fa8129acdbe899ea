//! lmc-store: one training run's checkpoint snapshots in a directory, each
//! stored as a delta against the one before, with a full keyframe every
//! few snapshots so that a restore decodes a bounded chain.
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
//! compressed by lmc; when the previous snapshot has a file at the same
//! path, tensors with the same name, dtype and shape are coded as their
//! XOR with it (a version 2 container, checked against its base's hash).
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

mod commit;
mod fsutil;
pub mod manifest;
mod open;
mod prune;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use lmc_core::{CompressOptions, Container, DeltaBase, Dtype, SegmentKind, SegmentSpec};
use lmc_tensors::safetensors::TensorInfo;

pub use fsutil::{FAILPOINT_VAR, Wait};
use fsutil::{Lock, failpoint};
pub use lmc_files::{folder_and_name, temp_beside};
pub use manifest::{FileEntry, Kind, Manifest, Retired, Snapshot};
use manifest::{check_relative_path, counterpart, hex};
pub use open::WriteOptions;
pub use prune::PruneReport;

/// The mode of a restored file added without one (from memory).
const FILE_MODE: u32 = 0o644;
/// The mode of the folders of a restored directory snapshot (snapshots
/// keep files, not folders).
const DIR_MODE: u32 = 0o755;

/// Default: a keyframe every 8 snapshots, so a restore decodes at most 7 deltas.
pub const DEFAULT_KEYFRAME_EVERY: u32 = 8;

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
    /// From the file layer: a checkpoint directory lmc cannot store, a
    /// destination it may not replace, a restore that failed (each names
    /// its path).
    #[error(transparent)]
    Files(#[from] lmc_files::Error),
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

    fn with_layout(
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
        }
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
    /// Held by a writer; a reader holds no lock.
    _lock: Option<Lock>,
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
    pub fn root(&self) -> &Path {
        &self.root
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

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::Invalid(
                "the store was opened for reading only".into(),
            ))
        }
    }

    // -----------------------------------------------------------------
    // Adding
    // -----------------------------------------------------------------

    /// Adds a checkpoint file or directory from disk. The step defaults to
    /// the `step` in the (first) safetensors file's `__metadata__`, else
    /// one past the last snapshot. A file whose pickles fail lmc's rule
    /// ([`lmc_files::input`]) is refused unless `allow_pickle_calls`.
    pub fn add_path(
        &mut self,
        path: &Path,
        step: Option<u64>,
        allow_pickle_calls: bool,
    ) -> Result<&Snapshot> {
        let (kind, listed) = checkpoint_files(path)?;
        let owned = listed
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(&f.source).map_err(|e| Error::io(&f.source, e))?;
                Ok((f, bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let step = match step {
            Some(s) => s,
            None => self.default_step(owned.iter().map(|(_, b)| b.as_slice())),
        };
        let files = owned
            .iter()
            .map(|(f, b)| {
                FileInput::checked(f.path.clone(), &f.source, b, f.mode, allow_pickle_calls)
            })
            .collect::<Result<Vec<_>>>()?;
        self.add(step, kind, &files)
    }

    /// The step of a checkpoint that did not say: its metadata's, else the next one.
    pub fn default_step<'a>(&self, files: impl IntoIterator<Item = &'a [u8]>) -> u64 {
        for b in files {
            if lmc_tensors::safetensors::looks_like(b)
                && let Some(s) = lmc_tensors::safetensors::metadata(b)
                    .ok()
                    .and_then(|m| m.get("step").and_then(|s| s.trim().parse().ok()))
            {
                return s;
            }
        }
        self.manifest.snapshots.last().map_or(0, |s| s.step + 1)
    }

    /// Adds a snapshot made of tensors in memory, as one safetensors file
    /// named `file_name`, without assembling the file first: what a training
    /// loop calls instead of writing an uncompressed checkpoint.
    pub fn add_tensors(
        &mut self,
        step: u64,
        file_name: &str,
        tensors: &[TensorInput<'_>],
        metadata: &BTreeMap<String, String>,
    ) -> Result<&Snapshot> {
        let infos: Vec<TensorInfo> = tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
            .collect();
        let header = lmc_tensors::safetensors::header(&infos, metadata)
            .map_err(|e| Error::Invalid(format!("{file_name}: {e}")))?;
        let mut parts: Vec<&[u8]> = vec![&header];
        let mut layout = vec![SegmentSpec {
            kind: SegmentKind::Bytes,
            len: header.len() as u64,
        }];
        for (t, info) in tensors.iter().zip(infos) {
            let want = info.shape.iter().product::<u64>() * info.dtype.width() as u64;
            if t.data.len() as u64 != want {
                return Err(Error::Invalid(format!(
                    "tensor {:?}: {} bytes of data for shape {:?} of {} ({want} bytes)",
                    t.name,
                    t.data.len(),
                    t.shape,
                    t.dtype
                )));
            }
            parts.push(t.data);
            layout.push(SegmentSpec {
                kind: SegmentKind::Tensor {
                    name: info.name,
                    dtype: info.dtype,
                    shape: info.shape,
                },
                len: want,
            });
        }
        let file = FileInput {
            path: file_name.to_string(),
            parts,
            layout,
            mode: None,
        };
        self.add(step, Kind::File, &[file])
    }

    /// Adds a snapshot at `step` made of `files`: a delta against the last
    /// snapshot unless a keyframe is due. Commits atomically.
    pub fn add(&mut self, step: u64, kind: Kind, files: &[FileInput<'_>]) -> Result<&Snapshot> {
        self.check_writable()?;
        if let Some(last) = self.manifest.snapshots.last()
            && step <= last.step
        {
            return Err(Error::Invalid(format!(
                "step {step} is not after the last snapshot's step {} (snapshots are added in training order)",
                last.step
            )));
        }
        if kind == Kind::File && files.len() != 1 {
            return Err(Error::Invalid(
                "a file snapshot holds exactly one file".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in files {
            check_relative_path(&f.path).map_err(Error::Invalid)?;
            if !seen.insert(f.path.as_str()) {
                return Err(Error::Invalid(format!("path {:?} given twice", f.path)));
            }
        }
        let k = self.manifest.keyframe_every;
        let parent = self
            .manifest
            .snapshots
            .last()
            .filter(|p| p.depth + 1 < k)
            .map(|p| p.step);
        let base_files = match parent {
            Some(p) => self.restore_files(p)?,
            None => Vec::new(),
        };
        let parent_kind = self.manifest.snapshots.last().map_or(Kind::Dir, |p| p.kind);
        let generation = self.manifest.generation + 1;
        let mut created = Cleanup::new(self.objects());
        let mut entries = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let base = counterpart(&base_files, |b| &b.path, parent_kind, kind, &f.path);
            let name = format!("{step:012}-{i:04}-g{generation}.lmc");
            let entry = self.write_object(f, base, &name, &mut created)?;
            entries.push(entry);
        }
        failpoint("add:objects-written");
        let is_delta = entries.iter().any(|e| e.base.is_some());
        let depth = match (parent, is_delta) {
            (Some(_), true) => self.manifest.snapshots.last().map_or(0, |p| p.depth + 1),
            _ => 0,
        };
        let snapshot = Snapshot {
            step,
            kind,
            parent: parent.filter(|_| is_delta),
            depth,
            added: unix_now(),
            files: entries,
        };
        let mut m = self.manifest.clone();
        m.generation = generation;
        m.snapshots.push(snapshot);
        self.commit(m)?;
        created.keep();
        failpoint("add:committed");
        Ok(self.manifest.snapshots.last().expect("just added"))
    }

    /// Compresses one file into `objects/name` (a delta against `base` if
    /// any of its tensors match), durably, and describes it.
    fn write_object(
        &self,
        f: &FileInput<'_>,
        base: Option<&RestoredFile>,
        name: &str,
        created: &mut Cleanup,
    ) -> Result<FileEntry> {
        let base_layout = base.map(|b| layout_for(&b.bytes));
        let delta = base
            .zip(base_layout.as_ref())
            .map(|(b, bl)| DeltaBase::matching(&b.bytes, bl, &f.layout))
            .filter(|d| d.matched() > 0);
        self.tell(
            "encoding",
            &format!(
                "{name}: {}{}",
                f.path,
                delta.as_ref().map_or(String::new(), |d| format!(
                    " (delta, {} tensors against the previous snapshot)",
                    d.matched()
                ))
            ),
        );
        let objects = self.objects();
        let tmp = lmc_files::temp_in(&objects, ".tmp-", "").map_err(|e| Error::io(&objects, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, tmp);
        let summary = lmc_core::compress_parts(
            &f.parts,
            &f.layout,
            delta.as_ref(),
            &self.options,
            &mut w,
            &mut |_| self.go_on(),
        )
        .map_err(|source| Error::Codec {
            context: format!("cannot compress {}", f.path),
            source,
        })?;
        let tmp = w
            .into_inner()
            .map_err(|e| Error::io(&objects, e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(tmp.path(), e))?;
        let dest = objects.join(name);
        tmp.persist_noclobber(&dest)
            .map_err(|e| Error::io(&dest, e.error))?;
        created.push(name);
        Ok(FileEntry {
            path: f.path.clone(),
            len: summary.original_len,
            hash: hex(summary.original_hash),
            object: name.to_string(),
            stored: summary.compressed_len,
            base: summary.base_hash.map(hex),
            mode: f.mode.map(|m| m & lmc_files::MODE_MASK),
        })
    }

    // -----------------------------------------------------------------
    // Restoring
    // -----------------------------------------------------------------

    /// Decodes one file of snapshot `idx`, given its base if it is a delta:
    /// the base's bytes and their XXH3-128, known because the base was just
    /// decoded and checked. Returns the bytes and their XXH3-128.
    fn decode(&self, entry: &FileEntry, base: Option<(&[u8], u128)>) -> Result<(Vec<u8>, u128)> {
        let path = self.objects().join(&entry.object);
        self.tell("decoding", &format!("{}: {}", entry.object, entry.path));
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 != entry.stored {
            return Err(Error::Corrupt(format!(
                "{}: {} bytes, the manifest says {}",
                path.display(),
                bytes.len(),
                entry.stored
            )));
        }
        let ctx = |source| Error::Codec {
            context: format!("{} ({})", path.display(), entry.path),
            source,
        };
        let c = Container::open(&bytes).map_err(ctx)?;
        if hex(c.header().original_hash) != entry.hash {
            return Err(Error::Corrupt(format!(
                "{}: holds a file with hash {:032x}, the manifest says {}",
                path.display(),
                c.header().original_hash,
                entry.hash
            )));
        }
        let c = match (base, entry.base.is_some()) {
            (Some((b, hash)), true) => c.with_base_hashed(b, hash).map_err(ctx)?,
            (None, false) => c,
            _ => {
                return Err(Error::Corrupt(format!(
                    "{}: the manifest and the object disagree on whether it is a delta",
                    path.display()
                )));
            }
        };
        if c.header().original_len != entry.len {
            return Err(Error::Corrupt(format!(
                "{}: holds a file of {} bytes, the manifest says {}",
                path.display(),
                c.header().original_len,
                entry.len
            )));
        }
        let mut out = vec![0u8; entry.len as usize];
        c.decompress_into(&mut out, &mut |_| self.go_on())
            .map_err(ctx)?;
        Ok((out, c.header().original_hash))
    }

    /// Decodes file `path` of snapshot `idx`: its keyframe, then each delta
    /// of its chain in turn.
    fn restore_file(&self, m: &Manifest, idx: usize, path: &str) -> Result<RestoredFile> {
        let snaps = &m.snapshots;
        // Walk back to the keyframe of this file's chain. The manifest's
        // checks guarantee each delta's base is the same path one snapshot up.
        let mut i = idx;
        let mut e = snaps[i]
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| Error::Corrupt(format!("step {}: no file {path:?}", snaps[i].step)))?;
        let mut chain = vec![e];
        while e.base.is_some() {
            let (s, p) = (&snaps[i], &snaps[i - 1]);
            e = counterpart(&p.files, |f| &f.path, p.kind, s.kind, &e.path).ok_or_else(|| {
                Error::Corrupt(format!(
                    "step {}: {:?} has no base in the parent",
                    s.step, e.path
                ))
            })?;
            chain.push(e);
            i -= 1;
        }
        let mut cur: Option<(Vec<u8>, u128)> = None;
        for e in chain.iter().rev() {
            let base = cur.as_ref().map(|(b, h)| (b.as_slice(), *h));
            cur = Some(self.decode(e, base)?);
        }
        let entry = chain[0];
        Ok(RestoredFile {
            path: entry.path.clone(),
            bytes: cur.expect("a chain has at least one link").0,
            mode: entry.mode,
        })
    }

    /// Every file of the snapshot at `step`, decoded and checked.
    pub fn restore_files(&self, step: u64) -> Result<Vec<RestoredFile>> {
        Ok(self.retrying(|m| self.restore_files_in(m, step))?.1)
    }

    /// The kind and the files of the snapshot at `step` of `m`.
    fn restore_files_in(&self, m: &Manifest, step: u64) -> Result<(Kind, Vec<RestoredFile>)> {
        let idx = m.find(step).ok_or(Error::NoSuchStep(step))?;
        let s = &m.snapshots[idx];
        let files = s
            .files
            .iter()
            .map(|f| self.restore_file(m, idx, &f.path))
            .collect::<Result<_>>()?;
        Ok((s.kind, files))
    }

    /// Restores the snapshot at `step` to `out`: the file, or the directory
    /// of files, byte-identical to what was added. Written under a temporary
    /// name and renamed, so a failure leaves nothing at `out`; an existing
    /// `out` is replaced only with `force`.
    pub fn restore_to(&self, step: u64, out: &Path, force: bool) -> Result<()> {
        self.manifest.find(step).ok_or(Error::NoSuchStep(step))?;
        // The rule every lmc output follows: replaced only with `force`, and
        // a directory with something in it never.
        lmc_files::check_dir_destination(out, force)?;
        if out.starts_with(&self.root) {
            return Err(Error::Invalid(format!(
                "{} is inside the store; restore somewhere else",
                out.display()
            )));
        }
        let (kind, files) = self.retrying(|m| self.restore_files_in(m, step))?;
        match kind {
            Kind::File => {
                let f = &files[0];
                if out.is_dir() {
                    return Err(Error::Invalid(format!(
                        "{} is a directory; the snapshot is a file",
                        out.display()
                    )));
                }
                let (mut tmp, _) = temp_beside(out).map_err(|e| Error::io(out, e))?;
                tmp.write_all(&f.bytes)
                    .and_then(|()| tmp.as_file().sync_all())
                    .map_err(|e| Error::io(out, e))?;
                set_mode(tmp.path(), f.mode)?;
                tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
            }
            Kind::Dir => {
                // The same restore as a directory container's: checked paths,
                // modes masked, moved into place when complete. Snapshots
                // hold files only; their folders are made as needed.
                let mut dir = lmc_files::DirBuilder::create(out, force, true)?;
                let mut made = std::collections::HashSet::new();
                for f in &files {
                    let mut at = 0;
                    while let Some(i) = f.path[at..].find('/') {
                        let folder = &f.path[..at + i];
                        if made.insert(folder.to_string()) {
                            dir.dir(folder, DIR_MODE)?;
                        }
                        at += i + 1;
                    }
                    dir.file(&f.path, f.mode.unwrap_or(FILE_MODE), &f.bytes)?;
                }
                dir.finish(DIR_MODE)?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // Checking and pruning
    // -----------------------------------------------------------------

    /// Decodes every snapshot (each chain once, in order) and checks every
    /// checksum and hash; reports objects no snapshot lists.
    pub fn verify(&self, progress: &mut dyn FnMut(&Snapshot)) -> Result<VerifyReport> {
        let progress = std::cell::RefCell::new(progress);
        self.retrying(|m| self.verify_in(m, &mut *progress.borrow_mut()))
    }

    fn verify_in(&self, m: &Manifest, progress: &mut dyn FnMut(&Snapshot)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        // The previous snapshot's files, with their hashes (checked as they
        // were decoded).
        let mut prev: Vec<(RestoredFile, u128)> = Vec::new();
        let mut prev_kind = Kind::Dir;
        for s in &m.snapshots {
            let mut cur = Vec::with_capacity(s.files.len());
            for f in &s.files {
                let base = match &f.base {
                    Some(_) => Some(
                        counterpart(&prev, |p| &p.0.path, prev_kind, s.kind, &f.path)
                            .map(|(p, hash)| (p.bytes.as_slice(), *hash))
                            .ok_or_else(|| {
                                Error::Corrupt(format!(
                                    "step {}: {:?} has no base in the parent",
                                    s.step, f.path
                                ))
                            })?,
                    ),
                    None => None,
                };
                let (bytes, hash) = self.decode(f, base)?;
                report.bytes += bytes.len() as u64;
                report.files += 1;
                cur.push((
                    RestoredFile {
                        path: f.path.clone(),
                        bytes,
                        mode: f.mode,
                    },
                    hash,
                ));
            }
            report.snapshots += 1;
            progress(s);
            prev = cur;
            prev_kind = s.kind;
        }
        // Objects retired but kept for readers are accounted for; so are
        // those of a change committed since `m` was loaded.
        let latest = match self.writable {
            true => None,
            false => Manifest::load(&self.root.join(MANIFEST)).ok(),
        };
        let listed: std::collections::HashSet<&str> = [Some(m), latest.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|m| {
                m.objects()
                    .chain(m.retired.iter().map(|r| r.object.as_str()))
            })
            .collect();
        let objects = self.objects();
        for e in std::fs::read_dir(&objects).map_err(|e| Error::io(&objects, e))? {
            let e = e.map_err(|e| Error::io(&objects, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !listed.contains(name.as_str()) {
                report.unreferenced.push(name);
            }
        }
        report.unreferenced.sort();
        Ok(report)
    }
}

/// Objects written by a change that has not committed yet: removed if the
/// change fails, kept once it commits.
struct Cleanup {
    dir: PathBuf,
    names: Vec<String>,
}

impl Cleanup {
    fn new(dir: PathBuf) -> Cleanup {
        Cleanup {
            dir,
            names: Vec::new(),
        }
    }
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
            let _ = std::fs::remove_file(self.dir.join(n));
        }
    }
}

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
/// DIR` uses ([`lmc_files::walk`]: UTF-8 plain relative paths, modes
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

#[cfg(unix)]
fn set_mode(path: &Path, mode: Option<u32>) -> Result<()> {
    // Files added from memory have no mode: they get the usual rw-r--r--.
    // Masked (rwx only) also when a store written before the mask recorded
    // set-ID bits.
    lmc_files::set_mode(path, mode.unwrap_or(FILE_MODE)).map_err(|e| Error::io(path, e))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: Option<u32>) -> Result<()> {
    Ok(())
}
