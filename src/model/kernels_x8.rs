//! Quantized weights interleaved eight rows at a time, so that one vector instruction works on
//! eight rows at once (issue 19).
//!
//! Why: `perf` of llama.cpp on this machine (AMD EPYC, Zen 5, with AVX-VNNI) put 58 % of a
//! decode in `ggml_vec_dot_q4_1_q8_1` and 14 % in `ggml_vec_dot_q8_0_q8_0`, the same shape as
//! ours (55 % and 15 %); its annotation shows `vpdpbusd`, one instruction where the AVX2 form
//! needs two (`vpmaddubsw` + `vpmaddwd`). Both forms still reduce each row to a scalar and pay
//! shuffles and scale conversions per row and block. With eight rows interleaved block by block,
//! lane r of a 256-bit register holds row r: four activation bytes are broadcast to all lanes
//! and one `vpdpbusd` adds four products to each of the eight rows; the scales of eight rows
//! convert in one F16C instruction, and no horizontal sum is left at the end.
//!
//! Layout of one group's block b (rows 8g..8g+8, columns 32b..32b+32):
//! - Q4_1: `d[r]`, `m[r]` (f16), then `qs[32k + 4r + i]` = the GGUF byte `qs[4k + i]` of row r
//!   (its low nibble is element 4k+i, its high nibble element 16+4k+i), k in 0..4, i in 0..4.
//! - Q8_0: `d[r]` (f16), then `qs[32k + 4r + i]` = element 4k+i of row r, k in 0..8, stored
//!   with its sign bit flipped (w + 128 as u8), because `vpdpbusd` multiplies unsigned by
//!   signed bytes: Σ (w + 128)·x = Σ w·x + 128·Σ x, and Σ x is the activation block's, the
//!   same for every row, so it is subtracted once per block.
//!
//! Rows past the end of the matrix are zero (d = m = 0) and their outputs are dropped.
//!
//! Numerics: each block's integer dot product is exact in every form (the AVX2 form's 16-bit
//! partial sums are bounded below 2¹⁵, see [`dot8_q4_1_avx2`]). Each row then accumulates
//! `acc = fma(d_w·d_x, sumi, acc)` (Q4_1 adds `acc = fma(m_w, s_x, acc)`) block by block, in
//! the same order in the scalar, AVX2 and AVX-VNNI forms, so all three give the same bits, and
//! a one-token product equals the same token's row of a many-token product. Against ggml's
//! reference (one sum per block, `sumi·d_w·d_x + m_w·s_x`) they differ by f32 rounding only.

use half::f16;

use super::row_pool::par_chunks;

/// Elements per block (Q4_1, Q8_0 and the activation blocks alike).
pub const BLOCK: usize = 32;

/// Rows per interleaved group.
pub const ROWS: usize = 8;

/// The activations of a Q4_1 product, one block rounded to 8 bits (ggml's and candle's Q8_1):
/// value ≈ d·q, and `s` = d·Σq for the Q4_1 offset term (`kernels::quantize_row_q8_1`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; BLOCK],
}

impl BlockQ8_1 {
    pub const ZERO: BlockQ8_1 = BlockQ8_1 {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; BLOCK],
    };
}

/// One Q8_0 block as GGUF and candle store it (value = d·q), and the activations of a Q8_0
/// product in the same form (`kernels_q8::quantize_row_q8_0`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; BLOCK],
}

impl BlockQ8_0 {
    pub const ZERO: BlockQ8_0 = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; BLOCK],
    };
}

/// A Q8_0 product's activation block with Σq beside it: the VNNI kernels' offset term 128·Σq
/// is the same for every row group, so it is summed once per token, not once per group (the
/// lm_head has 6 144 groups).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Q8_0Activation {
    pub block: BlockQ8_0,
    pub sum: i32,
}

impl From<&BlockQ8_0> for Q8_0Activation {
    fn from(block: &BlockQ8_0) -> Self {
        Q8_0Activation {
            block: *block,
            sum: block.qs.iter().map(|&q| q as i32).sum(),
        }
    }
}

/// Eight Q4_1 rows' block (see the module's layout). 160 bytes, as eight GGUF blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Q4_1x8 {
    pub d: [f16; ROWS],
    pub m: [f16; ROWS],
    pub qs: [u8; ROWS * BLOCK / 2],
}
const _: () = assert!(std::mem::size_of::<Q4_1x8>() == 8 * 20);

