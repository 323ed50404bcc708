//! verillm-tui: a terminal lab console for verifiable LLM inference (VeriLLM).
//!
//! Layers, bottom up (docs/architecture.md; tests/architecture.rs fails on an upward import or
//! an import loop):
//! - [`model`]: weights, tokenizer, chat template, the tapped forward pass.
//! - [`stats`]: per-check metrics, acceptance policies and verdicts, aggregation, optimization.
//! - [`record`]: checks, verdicts, role specs, trial results and run summaries, their bounds.
//! - [`engine`]: inference (decode + capture), verification (chunked prefill + checks), sampling,
//!   commitments, events.
//! - [`experiment`]: configuration, plan → runner → output, bundles, requests, Slurm.
//! - [`plot`]: PNG figures. [`tui`]: the interactive console. [`cli`]: the command line.

pub mod bench;
pub mod cli;
pub mod console;
pub mod doctor;
pub mod engine;
pub mod experiment;
pub mod model;
pub mod plot;
pub mod progress;
pub mod record;
pub mod stats;
pub mod tui;
pub mod util;

#[cfg(test)]
pub mod testutil;
