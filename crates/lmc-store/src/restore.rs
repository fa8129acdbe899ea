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
        out: &mut Vec<u8>,
    ) -> Result<u128> {
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
        let len = usize::try_from(entry.len)
            .map_err(|_| Error::Corrupt(format!("{}: {} bytes", path.display(), entry.len)))?;
        // Every byte is written by the decoder; a buffer reused along a
        // chain is only resized, not cleared.
        out.resize(len, 0);
        c.decompress_into(out, &mut |_| self.go_on()).map_err(ctx)?;
        Ok(c.header().original_hash)
    }

    /// Decodes one file into a new buffer (see [`Store::decode_into`]).
    pub(crate) fn decode(
        &self,
        entry: &FileEntry,
        base: Option<(&[u8], u128)>,
    ) -> Result<(Vec<u8>, u128)> {
        let mut out = Vec::new();
        let hash = self.decode_into(entry, base, &mut out)?;
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
    fn restore_file(&self, m: &Manifest, idx: usize, path: &str) -> Result<RestoredFile> {
        let chain = Self::chain(m, idx, path)?;
        let step = m.snapshots[idx].step;
        let mut cur: Vec<u8> = Vec::new();
        let mut next: Vec<u8> = Vec::new();
        let mut hash = 0u128;
        for (i, &(of_step, e)) in chain.iter().rev().enumerate() {
            let base = (i > 0).then_some((cur.as_slice(), hash));
            hash = self
                .decode_into(e, base, &mut next)
                .map_err(|source| Error::Needs {
                    step,
                    of_step,
                    path: e.path.clone(),
                    object: e.object.clone(),
                    source: Box::new(source),
                })?;
            std::mem::swap(&mut cur, &mut next);
        }
        let entry = chain[0].1;
        Ok(RestoredFile {
            path: entry.path.clone(),
            bytes: cur,
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