/// Eight Q8_0 rows' block (see the module's layout). 272 bytes, as eight GGUF blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Q8_0x8 {
    pub d: [f16; ROWS],
    pub qs: [u8; ROWS * BLOCK],
}
const _: () = assert!(std::mem::size_of::<Q8_0x8>() == 8 * 34);

/// Interleaves `rows` Q4_1 rows of `per_row` blocks each: `get(r, b)` is row r's block b as
/// (d, m, the 16 GGUF nibble bytes). Returns ⌈rows/8⌉ groups of `per_row` blocks, group-major.
pub fn interleave_q4_1(
    rows: usize,
    per_row: usize,
    get: impl Fn(usize, usize) -> (f16, f16, [u8; 16]),
) -> Vec<Q4_1x8> {
    let groups = rows.div_ceil(ROWS);
    let mut out = Vec::with_capacity(groups * per_row);
    for g in 0..groups {
        for b in 0..per_row {
            let mut x = Q4_1x8 {
                d: [f16::ZERO; ROWS],
                m: [f16::ZERO; ROWS],
                qs: [0; ROWS * BLOCK / 2],
            };
            for r in 0..ROWS.min(rows - g * ROWS) {
                let (d, m, qs) = get(g * ROWS + r, b);
                x.d[r] = d;
                x.m[r] = m;
                for k in 0..4 {
                    x.qs[32 * k + 4 * r..32 * k + 4 * r + 4].copy_from_slice(&qs[4 * k..4 * k + 4]);
                }
            }
            out.push(x);
        }
    }
    out
}

/// Interleaves `rows` Q8_0 rows of `per_row` blocks each (`get(r, b)` = (d, the 32 values)).
pub fn interleave_q8_0(
    rows: usize,
    per_row: usize,
    get: impl Fn(usize, usize) -> (f16, [i8; 32]),
) -> Vec<Q8_0x8> {
    let groups = rows.div_ceil(ROWS);
    let mut out = Vec::with_capacity(groups * per_row);
    for g in 0..groups {
        for b in 0..per_row {
            // A zero row stored as w + 128 is 0x80.
            let mut x = Q8_0x8 {
                d: [f16::ZERO; ROWS],
                qs: [0x80; ROWS * BLOCK],
            };
            for r in 0..ROWS.min(rows - g * ROWS) {
                let (d, qs) = get(g * ROWS + r, b);
                x.d[r] = d;
                for k in 0..8 {
                    for i in 0..4 {
                        x.qs[32 * k + 4 * r + i] = (qs[4 * k + i] as u8) ^ 0x80;
                    }
                }
            }
            out.push(x);
        }
    }
    out
}

/// A group's eight dot products with one activation row.
pub type Dot8<G, X> = fn(&[G], &[X]) -> [f32; ROWS];

/// The instruction sets a kernel can use, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX2 plus `vpdpbusd` on 256-bit registers (AVX-VNNI, or AVX-512 VNNI with VL).
    Vnni,
}

impl Isa {
    /// What this CPU runs, capped by `VERILLM_KERNEL_ISA=scalar|avx2` (read once): a way to
    /// measure each form and to rule one out when something looks wrong.
    pub fn best() -> Isa {
        use std::sync::OnceLock;
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = match std::env::var("VERILLM_KERNEL_ISA").as_deref() {
                Ok("scalar") => Isa::Scalar,
                Ok("avx2") => Isa::Avx2,
                _ => Isa::Vnni,
            };
            Isa::available()
                .into_iter()
                .rfind(|&i| i <= cap)
                .unwrap_or(Isa::Scalar)
        })
    }

    /// The name people see (`bench`, the console): scalar, AVX2 or VNNI.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "AVX2",
            Isa::Vnni => "VNNI",
        }
    }

    /// Whether this CPU runs `self` (the forms are nested: each needs the one below it).
    pub fn is_available(self) -> bool {
        use std::sync::OnceLock;
        static TOP: OnceLock<Isa> = OnceLock::new();
        self <= *TOP.get_or_init(|| *Isa::available().last().expect("scalar always runs"))
    }

    /// Every form this CPU can run (the tests compare them all).
    pub fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            all.push(Isa::Avx2);
            if is_x86_feature_detected!("avxvnni")
                || (is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"))
            {
                all.push(Isa::Vnni);
            }
        }
        all
    }
}

