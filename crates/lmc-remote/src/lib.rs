//! lmc-remote: containers and checkpoints in object storage, behind a
//! blocking API for lmc's synchronous code (the CLI, the snapshot store,
//! the Python package).
//!
//! URLs name objects: `s3://bucket/key`, `gs://bucket/key`,
//! `az://container/key`, `file:///abs/path`, and `http(s)://host/path` for
//! reading. The `object_store` crate (Apache Arrow's) speaks to each store;
//! credentials and endpoints come from the environment as its `from_env`
//! builders read them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true`; `GOOGLE_*`;
//! `AZURE_*`). Requests that fail with a 5xx answer, throttling or a broken
//! connection are retried with exponential backoff.
//!
//! The layers: [`location`] (a URL to a store and a key), [`object`]
//! (reading an object: its length, ranges several at a time, the whole of
//! it as a stream; [`lmc_core::ReadAt`] for reading a container in
//! ranges) and [`upload`] (writing one by multipart upload, visible only
//! once complete), and [`container`] (a container opened by its header and
//! index; one written as it is coded, its header last).

#![forbid(unsafe_code)]

pub mod container;
pub mod error;
pub mod location;
pub mod object;
mod runtime;
pub mod small;
pub mod upload;

pub use container::{ContainerUpload, from_store};
pub use error::{Error, Result};
pub use location::{Location, is_url};
pub use object::Object;
pub use small::{Put, Version};
pub use upload::Upload;
