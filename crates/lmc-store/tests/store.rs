//! The snapshot store through its library API: every snapshot restores
//! byte-exactly, chains stay bounded, pruning keeps chains whole, and bad
//! stores or requests give clear errors.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use lmc_core::Dtype;
use lmc_store::{Error, FileInput, Kind, Store, TensorInput, Wait, WriteOptions};

mod common;
use common::Rng;

/// A toy training run: weights that drift a little each step. (Unit-test
/// data only; ratios are measured on real snapshot series elsewhere.)
struct Run {
    w: Vec<f32>,
    rng: Rng,
}

impl Run {
    fn new(n: usize, seed: u64) -> Run {
        let mut rng = Rng(seed);
        let w = (0..n).map(|_| rng.normal_f32()).collect();
        Run { w, rng }
    }
    fn step(&mut self) {
        for x in self.w.iter_mut() {
            if self.rng.next().is_multiple_of(4) {
                *x += self.rng.normal_f32() * 1e-3;
            }
        }
    }
    fn f32_bytes(&self) -> Vec<u8> {
        self.w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn bf16_bytes(&self) -> Vec<u8> {
        self.w
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect()
    }
    /// A safetensors file with both, and the step in the metadata.
    fn file(&self, step: u64) -> Vec<u8> {
        let f = self.f32_bytes();
        let b = self.bf16_bytes();
        let n = self.w.len() as u64;
        let t = [("master.w", Dtype::F32, &f), ("model.w", Dtype::BF16, &b)];
        let infos: Vec<_> = t
            .iter()
            .map(|(name, d, _)| lmc_tensors::safetensors::TensorInfo {
                name: name.to_string(),
                dtype: *d,
                shape: vec![n],
            })
            .collect();
        let meta = [("step".to_string(), step.to_string())]
            .into_iter()
            .collect();
        let mut out = lmc_tensors::safetensors::header(&infos, &meta).unwrap();
        for (_, _, d) in t {
            out.extend_from_slice(d);
        }
        out
    }
}

fn add_file(store: &mut Store, step: u64, bytes: &[u8]) {
    let f = FileInput::from_bytes("model.safetensors", bytes, Some(0o640));
    store.add(step, Kind::File, &[f]).unwrap();
}

#[test]
fn a_series_restores_byte_exactly_with_bounded_chains() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(dir.path().join("s"), 4).unwrap();
    let mut run = Run::new(20_000, 1);
    let mut originals = Vec::new();
    for k in 0..10u64 {
        let step = 100 * (k + 1);
        let bytes = run.file(step);
        add_file(&mut store, step, &bytes);
        originals.push((step, bytes));
        run.step();
    }
    let snaps = store.snapshots();
    assert_eq!(snaps.len(), 10);
    // The newest whole, each other a delta against the one after it, a
    // whole one where a chain would reach 4 deltas.
    let depths: Vec<u32> = snaps.iter().map(|s| s.depth).collect();
    assert_eq!(depths, [3, 2, 1, 0, 3, 2, 1, 0, 1, 0]);
    for (i, s) in snaps.iter().enumerate() {
        assert_eq!(s.parent, (s.depth > 0).then(|| snaps[i + 1].step));
        assert_eq!(s.files[0].base.is_some(), s.depth > 0);
    }
    // Deltas are much smaller than whole snapshots on drifting weights.
    assert!(snaps[2].stored_len() * 2 < snaps[3].stored_len());
    drop(store);

    // A restore decodes one object for the newest snapshot, and one more
    // for each delta of the chain: counted by the observer.
    let mut store = Store::open(dir.path().join("s")).unwrap();
    let decoded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = decoded.clone();
    store.set_observer(Box::new(move |action, _| {
        if action == "decoding" {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }));
    for (step, want) in [(1000, 1), (900, 2), (800, 1), (500, 4), (100, 4)] {
        decoded.store(0, std::sync::atomic::Ordering::SeqCst);
        store.restore_files(step).unwrap();
        assert_eq!(
            decoded.load(std::sync::atomic::Ordering::SeqCst),
            want,
            "step {step}"
        );
    }
    drop(store);

    let store = Store::open(dir.path().join("s")).unwrap();
    for (step, bytes) in &originals {
        let files = store.restore_files(*step).unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].bytes == *bytes, "step {step} differs");
        assert_eq!(files[0].mode, Some(0o640));
    }
    let r = store.verify(&mut |_| {}).unwrap();
    assert_eq!((r.snapshots, r.files), (10, 10));
    assert!(r.unreferenced.is_empty());

    // restore_to writes the file with its mode.
    let out = dir.path().join("restored.safetensors");
    store.restore_to(700, &out, false).unwrap();
    assert!(fs::read(&out).unwrap() == originals[6].1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
    let err = store.restore_to(700, &out, false).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    store.restore_to(800, &out, true).unwrap();
    assert!(fs::read(&out).unwrap() == originals[7].1);
    assert!(matches!(
        store.restore_files(750),
        Err(Error::NoSuchStep(750))
    ));
}

