//! CPU kernels for the two products that dominate a decode step (profiled with `perf`, see the
//! README's "Speed"): Q4_1 weights × Q8_1-rounded activations (candle 0.11 only has a scalar
//! `vec_dot_unopt` for Q4_1) and the f32 matrix–vector product (candle's gemm runs one token on
//! one thread).
//!
//! Numerics: the Q4_1 kernel rounds activations exactly as candle's `BlockQ8_1::from_float`
//! does (and ggml's `quantize_row_q8_1`); each block's integer dot product is exact, and the
//! blocks are combined in float lanes as ggml's AVX2 kernel does (issue 19; session 7 kept
//! candle's scalar per-block order to be bit-identical, at 42 % of a native decode). So outputs
//! equal candle's up to f32 rounding (~1e-6 relative), and the `native` tier of
//! docs/policy.md was re-measured with them. The f32 kernel sums in another order than gemm
//! (f32 rounding, ~1e-7 relative).
//!
//! Each kernel has an AVX2(+FMA) form chosen at run time and a portable scalar form; rows are
//! split across as many threads as rayon's pool has (`--threads`) by `row_pool`, whose workers
//! spin briefly between products and then park (rayon's paid a wake-up per product).

use half::f16;
use rayon::prelude::*;

/// `VERILLM_CANDLE_KERNELS=1` runs candle's own kernels instead (read once): the "before" of
/// `bench`'s comparison, and a way to rule these kernels out when something looks wrong.
pub fn candle_only() -> bool {
    use std::sync::OnceLock;
    static ONLY: OnceLock<bool> = OnceLock::new();
    *ONLY.get_or_init(|| std::env::var_os("VERILLM_CANDLE_KERNELS").is_some_and(|v| v == "1"))
}

/// Elements per Q4_1 / Q8_1 block.
pub const BLOCK: usize = 32;

/// One Q4_1 block as GGUF and candle store it: value = d·q + m, q in 0..16, low nibbles hold
/// elements 0..16 and high nibbles 16..32.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; BLOCK / 2],
}

/// Bytes of one stored Q4_1 block.
pub const Q4_1_BLOCK_BYTES: usize = std::mem::size_of::<BlockQ4_1>();
const _: () = assert!(Q4_1_BLOCK_BYTES == 20);

/// One activation block rounded to 8 bits: value ≈ d·q; `s` = d·Σq (for the Q4_1 offset term).
/// `repr(C)`: the AVX2 kernel reads (d, s) as one 32-bit pair.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; BLOCK],
}

/// Rows of a Q4_1 weight matrix [rows, cols], ready for the kernels below.
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<BlockQ4_1>,
}

