//! Q8_0 weights × Q8_0-rounded activations on the CPU: the product llama.cpp runs for the
//! embedded GGUF's lm_head (its `token_embd.weight` is stored Q8_0 and tied to the output).
//! At `native` precision the lm_head reads those 8-bit rows (≈ 30 MB per token) instead of the
//! dequantized f32 table (113 MB), which the session-7 profile put at 24 % of a native decode.
//!
//! Numerics follow ggml's `ggml_vec_dot_q8_0_q8_0`: activations are rounded to 8-bit blocks
//! (d = max|x| / 127, q = round(x / d)); each block's integer dot product is exact and scaled by
//! d_w·d_x into float accumulators. The AVX2 form sums those in eight lanes, so its result
//! differs from the scalar form by f32 rounding only (tested against an f64 reference).

use half::f16;
use rayon::prelude::*;

use super::kernels::par_row_chunks;

/// Elements per Q8_0 block.
pub const BLOCK: usize = 32;

/// One Q8_0 block as GGUF and candle store it: value = d·q.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; BLOCK],
}

/// Bytes of one stored Q8_0 block.
pub const Q8_0_BLOCK_BYTES: usize = 2 + BLOCK;
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == Q8_0_BLOCK_BYTES);

impl BlockQ8_0 {
    const ZERO: BlockQ8_0 = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; BLOCK],
    };
}

/// Rows of a Q8_0 weight matrix [rows, cols].
#[derive(Debug, Clone)]
pub struct Q8_0Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<BlockQ8_0>,
}

impl Q8_0Matrix {
    /// From the raw bytes of a Q8_0 tensor (GGUF layout, row-major).
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cols.is_multiple_of(BLOCK),
            "Q8_0 matrix: {cols} columns are not a multiple of {BLOCK}"
        );
        let n_blocks = rows * cols / BLOCK;
        anyhow::ensure!(
            bytes.len() == n_blocks * Q8_0_BLOCK_BYTES,
            "Q8_0 matrix [{rows}, {cols}]: {} bytes, expected {}",
            bytes.len(),
            n_blocks * Q8_0_BLOCK_BYTES
        );
        let blocks = bytes
            .chunks_exact(Q8_0_BLOCK_BYTES)
            .map(|b| BlockQ8_0 {
                d: f16::from_le_bytes([b[0], b[1]]),
                qs: std::array::from_fn(|i| b[2 + i] as i8),
            })
            .collect();
        Ok(Q8_0Matrix { rows, cols, blocks })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> usize {
        self.blocks.len() * Q8_0_BLOCK_BYTES
    }

    fn row(&self, r: usize) -> &[BlockQ8_0] {
        let per_row = self.cols / BLOCK;
        &self.blocks[r * per_row..(r + 1) * per_row]
    }

    /// `x` is [m, cols] row-major; returns [m, rows]: x · Wᵀ with x rounded to Q8_0 blocks.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "Q8_0 matmul: input size");
        if m > 1 {
            return self.matmul_tokens_parallel(x, m);
        }
        let per_row = self.cols / BLOCK;
        let mut xq = vec![BlockQ8_0::ZERO; m * per_row];
        for (xs, q) in x.chunks_exact(self.cols).zip(xq.chunks_exact_mut(per_row)) {
            quantize_row_q8_0(xs, q);
        }
        let dot4 = dot4_q8_0_fn();
        let dot = |w: &[BlockQ8_0], x: &[BlockQ8_0]| {
            let r = [w, w, w, w];
            dot4(r, x)[0]
        };
        let mut out = vec![0f32; m * self.rows];
        for (i, ys) in out.chunks_exact_mut(self.rows).enumerate() {
            let xi = &xq[i * per_row..(i + 1) * per_row];
            par_row_chunks(ys, |first, ys| {
                let mut quads = ys.chunks_exact_mut(4);
                let mut r = first;
                for y in &mut quads {
                    let rows = [
                        self.row(r),
                        self.row(r + 1),
                        self.row(r + 2),
                        self.row(r + 3),
                    ];
                    y.copy_from_slice(&dot4(rows, xi));
                    r += 4;
                }
                for y in quads.into_remainder() {
                    *y = dot(self.row(r), xi);
                    r += 1;
                }
            });
        }
        out
    }

    /// Several tokens (a prefill's logits rows, the verifier's token checks): one token per
    /// task, each reading the whole matrix.
    fn matmul_tokens_parallel(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * self.rows];
        out.par_chunks_mut(self.rows)
            .zip(x.par_chunks(self.cols))
            .for_each(|(ys, xs)| {
                let per_row = self.cols / BLOCK;
                let mut xq = vec![BlockQ8_0::ZERO; per_row];
                quantize_row_q8_0(xs, &mut xq);
                let dot4 = dot4_q8_0_fn();
                let mut quads = ys.chunks_exact_mut(4);
                let mut r = 0;
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
                    let w = self.row(r);
                    *y = dot4([w, w, w, w], &xq)[0];
                    r += 1;
                }
            });
        out
    }
}