/// Deferred adds commit each new snapshot whole and leave its parent
/// whole (marked); `finish_deferred` then gives the layout, the objects'
/// sizes and the bytes that adds one at a time give, and a plain add
/// finishes what is pending before its own work.
#[test]
fn deferred_adds_finish_into_the_layout_of_plain_adds() {
    let dir = tempfile::tempdir().unwrap();
    let mut plain = Store::create(dir.path().join("plain"), 4).unwrap();
    let mut lazy = Store::create(dir.path().join("lazy"), 4).unwrap();
    let mut run = Run::new(20_000, 7);
    let mut originals = Vec::new();
    for k in 0..10u64 {
        let step = 100 * (k + 1);
        let bytes = run.file(step);
        add_file(&mut plain, step, &bytes);
        let f = FileInput::from_bytes("model.safetensors", &bytes, Some(0o640));
        lazy.add_deferred(step, Kind::File, &[f]).unwrap();
        originals.push((step, bytes));
        run.step();
        // Every snapshot so far is whole, the older ones marked.
        let snaps = lazy.snapshots();
        assert!(snaps.iter().all(|s| s.parent.is_none() && s.depth == 0));
        let marked: Vec<bool> = snaps.iter().map(|s| s.deferred).collect();
        let mut want = vec![true; snaps.len()];
        *want.last_mut().unwrap() = false;
        assert_eq!(marked, want, "after step {step}");
        if k == 4 {
            // Midway, through a fresh reader: all restorable as they are.
            let reader = Store::open(dir.path().join("lazy")).unwrap();
            for (s, b) in &originals {
                assert!(reader.restore_files(*s).unwrap()[0].bytes == *b, "step {s}");
            }
        }
    }
    // Written to the manifest only while true.
    let text = fs::read_to_string(dir.path().join("lazy/manifest.json")).unwrap();
    assert_eq!(text.matches("\"deferred\"").count(), 9);
    // On another thread, while a reader restores every snapshot.
    let handle = lazy.finish_deferred_background();
    let reader = Store::open(dir.path().join("lazy")).unwrap();
    for (s, b) in &originals {
        assert!(reader.restore_files(*s).unwrap()[0].bytes == *b, "step {s}");
    }
    let (mut lazy, done) = handle.wait();
    assert_eq!(done.unwrap(), 7);
    assert_eq!(lazy.finish_deferred().unwrap(), 0);
    let text = fs::read_to_string(dir.path().join("lazy/manifest.json")).unwrap();
    assert!(!text.contains("deferred"));
    let shape = |s: &Store| -> Vec<(u64, Option<u64>, u32, u64)> {
        s.snapshots()
            .iter()
            .map(|x| (x.step, x.parent, x.depth, x.stored_len()))
            .collect()
    };
    assert_eq!(shape(&lazy), shape(&plain));
    for (step, bytes) in &originals {
        assert!(
            lazy.restore_files(*step).unwrap()[0].bytes == *bytes,
            "step {step}"
        );
    }
    let r = lazy.verify(&mut |_| {}).unwrap();
    assert!(r.unreferenced.is_empty());

    // A plain add finishes deferred work first.
    let bytes = run.file(1100);
    let f = FileInput::from_bytes("model.safetensors", &bytes, Some(0o640));
    lazy.add_deferred(1100, Kind::File, &[f]).unwrap();
    assert!(lazy.snapshots()[9].deferred);
    run.step();
    let next = run.file(1200);
    add_file(&mut lazy, 1200, &next);
    assert!(lazy.snapshots().iter().all(|s| !s.deferred));
    assert_eq!(lazy.snapshots()[9].parent, Some(1100));
    assert_eq!(lazy.snapshots()[10].parent, Some(1200));
    assert!(lazy.restore_files(1100).unwrap()[0].bytes == bytes);
    assert!(lazy.restore_files(1000).unwrap()[0].bytes == originals[9].1);
}

#[test]
fn tensors_from_memory_round_trip_as_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(dir.path().join("s"), 8).unwrap();
    let mut run = Run::new(5000, 2);
    let mut kept = Vec::new();
    for step in [1u64, 2, 3] {
        let f = run.f32_bytes();
        let b = run.bf16_bytes();
        let t = [
            TensorInput {
                name: "w".into(),
                dtype: Dtype::F32,
                shape: vec![50, 100],
                data: &f,
            },
            TensorInput {
                name: "w16".into(),
                dtype: Dtype::BF16,
                shape: vec![5000],
                data: &b,
            },
        ];
        let meta: BTreeMap<String, String> = [("step".to_string(), step.to_string())]
            .into_iter()
            .collect();
        let snap = store
            .add_tensors(step, "ckpt.safetensors", &t, &meta)
            .unwrap();
        assert_eq!((snap.depth, snap.parent), (0, None));
        kept.push((f, b));
        run.step();
    }
    let depths: Vec<u32> = store.snapshots().iter().map(|s| s.depth).collect();
    assert_eq!(depths, [2, 1, 0]);
    for (i, (f, b)) in kept.iter().enumerate() {
        let files = store.restore_files(i as u64 + 1).unwrap();
        let st = safetensors::SafeTensors::deserialize(&files[0].bytes).unwrap();
        assert!(st.tensor("w").unwrap().data() == &f[..]);
        assert!(st.tensor("w16").unwrap().data() == &b[..]);
        assert_eq!(st.tensor("w").unwrap().shape(), [50, 100]);
    }
    let bad = [TensorInput {
        name: "x".into(),
        dtype: Dtype::F32,
        shape: vec![3],
        data: &[0u8; 8],
    }];
    let err = store
        .add_tensors(9, "c.safetensors", &bad, &BTreeMap::new())
        .unwrap_err();
    assert!(err.to_string().contains("tensor \"x\""), "{err}");
}

fn write_dir(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (p, b) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b).unwrap();
    }
}

fn read_dir_all(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    fn walk(root: &Path, d: &Path, v: &mut Vec<(String, Vec<u8>)>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, v);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
                v.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut v);
    v.sort();
    v
}

