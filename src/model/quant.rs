//! Weight matrices kept in ggml's quantised block formats (llama.cpp's `ggml-quants.c`, the
//! GGUF files' layout) and the matrix products that read them directly, dequantising block
//! by block as they go (docs/design.md §3.4).
//!
//! A matrix is `[rows, cols]` row-major, as GGUF stores a linear layer's weight (`[out, in]`):
//! each row is `cols / block_elements` consecutive blocks. The blocks stay in the buffer they
//! were read into (the whole GGUF file, shared): a 4-bit LLM takes its file's size in memory,
//! not the 8x of f32.
//!
//! Two kernels:
//! - up to 16 rows of input (decoding, short prompts): for Q4_0, Q4_1 and Q8_0, llama.cpp's: the input is
//!   quantised to 8 bits per 32 values (Q8_1 blocks) and each pair of blocks is one integer
//!   dot product (AVX2 where the CPU has it, chosen at run time; the same integer sums in
//!   plain Rust elsewhere), scaled in f32. That rounding of the input is the one difference
//!   from the dequantised product: at most half a step, 0.4% of a block's largest input, per
//!   value. With `Inputs::F32` (an LM head) and for the K-quants, each row is dotted in f32;
//! - more rows (prompts, training): panels of weight rows are dequantised into a scratch
//!   buffer and multiplied with `gemm`, so that decoding a block is paid once per panel, not
//!   once per input row. This equals the dequantised product up to the order of additions.
//!
//! Both run on rayon's pool over disjoint output rows, except matrices under
//! `PARALLEL_BYTES`, which stay on the calling thread; the input's gradient over disjoint
//! bands of its columns. Every output is summed in one fixed order, whatever the threads.
//! tests/quantized.rs compares them with the dequantised model.

use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

/// The block formats whose products run without dequantising the matrix.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// 32 weights: an f16 scale `d`, 4-bit `q`; `w = d (q - 8)`.
    Q4_0,
    /// 32 weights: f16 `d` and `m`, 4-bit `q`; `w = d q + m`.
    Q4_1,
    /// 32 weights: an f16 scale, 8-bit signed `q`; `w = d q`.
    Q8_0,
    /// 256 weights in 8 groups of 32, 6-bit group scales and mins under f16 `d`, `dmin`.
    Q4_K,
    /// 256 weights in 16 groups of 16, 8-bit group scales under an f16 `d`, 6-bit `q`.
    Q6_K,
}

impl BlockFormat {
    pub const fn block_elements(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => 32,
            Self::Q4_K | Self::Q6_K => 256,
        }
    }

    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q4_K => 144,
            Self::Q6_K => 210,
        }
    }

    /// Decodes consecutive whole blocks into `out`, `block_elements` values each.
    pub fn dequantize_blocks(self, blocks: &[u8], out: &mut [f32]) {
        let (n, b) = (self.block_elements(), self.block_bytes());
        for (block, y) in blocks.chunks_exact(b).zip(out.chunks_exact_mut(n)) {
            self.dequantize_block(block, y);
        }
    }

    /// Decodes one block (`block_bytes` bytes) into `block_elements` values.
    pub fn dequantize_block(self, block: &[u8], out: &mut [f32]) {
        match self {
            Self::Q4_0 => q4_0(fixed(block), fixed_mut(out)),
            Self::Q4_1 => q4_1(fixed(block), fixed_mut(out)),
            Self::Q8_0 => q8_0(fixed(block), fixed_mut(out)),
            Self::Q4_K => q4_k(fixed(block), fixed_mut(out)),
            Self::Q6_K => q6_k(fixed(block), fixed_mut(out)),
        }
    }
}

/// The first `N` items of `s` as an array; callers pass slices of at least `N`.
fn fixed<const N: usize>(s: &[u8]) -> &[u8; N] {
    s.first_chunk()
        .expect("a block slice holds the whole block")
}

fn fixed_mut<const N: usize>(s: &mut [f32]) -> &mut [f32; N] {
    s.first_chunk_mut()
        .expect("a block's output holds the whole block")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{cols} columns are not a whole number of {format:?} blocks of {block}")]
    Columns {
        format: BlockFormat,
        cols: usize,
        block: usize,
    },
    #[error(
        "a {rows} x {cols} {format:?} matrix needs {needed} bytes from offset {offset}; the buffer holds {len}"
    )]
    Bytes {
        format: BlockFormat,
        rows: usize,
        cols: usize,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("a matrix of no rows")]
    Rows,
    #[error("a row order of {got} entries for {rows} rows, or an entry out of range")]
    RowOrder { got: usize, rows: usize },
}

