//! Derived tensors across the files of a directory snapshot (FORMAT.md,
//! "Sources in other files"): a BF16 weights file that is the rounding of
//! the snapshot's fp32 master file is stored as references to it, in the
//! newest snapshot and the older ones; every snapshot restores
//! byte-identical, through prune and remove too; a missing, damaged,
//! cyclic or mismatched source is refused with an error that names it.

use std::fs;
use std::path::Path;

use lmc_core::Dtype;
use lmc_core::derive::bf16_bits;
use lmc_store::{Error, FileInput, Kind, Store, manifest::VERSION_SOURCES};

mod common;
use common::Rng;

/// A toy mixed-precision run (unit-test data; real series are measured in
/// docs/BENCHMARKS.md): fp32 masters, their BF16 roundings, AdamW moments.
struct Run {
    w: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    rng: Rng,
}

const SHAPES: [usize; 2] = [3000, 1200];

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = Rng(seed);
        let w = SHAPES
            .iter()
            .map(|&n| (0..n).map(|_| rng.small()).collect())
            .collect();
        let m = SHAPES
            .iter()
            .map(|&n| (0..n).map(|_| rng.small() * 1e-3).collect())
            .collect();
        Run { w, m, rng }
    }

    fn step(&mut self) {
        for (w, m) in self.w.iter_mut().zip(&mut self.m) {
            for (x, g) in w.iter_mut().zip(m.iter_mut()) {
                *g = 0.9 * *g + self.rng.small() * 1e-4;
                *x -= *g;
            }
        }
    }

    fn file(tensors: &[(String, Dtype, Vec<u8>)], step: u64) -> Vec<u8> {
        let infos: Vec<_> = tensors
            .iter()
            .map(|(name, dtype, d)| lmc_tensors::safetensors::TensorInfo {
                name: name.clone(),
                dtype: *dtype,
                shape: vec![(d.len() / dtype.width()) as u64],
            })
            .collect();
        let meta = [("step".to_string(), step.to_string())]
            .into_iter()
            .collect();
        let mut out = lmc_tensors::safetensors::header(&infos, &meta).unwrap();
        for (_, _, d) in tensors {
            out.extend_from_slice(d);
        }
        out
    }

    /// The snapshot's files: weights (BF16), master (F32), optimizer (F32).
    fn files(&self, step: u64) -> Vec<(String, Vec<u8>)> {
        let named =
            |prefix: &str, dtype: Dtype, vs: &[Vec<f32>]| -> Vec<(String, Dtype, Vec<u8>)> {
                vs.iter()
                    .enumerate()
                    .map(|(k, v)| {
                        let bytes = match dtype {
                            Dtype::BF16 => v
                                .iter()
                                .flat_map(|x| bf16_bits(x.to_bits()).to_le_bytes())
                                .collect(),
                            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        };
                        (format!("{prefix}layer{k}.weight"), dtype, bytes)
                    })
                    .collect()
            };
        vec![
            (
                "weights-bf16.safetensors".into(),
                Run::file(&named("", Dtype::BF16, &self.w), step),
            ),
            (
                "master-fp32.safetensors".into(),
                Run::file(&named("", Dtype::F32, &self.w), step),
            ),
            (
                "optim.safetensors".into(),
                Run::file(&named("exp_avg.", Dtype::F32, &self.m), step),
            ),
        ]
    }
}

/// A snapshot's files: path and bytes.
type Files = Vec<(String, Vec<u8>)>;

fn add(store: &mut Store, step: u64, files: &[(String, Vec<u8>)]) {
    let inputs: Vec<FileInput<'_>> = files
        .iter()
        .map(|(p, b)| FileInput::from_bytes(p.clone(), b, None))
        .collect();
    store.add(step, Kind::Dir, &inputs).unwrap();
}

/// A store of `steps`, and each snapshot's files as added.
fn series(root: &Path, steps: &[u64], keyframe_every: u32) -> (Store, Vec<Files>) {
    let mut store = Store::create(root, keyframe_every).unwrap();
    let mut run = Run::new(7);
    let mut added = Vec::new();
    for &step in steps {
        let files = run.files(step);
        add(&mut store, step, &files);
        added.push(files);
        run.step();
    }
    (store, added)
}

