//! Tests of the eight-row interleaved kernels (`kernels_x8`): every instruction-set form this
//! CPU runs against the scalar form (the same bits) and an f64 reference, odd sizes, and a
//! prefill's rows against one-token products; plus `measure_product_split` (ignored).

use half::f16;

use super::kernels_x8::*;
use crate::model::kernels::quantize_row_q8_1;
use crate::model::kernels_q8::quantize_row_q8_0;
use rand::{Rng, SeedableRng};

fn random_x(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

type Q4Row = Vec<(f16, f16, [u8; 16])>;

fn random_q4_1_rows(rng: &mut impl Rng, rows: usize, per_row: usize) -> Vec<Q4Row> {
    (0..rows)
        .map(|_| {
            (0..per_row)
                .map(|_| {
                    (
                        f16::from_f32(rng.random_range(0.001f32..0.1)),
                        f16::from_f32(rng.random_range(-0.5f32..0.5)),
                        std::array::from_fn(|_| rng.random()),
                    )
                })
                .collect()
        })
        .collect()
}

/// Element by element in f64, from the GGUF form of the rows.
fn q4_1_reference(row: &Q4Row, x: &[BlockQ8_1]) -> (f64, f64) {
    let (mut s, mut mag) = (0f64, 0f64);
    for ((d, m, qs), x) in row.iter().zip(x) {
        for j in 0..BLOCK {
            let q = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 } as f64;
            let t = d.to_f64() * q * x.d.to_f64() * x.qs[j] as f64;
            s += t;
            mag += t.abs();
        }
        s += m.to_f64() * x.s.to_f64();
        mag += (m.to_f64() * x.s.to_f64()).abs();
    }
    (s, mag)
}

#[test]
fn q4_1_group_kernels_agree_with_the_reference_and_each_other() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let isas = Isa::available();
    assert!(isas.contains(&Isa::Scalar));
    // Odd row counts leave a partial group; odd block counts leave no vector tail to hide.
    for (rows, per_row) in [(1, 1), (7, 3), (8, 18), (13, 48), (20, 49)] {
        let w = random_q4_1_rows(&mut rng, rows, per_row);
        let groups = interleave_q4_1(rows, per_row, |r, b| w[r][b]);
        let mut xq = vec![BlockQ8_1::ZERO; per_row];
        quantize_row_q8_1(&random_x(&mut rng, per_row * BLOCK), &mut xq);
        for g in 0..rows.div_ceil(ROWS) {
            let blocks = &groups[g * per_row..(g + 1) * per_row];
            let scalar = dot8_q4_1_scalar(blocks, &xq);
            for (r, &got) in scalar.iter().enumerate() {
                let Some(row) = w.get(g * ROWS + r) else {
                    assert_eq!(got, 0.0, "padding row {r} of group {g}");
                    continue;
                };
                let (want, mag) = q4_1_reference(row, &xq);
                let tol = (2.0 * per_row as f64 + 2.0) * f32::EPSILON as f64 * mag + 1e-6;
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "[{rows}×{per_row}] row {}: {} vs {want}",
                    g * ROWS + r,
                    got
                );
            }
            for &isa in &isas {
                let got = dot8_q4_1_fn(isa)(blocks, &xq);
                assert_eq!(
                    got.map(f32::to_bits),
                    scalar.map(f32::to_bits),
                    "{isa:?} vs scalar, [{rows}×{per_row}] group {g}"
                );
            }
        }
    }
}

