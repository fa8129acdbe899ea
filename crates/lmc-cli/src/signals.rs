//! Signals: how lmc stops without leaving temporary outputs behind.
//!
//! - SIGINT, SIGTERM and SIGHUP (Ctrl-C; what `timeout`, SLURM and
//!   Kubernetes send; a closed terminal) reach [`crate::progress`] through
//!   the `ctrlc` crate (its `termination` feature adds SIGTERM and SIGHUP).
//!   The first sets the flag long operations check between batches of
//!   chunks: the work stops, the error unwinds, and the temporary output is
//!   dropped, which removes it. A second one ends lmc at once through
//!   [`exit_now`], which removes the temporary outputs registered here.
//! - SIGBUS: inputs are memory-mapped (`crate::io::Input`). If another
//!   program truncates one while lmc reads it, touching a page past the new
//!   end raises SIGBUS, whose default action kills lmc and leaves its
//!   temporary output. The handler installed by [`install`] removes the
//!   registered temporary outputs, names the input the faulting address lies
//!   in, and ends the process with status 1. A SIGBUS outside every
//!   registered input gets the default action again (the process dies of
//!   it, after the temporary outputs are removed).
//!
//! Reading inputs with `read` instead of a map would avoid SIGBUS, at the
//! cost of holding each whole input in memory (checkpoint shards run to
//! tens of GB): a map keeps only the pages in use.
//!
//! This is the one module of the CLI besides the memory map itself with
//! `unsafe` code: `sigaction`, and the handler, which does only what is
//! async-signal-safe (atomic loads and stores, `unlink`, `write`, `_exit`,
//! `sigaction`); it allocates nothing and takes no lock.
//!
//! The registries are fixed tables of atomic pointers. An entry is
//! published with a compare-exchange and withdrawn with a swap; it is freed
//! only when [`DYING`] was not yet set, and the handler sets `DYING` before
//! it reads the tables. With sequentially consistent order on both sides, a
//! handler that can still see an entry is one whose owner saw `DYING` set
//! and leaked it instead of freeing it (the process ends just after).

#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::SeqCst};

/// Entries a table holds; more at once are not registered (their temporary
/// files are then left by a crash, a SIGBUS in their inputs kills lmc). The
/// CLI writes one output at a time and reads one or two inputs, except
/// `snapshot add`, which maps every file of a checkpoint folder.
const TEMP_SLOTS: usize = 64;
const INPUT_SLOTS: usize = 4096;

/// A registered temporary output's path, or an input's mapped range and
/// the message that names it.
struct Entry {
    start: usize,
    len: usize,
    /// NUL-terminated: the path to unlink, or the message to write.
    text: CString,
}

type Table = [AtomicPtr<Entry>];

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicPtr<Entry> = AtomicPtr::new(std::ptr::null_mut());
static TEMPS: [AtomicPtr<Entry>; TEMP_SLOTS] = [EMPTY; TEMP_SLOTS];
static INPUTS: [AtomicPtr<Entry>; INPUT_SLOTS] = [EMPTY; INPUT_SLOTS];
/// Set once the process is ending from a signal: from then on, withdrawn
/// entries are leaked instead of freed, as the handler may be reading them.
static DYING: AtomicBool = AtomicBool::new(false);

