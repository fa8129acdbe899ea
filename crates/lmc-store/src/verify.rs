//! Verifying a store: every snapshot decoded once and every hash checked.

use super::*;

impl Store {
    /// Decodes every snapshot (each chain once, in order) and checks every
    /// checksum and hash; reports objects no snapshot lists.
    pub fn verify(&self, progress: &mut dyn FnMut(&Snapshot)) -> Result<VerifyReport> {
        let progress = std::cell::RefCell::new(progress);
        self.retrying(|m| self.verify_in(m, &mut *progress.borrow_mut()))
    }

    fn verify_in(&self, m: &Manifest, progress: &mut dyn FnMut(&Snapshot)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        // Each snapshot is decoded once, from its parent's decoded files:
        // from every whole snapshot down the snapshots coded against it. A
        // snapshot's files stay in memory until its last child is decoded
        // (with chains, one parent and one child at a time).
        let n = m.snapshots.len();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut roots = Vec::new();
        for (i, s) in m.snapshots.iter().enumerate() {
            match s.parent.and_then(|p| m.find(p)) {
                Some(p) => children[p].push(i),
                None => roots.push(i),
            }
        }
        type Decoded = std::rc::Rc<(Kind, Vec<(RestoredFile, u128)>)>;
        let mut stack: Vec<(usize, Option<Decoded>)> =
            roots.iter().rev().map(|&r| (r, None)).collect();
        let mut seen = 0usize;
        while let Some((i, parent)) = stack.pop() {
            let s = &m.snapshots[i];
            let mut cur: Vec<(RestoredFile, u128)> = Vec::with_capacity(s.files.len());
            // Files that take no sources first: those that do take them
            // from `cur`.
            let order = s
                .files
                .iter()
                .filter(|f| f.sources.is_empty())
                .chain(s.files.iter().filter(|f| !f.sources.is_empty()));
            for f in order {
                let base = match (&f.base, &parent) {
                    (Some(_), Some(p)) => Some(
                        counterpart(&p.1, |x| &x.0.path, p.0, s.kind, &f.path)
                            .map(|(x, hash)| (x.bytes.as_slice(), *hash))
                            .ok_or_else(|| {
                                Error::Corrupt(format!(
                                    "step {}: {:?} has no base in its parent",
                                    s.step, f.path
                                ))
                            })?,
                    ),
                    (Some(_), None) => {
                        return Err(Error::Corrupt(format!(
                            "step {}: {:?} is a delta in a snapshot with no parent",
                            s.step, f.path
                        )));
                    }
                    (None, _) => None,
                };
                let sources = f
                    .sources
                    .iter()
                    .map(|src| {
                        cur.iter()
                            .find(|(x, _)| &x.path == src)
                            .map(|(x, hash)| (x.bytes.as_slice(), *hash))
                            .ok_or_else(|| {
                                Error::Corrupt(format!(
                                    "step {}: {:?} takes sources from {src:?}, which the snapshot does not hold",
                                    s.step, f.path
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (bytes, hash) =
                    self.decode(f, base, &sources)
                        .map_err(|source| Error::Needs {
                            step: s.step,
                            of_step: s.step,
                            path: f.path.clone(),
                            object: f.object.clone(),
                            source: Box::new(source),
                        })?;
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
            drop(parent);
            report.snapshots += 1;
            seen += 1;
            progress(s);
            let decoded: Decoded = std::rc::Rc::new((s.kind, cur));
            for &c in children[i].iter().rev() {
                stack.push((c, Some(decoded.clone())));
            }
        }
        if seen != n {
            return Err(Error::Corrupt(format!(
                "{} snapshots are on chains that loop",
                n - seen
            )));
        }
        // Objects retired but kept for readers are accounted for; so are
        // those of a change committed since `m` was loaded.
        let latest = match self.writable {
            true => None,
            false => self.load_manifest().ok(),
        };
        let listed: std::collections::HashSet<&str> = [Some(m), latest.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|m| {
                m.objects()
                    .chain(m.retired.iter().map(|r| r.object.as_str()))
            })
            .collect();
        for name in self.list_objects()? {
            if !listed.contains(name.as_str()) {
                report.unreferenced.push(name);
            }
        }
        report.unreferenced.sort();
        Ok(report)
    }
}
