//! Progress bars (drawn only on a terminal) and Ctrl-C handling (also
//! SIGTERM and SIGHUP: see [`crate::signals`]).

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Set by Ctrl-C, SIGTERM or SIGHUP; long operations check it between
/// batches of chunks.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The flag Ctrl-C sets, for work that checks it itself.
pub fn interrupted_flag() -> &'static AtomicBool {
    &INTERRUPTED
}

pub fn install_ctrlc() {
    // If a handler cannot be installed, Ctrl-C kills the process: the
    // temporary output is then left behind, but never the destination.
    // The handler runs on a thread of its own, not in signal context. The
    // first signal asks the work to stop (it unwinds and removes its
    // temporary output); a second one, for work that does not stop soon
    // enough, ends the process at once.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            crate::signals::exit_now(130);
        }
    });
}

/// A byte-counting progress bar; hidden when stderr is not a terminal or
/// when `quiet` is set.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(total: u64, what: &str, quiet: bool) -> Bar {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let pb = ProgressBar::with_draw_target(Some(total), target);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        Bar(pb)
    }

    /// The callback lmc-core expects: updates the bar, and returns false
    /// once Ctrl-C was pressed so the work stops.
    pub fn callback(&self) -> impl FnMut(u64) -> bool + '_ {
        move |done| {
            self.0.set_position(done);
            !INTERRUPTED.load(Ordering::SeqCst)
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
