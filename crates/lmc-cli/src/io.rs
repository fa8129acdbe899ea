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
    /// An object downloaded from a URL into this temporary file, which is
    /// what is mapped; removed when the input goes. Declared last, so the
    /// map goes first.
    _downloaded: Option<tempfile::NamedTempFile>,
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
            _downloaded: None,
        }
    }

    /// Downloads the object at `url` into a temporary file (as a stream:
    /// memory stays bounded) and maps that.
    pub fn download(url: &str) -> Result<Input> {
        let object = lmc_remote::Object::open(url)?;
        let tmp = tempfile::NamedTempFile::new()
            .context("cannot create a temporary file for the download")?;
        let registered = crate::signals::temp_file(tmp.path());
        {
            let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
            object.copy_to(&mut w)?;
            w.flush()
                .with_context(|| format!("cannot write the download of {url}"))?;
        }
        let mut input = Input::open(tmp.path())?;
        input._downloaded = Some(tmp);
        drop(registered);
        Ok(input)
    }

    /// Maps `path`, or reads it where a map is not possible; `-` is
    /// standard input, copied to an anonymous temporary file (in `TMPDIR`)
    /// and mapped from there: a container or a checkpoint is read at
    /// random, not as a stream, and this keeps memory bounded whatever
    /// the input's size.
    pub fn open(path: &Path) -> Result<Input> {
        if let Some(url) = url_of(path) {
            return Input::download(url);
        }
        if is_stdio(path) {
            return Input::spooled_stdin();
        }
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
                _downloaded: None,
            })
        } else {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut v)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Input::owned(v))
        }
    }

    fn spooled_stdin() -> Result<Input> {
        let mut file = tempfile::tempfile()
            .context("cannot create a temporary file to hold standard input")?;
        let len = std::io::copy(&mut std::io::stdin().lock(), &mut file)
            .context("cannot copy standard input to a temporary file")?;
        if len == 0 {
            return Ok(Input::owned(Vec::new()));
        }
        // SAFETY: the map is read-only and lives as long as `Input`. The
        // file was created unlinked (no other process can open it by name)
        // and is written only above, before the map; nothing truncates or
        // rewrites it while it is mapped.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }
            .context("cannot map the temporary copy of standard input")?;
        Ok(Input {
            _watch: None,
            bytes: Bytes::Mapped(map),
            mapped_from: None,
            _downloaded: None,
        })
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

/// Whether `path` is `-`: standard input or output.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The URL that `path` is (`s3://bucket/key`, `file:///x`, `https://...`),
/// if it is one rather than a local path.
pub fn url_of(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| lmc_remote::is_url(s))
}

/// Names `input` in front of a decoding error, unless the error is the
/// object store's, which names the URL already.
pub fn named(input: &Path) -> impl FnOnce(lmc_core::Error) -> anyhow::Error + '_ {
    move |e| {
        if lmc_remote::from_store(&e) {
            anyhow::Error::from(e)
        } else {
            anyhow::Error::from(e).context(input.display().to_string())
        }
    }
}

/// A container to read: a local file (or standard input) in memory, or an
/// object read in ranges, its index first.
pub enum ContainerInput {
    Local(Input),
    /// The object, and the container opened over its header and index.
    Remote(lmc_remote::Object, lmc_core::Container<'static>),
}

impl ContainerInput {
    /// Opens `path`. A URL's object is read in ranges unless it holds a
    /// directory, which is downloaded (a restore walks all of it).
    pub fn open(path: &Path) -> Result<ContainerInput> {
        let Some(url) = url_of(path) else {
            return Ok(ContainerInput::Local(Input::open(path)?));
        };
        let object = lmc_remote::Object::open(url)?;
        let c = object.open_container()?;
        if lmc_files::is_tree_in(&c, Some(&object)).map_err(named(path))? {
            return Ok(ContainerInput::Local(Input::download(url)?));
        }
        Ok(ContainerInput::Remote(object, c))
    }

    /// The container: over all of its bytes, or over its header and index
    /// (chunks are then read with [`ContainerInput::source`]).
    pub fn container(&self) -> lmc_core::Result<lmc_core::Container<'_>> {
        match self {
            ContainerInput::Local(bytes) => lmc_core::Container::open(bytes),
            ContainerInput::Remote(_, c) => Ok(c.clone()),
        }
    }

    /// Decodes the whole file to `out` ([`lmc_core::Container::decompress_to`]
    /// or, over an object read front to back, `decompress_from`).
    pub fn decompress_to(
        &self,
        c: &lmc_core::Container<'_>,
        out: &mut (dyn Write + Send),
        progress: lmc_core::compress::Progress<'_>,
    ) -> lmc_core::Result<()> {
        match self {
            ContainerInput::Local(_) => c.decompress_to(out, progress),
            // Front to back through one stream (lmc_remote::Sequential).
            ContainerInput::Remote(object, _) => {
                let src = object.spooled().map_err(std::io::Error::from)?;
                c.decompress_from(&src, out, progress)
            }
        }
    }
}

/// An output file written under a temporary name in the destination's
/// folder and renamed into place only by [`Output::commit`]. Dropped without
/// a commit (an error, a panic, Ctrl-C), the temporary file is removed (and
/// [`crate::signals`] removes it if a signal ends lmc first), so
/// no partial output is ever left under the destination's name.
///
/// `-` is standard output. A container (which is written with a seek back to
/// its header) goes to an anonymous temporary file first and is copied out
/// by `commit`, so nothing reaches the pipe unless it is complete; decoded
/// bytes go out as they come, each chunk checked against its checksum
/// before it is written, and the exit status says whether the whole-file
/// hash matched (as `gzip -dc` does).
pub struct Output {
    sink: Sink,
}