/// A quantised `[rows, cols]` matrix whose blocks live in a shared buffer.
#[derive(Clone)]
pub struct QMatrix {
    pub format: BlockFormat,
    pub rows: usize,
    pub cols: usize,
    data: Arc<Vec<u8>>,
    offset: usize,
    /// Logical row `r` is stored row `order[r]` (a GGUF q/k projection's rows are permuted
    /// for llama.cpp's rotary layout); `None` = stored order.
    order: Option<Arc<[u32]>>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QMatrix({:?}, {} x {})",
            self.format, self.rows, self.cols
        )
    }
}

impl QMatrix {
    /// The matrix whose blocks start at `offset` in `data`.
    pub fn new(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: Arc<Vec<u8>>,
        offset: usize,
    ) -> Result<Self, QuantError> {
        let block = format.block_elements();
        if cols == 0 || !cols.is_multiple_of(block) {
            return Err(QuantError::Columns {
                format,
                cols,
                block,
            });
        }
        if rows == 0 {
            return Err(QuantError::Rows);
        }
        let needed = (cols / block)
            .checked_mul(format.block_bytes())
            .and_then(|b| b.checked_mul(rows));
        let fits = needed
            .and_then(|n| offset.checked_add(n))
            .is_some_and(|end| end <= data.len());
        if !fits {
            return Err(QuantError::Bytes {
                format,
                rows,
                cols,
                offset,
                needed: needed.unwrap_or(usize::MAX),
                len: data.len(),
            });
        }
        Ok(Self {
            format,
            rows,
            cols,
            data,
            offset,
            order: None,
        })
    }

    /// The same blocks read with logical row `r` taken from stored row `order[r]`.
    pub fn with_row_order(mut self, order: Vec<u32>) -> Result<Self, QuantError> {
        if order.len() != self.rows || order.iter().any(|&r| r as usize >= self.rows) {
            return Err(QuantError::RowOrder {
                got: order.len(),
                rows: self.rows,
            });
        }
        self.order = Some(order.into());
        Ok(self)
    }

    /// Bytes of blocks.
    pub fn byte_len(&self) -> usize {
        self.rows * self.row_bytes()
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.format.block_elements() * self.format.block_bytes()
    }

    /// The blocks of logical row `r`.
    fn row(&self, r: usize) -> &[u8] {
        let stored = self.order.as_ref().map_or(r, |o| o[r] as usize);
        let start = self.offset + stored * self.row_bytes();
        &self.data[start..start + self.row_bytes()]
    }

