//! Taking snapshots out of a store, `prune` (keep the last few, and every
//! M-th step) and `remove` (one step), and `convert` (re-encode a store
//! written before reverse deltas into today's layout). All three keep
//! every chain whole by re-encoding a kept snapshot whose parent changes,
//! and commit atomically (objects first, the manifest last).

use crate::manifest::{Manifest, Snapshot, counterpart};
use crate::{Error, FileInput, RestoredFile, Result, Store, failpoint, layout_for};

/// What [`Store::prune`], [`Store::remove`] or [`Store::convert`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<u64>,
    /// Kept snapshots re-encoded because their parent was removed (or, for
    /// a conversion, changed).
    pub rebuilt: Vec<u64>,
    pub stored_before: u64,
    pub stored_after: u64,
}

impl Store {
    /// Removes snapshots, keeping the last `keep_last` and, with
    /// `keep_every`, those whose step is a multiple of it. A kept snapshot
    /// whose parent goes is re-encoded against the nearest kept snapshot on
    /// the same side (or whole, where that would make a chain longer than
    /// the bound), so every chain stays whole. Commits atomically.
    pub fn prune(&mut self, keep_last: usize, keep_every: Option<u64>) -> Result<PruneReport> {
        self.check_writable()?;
        if keep_last == 0 {
            return Err(Error::Invalid("--keep-last must be at least 1".into()));
        }
        if keep_every == Some(0) {
            return Err(Error::Invalid("--keep-every must be at least 1".into()));
        }
        let n = self.manifest.snapshots.len();
        let keep: Vec<bool> = self
            .manifest
            .snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| i + keep_last >= n || keep_every.is_some_and(|m| s.step % m == 0))
            .collect();
        self.retain(&keep)
    }

    /// Removes the snapshot at `step` (one added by mistake, say),
    /// re-encoding the snapshot coded against it, as [`Store::prune`] does.
    /// Removing the only snapshot leaves an empty store, which works as a
    /// new one does. Commits atomically.
    pub fn remove(&mut self, step: u64) -> Result<PruneReport> {
        self.check_writable()?;
        let idx = self.manifest.find(step).ok_or(Error::NoSuchStep(step))?;
        let keep: Vec<bool> = (0..self.manifest.snapshots.len())
            .map(|i| i != idx)
            .collect();
        self.retain(&keep)
    }

    /// Re-encodes the store into the layout [`Store::add`] writes: the
    /// newest snapshot whole, each other a delta against the one after it,
    /// with a whole snapshot where a chain would otherwise reach
    /// `keyframe_every` deltas. For a store written by an lmc from before
    /// reverse deltas (whose restores decode every delta since the last
    /// keyframe); a store already in this layout is left as it is. Commits
    /// atomically.
    pub fn convert(&mut self) -> Result<PruneReport> {
        self.check_writable()?;
        let snaps = &self.manifest.snapshots;
        let k = self.manifest.keyframe_every;
        let n = snaps.len();
        let mut parents: Vec<Option<usize>> = vec![None; n];
        let mut depth = 0u32;
        for i in (0..n.saturating_sub(1)).rev() {
            if depth + 1 < k {
                parents[i] = Some(i + 1);
                depth += 1;
            } else {
                depth = 0;
            }
        }
        let plan: Vec<(usize, Option<usize>)> = parents.into_iter().enumerate().collect();
        self.relayout(&plan, "convert:objects-written")
    }

    /// Keeps the snapshots whose `keep` is true and commits: a kept delta
    /// whose parent goes is re-encoded against the nearest kept snapshot on
    /// the side of its old parent (restored through the old chains, still
    /// on disk), or whole.
    fn retain(&mut self, keep: &[bool]) -> Result<PruneReport> {
        // Its layout decisions assume the store's own (no deferred work).
        self.finish_deferred()?;
        let m = &self.manifest;
        let snaps = &m.snapshots;
        let k = m.keyframe_every;
        let kept: Vec<usize> = (0..snaps.len()).filter(|&i| keep[i]).collect();
        // Each kept snapshot's new parent (an index into `snaps`), and
        // whether it is new (the snapshot must be re-encoded).
        let mut parent: Vec<Option<usize>> = vec![None; snaps.len()];
        let mut changed: Vec<bool> = vec![false; snaps.len()];
        for (ki, &i) in kept.iter().enumerate() {
            let Some(pi) = snaps[i].parent.and_then(|p| m.find(p)) else {
                continue;
            };
            if keep[pi] {
                parent[i] = Some(pi);
            } else {
                changed[i] = true;
                parent[i] = if pi > i {
                    kept.get(ki + 1).copied()
                } else {
                    ki.checked_sub(1).map(|j| kept[j])
                };
            }
        }
        // A new parent that would make a chain too long (or loop) is dropped:
        // that snapshot is stored whole. (A chain this long made only of
        // links that were there already is left: the bound was lowered
        // since it was written.)
        let cut = |parent: &[Option<usize>]| -> Option<usize> {
            kept.iter().find_map(|&start| {
                let mut i = start;
                let mut d = 0u32;
                let mut link = None;
                while let Some(p) = parent[i] {
                    if changed[i] && link.is_none() {
                        link = Some(i);
                    }
                    d += 1;
                    if d as usize > snaps.len() {
                        break;
                    }
                    i = p;
                }
                link.filter(|_| d >= k)
            })
        };
        while let Some(i) = cut(&parent) {
            parent[i] = None;
        }
        self.relayout_kept(&kept, &parent)
    }

    fn relayout_kept(&mut self, kept: &[usize], parent: &[Option<usize>]) -> Result<PruneReport> {
        let plan: Vec<(usize, Option<usize>)> = kept.iter().map(|&i| (i, parent[i])).collect();
        self.relayout(&plan, "prune:objects-written")
    }

    /// Commits the snapshots `plan` lists (indices into the current list,
    /// in order), each with its parent (an index, or none for whole). One
    /// whose parent changes is re-encoded against it: both are restored
    /// through the old chains, still on disk, and the base is the same
    /// content whatever becomes of its own object. The others keep their
    /// objects.
    fn relayout(&mut self, plan: &[(usize, Option<usize>)], point: &str) -> Result<PruneReport> {
        let snaps = &self.manifest.snapshots;
        let mut report = PruneReport {
            stored_before: snaps.iter().map(Snapshot::stored_len).sum(),
            ..Default::default()
        };
        let listed: std::collections::HashSet<usize> = plan.iter().map(|&(i, _)| i).collect();
        report.removed = (0..snaps.len())
            .filter(|i| !listed.contains(i))
            .map(|i| snaps[i].step)
            .collect();
        let generation = self.manifest.generation + 1;
        let mut created = self.cleanup();
        let mut out: Vec<Snapshot> = Vec::with_capacity(plan.len());
        // The last snapshot restored, kept: going from the newest down, it
        // is the base of the next one re-encoded.
        let mut cache: Option<(u64, Vec<RestoredFile>)> = None;
        fn restore(
            store: &Store,
            cache: &mut Option<(u64, Vec<RestoredFile>)>,
            step: u64,
        ) -> Result<Vec<RestoredFile>> {
            match cache.take() {
                Some((s, files)) if s == step => Ok(files),
                _ => store.restore_files(step),
            }
        }
        let mut rebuilt: Vec<(usize, Snapshot)> = Vec::new();
        for &(i, p) in plan.iter().rev() {
            let s = &snaps[i];
            let old_parent = s.parent.and_then(|ps| self.manifest.find(ps));
            if old_parent == p {
                continue;
            }
            let files = restore(self, &mut cache, s.step)?;
            let base_files = match p {
                Some(b) => Some(restore(self, &mut cache, snaps[b].step)?),
                None => None,
            };
            let mut entries = Vec::with_capacity(files.len());
            let inputs: Vec<FileInput<'_>> = files
                .iter()
                .map(|f| FileInput::from_bytes(f.path.clone(), &f.bytes, f.mode))
                .collect();
            let plan = crate::sources::plan(&inputs);
            for (fi, (f, input)) in files.iter().zip(&inputs).enumerate() {
                let base = p.zip(base_files.as_ref()).and_then(|(b, bf)| {
                    counterpart(bf, |x| &x.path, snaps[b].kind, s.kind, &f.path)
                });
                let base_layout = base.map(|b| layout_for(&b.bytes));
                let delta = Store::delta_against(input, base, base_layout.as_deref());
                let name = format!("{:012}-{fi:04}-g{generation}.lmc", s.step);
                let srcs = crate::sources::inputs(&inputs, &plan[fi]);
                entries.push(self.write_object(
                    input,
                    delta.as_ref(),
                    &srcs,
                    &name,
                    &mut created,
                )?);
            }
            drop(inputs);
            let is_delta = entries.iter().any(|e| e.base.is_some());
            rebuilt.push((
                i,
                Snapshot {
                    step: s.step,
                    kind: s.kind,
                    parent: p.filter(|_| is_delta).map(|b| snaps[b].step),
                    deferred: false,
                    depth: 0,
                    added: s.added,
                    files: entries,
                },
            ));
            cache = Some((s.step, files));
        }
        failpoint(point);
        for &(i, p) in plan {
            match rebuilt.iter().position(|(j, _)| *j == i) {
                Some(r) => out.push(rebuilt.swap_remove(r).1),
                None => {
                    let mut s = snaps[i].clone();
                    s.parent = p.map(|b| snaps[b].step);
                    out.push(s);
                }
            }
        }
        report.rebuilt = plan
            .iter()
            .filter(|&&(i, p)| snaps[i].parent.and_then(|ps| self.manifest.find(ps)) != p)
            .map(|&(i, _)| snaps[i].step)
            .collect();
        report.stored_after = out.iter().map(Snapshot::stored_len).sum();
        if report.removed.is_empty() && report.rebuilt.is_empty() {
            // Nothing to change (a store already in this layout).
            return Ok(report);
        }
        let mut m: Manifest = self.manifest.clone();
        m.generation = generation;
        m.snapshots = out;
        m.set_depths();
        self.commit(m)?;
        created.keep();
        Ok(report)
    }
}
