//! A small persistent pool that splits one matrix–vector product by rows (issue 19).
//!
//! Why not rayon: a native decode step runs ≈ 211 row-split products per token, each a few
//! tens of µs. `perf stat` of `infer --threads 2 --precision native --max-tokens 256` showed
//! 224 754 context switches (≈ 880 per token, against 2 362 at one thread), 1.0 s of system time
//! against 0.38 s, and `perf record` put ≈ 14 % of the samples in the scheduler and futex paths
//! (`finish_task_switch`, `_raw_spin_unlock_irqrestore`, `Mutex::lock_contended`, `syscall`):
//! rayon's sleeping workers pay a wake-up per product, so the second thread gained nothing.
//!
//! Here the workers spin for a bounded time ([`SPIN`], 50 µs by default) after
//! each job, checking an atomic generation, then park on a condvar, so an idle pool uses no CPU and a neighbour process on
//! the other core cannot make it spin forever (candle's unbounded spin barriers collapse to
//! 3.4 tok/s then). Each thread takes chunks of rows from its own contiguous share first and
//! then from the others' (one atomic cursor per share), so a worker that is late
//! (descheduled) leaves its share to whoever is running; the caller works too. Rows are
//! independent and each chunk is computed by the same closure, so results are bit-identical to
//! one plain call.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker (and a waiting caller) spins before parking; it still checks the
/// generation 64 times first (well under 1 µs). Measured on this 2-vCPU VM, `infer --threads 2
/// --max-tokens 256`, same binary, `VERILLM_ROW_POOL_SPIN_US` varied:
/// - quiet (load average ≈ 1, 2026-12-07 22:45, interleaved kernels): native 128–132 tok/s
///   parking at once, 145–147 at 50 µs, 149–158 at 200 µs; full f32 48–50, 57, 56–57; context
///   switches 38 788 → 2 940. Between two products of a step the gap is a few µs, so a 50 µs
///   spin keeps the worker awake through a step and parks it between steps and runs.
/// - loaded (other builds holding the cores, load average 4.6–5.1, session 9's kernels): CPU
///   3.9–4.2 s parking at once against 5.1–5.3 s at 100 µs, and 51–60 against 40–41 tok/s: a
///   spinning worker spends a time slice the neighbour needed. `--threads` defaults to one
///   thread per core but one, so only a user who asks for every core gets the spin.
const SPIN: Duration = Duration::from_micros(50);

fn spin_limit() -> Duration {
    std::env::var("VERILLM_ROW_POOL_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(SPIN, Duration::from_micros)
}

type RowFn<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// One thread's share of a job's chunks: a contiguous range, claimed from the front.
/// Cache-line aligned, so the owner's claims stay in its own cache until a thief arrives.
#[repr(align(128))]
struct Share {
    next: AtomicUsize,
    end: usize,
}

/// One product in flight. It lives on the caller's stack; workers reach it through
/// [`Shared::job`] and the caller does not return before every worker has let go of it.
struct Job<'a> {
    out: *mut f32,
    len: usize,
    chunk: usize,
    /// Chunk indices split into one contiguous range per thread (the caller's is 0).
    shares: Vec<Share>,
    f: &'a RowFn<'a>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// Each thread works through its own contiguous range first, so it reads one stream of
    /// weights (the prefetchers follow it, and rows a core read last product are still in its
    /// own cache), then takes what is left of the others' (a late or descheduled worker leaves
    /// its share to whoever runs). One chunk at a time from a shared counter instead
    /// interleaved the two threads' chunks: a 1 536-row Q4_1 product took 29.0 µs on two
    /// threads against 15.2 µs on one (`measure_product_split`). A panic in `f` is kept for
    /// the caller.
    fn work(&self, me: usize) {
        let parts = self.shares.len();
        for k in 0..parts {
            let share = &self.shares[(me + k) % parts];
            loop {
                let index = share.next.fetch_add(1, SeqCst);
                if index >= share.end {
                    break;
                }
                let first = index * self.chunk;
                let end = (first + self.chunk).min(self.len);
                // SAFETY: each chunk index lies in exactly one share and is handed out by one
                // `fetch_add` on that share's counter, so no two claims overlap; each lies inside
                // `out[..len]`, which the caller borrows mutably (and does not touch) until
                // every worker has left the job (see `RowPool::run`).
                let rows =
                    unsafe { std::slice::from_raw_parts_mut(self.out.add(first), end - first) };
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (self.f)(first, rows))) {
                    self.panic.lock().unwrap().get_or_insert(payload);
                    // Stop handing out rows: the product is lost anyway.
                    for share in &self.shares {
                        share.next.store(share.end, SeqCst);
                    }
                    return;
                }
            }
        }
    }
}