    /// Logical row `r` in f32, into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        self.format.dequantize_blocks(self.row(r), out);
    }

    /// The whole matrix in f32, `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        out.par_chunks_mut(self.cols)
            .enumerate()
            .for_each(|(r, y)| self.dequantize_row(r, y));
        out
    }

    /// `x W^T`: `x` `[n, cols]` row-major -> `[n, rows]`.
    pub fn matmul_t(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.matmul_t_with(x, n, Inputs::Int8)
    }

    /// `matmul_t`, with the few-rows kernel's input held as `inputs` says.
    pub fn matmul_t_with(&self, x: &[f32], n: usize, inputs: Inputs) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "input of {n} rows of {}", self.cols);
        if n == 0 {
            return Vec::new();
        }
        if n <= FEW_ROWS {
            self.matmul_t_rows(x, n, inputs)
        } else {
            self.matmul_t_panels(x, n)
        }
    }

    /// `g W`: `g` `[n, rows]` -> `[n, cols]` (the input's gradient of `matmul_t`).
    pub fn matmul(&self, g: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(
            g.len(),
            n * self.rows,
            "gradient of {n} rows of {}",
            self.rows
        );
        if n == 0 {
            return Vec::new();
        }
        let (rows, cols) = (self.rows, self.cols);
        let (be, bb) = (self.format.block_elements(), self.format.block_bytes());
        let mut dx = vec![0.0f32; n * cols];
        let out = SendPtr(dx.as_mut_ptr());
        // Each task owns a band of block-aligned columns and adds every panel of rows into it
        // in order, so the sums do not depend on how rayon splits the work.
        let band_blocks = (cols / be)
            .div_ceil(rayon::current_num_threads() * 4)
            .max(1);
        let bands = (cols / be).div_ceil(band_blocks);
        (0..bands)
            .into_par_iter()
            .for_each_init(Vec::new, |scratch, band| {
                let b0 = band * band_blocks;
                let b1 = (b0 + band_blocks).min(cols / be);
                let (c0, width) = (b0 * be, (b1 - b0) * be);
                let out = &out;
                for r0 in (0..rows).step_by(PANEL_ROWS) {
                    let pr = PANEL_ROWS.min(rows - r0);
                    scratch.resize(pr * width, 0.0);
                    for (i, y) in scratch.chunks_exact_mut(width).enumerate() {
                        self.format
                            .dequantize_blocks(&self.row(r0 + i)[b0 * bb..b1 * bb], y);
                    }
                    // dx[:, c0..c0 + width] += g[:, r0..r0 + pr] [n, pr] * panel [pr, width]; the
                    // bands' columns are disjoint.
                    unsafe {
                        gemm::gemm(
                            n,
                            width,
                            pr,
                            out.0.add(c0),
                            1,
                            cols as isize,
                            true,
                            g.as_ptr().add(r0),
                            1,
                            rows as isize,
                            scratch.as_ptr(),
                            1,
                            width as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
            });
        dx
    }

    /// Rows `r0..r0 + pr` in f32 into `scratch` (`[pr, cols]`).
    fn dequantize_panel(&self, r0: usize, pr: usize, scratch: &mut Vec<f32>) {
        scratch.resize(pr * self.cols, 0.0);
        for (i, y) in scratch.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r0 + i, y);
        }
    }

    fn matmul_t_panels(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let mut y = vec![0.0f32; n * rows];
        let out = SendPtr(y.as_mut_ptr());
        let panels = rows.div_ceil(PANEL_ROWS);
        (0..panels)
            .into_par_iter()
            .for_each_init(Vec::new, |scratch, p| {
                let r0 = p * PANEL_ROWS;
                let pr = PANEL_ROWS.min(rows - r0);
                self.dequantize_panel(r0, pr, scratch);
                let out = &out;
                // y[:, r0..r0 + pr] [n, pr] = x [n, cols] * panel^T [cols, pr]. Each panel
                // writes its own columns of y, so the writes are disjoint.
                unsafe {
                    gemm::gemm(
                        n,
                        pr,
                        cols,
                        out.0.add(r0),
                        1,
                        rows as isize,
                        false,
                        x.as_ptr(),
                        1,
                        cols as isize,
                        scratch.as_ptr(),
                        cols as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        y
    }

    fn matmul_t_rows(&self, x: &[f32], n: usize, inputs: Inputs) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let simd = Simd::detect();
        // The legacy formats meet the input quantised to 8 bits, as llama.cpp's `vec_dot`
        // kernels do: integer products, one f32 scale per pair of blocks.
        let legacy = inputs == Inputs::Int8
            && matches!(
                self.format,
                BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q8_0
            );
        let q8: Vec<Q8Row> = if legacy {
            x.chunks_exact(cols).map(Q8Row::new).collect()
        } else {
            Vec::new()
        };
        let mut yt = vec![0.0f32; rows * n];
        // One task per thread: waking the pool costs microseconds, about what a small
        // matrix takes, and below `PARALLEL_BYTES` the product runs on this thread alone.
        let threads = if self.byte_len() < PARALLEL_BYTES {
            1
        } else {
            rayon::current_num_threads()
        };
        let chunk = rows.div_ceil(threads);
        let task = |(c, out): (usize, &mut [f32])| {
            let mut buf = if legacy {
                Vec::new()
            } else {
                vec![0.0f32; cols]
            };
            for (i, o) in out.chunks_exact_mut(n).enumerate() {
                let row = self.row(c * chunk + i);
                if legacy {
                    for (o, xq) in o.iter_mut().zip(&q8) {
                        *o = simd.dot_q8(self.format, row, xq);
                    }
                } else if let Some(dot) = simd.dot_f32(self.format, row, x, n) {
                    o[0] = dot;
                } else {
                    simd.row_dots(self.format, row, x, &mut buf, o);
                }
            }
        };
        if threads == 1 {
            task((0, &mut yt));
        } else {
            yt.par_chunks_mut(chunk * n).enumerate().for_each(task);
        }
        if n == 1 {
            return yt;
        }
        let mut y = vec![0.0f32; n * rows];
        for (r, v) in yt.chunks_exact(n).enumerate() {
            for (t, v) in v.iter().enumerate() {
                y[t * rows + r] = *v;
            }
        }
        y
    }
}

/// How the few-rows kernel holds its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inputs {
    /// Rounded to 8 bits per 32 values (Q4_0, Q4_1, Q8_0; the K-quants are always f32):
    /// llama.cpp's integer products, fastest.
    Int8,
    /// In f32 against each dequantised row: the dequantised product up to rounding, for
    /// outputs whose order matters, as an LM head's near ties.
    F32,
}

/// An input row quantised per 32 values to 8 bits (llama.cpp's Q8_1 blocks): `x ~ d q`, and
/// `s = d * sum(q)` for the offsets of Q4_1.
struct Q8Row {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Q8Row {
    fn new(x: &[f32]) -> Self {
        let blocks = x.len() / 32;
        let (mut q, mut d, mut s) = (
            Vec::with_capacity(x.len()),
            Vec::with_capacity(blocks),
            Vec::with_capacity(blocks),
        );
        for block in x.chunks_exact(32) {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // A NaN in the block makes its products NaN, as in f32 (`max` would skip it);
            // a block too small for `1 / scale` to be finite rounds to zeros.
            let scale = if block.iter().any(|v| v.is_nan()) {
                f32::NAN
            } else {
                amax / 127.0
            };
            let inv = if scale >= f32::MIN_POSITIVE {
                1.0 / scale
            } else {
                0.0
            };
            let mut sum = 0i32;
            for v in block {
                // Round to nearest (ties to even) by the float adder, |v * inv| <= 127: no
                // libm call in the loop.
                const MAGIC: f32 = 12_582_912.0;
                let v = ((v * inv + MAGIC) - MAGIC) as i8;
                sum += i32::from(v);
                q.push(v);
            }
            d.push(scale);
            s.push(scale * sum as f32);
        }
        Self { q, d, s }
    }
}

/// Up to this many input rows, each weight row is decoded once and dotted with every input
/// row; beyond, panels go through `gemm`. Dequantising a panel costs about as much as 16
/// rows of 8-bit dot products (a 7B model's 9-token prompt took 5 s through panels).
const FEW_ROWS: usize = 16;
/// Matrices of fewer block bytes than this are multiplied on one thread when decoding.
const PARALLEL_BYTES: usize = 128 * 1024;
/// Weight rows dequantised at once for `gemm`: 64 rows of 4096 are 1 MiB of scratch.
const PANEL_ROWS: usize = 64;

struct SendPtr(*mut f32);
// Each task writes a disjoint set of columns through the pointer (see `matmul_t_panels`).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// The widest vector instructions this CPU has, found once per product.
#[derive(Clone, Copy)]
enum Simd {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Plain,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Self::Avx2;
            }
        }
        Self::Plain
    }

    fn row_dots(
        self,
        format: BlockFormat,
        row: &[u8],
        x: &[f32],
        buf: &mut [f32],
        out: &mut [f32],
    ) {
        match self {
            // SAFETY: `detect` found these instructions on this CPU.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { row_dots_avx2(format, row, x, buf, out) },
            Self::Plain => row_dots(format, row, x, buf, out),
        }
    }

    /// A Q4_0, Q4_1 or Q8_0 row dotted with the one f32 input row `x` (`n` = 1) in one pass;
    /// `None` where this CPU or case has no such kernel.
    fn dot_f32(self, format: BlockFormat, row: &[u8], x: &[f32], n: usize) -> Option<f32> {
        let legacy = matches!(
            format,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q8_0
        );
        match self {
            // SAFETY: `detect` found these instructions on this CPU.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 if n == 1 && legacy => Some(unsafe { avx2::dot_f32(format, row, x) }),
            _ => None,
        }
    }

    /// A Q4_0, Q4_1 or Q8_0 row dotted with a quantised input row.
    fn dot_q8(self, format: BlockFormat, row: &[u8], x: &Q8Row) -> f32 {
        match self {
            // SAFETY: `detect` found these instructions on this CPU.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { avx2::dot_q8(format, row, x) },
            Self::Plain => dot_q8_plain(format, row, x),
        }
    }
}

