//! `lmc snapshot`: a training run's checkpoints in a store, the newest
//! whole and each older one a delta against the one after it (see the
//! lmc-store crate).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lmc_store::{FileInput, PruneReport, Store, Wait, WriteOptions};
use serde_json::json;

use super::{emit, human};
use crate::io::Input;

/// `lmc snapshot` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Add a checkpoint (a file, or a directory of files) to a store,
    /// creating the store if it does not exist. A store is a directory or
    /// a prefix in object storage (s3://bucket/prefix, gs://, az://).
    Add {
        store: PathBuf,
        checkpoint: PathBuf,
        /// Training step (default: `step` in the safetensors metadata, else
        /// one past the last snapshot). Steps must increase.
        #[arg(long)]
        step: Option<u64>,
        /// Bound the deltas a restore decodes to K-1: a snapshot is kept
        /// whole where a chain would otherwise reach K deltas (default: the
        /// store's setting; 16 for a new store). The newest snapshot is
        /// always whole.
        #[arg(long, value_name = "K")]
        keyframe_every: Option<u32>,
        /// Store PyTorch checkpoints whose pickle would call code that
        /// torch.load(weights_only=True) refuses (refused by default).
        #[arg(long)]
        allow_pickle_calls: bool,
        /// The smallest snapshot, as `lmc compress --best` (slower to add
        /// and to restore).
        #[arg(long)]
        best: bool,
        /// If another writer is at work on the store, wait for it (at most
        /// SECONDS, if given) instead of failing at once.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true)]
        wait: Option<Option<f64>>,
        /// Return once the new snapshot is stored (whole): the snapshot
        /// before it stays whole too until `lmc snapshot finish` (or the
        /// next add, prune or remove) re-encodes it as a delta. About
        /// the time of `lmc compress`, for a training job that waits on it.
        #[arg(long)]
        defer: bool,
    },
    /// Re-encode, as deltas, the snapshots that `add --defer` left whole.
    Finish {
        store: PathBuf,
        /// If another writer is at work on the store, wait for it (at most
        /// SECONDS, if given) instead of failing at once.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true)]
        wait: Option<Option<f64>>,
    },
    /// List the snapshots: step, size, ratio, parent (the snapshot each is
    /// a delta against), chain depth.
    List {
        store: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore the snapshot at STEP, byte-identical to what was added.
    Restore {
        store: PathBuf,
        step: u64,
        /// Output file or directory.
        #[arg(short, long)]
        output: PathBuf,
        /// Replace the output if it exists.
        #[arg(short, long)]
        force: bool,
    },
    /// Decode every snapshot and check every checksum, hash and chain.
    Verify { store: PathBuf },
    /// Remove snapshots, keeping the last N (and every M-th step); the
    /// snapshots kept stay restorable.
    Prune {
        store: PathBuf,
        /// Keep the newest N snapshots.
        #[arg(long, value_name = "N")]
        keep_last: usize,
        /// Also keep snapshots whose step is a multiple of M.
        #[arg(long, value_name = "M")]
        keep_every: Option<u64>,
        /// If another writer is at work on the store, wait for it (at most
        /// SECONDS, if given) instead of failing at once.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true)]
        wait: Option<Option<f64>>,
    },
    /// Remove the snapshot at STEP; a snapshot coded against it is
    /// re-encoded, so every other snapshot stays restorable.
    Remove {
        store: PathBuf,
        step: u64,
        /// If another writer is at work on the store, wait for it (at most
        /// SECONDS, if given) instead of failing at once.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true)]
        wait: Option<Option<f64>>,
    },
    /// Re-encode a store written by an lmc from before reverse deltas
    /// (keyframes, each snapshot a delta against the one before) into
    /// today's layout: the newest snapshot whole, each older one a delta
    /// against the one after it. Such a store is readable as it is, and
    /// each add moves its newest snapshot over; convert does the rest.
    Convert {
        store: PathBuf,
        /// The chain bound to convert to (and keep): a restore decodes at
        /// most K-1 deltas (default: the store's setting).
        #[arg(long, value_name = "K")]
        keyframe_every: Option<u32>,
        /// If another writer is at work on the store, wait for it (at most
        /// SECONDS, if given) instead of failing at once.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true)]
        wait: Option<Option<f64>>,
    },
}

