//! Segment mode (docs/commitment.md) on Slurm: the inference task commits and leaves the root-only
//! bundle with its private store (`states/`) in the run folder, the inferencer's side; the
//! verification task of a trial then plays the exchange for that bundle as `run` does in one
//! process — each verifier draws its challenge with a fresh secret of its own
//! (`challenges/verifier_N.json`, refused if already drawn), the inferencer's store answers it
//! (`openings/verifier_N/`), and the verifiers check their openings — and writes the trial.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::super::bundle::{write_bundle, write_root_only_bundle, MANIFEST_FILE, TENSORS_FILE};
use super::super::config::VerificationMode;
use super::super::plan::{RunRequest, TrialPlan};
use super::super::trial::infer_trial_with;
use super::super::workspace::Workspace;
use crate::engine::commitment::{write_store, STORE_DIR};
use crate::engine::events::{CancelToken, EventSink};

/// The verification mode and challenge settings of a run on Slurm (`run --slurm --mode segment
/// --challenge-layers C --token-positions K --no-reference-prefill`), carried in plan.json so
/// every task plans the trials the submitter planned. Absent from older plans: the experiment's
/// own mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<VerificationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_layers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_positions: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_reference_prefill: bool,
}

impl ProtocolOptions {
    pub fn of(req: &RunRequest) -> Self {
        ProtocolOptions {
            mode: req.mode,
            challenge_layers: req.challenge_layers,
            token_positions: req.token_positions,
            no_reference_prefill: req.no_reference_prefill,
        }
    }

    /// How the console names a segment-mode run (` · segment, c = 2`); empty otherwise (the
    /// experiment's own mode).
    pub fn label(&self) -> String {
        match self.mode {
            Some(VerificationMode::Segment) => format!(
                " · segment, c = {}",
                self.challenge_layers
                    .map_or("default".to_string(), |c| c.to_string())
            ),
            _ => String::new(),
        }
    }

    /// `req` with these settings.
    pub fn apply(&self, req: RunRequest) -> RunRequest {
        RunRequest {
            mode: self.mode,
            challenge_layers: self.challenge_layers,
            token_positions: self.token_positions,
            no_reference_prefill: self.no_reference_prefill,
            ..req
        }
    }
}

/// One trial's inference into `work`: a bundle with its sampled states in full mode; in segment
/// mode the root-only bundle and its private store.
pub(super) fn infer_into(
    ws: &Workspace,
    plan: &TrialPlan,
    work: &Path,
    sink: &EventSink,
) -> Result<()> {
    let segment = plan.segment.is_some();
    let (manifest, states, store) =
        infer_trial_with(ws, plan, None, sink, &CancelToken::new(), segment)?;
    match store {
        Some(store) => {
            write_root_only_bundle(work, manifest)?;
            write_store(work, &store)
        }
        None => write_bundle(work, manifest, &states),
    }
}

/// Copies a bundle written by [`infer_into`] into `staging`: its tensors or its store first,
/// the manifest (what marks a bundle present) last.
pub(super) fn copy_bundle(work: &Path, staging: &Path) -> Result<()> {
    let copy = |from: &Path, to: &Path| -> Result<()> {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        std::fs::File::open(to)?.sync_all()?;
        Ok(())
    };
    if work.join(TENSORS_FILE).is_file() {
        copy(&work.join(TENSORS_FILE), &staging.join(TENSORS_FILE))?;
    }
    let store = work.join(STORE_DIR);
    if store.is_dir() {
        let target = staging.join(STORE_DIR);
        std::fs::create_dir(&target).with_context(|| format!("creating {}", target.display()))?;
        for entry in std::fs::read_dir(&store)? {
            let entry = entry?;
            copy(&entry.path(), &target.join(entry.file_name()))?;
        }
    }
    copy(&work.join(MANIFEST_FILE), &staging.join(MANIFEST_FILE))
}