struct Shared {
    /// Bumped once per job; a worker joins when it sees a value it has not seen.
    generation: AtomicUsize,
    /// The job in flight (a `Job` with its lifetime erased), null between jobs.
    job: AtomicPtr<()>,
    /// Workers currently inside a job; the caller waits for 0 before its `Job` goes away.
    active: AtomicUsize,
    shutdown: AtomicBool,
    /// Parked workers, and the lock/condvar they park on.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Spin time before parking (`SPIN` unless overridden).
    spin: Duration,
    /// A caller parked waiting for `active` to reach 0.
    caller_parked: AtomicBool,
    done_lock: Mutex<()>,
    done: Condvar,
}

/// `parts − 1` worker threads plus the calling thread.
pub struct RowPool {
    parts: usize,
    shared: std::sync::Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time; a second concurrent caller runs its product itself.
    submit: Mutex<()>,
}

impl RowPool {
    /// A pool that splits each product across `parts` threads (the caller and `parts − 1`
    /// workers); `parts ≤ 1` starts no thread.
    pub fn new(parts: usize) -> std::io::Result<RowPool> {
        let shared = std::sync::Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            spin: spin_limit(),
            caller_parked: AtomicBool::new(false),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
        });
        let mut workers = Vec::new();
        for i in 1..parts.max(1) {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("row-pool-{i}"))
                .spawn(move || worker(&shared, i))?;
            workers.push(handle);
        }
        Ok(RowPool {
            parts: parts.max(1),
            shared,
            workers,
            submit: Mutex::new(()),
        })
    }

    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Calls `f(first_row, &mut out[first_row..first_row + k])` on chunks of `chunk` rows
    /// (the last may be shorter) covering `out`, spread over the pool. A panic in `f` is
    /// re-raised here after every thread has left the job.
    pub fn run(&self, out: &mut [f32], chunk: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        let chunk = chunk.max(1);
        let guard = if self.workers.is_empty() || out.len() <= chunk {
            None
        } else {
            self.submit.try_lock().ok()
        };
        let Some(_guard) = guard else {
            // No workers, one chunk, or another thread is using the pool: run it here.
            for (c, rows) in out.chunks_mut(chunk).enumerate() {
                f(c * chunk, rows);
            }
            return;
        };
        let chunks = out.len().div_ceil(chunk);
        let job = Job {
            out: out.as_mut_ptr(),
            len: out.len(),
            chunk,
            shares: (0..self.parts)
                .map(|p| Share {
                    next: AtomicUsize::new(p * chunks / self.parts),
                    end: (p + 1) * chunks / self.parts,
                })
                .collect(),
            f,
            panic: Mutex::new(None),
        };
        let s = &*self.shared;
        s.job.store(&job as *const Job as *mut (), SeqCst);
        // The job lives in this frame: from here on, leaving it (by return or by unwinding)
        // first closes the job and waits for the workers.
        let closing = CloseJob(s);
        s.generation.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        job.work(0);
        drop(closing);
        if let Some(payload) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            resume_unwind(payload);
        }
    }
}

/// Closes the published job when dropped, then waits for every worker that may still hold it:
/// a worker counts itself in `active` before it reads `job`, so once `job` is null and `active`
/// is 0 none can reach the caller's frame again (all operations are SeqCst). A guard, so that
/// this holds even if the caller unwinds between publishing and waiting.
struct CloseJob<'a>(&'a Shared);

