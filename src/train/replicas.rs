//! The replicas of data-parallel training (docs/design.md §3.2, §3.3): the processes of one job
//! (`distributed::World`), of which each computes every W-th micro-batch of a step, meet here
//! once per step, between accumulation and clipping. Their gradients are summed exactly as one
//! process sums them (recursive doubling), so W ranks train the model one process trains.
//!
//! With ZeRO stage 1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
//! Parameter Models", 2020) each parameter has one owner: the gradients are reduce-scattered so
//! that an owner alone receives its parameters' sums, steps them (so only the owner holds
//! their Adam moments), and all-gathers the new values to the other ranks. The partners and
//! the order of the additions are those of the unsharded sum, so sharded and unsharded runs
//! are bit-identical.
//!
//! With ZeRO stage 2 they meet once per micro-batch instead: each micro-batch's gradients are
//! reduce-scattered as its backward pass ends and a rank keeps a running sum of its share
//! only (`Share`), so that it never holds more than one micro-batch's whole gradient. The
//! ranks then add each micro-batch before a rank adds its own, so the sums equal stage 1's up
//! to rounding.

use std::cell::{Cell, OnceCell};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::optim::{global_grad_norm, norm_of, scale_to_norm, square_sums};
use super::trainer::Summed;
use crate::distributed::{DistributedError, FNV_OFFSET, World, ZeroStage, fnv1a};

/// The replicas a step's gradients are summed over. One process has nothing to sum and takes
/// none of these paths.
pub struct Replicas<'w> {
    world: &'w World,
    zero: ZeroStage,
    /// Gradients in the last reduction, to log the buffer's size when it changes.
    last_count: Cell<usize>,
    /// The owner of each float parameter, in visiting order, once known.
    owners: OnceCell<Vec<usize>>,
}

impl<'w> Replicas<'w> {
    pub fn new(world: &'w World, zero: ZeroStage) -> Self {
        Self {
            world,
            zero,
            last_count: Cell::new(0),
            owners: OnceCell::new(),
        }
    }

    fn many(&self) -> bool {
        self.world.size() > 1
    }

    /// Whether each rank holds only its share of the optimiser state.
    pub fn sharded(&self) -> bool {
        self.many() && self.zero != ZeroStage::None
    }

    /// Each float parameter's owner, in visiting order, when the optimiser state is sharded.
    fn owners<M: Module>(&self, model: &M) -> Option<&[usize]> {
        if !self.sharded() {
            return None;
        }
        Some(self.owners.get_or_init(|| owners(model, self.world.size())))
    }

    /// Whether this rank steps each float parameter, in visiting order (which is their ids',
    /// `optim::numbered_params`); `None` when every rank steps all of them.
    pub fn owned<M: Module>(&self, model: &M) -> Option<Vec<bool>> {
        let me = self.world.rank();
        self.owners(model)
            .map(|owners| owners.iter().map(|&o| o == me).collect())
    }

    /// `value` summed over every replica.
    pub fn sum<S: Summed>(&self, mut value: S) -> S {
        if self.many() {
            let mut sums = value.sums();
            self.world.sum_f64(&mut sums);
            value.set_sums(&sums);
        }
        value
    }

    /// The step's gradients and its tally summed over every replica, in two buffers: one of
    /// f32 for every trainable parameter's gradient (-0.0 where this rank's micro-batches gave
    /// it none), one of f64 for the tally and whether each parameter received a gradient on
    /// some rank (those that did on none stay without one, as in one process, so Adam leaves
    /// them alone). Sharded, the f32 buffer is grouped by owner and reduce-scattered, and each
    /// rank returns the gradients of the parameters it owns only.
    pub fn reduce<M: Module, T: Summed>(
        &self,
        model: &M,
        grads: GradientsParams,
        tally: &mut T,
    ) -> GradientsParams {
        if !self.many() {
            return grads;
        }
        let owners = self.owners(model);
        let layout = Layout::of(model, owners, self.world.size());
        let (mut buffer, received) = pack(model, &layout, grads);
        self.log_buffer(&layout, tally.sums().len() + received.len());
        let (values, base) = if owners.is_some() {
            self.world.reduce_scatter_f32(&mut buffer, &layout.bounds);
            // Only this rank's segment is kept: the rest of the buffer is freed before the
            // gradients are rebuilt from it.
            let mine = layout.group(self.world.rank());
            let values = buffer[mine.clone()].to_vec();
            drop(buffer);
            (values, mine.start)
        } else {
            self.world.sum_f32(&mut buffer);
            (buffer, 0)
        };
        self.unpack(model, &layout, &values, base, received, tally)
    }