impl Q4_1Matrix {
    /// From the raw bytes of a Q4_1 tensor (GGUF layout, row-major).
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cols.is_multiple_of(BLOCK),
            "Q4_1 matrix: {cols} columns are not a multiple of {BLOCK}"
        );
        let n_blocks = rows * cols / BLOCK;
        anyhow::ensure!(
            bytes.len() == n_blocks * Q4_1_BLOCK_BYTES,
            "Q4_1 matrix [{rows}, {cols}]: {} bytes, expected {}",
            bytes.len(),
            n_blocks * Q4_1_BLOCK_BYTES
        );
        let blocks = bytes
            .chunks_exact(Q4_1_BLOCK_BYTES)
            .map(|b| BlockQ4_1 {
                d: f16::from_le_bytes([b[0], b[1]]),
                m: f16::from_le_bytes([b[2], b[3]]),
                qs: b[4..20].try_into().expect("16 bytes"),
            })
            .collect();
        Ok(Q4_1Matrix { rows, cols, blocks })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * Q4_1_BLOCK_BYTES
    }

    fn row(&self, r: usize) -> &[BlockQ4_1] {
        let per_row = self.cols / BLOCK;
        &self.blocks[r * per_row..(r + 1) * per_row]
    }

    /// `x` is [m, cols] row-major; returns [m, rows]: x · Wᵀ with x rounded to Q8_1 blocks.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "Q4_1 matmul: input size");
        let per_row = self.cols / BLOCK;
        let mut xq = vec![BlockQ8_1::ZERO; m * per_row];
        for (xs, q) in x.chunks_exact(self.cols).zip(xq.chunks_exact_mut(per_row)) {
            quantize_row_q8_1(xs, q);
        }
        let mut out = vec![0f32; m * self.rows];
        let dot = dot_q4_1_q8_1_fn();
        if m == 1 {
            let dot4 = dot4_q4_1_q8_1_fn();
            par_row_chunks(&mut out, |first, ys| {
                let mut quads = ys.chunks_exact_mut(4);
                let mut r = first;
                for y in &mut quads {
                    let rows = [
                        self.row(r),
                        self.row(r + 1),
                        self.row(r + 2),
                        self.row(r + 3),
                    ];
                    y.copy_from_slice(&dot4(rows, &xq));
                    r += 4;
                }
                for y in quads.into_remainder() {
                    *y = dot(self.row(r), &xq);
                    r += 1;
                }
            });
        } else {
            // Weight rows outer (four at a time) so each is read from memory once for all
            // tokens; the output is [m, rows], so compute it transposed and swap.
            let dot4 = dot4_q4_1_q8_1_fn();
            let mut t = vec![0f32; self.rows * m];
            t.par_chunks_mut(4 * m)
                .with_min_len(4)
                .enumerate()
                .for_each(|(g, cols)| {
                    let r0 = 4 * g;
                    let token = |i: usize| &xq[i * per_row..(i + 1) * per_row];
                    if cols.len() == 4 * m {
                        let rows = [
                            self.row(r0),
                            self.row(r0 + 1),
                            self.row(r0 + 2),
                            self.row(r0 + 3),
                        ];
                        for i in 0..m {
                            let ys = dot4(rows, token(i));
                            for (k, y) in ys.into_iter().enumerate() {
                                cols[k * m + i] = y;
                            }
                        }
                    } else {
                        for (k, col) in cols.chunks_exact_mut(m).enumerate() {
                            for (i, y) in col.iter_mut().enumerate() {
                                *y = dot(self.row(r0 + k), token(i));
                            }
                        }
                    }
                });
            for r in 0..self.rows {
                for i in 0..m {
                    out[i * self.rows + r] = t[r * m + i];
                }
            }
        }
        out
    }
}

impl BlockQ8_1 {
    const ZERO: BlockQ8_1 = BlockQ8_1 {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; BLOCK],
    };
}

/// Rows per task: a task must cost more than handing it over (and a multiple of 4 keeps the
/// four-row kernels on whole groups).
const ROWS_PER_TASK: usize = 64;

/// Calls `f(first_row, out[first_row..])` on chunks of `out`, split across the row pool
/// (`VERILLM_ROW_POOL=0`: across rayon's).
pub(super) fn par_row_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || out.len() <= ROWS_PER_TASK {
        f(0, out);
        return;
    }
    if let Some(pool) = super::row_pool::shared_pool(threads) {
        pool.run(out, ROWS_PER_TASK, &f);
        return;
    }
    out.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(c, ys)| f(c * ROWS_PER_TASK, ys));
}

/// Fills `out[r] = f(r)` with the rows split across the pool.
fn par_rows(out: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    par_row_chunks(out, |first, ys| {
        for (i, y) in ys.iter_mut().enumerate() {
            *y = f(first + i);
        }
    });
}

/// candle's `quantize_row_q8_1`, operation for operation (so results match it bit for bit).
pub fn quantize_row_q8_1(xs: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(xs.len(), out.len() * BLOCK, "Q8_1 quantize: size");
    for (x, q) in xs.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        q.d = f16::from_f32(d);
        let mut sum = 0i32;
        for j in 0..BLOCK / 2 {
            q.qs[j] = f32::round(x[j] * id) as i8;
            q.qs[j + BLOCK / 2] = f32::round(x[j + BLOCK / 2] * id) as i8;
            sum += q.qs[j] as i32 + q.qs[j + BLOCK / 2] as i32;
        }
        q.s = f16::from_f32(f16::from_f32(sum as f32).to_f32() * q.d.to_f32());
    }
}

type DotQ4_1 = fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32;

/// The fastest Q4_1·Q8_1 dot product this CPU runs.
pub fn dot_q4_1_q8_1_fn() -> DotQ4_1 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        return |w, x| unsafe { dot4_q4_1_q8_1_avx2([w, w, w, w], x)[0] };
    }
    dot_q4_1_q8_1_scalar
}

