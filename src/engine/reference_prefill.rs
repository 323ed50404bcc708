//! The price a segment verification is measured against (issue 17: "segment recompute time vs
//! a full prefill's"): one full prefill of prompt + output on the verifier's own model, in the
//! chunks a full-mode verifier uses, through every layer, the final norm and the lm_head at the
//! generated positions (what full mode's token checks read). Nothing is compared and nothing
//! from it counts toward a verdict: it is a timing reference only.

use std::time::Instant;

use anyhow::{ensure, Result};

use super::events::CancelToken;
use crate::model::LoadedModel;

/// Seconds one full prefill of `prompt_ids` + `output_ids` takes on `model`, in chunks of
/// `chunk` positions; None when `cancel` fired before it finished (a partial prefill is no
/// reference).
pub fn time_full_prefill(
    model: &LoadedModel,
    prompt_ids: &[u32],
    output_ids: &[u32],
    chunk: usize,
    cancel: &CancelToken,
) -> Result<Option<f64>> {
    ensure!(chunk > 0, "chunk size must be at least 1");
    ensure!(!prompt_ids.is_empty(), "a prefill needs a prompt");
    let tm = &model.model;
    let sequence: Vec<u32> = prompt_ids.iter().chain(output_ids).copied().collect();
    let prompt_len = prompt_ids.len();
    let start = Instant::now();
    let mut cache = tm.new_cache();
    for chunk_start in (0..sequence.len()).step_by(chunk) {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let ids = &sequence[chunk_start..(chunk_start + chunk).min(sequence.len())];
        // Row r of the chunk (absolute position chunk_start + r) predicts the next token; the
        // rows from prompt_len − 1 on predicted the output.
        let first_logit_row = (prompt_len - 1).saturating_sub(chunk_start);
        let out = if first_logit_row < ids.len() {
            tm.forward_with_logits_from(ids, &mut cache, &[], first_logit_row)?
        } else {
            tm.forward(ids, &mut cache, &[], true)?
        };
        // Reading the logits back waits for queued device work, as the full verifier's do.
        if let Some(logits) = out.row_logits.or(out.logits) {
            let _: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        }
    }
    Ok(Some(start.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::DeviceProfile;
    use crate::model::weights::Precision;

    #[test]
    fn a_reference_prefill_takes_time_and_stops_when_cancelled() {
        let model = crate::testutil::embedded(Precision::Full, DeviceProfile::CPU_F32);
        let prompt = model.tokenizer.encode("The lighthouse keeper").unwrap();
        let output = model
            .tokenizer
            .encode(" walked up the stairs again")
            .unwrap();
        let seconds = time_full_prefill(&model, &prompt, &output, 4, &CancelToken::new())
            .unwrap()
            .expect("not cancelled");
        assert!(seconds > 0.0, "{seconds}");
        let cancel = CancelToken::new();
        cancel.cancel();
        assert_eq!(
            time_full_prefill(&model, &prompt, &output, 4, &cancel).unwrap(),
            None
        );
    }
}