    /// Whether each micro-batch's gradients are reduced as soon as they exist (ZeRO stage 2),
    /// into a `Share` that `add_to_share` fills and `finish_share` turns into the step's.
    pub fn shards_gradients(&self) -> bool {
        self.many() && self.zero == ZeroStage::Gradients
    }

    /// An empty running sum of this rank's share of a step's gradients (ZeRO stage 2).
    pub fn share<M: Module>(&self, model: &M) -> Share {
        let layout = Layout::of(model, self.owners(model), self.world.size());
        let mine = layout.group(self.world.rank());
        Share {
            // -0.0: addition's identity, so the first micro-batch's sums are taken as they are.
            values: vec![-0.0; mine.len()],
            received: vec![0.0; layout.slots.len()],
            base: mine.start,
            layout,
        }
    }

    /// One micro-batch's gradients reduce-scattered over the ranks, this rank's segment added
    /// to its running sum; the rest is dropped. Every rank calls it once per micro-batch.
    pub fn add_to_share<M: Module>(&self, model: &M, share: &mut Share, grads: GradientsParams) {
        let (mut buffer, received) = pack(model, &share.layout, grads);
        self.log_buffer(&share.layout, received.len());
        self.world
            .reduce_scatter_f32(&mut buffer, &share.layout.bounds);
        let mine = share.base..share.base + share.values.len();
        for (sum, v) in share.values.iter_mut().zip(&buffer[mine]) {
            *sum += *v;
        }
        for (any, r) in share.received.iter_mut().zip(received) {
            *any = any.max(r);
        }
    }

    /// The gradients of the parameters this rank owns, from the running sum of its share, with
    /// the tally summed over the ranks.
    pub fn finish_share<M: Module, T: Summed>(
        &self,
        model: &M,
        share: Share,
        tally: &mut T,
    ) -> GradientsParams {
        let Share {
            values,
            received,
            base,
            layout,
        } = share;
        self.unpack(model, &layout, &values, base, received, tally)
    }

    /// Sums the tally and the flags of which parameters received a gradient over the ranks,
    /// then rebuilds the gradients in `values` (the buffer from offset `base`): this rank's
    /// group when sharded, all of them otherwise.
    fn unpack<M: Module, T: Summed>(
        &self,
        model: &M,
        layout: &Layout,
        values: &[f32],
        base: usize,
        received: Vec<f64>,
        tally: &mut T,
    ) -> GradientsParams {
        let mut scalars = tally.sums();
        let tally_len = scalars.len();
        scalars.extend(received);
        self.world.sum_f64(&mut scalars);
        tally.set_sums(&scalars[..tally_len]);
        let mut unpack = UnpackGrads {
            grads: GradientsParams::new(),
            layout,
            values,
            base,
            received: &scalars[tally_len..],
            mine: self.sharded().then(|| self.world.rank()),
            next: 0,
        };
        model.visit(&mut unpack);
        unpack.grads
    }

    /// On the leader, says what a reduction sends when its size changes (the first step, a
    /// stage that trains other parameters).
    fn log_buffer(&self, layout: &Layout, scalars: usize) {
        let len = layout.len();
        if !self.world.is_leader() || self.last_count.replace(len) == len {
            return;
        }
        let how = if self.sharded() {
            let shares: Vec<String> = layout
                .bounds
                .windows(2)
                .map(|w| format!("{:.1}%", 100.0 * (w[1] - w[0]) as f64 / len.max(1) as f64))
                .collect();
            let stage = if self.shards_gradients() {
                "micro-batch by micro-batch (ZeRO stage 2: each rank keeps and steps its share"
            } else {
                "(ZeRO stage 1: each rank steps its share"
            };
            format!(
                "reduce-scattered {stage}; shares by rank {})",
                shares.join(" / ")
            )
        } else {
            "summed".to_string()
        };
        crate::errln!(
            "data parallel: {} ranks; each step's {len} gradients ({:.1} MB) are {how} in one f32 buffer, with {scalars} scalars in one f64 buffer",
            self.world.size(),
            (len * 4) as f64 / 1e6,
        );
    }

