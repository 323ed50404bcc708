//! Bounds shared by the configuration, the runner and the readers of files from elsewhere:
//! checked before anything is sized by a number that came from outside.

/// Verifiers one trial may have (VeriLLM's experiments use three): each is a model load, a
/// prefill and a set of figures, so the number is bounded for commands and for files.
pub const MAX_VERIFIERS: usize = 16;

/// Upper bound on `trials` and `prompts.count`: far beyond any useful run, low enough that a
/// typo cannot ask for an allocation that aborts the process.
pub const MAX_TRIALS: usize = 100_000;

/// Beyond any real transformer (the largest have about 130 layers and a width of 16k); a
/// manifest's claims (and a result file's sampled layers) are bounded before anything is sized
/// by them.
pub const MAX_MODEL_LAYERS: usize = 1024;