/// `dot_q8` in plain integer arithmetic: the same integer sums as the SIMD kernel's.
fn dot_q8_plain(format: BlockFormat, row: &[u8], x: &Q8Row) -> f32 {
    let bb = format.block_bytes();
    let mut total = 0.0f32;
    for (b, block) in row.chunks_exact(bb).enumerate() {
        let xq = &x.q[b * 32..b * 32 + 32];
        let d = half(block[0], block[1]);
        let (dot, offset) = match format {
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let qs = &block[bb - 16..];
                let bias = if format == BlockFormat::Q4_0 { 8 } else { 0 };
                let dot: i32 = (0..16)
                    .map(|j| {
                        (i32::from(qs[j] & 0xF) - bias) * i32::from(xq[j])
                            + (i32::from(qs[j] >> 4) - bias) * i32::from(xq[j + 16])
                    })
                    .sum();
                let offset = if format == BlockFormat::Q4_1 {
                    half(block[2], block[3]) * x.s[b]
                } else {
                    0.0
                };
                (dot, offset)
            }
            _ => {
                let dot: i32 = (0..32)
                    .map(|j| i32::from(block[2 + j] as i8) * i32::from(xq[j]))
                    .sum();
                (dot, 0.0)
            }
        };
        total += d * x.d[b] * dot as f32 + offset;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! llama.cpp's AVX2 `ggml_vec_dot_q4_0_q8_0`, `_q4_1_q8_1` and `_q8_0_q8_0`: 32 weights
    //! and 32 input bytes per step, their products summed in 16- then 32-bit integers.

    use std::arch::x86_64::*;

    use super::{BlockFormat, Q8Row};

    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16(lo: u8, hi: u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
            u16::from_le_bytes([lo, hi]),
        ))))
    }

    /// Signed bytes `a` times signed bytes `b`, summed in pairs, then fours: 8 x i32 as f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_i8(a: __m256i, b: __m256i) -> __m256 {
        // maddubs takes one unsigned operand: |a| times b with a's sign.
        let dot16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)))
    }

    /// Unsigned nibbles `a` (0..16) times signed bytes `b`.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_u4(a: __m256i, b: __m256i) -> __m256 {
        let dot16 = _mm256_maddubs_epi16(a, b);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)))
    }

    /// The 32 nibbles of 16 bytes as 32 bytes: low nibbles first, then high ones.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn nibbles(qs: &[u8]) -> __m256i {
        let packed: &[u8; 16] = qs
            .first_chunk()
            .expect("a legacy block holds 16 bytes of nibbles");
        // SAFETY: 16 bytes are read from a 16-byte array.
        let t = unsafe { _mm_loadu_si128(packed.as_ptr().cast()) };
        let both = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn load32(q: &[i8]) -> __m256i {
        let q: &[i8; 32] = q.first_chunk().expect("an input block holds 32 bytes");
        // SAFETY: 32 bytes are read from a 32-byte array.
        unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 8 signed bytes at `q` as f32.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn widen8(q: &[u8]) -> __m256 {
        let q: &[u8; 8] = q.first_chunk().expect("8 bytes");
        // SAFETY: 8 bytes are read from an 8-byte array.
        let bytes = unsafe { _mm_loadl_epi64(q.as_ptr().cast()) };
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn load8(x: &[f32]) -> __m256 {
        let x: &[f32; 8] = x.first_chunk().expect("8 values");
        // SAFETY: 8 values are read from an 8-value array.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }

    /// A Q4_0, Q4_1 or Q8_0 row dotted with one f32 input row, each block's weights widened
    /// to f32: the dequantised product up to the order of additions.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_f32(format: BlockFormat, row: &[u8], x: &[f32]) -> f32 {
        let bb = format.block_bytes();
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0f32;
        for (b, block) in row.chunks_exact(bb).enumerate() {
            let xs = &x[b * 32..b * 32 + 32];
            let d = _mm256_set1_ps(f16(block[0], block[1]));
            let mut part = _mm256_setzero_ps();
            match format {
                BlockFormat::Q8_0 => {
                    for k in 0..4 {
                        part =
                            _mm256_fmadd_ps(widen8(&block[2 + 8 * k..]), load8(&xs[8 * k..]), part);
                    }
                }
                _ => {
                    let q = nibbles(&block[bb - 16..]);
                    let q = if format == BlockFormat::Q4_0 {
                        _mm256_sub_epi8(q, _mm256_set1_epi8(8))
                    } else {
                        offsets += f16(block[2], block[3]) * xs.iter().sum::<f32>();
                        q
                    };
                    let mut bytes = [0u8; 32];
                    // SAFETY: 32 bytes are written to an array of 32.
                    unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().cast(), q) };
                    for k in 0..4 {
                        part = _mm256_fmadd_ps(widen8(&bytes[8 * k..]), load8(&xs[8 * k..]), part);
                    }
                }
            }
            acc = _mm256_fmadd_ps(d, part, acc);
        }
        hsum(acc) + offsets
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_q8(format: BlockFormat, row: &[u8], x: &Q8Row) -> f32 {
        let bb = format.block_bytes();
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0.0f32;
        for (b, block) in row.chunks_exact(bb).enumerate() {
            let xq = load32(&x.q[b * 32..]);
            let d = _mm256_set1_ps(f16(block[0], block[1]) * x.d[b]);
            let products = match format {
                BlockFormat::Q4_0 => dot_i8(
                    _mm256_sub_epi8(nibbles(&block[2..]), _mm256_set1_epi8(8)),
                    xq,
                ),
                BlockFormat::Q4_1 => {
                    offsets += f16(block[2], block[3]) * x.s[b];
                    dot_u4(nibbles(&block[4..]), xq)
                }
                _ => {
                    let w: &[u8; 32] = block[2..]
                        .first_chunk()
                        .expect("a Q8_0 block holds 32 bytes");
                    // SAFETY: 32 bytes are read from a 32-byte array.
                    let w = unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
                    dot_i8(w, xq)
                }
            };
            acc = _mm256_fmadd_ps(d, products, acc);
        }
        hsum(acc) + offsets
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_dots_avx2(format: BlockFormat, row: &[u8], x: &[f32], buf: &mut [f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = x.len() / out.len();
    format.dequantize_blocks(row, buf);
    for (t, o) in out.iter_mut().enumerate() {
        let xt = &x[t * cols..(t + 1) * cols];
        let mut acc = [_mm256_setzero_ps(); 4];
        for (w, v) in buf.chunks_exact(32).zip(xt.chunks_exact(32)) {
            for (k, acc) in acc.iter_mut().enumerate() {
                // SAFETY: each chunk holds 32 values; 8 are read from offset 8k < 32.
                let (w, v) = unsafe {
                    (
                        _mm256_loadu_ps(w.as_ptr().add(8 * k)),
                        _mm256_loadu_ps(v.as_ptr().add(8 * k)),
                    )
                };
                *acc = _mm256_fmadd_ps(w, v, *acc);
            }
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0.0f32; 8];
        // SAFETY: 8 values are written to an array of 8.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        *o = lanes.iter().sum();
    }
}

const LANES: usize = 16;

#[inline(always)]
fn lanes_sum(acc: &[f32; LANES]) -> f32 {
    let mut s = [0.0f32; 4];
    for (i, v) in acc.iter().enumerate() {
        s[i % 4] += v;
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

/// One weight row dotted with each of the `out.len()` rows of `x` on a CPU without AVX2: the
/// row decoded into `buf` once, then 16 running lanes per input row.
fn row_dots(format: BlockFormat, row: &[u8], x: &[f32], buf: &mut [f32], out: &mut [f32]) {
    let cols = x.len() / out.len();
    format.dequantize_blocks(row, buf);
    for (t, o) in out.iter_mut().enumerate() {
        let xt = &x[t * cols..(t + 1) * cols];
        let mut acc = [0.0f32; LANES];
        for (w, v) in buf.chunks_exact(LANES).zip(xt.chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] += w[l] * v[l];
            }
        }
        *o = lanes_sum(&acc);
    }
}

fn half(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

// Block decoders, as gguf-py's `gguf.quants` and ggml's `dequantize_row_*` compute them: `d * q
// (+ m)` in f32 without fused multiply-adds, so that results match theirs bit for bit. The
// legacy 32-element blocks keep elements 0..16 in the low nibbles and 16..32 in the high ones.

pub(crate) fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * f32::from(i16::from(q & 0xF) - 8);
        y[j + 16] = d * f32::from(i16::from(q >> 4) - 8);
    }
}

pub(crate) fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (half(b[0], b[1]), half(b[2], b[3]));
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = d * f32::from(q & 0xF) + m;
        y[j + 16] = d * f32::from(q >> 4) + m;
    }
}