#[test]
fn directory_snapshots_restore_whole_directories() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(dir.path().join("s"), 8).unwrap();
    let mut run = Run::new(3000, 3);
    let mut expect = Vec::new();
    for step in [10u64, 20, 30] {
        let ck = dir.path().join(format!("ck{step}"));
        let mut files = vec![
            ("model.safetensors", run.file(step)),
            ("config.json", b"{\"hidden\": 384}\n".to_vec()),
            ("optim/state.safetensors", Run::new(100, step).file(step)),
        ];
        if step == 20 {
            files.push(("notes/empty.txt", Vec::new()));
        }
        write_dir(&ck, &files);
        let snap = store.add_path(&ck, None, false).unwrap();
        assert_eq!(snap.step, step, "the step comes from the metadata");
        assert_eq!(snap.kind, Kind::Dir);
        expect.push((step, read_dir_all(&ck)));
        run.step();
    }
    // model.safetensors of step 20 is a delta; config.json too (same path).
    let s20 = &store.snapshots()[1];
    assert!(
        s20.files
            .iter()
            .find(|f| f.path == "model.safetensors")
            .unwrap()
            .base
            .is_some()
    );
    for (step, files) in &expect {
        let out = dir.path().join(format!("out{step}"));
        store.restore_to(*step, &out, false).unwrap();
        assert_eq!(read_dir_all(&out), *files, "step {step}");
    }
    // A directory with something in it is never replaced, even with force;
    // an empty one needs force.
    let out = dir.path().join("out10");
    for force in [false, true] {
        let err = store.restore_to(20, &out, force).unwrap_err().to_string();
        assert!(
            err.contains("out10 is a directory that is not empty"),
            "{err}"
        );
        assert_eq!(read_dir_all(&out), expect[0].1);
    }
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = store.restore_to(20, &empty, false).unwrap_err().to_string();
    assert!(err.contains("empty already exists (use --force"), "{err}");
    store.restore_to(20, &empty, true).unwrap();
    assert_eq!(read_dir_all(&empty), expect[1].1);
    // Restoring into the store is refused.
    assert!(
        store
            .restore_to(20, &dir.path().join("s/x"), false)
            .is_err()
    );
}

/// Set-ID bits are neither stored nor restored (the mask `lmc compress
/// DIR` applies), also from a store written before the mask that recorded
/// them; links and hostile paths are refused with errors that name them,
/// and a failed restore leaves nothing behind.
#[cfg(unix)]
#[test]
fn directory_snapshots_share_the_directory_rules() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut store = Store::create(d.join("s"), 8).unwrap();
    let ck = d.join("ck");
    let run_sh = b"#!/bin/sh\necho hi\n".to_vec();
    write_dir(
        &ck,
        &[("bin/run.sh", run_sh.clone()), ("w.bin", vec![7; 100])],
    );
    fs::set_permissions(ck.join("bin/run.sh"), fs::Permissions::from_mode(0o6755)).unwrap();
    let snap = store.add_path(&ck, Some(1), false).unwrap();
    let entry = snap.files.iter().find(|f| f.path == "bin/run.sh").unwrap();
    assert_eq!(entry.mode, Some(0o755));
    store.restore_to(1, &d.join("out1"), false).unwrap();
    assert_eq!(fs::read(d.join("out1/bin/run.sh")).unwrap(), run_sh);
    assert_eq!(mode(&d.join("out1/bin/run.sh")), 0o755);
    assert_eq!(mode(&d.join("out1/bin")), 0o755);
    drop(store);

    // A manifest from before the mask, with set-ID and sticky bits.
    let manifest = d.join("s/manifest.json");
    let text = fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\"mode\": 493"), "{text}");
    fs::write(&manifest, text.replace("\"mode\": 493", "\"mode\": 3565")).unwrap();
    let store = Store::open(d.join("s")).unwrap();
    store.restore_to(1, &d.join("out2"), false).unwrap();
    assert_eq!(mode(&d.join("out2/bin/run.sh")), 0o755);
    assert_eq!(fs::read(d.join("out2/bin/run.sh")).unwrap(), run_sh);
    drop(store);

    // A link in a checkpoint directory: refused, naming it.
    let mut store = Store::open_mut(d.join("s")).unwrap();
    std::os::unix::fs::symlink("w.bin", ck.join("latest")).unwrap();
    let err = store.add_path(&ck, Some(2), false).unwrap_err().to_string();
    assert!(
        err.contains(
            "ck/latest is a symbolic link (to \"w.bin\"); snapshot stores keep regular files only"
        ),
        "{err}"
    );
    fs::remove_file(ck.join("latest")).unwrap();
    drop(store);

    // A hostile manifest path is refused on open, before anything is written.
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(
        &manifest,
        text.replace("\"bin/run.sh\"", "\"bin/..\\\\run.sh\""),
    )
    .unwrap();
    let err = Store::open(d.join("s")).err().unwrap().to_string();
    assert!(err.contains("is not a plain relative path"), "{err}");
    let mut left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["ck", "out1", "out2", "s"]);
}

#[test]
fn prune_keeps_chains_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 5).unwrap();
    let mut run = Run::new(8000, 4);
    let mut originals = Vec::new();
    for k in 1..=12u64 {
        let step = 10 * k;
        let bytes = run.file(step);
        add_file(&mut store, step, &bytes);
        originals.push((step, bytes));
        run.step();
    }
    let r = store.prune(3, Some(40)).unwrap();
    assert_eq!(r.removed, [10, 20, 30, 50, 60, 70, 90]);
    let steps: Vec<u64> = store.snapshots().iter().map(|s| s.step).collect();
    assert_eq!(steps, [40, 80, 100, 110, 120]);
    assert!(!r.rebuilt.is_empty());
    assert!(r.stored_after < r.stored_before);
    for s in store.snapshots() {
        assert!(s.depth < 5);
    }
    drop(store);
    let store = Store::open(&root).unwrap();
    let rep = store.verify(&mut |_| {}).unwrap();
    assert_eq!(rep.snapshots, 5);
    assert!(rep.unreferenced.is_empty(), "{:?}", rep.unreferenced);
    for (step, bytes) in &originals {
        match store.restore_files(*step) {
            Ok(f) => assert!(steps.contains(step) && f[0].bytes == *bytes, "step {step}"),
            Err(Error::NoSuchStep(s)) => assert!(!steps.contains(&s)),
            Err(e) => panic!("{e}"),
        }
    }
    // The objects of removed or re-encoded snapshots are retired, not
    // deleted: a reader that loaded the old manifest may still use them.
    let retired = store.manifest().retired.len();
    assert!(retired > 0);
    let objects = fs::read_dir(root.join("objects")).unwrap().count();
    assert_eq!(objects, 5 + retired);
    let text = fs::read_to_string(root.join("manifest.json")).unwrap();
    assert!(
        text.contains("\"version\": 3") && text.contains("retired"),
        "{text}"
    );
    // Past the grace period the next writer deletes them.
    drop(store);
    let mut w = Store::open_mut(&root).unwrap();
    w.set_retire_grace(std::time::Duration::ZERO);
    w.add(
        130,
        Kind::File,
        &[FileInput::from_bytes(
            "model.safetensors",
            &run.file(130),
            None,
        )],
    )
    .unwrap();
    assert!(w.manifest().retired.is_empty());
    let objects = fs::read_dir(root.join("objects")).unwrap().count();
    assert_eq!(objects, 6);
    let text = fs::read_to_string(root.join("manifest.json")).unwrap();
    assert!(!text.contains("retired"), "{text}");
}