fn check_all(store: &Store, steps: &[u64], added: &[Files]) {
    for (step, files) in steps.iter().zip(added) {
        let got: Vec<(String, Vec<u8>)> = store
            .restore_files(*step)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.bytes))
            .collect();
        assert_eq!(&got, files, "step {step}");
    }
    let report = store.verify(&mut |_| {}).unwrap();
    assert_eq!(report.snapshots, steps.len());
    assert!(report.unreferenced.is_empty(), "{:?}", report.unreferenced);
}

fn entry<'a>(store: &'a Store, step: u64, path: &str) -> &'a lmc_store::FileEntry {
    let s = &store.snapshots()[store.manifest().find(step).unwrap()];
    s.files.iter().find(|f| f.path == path).unwrap()
}

#[test]
fn bf16_weights_derive_from_their_masters_in_every_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let steps = [10u64, 20, 30, 40, 50];
    let (store, added) = series(&dir.path().join("s"), &steps, 4);
    let bytes = fs::read(dir.path().join("s/manifest.json")).unwrap();
    assert!(
        String::from_utf8_lossy(&bytes).contains(&format!("\"version\": {VERSION_SOURCES}")),
        "a manifest with sources is version {VERSION_SOURCES}"
    );
    for &step in &steps {
        let w = entry(&store, step, "weights-bf16.safetensors");
        assert_eq!(w.sources, ["master-fp32.safetensors"], "step {step}");
        // Every tensor derived: no base, and next to nothing stored.
        assert_eq!(w.base, None, "step {step}");
        assert!(
            w.stored * 10 < w.len,
            "step {step}: {} of {}",
            w.stored,
            w.len
        );
        for other in ["master-fp32.safetensors", "optim.safetensors"] {
            assert!(entry(&store, step, other).sources.is_empty());
        }
    }
    // Older masters are deltas still (at most 3 on a chain: step 40
    // stays whole, 30 to 10 are a chain to it).
    assert!(entry(&store, 10, "master-fp32.safetensors").base.is_some());
    assert!(entry(&store, 40, "master-fp32.safetensors").base.is_none());
    check_all(&store, &steps, &added);

    // Whole directories, as `lmc snapshot restore` writes them.
    for (step, files) in steps.iter().zip(&added) {
        let out = dir.path().join(format!("out{step}"));
        store.restore_to(*step, &out, false).unwrap();
        for (p, b) in files {
            assert_eq!(&fs::read(out.join(p)).unwrap(), b, "step {step} {p}");
        }
    }

    // The same series with cross-tensor search off costs more.
    let mut plain = Store::create(dir.path().join("plain"), 4).unwrap();
    plain.set_options(lmc_core::CompressOptions::default().cross_tensor(false));
    for (step, files) in steps.iter().zip(&added) {
        add(&mut plain, *step, files);
    }
    let total = |s: &Store| s.snapshots().iter().map(|x| x.stored_len()).sum::<u64>();
    let weights = |s: &Store| -> u64 {
        steps
            .iter()
            .map(|&t| entry(s, t, "weights-bf16.safetensors").stored)
            .sum()
    };
    assert!(total(&store) < total(&plain));
    assert!(
        weights(&store) * 4 < weights(&plain),
        "weights: {} with sources, {} without",
        weights(&store),
        weights(&plain)
    );
    assert!(
        plain
            .snapshots()
            .iter()
            .all(|s| s.files.iter().all(|f| f.sources.is_empty()))
    );
    check_all(&plain, &steps, &added);
}

