//! Small objects read and written whole, with the version the store gives
//! them, for the conditional writes that let several processes share a
//! prefix safely (a snapshot store's lock and manifest): a put that
//! creates an object only if there is none, and one that replaces it only
//! if it is still the version read.
//!
//! Every store lmc writes supports both: S3 through the standard
//! `If-None-Match: *` and `If-Match: ETAG` headers (AWS since 2024, and
//! object_store's default, `aws_conditional_put=etag`; an S3-compatible
//! store without them can use `aws_conditional_put=dynamo:TABLE`), GCS
//! through generations, Azure through ETags. (Local directories are not
//! written through here: a snapshot store under `file://` is a local store,
//! with its `flock`.)

use futures::TryStreamExt;
use object_store::{GetOptions, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::error::{Error, Result};
use crate::location::Location;
use crate::runtime::block_on;

/// The version of an object as the store reported it (its ETag, and its
/// version id where the store keeps versions), for [`Put::Update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(UpdateVersion);

impl Version {
    fn of(e_tag: Option<String>, version: Option<String>) -> Version {
        Version(UpdateVersion { e_tag, version })
    }
}

/// How [`Location::put`] treats an object already at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Replace it, if any.
    Overwrite,
    /// Fail with [`Error::Exists`] if there is one.
    Create,
    /// Replace it only if it is still this version; fail with
    /// [`Error::Changed`] if it was replaced (or deleted) since.
    Update(Version),
}

impl Location {
    /// The whole object and its version, or `None` if there is none.
    pub fn get(&self) -> Result<Option<(Vec<u8>, Version)>> {
        block_on(async {
            let got = match self.store.get_opts(&self.path, GetOptions::default()).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err("read the object")(e)),
            };
            let version = Version::of(got.meta.e_tag.clone(), got.meta.version.clone());
            let want = got.meta.size;
            let bytes = got.bytes().await.map_err(self.err("read the object"))?;
            if bytes.len() as u64 != want {
                return Err(Error::ShortRead {
                    url: self.url().to_string(),
                    start: 0,
                    end: want,
                    got: bytes.len() as u64,
                });
            }
            Ok(Some((Vec::from(bytes), version)))
        })
    }

    /// Writes `bytes` as the object in one request (it appears whole or not
    /// at all), as `mode` says; returns its new version.
    pub fn put(&self, bytes: &[u8], mode: Put) -> Result<Version> {
        if !self.is_writable() {
            return Err(Error::BadUrl {
                url: self.url().to_string(),
                reason: "http(s):// URLs are read only".into(),
            });
        }
        let conditional = mode != Put::Overwrite;
        let opts = PutOptions {
            mode: match mode {
                Put::Overwrite => PutMode::Overwrite,
                Put::Create => PutMode::Create,
                Put::Update(Version(v)) => PutMode::Update(v),
            },
            ..PutOptions::default()
        };
        let payload = PutPayload::from(bytes.to_vec());
        match block_on(self.store.put_opts(&self.path, payload, opts)) {
            Ok(r) => Ok(Version::of(r.e_tag, r.version)),
            Err(object_store::Error::AlreadyExists { .. }) => Err(Error::Exists {
                url: self.url().to_string(),
            }),
            // S3 answers a conditional update of a deleted object with 404.
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) if conditional => Err(Error::Changed {
                url: self.url().to_string(),
            }),
            Err(e @ object_store::Error::NotImplemented) if conditional => Err(Error::Store {
                url: self.url().to_string(),
                op: "write the object conditionally (this store offers no conditional \
                     writes; for an S3-compatible store, see aws_conditional_put)",
                source: e,
            }),
            Err(e) => Err(self.err("write the object")(e)),
        }
    }

    /// The keys of the objects below this location, relative to it
    /// (`objects/x` for `s3://b/run/objects/x`), with their sizes.
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let prefix = &self.path;
        let metas: Vec<object_store::ObjectMeta> =
            block_on(self.store.list(Some(prefix)).try_collect())
                .map_err(self.err("list the objects below"))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel: Vec<String> = m
                    .location
                    .prefix_match(prefix)?
                    .map(|p| p.as_ref().to_string())
                    .collect();
                Some((rel.join("/"), m.size))
            })
            .collect())
    }
}
