//! Directories: compressed as one directory stream
//! ([`lmc_tensors::tree`], FORMAT.md's appendix) and restored from it.
//!
//! Compression maps every file and passes the pieces to
//! [`lmc_core::compress_parts`] one slice a segment, so memory stays that
//! of the chunks in flight whatever the directory's size. Restoration
//! writes into a new temporary directory beside the output, checks every
//! entry as it arrives (plain relative paths whose parents came before,
//! links that stay inside), and renames the directory into place only
//! after the whole-stream hash matched.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lmc_core::{CompressOptions, Container, SegmentKind, SegmentSpec, compress_parts};
use lmc_tensors::prefix_names;
use lmc_tensors::tree::{self, Entry, Kind};

use super::{emit, human};
use crate::io::{Input, Output};
use crate::progress::Bar;

/// One thing found in the directory.
struct Item {
    entry: Entry,
    abs: PathBuf,
    /// A link's target.
    target: Option<String>,
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & tree::MODE_MASK
}

#[cfg(not(unix))]
fn mode_of(meta: &fs::Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

/// Lists `root` depth first, each folder's entries sorted by name, a
/// folder before its contents.
fn walk(root: &Path) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    walk_dir(root, "", &mut out)?;
    Ok(out)
}

fn walk_dir(dir: &Path, rel: &str, out: &mut Vec<Item>) -> Result<()> {
    if rel.len() > tree::MAX_PATH {
        bail!("{} is nested too deep", dir.display());
    }
    let mut names: Vec<_> = fs::read_dir(dir)
        .and_then(|r| r.map(|e| e.map(|e| e.file_name())).collect())
        .with_context(|| format!("cannot list {}", dir.display()))?;
    names.sort();
    for name in names {
        let abs = dir.join(&name);
        let Some(name) = name.to_str() else {
            bail!("{} has a name that is not UTF-8", abs.display());
        };
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        tree::check_path(&path).map_err(|e| anyhow::anyhow!("{}: {e}", abs.display()))?;
        let meta =
            fs::symlink_metadata(&abs).with_context(|| format!("cannot stat {}", abs.display()))?;
        let ft = meta.file_type();
        let (kind, len, target) = if ft.is_symlink() {
            let t = fs::read_link(&abs)
                .with_context(|| format!("cannot read the link {}", abs.display()))?;
            let Some(t) = t.to_str().map(str::to_string) else {
                bail!("link {} has a target that is not UTF-8", abs.display());
            };
            if tree::check_link(&path, &t).is_err() {
                bail!(
                    "{} is a symbolic link to {t:?}, outside the directory; lmc restores \
                     directories exactly and keeps only links that stay inside \
                     (copy the directory with `cp -rL` to store the files it points to)",
                    abs.display()
                );
            }
            (Kind::Symlink, t.len() as u64, Some(t))
        } else if ft.is_dir() {
            (Kind::Dir, 0, None)
        } else if ft.is_file() {
            (Kind::File, meta.len(), None)
        } else {
            bail!(
                "{} is not a regular file, a directory or a symbolic link",
                abs.display()
            );
        };
        out.push(Item {
            entry: Entry {
                kind,
                format: 0,
                mode: mode_of(&meta),
                path: path.clone(),
                len,
            },
            abs: abs.clone(),
            target,
        });
        if kind == Kind::Dir {
            walk_dir(&abs, &path, out)?;
        }
    }
    Ok(())
}

/// What a piece of the stream is made of.
enum Piece {
    /// `headers[i]`
    Header(usize),
    /// Bytes `range` of `inputs[i]`.
    File(usize, std::ops::Range<usize>),
}