/// The straightforward form (ggml's `ggml_vec_dot_q4_1_q8_1` reference).
pub fn dot_q4_1_q8_1_scalar(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    assert_eq!(w.len(), x.len(), "Q4_1·Q8_1: block counts");
    let mut sumf = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for j in 0..BLOCK / 2 {
            let v0 = (w.qs[j] & 0x0F) as i32;
            let v1 = (w.qs[j] >> 4) as i32;
            sumi += v0 * x.qs[j] as i32 + v1 * x.qs[j + BLOCK / 2] as i32;
        }
        sumf += sumi as f32 * w.d.to_f32() * x.d.to_f32() + w.m.to_f32() * x.s.to_f32();
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// AVX2 and FMA, plus F16C for the kernels that convert block scales four at a time.
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx2_fma_f16c() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("f16c"))
}

/// The sum of a vector's eight lanes.
///
/// # Safety
/// The CPU must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum_ps(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 0b01));
    _mm_cvtss_f32(h)
}

type Dot4Q4_1 = fn([&[BlockQ4_1]; 4], &[BlockQ8_1]) -> [f32; 4];

/// Four weight rows against one activation row.
pub fn dot4_q4_1_q8_1_fn() -> Dot4Q4_1 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        return |w, x| unsafe { dot4_q4_1_q8_1_avx2(w, x) };
    }
    |w, x| w.map(|w| dot_q4_1_q8_1_scalar(w, x))
}

/// Four rows share each activation load. As ggml's AVX2 form: each block's exact integer
/// products are scaled by d_w·d_x in eight float lanes (no horizontal sum per block, which
/// the session-7 kernel spent 42 % of a native decode on), the offsets m_w·s_x of the four
/// rows in one more vector; the f16 scales of four rows convert in one F16C instruction.
/// The lanes sum in another order than the scalar form: f32 rounding apart, the same value.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q4_1_q8_1_avx2(w: [&[BlockQ4_1]; 4], x: &[BlockQ8_1]) -> [f32; 4] {
    use std::arch::x86_64::*;
    for row in &w {
        assert_eq!(row.len(), x.len(), "Q4_1·Q8_1: block counts");
    }
    let low_mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    // Odd lanes: Σ m_w·s_x of rows 0..4 (even lanes collect d_w·d_x, unused).
    let mut offsets = _mm256_setzero_ps();
    // The f16 pair at the start of a block ((d, m) or (d, s), both `repr(C)`) as 32 bits.
    let pair = |p: *const u8| (p as *const i32).read_unaligned();
    let lane = [0, 2, 4, 6].map(|i| _mm256_set1_epi32(i));
    for (b, xb) in x.iter().enumerate() {
        let q8 = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
        let wb = w.map(|row| row.get_unchecked(b));
        // [x.d, x.s] × 4 and [d₀, m₀, d₁, m₁, d₂, m₂, d₃, m₃]: one F16C conversion each.
        let xds = _mm256_cvtph_ps(_mm_set1_epi32(pair(xb as *const BlockQ8_1 as *const u8)));
        let wdm = _mm256_cvtph_ps(_mm_set_epi32(
            pair(wb[3] as *const BlockQ4_1 as *const u8),
            pair(wb[2] as *const BlockQ4_1 as *const u8),
            pair(wb[1] as *const BlockQ4_1 as *const u8),
            pair(wb[0] as *const BlockQ4_1 as *const u8),
        ));
        let scaled = _mm256_mul_ps(wdm, xds);
        offsets = _mm256_add_ps(offsets, scaled);
        for r in 0..4 {
            // 16 bytes → 32 nibbles: low nibbles in lanes 0..16, high nibbles in 16..32.
            let packed = _mm_loadu_si128(wb[r].qs.as_ptr() as *const __m128i);
            let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
            let nibbles = _mm256_and_si256(both, low_mask);
            // u8 × i8 pairs summed to i16 (|15·127·2| fits), then pairs to i32: exact.
            let quads = _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles, q8), ones);
            let scale = _mm256_permutevar8x32_ps(scaled, lane[r]);
            acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(quads), acc[r]);
        }
    }
    let mut off = [0f32; 8];
    _mm256_storeu_ps(off.as_mut_ptr(), offsets);
    [0, 1, 2, 3].map(|r| hsum_ps(acc[r]) + off[2 * r + 1])
}

