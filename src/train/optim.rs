//! The optimiser of a training loop: Adam (CALM's) or AdamW, clipping of the gradients' global
//! L2 norm as `torch.nn.utils.clip_grad_norm_` does (Burn's own clipping acts on each
//! parameter alone), and stable parameter ids so that optimiser state saved by one process
//! finds its parameters in another.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::config::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay added to the gradient (`torch.optim.Adam`).
    Adam,
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    #[serde(rename = "adamw")]
    AdamW,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Default for OptimizerConfig {
    /// PyTorch's defaults; CALM names Adam.
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl OptimizerConfig {
    pub fn validate(&self, key: &str) -> Result<(), Invalid> {
        for (name, beta) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Invalid::new(
                    format!("{key}.{name}"),
                    format!("{beta} is outside [0, 1)"),
                ));
            }
        }
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(Invalid::new(format!("{key}.epsilon"), "must be positive"));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(Invalid::new(
                format!("{key}.weight_decay"),
                "must be 0 or more",
            ));
        }
        Ok(())
    }

    pub fn init(&self) -> ModuleOptimizer {
        match self.kind {
            OptimizerKind::Adam => AdamConfig::new()
                .with_beta_1(self.beta_1)
                .with_beta_2(self.beta_2)
                .with_epsilon(self.epsilon)
                .with_weight_decay(
                    (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay)),
                )
                .init(),
            OptimizerKind::AdamW => AdamWConfig::new()
                .with_beta_1(self.beta_1)
                .with_beta_2(self.beta_2)
                .with_epsilon(self.epsilon)
                .with_weight_decay(self.weight_decay)
                .init(),
        }
    }
}

/// `module` with its parameters numbered 0, 1, 2, ... in visiting order. Optimiser state is
/// keyed by parameter id; fresh ids are random, so without this a resumed run could not match
/// the saved state to its parameters.
pub fn numbered_params<M: Module>(module: M) -> M {
    numbered_params_keeping(module, &std::collections::HashSet::new())
}

/// `numbered_params`, leaving the lazy parameters listed in `lazy` uninitialised (a quantised
/// LLM's matrices, whose initialiser dequantises and draws no random numbers). Every other
/// lazy parameter is initialised here, in visiting order, as before: its random draws must not
/// move.
pub fn numbered_params_keeping<M: Module>(
    module: M,
    lazy: &std::collections::HashSet<ParamId>,
) -> M {
    struct Number<'a>(u64, &'a std::collections::HashSet<ParamId>);
    impl ModuleMapper for Number<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.0 += 1;
            if !param.is_initialized() && self.1.contains(&param.id) {
                let mut param = param;
                param.id = ParamId::from(self.0 - 1);
                return param;
            }
            let (_, value, mapper) = param.consume();
            Param::from_mapped_value(ParamId::from(self.0 - 1), value, mapper)
        }
    }
    module.map(&mut Number(0, lazy))
}

/// The L2 norm of all of `module`'s gradients taken together.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    norm_of(
        square_sums(module, grads)
            .into_iter()
            .map(|(_, s)| s)
            .collect(),
    )
}

/// Each gradient's sum of squares, beside its parameter's place among `module`'s float
/// parameters in visiting order; parameters without a gradient are left out.
pub fn square_sums<M: Module>(module: &M, grads: &GradientsParams) -> Vec<(usize, Tensor<1>)> {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        index: usize,
        sums: Vec<(usize, Tensor<1>)>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.sums.push((self.index, g.powi_scalar(2).sum()));
            }
            self.index += 1;
        }
    }
    let mut visitor = SumSquares {
        grads,
        index: 0,
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.sums
}

/// The square root of the sum of `squares`, added on the device in their order.
pub fn norm_of(squares: Vec<Tensor<1>>) -> f64 {
    if squares.is_empty() {
        return 0.0;
    }
    // One read-back for the whole model, not one per parameter.
    f64::from(Tensor::cat(squares, 0).sum().into_scalar::<f32>()).sqrt()
}

/// Moves the gradients of `part`'s parameters (a sub-module of the model `grads` came from)
/// from `grads` into `into`: a part stepped with a learning rate of its own is then stepped
/// with `into`, and the rest with what is left in `grads`.
pub fn move_grads<M: Module>(part: &M, grads: &mut GradientsParams, into: &mut GradientsParams) {
    struct Move<'a> {
        from: &'a mut GradientsParams,
        into: &'a mut GradientsParams,
    }
    impl ModuleVisitor for Move<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.from.remove::<D>(param.id) {
                self.into.register(param.id, g);
            }
        }
    }
    part.visit(&mut Move { from: grads, into });
}

/// Scales every gradient by `max_norm / norm` when their global norm exceeds `max_norm`, as
/// `clip_grad_norm_` does (with its 1e-6 guard); returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_grad_norm(module, grads);
    scale_to_norm(module, grads, norm, max_norm);
    norm
}

/// The scaling of `clip_global_norm` for gradients whose global norm is `norm`.
pub fn scale_to_norm<M: Module>(module: &M, grads: &mut GradientsParams, norm: f64, max_norm: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g * self.factor);
            }
        }
    }
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
}