enum Sink {
    File {
        dest: PathBuf,
        force: bool,
        tmp: BufWriter<tempfile::NamedTempFile>,
        /// The temporary file, removed if a signal ends lmc.
        _registered: crate::signals::Registered,
    },
    /// To standard output through an anonymous (already unlinked) file.
    Spooled(BufWriter<File>),
    /// Straight to standard output.
    Stdout(BufWriter<std::io::Stdout>),
    /// A container to an object, its parts uploaded as it is written and
    /// its header last ([`lmc_remote::ContainerUpload`]), completed by
    /// `commit` (dropped before, the upload is aborted: nothing appears).
    ContainerUpload(BufWriter<lmc_remote::ContainerUpload>),
    /// Straight to an object by multipart upload, completed by `commit`
    /// (dropped before, the upload is aborted: nothing appears).
    Upload(BufWriter<lmc_remote::Upload>),
}

impl Output {
    pub fn create(dest: &Path, input: &Path, force: bool) -> Result<Output> {
        if url_of(dest).is_some() {
            return Output::remote(dest, input, force, true);
        }
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
            sink: Sink::File {
                _registered: registered,
                dest: dest.to_path_buf(),
                force,
                // Chunks (256 KiB by default) are larger than the buffer and go
                // straight to the file; only small writes are gathered.
                tmp: BufWriter::with_capacity(64 << 10, tmp),
            },
        })
    }

    /// An object at the URL `dest`, visible only once complete, uploaded as
    /// it is written; `seekable` (what [`Output::create`] gives: a
    /// container, written with a seek back to its header) through
    /// [`lmc_remote::ContainerUpload`].
    pub fn remote(dest: &Path, input: &Path, force: bool, seekable: bool) -> Result<Output> {
        let url = url_of(dest).expect("a URL");
        if url_of(input) == Some(url) {
            bail!("output {url} is the input");
        }
        let location = lmc_remote::Location::parse(url)?;
        if !location.is_writable() {
            bail!("{url}: http(s):// URLs are read only; write to s3://, gs://, az:// or file://");
        }
        if !force && location.exists()? {
            bail!("{url} already exists (use --force to overwrite it)");
        }
        let sink = if seekable {
            Sink::ContainerUpload(BufWriter::with_capacity(
                1 << 20,
                lmc_remote::ContainerUpload::to(location)?,
            ))
        } else {
            Sink::Upload(BufWriter::with_capacity(
                1 << 20,
                lmc_remote::Upload::to(location)?,
            ))
        };
        Ok(Output { sink })
    }

    /// Standard output; `seekable` (a container) goes through an anonymous
    /// temporary file. Refused when standard output is a terminal.
    pub fn stdout(seekable: bool) -> Result<Output> {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            bail!(
                "standard output is a terminal; lmc does not write binary data there \
                 (redirect it, or give -o FILE)"
            );
        }
        let sink = if seekable {
            let f = tempfile::tempfile().context("cannot create a temporary file")?;
            Sink::Spooled(BufWriter::with_capacity(64 << 10, f))
        } else {
            Sink::Stdout(BufWriter::with_capacity(1 << 20, std::io::stdout()))
        };
        Ok(Output { sink })
    }

    /// Whether this writes to standard output (the summary then goes to
    /// standard error).
    pub fn is_stdout(&self) -> bool {
        matches!(self.sink, Sink::Spooled(_) | Sink::Stdout(_))
    }

    /// Flushes, syncs and renames the file into place; for standard output,
    /// copies the spooled container out, or flushes.
    pub fn commit(self) -> Result<()> {
        match self.sink {
            Sink::File {
                dest, force, tmp, ..
            } => {
                let tmp = tmp
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("cannot write the output")?;
                tmp.as_file().sync_all().context("cannot sync the output")?;
                let res = if force {
                    tmp.persist(&dest).map(|_| ())
                } else {
                    tmp.persist_noclobber(&dest).map(|_| ())
                };
                res.map_err(|e| e.error).with_context(|| {
                    format!("cannot move the output into place at {}", dest.display())
                })
            }
            Sink::Spooled(w) => {
                let mut f = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("cannot write the output")?;
                f.seek(std::io::SeekFrom::Start(0))
                    .context("cannot read back the output")?;
                let mut out = std::io::stdout().lock();
                std::io::copy(&mut f, &mut out)
                    .and_then(|_| out.flush())
                    .context("cannot write to standard output")
            }
            Sink::Stdout(mut w) => w.flush().context("cannot write to standard output"),
            Sink::ContainerUpload(w) => {
                let up = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("cannot upload the output")?;
                up.finish()?;
                Ok(())
            }
            Sink::Upload(w) => {
                let up = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("cannot upload the output")?;
                Ok(up.finish()?)
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Sink::File { tmp, .. } => tmp.write(buf),
            Sink::Spooled(w) => w.write(buf),
            Sink::Stdout(w) => w.write(buf),
            Sink::ContainerUpload(w) => w.write(buf),
            Sink::Upload(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::File { tmp, .. } => tmp.flush(),
            Sink::Spooled(w) => w.flush(),
            Sink::Stdout(w) => w.flush(),
            Sink::ContainerUpload(w) => w.flush(),
            Sink::Upload(w) => w.flush(),
        }
    }
}

impl Seek for Output {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        match &mut self.sink {
            Sink::File { tmp, .. } => tmp.seek(pos),
            Sink::Spooled(w) => w.seek(pos),
            Sink::ContainerUpload(w) => w.seek(pos),
            Sink::Stdout(_) | Sink::Upload(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "standard output or an upload cannot seek",
            )),
        }
    }
}

pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