impl Drop for CloseJob<'_> {
    fn drop(&mut self) {
        let s = self.0;
        s.job.store(std::ptr::null_mut(), SeqCst);
        let start = Instant::now();
        let mut spins = 0u32;
        while s.active.load(SeqCst) != 0 {
            spins += 1;
            if spins.is_multiple_of(64) && start.elapsed() > s.spin {
                let mut lock = s.done_lock.lock().unwrap_or_else(|e| e.into_inner());
                s.caller_parked.store(true, SeqCst);
                while s.active.load(SeqCst) != 0 {
                    lock = s.done.wait(lock).unwrap_or_else(|e| e.into_inner());
                }
                s.caller_parked.store(false, SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
    }
}

/// Worker `me` (1 ..= parts − 1) of a pool; its share of each job is `me`.
fn worker(s: &Shared, me: usize) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(SeqCst) {
                return;
            }
            let g = s.generation.load(SeqCst);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins.is_multiple_of(64) && start.elapsed() > s.spin {
                // Park. `sleepers` is raised before the generation is checked again, and the
                // caller bumps the generation before it reads `sleepers`, so either this
                // check sees the new job or the caller sees a sleeper and notifies (under the
                // lock, so not before this thread waits).
                let mut lock = s.sleep.lock().unwrap();
                s.sleepers.fetch_add(1, SeqCst);
                while s.generation.load(SeqCst) == seen && !s.shutdown.load(SeqCst) {
                    lock = s.wake.wait(lock).unwrap();
                }
                s.sleepers.fetch_sub(1, SeqCst);
                continue;
            }
            std::hint::spin_loop();
        }
        s.active.fetch_add(1, SeqCst);
        let job = s.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: `job` points at a live `Job` on a caller's stack: the caller nulls the
            // pointer and then waits for `active` to be 0 before that frame ends, and this
            // thread counted itself in `active` before loading the pointer.
            let job = unsafe { &*(job as *const Job) };
            job.work(me);
        }
        if s.active.fetch_sub(1, SeqCst) == 1 && s.caller_parked.load(SeqCst) {
            let _lock = s.done_lock.lock().unwrap();
            s.done.notify_all();
        }
    }
}

impl Drop for RowPool {
    /// Stops and joins the workers (a parked one is woken to see the shutdown).
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        {
            let _lock = self.shared.sleep.lock().unwrap();
            self.shared.wake.notify_all();
        }
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The process-wide pool for `parts` threads (made on first use and kept: parked workers cost
/// nothing), or None when `VERILLM_ROW_POOL=0` asks for rayon's split instead (the "before" of
/// the A/B measurement) or the threads cannot be started.
pub fn shared_pool(parts: usize) -> Option<&'static RowPool> {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    static POOLS: Mutex<Vec<&'static RowPool>> = Mutex::new(Vec::new());
    if *DISABLED.get_or_init(|| std::env::var_os("VERILLM_ROW_POOL").is_some_and(|v| v == "0")) {
        return None;
    }
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = pools.iter().find(|p| p.parts() == parts) {
        return Some(pool);
    }
    let pool: &'static RowPool = Box::leak(Box::new(RowPool::new(parts).ok()?));
    pools.push(pool);
    Some(pool)
}

/// A product whose weights are smaller than this runs on the calling thread alone: handing
/// half of it to another core costs about 3 µs here (the job, the activations and the outputs
/// cross between the cores' caches). `measure_product_split`, Q4_1, one thread → two
/// (2026-12-07 23:20, quiet machine): 192 × 576 (69 KB) 2.9 → 4.5 µs, 576 × 576 (207 KB)
/// 6.3 → 6.6 µs, 1 536 × 576 (553 KB) 15 → 11 µs, 49 152 × 576 (17.7 MB) 481 → 267 µs.
pub const SPLIT_MIN_BYTES: usize = 256 << 10;

/// Calls `f(start, out[start..start + chunk])` on every `chunk` elements of `out` (the last may
/// be shorter), split across the row pool (`VERILLM_ROW_POOL=0`: across rayon's) when the call
/// reads at least `SPLIT_MIN_BYTES` of weights (`weight_bytes`).
pub fn par_chunks(
    out: &mut [f32],
    chunk: usize,
    weight_bytes: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || out.len() <= chunk || weight_bytes < SPLIT_MIN_BYTES {
        f(0, out);
        return;
    }
    if let Some(pool) = shared_pool(threads) {
        pool.run(out, chunk, &f);
        return;
    }
    use rayon::prelude::*;
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(c, ys)| f(c * chunk, ys));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn fill(first: usize, ys: &mut [f32]) {
        for (i, y) in ys.iter_mut().enumerate() {
            *y = ((first + i) as f32).sqrt() * 1.5 + 1.0;
        }
    }