    /// The L2 norm of the step's gradients, every rank's share taken together. Sharded, each
    /// parameter's sum of squares is computed by its owner and the norm adds them in the order
    /// one process does.
    pub fn grad_norm<M: Module>(&self, model: &M, grads: &GradientsParams) -> f64 {
        let Some(owners) = self.owners(model) else {
            return global_grad_norm(model, grads);
        };
        let n = owners.len();
        let squares = square_sums(model, grads);
        let mut device = squares.first().map(|(_, t)| t.device());
        let mut buffer = vec![0f32; 2 * n];
        if !squares.is_empty() {
            let (places, tensors): (Vec<usize>, Vec<Tensor<1>>) = squares.into_iter().unzip();
            let values = Tensor::cat(tensors, 0).into_data();
            for (i, v) in places.into_iter().zip(values.iter::<f32>()) {
                buffer[i] = v;
                buffer[n + i] = 1.0;
            }
        }
        // A parameter's square is on its owner alone and zeros elsewhere: the sum is exact.
        self.world.sum_f32(&mut buffer);
        let present: Vec<f32> = (0..n)
            .filter(|&i| buffer[n + i] > 0.0)
            .map(|i| buffer[i])
            .collect();
        if present.is_empty() {
            return 0.0;
        }
        let device = device.get_or_insert_with(|| first_device(model)).clone();
        let len = present.len();
        norm_of(vec![Tensor::from_data(
            TensorData::new(present, [len]),
            &device,
        )])
    }

    /// Clips the step's gradients to a global norm of `max` (every rank's share together) as
    /// `clip_grad_norm_` does; returns the norm before clipping.
    pub fn clip<M: Module>(&self, model: &M, grads: &mut GradientsParams, max: Option<f64>) -> f64 {
        let norm = self.grad_norm(model, grads);
        if let Some(max) = max {
            scale_to_norm(model, grads, norm, max);
        }
        norm
    }

    /// After a sharded step, every owner's new values on every rank (an all-gather); unsharded,
    /// `model` as it is.
    pub fn share_params<M: Module>(&self, model: M) -> M {
        let Some(owners) = self.owners(&model) else {
            return model;
        };
        let layout = Layout::of(&model, Some(owners), self.world.size());
        let me = self.world.rank();
        let mut pack = PackValues {
            layout: &layout,
            buffer: vec![0.0; layout.len()],
            me,
            next: 0,
        };
        model.visit(&mut pack);
        let mut buffer = pack.buffer;
        self.world.all_gather_f32(&mut buffer, &layout.bounds);
        model.map(&mut SetValues {
            layout: &layout,
            buffer: &buffer,
            me,
            next: 0,
        })
    }

    /// Every replica's list of skipped items (one process: none besides its own).
    pub fn gather_skipped(&self, skipped: &[String]) -> Vec<Vec<String>> {
        if !self.many() {
            return Vec::new();
        }
        self.world
            .gather_bytes(skipped.join("\0").into_bytes())
            .into_iter()
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }

    /// An error unless every replica holds the same parameters, bit for bit.
    pub fn check_same_params<M: Module>(
        &self,
        model: &M,
        step: usize,
    ) -> Result<(), DistributedError> {
        if !self.many() {
            return Ok(());
        }
        struct Checksum(u64);
        impl ModuleVisitor for Checksum {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                for v in param.val().into_data().iter::<f32>() {
                    self.0 = fnv1a(self.0, &v.to_bits().to_le_bytes());
                }
            }
        }
        let mut sum = Checksum(FNV_OFFSET);
        model.visit(&mut sum);
        let checksums = self.world.gather(sum.0);
        if checksums.iter().all(|&c| c == checksums[0]) {
            Ok(())
        } else {
            Err(DistributedError::Diverged { step, checksums })
        }
    }
}

