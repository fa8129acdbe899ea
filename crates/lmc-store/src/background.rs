//! Adding a snapshot in the background, for training loops: the tensors
//! are copied, the call returns, and the snapshot is coded and committed
//! on another thread while training goes on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::add::tensors_layout;
use crate::{Error, FileInput, Kind, Result, Snapshot, Store, TensorInput};

/// An add at work in the background ([`Store::add_tensors_background`]).
/// [`AddHandle::wait`] gives back the store and what the add did. Dropping
/// the handle waits for the add to finish (and drops the store).
#[derive(Debug)]
pub struct AddHandle {
    state: State,
}

#[derive(Debug)]
enum State {
    Running(std::thread::JoinHandle<(Store, Result<Snapshot>)>),
    Done(Box<(Store, Result<Snapshot>)>),
    Taken,
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
            Err(e) => return AddHandle::done(self, Err(e)),
        };
        let total: usize = header.len() + tensors.iter().map(|t| t.data.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&header);
        for t in tensors {
            bytes.extend_from_slice(t.data);
        }
        let file_name = file_name.to_string();
        let mut store = self;
        let run = move || -> (Store, Result<Snapshot>) {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let file = FileInput::with_layout(file_name.as_str(), &bytes, layout, None);
                store.add(step, Kind::File, &[file]).cloned()
            }))
            .unwrap_or_else(|_| {
                Err(Error::Invalid(format!(
                    "the background add of step {step} stopped on an internal error \
                     (nothing was committed)"
                )))
            });
            (store, result)
        };
        // Shared with the thread so that, if no thread can be started, the
        // add runs here instead (and the store comes back).
        let run = Arc::new(Mutex::new(Some(run)));
        let spawned = {
            let run = Arc::clone(&run);
            std::thread::Builder::new()
                .name(format!("lmc-store add {step}"))
                .spawn(move || {
                    let f = run
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                        .expect("run once");
                    f()
                })
        };
        match spawned {
            Ok(h) => AddHandle {
                state: State::Running(h),
            },
            Err(_) => {
                let f = run
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("not started");
                let (store, result) = f();
                AddHandle::done(store, result)
            }
        }
    }
}

impl AddHandle {
    fn done(store: Store, result: Result<Snapshot>) -> AddHandle {
        AddHandle {
            state: State::Done(Box::new((store, result))),
        }
    }

    /// Whether the add has finished (`wait` would not block).
    pub fn is_finished(&self) -> bool {
        match &self.state {
            State::Running(h) => h.is_finished(),
            _ => true,
        }
    }

    /// Waits for the add to finish: the store, and the snapshot added (as
    /// committed) or why not (nothing was committed then).
    pub fn wait(mut self) -> (Store, Result<Snapshot>) {
        self.finish()
    }

    fn finish(&mut self) -> (Store, Result<Snapshot>) {
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Running(h) => match h.join() {
                Ok(r) => r,
                // The thread catches the add's panics; anything else is a
                // bug worth its own panic.
                Err(p) => std::panic::resume_unwind(p),
            },
            State::Done(b) => *b,
            State::Taken => unreachable!("finished once"),
        }
    }
}

impl Drop for AddHandle {
    fn drop(&mut self) {
        if let State::Running(_) = self.state {
            let _ = self.finish();
        }
    }
}
