//! CPU kernels for the two products that dominate a decode step (profiled with `perf`, see the
//! README's "Speed"): Q4_1 weights × Q8_1-rounded activations (candle 0.11 only has a scalar
//! `vec_dot_unopt` for Q4_1) and the f32 matrix–vector product (candle's gemm runs one token on
//! one thread).
//!
//! Numerics: the Q4_1 product rounds activations exactly as candle's `BlockQ8_1::from_float`
//! does (and ggml's `quantize_row_q8_1`); each block's integer dot product is exact, and each
//! row sums its blocks' scaled terms in order (`kernels_x8`, eight rows at a time). So outputs
//! equal candle's up to f32 rounding (~1e-6 relative), and the `native` tier of docs/policy.md
//! was re-measured with them. The f32 kernel sums in another order than gemm (f32 rounding,
//! ~1e-7 relative).
//!
//! Each kernel has vector forms chosen at run time and a portable scalar form; rows are split
//! across as many threads as rayon's pool has (`--threads`) by `row_pool`, whose workers
//! spin briefly between products and then park (rayon's paid a wake-up per product).

use half::f16;

use super::kernels_x8::{self, Q4_1x8};
pub use super::kernels_x8::{BlockQ8_1, BLOCK};
use super::row_pool::par_chunks;

/// `VERILLM_CANDLE_KERNELS=1` runs candle's own kernels instead (read once): the "before" of
/// `bench`'s comparison, and a way to rule these kernels out when something looks wrong.
pub fn candle_only() -> bool {
    use std::sync::OnceLock;
    static ONLY: OnceLock<bool> = OnceLock::new();
    *ONLY.get_or_init(|| std::env::var_os("VERILLM_CANDLE_KERNELS").is_some_and(|v| v == "1"))
}

/// Bytes of one stored Q4_1 block (GGUF and candle): f16 d, f16 m, then 16 bytes whose low
/// nibbles are elements 0..16 and high nibbles 16..32; value = d·q + m.
pub const Q4_1_BLOCK_BYTES: usize = 20;

/// A Q4_1 weight matrix [rows, cols], its rows interleaved eight at a time for the kernels
/// (`kernels_x8`).
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    rows: usize,
    cols: usize,
    groups: Vec<Q4_1x8>,
}

impl Q4_1Matrix {
    /// From the raw bytes of a Q4_1 tensor (GGUF layout, row-major).
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cols.is_multiple_of(BLOCK),
            "Q4_1 matrix: {cols} columns are not a multiple of {BLOCK}"
        );
        let per_row = cols / BLOCK;
        let n_blocks = rows * per_row;
        anyhow::ensure!(
            bytes.len() == n_blocks * Q4_1_BLOCK_BYTES,
            "Q4_1 matrix [{rows}, {cols}]: {} bytes, expected {}",
            bytes.len(),
            n_blocks * Q4_1_BLOCK_BYTES
        );
        let groups = kernels_x8::interleave_q4_1(rows, per_row, |r, b| {
            let at = (r * per_row + b) * Q4_1_BLOCK_BYTES;
            let block = &bytes[at..at + Q4_1_BLOCK_BYTES];
            (
                f16::from_le_bytes([block[0], block[1]]),
                f16::from_le_bytes([block[2], block[3]]),
                block[4..20].try_into().expect("16 bytes"),
            )
        });
        Ok(Q4_1Matrix { rows, cols, groups })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The weight bytes a product reads (the GGUF tensor's size).
    pub fn bytes(&self) -> usize {
        self.rows * self.cols / BLOCK * Q4_1_BLOCK_BYTES
    }

    /// `x` is [m, cols] row-major; returns [m, rows]: x · Wᵀ with x rounded to Q8_1 blocks.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "Q4_1 matmul: input size");
        let per_row = self.cols / BLOCK;
        let mut xq = vec![BlockQ8_1::ZERO; m * per_row];
        for (xs, q) in x.chunks_exact(self.cols).zip(xq.chunks_exact_mut(per_row)) {
            quantize_row_q8_1(xs, q);
        }
        let dot8 = kernels_x8::dot8_q4_1_fn(kernels_x8::Isa::best());
        kernels_x8::matmul(&self.groups, self.rows, per_row, &xq, m, dot8)
    }
}

/// Rows per task of the f32 product: a task must cost more than handing it over.
const ROWS_PER_TASK: usize = 64;

