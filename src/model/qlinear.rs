//! A linear layer whose weight is a quantised matrix (`model::quant`) as a Burn operation,
//! with its own autodiff node (the `Backward` of burn's `extension` API, as
//! `model::checkpoint` builds one), so that a frozen 4-bit LLM passes gradients to the
//! adapters and the projector below it.
//!
//! The weight is frozen: the node gives the input's gradient, `dy W`, and nothing else.
//! The products run on the CPU over host copies of the activations (the weights never leave
//! their blocks); the activations are small beside the weights they meet.

use std::fmt;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients as RawGradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{Device, Tensor, TensorData};

use super::quant::{Inputs, QMatrix};

/// `x W^T`, `x` `[B, T, cols]` -> `[B, T, rows]`. `None` when `x` is tracked on an autodiff
/// backend this build cannot name, where the caller uses the dense weight instead.
pub fn qlinear(x: Tensor<3>, w: &Arc<QMatrix>) -> Option<Tensor<3>> {
    qlinear_with(x, w, Inputs::Int8)
}

/// `qlinear` with the few-rows kernel's input held as `inputs` says.
pub fn qlinear_with(x: Tensor<3>, w: &Arc<QMatrix>, inputs: Inputs) -> Option<Tensor<3>> {
    if !x.is_tracked() {
        let device = x.device();
        return Some(product(x, w, &device, inputs));
    }
    #[cfg(feature = "flex")]
    if let Some(y) = record::<burn::backend::Flex>(&x, w, inputs) {
        return Some(y);
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(y) = record::<burn::backend::Cube>(&x, w, inputs) {
        return Some(y);
    }
    drop(x);
    None
}

/// Rows of `w` gathered into `[B, T, cols]` (an embedding lookup in a quantised table). An id
/// outside the table gives a row of zeros.
pub fn qembedding(ids: &[i64], [b, t]: [usize; 2], w: &QMatrix, device: &Device) -> Tensor<3> {
    let cols = w.cols;
    let mut out = vec![0.0f32; ids.len() * cols];
    for (id, y) in ids.iter().zip(out.chunks_exact_mut(cols)) {
        if let Some(r) = usize::try_from(*id).ok().filter(|&r| r < w.rows) {
            w.dequantize_row(r, y);
        }
    }
    Tensor::from_data(TensorData::new(out, [b, t, cols]), device)
}

/// The host values of `x`, f32.
fn host(x: Tensor<3>) -> Vec<f32> {
    let data = x.into_data().convert::<f32>();
    // `convert::<f32>` made the elements f32, so reading them as f32 cannot fail.
    data.try_into_vec::<f32>()
        .unwrap_or_else(|e| unreachable!("f32 data read as f32: {e:?}"))
}

/// The untracked product on `device`.
fn product(x: Tensor<3>, w: &QMatrix, device: &Device, inputs: Inputs) -> Tensor<3> {
    let [b, t, _] = x.dims();
    let y = w.matmul_t_with(&host(x), b * t, inputs);
    Tensor::from_data(TensorData::new(y, [b, t, w.rows]), device)
}

/// The tracked product on backend `B`; `None` when `x` does not live there.
fn record<B: Backend>(x: &Tensor<3>, w: &Arc<QMatrix>, inputs: Inputs) -> Option<Tensor<3>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let primitive = x.clone().try_into_primitive::<Autodiff<B>>().ok()?;
    let (inner, guard) = primitive.into_parts();
    let input = Tensor::<3>::from_primitive::<B>(inner);
    let device = input.device();
    let dims = input.dims();
    let output = product(input, w, &device, inputs)
        .try_into_primitive::<B>()
        .ok()?;
    let node = QLinearBackward(Arc::clone(w));
    let out = match <QLinearBackward as Backward<B, 1>>::prepare::<NoCheckpointing>(node, [guard])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(dims, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some(Tensor::<3>::from_primitive::<Autodiff<B>>(out))
}

struct QLinearBackward(Arc<QMatrix>);

impl fmt::Debug for QLinearBackward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QLinearBackward({:?})", self.0)
    }
}

impl<B: Backend> Backward<B, 1> for QLinearBackward
where
    DispatchTensor: DispatchKindConversion<B>,
{
    /// The input's shape `[B, T, cols]`.
    type State = [usize; 3];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut RawGradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [Some(parent)] = ops.parents else {
            return;
        };
        let [b, t, cols] = ops.state;
        let grad = Tensor::<3>::from_primitive::<B>(grad);
        let device = grad.device();
        let dx = self.0.matmul(&host(grad), b * t);
        let dx = Tensor::<3>::from_data(TensorData::new(dx, [b, t, cols]), &device);
        match dx.try_into_primitive::<B>() {
            Ok(p) => grads.register::<B>(parent.id, p),
            Err(e) => panic!("quantised linear: the input's gradient left its backend: {e:?}"),
        }
    }
}