/// `lmc compress DIR`.
pub fn compress(
    input: &Path,
    dest: &Path,
    force: bool,
    options: CompressOptions,
    allow_pickle_calls: bool,
    quiet: bool,
) -> Result<()> {
    let root_meta =
        fs::metadata(input).with_context(|| format!("cannot stat {}", input.display()))?;
    if let (Ok(d), Ok(i)) = (
        dest.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .canonicalize(),
        input.canonicalize(),
    ) && d.starts_with(&i)
    {
        bail!(
            "output {} is inside the directory being compressed",
            dest.display()
        );
    }
    let mut items = walk(input)?;

    let mut headers: Vec<Vec<u8>> = vec![tree::header(mode_of(&root_meta)).to_vec()];
    let mut inputs: Vec<Input> = Vec::new();
    let mut pieces = vec![Piece::Header(0)];
    let mut layout = vec![SegmentSpec {
        kind: SegmentKind::Bytes,
        len: tree::HEADER_LEN as u64,
    }];
    let mut files = 0usize;
    for it in &mut items {
        match it.entry.kind {
            Kind::Dir => {
                headers.push(it.entry.to_bytes());
            }
            Kind::Symlink => {
                let mut h = it.entry.to_bytes();
                h.extend_from_slice(it.target.as_deref().unwrap_or_default().as_bytes());
                headers.push(h);
            }
            Kind::File => {
                files += 1;
                let bytes = Input::open(&it.abs)?;
                let found = lmc_files::detect_member(&it.abs, &bytes, allow_pickle_calls)?;
                if !quiet {
                    for n in &found.notes {
                        eprintln!("lmc: note: {}: {n}", it.abs.display());
                    }
                }
                it.entry.format = found.format.code();
                let file_layout = found.layout;
                // The file may have changed since it was listed.
                it.entry.len = bytes.len() as u64;
                headers.push(it.entry.to_bytes());
                layout.push(SegmentSpec {
                    kind: SegmentKind::Bytes,
                    len: headers.last().unwrap().len() as u64,
                });
                pieces.push(Piece::Header(headers.len() - 1));
                let mut file_layout = file_layout;
                prefix_names(&mut file_layout, &format!("{}:", it.entry.path));
                let mut at = 0usize;
                for s in file_layout {
                    let end = at + s.len as usize;
                    pieces.push(Piece::File(inputs.len(), at..end));
                    layout.push(s);
                    at = end;
                }
                inputs.push(bytes);
                continue;
            }
        }
        layout.push(SegmentSpec {
            kind: SegmentKind::Bytes,
            len: headers.last().unwrap().len() as u64,
        });
        pieces.push(Piece::Header(headers.len() - 1));
    }
    headers.push(tree::END.to_vec());
    layout.push(SegmentSpec {
        kind: SegmentKind::Bytes,
        len: tree::ENTRY_LEN as u64,
    });
    pieces.push(Piece::Header(headers.len() - 1));

    let parts: Vec<&[u8]> = pieces
        .iter()
        .map(|p| match p {
            Piece::Header(i) => &headers[*i][..],
            Piece::File(i, r) => &inputs[*i][r.clone()],
        })
        .collect();
    let total: u64 = layout.iter().map(|s| s.len).sum();
    let mut out = Output::create(dest, input, force)?;
    let start = Instant::now();
    let summary = {
        let bar = Bar::new(total, "compressing", quiet);
        compress_parts(
            &parts,
            &layout,
            None,
            &options,
            &mut out,
            &mut bar.callback(),
        )
        .with_context(|| format!("cannot compress {}", input.display()))?
    };
    out.commit()?;
    let secs = start.elapsed().as_secs_f64();
    let mut text = String::new();
    if !quiet {
        writeln!(
            text,
            "{} -> {}: {} files, {} -> {} (ratio {:.3}) in {:.2} s ({:.0} MB/s)",
            input.display(),
            dest.display(),
            files,
            human(summary.original_len),
            human(summary.compressed_len),
            summary.original_len as f64 / summary.compressed_len.max(1) as f64,
            secs,
            summary.original_len as f64 / 1e6 / secs.max(1e-9)
        )?;
    }
    emit(&text)
}

/// Whether a container holds a directory stream (its first chunk starts
/// with the stream's magic). A first chunk that does not decode says no:
/// decoding the container as a file then reports the damage (and `info`,
/// which reads only the index, still works).
pub fn is_tree(c: &Container<'_>) -> bool {
    let Some(first) = c.segments().first() else {
        return false;
    };
    if first.kind != SegmentKind::Bytes
        || first.len < tree::MAGIC.len() as u64
        || first.chunk_count == 0
    {
        return false;
    }
    let mut buf = Vec::new();
    c.decode_chunk(first.first_chunk, &mut buf).is_ok() && tree::looks_like(&buf)
}

