//! Snapshot stores in object storage: `lmc snapshot` on `s3://bucket/prefix`
//! against a real S3-compatible server (`moto_server`, which `.ci/run`
//! starts and names in `LMC_TEST_S3_ENDPOINT`; without it the tests say
//! loudly that they are skipped and pass). moto honours the conditional
//! writes the store's lock and manifest rest on (`If-None-Match: *`,
//! `If-Match: ETAG`), as AWS S3 does.
//!
//! The CLI tests run `lmc` as a user would; the ones that need two writers
//! alive at once, or a writer whose lease ran out under it, open stores in
//! this process through lmc_store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lmc_store::{Error, FileInput, Kind, Store, Wait, WriteOptions};

/// The server's `host:port`, or `None` (the test is then skipped).
fn server() -> Option<String> {
    match std::env::var("LMC_TEST_S3_ENDPOINT") {
        Ok(url) => Some(
            url.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
        ),
        Err(_) => {
            eprintln!(
                "\n*** SKIPPED: LMC_TEST_S3_ENDPOINT is not set, so the S3 store tests did not \
                 run. Start a server with `eval $(scripts/s3-server.sh start)` or run .ci/run. ***\n"
            );
            None
        }
    }
}

/// A new bucket for one test (moto takes unsigned requests).
fn bucket(server: &str, test: &str) -> String {
    let name = format!("lmc-store-{test}-{}", std::process::id());
    common::create_bucket(server, &name);
    name
}

/// `lmc ARGS` with the environment pointing at the server, plus `env`.
fn lmc(server: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmc"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("LMC_STORE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", format!("http://{server}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("LMC_RETRIES", "2")
        .env("LMC_RETRY_TIMEOUT", "20");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        common::text(&out.stderr)
    );
    common::text(&out.stdout)
}

/// The server as object_store settings, for the stores opened in-process.
fn location(server: &str, url: &str) -> lmc_remote::Location {
    let endpoint = format!("http://{server}");
    let opts = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
        ("aws_region", "us-east-1"),
    ];
    lmc_remote::Location::parse_with(url, &opts).unwrap()
}

/// A safetensors file of two f32 tensors that drift a little from step
/// to step, as a training run's do (so later snapshots are deltas).
fn safetensors(step: u64) -> Vec<u8> {
    let n = 16 * 1024;
    let tensor = |seed: u64| -> Vec<u8> {
        (0..n as u64)
            .flat_map(|i| {
                let x = ((i * 2654435761 + seed) % 1000) as f32 / 1000.0;
                let drift = if (i + step).is_multiple_of(97) {
                    step as f32 * 1e-3
                } else {
                    0.0
                };
                (x + drift).to_le_bytes()
            })
            .collect()
    };
    let (a, b) = (tensor(1), tensor(2));
    let header = format!(
        "{{\"a\":{{\"dtype\":\"F32\",\"shape\":[{n}],\"data_offsets\":[0,{}]}},\
         \"b\":{{\"dtype\":\"F32\",\"shape\":[{n}],\"data_offsets\":[{},{}]}}}}",
        a.len(),
        a.len(),
        a.len() + b.len()
    );
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&a);
    out.extend_from_slice(&b);
    out
}

