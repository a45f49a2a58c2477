//! Activation checkpointing per transformer layer (Chen et al., 2016, "Training Deep Nets with
//! Sublinear Memory Cost"; PyTorch's `torch.utils.checkpoint`), as one custom Burn autodiff
//! node per layer (the `Backward` of burn's `extension` API, as burn's own
//! `tests/backend_extension_runtime.rs` registers one).
//!
//! - Forward: the layer runs on untracked copies of its inputs and parameters, so the graph
//!   records none of its intermediates; the node keeps the layer's inputs only.
//! - Backward: the node runs the layer again on fresh leaves holding those inputs, with the
//!   real parameters, runs a backward of its own seeded with the output's gradient, and
//!   registers the inputs' and the parameters' gradients into the outer backward.
//!
//! Both runs go through the autodiff backend's own kernels (never `.inner()`), as the run
//! without checkpointing does, so every value, and every gradient inside a layer, is the
//! same. Only the order in which gradients from several layers add up can differ: one input
//! read by three or more checkpointed layers (the Q-Formers' image features) may differ in
//! its last bits.
//!
//! What a layer may capture: its module's parameters, untracked constants (`Constants`) and
//! its explicit inputs. A tracked tensor captured from elsewhere would make the recomputation
//! touch the outer graph, which Burn keeps locked while its backward runs.

use std::any::type_name;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients as RawGradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{GradientCheckpointingStrategy, Tensor};

/// Layers recorded as checkpoints, and layers recomputed in a backward, since the process
/// started: what tests read to know the checkpointed path ran.
static RECORDED: AtomicUsize = AtomicUsize::new(0);
static RECOMPUTED: AtomicUsize = AtomicUsize::new(0);

/// How many layer calls this process recorded as checkpoints.
pub fn checkpointed_layers() -> usize {
    RECORDED.load(Ordering::Relaxed)
}

/// How many checkpointed layers this process recomputed in backward passes.
pub fn recomputed_layers() -> usize {
    RECOMPUTED.load(Ordering::Relaxed)
}

/// What a layer reads besides its parameters and inputs. Everything in it must be untracked
/// (masks, rotary tables, sizes); `checkpoint` runs the layer plainly otherwise.
pub trait Constants: Clone + Send + fmt::Debug + 'static {
    fn any_tracked(&self) -> bool;
}

impl Constants for () {
    fn any_tracked(&self) -> bool {
        false
    }
}

impl Constants for usize {
    fn any_tracked(&self) -> bool {
        false
    }
}

impl<const D: usize> Constants for Tensor<D> {
    fn any_tracked(&self) -> bool {
        self.is_tracked()
    }
}

impl<T: Constants> Constants for Option<T> {
    fn any_tracked(&self) -> bool {
        self.as_ref().is_some_and(Constants::any_tracked)
    }
}

impl<A: Constants, B: Constants> Constants for (A, B) {
    fn any_tracked(&self) -> bool {
        self.0.any_tracked() || self.1.any_tracked()
    }
}

impl<A: Constants, B: Constants, C: Constants> Constants for (A, B, C) {
    fn any_tracked(&self) -> bool {
        self.0.any_tracked() || self.1.any_tracked() || self.2.any_tracked()
    }
}

/// A layer: `(module, constants, inputs)` -> its output `[B, T, H]`. A plain function, so that
/// the node can keep it and call it again in the backward pass.
pub type LayerFn<M, C, const N: usize> = fn(&M, &C, [Tensor<3>; N]) -> Tensor<3>;

