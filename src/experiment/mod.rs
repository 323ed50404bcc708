//! Experiments: configuration, the runner, result files, inference bundles.

pub mod bundle;
#[cfg(test)]
mod bundle_fuzz_tests;
pub mod config;
pub mod decision;
pub mod matrix;
pub mod matrix_output;
pub mod matrix_run;
pub mod optimize;
pub mod optimize_holdout;
pub mod report;
pub mod request;
pub mod results;
pub mod runner;
pub mod slurm;
#[cfg(test)]
mod token_tests;
pub mod trial;
mod verify_step;
pub mod workspace;