/// The BF16 rounding of a safetensors file of F32 tensors (`safetensors`'s):
/// the same header with BF16 for F32 and halved offsets, then the roundings.
fn bf16_of(f32_file: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(f32_file[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&f32_file[8..8 + n]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(header).unwrap();
    for t in v.as_object_mut().unwrap().values_mut() {
        t["dtype"] = "BF16".into();
        let o = t["data_offsets"].as_array().unwrap();
        let half: Vec<u64> = o.iter().map(|x| x.as_u64().unwrap() / 2).collect();
        t["data_offsets"] = serde_json::json!(half);
    }
    let header = serde_json::to_vec(&v).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for x in f32_file[8 + n..].chunks_exact(4) {
        let bits = u32::from_le_bytes(x.try_into().unwrap());
        out.extend_from_slice(&lmc_core::derive::bf16_bits(bits).to_le_bytes());
    }
    out
}

/// A checkpoint directory of step `step`: the fp32 weights, their BF16
/// rounding (stored as derived from them) and a config.
fn checkpoint(root: &Path, step: u64) -> PathBuf {
    let dir = root.join(format!("ckpt-{step}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors(step)).unwrap();
    std::fs::write(
        dir.join("weights-bf16.safetensors"),
        bf16_of(&safetensors(step)),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), format!("{{\"step\": {step}}}")).unwrap();
    dir
}

fn hash(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// The keys under `prefix` in the bucket, relative to it.
fn keys(server: &str, url: &str) -> Vec<String> {
    let mut k: Vec<String> = location(server, url)
        .list()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    k.sort();
    k
}

#[test]
fn add_list_restore_verify_prune_on_s3() {
    let Some(server) = server() else { return };
    let url = format!("s3://{}/runs/a", bucket(&server, "roundtrip"));
    let dir = tempfile::tempdir().unwrap();
    let steps = [100u64, 200, 300, 400];
    for &step in &steps {
        let ckpt = checkpoint(dir.path(), step);
        let out = lmc(
            &server,
            &[],
            &[
                "snapshot",
                "add",
                &url,
                ckpt.to_str().unwrap(),
                "--step",
                &step.to_string(),
                "-q",
            ],
        );
        ok(out, &format!("add step {step}"));
    }
    let list = ok(lmc(&server, &[], &["snapshot", "list", &url]), "list");
    assert!(list.contains(&format!("{url}: 4 snapshots")), "{list}");
    // Older snapshots are deltas against the newer ones.
    let row = |step: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(step))
            .map(|l| l.split_whitespace().rev().nth(1).unwrap_or("").to_string())
    };
    assert_eq!(row("100").as_deref(), Some("200"), "{list}");
    assert_eq!(row("400").as_deref(), Some("whole"), "{list}");
    ok(lmc(&server, &[], &["snapshot", "verify", &url]), "verify");
    for &step in &steps {
        let out = dir.path().join(format!("restored-{step}"));
        ok(
            lmc(
                &server,
                &[],
                &[
                    "snapshot",
                    "restore",
                    &url,
                    &step.to_string(),
                    "-o",
                    out.to_str().unwrap(),
                    "-q",
                ],
            ),
            "restore",
        );
        let ckpt = dir.path().join(format!("ckpt-{step}"));
        for f in [
            "model.safetensors",
            "weights-bf16.safetensors",
            "config.json",
        ] {
            assert_eq!(
                hash(&std::fs::read(out.join(f)).unwrap()),
                hash(&std::fs::read(ckpt.join(f)).unwrap()),
                "step {step} {f}"
            );
        }
    }
    // The BF16 file of every step is derived from the fp32 file beside it.
    let (manifest, _) = location(&server, &url)
        .join("manifest.json")
        .get()
        .unwrap()
        .expect("a manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    for s in manifest["snapshots"].as_array().unwrap() {
        let f = s["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "weights-bf16.safetensors")
            .unwrap();
        assert_eq!(
            f["sources"],
            serde_json::json!(["model.safetensors"]),
            "{s}"
        );
    }
    // The prefix holds the manifest, the lock and the objects, nothing else.
    let k = keys(&server, &url);
    assert_eq!(&k[..2], ["lock", "manifest.json"], "{k:?}");
    assert!(k[2..].iter().all(|k| k.starts_with("objects/")), "{k:?}");
    // Pruning with no grace deletes what the remaining snapshots no longer need.
    ok(
        lmc(
            &server,
            &[("LMC_STORE_RETIRE_GRACE", "0")],
            &["snapshot", "prune", &url, "--keep-last", "2", "-q"],
        ),
        "prune",
    );
    let list = ok(lmc(&server, &[], &["snapshot", "list", &url]), "list");
    assert!(list.contains(&format!("{url}: 2 snapshots")), "{list}");
    let verify = lmc(&server, &[], &["snapshot", "verify", &url]);
    let said = common::text(&verify.stderr);
    assert!(
        verify.status.success() && !said.contains("not part of any snapshot"),
        "{said}"
    );
    let objects = keys(&server, &url)
        .iter()
        .filter(|k| k.starts_with("objects/"))
        .count();
    assert_eq!(objects, 6, "two snapshots of three files");
}

#[test]
fn a_writer_killed_before_its_commit_leaves_the_last_snapshot_and_its_lock_expires() {
    let Some(server) = server() else { return };
    let url = format!("s3://{}/run", bucket(&server, "crash"));
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (checkpoint(dir.path(), 1), checkpoint(dir.path(), 2));
    let add = |ckpt: &Path, step: &str, env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "add",
            &url,
            ckpt.to_str().unwrap(),
            "--step",
            step,
            "-q",
        ];
        args.extend_from_slice(extra);
        lmc(&server, env, &args)
    };
    ok(add(&one, "1", &[], &[]), "add step 1");
    // Killed (abort: no clean-up) with its objects uploaded, the manifest
    // not yet written: its lock stays, with a lease of 3 s.
    let died = add(
        &two,
        "2",
        &[
            ("LMC_STORE_FAILPOINT", "commit:objects-synced"),
            ("LMC_STORE_LOCK_LEASE", "3"),
        ],
        &[],
    );
    assert!(!died.status.success());
    let died_at = Instant::now();
    // Readers see step 1, whole; the uploaded objects are only unreferenced.
    let list = ok(lmc(&server, &[], &["snapshot", "list", &url]), "list");
    assert!(list.contains(&format!("{url}: 1 snapshots")), "{list}");
    let verify = lmc(&server, &[], &["snapshot", "verify", &url]);
    assert!(verify.status.success());
    assert!(common::text(&verify.stderr).contains("not part of any snapshot"));
    // A second writer is refused while the lease runs, by a message that
    // names the lock and its holder.
    let refused = add(&two, "2", &[], &[]);
    let said = common::text(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains(&format!("lock {url}/lock is held by"))
            && said.contains("its lease running")
            && said.contains("--wait"),
        "{said}"
    );
    // Waiting, it takes the lock over once the lease has run out, removes
    // the dead writer's objects and commits.
    ok(
        add(&two, "2", &[], &["--wait=30"]),
        "add step 2 after waiting",
    );
    assert!(died_at.elapsed() >= Duration::from_secs(2));
    let verify = lmc(&server, &[], &["snapshot", "verify", &url]);
    let said = common::text(&verify.stderr);
    assert!(
        verify.status.success() && !said.contains("not part of any snapshot"),
        "{said}"
    );
    let restored = dir.path().join("restored");
    ok(
        lmc(
            &server,
            &[],
            &[
                "snapshot",
                "restore",
                &url,
                "2",
                "-o",
                restored.to_str().unwrap(),
                "-q",
            ],
        ),
        "restore",
    );
    assert_eq!(
        std::fs::read(restored.join("model.safetensors")).unwrap(),
        std::fs::read(two.join("model.safetensors")).unwrap()
    );
}

fn file(step: u64) -> Vec<u8> {
    safetensors(step)
}

fn add_step(store: &mut Store, step: u64) -> lmc_store::Result<()> {
    let bytes = file(step);
    let input = FileInput::from_bytes("model.safetensors", &bytes, None);
    store.add(step, Kind::File, &[input]).map(|_| ())
}

/// A writer's store under `url` on the test server, with these options.
trait OpenAt {
    fn open_at(self, server: &str, url: &str) -> lmc_store::Result<Store>;
}

impl OpenAt for WriteOptions {
    fn open_at(self, server: &str, url: &str) -> lmc_store::Result<Store> {
        self.open_location(location(server, url), &mut || {})
    }
}

#[test]
fn two_writers_at_once_the_second_is_refused_naming_the_lock() {
    let Some(server) = server() else { return };
    let url = format!("s3://{}/run", bucket(&server, "two-writers"));
    let mut first = WriteOptions::new()
        .create(true)
        .open_at(&server, &url)
        .unwrap();
    add_step(&mut first, 1).unwrap();
    let second = WriteOptions::new().open_at(&server, &url);
    match second {
        Err(Error::Locked(msg)) => assert!(
            msg.contains(&format!("{url}/lock")) && msg.contains("is held by"),
            "{msg}"
        ),
        other => panic!("expected Locked, got {other:?}"),
    }
    // A writer that waits gets it once the first finishes (drops its store).
    let waiter = {
        let (server, url) = (server.clone(), url.clone());
        std::thread::spawn(move || {
            let mut s = WriteOptions::new()
                .wait(Wait::For(Duration::from_secs(30)))
                .open_at(&server, &url)
                .unwrap();
            add_step(&mut s, 2).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    drop(first);
    waiter.join().unwrap();
    let reader = Store::open_location(location(&server, &url)).unwrap();
    let steps: Vec<u64> = reader.snapshots().iter().map(|s| s.step).collect();
    assert_eq!(steps, [1, 2]);
}

#[test]
fn a_writer_whose_lock_was_taken_over_commits_nothing() {
    let Some(server) = server() else { return };
    let url = format!("s3://{}/run", bucket(&server, "taken-over"));
    let mut stale = WriteOptions::new()
        .create(true)
        .lease(Duration::from_secs(2))
        .open_at(&server, &url)
        .unwrap();
    add_step(&mut stale, 1).unwrap();
    // As if this writer had stopped for longer than its lease: its lock,
    // as the next writer finds it, has run out.
    let lock = location(&server, &format!("{url}/lock"));
    let (body, _) = lock.get().unwrap().unwrap();
    let mut held: serde_json::Value = serde_json::from_slice(&body).unwrap();
    held["expires"] = 1.into();
    lock.put(
        &serde_json::to_vec(&held).unwrap(),
        lmc_remote::Put::Overwrite,
    )
    .unwrap();
    let mut next = WriteOptions::new().open_at(&server, &url).unwrap();
    // The stale writer's next commit finds the lock taken over: refused,
    // nothing committed (even though the new writer has not committed yet).
    match add_step(&mut stale, 2) {
        Err(Error::Locked(msg)) => assert!(msg.contains("lost its lock"), "{msg}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    add_step(&mut next, 3).unwrap();
    drop(next);
    drop(stale);
    let reader = Store::open_location(location(&server, &url)).unwrap();
    let steps: Vec<u64> = reader.snapshots().iter().map(|s| s.step).collect();
    assert_eq!(steps, [1, 3]);
    assert_eq!(reader.restore_files(3).unwrap()[0].bytes, file(3));
    // The newest is a plain container: its URL, read in ranges.
    let whole = reader.whole_file(3).unwrap().unwrap();
    let whole = whole.to_str().unwrap();
    assert!(whole.starts_with(&format!("{url}/objects/")), "{whole}");
    let object = lmc_remote::Object::at(location(&server, whole)).unwrap();
    let c = lmc_core::Container::open_from(&object).unwrap();
    assert_eq!(c.header().original_len, file(3).len() as u64);
    assert_eq!(reader.whole_file(1).unwrap(), None, "a delta");
    assert_eq!(reader.restore_files(1).unwrap()[0].bytes, file(1));
}

#[test]
fn a_reader_restores_while_a_writer_adds() {
    let Some(server) = server() else { return };
    let url = format!("s3://{}/run", bucket(&server, "reader"));
    let mut writer = WriteOptions::new()
        .create(true)
        .open_at(&server, &url)
        .unwrap();
    add_step(&mut writer, 1).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (server, url, done) = (server.clone(), url.clone(), done.clone());
        std::thread::spawn(move || {
            let mut restored = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let store = Store::open_location(location(&server, &url)).unwrap();
                // Every snapshot the loaded manifest names, while the writer
                // re-encodes the newest as a delta and retires its object.
                for s in store.snapshots().to_vec() {
                    let files = store.restore_files(s.step).unwrap();
                    assert_eq!(files[0].bytes, file(s.step), "step {}", s.step);
                    restored += 1;
                }
            }
            restored
        })
    };
    for step in 2..=8 {
        add_step(&mut writer, step).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let restored = reader.join().unwrap();
    assert!(restored > 0);
    let report = Store::open_location(location(&server, &url))
        .unwrap()
        .verify(&mut |_| {})
        .unwrap();
    assert_eq!(report.snapshots, 8);
}

#[test]
fn a_live_writer_keeps_its_lock_past_its_lease() {
    let Some(server) = server() else { return };
    let url = format!("s3://{}/run", bucket(&server, "renewed"));
    let mut writer = WriteOptions::new()
        .create(true)
        .lease(Duration::from_secs(2))
        .open_at(&server, &url)
        .unwrap();
    add_step(&mut writer, 1).unwrap();
    // Three leases long: renewed all along, so nobody takes it over.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let other = WriteOptions::new().open_at(&server, &url);
        assert!(matches!(other, Err(Error::Locked(_))), "{other:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    add_step(&mut writer, 2).unwrap();
    drop(writer);
    // Released on drop: the next writer gets it at once.
    let mut next = WriteOptions::new().open_at(&server, &url).unwrap();
    add_step(&mut next, 3).unwrap();
}
