//! Restoring a snapshot: each file decoded through its chain of deltas.

use super::*;

impl Store {
    /// Decodes one file into `out` (resized to its length), given its base
    /// if it is a delta: the base's bytes and their XXH3-128, known because
    /// the base was just decoded and checked. Returns the XXH3-128.
    pub(crate) fn decode_into(
        &self,
        entry: &FileEntry,
        base: Option<(&[u8], u128)>,
        sources: &[(&[u8], u128)],
        out: &mut Vec<u8>,
    ) -> Result<u128> {
        let bytes = self.read_object(entry)?;
        let c = self.container(entry, &bytes[..], base, sources)?;
        let len = usize::try_from(entry.len)
            .map_err(|_| Error::Corrupt(format!("{}: {} bytes", entry.object, entry.len)))?;
        // Every byte is written by the decoder; a buffer reused along a
        // chain is only resized, not cleared.
        out.resize(len, 0);
        c.decompress_into(out, &mut |_| self.go_on())
            .map_err(self.codec_err(entry))?;
        Ok(c.header().original_hash)
    }

    /// Decodes one file as [`Store::decode_into`] does, streaming it to `out`.
    fn decode_to(
        &self,
        entry: &FileEntry,
        base: Option<(&[u8], u128)>,
        sources: &[(&[u8], u128)],
        out: &mut (dyn Write + Send),
    ) -> Result<()> {
        let bytes = self.read_object(entry)?;
        let c = self.container(entry, &bytes[..], base, sources)?;
        c.decompress_to(out, &mut |_| self.go_on())
            .map_err(self.codec_err(entry))
    }

    /// The object of `entry`, read whole (or as the object reader gives
    /// it) and checked against its length.
    fn read_object(&self, entry: &FileEntry) -> Result<ObjectBytes> {
        let path = self.objects().join(&entry.object);
        self.tell("decoding", &format!("{}: {}", entry.object, entry.path));
        let bytes = self.object_bytes(&entry.object)?;
        if bytes.len() as u64 != entry.stored {
            return Err(Error::Corrupt(format!(
                "{}: {} bytes, the manifest says {}",
                path.display(),
                bytes.len(),
                entry.stored
            )));
        }
        Ok(bytes)
    }

    fn codec_err(&self, entry: &FileEntry) -> impl Fn(lmc_core::Error) -> Error {
        let path = self.objects().join(&entry.object);
        let file = entry.path.clone();
        move |source| Error::Codec {
            context: format!("{} ({file})", path.display()),
            source,
        }
    }