#[test]
fn remove_takes_out_one_snapshot_and_keeps_chains_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 4).unwrap();
    let mut run = Run::new(3000, 11);
    let mut originals = BTreeMap::new();
    for step in 1..=6u64 {
        let bytes = run.file(step);
        add_file(&mut store, step, &bytes);
        originals.insert(step, bytes);
        run.step();
    }
    // 1 -> 2 -> 3 -> 4 (whole), 5 -> 6 (whole): removing 2 re-encodes 1
    // against 3.
    let parents: Vec<_> = store.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(parents, [Some(2), Some(3), Some(4), None, Some(6), None]);
    let r = store.remove(2).unwrap();
    assert_eq!(
        (r.removed.as_slice(), r.rebuilt.as_slice()),
        (&[2][..], &[1][..])
    );
    assert_eq!(store.snapshots()[0].parent, Some(3));
    // The oldest: nothing depends on it.
    let r = store.remove(1).unwrap();
    assert!(r.rebuilt.is_empty());
    // The newest: 5, a delta against it, is stored whole.
    let r = store.remove(6).unwrap();
    assert_eq!(r.rebuilt, [5]);
    assert_eq!(store.snapshots().last().unwrap().parent, None);
    assert!(matches!(store.remove(6), Err(Error::NoSuchStep(6))));
    originals.remove(&1);
    originals.remove(&2);
    originals.remove(&6);
    let check = |store: &Store, want: &BTreeMap<u64, Vec<u8>>| {
        let steps: Vec<u64> = store.snapshots().iter().map(|s| s.step).collect();
        assert_eq!(steps, want.keys().copied().collect::<Vec<_>>());
        for (step, bytes) in want {
            assert!(
                store.restore_files(*step).unwrap()[0].bytes == *bytes,
                "step {step}"
            );
        }
        store.verify(&mut |_| {}).unwrap();
    };
    check(&store, &originals);
    drop(store);
    check(&Store::open(&root).unwrap(), &originals);

    // A removed step can be added again (after the last), and the store may
    // be emptied: it then works as a new one does.
    let mut store = Store::open_mut(&root).unwrap();
    for step in [3, 4, 5] {
        store.remove(step).unwrap();
    }
    assert!(store.snapshots().is_empty());
    drop(store);
    let reader = Store::open(&root).unwrap();
    assert!(reader.snapshots().is_empty());
    assert_eq!(reader.verify(&mut |_| {}).unwrap().snapshots, 0);
    let mut store = Store::open_mut(&root).unwrap();
    let bytes = run.file(9);
    add_file(&mut store, 9, &bytes);
    assert!(store.restore_files(9).unwrap()[0].bytes == bytes);
}

/// A reader that loaded a manifest before a writer re-encoded and deleted
/// the objects it names (grace 0) reads the newly committed manifest and
/// tries once more; with the default grace it never needs to.
#[test]
fn readers_retry_once_from_the_new_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 8).unwrap();
    let mut run = Run::new(2000, 12);
    let mut originals = Vec::new();
    for step in 1..=4u64 {
        let bytes = run.file(step);
        add_file(&mut store, step, &bytes);
        originals.push(bytes);
        run.step();
    }
    drop(store);
    for (k, grace) in [std::time::Duration::ZERO, lmc_store::DEFAULT_RETIRE_GRACE]
        .into_iter()
        .enumerate()
    {
        let reader = Store::open(&root).unwrap();
        let mut writer = Store::open_mut(&root).unwrap();
        writer.set_retire_grace(grace);
        // An add re-encodes the newest snapshot as a delta against the new
        // one and retires its whole object, which the reader's manifest names.
        let last = writer.snapshots().last().unwrap().step;
        let bytes = run.file(5 + k as u64);
        add_file(&mut writer, 5 + k as u64, &bytes);
        let old_object = &reader.snapshots().last().unwrap().files[0].object;
        assert_eq!(
            root.join("objects").join(old_object).exists(),
            !grace.is_zero()
        );
        let got = reader.restore_files(last).unwrap();
        assert!(
            got[0].bytes == originals[last as usize - 1],
            "grace {grace:?}"
        );
        reader.verify(&mut |_| {}).unwrap();
        originals.push(bytes);
        run.step();
        drop(writer);
    }
    // Removing the snapshot a delta is coded against: the same.
    let reader = Store::open(&root).unwrap();
    let mut writer = Store::open_mut(&root).unwrap();
    writer.set_retire_grace(std::time::Duration::ZERO);
    writer.remove(5).unwrap();
    let got = reader.restore_files(4).unwrap();
    assert!(got[0].bytes == originals[3]);
}

