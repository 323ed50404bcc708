//! A fuzz-style test over bundle manifests: a few hundred seeded random mutations of a valid
//! manifest, each judged as `verify` judges an untrusted bundle. Every outcome must be either a
//! verdict on the intact bundle (what was verified unchanged) or a clear error, never a panic,
//! and never a forged string shown as the inference's prompt or output.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::bundle::{read_manifest, read_states, write_bundle, MANIFEST_FILE, TENSORS_FILE};
use super::config::Role;
use super::config::{ConfigSet, LayerSelection};
use super::plan::TrialPlan;
use super::trial::{check_same_model, derive_texts, infer_trial, verify_trial, VerifySettings};
use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EventSink};
use crate::engine::sampling::SamplingParams;
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::record::results::{PromptInfo, TrialResult, TrialVerdict};
use crate::stats::policy::PolicyConfig;

const MARKER: &str = "FORGED-transfer-$1M";

/// Every path to a value in `value` (object keys and array indices), the root excluded.
fn paths(value: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                prefix.push(Value::String(key.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                prefix.push(Value::from(index));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn step<'a>(value: &'a mut Value, key: &Value) -> &'a mut Value {
    match key {
        Value::String(k) => &mut value[k.as_str()],
        _ => &mut value[key.as_u64().unwrap() as usize],
    }
}

/// One random mutation at one random place; returns what was done, for the failure message.
fn mutate(manifest: &mut Value, rng: &mut rand::rngs::StdRng) -> String {
    let mut all = Vec::new();
    paths(manifest, &mut Vec::new(), &mut all);
    let path = all[rng.random_range(0..all.len())].clone();
    let (last, parent_path) = path.split_last().unwrap();
    let mut parent = &mut *manifest;
    for key in parent_path {
        parent = step(parent, key);
    }
    let kind = rng.random_range(0..11);
    let target = step(parent, last);
    let described = format!("{path:?} kind {kind} (was {})", {
        let s = target.to_string();
        s.chars().take(60).collect::<String>()
    });
    match kind {
        0 => *target = Value::String(MARKER.into()),
        1 => *target = Value::from(u64::MAX),
        2 => *target = Value::from(-1),
        3 => *target = Value::from(1e300),
        4 => *target = Value::Null,
        5 => match (parent, last) {
            (Value::Object(map), Value::String(key)) => {
                map.remove(key);
            }
            (Value::Array(items), index) => {
                items.remove(index.as_u64().unwrap() as usize);
            }
            _ => unreachable!(),
        },
        6 => match target {
            Value::String(s) => s.push_str(MARKER),
            Value::Number(n) => *target = Value::from(n.as_f64().unwrap_or(0.0) as i64 + 1),
            Value::Array(items) if !items.is_empty() => items.push(items[0].clone()),
            Value::Bool(b) => *b = !*b,
            other => *other = Value::String(MARKER.into()),
        },
        7 => {
            if let Value::Object(map) = parent {
                map.insert("unexpected".into(), Value::String(MARKER.into()));
            }
        }
        8 => *target = Value::from(0),
        9 => *target = Value::Bool(true),
        _ => *target = Value::String(format!("{MARKER}{}", "x".repeat(300))),
    }
    described
}

/// What `verify` does with an untrusted bundle, up to its verdict.
fn judge(
    ws: &Arc<Workspace>,
    role: &Role,
    sampling: &SamplingParams,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
) -> Result<TrialResult> {
    let manifest = read_manifest(dir)?;
    let model = ws.load(role)?;
    check_same_model(&manifest, &model)?;
    let texts = derive_texts(&manifest, &model)?;
    let states = read_states(dir, &manifest)?;
    let settings = VerifySettings {
        lazy: Vec::new(),
        verifiers: vec![role.clone()],
        policy: PolicyConfig::default(),
        cutoff: 0.95,
        expected: TrialVerdict::Pass,
        chunk: None,
        trust_native_claim: false,
        // The requester's sampling rule (as with `verify --request`), not the manifest's
        // claim: a mutated seed in the manifest must not change what the tokens are held to.
        token_sampling: Some(sampling.clone()),
    };
    let prompt = PromptInfo {
        category: String::new(),
        id: String::new(),
        text: texts.prompt,
    };
    runtime.block_on(verify_trial(
        ws.clone(),
        Arc::new(manifest),
        Arc::new(states),
        &settings,
        prompt,
        EventSink::none(),
        CancelToken::new(),
    ))
}

#[test]
fn mutated_manifests_get_a_verdict_on_the_intact_bundle_or_a_clear_error() {
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
    let plan = TrialPlan {
        experiment: "exp1".into(),
        trial: 0,
        prompt: PromptInfo {
            category: "short".into(),
            id: "fuzz".into(),
            text: "Name a color.".into(),
        },
        messages: vec![("user".into(), "Name a color.".into())],
        inference: role.clone(),
        verifiers: vec![role.clone()],
        sampling: SamplingParams {
            max_new_tokens: 6,
            ..SamplingParams::default()
        },
        policy: PolicyConfig::default(),
        cutoff: 0.95,
        expected: TrialVerdict::Pass,
        chunk: None,
        spec_layers: LayerSelection::Every(8),
        segment: None,
        nonce: None,
        cheat: None,
        lazy_verifiers: Vec::new(),
    };
    let (manifest, states) =
        infer_trial(&ws, &plan, None, &EventSink::none(), &CancelToken::new()).unwrap();
    let honest_dir = data.path().join("honest");
    write_bundle(&honest_dir, manifest.clone(), &states).unwrap();
    let honest: Value =
        serde_json::from_slice(&std::fs::read(honest_dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let intact = judge(&ws, &role, &plan.sampling, &honest_dir, &runtime).unwrap();
    assert_eq!(intact.summary.final_verdict, TrialVerdict::Pass);
    let tokenizer = ws.load(&role).unwrap().tokenizer;

    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let (mut verdicts, mut errors) = (0, 0);
    for round in 0..300 {
        let mut mutated = honest.clone();
        let what = mutate(&mut mutated, &mut rng);
        let dir = data.path().join(format!("m{round}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(honest_dir.join(TENSORS_FILE), dir.join(TENSORS_FILE)).unwrap();
        std::fs::write(
            dir.join(MANIFEST_FILE),
            serde_json::to_vec(&mutated).unwrap(),
        )
        .unwrap();
        match judge(&ws, &role, &plan.sampling, &dir, &runtime) {
            Ok(result) => {
                verdicts += 1;
                // What is shown is what its own tokenizer makes of the verified ids.
                let shown = &result.inference.output_text;
                assert_eq!(
                    shown,
                    &tokenizer
                        .decode_for_display(&result.inference.output_ids)
                        .unwrap(),
                    "{what}"
                );
                assert!(
                    !shown.contains(MARKER) && !result.prompt.text.contains(MARKER),
                    "{what}: a forged text is shown"
                );
                if result.inference.output_ids == manifest.output_ids {
                    // The bundle that was verified is the intact one: same verdict, same texts.
                    assert_eq!(result.summary.final_verdict, TrialVerdict::Pass, "{what}");
                    assert_eq!(shown, &intact.inference.output_text, "{what}");
                    assert_eq!(result.prompt.text, intact.prompt.text, "{what}");
                } else {
                    assert_eq!(result.summary.final_verdict, TrialVerdict::Reject, "{what}");
                }
            }
            Err(error) => {
                errors += 1;
                let message = format!("{error:#}");
                // Clear: short, and saying which file (or bundle) it is about.
                assert!(
                    message.len() < 2048 && !message.trim().is_empty(),
                    "{what}: {message}"
                );
                assert!(
                    message.contains("manifest.json")
                        || message.contains(TENSORS_FILE)
                        || message.contains("the bundle"),
                    "{what}: an error that does not say what it is about: {message}"
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!("{verdicts} verdicts, {errors} errors");
    // Both outcomes occur: the mutations reach fields that matter and fields that do not.
    assert!(
        verdicts > 10 && errors > 100,
        "{verdicts} verdicts, {errors} errors"
    );
}