    /// The container in `bytes` (the object of `entry`), checked against
    /// the manifest and given its base and its sources (the files
    /// `entry.sources` names, decoded, with their hashes).
    fn container<'a>(
        &self,
        entry: &FileEntry,
        bytes: &'a [u8],
        base: Option<(&'a [u8], u128)>,
        sources: &[(&'a [u8], u128)],
    ) -> Result<Container<'a>> {
        let path = self.objects().join(&entry.object);
        let ctx = self.codec_err(entry);
        let c = Container::open(bytes).map_err(&ctx)?;
        if hex(c.header().original_hash) != entry.hash {
            return Err(Error::Corrupt(format!(
                "{}: holds a file with hash {:032x}, the manifest says {}",
                path.display(),
                c.header().original_hash,
                entry.hash
            )));
        }
        let c = match (base, entry.base.is_some()) {
            (Some((b, hash)), true) => c.with_base_hashed(b, hash).map_err(&ctx)?,
            (None, false) => c,
            _ => {
                return Err(Error::Corrupt(format!(
                    "{}: the manifest and the object disagree on whether it is a delta",
                    path.display()
                )));
            }
        };
        let recorded: Vec<&str> = c.source_files().iter().map(|f| f.name.as_str()).collect();
        if recorded != entry.sources {
            return Err(Error::Corrupt(format!(
                "{}: takes sources from {recorded:?}, the manifest says {:?}",
                path.display(),
                entry.sources
            )));
        }
        let c = if sources.is_empty() {
            c
        } else {
            // Each file's length and hash checked before it is used.
            c.with_sources_hashed(sources).map_err(&ctx)?
        };
        if c.header().original_len != entry.len {
            return Err(Error::Corrupt(format!(
                "{}: holds a file of {} bytes, the manifest says {}",
                path.display(),
                c.header().original_len,
                entry.len
            )));
        }
        Ok(c)
    }

    /// Decodes one file into a new buffer (see [`Store::decode_into`]).
    pub(crate) fn decode(
        &self,
        entry: &FileEntry,
        base: Option<(&[u8], u128)>,
        sources: &[(&[u8], u128)],
    ) -> Result<(Vec<u8>, u128)> {
        let mut out = Vec::new();
        let hash = self.decode_into(entry, base, sources, &mut out)?;
        Ok((out, hash))
    }

    /// The chain of file `path` of snapshot `idx`: the step and entry of
    /// each object to decode, the file itself first, the whole one last.
    pub(crate) fn chain<'m>(
        m: &'m Manifest,
        idx: usize,
        path: &str,
    ) -> Result<Vec<(u64, &'m FileEntry)>> {
        let snaps = &m.snapshots;
        let mut s = &snaps[idx];
        let mut e = s
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| Error::Corrupt(format!("step {}: no file {path:?}", s.step)))?;
        let mut chain = vec![(s.step, e)];
        // The manifest's checks guarantee each delta's parent exists and
        // holds its base, and that depths fall along the chain (no loop).
        while e.base.is_some() {
            let p = s
                .parent
                .and_then(|p| m.find(p))
                .map(|pi| &snaps[pi])
                .ok_or_else(|| {
                    Error::Corrupt(format!("step {}: a delta with no parent listed", s.step))
                })?;
            e = counterpart(&p.files, |f| &f.path, p.kind, s.kind, &e.path).ok_or_else(|| {
                Error::Corrupt(format!(
                    "step {}: {:?} has no base in step {}",
                    s.step, e.path, p.step
                ))
            })?;
            s = p;
            chain.push((s.step, e));
            if chain.len() > snaps.len() {
                return Err(Error::Corrupt(format!(
                    "step {}: its chain of deltas loops",
                    snaps[idx].step
                )));
            }
        }
        Ok(chain)
    }

    /// Decodes file `path` of snapshot `idx`: the whole object its chain
    /// ends in, then each delta back to it, in two buffers used in turn.
    /// An object that cannot be read or decoded is named, with the step
    /// that holds it, in an [`Error::Needs`].
    ///
    /// `siblings`: files of snapshot `idx` already decoded (with their
    /// hashes), which a link of that snapshot takes its sources from
    /// rather than decoding them again.
    fn restore_file(
        &self,
        m: &Manifest,
        idx: usize,
        path: &str,
        siblings: &[(RestoredFile, u128)],
    ) -> Result<(RestoredFile, u128)> {
        let chain = Self::chain(m, idx, path)?;
        let (cur, hash) = self.decode_links(m, idx, &chain, siblings)?;
        let entry = chain[0].1;
        Ok((
            RestoredFile {
                path: entry.path.clone(),
                bytes: cur,
                mode: entry.mode,
            },
            hash,
        ))
    }

    /// The sources of `entry`, a file of the snapshot at `of_step`: taken
    /// from `siblings` when that is the snapshot `idx` being restored,
    /// else restored (each through its own chain; a source takes no
    /// sources itself, as the manifest's checks guarantee).
    fn sources_of<'s>(
        &self,
        m: &Manifest,
        idx: usize,
        of_step: u64,
        entry: &FileEntry,
        siblings: &'s [(RestoredFile, u128)],
    ) -> Result<Vec<(std::borrow::Cow<'s, [u8]>, u128)>> {
        let step = m.snapshots[idx].step;
        let of = m.find(of_step).ok_or(Error::NoSuchStep(of_step))?;
        entry
            .sources
            .iter()
            .map(|src| {
                if of_step == step
                    && let Some((f, h)) = siblings.iter().find(|(f, _)| &f.path == src)
                {
                    return Ok((std::borrow::Cow::Borrowed(f.bytes.as_slice()), *h));
                }
                let (f, h) = self.restore_file(m, of, src, &[])?;
                Ok((std::borrow::Cow::Owned(f.bytes), h))
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| match e {
                // Named as the source of `entry`, with what failed.
                Error::Needs {
                    of_step: s,
                    path,
                    object,
                    source,
                    ..
                } => Error::Needs {
                    step,
                    of_step: s,
                    path: format!("{path}, a source of {}", entry.path),
                    object,
                    source,
                },
                other => other,
            })
    }

    /// [`Store::restore_file`] streamed to `out`: the links before the last
    /// decoded in memory, the last one written as it is decoded (so a
    /// whole snapshot, the newest, goes straight from its object to `out`
    /// as `lmc decompress` does).
    fn restore_file_to(
        &self,
        m: &Manifest,
        idx: usize,
        path: &str,
        out: &mut (dyn Write + Send),
    ) -> Result<()> {
        let chain = Self::chain(m, idx, path)?;
        let (base, hash) = self.decode_links(m, idx, &chain[1..], &[])?;
        let (of_step, e) = chain[0];
        let base = (chain.len() > 1).then_some((base.as_slice(), hash));
        let sources = self.sources_of(m, idx, of_step, e, &[])?;
        let sources: Vec<(&[u8], u128)> = sources.iter().map(|(b, h)| (&b[..], *h)).collect();
        self.decode_to(e, base, &sources, out)
            .map_err(|source| needs(m.snapshots[idx].step, of_step, e, source))
    }

    /// Decodes `links` (a chain, the file wanted first, the whole object
    /// last): the bytes of the first and their hash (empty for no links).
    fn decode_links(
        &self,
        m: &Manifest,
        idx: usize,
        links: &[(u64, &FileEntry)],
        siblings: &[(RestoredFile, u128)],
    ) -> Result<(Vec<u8>, u128)> {
        let step = m.snapshots[idx].step;
        let mut cur: Vec<u8> = Vec::new();
        let mut next: Vec<u8> = Vec::new();
        let mut hash = 0u128;
        for (i, &(of_step, e)) in links.iter().rev().enumerate() {
            let base = (i > 0).then_some((cur.as_slice(), hash));
            let sources = self.sources_of(m, idx, of_step, e, siblings)?;
            let sources: Vec<(&[u8], u128)> = sources.iter().map(|(b, h)| (&b[..], *h)).collect();
            hash = self
                .decode_into(e, base, &sources, &mut next)
                .map_err(|source| needs(step, of_step, e, source))?;
            std::mem::swap(&mut cur, &mut next);
        }
        Ok((cur, hash))
    }

    /// Every file of the snapshot at `step`, decoded and checked.
    pub fn restore_files(&self, step: u64) -> Result<Vec<RestoredFile>> {
        Ok(self.retrying(|m| self.restore_files_in(m, step))?.1)
    }

    /// The kind and the files of the snapshot at `step` of `m`.
    fn restore_files_in(&self, m: &Manifest, step: u64) -> Result<(Kind, Vec<RestoredFile>)> {
        let idx = m.find(step).ok_or(Error::NoSuchStep(step))?;
        let s = &m.snapshots[idx];
        // Files that take no sources first, so that those that do take
        // them from here: each file is decoded once.
        let mut done: Vec<(RestoredFile, u128)> = Vec::with_capacity(s.files.len());
        for f in s.files.iter().filter(|f| f.sources.is_empty()) {
            done.push(self.restore_file(m, idx, &f.path, &[])?);
        }
        for f in s.files.iter().filter(|f| !f.sources.is_empty()) {
            let restored = self.restore_file(m, idx, &f.path, &done)?;
            done.push(restored);
        }
        // In the snapshot's order.
        let files = s
            .files
            .iter()
            .map(|f| {
                let k = done
                    .iter()
                    .position(|(d, _)| d.path == f.path)
                    .expect("every file restored");
                done.swap_remove(k).0
            })
            .collect();
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
        enum Restored {
            File(tempfile::NamedTempFile),
            Dir(Vec<RestoredFile>),
        }
        let restored = self.retrying(|m| {
            let idx = m.find(step).ok_or(Error::NoSuchStep(step))?;
            let s = &m.snapshots[idx];
            match s.kind {
                Kind::File => {
                    let f = &s.files[0];
                    if out.is_dir() {
                        return Err(Error::Invalid(format!(
                            "{} is a directory; the snapshot is a file",
                            out.display()
                        )));
                    }
                    // Written as it is decoded, under a temporary name
                    // (removed if anything fails), synced, then renamed.
                    let (tmp, _) = temp_beside(out).map_err(|e| Error::io(out, e))?;
                    let mut w = BufWriter::with_capacity(1 << 20, tmp);
                    self.restore_file_to(m, idx, &f.path, &mut w)?;
                    let tmp = w.into_inner().map_err(|e| Error::io(out, e.into_error()))?;
                    tmp.as_file().sync_all().map_err(|e| Error::io(out, e))?;
                    set_mode(tmp.path(), f.mode)?;
                    Ok(Restored::File(tmp))
                }
                Kind::Dir => Ok(Restored::Dir(self.restore_files_in(m, step)?.1)),
            }
        })?;
        match restored {
            Restored::File(tmp) => {
                tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
            }
            Restored::Dir(files) => {
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

/// The error of a restore of `step` that failed on the object of `entry`,
/// which belongs to `of_step`.
fn needs(step: u64, of_step: u64, entry: &FileEntry, source: Error) -> Error {
    Error::Needs {
        step,
        of_step,
        path: entry.path.clone(),
        object: entry.object.clone(),
        source: Box::new(source),
    }
}
