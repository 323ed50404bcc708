//! Experiments: configuration, the runner, result files, inference bundles.

pub mod bundle;
pub mod config;
pub mod results;
pub mod optimize;
pub mod runner;
