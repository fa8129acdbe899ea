//! Committing a change, retiring the objects it no longer needs, deleting
//! them once no reader can still be using them, and the reader's one retry
//! when it finds one gone (FORMAT.md, "Appendix: snapshot stores").

use crate::fsutil::{failpoint, sync_dir};
use crate::manifest::{self, Manifest};
use crate::{Error, Result, Store, unix_now};

impl Store {
    /// Makes the objects written so far durable and `m` the manifest. The
    /// objects the old manifest named and `m` does not are retired: listed
    /// in `m` with the time, and deleted by a later writer once they are
    /// older than the grace period (at once if it is 0).
    pub(crate) fn commit(&mut self, mut m: Manifest) -> Result<()> {
        let now = unix_now();
        let named: std::collections::HashSet<&str> = m.objects().collect();
        let mut retired: Vec<manifest::Retired> = self
            .manifest
            .retired
            .iter()
            .filter(|r| !named.contains(r.object.as_str()) && !self.expired(r, now))
            .cloned()
            .collect();
        if !self.retire_grace.is_zero() {
            for o in self.manifest.objects() {
                if !named.contains(o) && !retired.iter().any(|r| r.object == o) {
                    retired.push(manifest::Retired {
                        object: o.to_string(),
                        since: now,
                    });
                }
            }
        }
        m.retired = retired;
        self.write_manifest(&m)?;
        self.manifest = m;
        self.collect_garbage()
    }

    /// Whether a retired object is old enough to delete.
    fn expired(&self, r: &manifest::Retired, now: u64) -> bool {
        now.saturating_sub(r.since) >= self.retire_grace.as_secs()
    }

    /// Removes what no snapshot names and no reader may still use: objects
    /// of interrupted changes, retired objects past the grace period, and
    /// temporary files.
    pub(crate) fn collect_garbage(&self) -> Result<()> {
        let now = unix_now();
        let keep: std::collections::HashSet<&str> = self
            .manifest
            .objects()
            .chain(
                self.manifest
                    .retired
                    .iter()
                    .filter(|r| !self.expired(r, now))
                    .map(|r| r.object.as_str()),
            )
            .collect();
        let mut removed = false;
        for name in self.list_objects()? {
            if !keep.contains(name.as_str()) {
                self.delete_object(&name)?;
                removed = true;
                failpoint("gc:removed-one");
            }
        }
        if self.remote.is_some() {
            // Uploads never show in part: no temporary objects to remove.
            return Ok(());
        }
        for e in std::fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))? {
            let e = e.map_err(|e| Error::io(&self.root, e))?;
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".tmp-"))
            {
                std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
            }
        }
        if removed {
            sync_dir(&self.objects())?;
        }
        Ok(())
    }

    /// Runs `f` on the manifest. A reader that finds an object missing (a
    /// writer committed after this reader loaded the manifest and deleted an
    /// object it no longer names) loads the newly committed manifest and
    /// runs `f` once more. A writer holds the lock: to it, a missing object
    /// is damage.
    pub(crate) fn retrying<T>(&self, f: impl Fn(&Manifest) -> Result<T>) -> Result<T> {
        match f(&self.manifest) {
            Err(e) if !self.writable && self.is_missing_object(&e) => {
                self.tell(
                    "retrying",
                    "from the manifest committed since (a writer deleted an object the \
                     one loaded names)",
                );
                f(&self.load_manifest()?)
            }
            r => r,
        }
    }

    fn is_missing_object(&self, e: &Error) -> bool {
        match e {
            Error::Needs { source, .. } => self.is_missing_object(source),
            Error::Remote(e) => e.is_not_found(),
            Error::Io { path, source } => {
                source.kind() == std::io::ErrorKind::NotFound
                    && path.parent() == Some(self.objects().as_path())
            }
            _ => false,
        }
    }
}
