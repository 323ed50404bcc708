//! Progress of headless commands on stderr, so stdout stays clean for `--json`.

use std::io::Write;

use crate::engine::events::{EngineEvent, EventSink};

/// Prints progress to stderr (stdout stays clean for --json).
fn progress_printer(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<EngineEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Each trial's own start: with --jobs, trials decode side by side.
        let mut started: std::collections::HashMap<usize, std::time::Instant> = Default::default();
        while let Some(ev) = rx.recv().await {
            let line = match ev {
                EngineEvent::TrialStarted { trial, prompt_tokens, max_new_tokens, .. } => {
                    started.insert(trial, std::time::Instant::now());
                    Some(format!("trial {trial}: prompt {prompt_tokens} tokens, generating up to {max_new_tokens}"))
                }
                EngineEvent::Token { trial, index, .. } if (index + 1) % 32 == 0 => {
                    let since = started.get(&trial).map_or(0.0, |t| t.elapsed().as_secs_f64());
                    let rate = (index + 1) as f64 / since.max(1e-9);
                    Some(format!("trial {trial}: {} tokens, {rate:.1} tok/s", index + 1))
                }
                EngineEvent::InferenceDone { trial, tokens, time_s } => {
                    Some(format!("trial {trial}: inference done, {tokens} tokens in {time_s:.2} s ({:.1} tok/s)", tokens as f64 / time_s.max(1e-9)))
                }
                EngineEvent::VerifierDone { trial, verifier, accept_rate, verdict, overhead_percentage } => Some(format!(
                    "trial {trial}: verifier {} accept rate {accept_rate:.3} {verdict:?}, overhead {overhead_percentage:.1}%",
                    verifier + 1
                )),
                EngineEvent::TrialDone { trial, result } => {
                    // Under a segment-mode trial, each verifier's challenge, its cost and the
                    // reference prefill's (docs/commitment.md); nothing in full mode.
                    let segments: String = result
                        .verifiers
                        .iter()
                        .filter_map(|v| {
                            let s = v.segment.as_ref()?;
                            let incomplete = if v.complete { "" } else { " (incomplete)" };
                            Some(format!("\n  {}{incomplete}: {}", v.name, s.summary()))
                        })
                        .collect();
                    Some(format!(
                        "trial {trial}: {:?} (expected {:?}){segments}",
                        result.summary.final_verdict, result.summary.expected_verdict
                    ))
                }
                EngineEvent::Log { message, .. } => Some(message),
                EngineEvent::Preparing { message, .. } => message,
                // The run's error: the command returns it and main prints it, once.
                EngineEvent::Failed { .. } => None,
                _ => None,
            };
            if let Some(l) = line {
                let _ = writeln!(std::io::stderr(), "{}", crate::util::escape_controls(&l));
            }
        }
    })
}

/// An event sink whose events are printed as progress lines on stderr.
pub fn sink_with_progress() -> (EventSink, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (EventSink::new(tx), progress_printer(rx))
}

/// Lets the printer print every event already sent, then stops it: once the work that held
/// the sink has returned, its channel closes and the printer ends by itself; if a sender is
/// still alive somewhere, it is stopped after half a second. (Aborting it at once lost the
/// last lines, `inference done` among them, in about half of `infer` runs.)
pub async fn finish(printer: tokio::task::JoinHandle<()>) {
    let abort = printer.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_millis(500), printer)
        .await
        .is_err()
    {
        abort.abort();
    }
}
