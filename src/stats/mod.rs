//! Pure-Rust statistics for VeriLLM checks: per-check float-difference metrics, the policies that
//! turn them into ACCEPT/REJECT, distributions over many checks, and threshold optimization.
//! No candle here, so this module builds and tests on its own.

pub mod aggregate;
pub mod distribution_test;
pub mod intervals;
pub mod metrics;
pub mod optimize;
pub mod policy;
pub mod sequential;
pub mod update;

pub use aggregate::{AcceptTally, Distribution};
pub use metrics::{compare, CheckMetrics, CompareDtype, StatsError};
pub use optimize::{build_report, AcceptRateReport, MetricReport, OptimizationReport};
pub use policy::{verdict, PolicyConfig, TierThresholds};