/// Segment mode's exchange for one landed bundle before its verification: the verifiers'
/// challenges, then the inferencer's openings of them from the store beside the bundle.
pub(super) fn exchange(
    ws: &Workspace,
    req: &RunRequest,
    bundle: &Path,
    sink: &EventSink,
) -> Result<()> {
    super::super::protocol::draw_bundle_challenges(ws, req, bundle, sink)?;
    super::super::protocol::open_bundle_challenges(bundle, sink)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tasks::{infer_task, verify_task, TaskOutcome};
    use super::super::{JobFolder, JobPlan, SlurmOptions, SLURM_FORMAT_VERSION};
    use super::*;
    use crate::record::results::{TrialResult, TrialVerdict};

    /// The two Slurm tasks of one segment-mode trial, run here as the array tasks run them:
    /// the inference leaves a root-only bundle and its store, the verification draws, opens and
    /// verifies, and writes a trial like `run --mode segment`'s.
    #[test]
    fn the_tasks_of_a_segment_mode_trial_commit_exchange_and_verify() {
        let gguf = crate::testutil::embedded_gguf();
        let dir = tempfile::tempdir().unwrap();
        let folder = JobFolder::new(dir.path().join("run"));
        let plan = JobPlan {
            format_version: SLURM_FORMAT_VERSION,
            experiment: "exp1".into(),
            trials: 1,
            verifiers: Some(2),
            max_new_tokens: Some(6),
            min_new_tokens: None,
            seed: None,
            gpu: None,
            binary: "/bin/verillm-tui".into(),
            model_dir: gguf.parent().unwrap().into(),
            threads: None,
            options: SlurmOptions::default(),
            created_at: 1_796_651_000,
            protocol: ProtocolOptions {
                mode: Some(VerificationMode::Segment),
                challenge_layers: Some(2),
                ..Default::default()
            },
        };
        folder.create(&plan, None).unwrap();
        // Read back as a task reads it: the protocol travels in plan.json.
        assert_eq!(folder.read_plan().unwrap().protocol, plan.protocol);
        let ws = Arc::new(Workspace::new(
            crate::experiment::config::ConfigSet::builtin().unwrap(),
            gguf.parent().unwrap().into(),
            dir.path().into(),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let infer = || {
            runtime.block_on(infer_task(
                ws.clone(),
                &folder,
                0,
                scratch.path(),
                EventSink::none(),
            ))
        };
        let bundle = folder.bundle_dir(0);
        assert_eq!(infer().unwrap(), TaskOutcome::Wrote(bundle.clone()));
        // Root-only: the manifest and the private store, no shipped states.
        assert!(!bundle.join(TENSORS_FILE).exists());
        assert!(bundle.join(STORE_DIR).join("column_0000.bin").is_file());
        let manifest = super::super::super::bundle::read_manifest(&bundle).unwrap();
        assert!(manifest.commitment.is_some());
        assert_eq!(infer().unwrap(), TaskOutcome::AlreadyThere(bundle.clone()));

        let verify = || runtime.block_on(verify_task(ws.clone(), &folder, 0, EventSink::none()));
        let target = folder.trial_result_path(0);
        assert_eq!(verify().unwrap(), TaskOutcome::Wrote(target.clone()));
        let trial: TrialResult = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
        assert_eq!(trial.summary.final_verdict, TrialVerdict::Pass);
        assert!(trial.complete && trial.request_checked);
        assert_eq!(trial.verifiers.len(), 2);
        let mut secrets = Vec::new();
        for v in &trial.verifiers {
            let s = v.segment.as_ref().expect("a segment record");
            assert_eq!(s.challenged_layers.len(), 2);
            assert_eq!(s.root, manifest.commitment.as_ref().unwrap().root);
            assert!(s.layers.iter().all(|l| l.pass && l.accepted == l.positions));
            assert!(s.full_prefill_s.is_some());
            secrets.push(s.secret.clone());
            // The opening it was verified from sits beside the bundle, answering its challenge.
            assert!(bundle
                .join("openings")
                .join(&v.name)
                .join(crate::engine::commitment::OPENING_FILE)
                .is_file());
        }
        assert_ne!(secrets[0], secrets[1]);

        // A verification task run again once its result is gone may not draw again: that
        // would let whoever holds the folder pick among challenges.
        std::fs::remove_file(&target).unwrap();
        let error = format!("{:#}", verify().unwrap_err());
        assert!(error.contains("already drawn"), "{error}");
    }
}
