//! A URL to the store that holds it and the object's key in that store.

use std::sync::Arc;
use std::time::Duration;

use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Error, Result};

/// Schemes lmc reads and writes (`http`, `https`: read only).
const SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file", "http", "https",
];

/// Whether `s` is a URL (`scheme://...`) rather than a local path: one of
/// the schemes lmc opens (`s3://`, `gs://`, `az://`, `file://`,
/// `http(s)://`...) or another, which [`Location::parse`] then refuses by
/// name rather than as a missing file.
pub fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        let mut c = scheme.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic())
            && c.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// An object named by a URL: the store that holds it and its key there.
#[derive(Clone)]
pub struct Location {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: Path,
    /// The same store where it takes parts by number, in any order (S3,
    /// GCS, Azure): a container's first part, which holds its header, can
    /// then go up last ([`crate::ContainerUpload`]).
    pub(crate) multipart: Option<Arc<dyn MultipartStore>>,
    url: String,
    writable: bool,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("url", &self.url)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Location {
    /// Parses `url` and builds a client for its store, configured from the
    /// environment. Nothing is sent yet.
    pub fn parse(url: &str) -> Result<Location> {
        Location::parse_with(url, &[])
    }

    /// [`Location::parse`] with `options` over the environment's settings:
    /// object_store's configuration keys for the URL's store
    /// (`aws_endpoint`, `aws_allow_http`, `google_service_account`,
    /// `azure_storage_account_key`...), as a program that is not configured
    /// by its environment (a test, Python's `storage_options`) gives them.
    pub fn parse_with(url: &str, options: &[(&str, &str)]) -> Result<Location> {
        let bad = |reason: String| Error::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("not a URL ({e})")))?;
        let scheme = parsed.scheme().to_ascii_lowercase();
        let path =
            Path::from_url_path(parsed.path()).map_err(|e| bad(format!("bad object key ({e})")))?;
        if path.as_ref().is_empty() {
            return Err(bad(
                "the URL names no object (no key after the bucket)".into()
            ));
        }
        let store_err = |e: object_store::Error| Error::Store {
            url: url.to_string(),
            op: "configure the client",
            source: e,
        };
        let retry = retry_config();
        let bad_option = |k: &str, e: object_store::Error| {
            bad(format!(
                "option {k:?} is not one of this store's settings ({e})"
            ))
        };
        if !options.is_empty() && matches!(scheme.as_str(), "http" | "https" | "file") {
            return Err(bad(format!("{scheme}:// URLs take no options")));
        }
        // A store that takes numbered parts, as both of its traits.
        fn numbered<S: ObjectStore + MultipartStore>(
            s: Arc<S>,
        ) -> (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>, bool) {
            (s.clone(), Some(s), true)
        }
        type Parts = (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>, bool);
        // The three cloud builders share no trait: one macro configures
        // each (the options, the URL, the retries).
        macro_rules! cloud {
            ($builder:expr) => {
                numbered(Arc::new(
                    options
                        .iter()
                        .try_fold($builder, |b, (k, v)| {
                            Ok(b.with_config(k.parse().map_err(|e| bad_option(k, e))?, *v))
                        })?
                        .with_url(url)
                        .with_retry(retry)
                        .build()
                        .map_err(store_err)?,
                ))
            };
        }
        let (store, multipart, writable): Parts = match scheme.as_str() {
            "s3" | "s3a" => cloud!(object_store::aws::AmazonS3Builder::from_env()),
            "gs" => cloud!(object_store::gcp::GoogleCloudStorageBuilder::from_env()),
            "az" | "azure" | "abfs" | "abfss" => {
                cloud!(object_store::azure::MicrosoftAzureBuilder::from_env())
            }
            "http" | "https" => {
                // The store is the server; the key is the URL's path.
                let origin = parsed.origin().ascii_serialization();
                (
                    Arc::new(
                        object_store::http::HttpBuilder::new()
                            .with_url(origin)
                            // The URL says http: the user asked for it.
                            .with_client_options(
                                object_store::ClientOptions::new().with_allow_http(true),
                            )
                            .with_retry(retry)
                            .build()
                            .map_err(store_err)?,
                    ),
                    None,
                    false,
                )
            }
            "file" => {
                if parsed
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(bad(
                        "a file:// URL names a local path (file:///abs/path)".into()
                    ));
                }
                (
                    Arc::new(object_store::local::LocalFileSystem::new()),
                    None,
                    true,
                )
            }
            other => {
                return Err(bad(format!(
                    "unknown scheme {other}:// (lmc opens {})",
                    SCHEMES
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        Ok(Location {
            store,
            multipart,
            path,
            url: url.to_string(),
            writable,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether objects can be written there (not over plain HTTP(S)).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub(crate) fn err(&self, op: &'static str) -> impl FnOnce(object_store::Error) -> Error + '_ {
        move |source| Error::Store {
            url: self.url.clone(),
            op,
            source,
        }
    }

    /// Whether an object exists at this location.
    pub fn exists(&self) -> Result<bool> {
        match crate::runtime::block_on(self.store.head(&self.path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("look up the object")(e)),
        }
    }

    /// Deletes the object.
    pub fn delete(&self) -> Result<()> {
        crate::runtime::block_on(self.store.delete(&self.path))
            .map_err(self.err("delete the object"))
    }

    /// The location of `key` below this one (`s3://b/run` + `objects/x`
    /// is `s3://b/run/objects/x`), in the same store.
    pub fn join(&self, key: &str) -> Location {
        let mut at = self.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            at.path = at.path.child(part);
        }
        at.url = format!("{}/{}", self.url.trim_end_matches('/'), key);
        at
    }
}

/// Retries with exponential backoff from 100 ms to 15 s, as object_store
/// does by default; `LMC_RETRIES` (the most retries a request gets, 10 by
/// default) and `LMC_RETRY_TIMEOUT` (seconds after which a request is no
/// longer retried, 180 by default) change it, so that tests of a dead
/// connection fail fast.
fn retry_config() -> RetryConfig {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    };
    if let Some(n) = env("LMC_RETRIES") {
        retry.max_retries = n as usize;
    }
    if let Some(s) = env("LMC_RETRY_TIMEOUT") {
        retry.retry_timeout = Duration::from_secs(s);
    }
    retry
}
