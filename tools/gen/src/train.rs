//! The training loop shared by both series, and the snapshots it writes.
//!
//! Every `every` steps and at the last step, three safetensors files go into
//! the output folder, each named `step-NNNNNN.safetensors`:
//!
//! | folder          | tensors                                          | dtype |
//! |-----------------|--------------------------------------------------|-------|
//! | `weights-bf16/` | the model weights, rounded from the master       | BF16 (frozen non-float buffers keep theirs) |
//! | `master-fp32/`  | the fp32 master weights                          | F32   |
//! | `optim/`        | `<param>.exp_avg`, `<param>.exp_avg_sq` (AdamW)  | F32   |
//!
//! `__metadata__` holds `step`, `loss` (the training loss of that step's
//! batch), `kind` (the folder name), `series`, `model`, `seed`, `lr`, and for
//! the optimizer state its hyper-parameters. The folder also gets `loss.csv`
//! (every step) and `summary.txt`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Tensor;

use crate::adamw::{AdamW, AdamWConfig, Schedule, global_norm};
use crate::params::{Frozen, ParamSet};
use crate::rng::Rng;
use crate::snapshot::{TensorBytes, write_safetensors};

/// The three snapshot folders, in the order they are written.
pub const SNAPSHOT_KINDS: [&str; 3] = ["weights-bf16", "master-fp32", "optim"];

/// A model the loop can train.
pub trait Model {
    /// Short description for the metadata and the log, e.g. `gpt-bytes-4x256`.
    fn name(&self) -> String;
    /// Trainable parameters.
    fn params(&self) -> &ParamSet;
    /// Trainable parameters, for the optimizer.
    fn params_mut(&mut self) -> &mut ParamSet;
    /// Tensors written into the weight snapshots but never trained.
    fn frozen(&self) -> &[Frozen] {
        &[]
    }
    /// Samples one batch with `rng` and returns its mean loss (a scalar).
    fn loss(&self, rng: &mut Rng) -> Result<Tensor>;
}

/// How to train and where to write.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Output folder.
    pub out: PathBuf,
    /// Optimizer steps.
    pub steps: u64,
    /// Write a snapshot every this many steps (and at the last).
    pub every: u64,
    /// Seed of the run (initialisation, batches, masking).
    pub seed: u64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// AdamW's hyper-parameters.
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this, if set.
    pub clip: Option<f64>,
    /// Print the loss every this many steps.
    pub log_every: u64,
    /// `pretrain` or `finetune`, for the metadata.
    pub series: &'static str,
    /// Replace snapshots already in `out` instead of refusing.
    pub force: bool,
    /// Print progress to stdout.
    pub verbose: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The loss of every step, step 1 first.
    pub losses: Vec<f32>,
    /// Steps at which snapshots were written.
    pub snapshot_steps: Vec<u64>,
    /// Trainable parameters.
    pub param_count: usize,
    /// Bytes of safetensors written.
    pub bytes_written: u64,
    /// Wall-clock seconds of the training loop, snapshots included.
    pub seconds: f64,
}

impl TrainReport {
    /// Mean loss of the first `n` steps.
    pub fn head_mean(&self, n: usize) -> f32 {
        mean(&self.losses[..n.min(self.losses.len())])
    }

    /// Mean loss of the last `n` steps.
    pub fn tail_mean(&self, n: usize) -> f32 {
        mean(&self.losses[self.losses.len().saturating_sub(n)..])
    }
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len().max(1) as f32
}

/// Path of the snapshot of `kind` at `step` under `out`.
pub fn snapshot_path(out: &Path, kind: &str, step: u64) -> PathBuf {
    out.join(kind).join(format!("step-{step:06}.safetensors"))
}

/// Trains `model` and writes its snapshots.
pub fn train(model: &mut dyn Model, opts: &TrainOptions) -> Result<TrainReport> {
    if opts.steps == 0 || opts.every == 0 {
        bail!("--steps and --every must be at least 1");
    }
    prepare_out(&opts.out, opts.force)?;
    let name = model.name();
    let param_count = model.params().count();
    if opts.verbose {
        println!(
            "{name}: {param_count} trainable parameters in {} tensors",
            model.params().as_slice().len()
        );
    }

    // The data stream has its own generator, so changing the model's
    // initialisation does not change which batches it sees.
    let mut data_rng = Rng::new(opts.seed ^ 0x5EED_DA7A);
    let mut optim = AdamW::new(opts.adamw, model.params().as_slice());
    let mut report = TrainReport {
        losses: Vec::new(),
        snapshot_steps: Vec::new(),
        param_count,
        bytes_written: 0,
        seconds: 0.0,
    };
    let mut csv = String::from("step,loss,lr,grad_norm\n");
    let start = Instant::now();
    let mut last_log = Instant::now();

    for step in 1..=opts.steps {
        let loss = model.loss(&mut data_rng)?;
        let loss_value = loss
            .to_scalar::<f32>()
            .context("the loss is not an f32 scalar")?;
        if !loss_value.is_finite() {
            bail!("the loss diverged at step {step}: {loss_value}");
        }
        let grads = loss.backward()?;
        let grads: Vec<Vec<f32>> = model
            .params()
            .iter()
            .map(|p| match grads.get(p.var.as_tensor()) {
                Some(g) => Ok(g.flatten_all()?.to_vec1::<f32>()?),
                None => Ok(vec![0.0; p.master.len()]), // not reached by this loss
            })
            .collect::<Result<_>>()?;
        let norm = global_norm(&grads);
        let scale = match opts.clip {
            Some(max) if norm > max => max / norm,
            _ => 1.0,
        };
        let lr = opts.schedule.lr(step);
        optim.update(model.params_mut().as_mut_slice(), &grads, lr, scale);
        for p in model.params().iter() {
            p.sync()?;
        }

        report.losses.push(loss_value);
        let _ = writeln!(csv, "{step},{loss_value},{lr:e},{norm}");
        if opts.verbose && (step % opts.log_every == 0 || step == 1 || step == opts.steps) {
            let per_step = last_log.elapsed().as_secs_f64()
                / if step == 1 {
                    1.0
                } else {
                    opts.log_every as f64
                };
            println!(
                "step {step:>5}/{}  loss {loss_value:.4}  lr {lr:.2e}  grad-norm {norm:.3}  {per_step:.2} s/step",
                opts.steps
            );
            last_log = Instant::now();
        }
        if step % opts.every == 0 || step == opts.steps {
            report.bytes_written +=
                write_snapshot(&*model, &optim, opts, &name, step, loss_value, lr)?;
            report.snapshot_steps.push(step);
        }
    }
    report.seconds = start.elapsed().as_secs_f64();

    std::fs::write(opts.out.join("loss.csv"), csv).context("cannot write loss.csv")?;
    let summary = summary(&name, &report, opts);
    std::fs::write(opts.out.join("summary.txt"), &summary).context("cannot write summary.txt")?;
    if opts.verbose {
        print!("{summary}");
    }
    Ok(report)
}

