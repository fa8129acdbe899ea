//! Taking snapshots out of a store: `prune` (keep the last few, and every
//! M-th step) and `remove` (one step). Both keep every chain whole by
//! re-encoding a kept snapshot whose parent goes, and commit atomically.

use crate::manifest::{Kind, Snapshot, counterpart};
use crate::{Cleanup, Error, FileInput, Result, Store, failpoint};

/// What [`Store::prune`] or [`Store::remove`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<u64>,
    /// Kept snapshots re-encoded because their parent was removed.
    pub rebuilt: Vec<u64>,
    pub stored_before: u64,
    pub stored_after: u64,
}

impl Store {
    /// Removes snapshots, keeping the last `keep_last` and, with
    /// `keep_every`, those whose step is a multiple of it. A kept snapshot
    /// whose parent goes is re-encoded against the kept snapshot before it
    /// (or as a keyframe), so every chain stays whole. Commits atomically.
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

    /// Removes the snapshot at `step` (one added by mistake, say), re-encoding
    /// the snapshot after it if it was a delta against it, as
    /// [`Store::prune`] does. Removing the only snapshot leaves an empty
    /// store, which works as a new one does. Commits atomically.
    pub fn remove(&mut self, step: u64) -> Result<PruneReport> {
        self.check_writable()?;
        let idx = self.manifest.find(step).ok_or(Error::NoSuchStep(step))?;
        let keep: Vec<bool> = (0..self.manifest.snapshots.len())
            .map(|i| i != idx)
            .collect();
        self.retain(&keep)
    }

    /// Keeps the snapshots whose `keep` is true and commits: a kept delta
    /// whose parent goes is re-encoded against the kept snapshot before it
    /// (restored through the old chains, still on disk), or whole.
    fn retain(&mut self, keep: &[bool]) -> Result<PruneReport> {
        let snaps = &self.manifest.snapshots;
        let mut report = PruneReport {
            stored_before: snaps.iter().map(Snapshot::stored_len).sum(),
            ..Default::default()
        };
        let generation = self.manifest.generation + 1;
        let mut created = Cleanup::new(self.objects());
        let mut new_snaps: Vec<Snapshot> = Vec::new();
        let mut last_kept: Option<usize> = None;
        for (i, s) in snaps.iter().enumerate() {
            if !keep[i] {
                report.removed.push(s.step);
                continue;
            }
            let parent_kept = s.parent.is_some() && i > 0 && keep[i - 1];
            if s.parent.is_none() || parent_kept {
                let mut s2 = s.clone();
                s2.depth = match (parent_kept, new_snaps.last()) {
                    (true, Some(p)) => p.depth + 1,
                    _ => 0,
                };
                new_snaps.push(s2);
            } else {
                let base_idx = last_kept.filter(|_| {
                    new_snaps
                        .last()
                        .is_some_and(|p| p.depth + 1 < self.manifest.keyframe_every)
                });
                let files = self.restore_files(s.step)?;
                let base_files = match base_idx {
                    Some(b) => self.restore_files(snaps[b].step)?,
                    None => Vec::new(),
                };
                let base_kind = base_idx.map_or(Kind::Dir, |b| snaps[b].kind);
                let mut entries = Vec::with_capacity(files.len());
                for (fi, f) in files.iter().enumerate() {
                    let input = FileInput::from_bytes(f.path.clone(), &f.bytes, f.mode);
                    let base = counterpart(&base_files, |b| &b.path, base_kind, s.kind, &f.path);
                    let name = format!("{:012}-{fi:04}-g{generation}.lmc", s.step);
                    entries.push(self.write_object(&input, base, &name, &mut created)?);
                }
                let is_delta = entries.iter().any(|e| e.base.is_some());
                new_snaps.push(Snapshot {
                    step: s.step,
                    kind: s.kind,
                    parent: base_idx.filter(|_| is_delta).map(|b| snaps[b].step),
                    depth: match (is_delta, new_snaps.last()) {
                        (true, Some(p)) => p.depth + 1,
                        _ => 0,
                    },
                    added: s.added,
                    files: entries,
                });
                report.rebuilt.push(s.step);
            }
            last_kept = Some(i);
        }
        failpoint("prune:objects-written");
        report.stored_after = new_snaps.iter().map(Snapshot::stored_len).sum();
        let mut m = self.manifest.clone();
        m.generation = generation;
        m.snapshots = new_snaps;
        self.commit(m)?;
        created.keep();
        Ok(report)
    }
}