/// ggml's `quantize_row_q8_0_ref`: d = max|x| / 127, q = round(x / d).
pub fn quantize_row_q8_0(xs: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(xs.len(), out.len() * BLOCK, "Q8_0 quantize: size");
    for (x, q) in xs.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        q.d = f16::from_f32(d);
        for (q, v) in q.qs.iter_mut().zip(x) {
            *q = f32::round(v * id) as i8;
        }
    }
}

type Dot4Q8_0 = fn([&[BlockQ8_0]; 4], &[BlockQ8_0]) -> [f32; 4];

/// Four weight rows against one activation row, with the fastest kernel this CPU runs.
pub fn dot4_q8_0_fn() -> Dot4Q8_0 {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2_fma_f16c() {
        return |w, x| unsafe { dot4_q8_0_avx2(w, x) };
    }
    |w, x| w.map(|w| dot_q8_0_scalar(w, x))
}

/// The straightforward form: per block an exact integer sum, scaled by d_w·d_x.
pub fn dot_q8_0_scalar(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len(), "Q8_0·Q8_0: block counts");
    let mut sumf = 0f32;
    for (w, x) in w.iter().zip(x) {
        let sumi: i32 =
            w.qs.iter()
                .zip(&x.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sumf += sumi as f32 * (w.d.to_f32() * x.d.to_f32());
    }
    sumf
}