/// The owner of each of `model`'s float parameters, in visiting order: each goes to the rank
/// holding the fewest values so far. Frozen parameters count too, so that the owners stay the
/// same when a stage changes what trains (and Adam's moments stay where they are); a parameter
/// set of any size (the LLM's LoRA adapters, the MFAM) is spread over the ranks by the
/// interleaving.
fn owners<M: Module>(model: &M, ranks: usize) -> Vec<usize> {
    struct Sizes(Vec<usize>);
    impl ModuleVisitor for Sizes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().dims().iter().product());
        }
    }
    let mut sizes = Sizes(Vec::new());
    model.visit(&mut sizes);
    let mut load = vec![0usize; ranks.max(1)];
    sizes
        .0
        .into_iter()
        .map(|n| {
            let rank = (0..load.len()).min_by_key(|&r| load[r]).unwrap_or(0);
            load[rank] += n;
            rank
        })
        .collect()
}

fn first_device<M: Module>(model: &M) -> Device {
    struct First(Option<Device>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.val().device().inner());
            }
        }
    }
    let mut first = First(None);
    model.visit(&mut first);
    first.0.unwrap_or_default()
}

/// The f32 buffer of a reduction: a slot per trainable parameter, grouped by owner (one group
/// unsharded), in visiting order within a group.
struct Layout {
    /// By trainable parameter, in visiting order.
    slots: Vec<Slot>,
    /// Where each group starts, then the buffer's end.
    bounds: Vec<usize>,
}

/// A trainable parameter's place in the buffer.
struct Slot {
    group: usize,
    start: usize,
    shape: Vec<usize>,
    /// Where its gradient lives (the autodiff backend's inner device).
    device: Device,
}

impl Slot {
    fn range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.shape.iter().product::<usize>()
    }
}

impl Layout {
    fn of<M: Module>(model: &M, owners: Option<&[usize]>, ranks: usize) -> Self {
        struct Visit<'a> {
            owners: Option<&'a [usize]>,
            index: usize,
            lens: Vec<usize>,
            slots: Vec<Slot>,
        }
        impl ModuleVisitor for Visit<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let index = self.index;
                self.index += 1;
                if !param.is_require_grad() {
                    return;
                }
                let group = self.owners.and_then(|o| o.get(index).copied()).unwrap_or(0);
                let value = param.val();
                let shape = value.dims().to_vec();
                let start = self.lens[group];
                self.lens[group] += shape.iter().product::<usize>();
                self.slots.push(Slot {
                    group,
                    start,
                    shape,
                    device: value.device().inner(),
                });
            }
        }
        let groups = if owners.is_some() { ranks.max(1) } else { 1 };
        let mut visit = Visit {
            owners,
            index: 0,
            lens: vec![0; groups],
            slots: Vec::new(),
        };
        model.visit(&mut visit);
        let mut bounds = vec![0];
        for len in &visit.lens {
            bounds.push(bounds[bounds.len() - 1] + len);
        }
        let mut slots = visit.slots;
        for slot in &mut slots {
            slot.start += bounds[slot.group];
        }
        Self { slots, bounds }
    }

    fn len(&self) -> usize {
        self.bounds.last().copied().unwrap_or(0)
    }

    /// The buffer range of `rank`'s group; unsharded, group 0 is the whole buffer and the
    /// others are empty.
    fn group(&self, rank: usize) -> std::ops::Range<usize> {
        match (self.bounds.get(rank), self.bounds.get(rank + 1)) {
            (Some(&start), Some(&end)) => start..end,
            _ => 0..0,
        }
    }

    /// The slot of `param` when it is the next trainable parameter in visiting order (which
    /// `next` counts, and this advances); `None` for a frozen one.
    fn slot<const D: usize>(&self, param: &Param<Tensor<D>>, next: &mut usize) -> Option<&Slot> {
        if !param.is_require_grad() {
            return None;
        }
        let slot = self.slots.get(*next)?;
        *next += 1;
        Some(slot)
    }
}

