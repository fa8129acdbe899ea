//! Store work in the background, for training loops: an add whose
//! tensors are copied and coded on another thread
//! ([`Store::add_tensors_background`]), and the re-encoding that deferred
//! adds leave ([`Store::finish_deferred_background`]). The store moves to
//! the thread with its writer lock and comes back with the result.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::add::tensors_layout;
use crate::{Error, FileInput, Kind, Result, Snapshot, Store, TensorInput};

/// Work on a store on another thread, which owns the store meanwhile.
#[derive(Debug)]
struct Job<T> {
    state: State<T>,
}

#[derive(Debug)]
enum State<T> {
    Running(std::thread::JoinHandle<(Store, Result<T>)>),
    Done(Box<(Store, Result<T>)>),
    Taken,
}

impl<T: Send + 'static> Job<T> {
    /// Runs `work` on the store on a new thread named `name`, or here if no
    /// thread can be started; a panic in it becomes an error saying `what`.
    fn spawn(
        store: Store,
        name: String,
        what: String,
        work: impl FnOnce(&mut Store) -> Result<T> + Send + 'static,
    ) -> Job<T> {
        let mut store = store;
        let run = move || -> (Store, Result<T>) {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut store)))
                    .unwrap_or_else(|_| {
                        Err(Error::Invalid(format!(
                            "{what} stopped on an internal error (nothing more was committed)"
                        )))
                    });
            (store, result)
        };
        // Shared with the thread so that, if no thread can be started, the
        // work runs here instead (and the store comes back).
        let run = Arc::new(Mutex::new(Some(run)));
        let spawned = {
            let run = Arc::clone(&run);
            std::thread::Builder::new().name(name).spawn(move || {
                let f = run
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("run once");
                f()
            })
        };
        match spawned {
            Ok(h) => Job {
                state: State::Running(h),
            },
            Err(_) => {
                let f = run
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("not started");
                let (store, result) = f();
                Job::done(store, result)
            }
        }
    }
}

impl<T> Job<T> {
    fn done(store: Store, result: Result<T>) -> Job<T> {
        Job {
            state: State::Done(Box::new((store, result))),
        }
    }

    fn is_finished(&self) -> bool {
        match &self.state {
            State::Running(h) => h.is_finished(),
            _ => true,
        }
    }

    fn finish(&mut self) -> (Store, Result<T>) {
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Running(h) => match h.join() {
                Ok(r) => r,
                // The thread catches the work's panics; anything else is a
                // bug worth its own panic.
                Err(p) => std::panic::resume_unwind(p),
            },
            State::Done(b) => *b,
            State::Taken => unreachable!("finished once"),
        }
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        if let State::Running(_) = self.state {
            let _ = self.finish();
        }
    }
}

/// An add at work in the background ([`Store::add_tensors_background`]).
/// [`AddHandle::wait`] gives back the store and what the add did. Dropping
/// the handle waits for the add to finish (and drops the store).
#[derive(Debug)]
pub struct AddHandle {
    job: Job<Snapshot>,
}

/// The re-encoding of deferred adds at work in the background
/// ([`Store::finish_deferred_background`]). [`FinishHandle::wait`] gives
/// back the store and how many snapshots were re-encoded. Dropping the
/// handle waits for the work to finish (and drops the store).
#[derive(Debug)]
pub struct FinishHandle {
    job: Job<usize>,
}

impl Store {
    /// [`Store::add_tensors`] that returns at once: the tensors are copied
    /// into one buffer (the safetensors file to store, so the memory held
    /// is one snapshot's size), and the snapshot is coded and committed on
    /// a new thread, which owns the store meanwhile; so at most one add is
    /// in flight per store, and the next waits for this one
    /// ([`AddHandle::wait`]). While it runs the add also holds the parent
    /// snapshot decoded (another snapshot's size) and the encoder's
    /// batches: about twice the snapshot in all, besides the caller's own
    /// tensors, which it no longer reads. A request refused up front (a
    /// tensor whose length does not match its shape) is reported by
    /// `wait`, as is any other error.
    ///
    /// ```
    /// # fn main() -> Result<(), lmc_store::Error> {
    /// use lmc_store::{Store, TensorInput};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut store = Store::create(dir.path().join("run"), 16)?;
    /// let mut w = vec![0u8; 4096 * 4];
    /// for step in [10u64, 20] {
    ///     let t = [TensorInput { name: "w".into(), dtype: lmc_core::Dtype::F32, shape: vec![4096], data: &w }];
    ///     let handle = store.add_tensors_background(step, "model.safetensors", &t, &Default::default());
    ///     w[0] = w[0].wrapping_add(1); // training goes on: the add has its own copy
    ///     let (s, added) = handle.wait();
    ///     store = s;
    ///     assert_eq!(added?.step, step);
    /// }
    /// assert_eq!(store.snapshots()[0].parent, Some(20));
    /// # Ok(()) }
    /// ```
    pub fn add_tensors_background(
        self,
        step: u64,
        file_name: &str,
        tensors: &[TensorInput<'_>],
        metadata: &BTreeMap<String, String>,
    ) -> AddHandle {
        let (header, layout) = match tensors_layout(file_name, tensors, metadata) {
            Ok(x) => x,
            Err(e) => {
                return AddHandle {
                    job: Job::done(self, Err(e)),
                };
            }
        };
        let total: usize = header.len() + tensors.iter().map(|t| t.data.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&header);
        for t in tensors {
            bytes.extend_from_slice(t.data);
        }
        let file_name = file_name.to_string();
        let job = Job::spawn(
            self,
            format!("lmc-store add {step}"),
            format!("the background add of step {step}"),
            move |store| {
                let file = FileInput::with_layout(file_name.as_str(), &bytes, layout, None);
                store.add(step, Kind::File, &[file]).cloned()
            },
        );
        AddHandle { job }
    }

    /// [`Store::finish_deferred`] on another thread, which owns the store
    /// (and its writer lock) until it is done: what a training loop runs
    /// after [`Store::add_tensors_deferred`], so that the re-encoding of
    /// the parent overlaps training. It codes on that one thread only. It holds two snapshots decoded (the
    /// parent and the new one) and the encoder's batches meanwhile.
    pub fn finish_deferred_background(self) -> FinishHandle {
        let job = Job::spawn(
            self,
            "lmc-store finish".to_string(),
            "the background re-encoding of deferred snapshots".to_string(),
            |store| {
                // On one thread: it runs beside training (and, in a
                // distributed save, beside ranks still coding theirs), where
                // it should take a core, not all of them.
                match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                    Ok(pool) => pool.install(|| store.finish_deferred()),
                    Err(_) => store.finish_deferred(),
                }
            },
        );
        FinishHandle { job }
    }
}

impl AddHandle {
    /// Whether the add has finished (`wait` would not block).
    pub fn is_finished(&self) -> bool {
        self.job.is_finished()
    }

    /// Waits for the add to finish: the store, and the snapshot added (as
    /// committed) or why not (nothing was committed then).
    pub fn wait(mut self) -> (Store, Result<Snapshot>) {
        self.job.finish()
    }
}

impl FinishHandle {
    /// Whether the work has finished (`wait` would not block).
    pub fn is_finished(&self) -> bool {
        self.job.is_finished()
    }

    /// Waits for the work to finish: the store, and how many snapshots were
    /// re-encoded or why the rest were not (each snapshot is restorable
    /// either way; what is left stays marked for the next writer).
    pub fn wait(mut self) -> (Store, Result<usize>) {
        self.job.finish()
    }
}