/// Creates `out`, and makes sure no earlier snapshots are mixed into the new series.
fn prepare_out(out: &Path, force: bool) -> Result<()> {
    for kind in SNAPSHOT_KINDS {
        let dir = out.join(kind);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            let is_snapshot = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && n.contains(".safetensors"));
            if !is_snapshot {
                continue;
            }
            if !force {
                bail!(
                    "{} already holds snapshots (e.g. {}); pass --force to replace them",
                    out.display(),
                    path.display()
                );
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    for name in ["summary.txt", "loss.csv"] {
        let path = out.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// Writes the three files of one step; returns the bytes written.
fn write_snapshot(
    model: &dyn Model,
    optim: &AdamW,
    opts: &TrainOptions,
    name: &str,
    step: u64,
    loss: f32,
    lr: f64,
) -> Result<u64> {
    let params = model.params().as_slice();
    let mut bf16: Vec<TensorBytes> = params
        .iter()
        .map(|p| TensorBytes::bf16_from_f32(p.name.clone(), &p.shape, &p.master))
        .collect();
    let mut master: Vec<TensorBytes> = params
        .iter()
        .map(|p| TensorBytes::f32(p.name.clone(), &p.shape, &p.master))
        .collect();
    for f in model.frozen() {
        bf16.push(f.bf16_bytes());
        master.push(f.master_bytes());
    }
    let mut moments = Vec::with_capacity(2 * params.len());
    for (i, p) in params.iter().enumerate() {
        moments.push(TensorBytes::f32(
            format!("{}.exp_avg", p.name),
            &p.shape,
            &optim.exp_avg[i],
        ));
        moments.push(TensorBytes::f32(
            format!("{}.exp_avg_sq", p.name),
            &p.shape,
            &optim.exp_avg_sq[i],
        ));
    }

    let c = optim.config;
    let mut written = 0;
    for (kind, tensors) in SNAPSHOT_KINDS.into_iter().zip([bf16, master, moments]) {
        let mut meta = BTreeMap::from([
            ("step".to_string(), step.to_string()),
            ("loss".to_string(), format!("{loss}")),
            ("kind".to_string(), kind.to_string()),
            ("series".to_string(), opts.series.to_string()),
            ("model".to_string(), name.to_string()),
            ("seed".to_string(), opts.seed.to_string()),
            ("lr".to_string(), format!("{lr:e}")),
        ]);
        if kind == "optim" {
            meta.insert("optimizer".into(), "AdamW".into());
            meta.insert("adam_step".into(), optim.step.to_string());
            meta.insert("betas".into(), format!("{},{}", c.beta1, c.beta2));
            meta.insert("eps".into(), format!("{:e}", c.eps));
            meta.insert("weight_decay".into(), format!("{}", c.weight_decay));
        }
        let path = snapshot_path(&opts.out, kind, step);
        write_safetensors(&path, &meta, tensors)?;
        written += std::fs::metadata(&path)?.len();
    }
    Ok(written)
}

fn summary(name: &str, r: &TrainReport, opts: &TrainOptions) -> String {
    let window = (r.losses.len() / 10).clamp(1, 10);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "series {}: {name}, {} trainable parameters, seed {}",
        opts.series, r.param_count, opts.seed
    );
    let _ = writeln!(
        s,
        "{} steps in {:.1} s; {} snapshots x 3 files, {:.1} MB, in {}",
        r.losses.len(),
        r.seconds,
        r.snapshot_steps.len(),
        r.bytes_written as f64 / 1e6,
        opts.out.display()
    );
    let _ = writeln!(
        s,
        "loss: first {:.4} (step 1), last {:.4} (step {}); mean of the first {window} steps {:.4}, of the last {window} {:.4}",
        r.losses[0],
        r.losses[r.losses.len() - 1],
        r.losses.len(),
        r.head_mean(window),
        r.tail_mean(window),
    );
    s
}
