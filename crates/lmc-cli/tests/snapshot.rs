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
        &["step 10:", "stored whole"],
    );
    expect(
        lmc()
            .args(["snapshot", "add"])
            .arg(&fx.store)
            .arg(fx.file(20, n)),
        true,
        &["step 20:", "step 10 re-encoded as a delta against it"],
    );
    for step in [30, 40, 50, 60] {
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
    // The newest whole, each other a delta against the one after it; 30
    // stays whole, else a restore of 10 would decode 3 deltas.
    assert_eq!(depths, [2, 1, 0, 2, 1, 0]);
    fx.check_all(n);

    // The table names parents.
    expect(
        lmc().args(["snapshot", "list"]).arg(&fx.store),
        true,
        &["whole", "6 snapshots", "chains of at most 2 deltas"],
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

/// A directory checkpoint of a mixed-precision run: the fp32 master
/// weights, their BF16 rounding, and a config (test data).
fn mixed_precision_dir(root: &std::path::Path, step: u64, n: usize) -> PathBuf {
    let dir = root.join(format!("ckpt-{step}"));
    fs::create_dir_all(&dir).unwrap();
    let file = |dtype: Dtype, data: &[u8]| {
        let infos = [TensorInfo {
            name: "w".into(),
            dtype,
            shape: vec![n as u64],
        }];
        let mut out = header(&infos, &Default::default()).unwrap();
        out.extend_from_slice(data);
        out
    };
    let (mut f, mut b) = (Vec::new(), Vec::new());
    for i in 0..n as u64 {
        let x = ((i.wrapping_mul(2654435761) % 20011) as f32 / 20011.0 - 0.5) * 0.1
            + ((i + step) % 7) as f32 * 1e-5 * step as f32;
        f.extend_from_slice(&x.to_le_bytes());
        b.extend_from_slice(&lmc_core::derive::bf16_bits(x.to_bits()).to_le_bytes());
    }
    fs::write(dir.join("master-fp32.safetensors"), file(Dtype::F32, &f)).unwrap();
    fs::write(dir.join("weights-bf16.safetensors"), file(Dtype::BF16, &b)).unwrap();
    fs::write(dir.join("config.json"), format!("{{\"step\": {step}}}")).unwrap();
    dir
}

#[test]
fn directory_snapshots_derive_bf16_weights_from_their_masters() {
    let fx = Fixture::new();
    let n = 20_000;
    let steps = [10u64, 20, 30];
    for step in steps {
        let dir = mixed_precision_dir(fx.dir.path(), step, n);
        lmc()
            .args(["snapshot", "add", "-q", "--step", &step.to_string()])
            .arg(&fx.store)
            .arg(&dir)
            .assert()
            .success();
    }
    let manifest: Value =
        serde_json::from_slice(&fs::read(fx.store.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["version"], 5);
    for s in manifest["snapshots"].as_array().unwrap() {
        let w = s["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "weights-bf16.safetensors")
            .unwrap();
        assert_eq!(w["sources"], serde_json::json!(["master-fp32.safetensors"]));
        assert!(w["stored"].as_u64().unwrap() < 2_000, "{w}");
    }
    lmc()
        .args(["snapshot", "verify", "-q"])
        .arg(&fx.store)
        .assert()
        .success();
    for step in steps {
        let out = fx.dir.path().join(format!("restored-{step}"));
        lmc()
            .args(["snapshot", "restore", "-q"])
            .arg(&fx.store)
            .arg(step.to_string())
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        let ckpt = fx.dir.path().join(format!("ckpt-{step}"));
        for f in [
            "master-fp32.safetensors",
            "weights-bf16.safetensors",
            "config.json",
        ] {
            assert!(
                fs::read(out.join(f)).unwrap() == fs::read(ckpt.join(f)).unwrap(),
                "step {step}: {f} does not restore byte-exactly"
            );
        }
    }
    // The object of a BF16 file alone is refused by decompress, naming its source.
    let obj = manifest["snapshots"][2]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "weights-bf16.safetensors")
        .unwrap()["object"]
        .as_str()
        .unwrap()
        .to_string();
    expect(
        lmc()
            .arg("decompress")
            .arg(fx.store.join("objects").join(obj))
            .arg("-o")
            .arg(fx.dir.path().join("alone.safetensors")),
        false,
        &["master-fp32.safetensors", "not given"],
    );
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
/// Retired objects are deleted at once (grace 0), so that the garbage
/// collection's failpoint is reached too.
fn crash_at(point: &str, args: &[&std::ffi::OsStr]) {
    let out = StdCommand::new(assert_cmd::cargo::cargo_bin("lmc"))
        .args(args)
        .env(lmc_store::FAILPOINT_VAR, point)
        .env(lmc_store::RETIRE_GRACE_VAR, "0")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "lmc did not stop at failpoint {point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The steps of an add: the new snapshot's objects written, the parent's
/// re-encoded as a delta against it, the commit, the parent's old whole
/// object deleted (grace 0).
const ADD_POINTS: &[&str] = &[
    "add:objects-written",
    "add:parent-rewritten",
    "commit:objects-synced",
    "commit:before-rename",
    "commit:before-dir-sync",
    "add:committed",
    "gc:removed-one",
];

/// Checks that every object under `objects/` is named by the manifest (as
/// a snapshot's file, or retired and kept for readers): nothing left over.
fn no_leftover_objects(store: &std::path::Path, why: &str) {
    let m: Value = serde_json::from_slice(&fs::read(store.join("manifest.json")).unwrap()).unwrap();
    let mut named = std::collections::HashSet::new();
    for s in m["snapshots"].as_array().unwrap() {
        for f in s["files"].as_array().unwrap() {
            named.insert(f["object"].as_str().unwrap().to_string());
        }
    }
    for r in m
        .get("retired")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        named.insert(r["object"].as_str().unwrap().to_string());
    }
    for e in fs::read_dir(store.join("objects")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(named.contains(&name), "leftover object {name} after {why}");
    }
}

#[test]
fn crashes_during_add_lose_nothing_committed() {
    let n = 20_000;
    for (k, point) in ADD_POINTS.iter().enumerate() {
        let fx = Fixture::new();
        // Retired objects deleted at once, so that the only object the
        // crashing add's garbage collection finds is the one its commit
        // retired (the parent's whole object).
        for step in [1, 2, 3] {
            lmc()
                .args(["snapshot", "add", "-q"])
                .arg(&fx.store)
                .arg(fx.file(step, n))
                .env(lmc_store::RETIRE_GRACE_VAR, "0")
                .assert()
                .success();
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
        let committed = k >= 4;
        let want: &[u64] = if committed { &[1, 2, 3, 4] } else { &[1, 2, 3] };
        assert_eq!(steps, want, "after a crash at {point}");
        fx.check_all(n);
        // The next writer cleans up and goes on.
        if !committed {
            fx.add(4, n);
        }
        fx.add(5, n);
        fx.check_all(n);
        no_leftover_objects(&fx.store, point);
    }
}

/// `add --defer` commits the new snapshot and leaves its parent whole;
/// a crash at any step of the `finish` that re-encodes it loses nothing,
/// and the next `finish` (or add) completes the work.
#[test]
fn crashes_during_deferred_work_lose_nothing() {
    let n = 20_000;
    let deferred = |fx: &Fixture| -> Vec<u64> {
        fx.list()["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["deferred"].as_bool().unwrap())
            .map(|s| s["step"].as_u64().unwrap())
            .collect()
    };
    let finish = |fx: &Fixture| -> std::process::Output {
        lmc()
            .args(["snapshot", "finish"])
            .arg(&fx.store)
            .output()
            .unwrap()
    };
    for point in [
        "finish:parent-rewritten",
        "commit:objects-synced",
        "commit:before-rename",
        "commit:before-dir-sync",
        "gc:removed-one",
    ] {
        let fx = Fixture::new();
        for step in [1, 2] {
            fx.add(step, n);
        }
        for step in [3, 4] {
            lmc()
                .args(["snapshot", "add", "-q", "--defer"])
                .arg(&fx.store)
                .arg(fx.file(step, n))
                .assert()
                .success();
        }
        // Both parents of the deferred adds are whole, marked, restorable.
        assert_eq!(deferred(&fx), [2, 3]);
        fx.check_all(n);
        crash_at(
            point,
            &["snapshot".as_ref(), "finish".as_ref(), fx.store.as_os_str()],
        );
        assert_eq!(fx.steps(), [1, 2, 3, 4], "after a crash at {point}");
        fx.check_all(n);
        let out = finish(&fx);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(deferred(&fx).is_empty(), "after {point}");
        let parents: Vec<_> = fx.list()["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["parent"].as_u64())
            .collect();
        assert_eq!(parents, [Some(2), Some(3), Some(4), None], "after {point}");
        fx.check_all(n);
        no_leftover_objects(&fx.store, point);
        // Nothing left to do.
        let out = finish(&fx);
        assert!(String::from_utf8_lossy(&out.stdout).contains("re-encoded 0 snapshots"));
    }
    // A plain add finishes the deferred work before its own.
    let fx = Fixture::new();
    fx.add(1, n);
    lmc()
        .args(["snapshot", "add", "-q", "--defer"])
        .arg(&fx.store)
        .arg(fx.file(2, n))
        .assert()
        .success();
    assert_eq!(deferred(&fx), [1]);
    fx.add(3, n);
    assert!(deferred(&fx).is_empty());
    fx.check_all(n);
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

/// `remove` commits as prune does: a crash at any of its steps leaves the
/// store with the snapshot or without it, everything in it restorable.
#[test]
fn crashes_during_remove_lose_nothing_kept() {
    let n = 20_000;
    for point in [
        "prune:objects-written",
        "commit:objects-synced",
        "commit:before-rename",
        "commit:before-dir-sync",
        "gc:removed-one",
    ] {
        let fx = Fixture::new();
        for step in 1..=4 {
            fx.add(step, n);
        }
        crash_at(
            point,
            &[
                "snapshot".as_ref(),
                "remove".as_ref(),
                "-q".as_ref(),
                fx.store.as_os_str(),
                "2".as_ref(),
            ],
        );
        let steps = fx.steps();
        assert!(
            steps == [1, 2, 3, 4] || steps == [1, 3, 4],
            "after a crash at {point}: {steps:?}"
        );
        fx.check_all(n);
        if steps.len() == 4 {
            lmc()
                .args(["snapshot", "remove", "-q"])
                .arg(&fx.store)
                .arg("2")
                .assert()
                .success();
        }
        assert_eq!(fx.steps(), [1, 3, 4]);
        fx.check_all(n);
    }
}

/// The store lmc-store's tests keep as a fixture, written by lmc before
/// reverse deltas, copied into `dir`; and the checkpoints it holds.
fn legacy_store(dir: &std::path::Path) -> (PathBuf, Vec<(u64, Vec<u8>)>) {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lmc-store/tests/data/legacy-store");
    let store = dir.join("legacy");
    fs::create_dir_all(store.join("objects")).unwrap();
    fs::copy(
        data.join("store/manifest.json"),
        store.join("manifest.json"),
    )
    .unwrap();
    for e in fs::read_dir(data.join("store/objects")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), store.join("objects").join(e.file_name())).unwrap();
    }
    let inputs = (20..=70)
        .step_by(10)
        .map(|step| {
            let p = data.join(format!("inputs/step-{step:03}.safetensors"));
            (step, fs::read(p).unwrap())
        })
        .collect();
    (store, inputs)
}

/// Every snapshot of `store` restores to its checkpoint, and verify passes.
fn check_legacy(store: &std::path::Path, inputs: &[(u64, Vec<u8>)], dir: &std::path::Path) {
    lmc()
        .args(["snapshot", "verify", "-q"])
        .arg(store)
        .assert()
        .success();
    for (step, bytes) in inputs {
        let out = dir.join(format!("restored-{step}"));
        lmc()
            .args(["snapshot", "restore", "-q", "--force"])
            .arg(store)
            .arg(step.to_string())
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        assert!(fs::read(&out).unwrap() == *bytes, "step {step}");
    }
}

/// `convert` commits as prune does: a crash at any of its steps leaves the
/// old layout or the new one, every snapshot restorable; run again, it
/// finishes the job.
#[test]
fn crashes_during_convert_lose_nothing() {
    for (k, point) in [
        "convert:objects-written",
        "commit:objects-synced",
        "commit:before-rename",
        "commit:before-dir-sync",
        "gc:removed-one",
    ]
    .iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, inputs) = legacy_store(dir.path());
        crash_at(
            point,
            &[
                "snapshot".as_ref(),
                "convert".as_ref(),
                "-q".as_ref(),
                store.as_os_str(),
            ],
        );
        let m: Value =
            serde_json::from_slice(&fs::read(store.join("manifest.json")).unwrap()).unwrap();
        // The garbage collection also runs when the writer opens (deleting
        // the fixture's retired objects), before the commit.
        if *point != "gc:removed-one" {
            assert_eq!(m["version"], if k >= 3 { 3 } else { 2 }, "after {point}");
        }
        check_legacy(&store, &inputs, dir.path());
        expect(
            lmc().args(["snapshot", "convert"]).arg(&store),
            true,
            &["re-encoded"],
        );
        let l: Value = serde_json::from_slice(
            &lmc()
                .args(["snapshot", "list", "--json"])
                .arg(&store)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let parents: Vec<Value> = l["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["parent"].clone())
            .collect();
        // Chains of at most 3 deltas (the store's keyframe_every is 4).
        assert_eq!(
            parents,
            [
                Value::from(30),
                Value::Null,
                Value::from(50),
                Value::from(60),
                Value::from(70),
                Value::Null
            ],
            "after {point}"
        );
        check_legacy(&store, &inputs, dir.path());
        no_leftover_objects(&store, point);
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

/// `convert` killed at random moments: the store keeps its old layout or
/// has the new one, everything in it restores, and a convert run again
/// finishes the job. (A store of whole snapshots, made with
/// `--keyframe-every 1`, converted to chains of up to 7 deltas.)
#[test]
fn sigkill_at_random_moments_during_convert() {
    let n = 400_000;
    let fx = Fixture::new();
    for step in 1..=6 {
        lmc()
            .args(["snapshot", "add", "-q", "--keyframe-every", "1"])
            .arg(&fx.store)
            .arg(fx.file(step, n))
            .assert()
            .success();
    }
    let parents = |fx: &Fixture| -> Vec<Value> {
        fx.list()["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["parent"].clone())
            .collect()
    };
    assert!(parents(&fx).iter().all(Value::is_null));
    let mut converted = false;
    for delay_ms in [0u64, 5, 15, 30, 60, 120, 250, 500] {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("lmc"))
            .args(["snapshot", "convert", "-q", "--keyframe-every", "8"])
            .arg(&fx.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(
            fx.steps(),
            [1, 2, 3, 4, 5, 6],
            "after SIGKILL at {delay_ms} ms"
        );
        fx.check_all(n);
        if parents(&fx).iter().any(|x| !x.is_null()) {
            converted = true;
            break;
        }
    }
    // Run again (a no-op if a killed one had committed): it finishes the
    // job, and as the next writer removes what the killed ones left.
    expect(
        lmc()
            .args(["snapshot", "convert", "--keyframe-every", "8"])
            .arg(&fx.store),
        true,
        &[if converted {
            "re-encoded 0 of 6"
        } else {
            "re-encoded 5 of 6"
        }],
    );
    no_leftover_objects(&fx.store, "the SIGKILLs");
    let want: Vec<Value> = [2, 3, 4, 5, 6]
        .into_iter()
        .map(Value::from)
        .chain([Value::Null])
        .collect();
    assert_eq!(parents(&fx), want);
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

/// Readers never wait for a writer, or fail because of one: `list`,
/// `restore` and `verify` work while the lock is held, and without
/// `--wait` a second writer fails at once with a clear message.
#[test]
fn readers_work_while_a_writer_holds_the_store() {
    let fx = Fixture::new();
    let n = 2000;
    fx.add(1, n);
    let lock = fs::File::options()
        .write(true)
        .open(fx.store.join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    assert_eq!(fx.steps(), [1]);
    fx.check_all(n);
    let start = std::time::Instant::now();
    expect(
        lmc()
            .args(["snapshot", "add"])
            .arg(&fx.store)
            .arg(fx.file(2, n)),
        false,
        &["in use by another lmc process", "--wait"],
    );
    expect(
        lmc().args(["snapshot", "remove"]).arg(&fx.store).arg("1"),
        false,
        &["in use by another lmc process"],
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    // With --wait, a second writer waits for the first, says so, and goes on.
    let child = StdCommand::new(assert_cmd::cargo::cargo_bin("lmc"))
        .args(["snapshot", "add", "--wait=60"])
        .arg(&fx.store)
        .arg(fx.file(2, n))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    drop(lock);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for another writer"), "{stderr}");
    assert_eq!(fx.steps(), [1, 2]);
    // A bounded wait that runs out says how long it waited.
    let lock = fs::File::options()
        .write(true)
        .open(fx.store.join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    expect(
        lmc()
            .args(["snapshot", "prune", "--keep-last", "1", "--wait=0.3"])
            .arg(&fx.store),
        false,
        &["in use by another lmc process", "still after"],
    );
    expect(
        lmc()
            .args(["snapshot", "add", "--wait=x"])
            .arg(&fx.store)
            .arg(fx.file(3, n)),
        false,
        &["--wait"],
    );
    drop(lock);
}

#[test]
fn remove_takes_out_one_snapshot() {
    let fx = Fixture::new();
    let n = 5000;
    for step in [10, 20, 30, 40] {
        fx.add(step, n);
    }
    // A step typed wrong: removed, and the snapshot coded against it is
    // re-encoded.
    expect(
        lmc().args(["snapshot", "remove"]).arg(&fx.store).arg("20"),
        true,
        &["removed 1 snapshot (step 20), re-encoded 1"],
    );
    assert_eq!(fx.steps(), [10, 30, 40]);
    fx.check_all(n);
    expect(
        lmc().args(["snapshot", "remove"]).arg(&fx.store).arg("20"),
        false,
        &["no snapshot at step 20"],
    );
    fx.add(50, n);
    fx.check_all(n);
    for step in ["10", "30", "40", "50"] {
        lmc()
            .args(["snapshot", "remove", "-q"])
            .arg(&fx.store)
            .arg(step)
            .assert()
            .success();
    }
    assert!(fx.steps().is_empty());
    fx.check_all(n);
    fx.add(60, n);
    assert_eq!(fx.steps(), [60]);
    fx.check_all(n);
}

/// A tiny deterministic generator for the test's random moments.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One writer process after another adds the next step and prunes
/// (`--keep-last 2 --keep-every 5`, so every fifth step stays, re-encoded
/// when its parent goes), with retired objects deleted after `grace`
/// seconds (not the default 15 minutes, so that deletions happen; 0 would
/// let a reader slower than two commits fail twice), while
/// three reader processes list, restore the steps that stay, and verify.
/// With `kill`, some writers are killed (SIGKILL) at random moments.
/// Every restore must be byte-identical and no reader may fail; afterwards
/// `verify` passes, everything listed restores and a new writer can add.
fn writer_and_readers(kill: bool, grace: &str, seconds: u64) {
    let fx = std::sync::Arc::new(Fixture::new());
    let n = 20_000;
    fx.add(1, n);
    for step in 2..=400 {
        fx.file(step, n);
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (fx, done) = (fx.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut restores, mut verifies, mut retries) = (0u32, 0u32, 0u32);
                let mut rng = Lcg(r);
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let steps: Vec<u64> = fx.steps().into_iter().filter(|s| s % 5 == 0).collect();
                    if rng.below(4) == 0 || steps.is_empty() {
                        let out = lmc()
                            .args(["snapshot", "verify", "-q"])
                            .arg(&fx.store)
                            .output()
                            .unwrap();
                        assert!(
                            out.status.success(),
                            "reader {r}: verify failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                        verifies += 1;
                        continue;
                    }
                    let step = steps[rng.below(steps.len() as u64) as usize];
                    let dest = fx.dir.path().join(format!("r{r}-{step}-{restores}"));
                    // Not quiet: the store says when it retries.
                    let out = lmc()
                        .args(["snapshot", "restore"])
                        .arg(&fx.store)
                        .arg(step.to_string())
                        .arg("-o")
                        .arg(&dest)
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "reader {r}: restore of step {step} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert!(
                        fs::read(&dest).unwrap() == checkpoint(step, n),
                        "reader {r}: step {step} differs"
                    );
                    fs::remove_file(&dest).unwrap();
                    restores += 1;
                    retries += u32::from(String::from_utf8_lossy(&out.stderr).contains("retrying"));
                }
                (restores, verifies, retries)
            })
        })
        .collect();

    let mut rng = Lcg(if kill { 99 } else { 7 });
    let (mut writes, mut killed) = (0u32, 0u32);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let next = fx.steps().last().map_or(1, |s| s + 1);
        for prune in [false, true] {
            let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("lmc"));
            cmd.args(["snapshot"]);
            if prune {
                cmd.args(["prune", "-q", "--keep-last", "2", "--keep-every", "5"])
                    .arg(&fx.store);
            } else {
                cmd.args(["add", "-q"]).arg(&fx.store).arg(fx.file(next, n));
            }
            let mut child = cmd
                .env(lmc_store::RETIRE_GRACE_VAR, grace)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            if kill && rng.below(3) == 0 {
                std::thread::sleep(Duration::from_millis(rng.below(120)));
                let _ = child.kill();
                let status = child.wait().unwrap();
                killed += u32::from(!status.success());
            } else {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "writer failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            writes += 1;
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for (r, h) in readers.into_iter().enumerate() {
        let (restores, verifies, retries) = h.join().unwrap();
        eprintln!(
            "reader {r}: {restores} restores ({retries} retried from a newer manifest), \
             {verifies} verifies"
        );
        assert!(restores + verifies > 0, "reader {r} did nothing");
    }
    eprintln!("{writes} writers, {killed} killed; steps {:?}", fx.steps());
    assert!(writes >= 4, "the writer loop ran {writes} times only");
    // Nothing lost: whatever the moment a writer died, the store verifies,
    // every listed snapshot restores, every fifth step is there, and a new
    // writer adds (cleaning up what killed writers left).
    fx.check_all(n);
    let steps = fx.steps();
    let last = *steps.last().unwrap();
    for s in (5..last).step_by(5) {
        assert!(steps.contains(&s), "step {s} was lost: {steps:?}");
    }
    fx.add(last + 1, n);
    lmc()
        .args([
            "snapshot",
            "prune",
            "-q",
            "--keep-last",
            "2",
            "--keep-every",
            "5",
        ])
        .arg(&fx.store)
        .env(lmc_store::RETIRE_GRACE_VAR, "0")
        .assert()
        .success();
    fx.check_all(n);
    let out = lmc()
        .args(["snapshot", "verify", "-q"])
        .arg(&fx.store)
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: usize = fx.list()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["files"].as_u64().unwrap() as usize)
        .sum();
    let objects = fs::read_dir(fx.store.join("objects")).unwrap().count();
    assert_eq!(objects, listed, "objects left behind");
}

#[test]
fn readers_never_fail_while_a_writer_adds_and_prunes() {
    writer_and_readers(false, "1", 8);
}

#[test]
fn writers_killed_at_random_moments_block_no_one_and_lose_nothing() {
    writer_and_readers(true, "1", 8);
}
