//! The processes of one data-parallel job (docs/design.md §3.2). One process per device,
//! started by an MPI launcher (`mpirun`, `srun`) with the same command line on every rank, as
//! PyTorch's DDP and Horovod do: Burn 0.22's own collectives are NCCL-only and in one process,
//! so across processes and machines the job meets through MPI (the `mpi` cargo feature, rsmpi
//! over the system's Open MPI or MPICH).
//!
//! Without the feature, or when no launcher started the process, the world is one process and
//! nothing here communicates.

use serde::{Deserialize, Serialize};

/// `distributed:` of a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedConfig {
    /// Every this many optimiser steps (and after the last), the ranks compare a checksum of
    /// their parameters and stop with an error when they differ (0: never; they still compare
    /// once before the first step, where different starting weights would show).
    pub check_every: usize,
    /// Which training state the ranks split between them instead of each holding all of it
    /// (ZeRO, Rajbhandari et al. 2020; docs/design.md §3.3).
    pub zero: ZeroStage,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            // A checksum reads every parameter back to the host: rare enough to cost nothing
            // next to 50 steps, often enough to stop a diverged job within the hour at CALM's
            // scale.
            check_every: 50,
            zero: ZeroStage::None,
        }
    }
}

/// What each rank of a data-parallel job holds of the optimiser's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroStage {
    /// Every rank holds all of it and takes the whole step, as one process does.
    None,
    /// ZeRO stage 1: each rank keeps Adam's moments of its share of the parameters, receives
    /// only its share of the summed gradients (reduce-scatter) and updates only that share;
    /// the updated values are then sent to every rank (all-gather). Adam's 8 bytes per trained
    /// parameter become 8/W.
    OptimizerState,
    /// ZeRO stage 2: stage 1, and each micro-batch's gradients are reduce-scattered as soon as
    /// its backward pass ends, so that a rank keeps the running sum of its own share only: the
    /// running sum's 4 bytes per trained parameter become 4/W, and no second whole gradient is
    /// held while micro-batches accumulate. The price: a reduction per micro-batch instead of
    /// per step, and sums added micro-batch by micro-batch across ranks first, so that the
    /// result equals stage 1's up to rounding rather than bit for bit.
    Gradients,
}

#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error(
        "an MPI launcher started this process as one of {size}, but this build has no `mpi` feature: rebuild with `--features mpi` (see README, \"Many GPUs and machines\"), or start one process"
    )]
    NotCompiled { size: usize },
    #[error("MPI was already initialised in this process")]
    AlreadyInitialised,
    #[error("`{command}` runs as one process; start it without mpirun/srun ({size} were started)")]
    OneProcessOnly { command: String, size: usize },
    #[error(
        "{key} = {value} is not divisible by the {ranks} ranks: each rank computes the same number of micro-batches per step"
    )]
    NotDivisible {
        key: &'static str,
        value: usize,
        ranks: usize,
    },
    #[error(
        "the replicas hold different parameters at step {step} (checksums by rank: {checksums:x?}): they must start from the same weights and take the same steps; rank 0's checkpoints hold its own copy"
    )]
    Diverged { step: usize, checksums: Vec<u64> },
    #[error("the ranks disagree on {what}: {detail}")]
    Disagree { what: &'static str, detail: String },
}

/// How many processes an MPI launcher says it started, from the variables Open MPI, MPICH's
/// Hydra (and Intel MPI) and `srun` set; `None` when no launcher started this process.
/// `SLURM_NTASKS` alone is not one (a batch script has it too): under `srun --mpi=pmix` only
/// `PMIX_RANK` says a launcher is there, and the step's task count gives the size.
pub fn launched_size() -> Option<usize> {
    let var = |key: &str| std::env::var(key).ok()?.trim().parse::<usize>().ok();
    var("OMPI_COMM_WORLD_SIZE")
        .or_else(|| var("PMI_SIZE"))
        .or_else(|| {
            std::env::var_os("PMIX_RANK")?;
            Some(
                var("SLURM_STEP_NUM_TASKS")
                    .or_else(|| var("SLURM_NTASKS"))
                    .unwrap_or(1),
            )
        })
}

/// An error when a launcher started this process as one of several: for commands that data
/// parallelism does not split, which would otherwise all do the same work at once.
pub fn one_process(command: &str) -> Result<(), DistributedError> {
    match launched_size() {
        Some(size) if size > 1 => Err(DistributedError::OneProcessOnly {
            command: command.to_string(),
            size,
        }),
        _ => Ok(()),
    }
}