/// Readers take no lock: they open, list, restore and verify while a
/// writer holds the store, and a writer opens while readers read.
#[test]
fn readers_and_a_writer_never_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 8).unwrap();
    let run = Run::new(500, 13);
    add_file(&mut store, 1, &run.file(1));
    let reader = Store::open(&root).unwrap();
    assert!(reader.restore_files(1).unwrap()[0].bytes == run.file(1));
    add_file(&mut store, 2, &run.file(2));
    drop(store);
    let mut writer = Store::open_mut(&root).unwrap();
    add_file(&mut writer, 3, &run.file(3));
    assert_eq!(reader.snapshots().len(), 1);
    let mut reader = reader;
    reader.reload().unwrap();
    assert_eq!(reader.snapshots().len(), 3);
    drop(writer);

    // Reverse deltas: version 3, which older lmc refuse rather than
    // misread (stores they wrote are read here: see legacy_stores_*).
    let text = fs::read_to_string(root.join("manifest.json")).unwrap();
    assert!(text.contains("\"version\": 3"), "{text}");
    let mut writer = Store::open_mut(&root).unwrap();
    writer.remove(3).unwrap();
    add_file(&mut writer, 4, &run.file(4));
    assert!(writer.restore_files(4).unwrap()[0].bytes == run.file(4));
}

/// A second writer fails at once, or waits (calling `waiting` once) until
/// the first is done or its time is up.
#[test]
fn a_second_writer_waits_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::create(&root, 8).unwrap();

    let t = std::time::Instant::now();
    let err = Store::open_mut(&root).unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_millis(500));
    assert!(err.to_string().contains("--wait"), "{err}");

    let mut calls = 0;
    let t = std::time::Instant::now();
    let err = WriteOptions::new()
        .wait(Wait::For(std::time::Duration::from_millis(300)))
        .open(&root, &mut || calls += 1)
        .unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    assert!(err.to_string().contains("still after"), "{err}");
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(calls, 1);

    // A wait stops when the cancel flag (Ctrl-C in the CLI) is set.
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let err = WriteOptions::new()
        .wait(Wait::Forever)
        .cancel(&STOP)
        .open(&root, &mut || {})
        .unwrap_err();
    assert!(err.to_string().contains("stopped waiting"), "{err}");

    let first = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(store);
    });
    let mut calls = 0;
    let mut second = WriteOptions::new()
        .wait(Wait::Forever)
        .open(&root, &mut || calls += 1)
        .unwrap();
    first.join().unwrap();
    assert_eq!(calls, 1);
    add_file(&mut second, 1, &Run::new(100, 1).file(1));
    drop(second);

    // An lmc from before concurrent readers took a shared lock to read: a
    // writer waits for it as for another writer; readers do not.
    let old_reader = fs::File::open(root.join("lock")).unwrap();
    old_reader.try_lock_shared().unwrap();
    assert!(matches!(Store::open_mut(&root), Err(Error::Locked(_))));
    Store::open(&root).unwrap().restore_files(1).unwrap();
    drop(old_reader);
    drop(Store::open_mut(&root).unwrap());

    // Two writers that both create the store: the second finds it made.
    let other = dir.path().join("t");
    let a = WriteOptions::new()
        .create(true)
        .open(&other, &mut || {})
        .unwrap();
    let h = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(a);
    });
    WriteOptions::new()
        .create(true)
        .wait(Wait::Forever)
        .open(&other, &mut || {})
        .unwrap();
    h.join().unwrap();
}

#[test]
fn requests_out_of_order_and_second_writers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 8).unwrap();
    let run = Run::new(100, 5);
    add_file(&mut store, 5, &run.file(5));
    let f = run.file(5);
    let input = FileInput::from_bytes("model.safetensors", &f, None);
    let err = store
        .add(5, Kind::File, std::slice::from_ref(&input))
        .unwrap_err();
    assert!(
        err.to_string().contains("not after the last snapshot"),
        "{err}"
    );
    let mut bad = input.clone();
    bad.path = "../escape".into();
    assert!(store.add(6, Kind::Dir, &[bad]).is_err());
    // Parts that do not tile the layout are refused, not stored.
    let mut bad = input.clone();
    bad.parts.pop();
    let err = store.add(6, Kind::File, &[bad]).unwrap_err();
    assert!(err.to_string().contains("parts of"), "{err}");

    // A second writer is refused while this writer lives; readers are not.
    let err = Store::open_mut(&root).unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    Store::open(&root).unwrap();
    drop(store);
    let r1 = Store::open(&root).unwrap();
    let r2 = Store::open(&root).unwrap();
    drop(Store::open_mut(&root).unwrap());
    drop((r1, r2));

    // Creating over a non-empty directory, or opening a non-store, fails clearly.
    let err = Store::create(&root, 8).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("not an lmc snapshot store"),
        "{err}"
    );
}

