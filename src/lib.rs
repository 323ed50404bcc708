//! verillm-tui: a terminal lab console for verifiable LLM inference (VeriLLM).
//!
//! - [`model`]: weights, tokenizer, chat template, the tapped forward pass.
//! - [`engine`]: inference (decode + capture), verification (chunked prefill + checks), sampling, events.
//! - [`stats`]: per-check metrics, acceptance policies, aggregation, threshold optimization.
//! - [`experiment`]: configuration, runner, result files, bundles, threshold optimization runs.
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
