//! Experiments: configuration, the runner, result files, inference bundles.

pub mod bundle;
#[cfg(test)]
mod bundle_fuzz_tests;
pub mod config;
pub mod optimize;
pub mod report;
pub mod results;
pub mod runner;
pub mod slurm;
pub mod trial;
mod verify_step;
pub mod workspace;