/// Four rows share each activation load; each row's blocks accumulate into eight float lanes
/// (ggml's AVX2 form), the f16 scales converted four at a time with F16C.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q8_0_avx2(w: [&[BlockQ8_0]; 4], x: &[BlockQ8_0]) -> [f32; 4] {
    use std::arch::x86_64::*;
    for row in &w {
        assert_eq!(row.len(), x.len(), "Q8_0·Q8_0: block counts");
    }
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    for (b, xb) in x.iter().enumerate() {
        let q8 = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
        let wb = [
            w[0].get_unchecked(b),
            w[1].get_unchecked(b),
            w[2].get_unchecked(b),
            w[3].get_unchecked(b),
        ];
        let wd = _mm_cvtph_ps(_mm_set_epi16(
            0,
            0,
            0,
            0,
            wb[3].d.to_bits() as i16,
            wb[2].d.to_bits() as i16,
            wb[1].d.to_bits() as i16,
            wb[0].d.to_bits() as i16,
        ));
        let scales = _mm_mul_ps(wd, _mm_set1_ps(xb.d.to_f32()));
        let mut s = [0f32; 4];
        _mm_storeu_ps(s.as_mut_ptr(), scales);
        for r in 0..4 {
            let qw = _mm256_loadu_si256(wb[r].qs.as_ptr() as *const __m256i);
            // Signed × signed through maddubs (unsigned × signed): |w| times x with w's sign.
            let abs_w = _mm256_sign_epi8(qw, qw);
            let signed_x = _mm256_sign_epi8(q8, qw);
            let pairs = _mm256_maddubs_epi16(abs_w, signed_x);
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(s[r]), sums, acc[r]);
        }
    }
    acc.map(|a| super::kernels::hsum_ps(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_f32(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    /// The product of the rounded values, element by element in f64.
    fn reference(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f64 {
        w.iter()
            .zip(x)
            .flat_map(|(w, x)| {
                (0..BLOCK)
                    .map(move |j| w.d.to_f64() * w.qs[j] as f64 * x.d.to_f64() * x.qs[j] as f64)
            })
            .sum()
    }

    #[test]
    fn q8_0_rounding_matches_candle() {
        use candle_core::quantized::k_quants::{BlockQ8_0 as CandleQ8_0, GgmlType};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for n_blocks in [1, 3, 18] {
            let mut x = random_f32(&mut rng, n_blocks * BLOCK);
            x[..BLOCK].fill(0.0); // an all-zero block (d = 0)
            let mut ours = vec![BlockQ8_0::ZERO; n_blocks];
            quantize_row_q8_0(&x, &mut ours);
            let mut theirs = vec![CandleQ8_0::zeros(); n_blocks];
            CandleQ8_0::from_float(&x, &mut theirs);
            for (o, t) in ours.iter().zip(&theirs) {
                let t: [u8; 34] = unsafe { std::mem::transmute_copy(t) };
                assert_eq!(o.d.to_le_bytes(), [t[0], t[1]]);
                assert_eq!(o.qs.map(|q| q as u8)[..], t[2..]);
            }
        }
    }

    #[test]
    fn q8_0_dot_kernels_agree_with_the_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for n_blocks in [1, 2, 3, 7, 18, 49] {
            let rows: Vec<Vec<BlockQ8_0>> = (0..4)
                .map(|_| {
                    let mut q = vec![BlockQ8_0::ZERO; n_blocks];
                    quantize_row_q8_0(&random_f32(&mut rng, n_blocks * BLOCK), &mut q);
                    q
                })
                .collect();
            let mut xq = vec![BlockQ8_0::ZERO; n_blocks];
            quantize_row_q8_0(&random_f32(&mut rng, n_blocks * BLOCK), &mut xq);
            let four = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
            let got = dot4_q8_0_fn()(four, &xq);
            for (r, row) in four.iter().enumerate() {
                let want = reference(row, &xq);
                let scalar = dot_q8_0_scalar(row, &xq) as f64;
                let tol = 1e-5 * (n_blocks as f64).sqrt() * want.abs().max(1.0) + 1e-4;
                assert!(
                    (scalar - want).abs() <= tol,
                    "{n_blocks}: {scalar} vs {want}"
                );
                assert!(
                    (got[r] as f64 - want).abs() <= tol,
                    "{n_blocks} row {r}: {} vs {want}",
                    got[r]
                );
            }
        }
    }

    #[test]
    fn q8_0_matmul_agrees_with_candle() {
        use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
        use candle_core::{Device, Module, Tensor};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for (rows, cols, m) in [
            (67, 64, 1),
            (130, 96, 1),
            (3, 32, 1),
            (67, 64, 5),
            (3, 32, 2),
        ] {
            let w = random_f32(&mut rng, rows * cols);
            let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
            let ours = Q8_0Matrix::from_bytes(rows, cols, &q.data().unwrap()).unwrap();
            let x = random_f32(&mut rng, m * cols);
            let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let theirs: Vec<f32> = QMatMul::QTensor(std::sync::Arc::new(q))
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for got in [ours.matmul(&x, m)] {
                for (i, (a, b)) in got.iter().zip(&theirs).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "[{rows}, {cols}] × {m}, element {i}: {a} vs {b}"
                    );
                }
            }
        }
        let e = Q8_0Matrix::from_bytes(2, 48, &[0; 68]).unwrap_err();
        assert!(e.to_string().contains("48 columns"), "{e}");
        let e = Q8_0Matrix::from_bytes(2, 64, &[0; 135]).unwrap_err();
        assert!(e.to_string().contains("135 bytes"), "{e}");
    }
}
