//! The record types: what a check, a verifier and a trial produce, who computed it (role
//! specs), the verdicts, and the bounds on them. The bottom layer the engines report in and
//! the experiments write to disk; it knows nothing of experiments, the console, plots or the
//! command line (tests/architecture.rs keeps it so). Serialized forms are the result file
//! format (`tests/fixtures/results_format` holds files an earlier build wrote).

pub mod input;
pub mod limits;
pub mod results;
pub mod segment_result;
