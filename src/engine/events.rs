//! What the engines report while they work. The engines know nothing of the UI: they send these
//! on a channel; the TUI drains them once per frame, the CLI prints progress from them.

use crate::record::results::{RoleSpec, TrialResult, Verdict};
use crate::stats::metrics::CheckMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    Log {
        level: LogLevel,
        message: String,
    },
    /// Work before any visible progress (loading a model, compiling GPU kernels) begins
    /// (`message`) or ends (`None`). Several may run at once; `key` tells them apart.
    Preparing {
        key: String,
        message: Option<String>,
    },
    /// A trial begins: the inference is about to prefill its prompt.
    TrialStarted {
        trial: usize,
        prompt_category: String,
        prompt_tokens: usize,
        max_new_tokens: usize,
        /// How the inferencer decodes (`TappedModel::decode_path`).
        decode_path: String,
        sampled_layers: Vec<usize>,
        verifiers: Vec<RoleSpec>,
    },
    /// One generated token, with the text it adds (incremental detokenization).
    Token {
        trial: usize,
        index: usize,
        id: u32,
        text: String,
        step_ms: f64,
    },
    InferenceDone {
        trial: usize,
        tokens: usize,
        time_s: f64,
    },
    VerifierStarted {
        trial: usize,
        verifier: usize,
    },
    /// One (position, layer) check finished.
    Check {
        trial: usize,
        verifier: usize,
        position: usize,
        layer: usize,
        accept: bool,
        metrics: Box<CheckMetrics>,
    },
    /// One generated token held to the sampling rule (token checks).
    TokenCheck {
        trial: usize,
        verifier: usize,
        position: usize,
        accept: bool,
        margin: f64,
    },
    VerifierDone {
        trial: usize,
        verifier: usize,
        accept_rate: f64,
        verdict: Verdict,
        overhead_percentage: f64,
    },
    TrialDone {
        trial: usize,
        result: Box<TrialResult>,
    },
    /// The whole run ended; `summary_path` is the run summary written to disk.
    RunDone {
        summary_path: Option<std::path::PathBuf>,
        cancelled: bool,
    },
    Failed {
        message: String,
    },
}

/// Where an engine sends its events: a channel, or nowhere (tests, benchmarks).
#[derive(Clone, Default)]
pub struct EventSink {
    tx: Option<tokio::sync::mpsc::UnboundedSender<EngineEvent>>,
}

impl EventSink {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<EngineEvent>) -> Self {
        EventSink { tx: Some(tx) }
    }

    pub fn none() -> Self {
        EventSink { tx: None }
    }

    pub fn emit(&self, event: EngineEvent) {
        if let Some(tx) = &self.tx {
            // A closed receiver means nobody is watching any more; the work itself goes on.
            let _ = tx.send(event);
        }
    }

    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.emit(EngineEvent::Log {
            level,
            message: message.into(),
        });
    }
}

/// Cooperative cancellation shared between the UI/CLI and the engines.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