/// Opens `store` for writing, waiting for another writer as `--wait` says
/// (saying so once, unless quiet).
fn open_writer(
    store: &Path,
    options: WriteOptions,
    wait: Option<Option<f64>>,
    quiet: bool,
) -> Result<Store> {
    let wait = match wait {
        None => Wait::No,
        Some(None) => Wait::Forever,
        Some(Some(secs)) if secs.is_finite() && secs >= 0.0 => {
            Wait::For(Duration::from_secs_f64(secs.min(1e9)))
        }
        Some(Some(secs)) => bail!("--wait={secs}: give a number of seconds, 0 or more"),
    };
    let mut waiting = || {
        if !quiet {
            eprintln!(
                "waiting for another writer of {} to finish{}...",
                store.display(),
                match wait {
                    Wait::For(d) => format!(" (at most {:.0} s)", d.as_secs_f64()),
                    _ => String::new(),
                }
            );
        }
    };
    Ok(options
        .wait(wait)
        .cancel(crate::progress::interrupted_flag())
        .open(store, &mut waiting)?)
}

/// What prune and remove did, in one line.
fn removed_line(store: &Path, r: &PruneReport) -> String {
    format!(
        "{}: removed {} snapshot{}{}, re-encoded {}; {} -> {}",
        store.display(),
        r.removed.len(),
        if r.removed.len() == 1 { "" } else { "s" },
        if r.removed.is_empty() {
            String::new()
        } else {
            format!(
                " (step{} {})",
                if r.removed.len() == 1 { "" } else { "s" },
                r.removed
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        r.rebuilt.len(),
        human(r.stored_before),
        human(r.stored_after)
    )
}

fn watch(store: &mut Store, quiet: bool) {
    store.set_cancel_flag(crate::progress::interrupted_flag());
    // Objects mapped, as `lmc decompress` maps its input. The metadata
    // first, so that a missing object is an error of kind NotFound (a
    // reader then retries from the newer manifest).
    store.set_object_reader(Box::new(|path| {
        std::fs::metadata(path)?;
        let input = Input::open(path).map_err(std::io::Error::other)?;
        Ok(Box::new(input))
    }));
    if !quiet {
        store.set_observer(Box::new(|action, what| eprintln!("  {action} {what}")));
    }
}

pub fn run(cmd: &SnapshotCommand, quiet: bool) -> Result<()> {
    let mut text = String::new();
    match cmd {
        SnapshotCommand::Add {
            store,
            checkpoint,
            step,
            keyframe_every,
            allow_pickle_calls,
            best,
            wait,
            defer,
        } => {
            let (kind, files) = lmc_store::checkpoint_files(checkpoint)?;
            let maps = files
                .iter()
                .map(|f| Input::open(&f.source))
                .collect::<Result<Vec<_>>>()?;
            // Checked before the store is opened or created.
            let inputs = files
                .iter()
                .zip(&maps)
                .map(|(f, m)| {
                    FileInput::checked(f.path.clone(), &f.source, m, f.mode, *allow_pickle_calls)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut options = WriteOptions::new().create(true);
            if let Some(k) = keyframe_every {
                options = options.keyframe_every(*k);
            }
            let mut s = open_writer(store, options, *wait, quiet)?;
            watch(&mut s, quiet);
            if *best {
                s.set_options(lmc_core::CompressOptions::default().best(true));
            }
            let step = match step {
                Some(s) => *s,
                None => s.default_step(maps.iter().map(|m| &m[..])),
            };
            let start = Instant::now();
            let added = if *defer {
                s.add_deferred(step, kind, &inputs)
            } else {
                s.add(step, kind, &inputs)
            };
            let snap = added.with_context(|| {
                format!("cannot add {} to {}", checkpoint.display(), store.display())
            })?;
            let snap = snap.clone();
            if !quiet {
                let secs = start.elapsed().as_secs_f64();
                let snaps = s.snapshots();
                let before = snaps.len().checked_sub(2).map(|i| &snaps[i]);
                writeln!(
                    text,
                    "step {}: {} -> {} (ratio {:.3}), stored whole{} in {:.2} s ({:.0} MB/s)",
                    snap.step,
                    human(snap.original_len()),
                    human(snap.stored_len()),
                    snap.original_len() as f64 / snap.stored_len().max(1) as f64,
                    match before {
                        Some(b) if b.parent == Some(snap.step) => format!(
                            "; step {} re-encoded as a delta against it ({})",
                            b.step,
                            human(b.stored_len())
                        ),
                        Some(b) if b.deferred => format!(
                            "; step {} left whole until `lmc snapshot finish` or the next add",
                            b.step
                        ),
                        Some(b) => format!("; step {} kept whole (a keyframe)", b.step),
                        None => String::new(),
                    },
                    secs,
                    snap.original_len() as f64 / 1e6 / secs.max(1e-9)
                )?;
            }
        }
        SnapshotCommand::Finish { store, wait } => {
            let mut s = open_writer(store, WriteOptions::new(), *wait, quiet)?;
            watch(&mut s, quiet);
            let stored = |s: &Store| s.snapshots().iter().map(|x| x.stored_len()).sum::<u64>();
            let before = stored(&s);
            let start = Instant::now();
            let n = s.finish_deferred().with_context(|| {
                format!("cannot finish the deferred work of {}", store.display())
            })?;
            if !quiet {
                writeln!(
                    text,
                    "{}: re-encoded {n} snapshot{} as deltas in {:.2} s; {} -> {}",
                    store.display(),
                    if n == 1 { "" } else { "s" },
                    start.elapsed().as_secs_f64(),
                    human(before),
                    human(stored(&s))
                )?;
            }
        }
        SnapshotCommand::List { store, json } => {
            let s = Store::open(store)?;
            let snaps = s.snapshots();
            if *json {
                let v: Vec<_> = snaps
                    .iter()
                    .map(|sn| {
                        json!({"step": sn.step, "kind": sn.kind, "files": sn.files.len(),
                               "original_bytes": sn.original_len(), "stored_bytes": sn.stored_len(),
                               "ratio": sn.original_len() as f64 / sn.stored_len().max(1) as f64,
                               "parent": sn.parent, "depth": sn.depth, "added": sn.added,
                               "deferred": sn.deferred})
                    })
                    .collect();
                writeln!(
                    text,
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "store": store.display().to_string(),
                        "keyframe_every": s.manifest().keyframe_every,
                        "snapshots": v,
                    }))?
                )?;
            } else {
                let (orig, stored) = snaps.iter().fold((0, 0), |(o, t), sn| {
                    (o + sn.original_len(), t + sn.stored_len())
                });
                writeln!(
                    text,
                    "{}: {} snapshots, {} -> {} (ratio {:.3}), chains of at most {} deltas",
                    store.display(),
                    snaps.len(),
                    human(orig),
                    human(stored),
                    orig as f64 / stored.max(1) as f64,
                    s.manifest().keyframe_every.saturating_sub(1)
                )?;
                writeln!(
                    text,
                    "{:>12} {:>5} {:>11} {:>11} {:>8} {:>12} {:>5}",
                    "step", "files", "original", "stored", "ratio", "parent", "depth"
                )?;
                for sn in snaps {
                    writeln!(
                        text,
                        "{:>12} {:>5} {:>11} {:>11} {:>8.3} {:>12} {:>5}",
                        sn.step,
                        sn.files.len(),
                        human(sn.original_len()),
                        human(sn.stored_len()),
                        sn.original_len() as f64 / sn.stored_len().max(1) as f64,
                        match sn.parent {
                            Some(p) => p.to_string(),
                            None if sn.deferred => "whole*".to_string(),
                            None => "whole".to_string(),
                        },
                        sn.depth
                    )?;
                }
                if snaps.iter().any(|sn| sn.deferred) {
                    writeln!(
                        text,
                        "* whole until `lmc snapshot finish` (or the next add) re-encodes it"
                    )?;
                }
            }
        }
        SnapshotCommand::Restore {
            store,
            step,
            output,
            force,
        } => {
            let mut s = Store::open(store)?;
            watch(&mut s, quiet);
            let start = Instant::now();
            s.restore_to(*step, output, *force)
                .with_context(|| format!("cannot restore step {step} from {}", store.display()))?;
            if !quiet {
                let idx = s.manifest().find(*step).expect("restored");
                let n = s.snapshots()[idx].original_len();
                let secs = start.elapsed().as_secs_f64();
                writeln!(
                    text,
                    "step {step} -> {}: {} restored and verified in {:.2} s ({:.0} MB/s, chain depth {})",
                    output.display(),
                    human(n),
                    secs,
                    n as f64 / 1e6 / secs.max(1e-9),
                    s.snapshots()[idx].depth
                )?;
            }
        }
        SnapshotCommand::Verify { store } => {
            let mut s = Store::open(store)?;
            watch(&mut s, true);
            let start = Instant::now();
            let report = s
                .verify(&mut |sn| {
                    if !quiet {
                        eprintln!("  step {}: OK", sn.step)
                    }
                })
                .with_context(|| format!("{} failed verification", store.display()))?;
            if !quiet {
                writeln!(
                    text,
                    "{}: OK ({} snapshots, {} files, {} decoded and checked in {:.2} s)",
                    store.display(),
                    report.snapshots,
                    report.files,
                    human(report.bytes),
                    start.elapsed().as_secs_f64()
                )?;
            }
            if !report.unreferenced.is_empty() {
                eprintln!(
                    "note: {} objects are not part of any snapshot (being written by a change at work, or left by an interrupted one; the next add, prune or remove cleans up): {}",
                    report.unreferenced.len(),
                    report.unreferenced.join(", ")
                );
            }
        }
        SnapshotCommand::Prune {
            store,
            keep_last,
            keep_every,
            wait,
        } => {
            if *keep_last == 0 {
                bail!("--keep-last must be at least 1");
            }
            let mut s = open_writer(store, WriteOptions::new(), *wait, quiet)?;
            watch(&mut s, quiet);
            let r = s.prune(*keep_last, *keep_every)?;
            if !quiet {
                writeln!(text, "{}", removed_line(store, &r))?;
            }
        }
        SnapshotCommand::Convert {
            store,
            keyframe_every,
            wait,
        } => {
            let mut options = WriteOptions::new();
            if let Some(k) = keyframe_every {
                options = options.keyframe_every(*k);
            }
            let mut s = open_writer(store, options, *wait, quiet)?;
            watch(&mut s, quiet);
            let r = s
                .convert()
                .with_context(|| format!("cannot convert {}", store.display()))?;
            if !quiet {
                writeln!(
                    text,
                    "{}: re-encoded {} of {} snapshots; {} -> {}",
                    store.display(),
                    r.rebuilt.len(),
                    s.snapshots().len(),
                    human(r.stored_before),
                    human(r.stored_after)
                )?;
            }
        }
        SnapshotCommand::Remove { store, step, wait } => {
            let mut s = open_writer(store, WriteOptions::new(), *wait, quiet)?;
            watch(&mut s, quiet);
            let r = s
                .remove(*step)
                .with_context(|| format!("cannot remove step {step} from {}", store.display()))?;
            if !quiet {
                writeln!(text, "{}", removed_line(store, &r))?;
            }
        }
    }
    emit(&text)
}
