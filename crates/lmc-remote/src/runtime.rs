//! The tokio runtime that the blocking API runs object_store's futures on.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// One runtime for the process, started on first use: its worker threads
/// drive the HTTP connections of every request in flight, including the
/// parts of an upload that go on while the caller writes.
pub(crate) fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lmc-remote")
            .enable_all()
            .build()
            .expect("cannot start the I/O runtime for object storage")
    })
}

/// Runs `f` to completion on the runtime, from synchronous code.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}
