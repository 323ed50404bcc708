//! The engines: inference (decode + capture), verification (chunked prefill + checks),
//! sampling, commitments, segment checks, and the events they report. Below the experiments:
//! they use `model`, `stats` and the `record` types only, and know nothing of experiments, the
//! UI, plots or the command line (tests/architecture.rs keeps it so).

pub mod capture;
pub mod cheat;
pub mod commitment;
pub mod events;
pub mod inference;
pub mod reference_prefill;
pub mod sampling;
pub mod segment;
pub mod segment_steps;
pub mod verification;

#[cfg(test)]
mod pytorch_control_tests;