    #[test]
    fn covers_every_row_once_on_odd_sizes() {
        let pool = RowPool::new(3).unwrap();
        for len in [0, 1, 5, 63, 64, 65, 577, 1537, 4099] {
            for chunk in [1, 4, 64, 100] {
                let calls = AtomicUsize::new(0);
                let mut out = vec![f32::NAN; len];
                pool.run(&mut out, chunk, &|first, ys| {
                    calls.fetch_add(ys.len(), SeqCst);
                    assert!(ys.len() <= chunk && first % chunk == 0);
                    fill(first, ys);
                });
                let mut want = vec![0f32; len];
                fill(0, &mut want);
                assert_eq!(out, want, "len {len} chunk {chunk}");
                assert_eq!(calls.load(SeqCst), len);
            }
        }
    }

    #[test]
    fn survives_many_jobs_with_parking_between() {
        let pool = RowPool::new(2).unwrap();
        let mut want = vec![0f32; 1000];
        fill(0, &mut want);
        for i in 0..20_000 {
            let mut out = vec![0f32; 1000];
            pool.run(&mut out, 64, &fill);
            assert_eq!(out, want);
            if i % 5000 == 0 {
                // Long enough for the workers to park, so the wake-up path runs too.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    #[test]
    fn a_panic_in_a_job_reaches_the_caller_and_the_pool_keeps_working() {
        let pool = RowPool::new(2).unwrap();
        for _ in 0..50 {
            let result = catch_unwind(AssertUnwindSafe(|| {
                let mut out = vec![0f32; 640];
                pool.run(&mut out, 64, &|first, _| {
                    if first == 320 {
                        panic!("row 320 failed");
                    }
                });
            }));
            let payload = result.expect_err("the panic must propagate");
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"row 320 failed"));
            let mut out = vec![0f32; 640];
            pool.run(&mut out, 64, &fill);
            assert_eq!(out[639], (639f32).sqrt() * 1.5 + 1.0);
        }
    }

    #[test]
    fn dropping_the_pool_joins_its_workers() {
        let pool = RowPool::new(4).unwrap();
        let mut out = vec![0f32; 512];
        pool.run(&mut out, 16, &fill);
        assert_eq!(pool.workers.len(), 3);
        let shared = std::sync::Arc::downgrade(&pool.shared);
        drop(pool);
        // Every worker held a clone of `shared`; joined threads have dropped theirs.
        assert!(shared.upgrade().is_none(), "a worker outlived the pool");
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = RowPool::new(2).unwrap();
        let mut want = vec![0f32; 777];
        fill(0, &mut want);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..2000 {
                        let mut out = vec![0f32; 777];
                        pool.run(&mut out, 32, &fill);
                        assert_eq!(out, want);
                    }
                });
            }
        });
    }

    /// Every row-split kernel gives the same bits on the row pool (2 and 3 threads) as the
    /// plain one-thread call, on row counts that are not multiples of 4 or of a task's 64 rows.
    #[test]
    fn kernels_are_bit_identical_to_one_thread() {
        use crate::model::kernels::{matvec_f32, Q4_1Matrix};
        use crate::model::kernels_q8::Q8_0Matrix;
        use candle_core::quantized::{GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let in_threads = |n: usize, f: &(dyn Fn() -> Vec<Vec<f32>> + Sync)| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap();
            pool.install(f)
        };
        // The first is past kernels::SPLIT_MIN_BYTES for all three kernels (smaller products
        // run on the caller alone); the pool's own splits are tested on odd sizes above.
        for (rows, cols) in [
            (2051, 576),
            (1537, 64),
            (577, 96),
            (130, 32),
            (65, 160),
            (3, 32),
        ] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let wt = Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap();
            let bytes = |dtype| {
                QTensor::quantize(&wt, dtype)
                    .unwrap()
                    .data()
                    .unwrap()
                    .to_vec()
            };
            let q4 = Q4_1Matrix::from_bytes(rows, cols, &bytes(GgmlDType::Q4_1)).unwrap();
            let q8 = Q8_0Matrix::from_bytes(rows, cols, &bytes(GgmlDType::Q8_0)).unwrap();
            let all = || vec![q4.matmul(&x, 1), q8.matmul(&x, 1), matvec_f32(&w, rows, &x)];
            let bits = |v: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
                v.iter()
                    .map(|k| k.iter().map(|y| y.to_bits()).collect())
                    .collect()
            };
            let one = bits(in_threads(1, &all));
            for n in [2, 3] {
                assert_eq!(
                    bits(in_threads(n, &all)),
                    one,
                    "{rows}x{cols} on {n} threads"
                );
            }
        }
    }
}
