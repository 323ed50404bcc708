//! Experiments: configuration, the runner, result files, inference bundles.

pub mod bundle;
pub mod config;
pub mod optimize;
pub mod report;
pub mod request;
pub mod results;
pub mod runner;
#[cfg(test)]
mod token_tests;
pub mod trial;
mod verify_step;
pub mod workspace;
