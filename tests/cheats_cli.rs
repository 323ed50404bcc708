//! The cheat experiments end to end through the binary: a cheat's bundle is caught where the
//! physics allows (skip-layer in the middle: the states after it; replay: the tokens), and a
//! lazy verifier PASSes the known-bad bundles the requester planted, so it is caught.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verillm-tui"))
        .args(args)
        .env_remove("VERILLM_CONFIG_DIR")
        .env("RAYON_NUM_THREADS", "1")
        .env("VERILLM_DATA_DIR", data)
        .output()
        .expect("spawn verillm-tui")
}

fn trials(out_dir: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("trial_")
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn cheats_are_caught_where_they_change_what_is_checked() {
    let data = tempfile::tempdir().unwrap();
    // Layer 15 skipped: layer 8 (before it) is accepted at every position, 16 and 24 are not.
    let out_dir = data.path().join("skip");
    let out = run(
        &[
            "run",
            "cheat-skip-mid",
            "--trials",
            "1",
            "--max-tokens",
            "12",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        data.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trial = &trials(&out_dir)[0];
    assert_eq!(trial["summary"]["final_verdict"], "REJECT");
    for verifier in trial["verifiers"].as_array().unwrap() {
        for check in verifier["statistics"]["checks"].as_array().unwrap() {
            let layer = check["layer"].as_u64().unwrap();
            assert_eq!(check["accept"], layer < 16, "{check}");
        }
    }

    // Replay: every state is an honest prefill's, so every state check passes; the q4_0
    // tokens are what the token checks reject.
    let out_dir = data.path().join("replay");
    let out = run(
        &[
            "run",
            "cheat-replay",
            "--trials",
            "1",
            "--max-tokens",
            "24",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        data.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trial = &trials(&out_dir)[0];
    assert_eq!(trial["summary"]["final_verdict"], "REJECT");
    for verifier in trial["verifiers"].as_array().unwrap() {
        assert_eq!(verifier["statistics"]["summary"]["accept_rate"], 1.0);
        assert_eq!(verifier["token_checks"]["pass"], false, "{verifier}");
    }
}

#[test]
fn a_lazy_verifier_passes_the_planted_bundles_and_is_caught() {
    let data = tempfile::tempdir().unwrap();
    let run_audit = |experiment: &str| {
        let out_dir = data.path().join(experiment);
        let out = run(
            &[
                "run",
                experiment,
                "--trials",
                "8",
                "--max-tokens",
                "8",
                "--out",
                out_dir.to_str().unwrap(),
            ],
            data.path(),
        );
        (out, trials(&out_dir))
    };
    // Planted by the seeded draw (seed 42, probability 0.25): the same trials both times.
    let planted = |trials: &[Value]| -> Vec<u64> {
        trials
            .iter()
            .filter(|t| t["summary"]["expected_verdict"] == "REJECT")
            .map(|t| t["trial"].as_u64().unwrap())
            .collect()
    };
    let (lazy_out, lazy) = run_audit("cheat-lazy-verifier");
    let (honest_out, honest) = run_audit("control-lazy-audit");
    assert!(!planted(&lazy).is_empty(), "no bundle planted in 8 trials");
    assert_eq!(planted(&lazy), planted(&honest));
    // The lazy verifiers PASS everything: each planted trial misses its expectation (exit 3).
    assert_eq!(lazy_out.status.code(), Some(3));
    for t in &lazy {
        assert_eq!(t["summary"]["final_verdict"], "PASS");
    }
    // Honest verifiers reject exactly the planted bundles.
    assert!(
        honest_out.status.success(),
        "{}",
        String::from_utf8_lossy(&honest_out.stderr)
    );
    for t in &honest {
        assert_eq!(t["summary"]["expectation_held"], true, "{t}");
    }
}