#[test]
fn damaged_stores_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 8).unwrap();
    let mut run = Run::new(4000, 6);
    let mut run_files = Vec::new();
    for step in [1u64, 2, 3] {
        run_files.push(run.file(step));
        add_file(&mut store, step, &run.file(step));
        run.step();
    }
    let objs: Vec<String> = store
        .snapshots()
        .iter()
        .map(|s| s.files[0].object.clone())
        .collect();
    drop(store);

    // A flipped byte in the middle delta's object: verify names the object.
    let p = root.join("objects").join(&objs[1]);
    let mut b = fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    fs::write(&p, &b).unwrap();
    let store = Store::open(&root).unwrap();
    let err = store.verify(&mut |_| {}).unwrap_err();
    assert!(err.to_string().contains(&objs[1]), "{err}");
    // Step 3 (whole) is still fine; steps 2 and 1 (whose chains include
    // it) are not, and the error names the step and the object.
    assert!(store.restore_files(3).unwrap()[0].bytes == run_files[2]);
    let err = store.restore_files(1).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("step 1 cannot be restored")
            && text.contains(&objs[1])
            && text.contains("of step 2"),
        "{text}"
    );
    assert!(
        matches!(
            err,
            Error::Needs {
                step: 1,
                of_step: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(store.restore_files(2).is_err());
    drop(store);

    // An add goes on: the damaged snapshot, which cannot be re-encoded as
    // a delta, stays as it is, and the new one is whole.
    let mut w = Store::open_mut(&root).unwrap();
    let warned = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let w2 = warned.clone();
    w.set_observer(Box::new(move |action, what| {
        if action == "warning" {
            w2.lock().unwrap().push(what.to_string());
        }
    }));
    // Step 3 damaged this time: it is the one an add would re-encode.
    let p3 = root.join("objects").join(&objs[2]);
    let good3 = fs::read(&p3).unwrap();
    let mut b3 = good3.clone();
    let mid = b3.len() / 2;
    b3[mid] ^= 0x55;
    fs::write(&p3, &b3).unwrap();
    let four = run.file(4);
    add_file(&mut w, 4, &four);
    assert!(warned.lock().unwrap()[0].contains("step 3 stays as it is"));
    assert_eq!(w.snapshots()[2].parent, None);
    assert!(w.restore_files(4).unwrap()[0].bytes == four);
    drop(w);
    fs::write(&p3, &good3).unwrap();
    let store = Store::open(&root).unwrap();
    assert!(store.restore_files(3).unwrap()[0].bytes == run_files[2]);
    drop(store);

    // A missing object: the same, and nothing is written for the output.
    fs::remove_file(&p).unwrap();
    let store = Store::open(&root).unwrap();
    let err = store.restore_files(1).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&objs[1]) && text.contains("No such file"),
        "{text}"
    );
    let out = dir.path().join("out.safetensors");
    assert!(store.restore_to(2, &out, false).is_err());
    assert!(!out.exists());
    store.restore_to(3, &out, false).unwrap();
    assert!(fs::read(&out).unwrap() == run_files[2]);
    fs::remove_file(&out).unwrap();
    drop(store);

    // A manifest that tries to write outside the output is refused on open.
    let m = fs::read_to_string(root.join("manifest.json")).unwrap();
    fs::write(
        root.join("manifest.json"),
        m.replace("\"model.safetensors\"", "\"../../evil\""),
    )
    .unwrap();
    let err = Store::open(&root).unwrap_err();
    assert!(
        err.to_string().contains("not a plain relative path"),
        "{err}"
    );
    fs::write(root.join("manifest.json"), "{not json").unwrap();
    let err = Store::open(&root).unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

/// A store whose manifest is gone: opening it, for reading or writing,
/// says what is lost and how to restore by hand, and nothing is created
/// over it; following that advice restores the snapshots.
#[test]
fn a_lost_manifest_is_explained_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 8).unwrap();
    let mut run = Run::new(3000, 17);
    let mut files = Vec::new();
    for step in [1u64, 2] {
        files.push(run.file(step));
        add_file(&mut store, step, &files.last().unwrap().clone());
        run.step();
    }
    let objects: Vec<(Option<u64>, String)> = store
        .snapshots()
        .iter()
        .map(|s| (s.parent, s.files[0].object.clone()))
        .collect();
    drop(store);
    fs::remove_file(root.join("manifest.json")).unwrap();
    for err in [
        Store::open(&root).unwrap_err(),
        Store::open_mut(&root).unwrap_err(),
        Store::open_or_create(&root, 8).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("no manifest.json") && text.contains("lmc decompress OBJECT --base"),
            "{text}"
        );
    }
    assert!(!root.join("manifest.json").exists());
    // By hand: the newest object is whole; the other is a delta against it.
    assert_eq!(objects[1].0, None);
    let newest = fs::read(root.join("objects").join(&objects[1].1)).unwrap();
    let c = lmc_core::Container::open(&newest).unwrap();
    assert!(!c.needs_base());
    let mut two = vec![0u8; c.header().original_len as usize];
    c.decompress_into(&mut two, &mut |_| true).unwrap();
    assert!(two == files[1]);
    let older = fs::read(root.join("objects").join(&objects[0].1)).unwrap();
    let c = lmc_core::Container::open(&older)
        .unwrap()
        .with_base(&two)
        .unwrap();
    let mut one = vec![0u8; c.header().original_len as usize];
    c.decompress_into(&mut one, &mut |_| true).unwrap();
    assert!(one == files[0]);
}

/// `add_path` applies lmc's pickle rule (lmc_files::input): a checkpoint
/// whose pickle calls `os.system` is refused and nothing is added, unless
/// pickle calls are allowed; then it restores byte for byte.
#[test]
fn add_path_refuses_checkpoints_whose_pickles_run_code() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/formats/calls_os_system.pt");
    let evil = std::fs::read(&fixture).unwrap();
    let ck = dir.path().join("ck");
    write_dir(
        &ck,
        &[("model.pt", evil.clone()), ("config.json", b"{}".to_vec())],
    );
    let mut store = Store::create(dir.path().join("s"), 8).unwrap();
    let err = store.add_path(&ck, Some(1), false).unwrap_err();
    assert!(
        matches!(&err, Error::Files(lmc_files::Error::Input(lmc_files::InputError::UnsafePickle { refusals, .. }))
            if refusals.iter().any(|r| r.contains("names posix.system"))),
        "{err}"
    );
    assert!(store.snapshots().is_empty());
    store.add_path(&ck, Some(1), true).unwrap();
    let out = dir.path().join("out");
    store.restore_to(1, &out, false).unwrap();
    assert_eq!(std::fs::read(out.join("model.pt")).unwrap(), evil);
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(p: &Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// A store others may only read, or one on a read-only medium, can still
/// be listed, verified and restored from: readers need no write access,
/// and what the store writes has the usual mode for new files (0666 less
/// the umask), not owner-only. (As root, permissions stop nothing: the
/// assertions that need them to are then skipped, the rest still run.)
#[cfg(unix)]
#[test]
fn read_only_stores_can_be_read_and_what_they_hold_is_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 8).unwrap();
    let mut run = Run::new(1000, 9);
    let first = run.file(1);
    add_file(&mut store, 1, &first);
    run.step();
    let second = run.file(2);
    add_file(&mut store, 2, &second);
    drop(store);

    // The mode a new file gets here: 0666 less the umask.
    let probe = dir.path().join("probe");
    fs::File::create(&probe).unwrap();
    let usual = mode(&probe);
    let objects: Vec<_> = fs::read_dir(root.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Step 1's whole object, retired when it became a delta, is still there.
    assert_eq!(objects.len(), 3);
    for p in objects.iter().chain([&root.join("manifest.json")]) {
        assert_eq!(mode(p), usual, "{} has mode {:o}", p.display(), mode(p));
    }

    let check_readable = |why: &str| {
        let s = Store::open(&root).unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(s.snapshots().len(), 2, "{why}");
        let report = s
            .verify(&mut |_| {})
            .unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(report, s.verify(&mut |_| {}).unwrap());
        let files = s.restore_files(2).unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(files.len(), 1);
        assert!(files[0].bytes == second, "{why}: step 2 differs");
    };

    // A store made without a lock file (or whose medium went read-only
    // before one was made): readers neither need one nor make one.
    let lock = root.join("lock");
    fs::remove_file(&lock).unwrap();
    check_readable("no lock file");
    assert!(!lock.exists(), "a reader created the lock file");
    Store::open_mut(&root).unwrap();
    assert!(lock.exists());

    // Read-only for everyone, this user included.
    set_mode(&lock, 0o444);
    set_mode(&root.join("manifest.json"), 0o444);
    set_mode(&root.join("objects"), 0o555);
    set_mode(&root, 0o555);
    let enforced = fs::File::create(root.join("probe")).is_err();
    check_readable("read-only store");
    if enforced {
        let err = Store::open_mut(&root).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cannot be changed here") && msg.contains("lock"),
            "{msg}"
        );
        // A lock file this user may not even read.
        set_mode(&lock, 0o000);
        check_readable("unreadable lock file");
    } else {
        eprintln!("permissions are not enforced (running as root?): the refusals are not tested");
        fs::remove_file(root.join("probe")).unwrap();
    }
    set_mode(&root, 0o755);
    set_mode(&root.join("objects"), 0o755);
}