pub(crate) fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    for j in 0..32 {
        y[j] = f32::from(b[2 + j] as i8) * d;
    }
}

/// ggml's `get_scale_min_k4`: eight 6-bit scales and mins packed in 12 bytes.
pub(crate) fn scale_min_k4(scales: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        if j < 4 {
            sc[j] = scales[j] & 63;
            m[j] = scales[j + 4] & 63;
        } else {
            sc[j] = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
            m[j] = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        }
    }
    (sc, m)
}

// K-quants: within each 64 (Q4_K) or 128 (Q6_K) elements, successive groups of 32 take
// successive bit fields of the same bytes.

pub(crate) fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let (d, dmin) = (half(b[0], b[1]), half(b[2], b[3]));
    let (sc, m) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for c in 0..4 {
        for half_ in 0..2 {
            let s = 2 * c + half_;
            let d1 = d * f32::from(sc[s]);
            let m1 = dmin * f32::from(m[s]);
            let shift = 4 * half_;
            for r in 0..32 {
                let q = (qs[c * 32 + r] >> shift) & 0xF;
                y[c * 64 + half_ * 32 + r] = d1 * f32::from(q) - m1;
            }
        }
    }
}

pub(crate) fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = half(b[208], b[209]);
    for h in 0..2 {
        for g in 0..4 {
            for r in 0..32 {
                let p = h * 128 + g * 32 + r;
                let low = (ql[h * 64 + (g % 2) * 32 + r] >> (4 * (g / 2))) & 0xF;
                let high = (qh[h * 32 + r] >> (2 * g)) & 3;
                let q = i16::from(low | (high << 4)) - 32;
                let scale = d * f32::from(scales[p / 16] as i8);
                y[p] = scale * f32::from(q);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes (a 64-bit LCG), so that every bit pattern of a block shows up.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    /// Blocks with finite, modest f16 scales: random bytes, then each block's f16 fields set.
    fn matrix(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> QMatrix {
        let bb = format.block_bytes();
        let mut data = bytes(rows * cols / format.block_elements() * bb, seed);
        let scale = |i: usize| f16::from_f32(0.01 + (i % 7) as f32 * 0.003).to_le_bytes();
        for (i, block) in data.chunks_exact_mut(bb).enumerate() {
            let at: &[usize] = match format {
                BlockFormat::Q4_0 | BlockFormat::Q8_0 => &[0],
                BlockFormat::Q4_1 | BlockFormat::Q4_K => &[0, 2],
                BlockFormat::Q6_K => &[208],
            };
            for &a in at {
                block[a..a + 2].copy_from_slice(&scale(i + a));
            }
        }
        QMatrix::new(format, rows, cols, Arc::new(data), 0).expect("sizes fit")
    }

    fn reference(w: &[f32], x: &[f32], n: usize, rows: usize, cols: usize) -> Vec<f64> {
        let mut y = vec![0.0f64; n * rows];
        for t in 0..n {
            for r in 0..rows {
                y[t * rows + r] = (0..cols)
                    .map(|c| f64::from(w[r * cols + c]) * f64::from(x[t * cols + c]))
                    .sum();
            }
        }
        y
    }

    fn input(n: usize, cols: usize) -> Vec<f32> {
        (0..n * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    const FORMATS: [BlockFormat; 5] = [
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q8_0,
        BlockFormat::Q4_K,
        BlockFormat::Q6_K,
    ];

    /// How far rounding the input to 8 bits may move `x w`: each value by half a step of
    /// its block's largest magnitude / 127.
    fn rounding_bound(w: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f64> {
        let mut bound = vec![0.0f64; n * rows];
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            for r in 0..rows {
                bound[t * rows + r] = xt
                    .chunks_exact(32)
                    .enumerate()
                    .map(|(b, block)| {
                        let step =
                            f64::from(block.iter().fold(0.0f32, |m, v| m.max(v.abs()))) / 127.0;
                        (0..32)
                            .map(|j| f64::from(w[r * cols + b * 32 + j]).abs() * step / 2.0)
                            .sum::<f64>()
                    })
                    .sum();
            }
        }
        bound
    }

    #[test]
    fn both_kernels_equal_the_dequantised_product() {
        for format in FORMATS {
            let (rows, cols) = (67, 512);
            let q = matrix(format, rows, cols, 3);
            let w = q.dequantize();
            for n in [1, 3, 9, 20] {
                let x = input(n, cols);
                let got = q.matmul_t(&x, n);
                let want = reference(&w, &x, n, rows, cols);
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let rounded = n <= FEW_ROWS && format.block_elements() == 32;
                let bound = rounding_bound(&w, &x, rows, cols, n);
                for ((g, w), b) in got.iter().zip(&want).zip(&bound) {
                    let allowed = 1e-5 * scale + if rounded { *b } else { 0.0 };
                    assert!(
                        (f64::from(*g) - w).abs() <= allowed,
                        "{format:?} n={n}: {g} vs {w} (allowed {allowed})"
                    );
                }
            }
        }
    }

    #[test]
    fn f32_inputs_give_the_dequantised_product_to_rounding() {
        for format in FORMATS {
            let (rows, cols) = (37, 256);
            let q = matrix(format, rows, cols, 13);
            let w = q.dequantize();
            for n in [1, 3] {
                let x = input(n, cols);
                let got = q.matmul_t_with(&x, n, Inputs::F32);
                let want = reference(&w, &x, n, rows, cols);
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (f64::from(*g) - w).abs() <= 1e-5 * scale,
                        "{format:?} n={n}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_simd_and_plain_integer_kernels_agree() {
        let simd = Simd::detect();
        for format in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0] {
            let q = matrix(format, 8, 256, 11);
            let x = Q8Row::new(&input(1, 256));
            for r in 0..8 {
                let (a, b) = (
                    simd.dot_q8(format, q.row(r), &x),
                    dot_q8_plain(format, q.row(r), &x),
                );
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{format:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn the_input_gradient_is_the_transposed_product() {
        for format in FORMATS {
            let (rows, cols, n) = (130, 256, 5);
            let q = matrix(format, rows, cols, 5);
            let w = q.dequantize();
            let g = input(n, rows);
            let got = q.matmul(&g, n);
            for t in 0..n {
                for c in 0..cols {
                    let want: f64 = (0..rows)
                        .map(|r| f64::from(g[t * rows + r]) * f64::from(w[r * cols + c]))
                        .sum();
                    let got = f64::from(got[t * cols + c]);
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{format:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_order_permutes_the_outputs() {
        let q = matrix(BlockFormat::Q4_1, 4, 64, 9);
        let plain = q.matmul_t(&input(1, 64), 1);
        let swapped = q
            .clone()
            .with_row_order(vec![2, 0, 3, 1])
            .expect("a permutation");
        let y = swapped.matmul_t(&input(1, 64), 1);
        assert_eq!(y, vec![plain[2], plain[0], plain[3], plain[1]]);
        assert!(q.with_row_order(vec![0, 1, 2, 4]).is_err());
    }

    #[test]
    fn sizes_that_do_not_fit_are_refused() {
        let data = Arc::new(vec![0u8; 18 * 4]);
        assert!(QMatrix::new(BlockFormat::Q4_0, 2, 64, data.clone(), 0).is_ok());
        assert!(QMatrix::new(BlockFormat::Q4_0, 2, 64, data.clone(), 1).is_err());
        assert!(QMatrix::new(BlockFormat::Q4_0, 2, 48, data.clone(), 0).is_err());
        assert!(QMatrix::new(BlockFormat::Q4_0, 0, 64, data.clone(), 0).is_err());
        assert!(QMatrix::new(BlockFormat::Q4_0, usize::MAX, 64, data, 0).is_err());
    }
}
