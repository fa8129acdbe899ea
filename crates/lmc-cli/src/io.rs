//! Files: mapping inputs into memory, writing outputs atomically.
//!
//! This is the only module of the CLI with `unsafe` code (the memory map).

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// An input file's bytes: memory-mapped, or read into memory where a map
/// is not possible (empty files, pipes).
pub struct Input {
    /// Declared first, so it is withdrawn before the map goes.
    _watch: Option<crate::signals::Registered>,
    bytes: Bytes,
    /// A mapped file, with its size and modification time when mapped, for
    /// [`Input::check_unchanged`].
    mapped_from: Option<(File, PathBuf, u64, Option<SystemTime>)>,
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Input {
    /// Bytes already in memory.
    pub fn owned(bytes: Vec<u8>) -> Input {
        Input {
            _watch: None,
            bytes: Bytes::Owned(bytes),
            mapped_from: None,
        }
    }

    pub fn open(path: &Path) -> Result<Input> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            bail!("{} is a directory", path.display());
        }
        if meta.is_file() && meta.len() > 0 {
            // SAFETY: the map is read-only and lives as long as `Input`. The
            // one hazard is another process truncating or rewriting the file
            // while it is mapped. A rewrite changes what we read: decoding
            // catches it with its checksums, compressing with
            // `check_unchanged` before the output is committed. Reading past
            // a truncation raises SIGBUS, which `crate::signals` turns into
            // an error naming this file (the map is registered there just
            // below); neither breaks memory safety. lmc never writes to its
            // input, and the output is a different file (checked in
            // `Output::create`).
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::Mmap::map(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            let watch = crate::signals::mapped_input(path, map.as_ptr(), map.len());
            Ok(Input {
                _watch: Some(watch),
                bytes: Bytes::Mapped(map),
                mapped_from: Some((file, path.to_path_buf(), meta.len(), meta.modified().ok())),
            })
        } else {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut v)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Input::owned(v))
        }
    }

    /// Fails if the mapped file changed size or was modified since it was
    /// mapped: what was read may then mix old and new bytes (a file
    /// truncated and written again raises no SIGBUS). Called before an
    /// output made from it is committed.
    pub fn check_unchanged(&self) -> Result<()> {
        let Some((file, path, len, modified)) = &self.mapped_from else {
            return Ok(());
        };
        let now = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if now.len() != *len {
            bail!(
                "{} changed size while lmc was reading it ({len} bytes, now {}): another \
                 program changed it; no output was written",
                path.display(),
                now.len()
            );
        }
        if now.modified().ok() != *modified {
            bail!(
                "{} was modified while lmc was reading it (another program wrote to it); \
                 no output was written",
                path.display()
            );
        }
        Ok(())
    }
}

/// An output file written under a temporary name in the destination's
/// folder and renamed into place only by [`Output::commit`]. Dropped without
/// a commit (an error, a panic, Ctrl-C), the temporary file is removed (and
/// [`crate::signals`] removes it if a signal ends lmc first), so
/// no partial output is ever left under the destination's name.
pub struct Output {
    dest: PathBuf,
    force: bool,
    tmp: BufWriter<tempfile::NamedTempFile>,
    /// The temporary file, removed if a signal ends lmc.
    _registered: crate::signals::Registered,
}

impl Output {
    pub fn create(dest: &Path, input: &Path, force: bool) -> Result<Output> {
        // Only a regular file may be replaced: never /dev/null, a pipe or
        // a folder (the same rule as the Python package's).
        if lmc_files::check_destination(dest)? == lmc_files::Destination::File {
            if same_file(dest, input) {
                bail!("output {} is the input file", dest.display());
            }
            if !force {
                bail!(
                    "{} already exists (use --force to overwrite it)",
                    dest.display()
                );
            }
        }
        let (tmp, _) = lmc_files::temp_beside(dest)
            .with_context(|| format!("cannot create a temporary file beside {}", dest.display()))?;
        let registered = crate::signals::temp_file(tmp.path());
        Ok(Output {
            _registered: registered,
            dest: dest.to_path_buf(),
            force,
            // Chunks (256 KiB by default) are larger than the buffer and go
            // straight to the file; only small writes are gathered.
            tmp: BufWriter::with_capacity(64 << 10, tmp),
        })
    }

    pub fn writer(&mut self) -> &mut BufWriter<tempfile::NamedTempFile> {
        &mut self.tmp
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<()> {
        let tmp = self
            .tmp
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write the output")?;
        tmp.as_file().sync_all().context("cannot sync the output")?;
        let res = if self.force {
            tmp.persist(&self.dest).map(|_| ())
        } else {
            tmp.persist_noclobber(&self.dest).map(|_| ())
        };
        res.map_err(|e| e.error).with_context(|| {
            format!(
                "cannot move the output into place at {}",
                self.dest.display()
            )
        })
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

impl Seek for Output {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.tmp.seek(pos)
    }
}

pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
