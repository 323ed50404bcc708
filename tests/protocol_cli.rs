//! `run --mode segment` through the real binary: in one process, and across machines with
//! `--step infer|challenge|open|verify` (the opening travels, the store does not). What each
//! verifier drew is in its result with the secret that drew it; full-mode files carry no
//! segment field; an opening answering another verifier's challenge is refused.

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

fn ok(args: &[&str], data: &Path) -> Output {
    let out = run(args, data);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The layer draw of docs/commitment.md, written again from the document.
fn draw_layers(root: &str, nonce: &str, secret: &str, n: usize, count: usize) -> Vec<usize> {
    let mut seed_input = b"verillm-challenge-v1".to_vec();
    seed_input.extend(unhex(root));
    seed_input.extend(unhex(nonce));
    seed_input.extend(unhex(secret));
    let seed = sha256(&seed_input);
    let mut left: Vec<usize> = (0..n).collect();
    let mut picked = Vec::new();
    for k in 0..count as u32 {
        let mut block = seed.clone();
        block.push(b'L');
        block.extend(k.to_le_bytes());
        let u = u64::from_le_bytes(sha256(&block)[..8].try_into().unwrap());
        picked.push(left.remove((u % left.len() as u64) as usize));
    }
    picked.sort_unstable();
    picked
}

#[test]
fn run_in_segment_mode_records_each_verifiers_own_challenge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = d.join("seg");
    ok(
        &[
            "run",
            "exp1",
            "--mode",
            "segment",
            "--challenge-layers",
            "2",
            "--verifiers",
            "2",
            "--trials",
            "1",
            "--max-tokens",
            "8",
            "--out",
            out.to_str().unwrap(),
        ],
        d,
    );
    let trial = json(&out.join("trial_000.json"));
    assert_eq!(trial["summary"]["final_verdict"], "PASS");
    let verifiers = trial["verifiers"].as_array().unwrap();
    // --verifiers is honoured in segment mode.
    assert_eq!(verifiers.len(), 2);
    let mut columns = Vec::new();
    let mut secrets = Vec::new();
    for v in verifiers {
        let s = &v["segment"];
        let layers: Vec<usize> = s["challenged_layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(layers.len(), 2);
        // Anyone given the revealed secret recomputes the draw.
        let secret = s["secret"].as_str().unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(
            layers,
            draw_layers(
                s["root"].as_str().unwrap(),
                s["nonce"].as_str().unwrap(),
                secret,
                30,
                2
            )
        );
        secrets.push(secret.to_string());
        // Column 0 and the columns l and l + 1 of each layer at every position, the final
        // column at every generated one: every row proven.
        let positions = s["embedding_rows"].as_u64().unwrap();
        assert!(s["proofs_checked"].as_u64().unwrap() >= 3 * positions);
        assert!(s["bytes_received"].as_u64().unwrap() > 3 * positions * 576 * 4);
        for l in s["layers"].as_array().unwrap() {
            assert_eq!(l["positions"], positions);
            assert_eq!(l["accepted"], positions);
            assert!(l["recompute_s"].as_f64().unwrap() > 0.0);
        }
        // The checks at generated positions sit at hidden-state index l + 1.
        let checks = v["statistics"]["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 2 * 8);
        for c in checks {
            let column = c["layer"].as_u64().unwrap() as usize;
            assert!(layers.contains(&(column - 1)), "{column} vs {layers:?}");
            columns.push(column);
        }
        assert_eq!(v["token_checks"]["count"], 8);
        // The reference full prefill, timed once for the role both verifiers share, beside
        // the segment time and its ratios.
        let full = s["full_prefill_s"].as_f64().unwrap();
        assert!(full > 0.0);
        assert_eq!(
            s["full_prefill_s"],
            verifiers[0]["segment"]["full_prefill_s"]
        );
        let time = s["time_s"].as_f64().unwrap();
        let ratio = s["segment_to_full_prefill"].as_f64().unwrap();
        assert!(
            (ratio - time / full).abs() < 1e-9,
            "{ratio} vs {time} / {full}"
        );
        let per_layer = s["recompute_s"].as_f64().unwrap() / 2.0 / full;
        assert!((s["layer_to_full_prefill"].as_f64().unwrap() - per_layer).abs() < 1e-9);
        assert_eq!(v["complete"], true);
    }
    assert_ne!(secrets[0], secrets[1], "each verifier draws its own secret");
    columns.sort_unstable();
    columns.dedup();
    let sampled: Vec<usize> = trial["sampled_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(sampled, columns);
    // No opening is left behind in the results.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".openings")),
        "{names:?}"
    );

    // Full mode: no segment field at all.
    let full = d.join("full");
    ok(
        &[
            "run",
            "exp1",
            "--verifiers",
            "1",
            "--trials",
            "1",
            "--max-tokens",
            "4",
            "--out",
            full.to_str().unwrap(),
        ],
        d,
    );
    let text = std::fs::read_to_string(full.join("trial_000.json")).unwrap();
    assert!(!text.contains("\"segment\""), "{text}");
    // The cheap path: no reference prefill, no such fields.
    let cheap = d.join("cheap");
    ok(
        &[
            "run",
            "exp1",
            "--mode",
            "segment",
            "--no-reference-prefill",
            "--verifiers",
            "1",
            "--trials",
            "1",
            "--max-tokens",
            "4",
            "--out",
            cheap.to_str().unwrap(),
        ],
        d,
    );
    let text = std::fs::read_to_string(cheap.join("trial_000.json")).unwrap();
    assert!(text.contains("\"challenged_layers\""), "{text}");
    assert!(!text.contains("full_prefill"), "{text}");
    // Segment options without segment mode are refused, naming the flag.
    let refused = run(
        &["run", "exp1", "--challenge-layers", "2", "--trials", "1"],
        d,
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--mode segment"));
}

#[test]
fn the_opening_travels_between_machines_and_must_answer_the_verifiers_own_challenge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bundles = d.join("bundles");
    let b = bundles.to_str().unwrap();
    let common = ["--trials", "1", "--max-tokens", "6", "--verifiers", "2"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["run", "exp1"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(common.iter().map(|s| s.to_string()));
        v
    };
    let call = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs, d)
    };
    let must = |args: Vec<String>| {
        let out = call(args.clone());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut infer = with(&["--step", "infer", "--mode", "segment"]);
    infer.extend(["--out".into(), b.into()]);
    must(infer);
    let trial = bundles.join("trial_000");
    assert!(trial.join("states").is_dir(), "the private store");
    // A root-only bundle: the manifest, a few KB, and no hidden-states file.
    assert!(!trial.join("hidden_states.safetensors").exists());
    let manifest_bytes = std::fs::metadata(trial.join("manifest.json"))
        .unwrap()
        .len();
    assert!(manifest_bytes < 8192, "{manifest_bytes} bytes");
    let mut challenge = with(&["--step", "challenge", "--mode", "segment"]);
    challenge.extend([
        "--from".into(),
        b.into(),
        "--challenge-layers".into(),
        "1".into(),
    ]);
    must(challenge.clone());
    // Drawn once: a second draw would let the inferencer pick the one it likes.
    let again = call(challenge);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already drawn"));
    let mut open = with(&["--step", "open"]);
    open.extend(["--from".into(), b.into()]);
    must(open);

    // The verifiers' machine receives the bundle and the openings, not the store.
    let remote = d.join("remote");
    let copy = remote.join("trial_000");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(trial.join("manifest.json"), copy.join("manifest.json")).unwrap();
    let copy_dir = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    };
    copy_dir(&trial.join("challenges"), &copy.join("challenges"));
    for v in ["verifier_1", "verifier_2"] {
        copy_dir(
            &trial.join("openings").join(v),
            &copy.join("openings").join(v),
        );
    }
    let r = remote.to_str().unwrap();
    let results = d.join("results");
    let mut verify = with(&["--step", "verify", "--mode", "segment"]);
    verify.extend([
        "--from".into(),
        r.into(),
        "--out".into(),
        results.to_str().unwrap().into(),
    ]);
    must(verify.clone());
    let result = json(&results.join("trial_000.json"));
    assert_eq!(result["summary"]["final_verdict"], "PASS");
    let drawn: Value = json(&copy.join("challenges").join("verifier_1.json"));
    assert_eq!(
        result["verifiers"][0]["segment"]["secret"], drawn["secret"],
        "the result states the secret the verifier drew with"
    );

    // An inferencer that answers verifier 1 with the opening made for verifier 2 (a challenge
    // it may like better) is refused by verifier 1.
    let (one, two) = (
        copy.join("openings/verifier_1"),
        copy.join("openings/verifier_2"),
    );
    let swap = copy.join("openings/swap");
    std::fs::rename(&one, &swap).unwrap();
    std::fs::rename(&two, &one).unwrap();
    std::fs::rename(&swap, &two).unwrap();
    let swapped = d.join("results2");
    verify.pop();
    verify.push(swapped.to_str().unwrap().into());
    let out = call(verify);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not the challenge it drew"), "{err}");
}

/// The five seed experiments reach the same verdicts in segment mode as in full mode, at the
/// default c (4 layers per verifier) and with a single challenged layer. exp4 (q4_0 weights
/// computed in bf16, judged in the bf16 tier) is what needs the layer-update check: with the
/// state check alone each layer accepted 0.74–1.0 of its positions at layers 2–28 and exp4
/// PASSed at c = 1 and at the default c (docs/commitment.md).
#[test]
fn the_seed_experiments_reach_the_same_verdicts_in_segment_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let verdicts = |mode: &[&str], out: &str| -> Vec<(String, String)> {
        let dir = d.join(out);
        let mut args = vec![
            "run",
            "all",
            "--trials",
            "1",
            "--verifiers",
            "1",
            "--max-tokens",
            "8",
            "--out",
            dir.to_str().unwrap(),
        ];
        args.extend(mode);
        // Exit 0: every experiment's expected verdict held.
        ok(&args, d);
        (1..=5)
            .map(|i| {
                let t = json(&dir.join(format!("exp{i}")).join("trial_000.json"));
                (
                    format!("exp{i}"),
                    t["summary"]["final_verdict"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let full = verdicts(&[], "full");
    let segment = verdicts(&["--mode", "segment"], "segment");
    assert_eq!(full, segment, "at the default c");
    // The default c is what the results record.
    let exp4 = json(&d.join("segment/exp4/trial_000.json"));
    assert_eq!(
        exp4["verifiers"][0]["segment"]["challenged_layers"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Each challenged layer carries its layer-update figures; in exp4 every one failed.
    for layer in exp4["verifiers"][0]["segment"]["layers"]
        .as_array()
        .unwrap()
    {
        assert_eq!(layer["pass"], false, "{layer}");
        let update = &layer["update"];
        assert!(
            update["z_median"].as_f64().unwrap() > update["limit"].as_f64().unwrap(),
            "{layer}"
        );
    }
    let single = verdicts(&["--mode", "segment", "--challenge-layers", "1"], "single");
    assert_eq!(full, single, "with one challenged layer");
    let expected: Vec<&str> = vec!["PASS", "PASS", "REJECT", "REJECT", "REJECT"];
    assert_eq!(
        full.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn a_root_only_bundle_is_verified_from_an_opening_and_only_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    ok(
        &[
            "request",
            "--prompt",
            "Name a color.",
            "--max-tokens",
            "6",
            "--out",
            &p("req.json"),
        ],
        d,
    );
    ok(
        &[
            "infer",
            "--request",
            &p("req.json"),
            "--root-only",
            "--out",
            &p("bundle"),
        ],
        d,
    );
    let mut shipped: Vec<String> = std::fs::read_dir(d.join("bundle"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    shipped.sort();
    // The manifest travels; `states/` is the inferencer's private store.
    assert_eq!(shipped, ["manifest.json", "states"]);
    let full = run(&["verify", &p("bundle"), "--request", &p("req.json")], d);
    assert!(!full.status.success());
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(
        err.contains("root-only bundle ships no hidden states"),
        "{err}"
    );
    std::fs::write(d.join("secret"), b"another verifier's own secret").unwrap();
    ok(
        &[
            "challenge",
            &p("bundle"),
            "--secret-file",
            &p("secret"),
            "--layers",
            "2",
            "--out",
            &p("ch.json"),
        ],
        d,
    );
    ok(
        &[
            "open",
            &p("bundle"),
            "--challenge",
            &p("ch.json"),
            "--out",
            &p("opening"),
        ],
        d,
    );
    let out = ok(
        &[
            "verify",
            &p("bundle"),
            "--request",
            &p("req.json"),
            "--opening",
            &p("opening"),
            "--json",
        ],
        d,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "PASS");
    assert_eq!(v["challenged_layers"].as_array().unwrap().len(), 2);
    // The reference full prefill beside the segment time, and its ratio.
    let full = v["full_prefill_s"].as_f64().unwrap();
    assert!(full > 0.0);
    let ratio = v["segment_to_full_prefill"].as_f64().unwrap();
    assert!((ratio - v["time_s"].as_f64().unwrap() / full).abs() < 1e-9);
    let text = ok(
        &[
            "verify",
            &p("bundle"),
            "--request",
            &p("req.json"),
            "--opening",
            &p("opening"),
            "--no-reference-prefill",
        ],
        d,
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("segment verification"), "{text}");
    assert!(!text.contains("full prefill"), "{text}");
}
