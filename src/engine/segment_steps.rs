//! A segment verification that can be cancelled between its steps, the way a full-mode
//! verifier stops between prefill chunks: the column-0 (embedding) check first, then each
//! challenged layer, then the token checks, `cancel` looked at before each. A cancelled
//! verification returns what it finished (the layers done so far, no token checks) and says
//! so; the caller marks the verifier incomplete. The steps are those of one
//! `segment::verify_segments` call (`verify_segments_until`), so the checks are exactly the
//! ones it makes, and the embedding check runs once.

use anyhow::Result;

use super::commitment::VerifiedOpening;
use super::events::CancelToken;
use super::segment::{verify_segments_until, SegmentJob, SegmentOutput};
use super::verification::TokenRule;
use crate::stats::metrics::CompareDtype;
use crate::stats::policy::PolicyConfig;

/// What a segment verification needs besides the opening (the fields of `SegmentJob`).
pub struct SegmentInputs<'a> {
    pub prompt_ids: &'a [u32],
    pub output_ids: &'a [u32],
    pub inference_dtype: CompareDtype,
    pub inference_native: bool,
    pub policy: &'a PolicyConfig,
    pub tokens: Option<TokenRule<'a>>,
}

/// The checks finished, and whether `cancel` stopped the verification before all were.
pub struct SteppedSegments {
    pub output: SegmentOutput,
    pub cancelled: bool,
}

/// Verifies `opening` step by step (see the module comment); `output.time_s` is the whole
/// verification's wall time.
pub fn verify_segments_stepwise(
    model: &crate::model::LoadedModel,
    opening: VerifiedOpening,
    inputs: SegmentInputs<'_>,
    cancel: &CancelToken,
) -> Result<SteppedSegments> {
    stepwise(model, opening, inputs, || cancel.is_cancelled())
}

