//! Q8_0 weights × Q8_0-rounded activations on the CPU: the product llama.cpp runs for the
//! embedded GGUF's lm_head (its `token_embd.weight` is stored Q8_0 and tied to the output).
//! At `native` precision the lm_head reads those 8-bit rows (≈ 30 MB per token) instead of the
//! dequantized f32 table (113 MB), which the session-7 profile put at 24 % of a native decode.
//!
//! Numerics follow ggml's `ggml_vec_dot_q8_0_q8_0`: activations are rounded to 8-bit blocks
//! (d = max|x| / 127, q = round(x / d)); each block's integer dot product is exact and scaled by
//! d_w·d_x into the row's float sum, block by block (`kernels_x8`, eight rows at a time), so the
//! result differs from ggml's by f32 rounding only (tested against an f64 reference there).

use half::f16;

use super::kernels_x8::{self, Q8_0Activation, Q8_0x8};
pub use super::kernels_x8::{BlockQ8_0, BLOCK};

/// Bytes of one stored Q8_0 block.
pub const Q8_0_BLOCK_BYTES: usize = 2 + BLOCK;
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == Q8_0_BLOCK_BYTES);

/// A Q8_0 weight matrix [rows, cols], its rows interleaved eight at a time for the kernels
/// (`kernels_x8`).
#[derive(Debug, Clone)]
pub struct Q8_0Matrix {
    rows: usize,
    cols: usize,
    groups: Vec<Q8_0x8>,
}

impl Q8_0Matrix {
    /// From the raw bytes of a Q8_0 tensor (GGUF layout, row-major).
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cols.is_multiple_of(BLOCK),
            "Q8_0 matrix: {cols} columns are not a multiple of {BLOCK}"
        );
        let per_row = cols / BLOCK;
        let n_blocks = rows * per_row;
        anyhow::ensure!(
            bytes.len() == n_blocks * Q8_0_BLOCK_BYTES,
            "Q8_0 matrix [{rows}, {cols}]: {} bytes, expected {}",
            bytes.len(),
            n_blocks * Q8_0_BLOCK_BYTES
        );
        let groups = kernels_x8::interleave_q8_0(rows, per_row, |r, b| {
            let at = (r * per_row + b) * Q8_0_BLOCK_BYTES;
            let block = &bytes[at..at + Q8_0_BLOCK_BYTES];
            (
                f16::from_le_bytes([block[0], block[1]]),
                std::array::from_fn(|j| block[2 + j] as i8),
            )
        });
        Ok(Q8_0Matrix { rows, cols, groups })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The weight bytes a product reads (the GGUF tensor's size).
    pub fn bytes(&self) -> usize {
        self.rows * self.cols / BLOCK * Q8_0_BLOCK_BYTES
    }

    /// `x` is [m, cols] row-major; returns [m, rows]: x · Wᵀ with x rounded to Q8_0 blocks.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "Q8_0 matmul: input size");
        let per_row = self.cols / BLOCK;
        let mut xq = vec![BlockQ8_0::ZERO; m * per_row];
        for (xs, q) in x.chunks_exact(self.cols).zip(xq.chunks_exact_mut(per_row)) {
            quantize_row_q8_0(xs, q);
        }
        let xa: Vec<Q8_0Activation> = xq.iter().map(Q8_0Activation::from).collect();
        let dot8 = kernels_x8::dot8_q8_0_fn(kernels_x8::Isa::best());
        kernels_x8::matmul(&self.groups, self.rows, per_row, &xa, m, dot8)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_f32(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
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
            (200, 576, 40),
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
