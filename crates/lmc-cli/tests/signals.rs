//! lmc stopped from outside: by SIGTERM, SIGHUP or SIGINT mid-run, by its
//! input being truncated or rewritten while read, and destinations that are
//! not files. Nothing may be left behind: no temporary file, no partial
//! output, and no device replaced.
#![cfg(unix)]

mod common;
use common::{lmc, text};

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `len` bytes of F32 values shaped like weights (a few exponents, random
/// mantissas), so that lmc codes them rather than storing them.
fn weights(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bits = (x as u32 & 0x807F_FFFF) | ((0x78 + ((x >> 40) & 3) as u32) << 23);
        out.extend_from_slice(&bits.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A folder with `big.f32`: large enough that compressing it on one
/// thread with `--best` takes a good while even in a release build.
fn big_input() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.f32");
    fs::write(&input, weights(96 << 20)).unwrap();
    (dir, input)
}

/// Starts `lmc -q -t 1 compress --best --dtype F32 big.f32 -o big.lmc` in `dir`.
fn start_compress(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lmc"))
        .current_dir(dir)
        .args(["-q", "-t", "1", "compress", "--best", "--dtype", "F32"])
        .args(["big.f32", "-o", "big.lmc"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The temporary outputs in `dir`.
fn temps(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".lmc-tmp"))
        .collect()
}

/// Waits until lmc has written part of its output (a temporary file with
/// something in it), so that what comes next hits it mid-run.
fn wait_for_output_started(dir: &Path, child: &mut Child) {
    let start = Instant::now();
    loop {
        if temps(dir)
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lmc ended ({status}) before it had written anything");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "lmc wrote nothing in two minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child` (two minutes at most); returns its status and stderr.
fn finish(mut child: Child) -> (ExitStatus, String) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("lmc did not stop within two minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (out.status, text(&out.stderr))
}

fn send(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// A signal mid-run stops lmc with an error, and neither a temporary file
/// nor the output is left.
fn stopped_by(signal: &str) {
    let (dir, _input) = big_input();
    let mut child = start_compress(dir.path());
    wait_for_output_started(dir.path(), &mut child);
    send(&child, signal);
    let (status, stderr) = finish(child);
    assert!(
        !status.success(),
        "SIG{signal}: lmc still succeeded: {stderr}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "SIG{signal}: lmc did not end with an error of its own ({status}): {stderr}"
    );
    assert!(stderr.contains("cancelled"), "SIG{signal}: {stderr}");
    assert_eq!(
        temps(dir.path()),
        Vec::<PathBuf>::new(),
        "SIG{signal}: left"
    );
    assert!(!dir.path().join("big.lmc").exists(), "SIG{signal}");
}

#[test]
fn sigterm_mid_run_leaves_no_temporary_file() {
    stopped_by("TERM");
}

#[test]
fn sighup_mid_run_leaves_no_temporary_file() {
    stopped_by("HUP");
}

#[test]
fn sigint_mid_run_leaves_no_temporary_file() {
    stopped_by("INT");
}

/// An input truncated while lmc maps it raises SIGBUS on the next page past
/// its new end: lmc must say which file changed, end with status 1 (not
/// die of the signal, status 135), and leave no temporary file.
#[test]
fn input_truncated_mid_run_is_an_error_naming_it() {
    let (dir, input) = big_input();
    let mut child = start_compress(dir.path());
    wait_for_output_started(dir.path(), &mut child);
    fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let (status, stderr) = finish(child);
    assert_eq!(status.code(), Some(1), "{status}: {stderr}");
    assert!(stderr.contains("big.f32"), "{stderr}");
    // "truncated" from the SIGBUS handler; "changed size" if lmc had read
    // every page before the truncation.
    assert!(
        stderr.contains("was truncated while lmc was reading it")
            || stderr.contains("changed size while lmc was reading it"),
        "{stderr}"
    );
    assert_eq!(temps(dir.path()), Vec::<PathBuf>::new(), "left");
    assert!(!dir.path().join("big.lmc").exists());
}

/// A file rewritten in place while read raises no SIGBUS, but the output
/// would mix old and new bytes: refused before it is committed.
#[test]
fn input_rewritten_mid_run_is_an_error_naming_it() {
    let (dir, input) = big_input();
    let mut child = start_compress(dir.path());
    wait_for_output_started(dir.path(), &mut child);
    // Another writer, a little later than the open (so the modification
    // time differs even on file systems with coarse timestamps).
    std::thread::sleep(Duration::from_millis(20));
    let f = fs::OpenOptions::new().write(true).open(&input).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"rewritten", 90 << 20).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let (status, stderr) = finish(child);
    assert_eq!(status.code(), Some(1), "{status}: {stderr}");
    assert!(
        stderr.contains("big.f32 was modified while lmc was reading it"),
        "{stderr}"
    );
    assert_eq!(temps(dir.path()), Vec::<PathBuf>::new(), "left");
    assert!(!dir.path().join("big.lmc").exists());
}

/// A small input to write somewhere odd.
fn small_input(dir: &Path) {
    fs::write(dir.join("w.f32"), weights(4096)).unwrap();
}

/// Outputs are renamed into place, so a destination that is not a regular
/// file is refused rather than replaced: a named pipe (which a regression
/// could replace without harm) with `--force`, and /dev/null itself
/// without it (with it, a regression running as root would replace the
/// machine's /dev/null).
#[test]
fn destinations_that_are_not_files_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    small_input(dir.path());
    let fifo = dir.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let out = lmc(
            dir.path(),
            &[
                "compress", "--dtype", "F32", "w.f32", "-o", "pipe", "--force",
            ],
        );
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("pipe is a named pipe, not a regular file"),
            "{err}"
        );
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    } else {
        eprintln!("mkfifo unavailable: the named-pipe case is skipped");
    }

    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let out = lmc(
        dir.path(),
        &[
            "compress", "--dtype", "F32", "w.f32", "-o", "sub", "--force",
        ],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("sub is a directory, not a regular file"),
        "{err}"
    );
    assert!(sub.is_dir());

    let null = Path::new("/dev/null");
    assert!(fs::metadata(null).unwrap().file_type().is_char_device());
    let out = lmc(
        dir.path(),
        &["compress", "--dtype", "F32", "w.f32", "-o", "/dev/null"],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("/dev/null is a character device, not a regular file"),
        "{err}"
    );
    assert!(fs::metadata(null).unwrap().file_type().is_char_device());
    assert_eq!(temps(Path::new("/dev")), Vec::<PathBuf>::new());
    assert_eq!(temps(dir.path()), Vec::<PathBuf>::new());
}