/// The Q4_1 group kernel for `isa`.
///
/// # Panics
/// If this CPU cannot run `isa` (a vector form there would be undefined behaviour).
pub fn dot8_q4_1_fn(isa: Isa) -> Dot8<Q4_1x8, BlockQ8_1> {
    assert!(isa.is_available(), "{isa:?} kernels on a CPU without them");
    match isa {
        Isa::Scalar => dot8_q4_1_scalar,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => |w, x| unsafe { dot8_q4_1_avx2(w, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Vnni if is_x86_feature_detected!("avxvnni") => {
            |w, x| unsafe { dot8_q4_1_avxvnni(w, x) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Vnni => |w, x| unsafe { dot8_q4_1_avx512vnni(w, x) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => dot8_q4_1_scalar,
    }
}

/// The Q8_0 group kernel for `isa`.
///
/// # Panics
/// If this CPU cannot run `isa` (a vector form there would be undefined behaviour).
pub fn dot8_q8_0_fn(isa: Isa) -> Dot8<Q8_0x8, Q8_0Activation> {
    assert!(isa.is_available(), "{isa:?} kernels on a CPU without them");
    match isa {
        Isa::Scalar => dot8_q8_0_scalar,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => |w, x| unsafe { dot8_q8_0_avx2(w, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Vnni if is_x86_feature_detected!("avxvnni") => {
            |w, x| unsafe { dot8_q8_0_avxvnni(w, x) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Vnni => |w, x| unsafe { dot8_q8_0_avx512vnni(w, x) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => dot8_q8_0_scalar,
    }
}

/// The straightforward form, with the float steps of the vector forms (so the same bits).
pub fn dot8_q4_1_scalar(w: &[Q4_1x8], x: &[BlockQ8_1]) -> [f32; ROWS] {
    assert_eq!(w.len(), x.len(), "Q4_1×8·Q8_1: block counts");
    let mut acc = [0f32; ROWS];
    for (w, x) in w.iter().zip(x) {
        let (xd, xs) = (x.d.to_f32(), x.s.to_f32());
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for k in 0..4 {
                for i in 0..4 {
                    let byte = w.qs[32 * k + 4 * r + i];
                    sumi += (byte & 0x0F) as i32 * x.qs[4 * k + i] as i32;
                    sumi += (byte >> 4) as i32 * x.qs[16 + 4 * k + i] as i32;
                }
            }
            *acc = (w.d[r].to_f32() * xd).mul_add(sumi as f32, *acc);
            *acc = w.m[r].to_f32().mul_add(xs, *acc);
        }
    }
    acc
}

/// The straightforward form, with the float steps of the vector forms (so the same bits).
pub fn dot8_q8_0_scalar(w: &[Q8_0x8], x: &[Q8_0Activation]) -> [f32; ROWS] {
    assert_eq!(w.len(), x.len(), "Q8_0×8·Q8_0: block counts");
    let mut acc = [0f32; ROWS];
    for (w, x) in w.iter().zip(x) {
        let x = &x.block;
        let xd = x.d.to_f32();
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for k in 0..8 {
                for i in 0..4 {
                    let wq = (w.qs[32 * k + 4 * r + i] ^ 0x80) as i8;
                    sumi += wq as i32 * x.qs[4 * k + i] as i32;
                }
            }
            *acc = (w.d[r].to_f32() * xd).mul_add(sumi as f32, *acc);
        }
    }
    acc
}

/// How far ahead of the kernel the weights are fetched. A matrix's groups are one stream; the
/// hardware prefetcher stops at each 4 KiB page, and fetching across it gained 28 % on the f32
/// decode (`infer --precision full`, 43–45 → 54–58 tok/s, same binary otherwise).
pub(super) const PREFETCH_BYTES: usize = 4096;

/// Fetches the cache lines `PREFETCH_BYTES` past `block`'s (a prefetch past the end of the
/// weights is harmless, so the pointer wraps instead of staying in bounds).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_ahead<T>(block: &T) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let p = (block as *const T as *const i8).wrapping_add(PREFETCH_BYTES);
    for line in (0..std::mem::size_of::<T>()).step_by(64) {
        // SAFETY: a prefetch is a hint; it reads nothing the program sees and cannot fault.
        unsafe { _mm_prefetch(p.wrapping_add(line), _MM_HINT_T0) };
    }
}

/// The Q4_1 group kernel for x86, written once for three instruction sets: `$dp(s, a, b)` adds
/// the four u8 × i8 products of each 32-bit lane of a and b to lane s (`vpdpbusd`, or
/// `vpmaddubsw` + `vpmaddwd` on AVX2, exact here: |15·x + 15·x| ≤ 3 840 fits 16 bits). The
/// closure is spliced into the function, so it inlines with the function's target features.
#[cfg(target_arch = "x86_64")]
macro_rules! dot8_q4_1_x86 {
    ($name:ident, $features:literal, $dp:expr) => {
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(w: &[Q4_1x8], x: &[BlockQ8_1]) -> [f32; ROWS] {
            use std::arch::x86_64::*;
            assert_eq!(w.len(), x.len(), "Q4_1×8·Q8_1: block counts");
            let low = _mm256_set1_epi8(0x0F);
            let dp = $dp;
            let mut acc = _mm256_setzero_ps();
            for (wb, xb) in w.iter().zip(x) {
                prefetch_ahead(wb);
                let xq = xb.qs.as_ptr();
                // Four activation bytes as one i32, broadcast to the eight rows' lanes.
                let bcast =
                    |i: usize| _mm256_set1_epi32((xq.add(i) as *const i32).read_unaligned());
                let mut sumi = _mm256_setzero_si256();
                for k in 0..4 {
                    let q = _mm256_loadu_si256(wb.qs.as_ptr().add(32 * k) as *const __m256i);
                    sumi = dp(sumi, _mm256_and_si256(q, low), bcast(4 * k));
                    let high = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                    sumi = dp(sumi, high, bcast(16 + 4 * k));
                }
                let d = _mm256_cvtph_ps(_mm_loadu_si128(wb.d.as_ptr() as *const __m128i));
                let m = _mm256_cvtph_ps(_mm_loadu_si128(wb.m.as_ptr() as *const __m128i));
                let dd = _mm256_mul_ps(d, _mm256_set1_ps(xb.d.to_f32()));
                acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sumi), acc);
                acc = _mm256_fmadd_ps(m, _mm256_set1_ps(xb.s.to_f32()), acc);
            }
            let mut out = [0f32; ROWS];
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
            out
        }
    };
}

/// The Q8_0 group kernel for x86. Weights are stored as w + 128 (unsigned). With `vpdpbusd`
/// (`$offset` true) the kernel multiplies those by x and subtracts 128·Σx once per block; the
/// AVX2 form (`$offset` false) restores w and multiplies |w| by x with w's sign instead, since
/// `vpmaddubsw` would saturate on (w + 128)·x (|w|·x ≤ 128·127, two per 16-bit lane, fits;
/// x is −128 only in a block whose max |x| is subnormal, where 1/d overflows: then d rounds to
/// 0 in f16, the block's scale d_w·d_x is 0, and whatever the saturated sum, it adds +0).
#[cfg(target_arch = "x86_64")]
macro_rules! dot8_q8_0_x86 {
    ($name:ident, $features:literal, $offset:literal, $dp:expr) => {
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(w: &[Q8_0x8], x: &[Q8_0Activation]) -> [f32; ROWS] {
            use std::arch::x86_64::*;
            assert_eq!(w.len(), x.len(), "Q8_0×8·Q8_0: block counts");
            let dp = $dp;
            let mut acc = _mm256_setzero_ps();
            for (wb, xa) in w.iter().zip(x) {
                prefetch_ahead(wb);
                let xb = &xa.block;
                let xq = xb.qs.as_ptr();
                let mut sumi = _mm256_setzero_si256();
                for k in 0..8 {
                    let q = _mm256_loadu_si256(wb.qs.as_ptr().add(32 * k) as *const __m256i);
                    let xk = _mm256_set1_epi32((xq.add(4 * k) as *const i32).read_unaligned());
                    sumi = dp(sumi, q, xk);
                }
                if $offset {
                    sumi = _mm256_sub_epi32(sumi, _mm256_set1_epi32(128 * xa.sum));
                }
                let d = _mm256_cvtph_ps(_mm_loadu_si128(wb.d.as_ptr() as *const __m128i));
                let dd = _mm256_mul_ps(d, _mm256_set1_ps(xb.d.to_f32()));
                acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sumi), acc);
            }
            let mut out = [0f32; ROWS];
            _mm256_storeu_ps(out.as_mut_ptr(), acc);
            out
        }
    };
}

#[cfg(target_arch = "x86_64")]
dot8_q4_1_x86!(dot8_q4_1_avx2, "avx2,fma,f16c", |s, a, b| {
    use std::arch::x86_64::*;
    _mm256_add_epi32(
        s,
        _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)),
    )
});
#[cfg(target_arch = "x86_64")]
dot8_q4_1_x86!(dot8_q4_1_avxvnni, "avx2,fma,f16c,avxvnni", |s, a, b| {
    std::arch::x86_64::_mm256_dpbusd_avx_epi32(s, a, b)
});
#[cfg(target_arch = "x86_64")]
dot8_q4_1_x86!(
    dot8_q4_1_avx512vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    |s, a, b| std::arch::x86_64::_mm256_dpbusd_epi32(s, a, b)
);
#[cfg(target_arch = "x86_64")]
dot8_q8_0_x86!(dot8_q8_0_avx2, "avx2,fma,f16c", false, |s, q, x| {
    use std::arch::x86_64::*;
    let w = _mm256_xor_si256(q, _mm256_set1_epi8(0x80u8 as i8));
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    _mm256_add_epi32(s, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
});
#[cfg(target_arch = "x86_64")]
dot8_q8_0_x86!(
    dot8_q8_0_avxvnni,
    "avx2,fma,f16c,avxvnni",
    true,
    |s, q, x| { std::arch::x86_64::_mm256_dpbusd_avx_epi32(s, q, x) }
);
#[cfg(target_arch = "x86_64")]
dot8_q8_0_x86!(
    dot8_q8_0_avx512vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    true,
    |s, q, x| std::arch::x86_64::_mm256_dpbusd_epi32(s, q, x)
);

/// Groups per task when rows are split across threads: 64 rows, as `kernels::ROWS_PER_TASK`.
const GROUPS_PER_TASK: usize = 8;

/// Tokens per pass of a many-token product: weights are read once per pass (from cache for the
/// tokens after the first), and the pass's buffer stays small (≤ 6 MB for a 49 152-row lm_head).
pub(super) const TOKENS_PER_PASS: usize = 32;

/// x · Wᵀ for W stored as `groups` (⌈rows/8⌉ groups of `per_row` blocks, group-major) and
/// `xq` = m activation rows of `per_row` rounded blocks each; returns [m, rows].
pub fn matmul<G: Sync, X: Sync>(
    groups: &[G],
    rows: usize,
    per_row: usize,
    xq: &[X],
    m: usize,
    dot8: Dot8<G, X>,
) -> Vec<f32> {
    let n_groups = rows.div_ceil(ROWS);
    assert_eq!(
        groups.len(),
        n_groups * per_row,
        "interleaved matmul: weight size"
    );
    assert_eq!(xq.len(), m * per_row, "interleaved matmul: input size");
    let group = |g: usize| &groups[g * per_row..(g + 1) * per_row];
    let token = |i: usize| &xq[i * per_row..(i + 1) * per_row];
    let mut out = vec![0f32; m * rows];
    // One pass: `t` is [group][token of the pass][8], split across threads by groups.
    let mut t = vec![0f32; n_groups * ROWS * m.min(TOKENS_PER_PASS)];
    for first in (0..m).step_by(TOKENS_PER_PASS) {
        let n = (m - first).min(TOKENS_PER_PASS);
        let t = &mut t[..n_groups * ROWS * n];
        let work = std::mem::size_of_val(groups) * n;
        par_chunks(t, GROUPS_PER_TASK * ROWS * n, work, |start, ys| {
            let g0 = start / (ROWS * n);
            for (j, ys) in ys.chunks_exact_mut(ROWS * n).enumerate() {
                let w = group(g0 + j);
                for (i, y) in ys.chunks_exact_mut(ROWS).enumerate() {
                    y.copy_from_slice(&dot8(w, token(first + i)));
                }
            }
        });
        for (g, ys) in t.chunks_exact(ROWS * n).enumerate() {
            let r0 = g * ROWS;
            let live = ROWS.min(rows - r0);
            for (i, y) in ys.chunks_exact(ROWS).enumerate() {
                let row = (first + i) * rows;
                out[row + r0..row + r0 + live].copy_from_slice(&y[..live]);
            }
        }
    }
    out
}
