//! Hidden states captured during decoding, stored compactly: one contiguous buffer per sampled
//! layer, rows = generated positions, in the model's dtype.

use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};
use half::{bf16, f16};

/// The most [`CapturedStates::reserve_rows`] sets aside up front, over all layers.
pub const MAX_RESERVED_BYTES: usize = 2 << 30;

#[derive(Debug, Clone, PartialEq)]
pub struct CapturedStates {
    /// Hidden-state indices, ascending.
    pub layers: Vec<usize>,
    pub hidden: usize,
    pub dtype: DType,
    /// Per layer: `rows × hidden` values, little-endian bytes of `dtype`.
    pub data: Vec<Vec<u8>>,
    pub rows: usize,
}

impl CapturedStates {
    pub fn new(layers: Vec<usize>, hidden: usize, dtype: DType) -> Result<Self> {
        ensure!(
            matches!(dtype, DType::F32 | DType::F16 | DType::BF16),
            "cannot capture hidden states in {dtype:?}"
        );
        let data = vec![Vec::new(); layers.len()];
        Ok(CapturedStates {
            layers,
            hidden,
            dtype,
            data,
            rows: 0,
        })
    }

    /// Makes room for `rows` more rows per layer at once, so a long generation does not leave
    /// the buffers up to twice their size from repeated doubling (measured: peak memory grew
    /// 3.2× the captured bytes). Untouched room costs address space, not memory, but a token
    /// budget is only an upper bound: beyond [`MAX_RESERVED_BYTES`] in all, the buffers grow
    /// as they fill instead (a 70B model's every layer over a long context would ask for more
    /// address space than a machine may grant).
    pub fn reserve_rows(&mut self, rows: usize) {
        let row_bytes = self.hidden * self.dtype.size_in_bytes();
        let per_layer = rows.saturating_mul(row_bytes);
        if per_layer.saturating_mul(self.data.len()) > MAX_RESERVED_BYTES {
            return;
        }
        for buffer in &mut self.data {
            buffer.reserve_exact(per_layer);
        }
    }

    /// Appends rows for every layer: `taps` = (layer, [n, hidden]) for exactly our layers.
    pub fn push(&mut self, taps: &[(usize, Tensor)]) -> Result<usize> {
        ensure!(
            taps.len() == self.layers.len(),
            "expected {} taps, got {}",
            self.layers.len(),
            taps.len()
        );
        let mut added = None;
        for (slot, (layer, t)) in taps.iter().enumerate() {
            ensure!(
                *layer == self.layers[slot],
                "tap order: expected layer {}, got {layer}",
                self.layers[slot]
            );
            let (n, h) = t.dims2()?;
            ensure!(h == self.hidden, "tap width {h} ≠ hidden {}", self.hidden);
            let t = t.to_dtype(self.dtype)?.flatten_all()?;
            let bytes = &mut self.data[slot];
            match self.dtype {
                DType::F32 => t
                    .to_vec1::<f32>()?
                    .iter()
                    .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
                DType::F16 => t
                    .to_vec1::<f16>()?
                    .iter()
                    .for_each(|v| bytes.extend_from_slice(&v.to_bits().to_le_bytes())),
                DType::BF16 => t
                    .to_vec1::<bf16>()?
                    .iter()
                    .for_each(|v| bytes.extend_from_slice(&v.to_bits().to_le_bytes())),
                other => bail!("unsupported capture dtype {other:?}"),
            }
            added = Some(n);
        }
        self.rows += added.unwrap_or(0);
        Ok(added.unwrap_or(0))
    }

    /// One row (generated position) of one layer slot, widened to f32.
    pub fn row_f32(&self, slot: usize, row: usize) -> Vec<f32> {
        let width = self.dtype.size_in_bytes();
        let start = row * self.hidden * width;
        let bytes = &self.data[slot][start..start + self.hidden * width];
        decode_f32(bytes, self.dtype)
    }

    pub fn bytes(&self) -> usize {
        self.data.iter().map(Vec::len).sum()
    }

    /// Builds from per-layer byte buffers (a bundle), checking their sizes.
    pub fn from_parts(
        layers: Vec<usize>,
        hidden: usize,
        dtype: DType,
        rows: usize,
        data: Vec<Vec<u8>>,
    ) -> Result<Self> {
        let expected = rows * hidden * dtype.size_in_bytes();
        for (l, d) in layers.iter().zip(&data) {
            ensure!(
                d.len() == expected,
                "layer {l}: {} bytes, expected {expected}",
                d.len()
            );
        }
        ensure!(
            layers.len() == data.len(),
            "{} layers but {} buffers",
            layers.len(),
            data.len()
        );
        Ok(CapturedStates {
            layers,
            hidden,
            dtype,
            data,
            rows,
        })
    }
}

/// Little-endian bytes of f32/f16/bf16 values, widened to f32 (exact for all three).
pub fn decode_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn stores_rows_per_layer_and_reads_them_back() {
        let mut c = CapturedStates::new(vec![4, 8], 3, DType::F32).unwrap();
        let a = Tensor::new(&[[1f32, 2., 3.]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[4f32, 5., 6.]], &Device::Cpu).unwrap();
        c.push(&[(4, a.clone()), (8, b.clone())]).unwrap();
        c.push(&[(4, b), (8, a)]).unwrap();
        assert_eq!(c.rows, 2);
        assert_eq!(c.row_f32(0, 1), vec![4., 5., 6.]);
        assert_eq!(c.row_f32(1, 1), vec![1., 2., 3.]);
        assert_eq!(c.bytes(), 2 * 2 * 3 * 4);
    }

    #[test]
    fn keeps_half_precision_compact() {
        let mut c = CapturedStates::new(vec![1], 2, DType::BF16).unwrap();
        let a = Tensor::new(&[[1.5f32, -2.0]], &Device::Cpu).unwrap();
        c.push(&[(1, a)]).unwrap();
        assert_eq!(c.bytes(), 4);
        assert_eq!(c.row_f32(0, 0), vec![1.5, -2.0]);
    }

    #[test]
    fn room_is_reserved_for_a_budget_but_never_beyond_the_cap() {
        let mut small = CapturedStates::new(vec![8, 16], 576, DType::F32).unwrap();
        small.reserve_rows(1000);
        assert!(small.data.iter().all(|b| b.capacity() >= 1000 * 576 * 4));
        // A 70B-sized capture (81 hidden states of 8192) over a 128k budget: nothing reserved,
        // rather than an allocation the machine refuses.
        let mut huge = CapturedStates::new((0..81).collect(), 8192, DType::BF16).unwrap();
        huge.reserve_rows(131_072);
        assert!(huge.data.iter().all(|b| b.capacity() == 0));
    }
}
