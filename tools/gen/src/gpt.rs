//! The pre-training model: a small decoder-only transformer over bytes.
//!
//! GPT-2's shape (Radford et al., "Language Models are Unsupervised
//! Multitask Learners", 2019) at a few million parameters: byte tokens
//! (vocabulary 256, so any text works without a tokenizer), learned position
//! embeddings, pre-LayerNorm blocks of causal multi-head attention and a
//! GELU MLP, a final LayerNorm and an untied output projection. No dropout,
//! so a run is a pure function of its seed. Parameter names follow PyTorch
//! conventions (`layers.0.attn.q_proj.weight`).

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};

use crate::nn::{attention, cross_entropy, layer_norm, linear};
use crate::params::{Param, ParamSet};
use crate::rng::Rng;
use crate::train::Model;

/// LayerNorm epsilon, PyTorch's default.
const LN_EPS: f64 = 1e-5;
/// Standard deviation of the initial weights (GPT-2).
const INIT_STD: f64 = 0.02;
/// Vocabulary: one token per byte.
pub const VOCAB: usize = 256;

/// Model and batch sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptConfig {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads; must divide `d_model`.
    pub heads: usize,
    /// Tokens per training sequence (and position embeddings).
    pub context: usize,
    /// Sequences per batch.
    pub batch: usize,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            d_model: 256,
            layers: 4,
            heads: 4,
            context: 128,
            batch: 8,
        }
    }
}

/// A byte-level GPT and the text it trains on.
pub struct Gpt {
    config: GptConfig,
    params: ParamSet,
    text: Vec<u8>,
    /// `[context, context]`: 0 where a position may attend, -1e9 above the diagonal.
    causal_mask: Tensor,
}

impl Gpt {
    /// A freshly initialised model (weights drawn from `rng`) over `text`.
    pub fn new(config: GptConfig, text: Vec<u8>, rng: &mut Rng) -> Result<Self> {
        let GptConfig {
            d_model: d,
            layers,
            heads,
            context,
            batch,
        } = config;
        if d == 0 || heads == 0 || d % heads != 0 || layers == 0 || context < 2 || batch == 0 {
            bail!("invalid model size {config:?}: heads must divide d_model, context >= 2");
        }
        if text.len() <= context + 1 {
            bail!(
                "the training text has {} bytes; it needs more than the context ({context}) + 1",
                text.len()
            );
        }
        // Residual projections start smaller so the stream's variance does
        // not grow with depth (GPT-2's 1/sqrt(2 * layers)).
        let residual_std = INIT_STD / ((2 * layers) as f64).sqrt();
        let mut params = ParamSet::default();
        let mut add = |name: String, shape: &[usize], values: Vec<f32>| {
            params.push(Param::new(name, shape, values)?)
        };
        let normal =
            |rng: &mut Rng, shape: &[usize], std: f64| rng.normal_vec(shape.iter().product(), std);

        add(
            "tok_emb.weight".into(),
            &[VOCAB, d],
            normal(rng, &[VOCAB, d], INIT_STD),
        )?;
        add(
            "pos_emb.weight".into(),
            &[context, d],
            normal(rng, &[context, d], INIT_STD),
        )?;
        for l in 0..layers {
            let p = format!("layers.{l}");
            add(format!("{p}.ln1.weight"), &[d], vec![1.0; d])?;
            add(format!("{p}.ln1.bias"), &[d], vec![0.0; d])?;
            for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                let std = if proj == "o_proj" {
                    residual_std
                } else {
                    INIT_STD
                };
                add(
                    format!("{p}.attn.{proj}.weight"),
                    &[d, d],
                    normal(rng, &[d, d], std),
                )?;
                add(format!("{p}.attn.{proj}.bias"), &[d], vec![0.0; d])?;
            }
            add(format!("{p}.ln2.weight"), &[d], vec![1.0; d])?;
            add(format!("{p}.ln2.bias"), &[d], vec![0.0; d])?;
            add(
                format!("{p}.mlp.fc1.weight"),
                &[4 * d, d],
                normal(rng, &[4 * d, d], INIT_STD),
            )?;
            add(format!("{p}.mlp.fc1.bias"), &[4 * d], vec![0.0; 4 * d])?;
            add(
                format!("{p}.mlp.fc2.weight"),
                &[d, 4 * d],
                normal(rng, &[d, 4 * d], residual_std),
            )?;
            add(format!("{p}.mlp.fc2.bias"), &[d], vec![0.0; d])?;
        }
        add("ln_f.weight".into(), &[d], vec![1.0; d])?;
        add("ln_f.bias".into(), &[d], vec![0.0; d])?;
        add(
            "lm_head.weight".into(),
            &[VOCAB, d],
            normal(rng, &[VOCAB, d], INIT_STD),
        )?;