/// `layer(module, constants, inputs)`, `[B, T, H]` inputs -> `[B, T, H]`, keeping only
/// `inputs` for the backward pass, which recomputes the layer.
///
/// Runs the layer plainly (recording every intermediate, as without checkpointing) where
/// nothing would be saved or the node cannot be built: outside autodiff, with nothing to
/// differentiate (no tracked input, no trainable parameter), with a tracked constant, on a
/// tensor with Burn's own checkpointing strategy, or on a backend this build cannot name.
pub fn checkpoint<M, C, const N: usize>(
    module: &M,
    constants: &C,
    inputs: [Tensor<3>; N],
    layer: LayerFn<M, C, N>,
) -> Tensor<3>
where
    M: Module + 'static,
    C: Constants,
{
    let default_strategy = inputs.iter().all(|x| {
        x.gradient_checkpointing_strategy() == Some(GradientCheckpointingStrategy::Disabled)
    });
    if N == 0 || !default_strategy || constants.any_tracked() {
        return layer(module, constants, inputs);
    }
    // Before any `no_grad()` copy: a lazy parameter keeps its gradient setting in a state its
    // copies share, so it is initialised here, and a copy's setting stays the copy's.
    let trainable = has_trainable(module);
    if !trainable && !inputs.iter().any(Tensor::is_tracked) {
        return layer(module, constants, inputs);
    }
    #[cfg(feature = "flex")]
    let inputs = match record::<burn::backend::Flex, M, C, N>(module, constants, inputs, layer) {
        Ok(output) => return output,
        Err(inputs) => inputs,
    };
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let inputs = match record::<burn::backend::Cube, M, C, N>(module, constants, inputs, layer) {
        Ok(output) => return output,
        Err(inputs) => inputs,
    };
    layer(module, constants, inputs)
}

/// Whether any parameter of `module` requires a gradient; initialises lazy parameters.
fn has_trainable<M: Module>(module: &M) -> bool {
    struct Trainable(bool);
    impl ModuleVisitor for Trainable {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 |= param.val().is_require_grad();
        }
    }
    let mut found = Trainable(false);
    module.visit(&mut found);
    found.0
}

/// The autodiff primitive of `x` on backend `B`, if it lives there.
fn autodiff_primitive<B: Backend, const D: usize>(x: Tensor<D>) -> Option<FloatTensor<Autodiff<B>>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<B>>,
{
    x.try_into_primitive::<Autodiff<B>>().ok()
}

/// The checkpoint node on backend `B`; gives `inputs` back when they do not live on `B`.
fn record<B, M, C, const N: usize>(
    module: &M,
    constants: &C,
    inputs: [Tensor<3>; N],
    layer: LayerFn<M, C, N>,
) -> Result<Tensor<3>, [Tensor<3>; N]>
where
    B: Backend,
    M: Module + 'static,
    C: Constants,
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let mut primitives = Vec::with_capacity(N);
    for x in &inputs {
        match autodiff_primitive::<B, 3>(x.clone()) {
            Some(p) => primitives.push(p),
            None => return Err(inputs),
        }
    }
    let untracked = inputs.clone().map(|x| x.set_require_grad(false));
    let Some(output) =
        autodiff_primitive::<B, 3>(layer(&module.clone().no_grad(), constants, untracked))
    else {
        return Err(inputs);
    };
    let device = inputs[0].device();
    // A node without a tracked parent would never be visited by the backward pass, and the
    // parameters (deliberately no parents) would get no gradient: a fresh leaf stands in.
    let dummy = (!inputs.iter().any(Tensor::is_tracked))
        .then(|| autodiff_primitive::<B, 1>(Tensor::<1>::zeros([1], &device).require_grad()))
        .flatten();
    let mut saved = Vec::with_capacity(N);
    let mut guards = Vec::with_capacity(N);
    for (i, p) in primitives.into_iter().enumerate() {
        let (primitive, guard) = p.into_parts();
        saved.push(primitive);
        guards.push(match (&dummy, i) {
            (Some(d), 0) => d.node(),
            _ => guard,
        });
    }
    let (Ok(saved), Ok(guards)) = (
        <[FloatTensor<B>; N]>::try_from(saved),
        <[NodeGuard; N]>::try_from(guards),
    ) else {
        return Err(inputs);
    };
    let node = LayerCheckpoint {
        module: module.clone(),
        constants: constants.clone(),
        layer,
    };
    let output = output.into_primitive();
    let out = match <LayerCheckpoint<M, C, N> as Backward<B, N>>::prepare::<NoCheckpointing>(
        node, guards,
    )
    .compute_bound()
    .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((saved, dummy.is_some()), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    drop(dummy);
    RECORDED.fetch_add(1, Ordering::Relaxed);
    Ok(Tensor::<3>::from_primitive::<Autodiff<B>>(out))
}

