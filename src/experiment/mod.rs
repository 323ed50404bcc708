//! Experiments: configuration, planning a run (`plan`), running it (`runner`, `trial`,
//! `verify_step`), writing its files (`output`), inference bundles, requests, Slurm. Above the
//! engines and the record types, below the console, plots and command line.

pub mod bundle;
#[cfg(test)]
mod bundle_fuzz_tests;
pub mod cheating;
pub mod config;
pub mod decision;
pub mod matrix;
pub mod matrix_output;
pub mod matrix_run;
pub mod optimize;
pub mod optimize_holdout;
pub mod output;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod protocol;
#[cfg(test)]
mod protocol_tests;
pub mod report;
pub mod request;
pub mod request_check;
pub mod runner;
pub mod slurm;
#[cfg(test)]
mod token_drift_tests;
#[cfg(test)]
mod token_tests;
pub mod trial;
mod verify_step;
pub mod workspace;
