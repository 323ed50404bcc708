//! A segment-mode verification cancelled (the console's `c`, Ctrl-C) keeps what its verifiers
//! finished and is marked incomplete, as a full-mode one is, instead of failing the trial; the
//! reference prefill is recorded for every verifier of the role that timed it.

use std::sync::Arc;

use super::config::{ConfigSet, LayerSelection, Role};
use super::plan::{SegmentSettings, TrialPlan};
use super::protocol::{answer_challenges, verify_trial_segments};
use super::trial::{infer_trial_with, VerifySettings};
use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EventSink};
use crate::engine::sampling::SamplingParams;
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::record::results::{PromptInfo, TrialResult, TrialVerdict};
use crate::stats::policy::PolicyConfig;

const LAYERS: usize = 3;

/// Two f32 verifiers of one role, each with its own challenge of `LAYERS` layers over an honest
/// f32 inference of a few tokens, verified with `cancel` as given.
fn verify_with(cancel: CancelToken) -> TrialResult {
    let gguf = crate::testutil::embedded_gguf();
    let data = tempfile::tempdir().unwrap();
    let ws = Arc::new(Workspace::new(
        ConfigSet::builtin().unwrap(),
        gguf.parent().unwrap().to_path_buf(),
        data.path().to_path_buf(),
    ));
    let role = Role {
        model: "smollm2-135m".into(),
        precision: Precision::Full,
        device: DeviceProfile::CPU_F32,
    };
    let settings = SegmentSettings {
        layers: LAYERS,
        token_positions: None,
        reference_prefill: true,
    };
    let plan = TrialPlan {
        experiment: "exp1".into(),
        trial: 0,
        prompt: PromptInfo {
            category: "short".into(),
            id: "cancel".into(),
            text: "Name a color.".into(),
        },
        messages: vec![("user".into(), "Name a color.".into())],
        inference: role.clone(),
        verifiers: vec![role.clone(), role],
        sampling: SamplingParams {
            max_new_tokens: 6,
            ..SamplingParams::default()
        },
        policy: PolicyConfig::default(),
        cutoff: 0.95,
        expected: TrialVerdict::Pass,
        chunk: None,
        spec_layers: LayerSelection::Every(8),
        segment: Some(settings),
        nonce: None,
        cheat: None,
        lazy_verifiers: Vec::new(),
    };
    let (manifest, _, store) = infer_trial_with(
        &ws,
        &plan,
        None,
        &EventSink::none(),
        &CancelToken::new(),
        true,
    )
    .unwrap();
    let openings = answer_challenges(&manifest, &store.unwrap(), settings, 2, data.path()).unwrap();
    let verify = VerifySettings {
        lazy: Vec::new(),
        verifiers: plan.verifiers.clone(),
        policy: plan.policy.clone(),
        cutoff: plan.cutoff,
        expected: plan.expected,
        chunk: None,
        trust_native_claim: true,
        token_sampling: Some(plan.sampling.clone()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
        .block_on(verify_trial_segments(
            ws,
            Arc::new(manifest),
            openings,
            &verify,
            true,
            plan.prompt.clone(),
            EventSink::none(),
            cancel,
        ))
        .unwrap()
}

#[test]
fn a_cancelled_segment_verification_is_kept_and_marked_incomplete() {
    let whole = verify_with(CancelToken::new());
    assert!(whole.complete);
    assert_eq!(whole.summary.final_verdict, TrialVerdict::Pass);
    let prefill = whole.verifiers[0].segment.as_ref().unwrap().full_prefill_s;
    assert!(prefill.is_some_and(|s| s > 0.0), "{prefill:?}");
    for v in &whole.verifiers {
        let s = v.segment.as_ref().unwrap();
        assert!(v.complete);
        assert_eq!(s.layers.len(), LAYERS);
        // One prefill timed for the role both verifiers share.
        assert_eq!(s.full_prefill_s, prefill);
        assert!(s.segment_to_full_prefill.is_some() && s.layer_to_full_prefill.is_some());
    }

    // Cancelled once verification began (before any layer): no error, the trial is kept with
    // each verifier's proven opening and embedding rows, incomplete, and no reference.
    let cancel = CancelToken::new();
    cancel.cancel();
    let cut = verify_with(cancel);
    assert!(!cut.complete);
    for v in &cut.verifiers {
        let s = v.segment.as_ref().unwrap();
        assert!(!v.complete, "{}", v.name);
        assert!(s.layers.is_empty());
        assert_eq!(
            s.challenged_layers.len(),
            LAYERS,
            "the drawn challenge is recorded"
        );
        assert!(s.proofs_checked > 0);
        assert!(s.embedding_rows > 0 && s.embedding_rows == s.embedding_rows_accepted);
        assert_eq!(s.full_prefill_s, None);
        assert!(v.token_checks.is_none());
    }
}