/// Writes a checked stream's contents under `root`.
struct FsSink {
    root: PathBuf,
    file: Option<(BufWriter<File>, PathBuf, u32)>,
    /// Folders and their modes, applied last (a read-only folder must
    /// still take its contents first).
    dirs: Vec<(PathBuf, u32)>,
    links: Vec<(PathBuf, String)>,
}

fn fs_err(path: &Path, what: &str, e: std::io::Error) -> lmc_tensors::Error {
    lmc_tensors::Error::Invalid(format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    let mut p = fs::metadata(path)?.permissions();
    p.set_readonly(mode & 0o200 == 0);
    fs::set_permissions(path, p)
}

impl tree::Sink for FsSink {
    fn dir(&mut self, e: &Entry) -> Result<(), lmc_tensors::Error> {
        let p = self.root.join(&e.path);
        fs::create_dir(&p).map_err(|err| fs_err(&p, "create", err))?;
        self.dirs.push((p, e.mode));
        Ok(())
    }

    fn file_start(&mut self, e: &Entry) -> Result<(), lmc_tensors::Error> {
        let p = self.root.join(&e.path);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(|err| fs_err(&p, "create", err))?;
        self.file = Some((BufWriter::with_capacity(1 << 20, f), p, e.mode));
        Ok(())
    }

    fn file_data(&mut self, data: &[u8]) -> Result<(), lmc_tensors::Error> {
        let (w, p, _) = self.file.as_mut().expect("file_data inside a file");
        w.write_all(data).map_err(|err| fs_err(p, "write", err))
    }

    fn file_end(&mut self) -> Result<(), lmc_tensors::Error> {
        let (w, p, mode) = self.file.take().expect("file_end inside a file");
        let f = w
            .into_inner()
            .map_err(|err| fs_err(&p, "write", err.into_error()))?;
        f.sync_all().map_err(|err| fs_err(&p, "sync", err))?;
        drop(f);
        set_mode(&p, mode).map_err(|err| fs_err(&p, "set the mode of", err))
    }

    fn symlink(&mut self, e: &Entry, target: &str) -> Result<(), lmc_tensors::Error> {
        self.links
            .push((self.root.join(&e.path), target.to_string()));
        Ok(())
    }
}

#[cfg(unix)]
fn make_link(target: &str, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn make_link(_: &str, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "symbolic links are restored on Unix only",
    ))
}

/// Feeds decoded bytes to the stream reader.
struct TreeWriter<S> {
    reader: tree::Reader,
    sink: S,
}

impl<S: tree::Sink> Write for TreeWriter<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.reader
            .feed(buf, &mut self.sink)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks a directory container's stream without writing anything.
pub fn check(c: &Container<'_>, progress: lmc_core::compress::Progress<'_>) -> Result<u64> {
    let mut w = TreeWriter {
        reader: tree::Reader::new(),
        sink: tree::NullSink,
    };
    c.decompress_to(&mut w, progress)?;
    w.reader.finish()?;
    Ok(w.reader.files)
}