/// `data`'s values into `slot`'s place in `buffer`.
fn write(buffer: &mut [f32], slot: &Slot, data: TensorData) {
    for (to, v) in buffer[slot.range()].iter_mut().zip(data.iter::<f32>()) {
        *to = v;
    }
}

/// `grads` in `layout`'s f32 buffer, each gradient taken out of `grads` as it is copied so that
/// the buffer replaces them rather than doubling them: its pages are the allocator's zeroed
/// ones until written. Beside it, 1.0 or 0.0 for each trainable parameter: whether it received
/// a gradient here.
fn pack<M: Module>(model: &M, layout: &Layout, grads: GradientsParams) -> (Vec<f32>, Vec<f64>) {
    let mut pack = PackGrads {
        grads,
        layout,
        buffer: vec![0.0; layout.len()],
        received: Vec::with_capacity(layout.slots.len()),
        next: 0,
    };
    model.visit(&mut pack);
    (pack.buffer, pack.received)
}

struct PackGrads<'a> {
    grads: GradientsParams,
    layout: &'a Layout,
    buffer: Vec<f32>,
    received: Vec<f64>,
    next: usize,
}

impl ModuleVisitor for PackGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(slot) = self.layout.slot(param, &mut self.next) else {
            return;
        };
        match self.grads.remove::<D>(param.id) {
            Some(g) => {
                self.received.push(1.0);
                write(&mut self.buffer, slot, g.into_data());
            }
            None => {
                self.received.push(0.0);
                // -0.0 is addition's identity (+0.0 would turn another rank's -0.0 into +0.0).
                self.buffer[slot.range()].fill(-0.0);
            }
        }
    }
}

/// A rank's running sum of its share of a step's gradients (ZeRO stage 2).
pub struct Share {
    /// This rank's group of the layout's buffer.
    values: Vec<f32>,
    /// Whether each trainable parameter received a gradient on this rank so far (1.0 or 0.0).
    received: Vec<f64>,
    /// Where `values` starts in the buffer.
    base: usize,
    layout: Layout,
}

struct UnpackGrads<'a> {
    grads: GradientsParams,
    layout: &'a Layout,
    /// The buffer from offset `base` on.
    values: &'a [f32],
    base: usize,
    received: &'a [f64],
    /// This rank, when it receives only its own group.
    mine: Option<usize>,
    next: usize,
}

impl ModuleVisitor for UnpackGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let index = self.next;
        let (Some(slot), Some(&received)) = (
            self.layout.slot(param, &mut self.next),
            self.received.get(index),
        ) else {
            return;
        };
        if received <= 0.0 || self.mine.is_some_and(|me| me != slot.group) {
            return;
        }
        let range = slot.range();
        let Some(values) = range
            .start
            .checked_sub(self.base)
            .and_then(|start| self.values.get(start..range.end - self.base))
        else {
            return;
        };
        let data = TensorData::new(values.to_vec(), slot.shape.clone());
        self.grads
            .register::<D>(param.id, Tensor::from_data(data, &slot.device));
    }
}

/// The values of the parameters this rank owns, in their slots.
struct PackValues<'a> {
    layout: &'a Layout,
    buffer: Vec<f32>,
    me: usize,
    next: usize,
}

impl ModuleVisitor for PackValues<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match self.layout.slot(param, &mut self.next) {
            Some(slot) if slot.group == self.me => {
                write(&mut self.buffer, slot, param.val().into_data());
            }
            _ => {}
        }
    }
}

/// The parameters other ranks own, set to the values they sent.
struct SetValues<'a> {
    layout: &'a Layout,
    buffer: &'a [f32],
    me: usize,
    next: usize,
}

impl ModuleMapper for SetValues<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(slot) = self.layout.slot(&param, &mut self.next) else {
            return param;
        };
        let Some(values) = self.buffer.get(slot.range()) else {
            return param;
        };
        if slot.group == self.me {
            return param;
        }
        let (id, value, mapper) = param.consume();
        let data = TensorData::new(values.to_vec(), slot.shape.clone());
        let fresh =
            Tensor::<D>::from_data(data, &value.device()).set_require_grad(value.is_require_grad());
        Param::from_mapped_value(id, fresh, mapper)
    }
}
