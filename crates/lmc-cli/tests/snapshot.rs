//! `lmc snapshot` end to end, and crash safety: the process is killed at
//! every step of `add` and `prune` (failpoints, and SIGKILL at random
//! moments), and afterwards every snapshot committed before is restorable
//! byte-exactly and `verify` passes.

use std::fs;
use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::time::Duration;

use assert_cmd::Command;
use lmc_core::Dtype;
use lmc_tensors::safetensors::{TensorInfo, header};
use serde_json::Value;
use tempfile::TempDir;

fn lmc() -> Command {
    Command::cargo_bin("lmc").unwrap()
}

/// A checkpoint at `step` of a toy run: a BF16 and an F32 tensor whose
/// values drift a little from step to step (test data, not a ratio claim).
fn checkpoint(step: u64, n: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(n * 4);
    let mut b = Vec::with_capacity(n * 2);
    for i in 0..n as u64 {
        let base = ((i.wrapping_mul(2654435761) % 20011) as f32 / 20011.0 - 0.5) * 0.1;
        // Each element changes at a few steps only.
        let bumps = (0..=step).filter(|s| (i + 7 * s) % 5 == 0).count() as f32;
        let x = base + bumps * 1e-4;
        f.extend_from_slice(&x.to_le_bytes());
        b.extend_from_slice(&((x.to_bits() >> 16) as u16).to_le_bytes());
    }
    let infos = [
        TensorInfo {
            name: "master".into(),
            dtype: Dtype::F32,
            shape: vec![n as u64],
        },
        TensorInfo {
            name: "model".into(),
            dtype: Dtype::BF16,
            shape: vec![n as u64],
        },
    ];
    let meta = [("step".to_string(), step.to_string())]
        .into_iter()
        .collect();
    let mut out = header(&infos, &meta).unwrap();
    out.extend_from_slice(&f);
    out.extend_from_slice(&b);
    out
}

/// Runs `cmd`, checks its exit status, and that its stdout (on success)
/// or stderr (on failure) holds every one of `words`.
fn expect(cmd: &mut Command, success: bool, words: &[&str]) {
    let out = cmd.output().unwrap();
    let text = if success { &out.stdout } else { &out.stderr };
    let text = String::from_utf8_lossy(text);
    assert_eq!(
        out.status.success(),
        success,
        "exit status {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for w in words {
        assert!(text.contains(w), "expected {w:?} in:\n{text}");
    }
}