/// `lmc decompress` of a directory container into `dest`.
pub fn restore(
    input: &Path,
    c: &Container<'_>,
    dest: &Path,
    force: bool,
    quiet: bool,
) -> Result<()> {
    let exists = fs::symlink_metadata(dest).is_ok();
    if exists && !force {
        bail!(
            "{} already exists (use --force to replace it)",
            dest.display()
        );
    }
    let (parent, name) = lmc_store::folder_and_name(dest);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".lmc-tmp")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    let start = Instant::now();
    let mut w = TreeWriter {
        reader: tree::Reader::new(),
        sink: FsSink {
            root: tmp.path().to_path_buf(),
            file: None,
            dirs: Vec::new(),
            links: Vec::new(),
        },
    };
    {
        let bar = Bar::new(c.header().original_len, "decompressing", quiet);
        c.decompress_to(&mut w, &mut bar.callback())
            .with_context(|| format!("{}", input.display()))?;
    }
    w.reader
        .finish()
        .with_context(|| format!("{}", input.display()))?;
    let root_mode = w.reader.root_mode;
    let files = w.reader.files;
    // Only now, with every byte checked: links, then folder modes deepest
    // first, then the folder goes into place.
    for (p, target) in &w.sink.links {
        make_link(target, p).with_context(|| format!("cannot create the link {}", p.display()))?;
    }
    for (p, mode) in w.sink.dirs.iter().rev() {
        set_mode(p, *mode).with_context(|| format!("cannot set the mode of {}", p.display()))?;
    }
    set_mode(tmp.path(), root_mode)
        .with_context(|| format!("cannot set the mode of {}", tmp.path().display()))?;
    let tmp = tmp.keep();
    let placed = if exists {
        let old = parent.join(format!(".{name}.{}.lmc-old", std::process::id()));
        fs::rename(dest, &old)
            .and_then(|()| fs::rename(&tmp, dest))
            .map(|()| {
                let _ = if old.is_dir() {
                    fs::remove_dir_all(&old)
                } else {
                    fs::remove_file(&old)
                };
            })
    } else {
        fs::rename(&tmp, dest)
    };
    if let Err(e) = placed {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e)
            .with_context(|| format!("cannot move the output into place at {}", dest.display()));
    }
    if !quiet {
        let secs = start.elapsed().as_secs_f64();
        let n = c.header().original_len;
        let mut text = String::new();
        writeln!(
            text,
            "{} -> {}: {} files, {} restored and verified in {:.2} s ({:.0} MB/s)",
            input.display(),
            dest.display(),
            files,
            human(n),
            secs,
            n as f64 / 1e6 / secs.max(1e-9)
        )?;
        emit(&text)?;
    }
    Ok(())
}

/// Bytes `start..start + len` of a container's original, decoding only the
/// chunks that hold them.
fn read_range(c: &Container<'_>, start: u64, len: u64) -> Result<Vec<u8>> {
    let chunks = c.chunks();
    let end = start + len;
    let first = chunks.partition_point(|ch| ch.raw_offset + ch.raw_len as u64 <= start);
    let mut out = Vec::with_capacity(len as usize);
    let mut buf = Vec::new();
    for (i, ch) in chunks.iter().enumerate().skip(first) {
        if ch.raw_offset >= end {
            break;
        }
        c.decode_chunk(i, &mut buf)?;
        let from = start.saturating_sub(ch.raw_offset) as usize;
        let to = ((end - ch.raw_offset) as usize).min(buf.len());
        out.extend_from_slice(&buf[from..to]);
    }
    if out.len() as u64 != len {
        bail!("the directory stream ends at offset {start} inside an entry header");
    }
    Ok(out)
}

/// One entry of a directory container, for `lmc info`.
pub struct FileInfo {
    pub entry: Entry,
    /// Where its header starts and where its contents end in the stream.
    pub start: u64,
    pub end: u64,
}

/// The entries of a directory container, read from their headers alone.
pub fn entries(c: &Container<'_>) -> Result<(u32, Vec<FileInfo>)> {
    let root_mode = tree::parse_header(&read_range(c, 0, tree::HEADER_LEN as u64)?)?;
    let total = c.header().original_len;
    let mut out = Vec::new();
    let mut at = tree::HEADER_LEN as u64;
    loop {
        let fixed = read_range(c, at, tree::ENTRY_LEN as u64)?;
        let path_len = u16::from_le_bytes([fixed[2], fixed[3]]) as u64;
        let head = read_range(c, at, (tree::ENTRY_LEN as u64 + path_len).min(total - at))?;
        let Some((entry, n)) = tree::parse_entry(&head)? else {
            return Ok((root_mode, out));
        };
        let end = (at + n as u64)
            .checked_add(entry.len)
            .filter(|&e| e <= total)
            .ok_or_else(|| {
                anyhow::anyhow!("entry {:?} runs past the end of the stream", entry.path)
            })?;
        out.push(FileInfo {
            entry,
            start: at,
            end,
        });
        at = end;
    }
}
