//! Mixed precision of the forward's matrix products (`train.precision`).
//!
//! Parameters, gradients and everything but the products stay f32: `lin` and `mm` round their
//! operands to bf16, multiply, and return f32, so that no bf16 tensor ever meets an f32 one
//! (no Burn backend promotes dtypes: flex panics, CubeCL reads the wrong bytes). `cast` is
//! differentiable and casts the gradient back to its input's dtype, so every parameter
//! receives an f32 gradient. In f32 mode both are exactly `Linear::forward` and `matmul`.

use burn::nn::Linear;
use burn::tensor::{Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The arithmetic of the forward's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: the matrix products' inputs in bf16 (f32 accumulation where the
    /// backend has it: CUDA's kernels and flex, which widens to f32 on the CPU), softmax,
    /// norms, residuals and the loss in f32; master weights, gradients and Adam's state stay
    /// in f32. Backends without bf16 arithmetic (wgpu's WGSL) refuse it (`supported_on`).
    Bf16,
}

impl Precision {
    /// Whether `device` computes in this precision. Burn documents that computing in a dtype
    /// a device lacks gives backend-dependent garbage, so a run must ask before it starts.
    pub fn supported_on(self, device: &Device) -> bool {
        match self {
            Precision::F32 => true,
            Precision::Bf16 => device.supports_dtype(FloatDType::BF16),
        }
    }
}

impl super::checkpoint::Constants for Precision {
    fn any_tracked(&self) -> bool {
        false
    }
}

/// `linear.forward(x)`, `[.., in]` -> `[.., out]`. In bf16 the input and the weight are rounded
/// to bf16 for the product and the bias is added in f32 to the f32 result.
pub fn lin<const D: usize>(linear: &Linear, x: Tensor<D>, precision: Precision) -> Tensor<D> {
    match precision {
        Precision::F32 => linear.forward(x),
        Precision::Bf16 => {
            // Each product casts its own input, so that an input read by several products
            // (q, k, v) sums their gradients in f32 at the input's cast, not in bf16.
            let y = burn::tensor::module::linear(
                x.cast(FloatDType::BF16),
                linear.weight.val().cast(FloatDType::BF16),
                None,
            )
            .cast(FloatDType::F32);
            match &linear.bias {
                Some(bias) => y + bias.val().unsqueeze(),
                None => y,
            }
        }
    }
}

/// `a.matmul(b)` (batched over the leading axes). In bf16 the operands are rounded to bf16 and
/// the product is returned in f32.
pub fn mm<const D: usize>(a: Tensor<D>, b: Tensor<D>, precision: Precision) -> Tensor<D> {
    match precision {
        Precision::F32 => a.matmul(b),
        Precision::Bf16 => a
            .cast(FloatDType::BF16)
            .matmul(b.cast(FloatDType::BF16))
            .cast(FloatDType::F32),
    }
}