/// The steps, `stop` asked before each layer and before the token checks.
fn stepwise(
    model: &crate::model::LoadedModel,
    opening: VerifiedOpening,
    inputs: SegmentInputs<'_>,
    stop: impl FnMut() -> bool,
) -> Result<SteppedSegments> {
    let job = SegmentJob {
        prompt_ids: inputs.prompt_ids,
        output_ids: inputs.output_ids,
        opening: &opening,
        inference_dtype: inputs.inference_dtype,
        inference_native: inputs.inference_native,
        policy: inputs.policy,
        tokens: inputs.tokens,
    };
    let (output, cancelled) = verify_segments_until(model, &job, stop)?;
    Ok(SteppedSegments { output, cancelled })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::commitment::{commit, derive_challenge, read_opening, write_opening};
    use crate::engine::events::EventSink;
    use crate::engine::inference::generate_committed;
    use crate::engine::sampling::SamplingParams;
    use crate::engine::segment::verify_segments;
    use crate::model::device::DeviceProfile;
    use crate::model::weights::Precision;

    const REQUEST: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";
    const NONCE: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f";

    /// An honest f32 run of a few tokens, committed, challenged on 3 layers and opened: the
    /// opening read back with every proof checked.
    fn opened() -> (Vec<u32>, Vec<u32>, VerifiedOpening, SamplingParams) {
        let model = crate::testutil::embedded(Precision::Full, DeviceProfile::CPU_F32);
        let sampling = SamplingParams {
            temperature: 0.7,
            seed: 5,
            max_new_tokens: 6,
            ..SamplingParams::default()
        };
        let prompt = model.tokenizer.encode("The lighthouse keeper").unwrap();
        let (out, store) = generate_committed(
            &model,
            &prompt,
            &sampling,
            &[],
            &EventSink::none(),
            0,
            &CancelToken::new(),
        )
        .unwrap();
        let (commitment, tree) = commit(&store, REQUEST).unwrap();
        let challenge = derive_challenge(
            &commitment.root,
            NONCE,
            b"stepwise test secret",
            model.model.config.n_layers,
            3,
            out.output_ids.len(),
            None,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_opening(
            dir.path(),
            &commitment,
            &store,
            &tree,
            &challenge,
            prompt.len(),
        )
        .unwrap();
        let opening = read_opening(dir.path(), &commitment, REQUEST, NONCE, prompt.len()).unwrap();
        (prompt, out.output_ids, opening, sampling)
    }

    fn inputs<'a>(
        prompt: &'a [u32],
        output: &'a [u32],
        policy: &'a PolicyConfig,
        sampling: &'a SamplingParams,
    ) -> SegmentInputs<'a> {
        let model = crate::testutil::embedded(Precision::Full, DeviceProfile::CPU_F32);
        SegmentInputs {
            prompt_ids: prompt,
            output_ids: output,
            inference_dtype: CompareDtype::F32,
            inference_native: false,
            policy,
            tokens: Some(TokenRule {
                sampling,
                eos_ids: model.tokenizer.eos_ids(),
                output_complete: true,
            }),
        }
    }

    #[test]
    fn step_by_step_gives_the_checks_of_one_call_and_stops_where_cancelled() {
        let model = crate::testutil::embedded(Precision::Full, DeviceProfile::CPU_F32);
        let (prompt, output, opening, sampling) = opened();
        let policy = PolicyConfig::default();
        let whole = {
            let i = inputs(&prompt, &output, &policy, &sampling);
            verify_segments(
                &model,
                &SegmentJob {
                    prompt_ids: i.prompt_ids,
                    output_ids: i.output_ids,
                    opening: &opening,
                    inference_dtype: i.inference_dtype,
                    inference_native: i.inference_native,
                    policy: i.policy,
                    tokens: i.tokens,
                },
            )
            .unwrap()
        };
        let stepped = verify_segments_stepwise(
            &model,
            opening.clone(),
            inputs(&prompt, &output, &policy, &sampling),
            &CancelToken::new(),
        )
        .unwrap();
        assert!(!stepped.cancelled);
        let layers = |o: &SegmentOutput| o.segments.iter().map(|s| s.layer).collect::<Vec<_>>();
        assert_eq!(layers(&stepped.output), opening.challenge.layers);
        assert_eq!(layers(&stepped.output), layers(&whole));
        let checks = |o: &SegmentOutput| {
            o.state_checks()
                .map(|c| (c.position, c.layer, c.accept, c.metrics.rel_l2))
                .collect::<Vec<_>>()
        };
        assert_eq!(checks(&stepped.output), checks(&whole));
        assert_eq!(
            stepped.output.embedding_checks.len(),
            whole.embedding_checks.len()
        );
        let tokens = |o: &SegmentOutput| {
            o.token_checks.as_ref().map(|t| {
                t.records
                    .iter()
                    .map(|r| (r.position, r.accept))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(tokens(&stepped.output), tokens(&whole));
        assert!(stepped.output.pass(0.95) && whole.pass(0.95));

        // Cancelled after the first challenged layer: that layer's checks are kept, the other
        // layers and the token checks never run.
        let mut asked = 0;
        let cut = stepwise(
            &model,
            opening.clone(),
            inputs(&prompt, &output, &policy, &sampling),
            || {
                asked += 1;
                asked > 1
            },
        )
        .unwrap();
        assert!(cut.cancelled);
        assert_eq!(layers(&cut.output), opening.challenge.layers[..1]);
        assert_eq!(
            checks(&cut.output),
            checks(&whole)
                .into_iter()
                .filter(|c| c.1 == opening.challenge.layers[0] + 1)
                .collect::<Vec<_>>()
        );
        assert!(cut.output.token_checks.is_none());

        // Cancelled before it began: the embedding rows only.
        let cancel = CancelToken::new();
        cancel.cancel();
        let none = verify_segments_stepwise(
            &model,
            opening,
            inputs(&prompt, &output, &policy, &sampling),
            &cancel,
        )
        .unwrap();
        assert!(none.cancelled && none.output.segments.is_empty());
        assert_eq!(
            none.output.embedding_checks.len(),
            prompt.len() + output.len()
        );
    }
}