struct Fixture {
    dir: TempDir,
    store: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        Fixture { dir, store }
    }
    fn file(&self, step: u64, n: usize) -> PathBuf {
        let p = self.dir.path().join(format!("ck-{step}.safetensors"));
        if !p.exists() {
            fs::write(&p, checkpoint(step, n)).unwrap();
        }
        p
    }
    fn add(&self, step: u64, n: usize) {
        lmc()
            .args(["snapshot", "add", "-q"])
            .arg(&self.store)
            .arg(self.file(step, n))
            .assert()
            .success();
    }
    fn list(&self) -> Value {
        let out = lmc()
            .args(["snapshot", "list", "--json"])
            .arg(&self.store)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
    fn steps(&self) -> Vec<u64> {
        self.list()["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_u64().unwrap())
            .collect()
    }
    /// `verify` passes and every listed snapshot restores to its checkpoint.
    fn check_all(&self, n: usize) {
        lmc()
            .args(["snapshot", "verify", "-q"])
            .arg(&self.store)
            .assert()
            .success();
        for step in self.steps() {
            let out = self.dir.path().join(format!("restored-{step}"));
            let _ = fs::remove_file(&out);
            lmc()
                .args(["snapshot", "restore", "-q"])
                .arg(&self.store)
                .arg(step.to_string())
                .arg("-o")
                .arg(&out)
                .assert()
                .success();
            assert!(
                fs::read(&out).unwrap() == checkpoint(step, n),
                "step {step} does not restore byte-exactly"
            );
            fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn add_list_restore_verify_prune() {
    let fx = Fixture::new();
    let n = 30_000;
    expect(
        lmc()
            .args(["snapshot", "add", "--keyframe-every", "3"])
            .arg(&fx.store)
            .arg(fx.file(10, n)),
        true,
        &["step 10:", "keyframe"],
    );
    for step in [20, 30, 40, 50, 60] {
        fx.add(step, n);
    }
    let l = fx.list();
    assert_eq!(l["keyframe_every"], 3);
    let depths: Vec<u64> = l["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [0, 1, 2, 0, 1, 2]);
    fx.check_all(n);

    // The table names parents.
    expect(
        lmc().args(["snapshot", "list"]).arg(&fx.store),
        true,
        &["keyframe", "6 snapshots"],
    );

    // Steps must increase; unknown steps are refused.
    expect(
        lmc()
            .args(["snapshot", "add", "--step", "60"])
            .arg(&fx.store)
            .arg(fx.file(60, n)),
        false,
        &["not after the last snapshot"],
    );
    expect(
        lmc()
            .args(["snapshot", "restore"])
            .arg(&fx.store)
            .args(["15", "-o"])
            .arg(fx.dir.path().join("x")),
        false,
        &["no snapshot at step 15"],
    );

    expect(
        lmc()
            .args([
                "snapshot",
                "prune",
                "--keep-last",
                "2",
                "--keep-every",
                "30",
            ])
            .arg(&fx.store),
        true,
        &["removed 3 snapshots"],
    );
    assert_eq!(fx.steps(), [30, 50, 60]);
    fx.check_all(n);
}

#[test]
fn a_second_writer_is_refused() {
    let fx = Fixture::new();
    fx.add(1, 1000);
    let lock = fs::File::options()
        .write(true)
        .open(fx.store.join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    expect(
        lmc()
            .args(["snapshot", "add"])
            .arg(&fx.store)
            .arg(fx.file(2, 1000)),
        false,
        &["in use by another lmc process"],
    );
    drop(lock);
    // Other tests of this binary spawn processes from other threads: a
    // child forked while `lock` was open shares its lock until it execs,
    // so the lock can outlive `drop` by a moment. Retried briefly.
    let mut tries = 0;
    loop {
        let out = lmc()
            .args(["snapshot", "add", "-q"])
            .arg(&fx.store)
            .arg(fx.file(2, 1000))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break;
        }
        tries += 1;
        assert!(
            tries < 50 && stderr.contains("in use by another lmc process"),
            "{stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(fx.steps(), [1, 2]);
}

/// Runs `lmc` with a failpoint set; it must die there (abort), not succeed.
fn crash_at(point: &str, args: &[&std::ffi::OsStr]) {
    let out = StdCommand::new(assert_cmd::cargo::cargo_bin("lmc"))
        .args(args)
        .env(lmc_store::FAILPOINT_VAR, point)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "lmc did not stop at failpoint {point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const ADD_POINTS: &[&str] = &[
    "add:objects-written",
    "commit:objects-synced",
    "commit:before-rename",
    "commit:before-dir-sync",
    "add:committed",
];

#[test]
fn crashes_during_add_lose_nothing_committed() {
    let n = 20_000;
    for (k, point) in ADD_POINTS.iter().enumerate() {
        let fx = Fixture::new();
        for step in [1, 2, 3] {
            fx.add(step, n);
        }
        let file = fx.file(4, n);
        crash_at(
            point,
            &[
                "snapshot".as_ref(),
                "add".as_ref(),
                "-q".as_ref(),
                fx.store.as_os_str(),
                file.as_os_str(),
            ],
        );
        let steps = fx.steps();
        // Before the rename the old manifest stands; after it, the new one.
        let committed = k >= 3;
        let want: &[u64] = if committed { &[1, 2, 3, 4] } else { &[1, 2, 3] };
        assert_eq!(steps, want, "after a crash at {point}");
        fx.check_all(n);
        // The next writer cleans up and goes on.
        if !committed {
            fx.add(4, n);
        }
        fx.add(5, n);
        fx.check_all(n);
        let listed = fx.steps().len();
        let objects = fs::read_dir(fx.store.join("objects")).unwrap().count();
        assert_eq!(objects, listed, "leftover objects after {point}");
    }
}

#[test]
fn crashes_during_prune_lose_nothing_kept() {
    let n = 20_000;
    for point in [
        "prune:objects-written",
        "commit:objects-synced",
        "commit:before-rename",
        "commit:before-dir-sync",
        "gc:removed-one",
    ] {
        let fx = Fixture::new();
        for step in 1..=7 {
            fx.add(step, n);
        }
        crash_at(
            point,
            &[
                "snapshot".as_ref(),
                "prune".as_ref(),
                "-q".as_ref(),
                fx.store.as_os_str(),
                "--keep-last".as_ref(),
                "2".as_ref(),
                "--keep-every".as_ref(),
                "3".as_ref(),
            ],
        );
        let steps = fx.steps();
        assert!(
            steps == [1, 2, 3, 4, 5, 6, 7] || steps == [3, 6, 7],
            "after a crash at {point}: {steps:?}"
        );
        fx.check_all(n);
        lmc()
            .args([
                "snapshot",
                "prune",
                "-q",
                "--keep-last",
                "2",
                "--keep-every",
                "3",
            ])
            .arg(&fx.store)
            .assert()
            .success();
        assert_eq!(fx.steps(), [3, 6, 7]);
        fx.check_all(n);
    }
}

#[test]
fn sigkill_at_random_moments_during_add() {
    let n = 400_000;
    let fx = Fixture::new();
    fx.add(1, n);
    fx.add(2, n);
    let file = fx.file(3, n);
    // Kill after increasing delays; whatever the moment, the store holds
    // steps 1 and 2, or 1, 2 and 3, and everything in it restores.
    let mut added = false;
    for delay_ms in [0u64, 5, 15, 30, 60, 120, 250] {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("lmc"))
            .args(["snapshot", "add", "-q"])
            .arg(&fx.store)
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let steps = fx.steps();
        assert!(
            steps == [1, 2] || steps == [1, 2, 3],
            "after SIGKILL at {delay_ms} ms: {steps:?}"
        );
        fx.check_all(n);
        if steps.len() == 3 {
            added = true;
            assert!(status.success() || status.code().is_none());
            break;
        }
    }
    if !added {
        fx.add(3, n);
    }
    fx.check_all(n);
}

/// `lmc snapshot add` applies the same pickle rule as `lmc compress`: a
/// checkpoint whose pickle calls `os.system` is refused before the store
/// is even created, unless `--allow-pickle-calls`.
#[test]
fn add_refuses_checkpoints_whose_pickles_run_code() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/formats/calls_os_system.pt");
    fs::copy(&fixture, d.join("evil.pt")).unwrap();
    let out = lmc()
        .current_dir(d)
        .args(["snapshot", "add", "s", "evil.pt", "--step", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("evil.pt: calls_os_system/data.pkl names posix.system")
            && err.contains("--allow-pickle-calls"),
        "{err}"
    );
    assert!(!d.join("s").exists());
    lmc()
        .current_dir(d)
        .args([
            "-q",
            "snapshot",
            "add",
            "s",
            "evil.pt",
            "--step",
            "1",
            "--allow-pickle-calls",
        ])
        .assert()
        .success();
    lmc()
        .current_dir(d)
        .args(["-q", "snapshot", "restore", "s", "1", "-o", "back.pt"])
        .assert()
        .success();
    assert_eq!(
        fs::read(d.join("back.pt")).unwrap(),
        fs::read(&fixture).unwrap()
    );
}