        let mask: Vec<f32> = (0..context * context)
            .map(|i| if i % context > i / context { -1e9 } else { 0.0 })
            .collect();
        let causal_mask = Tensor::from_vec(mask, (context, context), &Device::Cpu)?;
        Ok(Self {
            config,
            params,
            text,
            causal_mask,
        })
    }

    /// Mean next-byte cross-entropy (nats) of `inputs` predicting `targets`, both `[batch, context]` u32.
    pub fn forward_loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let p = |name: &str| self.params.get(name);
        let (batch, seq) = inputs.dims2()?;
        let d = self.config.d_model;
        let tokens = p("tok_emb.weight")?
            .index_select(&inputs.flatten_all()?, 0)?
            .reshape((batch, seq, d))?;
        let mut x = tokens.broadcast_add(&p("pos_emb.weight")?.narrow(0, 0, seq)?)?;
        let mask = self.causal_mask.narrow(0, 0, seq)?.narrow(1, 0, seq)?;
        for l in 0..self.config.layers {
            let w = |s: &str| self.params.get(&format!("layers.{l}.{s}"));
            let h = layer_norm(&x, w("ln1.weight")?, w("ln1.bias")?, LN_EPS)?;
            let q = linear(&h, w("attn.q_proj.weight")?, w("attn.q_proj.bias")?)?;
            let k = linear(&h, w("attn.k_proj.weight")?, w("attn.k_proj.bias")?)?;
            let v = linear(&h, w("attn.v_proj.weight")?, w("attn.v_proj.bias")?)?;
            let a = attention(&q, &k, &v, self.config.heads, Some(&mask))?;
            x = (x + linear(&a, w("attn.o_proj.weight")?, w("attn.o_proj.bias")?)?)?;
            let h = layer_norm(&x, w("ln2.weight")?, w("ln2.bias")?, LN_EPS)?;
            let h = linear(&h, w("mlp.fc1.weight")?, w("mlp.fc1.bias")?)?.gelu_erf()?;
            x = (x + linear(&h, w("mlp.fc2.weight")?, w("mlp.fc2.bias")?)?)?;
        }
        let x = layer_norm(&x, p("ln_f.weight")?, p("ln_f.bias")?, LN_EPS)?;
        let logits = x
            .reshape((batch * seq, d))?
            .matmul(&p("lm_head.weight")?.t()?)?;
        Ok(cross_entropy(&logits, &targets.flatten_all()?)?)
    }
}

impl Model for Gpt {
    fn name(&self) -> String {
        let c = self.config;
        format!(
            "gpt-bytes-{}l-{}d-{}h-ctx{}",
            c.layers, c.d_model, c.heads, c.context
        )
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }

    /// `batch` windows of `context + 1` bytes at random offsets: the first
    /// `context` bytes are the input, the last `context` the targets.
    fn loss(&self, rng: &mut Rng) -> Result<Tensor> {
        let GptConfig { context, batch, .. } = self.config;
        let mut inputs = Vec::with_capacity(batch * context);
        let mut targets = Vec::with_capacity(batch * context);
        for _ in 0..batch {
            let start = rng.below(self.text.len() - context);
            let window = &self.text[start..start + context + 1];
            inputs.extend(window[..context].iter().map(|&b| u32::from(b)));
            targets.extend(window[1..].iter().map(|&b| u32::from(b)));
        }
        let inputs = Tensor::from_vec(inputs, (batch, context), &Device::Cpu)?;
        let targets = Tensor::from_vec(targets, (batch, context), &Device::Cpu)?;
        self.forward_loss(&inputs, &targets)
    }
}
