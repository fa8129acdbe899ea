//! The few layers both models are built from, as differentiable candle ops.
//!
//! Written from candle's primitive operations (not its fused CPU kernels,
//! some of which have no backward pass), so autograd reaches every weight.

use candle_core::{D, Result, Tensor};

/// `x @ w.T + b` over the last dimension, PyTorch's `nn.Linear` layout
/// (`w` is `[out, in]`).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let (rest, inputs) = dims.split_at(dims.len() - 1);
    let rows: usize = rest.iter().product();
    let y = x
        .reshape((rows, inputs[0]))?
        .matmul(&w.t()?)?
        .broadcast_add(b)?;
    let mut out_shape = rest.to_vec();
    out_shape.push(w.dim(0)?);
    y.reshape(out_shape)
}

/// Layer normalisation over the last dimension (Ba, Kiros and Hinton, 2016).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(variance + eps)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Softmax over the last dimension; the maximum is subtracted for range
/// and detached, since the result does not depend on it.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let e = shifted.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Scaled dot-product multi-head attention (Vaswani et al., 2017) of
/// already projected `q`, `k`, `v` of shape `[batch, seq, heads * head_dim]`;
/// `mask`, if given, is added to the `[seq, seq]` scores (`-1e9` where a
/// query must not see a key). Returns `[batch, seq, heads * head_dim]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (batch, seq, width) = q.dims3()?;
    let head_dim = width / heads;
    let split = |t: &Tensor| {
        t.reshape((batch, seq, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let mut scores = (q.matmul(&k.t()?)? * (1.0 / (head_dim as f64).sqrt()))?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    softmax(&scores)?
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((batch, seq, width))
}

/// The mean cross-entropy of `logits` (`[n, classes]`) against `targets` (`[n]`, u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    let log_probs = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
    let n = targets.dim(0)?;
    log_probs
        .gather(&targets.unsqueeze(1)?, 1)?
        .sum_all()?
        .affine(-1.0 / n as f64, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_classes() {
        let logits = Tensor::zeros((3, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let targets = Tensor::new(&[0u32, 3, 7], &Device::Cpu).unwrap();
        let loss = cross_entropy(&logits, &targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((loss - 8f32.ln()).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn layer_norm_normalises() {
        let x = Tensor::new(&[[1f32, 2., 3., 6.]], &Device::Cpu).unwrap();
        let ones = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let zeros = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let y: Vec<f32> = layer_norm(&x, &ones, &zeros, 1e-5)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean: f32 = y.iter().sum::<f32>() / 4.0;
        let var: f32 = y.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4, "{y:?}");
    }
}