/// The fixture `tests/data/legacy-store` (see its make.sh): a store written
/// by lmc before reverse deltas, copied to `root`, and the checkpoints it
/// holds, by step.
fn legacy_store(root: &Path) -> BTreeMap<u64, Vec<u8>> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-store");
    fs::create_dir_all(root.join("objects")).unwrap();
    fs::copy(data.join("store/manifest.json"), root.join("manifest.json")).unwrap();
    for e in fs::read_dir(data.join("store/objects")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), root.join("objects").join(e.file_name())).unwrap();
    }
    let mut inputs = BTreeMap::new();
    for step in (20..=70).step_by(10) {
        let p = data.join(format!("inputs/step-{step:03}.safetensors"));
        inputs.insert(step, fs::read(p).unwrap());
    }
    inputs
}

fn check_all(store: &Store, want: &BTreeMap<u64, Vec<u8>>) {
    let steps: Vec<u64> = store.snapshots().iter().map(|s| s.step).collect();
    assert_eq!(steps, want.keys().copied().collect::<Vec<_>>());
    for (step, bytes) in want {
        let files = store.restore_files(*step).unwrap();
        assert!(files[0].bytes == *bytes, "step {step} differs");
    }
    let r = store.verify(&mut |_| {}).unwrap();
    assert_eq!(r.snapshots, want.len());
}

/// A store written by lmc before reverse deltas (manifest version 2,
/// keyframes and forward deltas) restores byte for byte; the next add
/// turns its newest snapshot into a reverse delta; `convert` re-encodes
/// the rest; a second `convert` has nothing to do.
#[test]
fn legacy_stores_stay_readable_and_convert() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut want = legacy_store(&root);
    let text = fs::read_to_string(root.join("manifest.json")).unwrap();
    assert!(text.contains("\"version\": 2"), "{text}");
    let store = Store::open(&root).unwrap();
    let parents: Vec<_> = store.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(
        parents,
        [None, Some(20), Some(30), None, Some(50), Some(60)]
    );
    check_all(&store, &want);
    drop(store);

    // The next add: 70 (a forward delta against 60) becomes a delta against 80.
    let mut w = WriteOptions::new()
        .retire_grace(std::time::Duration::ZERO)
        .open(&root, &mut || {})
        .unwrap();
    let mut next = want[&70].clone();
    let n = next.len();
    for b in &mut next[n - 600..] {
        *b = b.wrapping_add(1);
    }
    let f = FileInput::from_bytes("step-080.safetensors", &next, None);
    w.add(80, Kind::File, &[f]).unwrap();
    want.insert(80, next);
    let parents: Vec<_> = w.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(
        parents,
        [None, Some(20), Some(30), None, Some(50), Some(80), None]
    );
    check_all(&w, &want);
    let text = fs::read_to_string(root.join("manifest.json")).unwrap();
    assert!(text.contains("\"version\": 3"), "{text}");

    // Convert: every snapshot a delta against the one after it, a whole one
    // where a chain would reach 4 deltas.
    let r = w.convert().unwrap();
    assert_eq!(r.rebuilt, [20, 30, 40, 50, 60]);
    assert!(r.removed.is_empty());
    let parents: Vec<_> = w.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(
        parents,
        [Some(30), Some(40), None, Some(60), Some(70), Some(80), None]
    );
    let depths: Vec<_> = w.snapshots().iter().map(|s| s.depth).collect();
    assert_eq!(depths, [2, 1, 0, 3, 2, 1, 0]);
    check_all(&w, &want);
    let objects = fs::read_dir(root.join("objects")).unwrap().count();
    assert_eq!(objects, 7, "retired objects deleted (grace 0)");
    let r = w.convert().unwrap();
    assert!(r.rebuilt.is_empty() && r.removed.is_empty());
    drop(w);
    check_all(&Store::open(&root).unwrap(), &want);
}