/// The processes of this job: this one's rank among them, and the collectives the trainer
/// needs. Holds MPI's environment: dropping it finalises MPI.
pub struct World {
    inner: Inner,
}

enum Inner {
    Single,
    #[cfg(feature = "mpi")]
    Mpi(mpi_world::MpiWorld),
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World(rank {} of {})", self.rank(), self.size())
    }
}

impl World {
    /// One process, communicating with nobody.
    pub fn single() -> Self {
        Self {
            inner: Inner::Single,
        }
    }

    /// The job this process belongs to: MPI's world when a launcher started it (and the build
    /// has the `mpi` feature), else one process.
    pub fn init() -> Result<Self, DistributedError> {
        let launched = launched_size();
        #[cfg(feature = "mpi")]
        if launched.is_some() {
            return Ok(Self {
                inner: Inner::Mpi(mpi_world::MpiWorld::init()?),
            });
        }
        match launched {
            Some(size) if size > 1 => Err(DistributedError::NotCompiled { size }),
            _ => Ok(Self::single()),
        }
    }

    pub fn rank(&self) -> usize {
        match &self.inner {
            Inner::Single => 0,
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.rank,
        }
    }

    pub fn size(&self) -> usize {
        match &self.inner {
            Inner::Single => 1,
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.size,
        }
    }

    /// This process's rank among those on its machine: which of the machine's GPUs it takes.
    pub fn local_rank(&self) -> usize {
        match &self.inner {
            Inner::Single => 0,
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.local_rank,
        }
    }

    /// Rank 0, which alone writes the run directory.
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// Waits until every rank has reached this point.
    pub fn barrier(&self) {
        match &self.inner {
            Inner::Single => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.barrier(),
        }
    }

    /// Rank 0's `bytes` on every rank (what the others pass is ignored).
    pub fn broadcast(&self, bytes: Vec<u8>) -> Vec<u8> {
        match &self.inner {
            Inner::Single => bytes,
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.broadcast(bytes),
        }
    }