#[test]
fn prune_and_remove_keep_sources_valid() {
    let dir = tempfile::tempdir().unwrap();
    let steps = [1u64, 2, 3, 4, 5, 6, 7];
    let (mut store, added) = series(&dir.path().join("s"), &steps, 8);
    store.remove(4).unwrap();
    let keep = |s: &[u64]| -> (Vec<u64>, Vec<Files>) {
        let idx: Vec<usize> = s
            .iter()
            .map(|x| steps.iter().position(|y| y == x).unwrap())
            .collect();
        (s.to_vec(), idx.iter().map(|&i| added[i].clone()).collect())
    };
    let (s, a) = keep(&[1, 2, 3, 5, 6, 7]);
    check_all(&store, &s, &a);
    store.prune(2, Some(3)).unwrap();
    let (s, a) = keep(&[3, 6, 7]);
    assert_eq!(
        store.snapshots().iter().map(|x| x.step).collect::<Vec<_>>(),
        s
    );
    check_all(&store, &s, &a);
    for &step in &s {
        assert_eq!(
            entry(&store, step, "weights-bf16.safetensors").sources,
            ["master-fp32.safetensors"]
        );
    }
    // Removing the newest leaves the one before it whole and restorable.
    store.remove(7).unwrap();
    let (s, a) = keep(&[3, 6]);
    check_all(&store, &s, &a);
}

#[test]
fn a_missing_or_damaged_source_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let (store, added) = series(&root, &[1, 2, 3], 8);
    let master = entry(&store, 3, "master-fp32.safetensors").object.clone();
    let old_master = entry(&store, 1, "master-fp32.safetensors").object.clone();
    drop(store);

    // A damaged master: the weights of every step need it.
    let p = root.join("objects").join(&master);
    let good = fs::read(&p).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    fs::write(&p, &bad).unwrap();
    let store = Store::open(&root).unwrap();
    let err = store.restore_files(3).unwrap_err().to_string();
    assert!(
        err.contains("master-fp32.safetensors") && err.contains(&master),
        "{err}"
    );
    assert!(store.verify(&mut |_| {}).is_err());
    // Missing: named too, as the source of the weights.
    fs::remove_file(&p).unwrap();
    let err = store.restore_files(2).unwrap_err();
    assert!(matches!(err, Error::Needs { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("master-fp32.safetensors") && text.contains(&master),
        "{text}"
    );
    fs::write(&p, &good).unwrap();
    // The object of another step's master in its place: its hash is not the
    // one recorded, and it is refused before use.
    fs::copy(root.join("objects").join(&old_master), &p).unwrap();
    let err = store.restore_files(3).unwrap_err().to_string();
    assert!(err.contains("master-fp32.safetensors"), "{err}");
    fs::write(&p, &good).unwrap();
    assert_eq!(store.restore_files(3).unwrap()[0].bytes, added[2][0].1);
    drop(store);

    // Manifests whose sources break the rules are refused by name.
    let text = fs::read_to_string(root.join("manifest.json")).unwrap();
    let manifest = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        edit(&mut v);
        fs::write(root.join("manifest.json"), serde_json::to_vec(&v).unwrap()).unwrap();
        Store::open(&root).map(|_| ()).unwrap_err().to_string()
    };
    // (Files in the order added: weights, master, optimizer.)
    let err = manifest(&|v| {
        v["snapshots"][2]["files"][0]["sources"] = serde_json::json!(["gone.safetensors"]);
    });
    assert!(
        err.contains("weights-bf16.safetensors") && err.contains("gone.safetensors"),
        "{err}"
    );
    let err = manifest(&|v| {
        v["snapshots"][2]["files"][1]["sources"] = serde_json::json!(["weights-bf16.safetensors"]);
    });
    assert!(
        err.contains("master-fp32.safetensors") && err.contains("cycles are refused"),
        "{err}"
    );
    let err = manifest(&|v| {
        v["snapshots"][2]["files"][0]["sources"] = serde_json::json!(["weights-bf16.safetensors"]);
    });
    assert!(err.contains("itself"), "{err}");
    // A manifest that lists another file than the object records opens;
    // the restore refuses it, naming both.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["snapshots"][2]["files"][0]["sources"] = serde_json::json!(["optim.safetensors"]);
    fs::write(root.join("manifest.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let store = Store::open(&root).unwrap();
    let err = store.restore_files(3).unwrap_err().to_string();
    assert!(
        err.contains("optim.safetensors") && err.contains("master-fp32.safetensors"),
        "{err}"
    );
}