/// Fills `out[r] = f(r)` with the rows split across the pool (see `par_chunks`).
fn par_rows(out: &mut [f32], weight_bytes: usize, f: impl Fn(usize) -> f32 + Sync) {
    par_chunks(out, ROWS_PER_TASK, weight_bytes, |first, ys| {
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

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
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
        // The weight rows are one stream; fetch 4 KiB ahead, across the 4 KiB page boundaries
        // the hardware prefetcher stops at (+5 % on a 540 MB stream on this VM). A prefetch
        // past the end is harmless, so the pointer only wraps instead of staying in bounds.
        _mm_prefetch(pa.wrapping_add(i + 1024) as *const i8, _MM_HINT_T0);
        _mm_prefetch(pa.wrapping_add(i + 1040) as *const i8, _MM_HINT_T0);
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
    par_rows(&mut out, std::mem::size_of_val(w), |r| {
        dot(&w[r * cols..(r + 1) * cols], x)
    });
    out
}

/// One query head's attention over the `n` cached positions of its key/value head (`keys` and
/// `values` are [n, d] row-major, `scores` has n slots): s_j = (q·k_j)·scale, p = softmax(s),
/// `y` += Σ_j p_j·v_j. The decode step's attention: at 1 024 positions it was ≈ 30 % of a
/// native step in baseline-x86 loops and a function call per 64-wide dot product (`perf`).
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    scores: &mut [f32],
    y: &mut [f32],
) {
    let d = q.len();
    assert!(d > 0 && y.len() == d, "attention: head sizes");
    assert!(
        keys.len() == scores.len() * d && values.len() == keys.len(),
        "attention: cache sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked); the sizes are asserted above.
        return unsafe { attend_avx2(q, keys, values, scale, scores, y) };
    }
    attend_scalar(q, keys, values, scale, scores, y)
}

/// The straightforward form.
pub fn attend_scalar(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    scores: &mut [f32],
    y: &mut [f32],
) {
    let d = q.len();
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(d)) {
        *s = dot_f32_scalar(q, k) * scale;
    }
    softmax_in_place(scores);
    for (p, v) in scores.iter().zip(values.chunks_exact(d)) {
        for (o, v) in y.iter_mut().zip(v) {
            *o += p * v;
        }
    }
}

/// exp(s − max) / Σ, as candle's `softmax_last_dim` (the exponential is the platform's, in
/// every form, so only the sums' order differs).
pub fn softmax_in_place(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// `attend` with the dot products and the weighted sum in vector registers: each score is one
/// pass of d/8 FMAs, and y is accumulated 32 columns at a time in four registers while the
/// positions stream past.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the slices must have the sizes `attend` asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    scores: &mut [f32],
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    let d = q.len();
    for (s, k) in scores.iter_mut().zip(keys.chunks_exact(d)) {
        *s = dot_f32_avx2(q, k) * scale;
    }
    softmax_in_place(scores);
    let mut c = 0;
    while c + 32 <= d {
        let yp = y.as_mut_ptr().add(c);
        let mut acc = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(yp.add(o)));
        for (p, v) in scores.iter().zip(values.chunks_exact(d)) {
            let (p, vp) = (_mm256_set1_ps(*p), v.as_ptr().add(c));
            for (o, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(p, _mm256_loadu_ps(vp.add(8 * o)), *acc);
            }
        }
        for (o, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(yp.add(8 * o), *acc);
        }
        c += 32;
    }
    if c < d {
        for (p, v) in scores.iter().zip(values.chunks_exact(d)) {
            for (o, v) in y[c..].iter_mut().zip(&v[c..]) {
                *o = p.mul_add(*v, *o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_f32(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
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
    fn q4_1_matmul_agrees_with_candle() {
        use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
        use candle_core::{Device, Module, Tensor};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // Odd row counts (not a multiple of a group's 8 or of a task's 64 rows), 1 to 40
        // tokens (past one pass of 32).
        for (rows, cols, m) in [
            (67, 64, 1),
            (130, 96, 1),
            (3, 32, 1),
            (67, 64, 5),
            (3, 32, 2),
            (200, 576, 40),
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

    #[test]
    fn attention_kernel_agrees_with_the_straightforward_form() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        // Head sizes with and without a 32-column tail; 1 to 300 positions.
        for (d, n) in [(64, 1), (64, 37), (64, 300), (80, 5), (7, 3), (128, 64)] {
            let q = random_f32(&mut rng, d);
            let keys = random_f32(&mut rng, n * d);
            let values = random_f32(&mut rng, n * d);
            let start = random_f32(&mut rng, d);
            let (mut s1, mut s2) = (vec![0f32; n], vec![0f32; n]);
            let (mut y1, mut y2) = (start.clone(), start.clone());
            attend(&q, &keys, &values, 0.125, &mut s1, &mut y1);
            attend_scalar(&q, &keys, &values, 0.125, &mut s2, &mut y2);
            let total: f32 = s1.iter().sum();
            assert!(
                (total - 1.0).abs() < 1e-5,
                "d {d}, n {n}: probabilities sum to {total}"
            );
            for (a, b) in s1.iter().zip(&s2) {
                assert!((a - b).abs() <= 1e-6, "d {d}, n {n}: p {a} vs {b}");
            }
            for (c, (a, b)) in y1.iter().zip(&y2).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5,
                    "d {d}, n {n}, column {c}: {a} vs {b}"
                );
            }
            // y = start + Σ p·v: one column checked in f64.
            let want: f64 = start[0] as f64
                + s2.iter()
                    .enumerate()
                    .map(|(j, p)| *p as f64 * values[j * d] as f64)
                    .sum::<f64>();
            assert!(
                (y1[0] as f64 - want).abs() < 1e-5,
                "d {d}, n {n}: {} vs {want}",
                y1[0]
            );
        }
    }
}
