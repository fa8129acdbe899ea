//! Model tensors: trainable parameters with their fp32 master copies, and
//! frozen tensors that are only carried into the snapshots.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};

use crate::snapshot::TensorBytes;

/// A trainable tensor.
///
/// `master` is the fp32 master copy and the source of truth: the optimizer
/// updates it in place and then copies it into `var`, the candle variable
/// that the forward pass reads and autograd differentiates.
#[derive(Debug)]
pub struct Param {
    /// PyTorch-style name, e.g. `layers.0.attn.q_proj.weight`.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// fp32 master weights, row-major.
    pub master: Vec<f32>,
    /// The same values as a candle variable.
    pub var: Var,
    /// Whether AdamW's weight decay applies (matrices yes; biases and norms no).
    pub decay: bool,
}

impl Param {
    /// A parameter with these initial values; matrices and embeddings decay, vectors do not.
    pub fn new(name: impl Into<String>, shape: &[usize], master: Vec<f32>) -> Result<Self> {
        let name = name.into();
        let expected: usize = shape.iter().product();
        if master.len() != expected {
            bail!(
                "parameter {name}: {} values for shape {shape:?}",
                master.len()
            );
        }
        let var = Var::from_tensor(&Tensor::from_slice(&master, shape, &Device::Cpu)?)?;
        Ok(Self {
            decay: shape.len() >= 2,
            name,
            shape: shape.to_vec(),
            master,
            var,
        })
    }

    /// Copies the master weights into the candle variable.
    pub fn sync(&self) -> Result<()> {
        self.var.set(&Tensor::from_slice(
            &self.master,
            self.shape.as_slice(),
            &Device::Cpu,
        )?)?;
        Ok(())
    }
}

/// A tensor that is not trained but belongs in the weight snapshots
/// (MiniLM's unused pooler, its `position_ids` buffer).
#[derive(Debug, Clone)]
pub enum Frozen {
    /// fp32 values: written as BF16 in the BF16 weights and as fp32 in the master copy.
    F32 {
        name: String,
        shape: Vec<usize>,
        values: Vec<f32>,
    },
    /// Any other dtype, written unchanged to both.
    Raw(TensorBytes),
}

impl Frozen {
    /// The tensor as stored in the BF16 weights file.
    pub fn bf16_bytes(&self) -> TensorBytes {
        match self {
            Self::F32 {
                name,
                shape,
                values,
            } => TensorBytes::bf16_from_f32(name.clone(), shape, values),
            Self::Raw(t) => t.clone(),
        }
    }

    /// The tensor as stored in the fp32 master file.
    pub fn master_bytes(&self) -> TensorBytes {
        match self {
            Self::F32 {
                name,
                shape,
                values,
            } => TensorBytes::f32(name.clone(), shape, values),
            Self::Raw(t) => t.clone(),
        }
    }
}

/// The trainable parameters of a model, in a fixed order, found by name.
#[derive(Debug, Default)]
pub struct ParamSet {
    params: Vec<Param>,
    index: HashMap<String, usize>,
}

impl ParamSet {
    /// Adds a parameter; names must be unique.
    pub fn push(&mut self, param: Param) -> Result<()> {
        if self.index.contains_key(&param.name) {
            bail!("duplicate parameter name {}", param.name);
        }
        self.index.insert(param.name.clone(), self.params.len());
        self.params.push(param);
        Ok(())
    }

    /// The candle tensor of the named parameter.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        let i = self
            .index
            .get(name)
            .with_context(|| format!("the model has no parameter {name}"))?;
        Ok(self.params[*i].var.as_tensor())
    }

    /// All parameters, in insertion order.
    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.params.iter()
    }

    /// All parameters, mutable, for the optimizer.
    pub fn as_mut_slice(&mut self) -> &mut [Param] {
        &mut self.params
    }

    /// All parameters.
    pub fn as_slice(&self) -> &[Param] {
        &self.params
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.params.iter().map(|p| p.master.len()).sum()
    }
}