/// `add_tensors_background` returns before the snapshot is coded, having
/// copied the tensors (the caller may change them at once), and `wait`
/// gives back the store and the snapshot; errors come back the same way,
/// with the store.
#[test]
fn background_adds_copy_the_tensors_and_give_the_store_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 8).unwrap();
    let mut run = Run::new(50_000, 21);
    let mut want = Vec::new();
    for step in 1..=4u64 {
        let mut f = run.f32_bytes();
        let meta: BTreeMap<String, String> = [("step".to_string(), step.to_string())]
            .into_iter()
            .collect();
        let handle = {
            let t = [TensorInput {
                name: "w".into(),
                dtype: Dtype::F32,
                shape: vec![50_000],
                data: &f,
            }];
            store.add_tensors_background(step, "ckpt.safetensors", &t, &meta)
        };
        want.push(f.clone());
        // The training loop goes on: the tensor changes while the add runs.
        f.iter_mut().for_each(|b| *b = 0);
        let (s, r) = handle.wait();
        store = s;
        let snap = r.unwrap();
        assert_eq!((snap.step, snap.depth), (step, 0));
        run.step();
    }
    for (i, w) in want.iter().enumerate() {
        let files = store.restore_files(i as u64 + 1).unwrap();
        let st = safetensors::SafeTensors::deserialize(&files[0].bytes).unwrap();
        assert!(st.tensor("w").unwrap().data() == &w[..], "step {}", i + 1);
    }
    // A bad request: the error and the store come back, nothing is added.
    let bad = [TensorInput {
        name: "x".into(),
        dtype: Dtype::F32,
        shape: vec![3],
        data: &[0u8; 8],
    }];
    let (store, r) = store
        .add_tensors_background(9, "c.safetensors", &bad, &BTreeMap::new())
        .wait();
    assert!(r.unwrap_err().to_string().contains("tensor \"x\""));
    let (store, r) = store
        .add_tensors_background(2, "c.safetensors", &[], &BTreeMap::new())
        .wait();
    assert!(r.unwrap_err().to_string().contains("not after the last"));
    assert_eq!(store.snapshots().len(), 4);
    // Dropping a handle waits for its add: the lock is free afterwards.
    let t = [TensorInput {
        name: "w".into(),
        dtype: Dtype::F32,
        shape: vec![50_000],
        data: &want[0],
    }];
    drop(store.add_tensors_background(10, "ckpt.safetensors", &t, &BTreeMap::new()));
    let store = Store::open_mut(&root).unwrap();
    assert_eq!(store.snapshots().last().unwrap().step, 10);
    store.verify(&mut |_| {}).unwrap();
}

/// Removing a whole snapshot in the middle: the delta coded against it is
/// re-encoded against the next kept snapshot, unless that would make a
/// chain reach the bound; then it is stored whole. Every chain stays whole
/// and bounded.
#[test]
fn removing_a_keyframe_keeps_chains_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut store = Store::create(&root, 4).unwrap();
    let mut run = Run::new(3000, 23);
    let mut want = BTreeMap::new();
    for step in 1..=8u64 {
        let bytes = run.file(step);
        add_file(&mut store, step, &bytes);
        want.insert(step, bytes);
        run.step();
    }
    let parents: Vec<_> = store.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(
        parents,
        [
            Some(2),
            Some(3),
            Some(4),
            None,
            Some(6),
            Some(7),
            Some(8),
            None
        ]
    );
    // 3 against 5 would put 1 at depth 6: 3 is stored whole instead.
    let r = store.remove(4).unwrap();
    assert_eq!(r.rebuilt, [3]);
    want.remove(&4);
    let parents: Vec<_> = store.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(
        parents,
        [Some(2), Some(3), None, Some(6), Some(7), Some(8), None]
    );
    // 6 against 8: depth 1, 5 at 2.
    let r = store.remove(7).unwrap();
    assert_eq!(r.rebuilt, [6]);
    want.remove(&7);
    let parents: Vec<_> = store.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(parents, [Some(2), Some(3), None, Some(6), Some(8), None]);
    assert!(store.snapshots().iter().all(|s| s.depth < 4));
    check_all(&store, &want);
    drop(store);
    check_all(&Store::open(&root).unwrap(), &want);
}

/// Pruning a store written before reverse deltas keeps its forward chains
/// whole (a kept delta whose parent goes is re-encoded against the kept
/// snapshot before it).
#[test]
fn legacy_stores_prune() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let mut want = legacy_store(&root);
    let mut w = Store::open_mut(&root).unwrap();
    // 20 (keyframe) 30 40, 50 (keyframe) 60 70: keep 20, 40, 60, 70.
    let r = w.prune(2, Some(20)).unwrap();
    assert_eq!(r.removed, [30, 50]);
    assert_eq!(r.rebuilt, [40, 60]);
    want.remove(&30);
    want.remove(&50);
    let parents: Vec<_> = w.snapshots().iter().map(|s| s.parent).collect();
    assert_eq!(parents, [None, Some(20), Some(40), Some(60)]);
    check_all(&w, &want);
}

#[test]
fn urls_name_stores_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    // A file:// URL is the directory itself, with its flock.
    let url = format!("file://{}", root.display());
    let mut store = WriteOptions::new()
        .create(true)
        .open(&url, &mut || {})
        .unwrap();
    assert!(!store.is_remote());
    add_file(&mut store, 1, &[7u8; 1000]);
    drop(store);
    assert_eq!(Store::open(&root).unwrap().snapshots().len(), 1);
    assert_eq!(
        Store::open(&url).unwrap().restore_files(1).unwrap()[0].bytes,
        [7u8; 1000]
    );
    // Refused by name: a relative file:// URL, a store behind http(s)://,
    // an unknown scheme, a bucket with no prefix.
    for (bad, says) in [
        ("file://run", "absolute local path"),
        ("https://example.com/run", "not behind an http(s):// URL"),
        ("ftp://host/run", "unknown scheme ftp://"),
        ("s3://bucket", "names no object"),
    ] {
        let e = Store::open(bad).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains(says), "{bad}: {e}");
    }
}