    /// Sums `values` element-wise over the ranks, in place; every rank gets the same sums.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn sum_f32(&self, values: &mut [f32]) {
        match &self.inner {
            Inner::Single => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.sum(values),
        }
    }

    /// `sum_f32` for the step's scalars, kept in f64 as one process keeps them.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn sum_f64(&self, values: &mut [f64]) {
        match &self.inner {
            Inner::Single => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.sum(values),
        }
    }

    /// Sums `values` over the ranks like `sum_f32`, but rank r receives only its segment,
    /// `bounds[r]..bounds[r + 1]` (`bounds` has W + 1 increasing offsets); the rest of `values`
    /// is left unspecified. With a power-of-two W the sums are bit-identical to `sum_f32`'s.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn reduce_scatter_f32(&self, values: &mut [f32], bounds: &[usize]) {
        match &self.inner {
            Inner::Single => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.reduce_scatter(values, bounds),
        }
    }

    /// The inverse of `reduce_scatter_f32`: each rank's segment of `values` is copied to every
    /// other rank, which then all hold the same `values`.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn all_gather_f32(&self, values: &mut [f32], bounds: &[usize]) {
        match &self.inner {
            Inner::Single => {}
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.all_gather(values, bounds),
        }
    }

    /// Every rank's `bytes`, by rank.
    pub fn gather_bytes(&self, bytes: Vec<u8>) -> Vec<Vec<u8>> {
        match &self.inner {
            Inner::Single => vec![bytes],
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.gather_bytes(bytes),
        }
    }

    /// Every rank's `value`, by rank.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn gather(&self, value: u64) -> Vec<u64> {
        match &self.inner {
            Inner::Single => vec![value],
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.gather(value),
        }
    }

    /// Ends every process of the job with `code`; one process simply exits.
    pub fn abort(&self, code: i32) -> ! {
        match &self.inner {
            Inner::Single => std::process::exit(code),
            #[cfg(feature = "mpi")]
            Inner::Mpi(w) => w.abort(code),
        }
    }

    /// An error if `key`'s `value` cannot be split evenly over the ranks.
    pub fn check_divides(&self, key: &'static str, value: usize) -> Result<(), DistributedError> {
        if value.is_multiple_of(self.size()) {
            Ok(())
        } else {
            Err(DistributedError::NotDivisible {
                key,
                value,
                ranks: self.size(),
            })
        }
    }

    /// An error unless every rank passed the same `value` (e.g. a run directory or a config):
    /// ranks that disagree would train different models.
    pub fn check_same(&self, what: &'static str, value: &[u8]) -> Result<(), DistributedError> {
        if self.size() == 1 {
            return Ok(());
        }
        let hashes = self.gather(fnv1a(FNV_OFFSET, value));
        if hashes.iter().all(|&h| h == hashes[0]) {
            Ok(())
        } else {
            let differ: Vec<usize> = (0..hashes.len())
                .filter(|&r| hashes[r] != hashes[0])
                .collect();
            Err(DistributedError::Disagree {
                what,
                detail: format!("ranks {differ:?} differ from rank 0"),
            })
        }
    }
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `hash`: a checksum that is the same on every machine
/// for the same bytes (Rust's `DefaultHasher` promises no such thing).
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::datatype::Equivalence;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};

    use super::DistributedError;

    /// MPI counts are C ints: larger buffers go in pieces of this many elements.
    const CHUNK: usize = 1 << 26;

    pub struct MpiWorld {
        // Dropped last: finalises MPI.
        comm: SimpleCommunicator,
        _universe: Universe,
        pub rank: usize,
        pub size: usize,
        pub local_rank: usize,
    }

    impl MpiWorld {
        pub fn init() -> Result<Self, DistributedError> {
            // Only the main thread calls MPI; the loader thread never does.
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
                .ok_or(DistributedError::AlreadyInitialised)?;
            let comm = universe.world();
            let rank = usize::try_from(comm.rank()).unwrap_or(0);
            let size = usize::try_from(comm.size()).unwrap_or(1);
            let local_rank = usize::try_from(comm.split_shared(comm.rank()).rank()).unwrap_or(0);
            if size > 1 {
                install_panic_abort(rank, size);
            }
            Ok(Self {
                comm,
                _universe: universe,
                rank,
                size,
                local_rank,
            })
        }

        pub fn barrier(&self) {
            self.comm.barrier();
        }

        pub fn broadcast(&self, mut bytes: Vec<u8>) -> Vec<u8> {
            let root = self.comm.process_at_rank(0);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            bytes.resize(usize::try_from(len).unwrap_or(0), 0);
            for chunk in bytes.chunks_mut(CHUNK) {
                root.broadcast_into(chunk);
            }
            bytes
        }

        /// With a power-of-two number of ranks, recursive doubling with partners r ^ W/2,
        /// r ^ W/4, ...: every addition is of two terms (the same on both partners, addition
        /// being commutative) and the sum is the tree whose leaves are the ranks in order of
        /// their bit-reversed number, the tree `train::trainer::step_order` continues inside
        /// each rank; so W ranks add exactly as one process does. Otherwise MPI's own sum.
        pub fn sum<T: Equivalence + Copy + Default + std::ops::Add<Output = T>>(
            &self,
            values: &mut [T],
        ) {
            if !self.size.is_power_of_two() {
                return self.all_reduce(values);
            }
            let mut received = vec![T::default(); values.len().min(CHUNK)];
            let mut half = self.size / 2;
            while half >= 1 {
                let partner = self
                    .comm
                    .process_at_rank(i32::try_from(self.rank ^ half).unwrap_or(0));
                for chunk in values.chunks_mut(CHUNK) {
                    let received = &mut received[..chunk.len()];
                    mpi::point_to_point::send_receive_into(
                        &chunk[..],
                        &partner,
                        received,
                        &partner,
                    );
                    for (a, b) in chunk.iter_mut().zip(received.iter()) {
                        *a = *a + *b;
                    }
                }
                half /= 2;
            }
        }

        /// Recursive halving with the partners of `sum`'s recursive doubling, in the same
        /// order: at each level a rank keeps the half of its group's range that its own half of
        /// the group owns, and adds its partner's values there. Each owned value is therefore
        /// the sum `sum` computes, addition for addition, and each rank sends about
        /// (W - 1)/W of the buffer instead of log2(W) times it.
        pub fn reduce_scatter(&self, values: &mut [f32], bounds: &[usize]) {
            if !self.size.is_power_of_two() || bounds.len() != self.size + 1 {
                return self.sum(values);
            }
            let mut received = vec![0f32; values.len().min(CHUNK)];
            let (mut lo, mut hi) = (0, self.size);
            let mut half = self.size / 2;
            while half >= 1 {
                let mid = lo + half;
                let partner = self
                    .comm
                    .process_at_rank(i32::try_from(self.rank ^ half).unwrap_or(0));
                let (low, high) = ((bounds[lo], bounds[mid]), (bounds[mid], bounds[hi]));
                let (keep, give) = if self.rank < mid {
                    (low, high)
                } else {
                    (high, low)
                };
                let chunks = (keep.1 - keep.0)
                    .div_ceil(CHUNK)
                    .max((give.1 - give.0).div_ceil(CHUNK));
                for i in 0..chunks {
                    let window = |(start, end): (usize, usize)| {
                        let from = (start + i * CHUNK).min(end);
                        from..(from + CHUNK).min(end)
                    };
                    let (kept, given) = (window(keep), window(give));
                    let received = &mut received[..kept.len()];
                    mpi::point_to_point::send_receive_into(
                        &values[given],
                        &partner,
                        received,
                        &partner,
                    );
                    for (a, b) in values[kept].iter_mut().zip(received.iter()) {
                        *a += *b;
                    }
                }
                if self.rank < mid {
                    hi = mid;
                } else {
                    lo = mid;
                }
                half /= 2;
            }
        }

        /// Each rank's segment broadcast from it in turn.
        pub fn all_gather(&self, values: &mut [f32], bounds: &[usize]) {
            if bounds.len() != self.size + 1 {
                return;
            }
            for owner in 0..self.size {
                let root = self.comm.process_at_rank(i32::try_from(owner).unwrap_or(0));
                let (start, end) = (bounds[owner], bounds[owner + 1].min(values.len()));
                for chunk in values[start.min(end)..end].chunks_mut(CHUNK) {
                    root.broadcast_into(chunk);
                }
            }
        }

        fn all_reduce<T: Equivalence + Copy>(&self, values: &mut [T]) {
            let mut send = Vec::with_capacity(values.len().min(CHUNK));
            for chunk in values.chunks_mut(CHUNK) {
                send.clear();
                send.extend_from_slice(chunk);
                self.comm
                    .all_reduce_into(&send[..], chunk, SystemOperation::sum());
            }
        }

        #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
        pub fn gather(&self, value: u64) -> Vec<u64> {
            let mut all = vec![0u64; self.size];
            self.comm.all_gather_into(&value, &mut all[..]);
            all
        }

        pub fn gather_bytes(&self, bytes: Vec<u8>) -> Vec<Vec<u8>> {
            let lengths: Vec<usize> = self
                .gather(bytes.len() as u64)
                .into_iter()
                .map(|n| usize::try_from(n).unwrap_or(0))
                .collect();
            let counts: Vec<i32> = lengths
                .iter()
                .map(|&n| i32::try_from(n).unwrap_or(i32::MAX))
                .collect();
            let displs: Vec<i32> = counts
                .iter()
                .scan(0i32, |at, &n| {
                    let here = *at;
                    *at = at.saturating_add(n);
                    Some(here)
                })
                .collect();
            let total: usize = lengths.iter().sum();
            if total == 0 {
                // MPI refuses a gather into an empty buffer.
                return vec![Vec::new(); self.size];
            }
            let mut all = vec![0u8; total];
            {
                let mut partition = mpi::datatype::PartitionMut::new(&mut all[..], counts, displs);
                self.comm
                    .all_gather_varcount_into(&bytes[..], &mut partition);
            }
            let mut rest = &all[..];
            lengths
                .iter()
                .map(|&n| {
                    let (mine, tail) = rest.split_at(n.min(rest.len()));
                    rest = tail;
                    mine.to_vec()
                })
                .collect()
        }

        pub fn abort(&self, code: i32) -> ! {
            self.comm.abort(code)
        }
    }

    /// A panic on one rank would leave the others waiting in a collective for ever: it names
    /// the rank and ends the whole job. Only from the main thread, the one that calls MPI
    /// (`Funneled`): a loader thread's panic reaches it as an error, which ends the job too.
    fn install_panic_abort(rank: usize, size: usize) {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            if std::thread::current().name() == Some("main") {
                eprintln!("rank {rank} of {size} panicked; ending the job");
                // SAFETY: MPI is initialised (the world exists); MPI_Abort never returns.
                unsafe {
                    mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 101);
                }
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_sums_nothing_and_divides_everything() {
        let world = World::single();
        let mut v = vec![1.0f32, 2.0];
        world.sum_f32(&mut v);
        assert_eq!(v, [1.0, 2.0]);
        assert_eq!(world.gather(7), [7]);
        assert!(world.check_divides("x", 3).is_ok());
        assert!(world.is_leader());
        assert_eq!(world.broadcast(b"abc".to_vec()), b"abc");
    }

    #[test]
    fn fnv1a_matches_its_published_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }
}