/// An entry in one of the tables, withdrawn when dropped.
pub struct Registered {
    table: &'static Table,
    slot: Option<usize>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let Some(i) = self.slot else { return };
        let p = self.table[i].swap(std::ptr::null_mut(), SeqCst);
        if !p.is_null() && !DYING.load(SeqCst) {
            // SAFETY: `p` came from `Box::into_raw` in `register`, and the
            // swap took it out of the table, so no one else frees it. No
            // handler can be reading it: one that loaded it before the swap
            // set `DYING` before that, and we would have seen it set.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

fn register(table: &'static Table, entry: Entry) -> Registered {
    let p = Box::into_raw(Box::new(entry));
    for (i, slot) in table.iter().enumerate() {
        if slot
            .compare_exchange(std::ptr::null_mut(), p, SeqCst, SeqCst)
            .is_ok()
        {
            return Registered {
                table,
                slot: Some(i),
            };
        }
    }
    // SAFETY: `p` was published nowhere; this is its only owner.
    drop(unsafe { Box::from_raw(p) });
    Registered { table, slot: None }
}

/// Registers a temporary output, removed if lmc is ended by a signal
/// before it is renamed into place or dropped.
pub fn temp_file(path: &Path) -> Registered {
    use std::os::unix::ffi::OsStrExt;
    match CString::new(path.as_os_str().as_bytes()) {
        Ok(text) => register(
            &TEMPS,
            Entry {
                start: 0,
                len: 0,
                text,
            },
        ),
        // A path with a NUL byte cannot have been created.
        Err(_) => Registered {
            table: &TEMPS,
            slot: None,
        },
    }
}

/// Registers a mapped input, `len` bytes at `start`: a SIGBUS there is
/// reported as the file `path` having been truncated while being read.
pub fn mapped_input(path: &Path, start: *const u8, len: usize) -> Registered {
    let message = format!(
        "lmc: error: {} was truncated while lmc was reading it (it had {len} bytes; another \
         program changed it); no output was written\n",
        path.display()
    );
    let text = CString::new(message.replace('\0', "?")).unwrap_or_default();
    register(
        &INPUTS,
        Entry {
            start: start as usize,
            len,
            text,
        },
    )
}

/// Removes every registered temporary output. Async-signal-safe.
fn remove_temps() {
    DYING.store(true, SeqCst);
    for slot in &TEMPS {
        let p = slot.load(SeqCst);
        if !p.is_null() {
            // SAFETY: entries in the table are live `Entry`s (see the module
            // notes: none is freed once `DYING` is set), and `text` is a
            // NUL-terminated string.
            unsafe { libc::unlink((*p).text.as_ptr()) };
        }
    }
}

/// Writes `bytes` to stderr, as far as it goes. Async-signal-safe.
fn write_stderr(bytes: &[u8]) {
    // SAFETY: the pointer and length describe a live slice.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// Ends lmc at once (a second Ctrl-C, SIGTERM or SIGHUP): removes the
/// registered temporary outputs, says so, and exits with `code`.
pub fn exit_now(code: i32) -> ! {
    remove_temps();
    write_stderr(b"lmc: interrupted again: stopped at once; no output was written\n");
    // SAFETY: `_exit` ends the process without running anything else; the
    // other threads may be mid-write, which the exit makes moot.
    unsafe { libc::_exit(code) }
}

/// The faulting address of a SIGBUS, where the platform reports it.
///
/// # Safety
/// `info` is the `siginfo_t` the kernel passed to an `SA_SIGINFO` handler.
unsafe fn fault_address(info: *const libc::siginfo_t) -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: for SIGBUS the kernel fills the si_addr member.
        Some(unsafe { (*info).si_addr() } as usize)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = info;
        None
    }
}

extern "C" fn on_sigbus(_signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    remove_temps();
    // SAFETY: installed with SA_SIGINFO, so `info` is the kernel's.
    let addr = unsafe { fault_address(info) };
    for slot in &INPUTS {
        let p = slot.load(SeqCst);
        if p.is_null() {
            continue;
        }
        // SAFETY: as in `remove_temps`, a live entry.
        let e = unsafe { &*p };
        if addr.is_none_or(|a| a.wrapping_sub(e.start) < e.len) {
            write_stderr(e.text.as_bytes());
            // SAFETY: see `exit_now`.
            unsafe { libc::_exit(1) };
        }
    }
    // Not a mapped input: let the fault kill the process as it would have.
    // SAFETY: resetting a signal's action to its default is
    // async-signal-safe; returning re-runs the faulting access.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
    }
}

/// Installs the SIGBUS handler. If it cannot be installed, a truncated
/// input kills lmc as before (the destination is never touched).
pub fn install() {
    // SAFETY: the action is fully initialised (zeroed, then the handler,
    // flags and an empty mask set), and `on_sigbus` has the three-argument
    // signature SA_SIGINFO calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}