/// The node: what recomputing the layer needs besides its saved inputs.
struct LayerCheckpoint<M, C, const N: usize> {
    module: M,
    constants: C,
    layer: LayerFn<M, C, N>,
}

impl<M, C, const N: usize> fmt::Debug for LayerCheckpoint<M, C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerCheckpoint<{}>", type_name::<M>())
    }
}

/// `x`'s primitive on `B`. Every tensor passed here lives where the node's inputs did (the
/// node was built on `B`); a failure means Burn's dispatch changed under us, and the
/// backward pass cannot go on.
fn primitive_on<B: Backend, const D: usize>(x: Tensor<D>) -> FloatTensor<B>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    match x.try_into_primitive::<B>() {
        Ok(p) => p,
        Err(e) => panic!(
            "activation checkpointing: a tensor of the recomputed layer is not on {}: {e:?}",
            type_name::<B>()
        ),
    }
}

impl<B, M, C, const N: usize> Backward<B, N> for LayerCheckpoint<M, C, N>
where
    B: Backend,
    M: Module + 'static,
    C: Constants,
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    /// The layer's inputs, and whether parent 0 is the stand-in leaf rather than input 0.
    type State = ([FloatTensor<B>; N], bool);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut RawGradients, _: &mut Checkpointer) {
        RECOMPUTED.fetch_add(1, Ordering::Relaxed);
        let grad = grads.consume::<B>(&ops.node);
        let (saved, dummy) = ops.state;
        let wanted: [bool; N] =
            std::array::from_fn(|i| ops.parents[i].is_some() && !(dummy && i == 0));
        // Fresh leaves: nothing the recomputation records may belong to the outer graph,
        // whose lock this backward pass holds.
        let mut i = 0;
        let inputs: [Tensor<3>; N] = saved.map(|p| {
            let x = Tensor::<3>::from_primitive::<B>(p).autodiff();
            let x = if wanted[i] { x.require_grad() } else { x };
            i += 1;
            x
        });
        let output = (self.layer)(&self.module, &self.constants, inputs.clone());
        let mut inner = if output.is_tracked() {
            // d(sum(y * g))/dy = 1 * g: the outer gradient, to the bit.
            let seed = Tensor::<3>::from_primitive::<B>(grad).autodiff();
            Some((output * seed).sum().backward())
        } else {
            None
        };
        for ((parent, x), wanted) in ops.parents.iter().zip(&inputs).zip(wanted) {
            let (Some(parent), true) = (parent, wanted) else {
                continue;
            };
            // A parent that is tracked gets a gradient, zero if the layer ignores it: its
            // own backward step expects one.
            let g = inner
                .as_mut()
                .and_then(|inner| x.grad_remove(inner))
                .unwrap_or_else(|| x.zeros_like().inner());
            grads.register::<B>(parent.id, primitive_on::<B, 3>(g));
        }
        if let Some(inner) = inner.as_mut() {
            self.module.visit(&mut MoveGrads::<B> {
                inner,
                outer: grads,
                backend: std::marker::PhantomData,
            });
        }
    }
}

/// Moves each trainable parameter's gradient from the recomputation's backward into the
/// outer one, under the parameter's own node: where `GradientsParams::from_grads` looks.
struct MoveGrads<'a, B> {
    inner: &'a mut burn::tensor::Gradients,
    outer: &'a mut RawGradients,
    backend: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleVisitor for MoveGrads<'_, B>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let Some(grad) = value.grad_remove(self.inner) else {
            return;
        };
        let leaf = primitive_on::<Autodiff<B>, D>(value);
        self.outer
            .register::<B>(leaf.id(), primitive_on::<B, D>(grad));
    }
}