type DotF32 = fn(&[f32], &[f32]) -> f32;

/// Σ aᵢbᵢ with the fastest kernel this CPU runs.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_fn()(a, b)
}

fn dot_f32_fn() -> DotF32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        return |a, b| unsafe { dot_f32_avx2(a, b) };
    }
    dot_f32_scalar
}

/// Four partial sums (a tree the compiler may vectorise), then the tail.
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "f32 dot: lengths");
    let mut acc = [0f32; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert_eq!(a.len(), b.len(), "f32 dot: lengths");
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let off = i + 8 * k;
            *acc = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(off)),
                _mm256_loadu_ps(pb.add(off)),
                *acc,
            );
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 0b01));
    let mut sum = _mm_cvtss_f32(h);
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

/// y = W·x for a row-major f32 W [rows, cols] (one token through a float linear layer).
pub fn matvec_f32(w: &[f32], rows: usize, x: &[f32]) -> Vec<f32> {
    let cols = x.len();
    assert_eq!(w.len(), rows * cols, "f32 matvec: weight size");
    let dot = dot_f32_fn();
    let mut out = vec![0f32; rows];
    par_rows(&mut out, |r| dot(&w[r * cols..(r + 1) * cols], x));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_f32(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    fn random_q4_1(rng: &mut impl Rng, n_blocks: usize) -> Vec<BlockQ4_1> {
        (0..n_blocks)
            .map(|_| BlockQ4_1 {
                d: f16::from_f32(rng.random_range(0.001f32..0.1)),
                m: f16::from_f32(rng.random_range(-0.5f32..0.5)),
                qs: std::array::from_fn(|_| rng.random()),
            })
            .collect()
    }

    /// The straightforward product, element by element in f64: Σ d_w·q_w · d_x·q_x, plus the
    /// offset m_w times the block's stored sum s_x (Q8_1 keeps it in f16, as ggml does).
    fn reference(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f64 {
        let mut s = 0f64;
        for (w, x) in w.iter().zip(x) {
            for j in 0..BLOCK {
                let q = if j < 16 {
                    w.qs[j] & 0xF
                } else {
                    w.qs[j - 16] >> 4
                } as f64;
                s += w.d.to_f64() * q * x.d.to_f64() * x.qs[j] as f64;
            }
            s += w.m.to_f64() * x.s.to_f64();
        }
        s
    }

    /// Σ over blocks of |each product term|: the scale of the sum's rounding error.
    fn magnitude(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f64 {
        let mut s = 0f64;
        for (w, x) in w.iter().zip(x) {
            for j in 0..BLOCK {
                let q = if j < 16 {
                    w.qs[j] & 0xF
                } else {
                    w.qs[j - 16] >> 4
                } as f64;
                s += (w.d.to_f64() * q * x.d.to_f64() * x.qs[j] as f64).abs();
            }
            s += (w.m.to_f64() * x.s.to_f64()).abs();
        }
        s
    }

    #[test]
    fn q8_1_rounding_matches_candle() {
        use candle_core::quantized::k_quants::{BlockQ8_1 as CandleQ8_1, GgmlType};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n_blocks in [1, 3, 18, 48] {
            let mut x = random_f32(&mut rng, n_blocks * BLOCK);
            x[0] = 0.0;
            if n_blocks > 1 {
                x[BLOCK..2 * BLOCK].fill(0.0); // an all-zero block (d = 0)
            }
            let mut ours = vec![BlockQ8_1::ZERO; n_blocks];
            quantize_row_q8_1(&x, &mut ours);
            let mut theirs = vec![CandleQ8_1::zeros(); n_blocks];
            CandleQ8_1::from_float(&x, &mut theirs);
            // Same bytes: candle's block is (d, s, qs) too.
            for (o, t) in ours.iter().zip(&theirs) {
                let t: [u8; 36] = unsafe { std::mem::transmute_copy(t) };
                assert_eq!(o.d.to_le_bytes(), [t[0], t[1]]);
                assert_eq!(o.s.to_le_bytes(), [t[2], t[3]]);
                assert_eq!(o.qs.map(|q| q as u8)[..], t[4..]);
            }
        }
    }

    #[test]
    fn q4_1_dot_kernels_agree_with_the_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for n_blocks in [1, 2, 3, 7, 18, 48, 49] {
            let w = random_q4_1(&mut rng, n_blocks);
            let mut xq = vec![BlockQ8_1::ZERO; n_blocks];
            quantize_row_q8_1(&random_f32(&mut rng, n_blocks * BLOCK), &mut xq);
            let want = reference(&w, &xq);
            let scalar = dot_q4_1_q8_1_scalar(&w, &xq);
            assert!(
                (scalar as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{n_blocks} blocks: {scalar} vs {want}"
            );
            // The chosen kernels (AVX2 where the CPU has it) sum in float lanes: the same
            // value up to f32 rounding, a few ulps of the row's magnitude.
            // Worst-case f32 rounding of a sum of n_blocks terms: n · ε · Σ|term|.
            let tol = |row: &[BlockQ4_1]| {
                (n_blocks as f64 + 2.0) * f32::EPSILON as f64 * magnitude(row, &xq) + 1e-6
            };
            let one = dot_q4_1_q8_1_fn()(&w, &xq) as f64;
            assert!((one - want).abs() <= tol(&w), "{n_blocks}: {one} vs {want}");
            let others: Vec<Vec<BlockQ4_1>> =
                (0..3).map(|_| random_q4_1(&mut rng, n_blocks)).collect();
            let rows = [&w[..], &others[0], &others[1], &others[2]];
            let got4 = dot4_q4_1_q8_1_fn()(rows, &xq);
            for (r, row) in rows.iter().enumerate() {
                let want = reference(row, &xq);
                assert!(
                    (got4[r] as f64 - want).abs() <= tol(row),
                    "{n_blocks} blocks, row {r} of 4: {} vs {want}",
                    got4[r]
                );
            }
        }
    }

    #[test]
    fn q4_1_matmul_agrees_with_candle() {
        use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
        use candle_core::{Device, Module, Tensor};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // Odd row counts (not a multiple of 4 or of a task's 64 rows), 1 and 5 tokens.
        for (rows, cols, m) in [
            (67, 64, 1),
            (130, 96, 1),
            (3, 32, 1),
            (67, 64, 5),
            (3, 32, 2),
        ] {
            let w = Tensor::from_vec(
                random_f32(&mut rng, rows * cols),
                (rows, cols),
                &Device::Cpu,
            )
            .unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
            let ours = Q4_1Matrix::from_bytes(rows, cols, &q.data().unwrap()).unwrap();
            let x = random_f32(&mut rng, m * cols);
            let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let theirs: Vec<f32> = QMatMul::QTensor(std::sync::Arc::new(q))
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // The same rounded activations (q8_1_rounding_matches_candle), summed in another
            // order: equal up to f32 rounding.
            for (i, (a, b)) in ours.matmul(&x, m).iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (cols as f32) * b.abs().max(1.0),
                    "[{rows}, {cols}] × {m} tokens, element {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn q4_1_matrix_refuses_wrong_sizes() {
        let e = Q4_1Matrix::from_bytes(2, 48, &[0; 60]).unwrap_err();
        assert!(e.to_string().contains("48 columns"), "{e}");
        let e = Q4_1Matrix::from_bytes(2, 64, &[0; 79]).unwrap_err();
        assert!(e.to_string().contains("79 bytes"), "{e}");
    }

    #[test]
    fn f32_matvec_agrees_with_the_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (rows, cols) in [(1, 1), (3, 7), (65, 33), (129, 576), (70, 1000)] {
            let w = random_f32(&mut rng, rows * cols);
            let x = random_f32(&mut rng, cols);
            let got = matvec_f32(&w, rows, &x);
            for (r, g) in got.iter().enumerate() {
                let want: f64 = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[c] as f64)
                    .sum();
                assert!(
                    (*g as f64 - want).abs() <= 1e-5 * (cols as f64).sqrt() * 4.0,
                    "[{rows}, {cols}] row {r}: {g} vs {want}"
                );
            }
            let scalar: Vec<f32> = (0..rows)
                .map(|r| dot_f32_scalar(&w[r * cols..(r + 1) * cols], &x))
                .collect();
            for (a, b) in got.iter().zip(&scalar) {
                assert!((a - b).abs() <= 1e-4, "[{rows}, {cols}]: {a} vs {b}");
            }
        }
    }
}
