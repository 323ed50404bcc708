//! The engines: inference (decode + capture), verification (chunked prefill + checks),
//! sampling, and the events they report. They know nothing of the UI.

pub mod capture;
pub mod cheat;
pub mod commitment;
pub mod events;
pub mod inference;
pub mod sampling;
pub mod segment;
pub mod verification;

#[cfg(test)]
mod pytorch_control_tests;
