//! AdamW and the learning-rate schedule.
//!
//! Loshchilov and Hutter, "Decoupled Weight Decay Regularization" (ICLR
//! 2019), on top of Kingma and Ba, "Adam" (2015), with the same update and
//! state as PyTorch's `torch.optim.AdamW`: per parameter `exp_avg` (first
//! moment) and `exp_avg_sq` (second moment), fp32, bias-corrected at each
//! step, and weight decay applied to the weights directly rather than
//! through the gradient. It is written here, over plain `Vec<f32>`, so the
//! moments can be written into the snapshots.

use crate::params::Param;

/// AdamW's hyper-parameters (PyTorch's names and defaults, except the decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Exponential decay of the first moment.
    pub beta1: f64,
    /// Exponential decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters with `decay` set.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay
/// to `peak * final_ratio` at step `total`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The largest learning rate, reached at the end of the warm-up.
    pub peak: f64,
    /// Warm-up steps.
    pub warmup: u64,
    /// Last step of the run.
    pub total: u64,
    /// Learning rate at the last step, as a fraction of the peak.
    pub final_ratio: f64,
}

impl Schedule {
    /// The learning rate of step `step` (1-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step <= self.warmup {
            return self.peak * step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
    }
}

/// The optimizer's state: the step count and both moments of every parameter.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Steps taken so far.
    pub step: u64,
    /// First moments, one per parameter, same order and length.
    pub exp_avg: Vec<Vec<f32>>,
    /// Second moments (never negative), one per parameter.
    pub exp_avg_sq: Vec<Vec<f32>>,
}

impl AdamW {
    /// Zero moments for these parameters.
    pub fn new(config: AdamWConfig, params: &[Param]) -> Self {
        let zeros = || params.iter().map(|p| vec![0.0; p.master.len()]).collect();
        Self {
            config,
            step: 0,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
        }
    }

    /// One update of every parameter's master weights with learning rate
    /// `lr`, each gradient first multiplied by `grad_scale` (for clipping).
    /// `grads[i]` belongs to `params[i]`.
    pub fn update(&mut self, params: &mut [Param], grads: &[Vec<f32>], lr: f64, grad_scale: f64) {
        assert_eq!(params.len(), grads.len(), "one gradient per parameter");
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = (lr / bias1) as f32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let (eps, bias2_sqrt, scale) = (c.eps as f32, bias2_sqrt as f32, grad_scale as f32);

        for (i, param) in params.iter_mut().enumerate() {
            let shrink = if param.decay {
                (1.0 - lr * c.weight_decay) as f32
            } else {
                1.0
            };
            let (m, v, g) = (&mut self.exp_avg[i], &mut self.exp_avg_sq[i], &grads[i]);
            for (((p, m), v), &g) in param.master.iter_mut().zip(m).zip(v).zip(g) {
                let g = g * scale;
                *p *= shrink;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = v.sqrt() / bias2_sqrt + eps;
                *p -= step_size * *m / denom;
            }
        }
    }
}

/// The L2 norm of all gradients together, summed in a fixed order.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = Schedule {
            peak: 1.0,
            warmup: 10,
            total: 110,
            final_ratio: 0.1,
        };
        assert!((s.lr(1) - 0.1).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-12, "halfway down the cosine");
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        assert!(s.lr(30) > s.lr(31));
    }

    #[test]
    fn first_step_matches_pytorch() {
        // After one step Adam moves each weight by about lr * sign(g)
        // (m_hat / sqrt(v_hat) = g / |g|), after the decoupled decay.
        let mut params = vec![Param::new("w", &[1, 2], vec![1.0, -2.0]).unwrap()];
        let mut opt = AdamW::new(
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
            &params,
        );
        opt.update(&mut params, &[vec![0.5, -3.0]], 0.01, 1.0);
        let expect = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (got, want) in params[0].master.iter().zip(expect) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!((opt.exp_avg[0][0] - 0.05).abs() < 1e-7);
        assert!((opt.exp_avg_sq[0][1] - 0.009).abs() < 1e-6);
    }
}
