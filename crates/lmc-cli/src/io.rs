//! Files: mapping inputs into memory, writing outputs atomically.
//!
//! This is the only module of the CLI with `unsafe` code (the memory map).

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// An input file's bytes: memory-mapped, or read into memory where a map
/// is not possible (empty files, pipes).
pub enum Input {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Mapped(m) => m,
            Input::Owned(v) => v,
        }
    }
}

impl Input {
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
            // while it is mapped; that changes what we read (caught by the
            // checksums on decode) or raises SIGBUS, but cannot break memory
            // safety of this process beyond that signal. lmc never writes to
            // its input, and the output is a different file (checked in
            // `Output::create`).
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::Mmap::map(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            Ok(Input::Mapped(map))
        } else {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut v)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Input::Owned(v))
        }
    }
}

/// An output file written under a temporary name in the destination's
/// folder and renamed into place only by [`Output::commit`]. Dropped without
/// a commit (an error, a panic, Ctrl-C), the temporary file is removed, so
/// no partial output is ever left under the destination's name.
pub struct Output {
    dest: PathBuf,
    force: bool,
    tmp: BufWriter<tempfile::NamedTempFile>,
}

impl Output {
    pub fn create(dest: &Path, input: &Path, force: bool) -> Result<Output> {
        if dest.exists() {
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
        let (tmp, _) = lmc_store::temp_beside(dest)
            .with_context(|| format!("cannot create a temporary file beside {}", dest.display()))?;
        Ok(Output {
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
