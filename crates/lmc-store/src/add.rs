//! Adding a snapshot (see the crate documentation for the layout).

use super::*;

impl Store {
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
    /// loop calls instead of writing an uncompressed checkpoint (see
    /// [`Store::add_tensors_background`] for the form that returns at once).
    pub fn add_tensors(
        &mut self,
        step: u64,
        file_name: &str,
        tensors: &[TensorInput<'_>],
        metadata: &BTreeMap<String, String>,
    ) -> Result<&Snapshot> {
        self.add_tensors_with(step, file_name, tensors, metadata, false)
    }

    /// The file of `tensors` (a safetensors header, then their bytes, not
    /// assembled), added plainly or deferred.
    fn add_tensors_with(
        &mut self,
        step: u64,
        file_name: &str,
        tensors: &[TensorInput<'_>],
        metadata: &BTreeMap<String, String>,
        defer: bool,
    ) -> Result<&Snapshot> {
        let (header, layout) = tensors_layout(file_name, tensors, metadata)?;
        let mut parts: Vec<&[u8]> = vec![&header];
        parts.extend(tensors.iter().map(|t| t.data));
        let file = [FileInput::from_parts(file_name, parts, layout, None)];
        if defer {
            self.add_deferred(step, Kind::File, &file)
        } else {
            self.add(step, Kind::File, &file)
        }
    }

    /// Adds a snapshot at `step` made of `files`. The new snapshot is
    /// stored whole, and the snapshot before it (whole until now) is
    /// re-encoded as a delta against it, unless its chain would then hold
    /// `keyframe_every` deltas or more (it stays whole: a keyframe). So a
    /// restore of the newest snapshot decodes one object per file, and of
    /// any other at most `keyframe_every - 1` deltas after that. Commits
    /// atomically: objects first, the manifest last.
    ///
    /// Snapshots an earlier [`Store::add_deferred`] left whole are
    /// re-encoded first ([`Store::finish_deferred`]).
    pub fn add(&mut self, step: u64, kind: Kind, files: &[FileInput<'_>]) -> Result<&Snapshot> {
        self.finish_deferred()?;
        self.add_with(step, kind, files, false)
    }

    /// [`Store::add`] that leaves the parent whole: the new snapshot is
    /// committed as soon as its own objects are written (about the time of
    /// compressing it), and the parent, marked `deferred` in the manifest,
    /// is re-encoded as a delta by a later [`Store::finish_deferred`] (which
    /// a training loop runs on another thread, and every [`Store::add`]
    /// runs first). Until then the store holds two whole snapshots, each
    /// restorable with one decode; if the process ends first, the next
    /// writer finishes the work.
    pub fn add_deferred(
        &mut self,
        step: u64,
        kind: Kind,
        files: &[FileInput<'_>],
    ) -> Result<&Snapshot> {
        self.add_with(step, kind, files, true)
    }

    /// [`Store::add_deferred`] for tensors in memory (see
    /// [`Store::add_tensors`]).
    pub fn add_tensors_deferred(
        &mut self,
        step: u64,
        file_name: &str,
        tensors: &[TensorInput<'_>],
        metadata: &BTreeMap<String, String>,
    ) -> Result<&Snapshot> {
        self.add_tensors_with(step, file_name, tensors, metadata, true)
    }

    /// Re-encodes each snapshot a deferred add left whole as a delta
    /// against the snapshot after it, oldest first, one commit each, unless
    /// its chain would then reach `keyframe_every` deltas (it stays whole, a
    /// keyframe). Returns how many were re-encoded. Each snapshot stays
    /// restorable throughout: an interrupted call leaves the rest marked
    /// for the next one.
    pub fn finish_deferred(&mut self) -> Result<usize> {
        self.check_writable()?;
        let mut done = 0;
        while let Some(pi) = self.manifest.snapshots.iter().position(|s| s.deferred) {
            let mut m = self.manifest.clone();
            m.generation += 1;
            m.snapshots[pi].deferred = false;
            let mut created = self.cleanup();
            if pi + 1 < m.snapshots.len() && self.may_rewrite_parent(pi) {
                let next = &self.manifest.snapshots[pi + 1];
                let (step, kind, entries) = (next.step, next.kind, next.files.clone());
                let rewritten = self.restore_files(step).and_then(|restored| {
                    let inputs: Vec<FileInput<'_>> = restored
                        .iter()
                        .map(|f| FileInput::from_bytes(f.path.clone(), &f.bytes, f.mode))
                        .collect();
                    self.rewrite_parent(pi, step, kind, &inputs, &entries, &mut created)
                });
                match rewritten {
                    Ok(s) => {
                        m.snapshots[pi] = s;
                        done += 1;
                    }
                    // As in `add`: what cannot be restored stays as it is.
                    Err(e @ Error::Needs { .. }) if self.go_on() => self.tell(
                        "warning",
                        &format!(
                            "{e}; step {} stays whole (not re-encoded against step {step})",
                            m.snapshots[pi].step
                        ),
                    ),
                    Err(e) => return Err(e),
                }
                failpoint("finish:parent-rewritten");
            }
            m.set_depths();
            self.commit(m)?;
            created.keep();
        }
        Ok(done)
    }

    fn add_with(
        &mut self,
        step: u64,
        kind: Kind,
        files: &[FileInput<'_>],
        defer: bool,
    ) -> Result<&Snapshot> {
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
            let covered: u64 = f.layout.iter().map(|s| s.len).sum();
            if f.parts.len() != f.layout.len() || covered != f.len() {
                return Err(Error::Invalid(format!(
                    "{:?}: {} parts of {} bytes for a layout of {} segments and {covered} bytes",
                    f.path,
                    f.parts.len(),
                    f.len(),
                    f.layout.len()
                )));
            }
        }
        let generation = self.manifest.generation + 1;
        let mut created = self.cleanup();
        let mut entries = Vec::with_capacity(files.len());
        let plan = sources::plan(files);
        for (i, f) in files.iter().enumerate() {
            let name = format!("{step:012}-{i:04}-g{generation}.lmc");
            let srcs = sources::inputs(files, &plan[i]);
            entries.push(self.write_object(f, None, &srcs, &name, &mut created)?);
        }
        failpoint("add:objects-written");
        let mut m = self.manifest.clone();
        if let Some(pi) = m.snapshots.len().checked_sub(1)
            && self.may_rewrite_parent(pi)
        {
            if defer {
                m.snapshots[pi].deferred = true;
            } else {
                match self.rewrite_parent(pi, step, kind, files, &entries, &mut created) {
                    Ok(rewritten) => {
                        m.snapshots[pi] = rewritten;
                        failpoint("add:parent-rewritten");
                    }
                    // A parent that cannot be restored (a damaged or missing
                    // object) stays as it is: new snapshots still go in, and
                    // verify names the damage.
                    Err(e @ Error::Needs { .. }) if self.go_on() => {
                        self.tell(
                            "warning",
                            &format!(
                                "{e}; step {} stays as it is (not re-encoded against step {step})",
                                m.snapshots[pi].step
                            ),
                        );
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        m.generation = generation;
        m.snapshots.push(Snapshot {
            step,
            kind,
            parent: None,
            deferred: false,
            depth: 0,
            added: unix_now(),
            files: entries,
        });
        m.set_depths();
        self.commit(m)?;
        created.keep();
        failpoint("add:committed");
        Ok(self.manifest.snapshots.last().expect("just added"))
    }

    /// Whether the snapshot at `pi` (the newest) may become a delta against
    /// a new one: every chain through it then stays under the bound.
    fn may_rewrite_parent(&self, pi: usize) -> bool {
        let k = self.manifest.keyframe_every;
        let below = self
            .manifest
            .dependents(pi)
            .iter()
            .map(|&(_, d)| d)
            .max()
            .unwrap_or(0);
        // It would be 1 delta from the new snapshot, its dependents `below` more.
        below + 1 < k
    }

    /// The snapshot at `pi`, re-encoded as a reverse delta against the new
    /// snapshot (`files`, just written as `entries`): each of its files
    /// with a counterpart whose tensors match is coded as its XOR with it;
    /// the others are stored whole (an object that already was is kept).
    /// Everything the container held besides matching tensors (headers,
    /// metadata, tensors that changed shape) is stored in the delta as it
    /// is, so the old file is recovered whole from it and the new one.
    fn rewrite_parent(
        &self,
        pi: usize,
        step: u64,
        kind: Kind,
        files: &[FileInput<'_>],
        entries: &[FileEntry],
        created: &mut Cleanup,
    ) -> Result<Snapshot> {
        let p = &self.manifest.snapshots[pi];
        let generation = self.manifest.generation + 1;
        // The parent as it is: whole in a store of this layout (one decode).
        let old_files = self.restore_files(p.step)?;
        let inputs: Vec<FileInput<'_>> = old_files
            .iter()
            .map(|of| FileInput::from_bytes(of.path.clone(), &of.bytes, of.mode))
            .collect();
        let plan = sources::plan(&inputs);
        let mut new_entries = Vec::with_capacity(old_files.len());
        let mut any_delta = false;
        for (fi, ((of, old_entry), input)) in
            old_files.iter().zip(&p.files).zip(&inputs).enumerate()
        {
            let base = counterpart(
                &files.iter().zip(entries).collect::<Vec<_>>(),
                |(f, _)| &f.path,
                kind,
                p.kind,
                &of.path,
            )
            .map(|&(f, e)| (f, e));
            let whole = base.map(|(f, _)| f.whole());
            let delta = base
                .zip(whole.as_deref())
                .map(|((f, _), bytes)| DeltaBase::matching(bytes, &f.layout, &input.layout))
                .filter(|d| d.matched() > 0);
            match delta {
                None if old_entry.base.is_none() => new_entries.push(old_entry.clone()),
                _ => {
                    let name = format!("{:012}-{fi:04}-g{generation}.lmc", p.step);
                    let srcs = sources::inputs(&inputs, &plan[fi]);
                    let e = self.write_object(input, delta.as_ref(), &srcs, &name, created)?;
                    if let (Some(b), Some((_, be))) = (&e.base, base)
                        && *b != be.hash
                    {
                        return Err(Error::Corrupt(format!(
                            "step {step}: {:?} hashes to {b} as a base, its object says {}",
                            be.path, be.hash
                        )));
                    }
                    any_delta |= e.base.is_some();
                    new_entries.push(e);
                }
            }
        }
        Ok(Snapshot {
            step: p.step,
            kind: p.kind,
            parent: any_delta.then_some(step),
            deferred: false,
            depth: 0,
            added: p.added,
            files: new_entries,
        })
    }

    /// The delta of `f` against `base` (a file of another snapshot), if any
    /// of its tensors match.
    pub(crate) fn delta_against<'b>(
        f: &FileInput<'_>,
        base: Option<&'b RestoredFile>,
        base_layout: Option<&[SegmentSpec]>,
    ) -> Option<DeltaBase<'b>> {
        base.zip(base_layout)
            .map(|(b, bl)| DeltaBase::matching(&b.bytes, bl, &f.layout))
            .filter(|d| d.matched() > 0)
    }

    /// Compresses one file into `objects/name` (a delta if `delta` is
    /// given; its derived tensors may take their sources from `sources`,
    /// other files of its snapshot), durably, and describes it.
    pub(crate) fn write_object(
        &self,
        f: &FileInput<'_>,
        delta: Option<&DeltaBase<'_>>,
        sources: &[lmc_core::SourceInput<'_>],
        name: &str,
        created: &mut Cleanup,
    ) -> Result<FileEntry> {
        self.tell(
            "encoding",
            &format!(
                "{name}: {}{}",
                f.path,
                delta.map_or(String::new(), |d| format!(
                    " (delta, {} tensors against another snapshot)",
                    d.matched()
                ))
            ),
        );
        let summary = self.put_object(name, |w| {
            lmc_core::compress_with_sources(
                &f.parts,
                &f.layout,
                delta,
                sources,
                &self.options,
                w,
                &mut |_| self.go_on(),
            )
            .map_err(|source| Error::Codec {
                context: format!("cannot compress {}", f.path),
                source,
            })
        })?;
        created.push(name);
        Ok(FileEntry {
            path: f.path.clone(),
            len: summary.original_len,
            hash: hex(summary.original_hash),
            object: name.to_string(),
            stored: summary.compressed_len,
            base: summary.base_hash.map(hex),
            mode: f.mode.map(|m| m & lmc_files::MODE_MASK),
            sources: summary
                .sources
                .iter()
                .map(|&k| sources[k].name.clone())
                .collect(),
        })
    }
}

/// The safetensors header of `tensors` and the layout of the file it
/// starts (the header, then each tensor's bytes), each tensor's length
/// checked against its shape.
pub(crate) fn tensors_layout(
    file_name: &str,
    tensors: &[TensorInput<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<SegmentSpec>)> {
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
    let mut layout = vec![SegmentSpec {
        kind: SegmentKind::Bytes,
        len: header.len() as u64,
    }];
    for (t, info) in tensors.iter().zip(infos) {
        let want = info
            .shape
            .iter()
            .try_fold(info.dtype.width() as u64, |a, &d| a.checked_mul(d));
        if want != Some(t.data.len() as u64) {
            return Err(Error::Invalid(format!(
                "tensor {:?}: {} bytes of data for shape {:?} of {}",
                t.name,
                t.data.len(),
                t.shape,
                t.dtype
            )));
        }
        layout.push(SegmentSpec {
            kind: SegmentKind::Tensor {
                name: info.name,
                dtype: info.dtype,
                shape: info.shape,
            },
            len: t.data.len() as u64,
        });
    }
    Ok((header, layout))
}