#[test]
fn q8_0_group_kernels_agree_with_the_reference_and_each_other() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for (rows, per_row) in [(1, 1), (7, 3), (8, 18), (13, 48), (20, 49)] {
        // Weights over the whole i8 range, −128 included (a GGUF may hold it).
        let w: Vec<Vec<(f16, [i8; 32])>> = (0..rows)
            .map(|_| {
                (0..per_row)
                    .map(|_| {
                        let mut q: [i8; 32] = std::array::from_fn(|_| rng.random());
                        q[0] = -128;
                        (f16::from_f32(rng.random_range(0.001f32..0.1)), q)
                    })
                    .collect()
            })
            .collect();
        let groups = interleave_q8_0(rows, per_row, |r, b| w[r][b]);
        let x = random_x(&mut rng, per_row * BLOCK);
        let mut xq = vec![BlockQ8_0::ZERO; per_row];
        quantize_row_q8_0(&x, &mut xq);
        let xa: Vec<Q8_0Activation> = xq.iter().map(Q8_0Activation::from).collect();
        for g in 0..rows.div_ceil(ROWS) {
            let blocks = &groups[g * per_row..(g + 1) * per_row];
            let scalar = dot8_q8_0_scalar(blocks, &xa);
            for (r, &got) in scalar.iter().enumerate() {
                let Some(row) = w.get(g * ROWS + r) else {
                    assert_eq!(got, 0.0, "padding row {r} of group {g}");
                    continue;
                };
                let (mut want, mut mag) = (0f64, 0f64);
                for ((d, q), xb) in row.iter().zip(&xq) {
                    for (&w, &x) in q.iter().zip(&xb.qs) {
                        let t = d.to_f64() * w as f64 * xb.d.to_f64() * x as f64;
                        want += t;
                        mag += t.abs();
                    }
                }
                let tol = (per_row as f64 + 2.0) * f32::EPSILON as f64 * mag + 1e-6;
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "[{rows}×{per_row}] row {}: {} vs {want}",
                    g * ROWS + r,
                    got
                );
            }
            for isa in Isa::available() {
                let got = dot8_q8_0_fn(isa)(blocks, &xa);
                assert_eq!(
                    got.map(f32::to_bits),
                    scalar.map(f32::to_bits),
                    "{isa:?} vs scalar, [{rows}×{per_row}] group {g}"
                );
            }
        }
    }
}

#[test]
fn many_tokens_give_each_token_its_one_token_bits() {
    // A prefill's row for a token must be the decode step's result for it, bit for bit,
    // across the passes of TOKENS_PER_PASS tokens and the row split.
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let (rows, per_row, m) = (77, 5, TOKENS_PER_PASS + 3);
    let w = random_q4_1_rows(&mut rng, rows, per_row);
    let groups = interleave_q4_1(rows, per_row, |r, b| w[r][b]);
    let mut xq = vec![BlockQ8_1::ZERO; m * per_row];
    for (i, q) in xq.chunks_exact_mut(per_row).enumerate() {
        quantize_row_q8_1(&random_x(&mut rng, per_row * BLOCK), q);
        assert!(i < m);
    }
    let dot8 = dot8_q4_1_fn(Isa::best());
    let all = matmul(&groups, rows, per_row, &xq, m, dot8);
    assert_eq!(all.len(), m * rows);
    for i in 0..m {
        let one = matmul(
            &groups,
            rows,
            per_row,
            &xq[i * per_row..(i + 1) * per_row],
            1,
            dot8,
        );
        assert_eq!(
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            all[i * rows..(i + 1) * rows]
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            "token {i}"
        );
    }
}

mod measure {
    use crate::model::kernels::{quantize_row_q8_1, Q4_1Matrix};
    use crate::model::kernels_x8::*;
    use rand::{Rng, SeedableRng};

    /// Time per product, one thread against the row pool's two (a measurement, not a check):
    /// `cargo test --release --lib measure_product_split -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_product_split() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for (rows, cols) in [
            (576, 576),
            (192, 576),
            (1536, 576),
            (576, 1536),
            (49152, 576),
        ] {
            let bytes: Vec<u8> = (0..rows * cols / BLOCK * 20)
                .map(|i| if i % 20 < 4 { 0x10 } else { rng.random() })
                .collect();
            let m = Q4_1Matrix::from_bytes(rows, cols, &bytes).unwrap();
            let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut xq = vec![BlockQ8_1::ZERO; cols / BLOCK];
            quantize_row_q8_1(&x, &mut xq);
            let reps = (200_000_000 / (rows * cols)).max(3);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let _ = m.matmul(&x, 1);
                    let t = std::time::Instant::now();
                    for _ in 0..reps {
                        std::hint::black_box(m.matmul(&x, 1));
                    }
                    let us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
                    let gbs = (rows * cols / BLOCK * 20) as f64 / us / 1e3;
                    println!(
                        "[{rows}×{cols}] {threads} thread(s): {us:.1} µs/product, {gbs:.1} GB/s"
                    );
                });
            }
        }
    }
}
