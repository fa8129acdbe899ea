//! The few steps where a store in a directory and one in object storage
//! differ: reading and committing the manifest, writing, reading, listing
//! and deleting objects. Everything else (what to encode, what to commit,
//! what to retire) is the same code for both.

use std::io::{BufWriter, Seek, Write};

use lmc_remote::{Location, Put, Version};

use crate::fsutil::{failpoint, sync_dir, write_atomic};
use crate::{Cleanup, Error, Held, MANIFEST, Manifest, OBJECTS, ObjectBytes, Result, Store};

/// A store's place in object storage.
pub(crate) struct Remote {
    pub(crate) prefix: Location,
    /// The version of the manifest this store loaded or last committed:
    /// a writer's commit replaces only that one.
    pub(crate) manifest_version: Option<Version>,
}

impl Remote {
    pub(crate) fn manifest(&self) -> Location {
        self.prefix.join(MANIFEST)
    }

    pub(crate) fn objects(&self) -> Location {
        self.prefix.join(OBJECTS)
    }

    /// The committed manifest and its version, or `None` if there is none.
    pub(crate) fn load(&self) -> Result<Option<(Manifest, Version)>> {
        let at = self.manifest();
        match at.get()? {
            None => Ok(None),
            Some((bytes, v)) => Ok(Some((Manifest::parse(&bytes, at.url())?, v))),
        }
    }
}

impl Store {
    /// The manifest committed last.
    pub(crate) fn load_manifest(&self) -> Result<Manifest> {
        match &self.remote {
            None => Manifest::load(&self.root.join(MANIFEST)),
            Some(r) => r.load()?.map(|(m, _)| m).ok_or_else(|| {
                Error::Corrupt(format!("{}: the manifest is gone", r.manifest().url()))
            }),
        }
    }

    /// Makes the objects written so far durable, then `m` the committed
    /// manifest: atomically in a directory (under the lock), and in object
    /// storage only over the version this writer last saw, after renewing
    /// its lease (see `remote.rs`).
    pub(crate) fn write_manifest(&mut self, m: &Manifest) -> Result<()> {
        let json = m.to_json();
        let lease = match &self.lock {
            Some(Held::Lease(l)) => Some(l),
            _ => None,
        };
        match &mut self.remote {
            None => {
                sync_dir(&self.root.join(OBJECTS))?;
                failpoint("commit:objects-synced");
                write_atomic(&self.root, MANIFEST, &json)
            }
            Some(r) => {
                // Uploads are complete (visible) when they return.
                failpoint("commit:objects-synced");
                if let Some(l) = lease {
                    l.renew()?;
                }
                let at = r.manifest();
                let mode = match r.manifest_version.clone() {
                    Some(v) => Put::Update(v),
                    None => Put::Create,
                };
                let v = at.put(&json, mode).map_err(|e| match e {
                    lmc_remote::Error::Changed { .. } | lmc_remote::Error::Exists { .. } => {
                        Error::Locked(format!(
                            "{}: another writer committed since this one loaded it (this \
                             writer's lock was taken over); nothing was committed",
                            at.url()
                        ))
                    }
                    e => e.into(),
                })?;
                r.manifest_version = Some(v);
                Ok(())
            }
        }
    }

    /// The names of the objects in the store (listed or not).
    pub(crate) fn list_objects(&self) -> Result<Vec<String>> {
        match &self.remote {
            None => {
                let objects = self.objects();
                let mut names = Vec::new();
                for e in std::fs::read_dir(&objects).map_err(|e| Error::io(&objects, e))? {
                    let e = e.map_err(|e| Error::io(&objects, e))?;
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
                Ok(names)
            }
            Some(r) => Ok(r
                .objects()
                .list()?
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| !k.contains('/'))
                .collect()),
        }
    }

    /// Deletes an object; one already gone is no error.
    pub(crate) fn delete_object(&self, name: &str) -> Result<()> {
        match &self.remote {
            None => {
                let path = self.objects().join(name);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(Error::io(&path, err)),
                }
            }
            Some(r) => match r.objects().join(name).delete() {
                Err(e) if !e.is_not_found() => Err(e.into()),
                _ => Ok(()),
            },
        }
    }

    /// The bytes of an object, read whole (or as the object reader gives
    /// them, in a directory).
    pub(crate) fn object_bytes(&self, name: &str) -> Result<ObjectBytes> {
        let path = self.objects().join(name);
        match &self.remote {
            None => match &self.object_reader {
                Some(read) => read(&path),
                None => std::fs::read(&path).map(|v| Box::new(v) as ObjectBytes),
            }
            .map_err(|e| Error::io(&path, e)),
            Some(r) => match r.objects().join(name).get()? {
                Some((bytes, _)) => Ok(Box::new(bytes)),
                // As a missing file is: a reader then loads the newer manifest.
                None => Err(Error::io(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
                )),
            },
        }
    }

    /// Writes object `name` with `encode`, which writes it whole; it is
    /// complete and durable under its name when this returns, never seen
    /// in part: a temporary file renamed in a directory, an upload of the
    /// finished file (spooled to a temporary one) in object storage.
    pub(crate) fn put_object<T>(
        &self,
        name: &str,
        encode: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<T>,
    ) -> Result<T> {
        let objects = self.objects();
        match &self.remote {
            None => {
                let tmp = lmc_files::temp_in(&objects, ".tmp-", "")
                    .map_err(|e| Error::io(&objects, e))?;
                let (file, tmp_path) = tmp.into_parts();
                let mut w = BufWriter::with_capacity(1 << 20, file);
                let out = encode(&mut w)?;
                let file = w
                    .into_inner()
                    .map_err(|e| Error::io(&tmp_path, e.into_error()))?;
                file.sync_all().map_err(|e| Error::io(&tmp_path, e))?;
                drop(file);
                let dest = objects.join(name);
                tmp_path
                    .persist_noclobber(&dest)
                    .map_err(|e| Error::io(&dest, e.error))?;
                Ok(out)
            }
            Some(r) => {
                let spool = std::env::temp_dir();
                let file = tempfile::tempfile().map_err(|e| Error::io(&spool, e))?;
                let mut w = BufWriter::with_capacity(1 << 20, file);
                let out = encode(&mut w)?;
                let mut file = w
                    .into_inner()
                    .map_err(|e| Error::io(&spool, e.into_error()))?;
                file.rewind().map_err(|e| Error::io(&spool, e))?;
                let at = r.objects().join(name);
                let url = at.url().to_string();
                let mut up = lmc_remote::Upload::to(at)?;
                std::io::copy(&mut file, &mut up).map_err(|source| {
                    // The upload's own errors come out of its writes.
                    match source.downcast::<lmc_remote::Error>() {
                        Ok(e) => Error::from(e),
                        Err(source) => Error::from(lmc_remote::Error::Io {
                            url,
                            what: "cannot upload the object from its spool file",
                            source,
                        }),
                    }
                })?;
                up.flush().ok();
                up.finish()?;
                Ok(out)
            }
        }
    }

    /// A record of the objects a change writes, deleted if it fails.
    pub(crate) fn cleanup(&self) -> Cleanup {
        Cleanup {
            dir: self.objects(),
            remote: self.remote.as_ref().map(Remote::objects),
            names: Vec::new(),
        }
    }
}
