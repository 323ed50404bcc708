//! End-to-end tests of the headless command line on the embedded model: each runs the real
//! binary in its own process, with its own data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verillm-tui"));
    c.env_remove("VERILLM_CONFIG_DIR");
    // Tests run side by side: one compute thread each keeps them from oversubscribing the
    // cores (results do not depend on the thread count).
    c.env("RAYON_NUM_THREADS", "1");
    c
}

fn run_ok(args: &[&str], data: &Path) -> Output {
    let out = bin()
        .args(args)
        .env("VERILLM_DATA_DIR", data)
        .output()
        .expect("spawn verillm-tui");
    assert!(
        out.status.success(),
        "verillm-tui {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_err(args: &[&str], data: &Path) -> String {
    let out = bin()
        .args(args)
        .env("VERILLM_DATA_DIR", data)
        .output()
        .expect("spawn verillm-tui");
    assert!(!out.status.success(), "verillm-tui {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn trial_files(summary_dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(summary_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("trial_")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn only_run_dir(data: &Path, experiment: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(data.join(experiment))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn every_experiment_gives_its_expected_verdict_on_every_trial() {
    let data = tempfile::tempdir().unwrap();
    let out = run_ok(
        &[
            "run",
            "all",
            "--trials",
            "2",
            "--max-tokens",
            "64",
            "--json",
        ],
        data.path(),
    );
    let summaries = json(&out);
    let summaries = summaries.as_array().expect("one summary per experiment");
    assert_eq!(summaries.len(), 5);
    for s in summaries {
        let name = s["experiment"].as_str().unwrap();
        let expected = s["expected_verdict"].as_str().unwrap();
        assert_eq!(s["aggregate"]["expectation_rate"], 1.0, "{name}: {s}");
        let run_dir = only_run_dir(data.path(), name);
        assert!(!run_dir.to_string_lossy().contains(':'));
        let trials = trial_files(&run_dir);
        assert_eq!(trials.len(), 2, "{name}");
        for t in &trials {
            assert_eq!(t["summary"]["final_verdict"], expected, "{name}");
            assert_eq!(t["verifiers"].as_array().unwrap().len(), 3);
            for v in t["verifiers"].as_array().unwrap() {
                assert!(v["overhead"]["percentage"].as_f64().unwrap() > 0.0);
                assert!(v["statistics"]["summary"]["total_checks"].as_u64().unwrap() > 0);
            }
        }
        match name {
            "exp1" => {
                assert_eq!(
                    s["aggregate"]["avg_accept_rate"], 1.0,
                    "exp1 must accept every check"
                );
                for t in &trials {
                    assert!(t["inference"]["generated_tokens"].as_u64().unwrap() >= 16);
                    for v in t["verifiers"].as_array().unwrap() {
                        assert_eq!(v["statistics"]["summary"]["accept_rate"], 1.0);
                        assert_eq!(v["verdict"], "PASS");
                    }
                }
            }
            "exp2" => assert!(
                s["pairing"].as_str().unwrap().contains("bf16"),
                "exp2 states its pairing: {}",
                s["pairing"]
            ),
            _ => {
                assert_eq!(s["aggregate"]["detection_rate"], 1.0, "{name}");
                for t in &trials {
                    for v in t["verifiers"].as_array().unwrap() {
                        assert_eq!(v["verdict"], "FAIL", "{name}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_bundle_written_by_one_process_is_verified_by_another_and_tampering_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let bundle = data.path().join("bundle");
    let b = bundle.to_str().unwrap();
    run_ok(
        &[
            "infer",
            "--prompt",
            "Name three prime numbers.",
            "--max-tokens",
            "24",
            "--layers",
            "8,16,30",
            "--out",
            b,
        ],
        data.path(),
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["layers"], serde_json::json!([8, 16, 30]));
    let verified = json(&run_ok(
        &["verify", b, "--layers", "8,16,30", "--json"],
        data.path(),
    ));
    assert_eq!(verified["summary"]["final_verdict"], "PASS");
    for v in verified["verifiers"].as_array().unwrap() {
        assert_eq!(v["statistics"]["summary"]["accept_rate"], 1.0);
        assert_eq!(v["cutoff"], 0.95);
    }
    // The verifier, not the bundle, says which layers must be committed: by default those
    // `infer` records (every:8), of which this bundle lacks 24.
    let err = run_err(&["verify", b], data.path());
    assert!(
        err.contains("requires [8, 16, 24]") && err.contains("[24] are missing"),
        "{err}"
    );
    // Required layers beyond the model, or none at all, are errors, never dropped silently.
    let err = run_err(&["verify", b, "--layers", "8,99"], data.path());
    assert!(
        err.contains("--layers: layer 99 is beyond this 30-layer model"),
        "{err}"
    );
    let err = run_err(&["verify", b, "--layers", "every:99"], data.path());
    assert!(err.contains("select no checked layer"), "{err}");
    // An experiment's judgement: its cutoff (exp5: 0.8) and YAML thresholds, for a bundle
    // made as its inferencer runs (full, f32).
    let verified = json(&run_ok(
        &[
            "verify",
            b,
            "--experiment",
            "exp5",
            "--layers",
            "8,16,30",
            "--verifiers",
            "1",
            "--json",
        ],
        data.path(),
    ));
    assert_eq!(verified["verifiers"][0]["cutoff"], 0.8);
    // exp2's inferencer computes in bf16: an f32 bundle is not what it admits (and a bf16
    // one would not be what exp1 admits: the declared dtype picks the tier).
    let err = run_err(
        &["verify", b, "--experiment", "exp2", "--layers", "8,16,30"],
        data.path(),
    );
    assert!(
        err.contains("declares precision full in f32, but exp2's inferencer runs full in bf16")
            && err.contains("pass the same --gpu"),
        "{err}"
    );
    let err = run_err(&["verify", b, "--experiment", "exp9"], data.path());
    assert!(
        err.contains("--experiment exp9") && err.contains("exp1"),
        "{err}"
    );

    // A manifest claiming more tokens than the model's context is refused before its hidden
    // states are read (here a FIFO, which reading would block on): a sparse file of the
    // claimed size cost gigabytes of memory first.
    let long = data.path().join("long");
    std::fs::create_dir_all(&long).unwrap();
    let mut m = manifest.clone();
    let tokens = 10_000u64;
    m["output_ids"] = Value::from(vec![1u32; tokens as usize]);
    m["layers"] = serde_json::json!([8, 16, 24]);
    m["hidden_states"]["bytes"] = Value::from(3 * tokens * 576 * 4 + 200);
    std::fs::write(long.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let fifo = long.join("hidden_states.safetensors");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let err = run_err(&["verify", long.to_str().unwrap()], data.path());
    assert!(err.contains("more than the 8192 positions"), "{err}");
    // A claimed size that is not that of the layers × tokens × hidden values is refused too.
    m["hidden_states"]["bytes"] = Value::from(4 * tokens * 576 * 4);
    std::fs::write(long.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let err = run_err(&["verify", long.to_str().unwrap()], data.path());
    assert!(
        err.contains("is not the size of 3 layers × 10000 tokens"),
        "{err}"
    );

    // A bundle whose model claims another shape (which would choose the layers an
    // experiment checks) is refused: by the registry before loading, by the weights after.
    let shaped = data.path().join("shaped");
    std::fs::create_dir_all(&shaped).unwrap();
    let mut m = manifest.clone();
    m["model"]["n_layers"] = Value::from(31);
    std::fs::write(
        shaped.join("manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        bundle.join("hidden_states.safetensors"),
        shaped.join("hidden_states.safetensors"),
    )
    .unwrap();
    let s = shaped.to_str().unwrap();
    let err = run_err(&["verify", s, "--layers", "8,16,30"], data.path());
    assert!(err.contains("claims 31 layers"), "{err}");
    let err = run_err(
        &[
            "verify",
            s,
            "--layers",
            "8,16,30",
            "--model",
            "smollm2-135m",
        ],
        data.path(),
    );
    assert!(
        err.contains(s) && err.contains("model.n_layers 31 / model.hidden 576 are not those"),
        "{err}"
    );

    // Another model: the bundle claims weights this verifier does not have.
    let other = data.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut m = manifest.clone();
    m["model"]["weights_sha256"] = Value::String("0".repeat(64));
    std::fs::write(other.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    std::fs::copy(
        bundle.join("hidden_states.safetensors"),
        other.join("hidden_states.safetensors"),
    )
    .unwrap();
    let o = other.to_str().unwrap();
    let err = run_err(&["verify", o, "--layers", "8,16,30"], data.path());
    assert!(err.contains("different models"), "{err}");

    // The bundle's model name is never a path to open or a repo to download: only an id of
    // this machine's models.yaml, unless --model says otherwise.
    for name in ["/etc", "hf:someone/else"] {
        m["model"]["name"] = Value::String(name.into());
        std::fs::write(other.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        let err = run_err(&["verify", o, "--layers", "8,16,30"], data.path());
        assert!(err.contains(name) && err.contains("pass --model"), "{err}");
    }

    // Tampered hidden states: the checksum no longer matches.
    let tensors = bundle.join("hidden_states.safetensors");
    let mut bytes = std::fs::read(&tensors).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x40;
    std::fs::write(&tensors, bytes).unwrap();
    let err = run_err(&["verify", b, "--layers", "8,16,30"], data.path());
    assert!(err.contains("sha256") && err.contains("altered"), "{err}");

    // A manifest pointing outside its bundle is refused before anything is opened.
    let mut m = manifest;
    m["hidden_states"]["file"] = Value::String("../../etc/passwd".into());
    std::fs::write(
        bundle.join("manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    let err = run_err(&["verify", b], data.path());
    assert!(err.contains("only `hidden_states.safetensors`"), "{err}");
}

#[test]
fn quantized_inference_is_rejected_by_full_precision_verifiers() {
    let data = tempfile::tempdir().unwrap();
    let bundle = data.path().join("q4");
    let b = bundle.to_str().unwrap();
    run_ok(
        &[
            "infer",
            "--precision",
            "q4_0",
            "--prompt",
            "Explain what a hash map is.",
            "--max-tokens",
            "32",
            "--out",
            b,
        ],
        data.path(),
    );
    let out = bin()
        .args(["verify", b, "--json"])
        .env("VERILLM_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "REJECT exits with 3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["summary"]["final_verdict"], "REJECT");
    for v in v["verifiers"].as_array().unwrap() {
        assert_eq!(v["verdict"], "FAIL");
        assert!(v["statistics"]["summary"]["accept_rate"].as_f64().unwrap() < 0.5);
    }
}

/// `native` precision is judged in the bf16 tier (quantized kernels round activations), but in
/// a bundle it is one string: a q8 cheat relabelled `native` must not get the looser tier
/// unless the verifier grants it, and an experiment holds bundles to its own inferencer.
#[test]
fn a_claim_of_native_precision_is_trusted_only_where_granted() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let infer = |precision: &str, out: &Path| {
        run_ok(
            &[
                "infer",
                "--precision",
                precision,
                "--prompt",
                "Explain what a hash map is.",
                "--max-tokens",
                "24",
                "--temperature",
                "0",
                "--out",
                out.to_str().unwrap(),
            ],
            d,
        );
    };
    let verify = |bundle: &Path, extra: &[&str]| -> Value {
        let out = bin()
            .args([
                "verify",
                bundle.to_str().unwrap(),
                "--verifiers",
                "1",
                "--json",
            ])
            .args(extra)
            .env("VERILLM_DATA_DIR", d)
            .output()
            .unwrap();
        let v = json(&out);
        v["verifiers"][0].clone()
    };
    let cheat = d.join("set").join("trial_000");
    infer("q8_0", &cheat);
    let manifest_path = cheat.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["precision"] = Value::String("native".into());
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let judged = verify(&cheat, &[]);
    assert_eq!(
        (judged["tier"].as_str(), judged["verdict"].as_str()),
        (Some("f32"), Some("FAIL"))
    );
    // Granted, the claim buys the bf16 tier and its documented blind spot (8-bit weights).
    let granted = verify(&cheat, &["--native-inference"]);
    assert_eq!(granted["tier"], "bf16", "{granted}");
    let err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            d.join("set").to_str().unwrap(),
        ],
        d,
    );
    assert!(
        err.contains("declares precision native in f32, but exp1's inferencer runs full in f32"),
        "{err}"
    );
    // A q8 cheat computed in bf16 (the declared dtype picks the tier) and labelled `full` is
    // held to exp1's inferencer too: it computes in f32. (It passed, in the bf16 tier.)
    let bf16_cheat = d.join("set-bf16").join("trial_000");
    run_ok(
        &[
            "infer",
            "--precision",
            "q8_0",
            "--device",
            "cpu:bf16",
            "--prompt",
            "Explain what a hash map is.",
            "--max-tokens",
            "16",
            "--out",
            bf16_cheat.to_str().unwrap(),
        ],
        d,
    );
    let path = bf16_cheat.join("manifest.json");
    let mut relabelled: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    relabelled["precision"] = Value::String("full".into());
    std::fs::write(&path, serde_json::to_vec(&relabelled).unwrap()).unwrap();
    let err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            d.join("set-bf16").to_str().unwrap(),
        ],
        d,
    );
    assert!(
        err.contains("declares precision full in bf16, but exp1's inferencer runs full in f32"),
        "{err}"
    );

    // An honest native bundle passes where the verifier grants the claim, or runs natively
    // itself (its own choice of the bf16 tier).
    let honest = d.join("native");
    infer("native", &honest);
    let granted = verify(&honest, &["--native-inference"]);
    assert_eq!(
        (granted["tier"].as_str(), granted["verdict"].as_str()),
        (Some("bf16"), Some("PASS"))
    );
    let native_verifier = verify(&honest, &["--precision", "native"]);
    assert_eq!(native_verifier["verdict"], "PASS", "{native_verifier}");

    // Honest bundles made where the inferencer ran on its gpu_device (stood in for by the
    // profile `--gpu` forces) are admitted where they are verified, GPU or not: by run --step
    // verify from the experiment's gpu_device (cuda:0 computes in f16), and by verify
    // --experiment given the same --gpu.
    for (profile, set) in [("cpu:f16", "gpu-f16"), ("cpu:bf16", "gpu-bf16")] {
        let bundles = d.join(set);
        let b = bundles.to_str().unwrap();
        run_ok(
            &[
                "run",
                "exp1",
                "--gpu",
                profile,
                "--step",
                "infer",
                "--trials",
                "1",
                "--max-tokens",
                "8",
                "--out",
                b,
            ],
            d,
        );
        let trial = bundles.join("trial_000");
        let t = trial.to_str().unwrap();
        if profile == "cpu:f16" {
            let out = d.join(format!("{set}-verified"));
            run_ok(
                &[
                    "run",
                    "exp1",
                    "--step",
                    "verify",
                    "--from",
                    b,
                    "--verifiers",
                    "1",
                    // The request the inference served: same budget (and trials, seed).
                    "--trials",
                    "1",
                    "--max-tokens",
                    "8",
                    "--out",
                    out.to_str().unwrap(),
                ],
                d,
            );
        } else {
            let err = run_err(
                &["verify", t, "--experiment", "exp1", "--verifiers", "1"],
                d,
            );
            assert!(err.contains("pass the same --gpu"), "{err}");
            run_ok(
                &[
                    "verify",
                    t,
                    "--experiment",
                    "exp1",
                    "--gpu",
                    profile,
                    "--verifiers",
                    "1",
                ],
                d,
            );
        }
    }
}

#[test]
fn two_step_run_across_processes_equals_the_one_step_parallel_run() {
    let data = tempfile::tempdir().unwrap();
    for exp in ["exp1", "exp3"] {
        let bundles = data.path().join(format!("bundles-{exp}"));
        let one = data.path().join(format!("one-{exp}"));
        let two = data.path().join(format!("two-{exp}"));
        let args = ["--trials", "2", "--max-tokens", "32"];
        // The one-step run puts its two trials on two parallel jobs: same results regardless.
        run_ok(
            &[
                &["run", exp, "--jobs", "2", "--out", one.to_str().unwrap()],
                &args[..],
            ]
            .concat(),
            data.path(),
        );
        run_ok(
            &[
                &[
                    "run",
                    exp,
                    "--step",
                    "infer",
                    "--out",
                    bundles.to_str().unwrap(),
                ],
                &args[..],
            ]
            .concat(),
            data.path(),
        );
        assert!(bundles.join("trial_000").join("manifest.json").exists());
        // Verified against the requests the experiment makes with the same flags.
        run_ok(
            &[
                &[
                    "run",
                    exp,
                    "--step",
                    "verify",
                    "--from",
                    bundles.to_str().unwrap(),
                    "--out",
                    two.to_str().unwrap(),
                ],
                &args[..],
            ]
            .concat(),
            data.path(),
        );
        let (a, b) = (trial_files(&one), trial_files(&two));
        assert_eq!(a.len(), 2);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                x["inference"]["output_ids"], y["inference"]["output_ids"],
                "{exp}: same tokens"
            );
            assert_eq!(x["summary"]["final_verdict"], y["summary"]["final_verdict"]);
            for (vx, vy) in x["verifiers"]
                .as_array()
                .unwrap()
                .iter()
                .zip(y["verifiers"].as_array().unwrap())
            {
                assert_eq!(
                    vx["statistics"]["summary"]["accept_rate"],
                    vy["statistics"]["summary"]["accept_rate"]
                );
                let rel = |v: &Value| {
                    v["statistics"]["checks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["rel_l2"].clone())
                        .collect::<Vec<_>>()
                };
                assert_eq!(rel(vx), rel(vy), "{exp}: identical per-check metrics");
            }
        }
        // A second run (or bundle) into an occupied directory is refused before it computes
        // anything, and the first run's files stay as they were.
        let summary_before = std::fs::read(one.join("summary.json")).unwrap();
        let err = run_err(
            &["run", "exp3", "--out", one.to_str().unwrap()],
            data.path(),
        );
        assert!(
            err.contains("--out") && err.contains("already holds"),
            "{err}"
        );
        let err = run_err(
            &["infer", "--prompt", "x", "--out", bundles.to_str().unwrap()],
            data.path(),
        );
        assert!(err.contains("already holds"), "{err}");
        assert_eq!(
            std::fs::read(one.join("summary.json")).unwrap(),
            summary_before
        );
        assert_eq!(trial_files(&one).len(), 2);
    }

    // A set with a good bundle, a second claim to the same trial and a damaged bundle: the
    // good one is verified and summarized, the others named in the error, nothing overwritten.
    let bundles = data.path().join("bundles-exp1");
    let mixed = data.path().join("mixed");
    for (to, from) in [
        ("trial_000", "trial_000"),
        ("trial_001", "trial_000"),
        ("trial_002", "trial_001"),
    ] {
        std::fs::create_dir_all(mixed.join(to)).unwrap();
        for file in ["manifest.json", "hidden_states.safetensors"] {
            std::fs::copy(bundles.join(from).join(file), mixed.join(to).join(file)).unwrap();
        }
    }
    // A plain `infer` bundle committing to one shallow layer, where exp1 checks every 8th.
    run_ok(
        &[
            "infer",
            "--prompt",
            "Hi",
            "--max-tokens",
            "4",
            "--layers",
            "8",
            "--out",
            mixed.join("trial_003").to_str().unwrap(),
        ],
        data.path(),
    );
    let damaged = mixed.join("trial_002").join("hidden_states.safetensors");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&damaged, bytes).unwrap();
    // Entries named like bundles that are not plain directories are named, never skipped
    // silently: a link could lead anywhere, a file is no bundle.
    std::os::unix::fs::symlink(mixed.join("trial_000"), mixed.join("trial_009")).unwrap();
    std::fs::write(mixed.join("trial_010"), "junk").unwrap();
    let out_dir = data.path().join("mixed-out");
    let err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            mixed.to_str().unwrap(),
            "--trials",
            "2",
            "--max-tokens",
            "32",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        data.path(),
    );
    assert!(
        err.contains("5 of 6 bundles could not be verified"),
        "{err}"
    );
    for entry in ["trial_009", "trial_010"] {
        assert!(
            err.contains(&format!("{entry}: skipped: not a bundle directory")),
            "{err}"
        );
    }
    assert!(
        err.contains("trial_003") && err.contains("bundle records layers [8], but exp1 checks"),
        "{err}"
    );
    assert!(
        err.contains("trial_001") && err.contains("trial 0 is already taken by"),
        "{err}"
    );
    assert!(err.contains("trial_002") && err.contains("sha256"), "{err}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["complete"], false, "{summary}");
    assert_eq!(trial_files(&out_dir).len(), 1);

    // When no bundle can be verified, the run's own folder is not left behind empty.
    let only_bad = data.path().join("only-bad").join("trial_000");
    std::fs::create_dir_all(&only_bad).unwrap();
    for file in ["manifest.json", "hidden_states.safetensors"] {
        std::fs::copy(mixed.join("trial_002").join(file), only_bad.join(file)).unwrap();
    }
    let from = data.path().join("only-bad");
    let err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            from.to_str().unwrap(),
        ],
        data.path(),
    );
    assert!(err.contains("no bundle could be verified"), "{err}");
    // Verifiers on a backend this build lacks are refused before anything is read or made.
    let gpu_err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            from.to_str().unwrap(),
            "--gpu",
            "cuda:0",
        ],
        data.path(),
    );
    if !cfg!(feature = "cuda") {
        assert!(gpu_err.contains("no CUDA support"), "{gpu_err}");
    }
    let runs = std::fs::read_dir(data.path().join("exp1")).map_or(0, |d| d.count());
    assert_eq!(runs, 0, "{err}\n{gpu_err}");
}

#[test]
fn optimize_reports_percentiles_auc_and_a_yaml_snippet() {
    let data = tempfile::tempdir().unwrap();
    let out = run_ok(
        &[
            "optimize",
            "--experiment",
            "all",
            "--trials",
            "1",
            "--max-tokens",
            "24",
            "--json",
        ],
        data.path(),
    );
    let report = json(&out);
    let rel = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "rel_l2")
        .expect("rel_l2 reported");
    // Every per-check statistic is weighed, cosine and the ULP median included.
    let names: Vec<&str> = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metric"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pe",
            "pm",
            "pw",
            "mean_abs",
            "max_abs",
            "rel_l2",
            "cosine",
            "ulp_mean",
            "ulp_median"
        ]
    );
    for k in [
        "count", "mean", "std", "min", "max", "p50", "p90", "p95", "p99",
    ] {
        assert!(rel["honest"][k].is_number(), "honest {k}: {rel}");
        assert!(rel["cheat"][k].is_number(), "cheat {k}");
    }
    assert!(
        rel["auc"].as_f64().unwrap() > 0.9,
        "rel_l2 separates honest from q4: {}",
        rel["auc"]
    );
    let yaml = report["recommended_yaml"].as_str().unwrap();
    assert!(yaml.contains("rel_l2_max"), "{yaml}");
    let parsed: serde_yaml::Value = serde_yaml::from_str(yaml).expect("the snippet is valid YAML");
    // exp1 is judged in the f32 tier (drift ~1e-6), exp2 in bf16 (~1e-2): each tier's limit
    // comes from its own checks, not from all of them pooled (which gave f32 0.025).
    let f32_limit = parsed["policy"]["f32"]["rel_l2_max"].as_f64().unwrap();
    let bf16_limit = parsed["policy"]["bf16"]["rel_l2_max"].as_f64().unwrap();
    assert!(f32_limit < 1e-3 && bf16_limit > 1e-3, "{yaml}");
    let runs: Vec<PathBuf> = std::fs::read_dir(data.path().join("optimize"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    // The thresholds were tested on held-out trials (other seeds, other prompts), run into the
    // optimization's own folder.
    let held_out: Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("held_out.json")).unwrap()).unwrap();
    let used = held_out["trials"].as_u64().unwrap();
    let excluded = held_out["excluded_same_prompt"].as_u64().unwrap();
    assert_eq!(used + excluded, 5, "{held_out}");
    assert!(
        !held_out["tiers"].as_array().unwrap().is_empty(),
        "{held_out}"
    );
    assert!(runs[0]
        .join("held_out")
        .join("exp3")
        .join("summary.json")
        .is_file());

    // Every figure, drawn from this small real run: its optimization report and run summaries.
    let mut inputs = vec![runs[0].join("optimization.json")];
    for exp in ["exp1", "exp3"] {
        inputs.push(only_run_dir(data.path(), exp).join("summary.json"));
    }
    let plots = data.path().join("plots");
    let mut args = vec![
        "plot".to_string(),
        "--out".into(),
        plots.display().to_string(),
    ];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ok(&args, data.path());
    let written: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for kind in [
        "threshold_distributions",
        "heatmap_rel_l2",
        "accept_rates",
        "roc",
        "overhead",
    ] {
        assert!(
            names.iter().any(|n| n.contains(kind)),
            "no {kind} figure in {names:?}"
        );
    }
    for path in &written {
        let img = image::open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        assert!(
            img.width() >= 1600 && img.height() >= 1000,
            "{}: {}x{}",
            path.display(),
            img.width(),
            img.height()
        );
        let mut colours = std::collections::HashSet::new();
        for p in img.pixels().step_by(7) {
            colours.insert(p.0);
        }
        assert!(
            colours.len() > 8,
            "{}: only {} colours",
            path.display(),
            colours.len()
        );
    }
}

#[test]
fn doctor_reports_a_ready_machine_and_names_the_fix_for_a_broken_config() {
    let data = tempfile::tempdir().unwrap();
    let out = run_ok(&["doctor"], data.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("✅ embedded model") && text.contains("✅ plots can be drawn"),
        "{text}"
    );
    let bad = data.path().join("bad-config");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("experiments.yaml"),
        "experiments:\n  exp1: [not, a, mapping\n",
    )
    .unwrap();
    let out = bin()
        .args(["doctor", "--config-dir", bad.to_str().unwrap()])
        .env("VERILLM_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken configuration is critical");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("❌ configuration")
            && text.contains("experiments.yaml")
            && text.contains("fix:"),
        "{text}"
    );

    // Something unreadable where the model belongs is named as such: fetching cannot fix it.
    let odd = data.path().join("odd-models");
    std::fs::create_dir_all(odd.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let out = bin()
        .args(["doctor", "--model-dir", odd.to_str().unwrap()])
        .env("VERILLM_DATA_DIR", data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("is missing"), "{text}");
    assert!(text.contains("--model-dir"), "{text}");
}

/// Two fetches into one empty model folder at once (two consoles started together) both
/// succeed: each stages under names of its own and renames a checked file into place.
#[test]
fn two_fetches_at_once_both_succeed_and_leave_only_the_model() {
    let models = tempfile::tempdir().unwrap();
    let fetch = || {
        bin()
            .args([
                "fetch-model",
                "--model-dir",
                models.path().to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (fetch(), fetch());
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let left: Vec<String> = std::fs::read_dir(models.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["SmolLM2-135M-Instruct.Q4_1.gguf"]);
    run_ok(
        &["doctor", "--model-dir", models.path().to_str().unwrap()],
        models.path(),
    );
}

#[test]
fn malformed_arguments_name_what_is_wrong() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    // Each of these fails, some only once the model is loaded: none may leave its --out behind.
    let out = d.join("o");
    let o = out.to_str().unwrap();
    let err = run_err(
        &["infer", "--precision", "q3", "--prompt", "x", "--out", o],
        d,
    );
    assert!(err.contains("q3") && err.contains("--precision"), "{err}");
    let err = run_err(
        &["infer", "--max-tokens", "lots", "--prompt", "x", "--out", o],
        d,
    );
    assert!(
        err.contains("lots") && err.contains("--max-tokens"),
        "{err}"
    );
    let err = run_err(
        &["infer", "--layers", "every:0", "--prompt", "x", "--out", o],
        d,
    );
    assert!(err.contains("every:0"), "{err}");
    let err = run_err(&["infer", "--layers", "0", "--prompt", "x", "--out", o], d);
    assert!(err.contains("no checked layer"), "{err}");
    // Nothing to check once resolved against the model's 30 layers.
    let err = run_err(
        &["infer", "--layers", "every:99", "--prompt", "x", "--out", o],
        d,
    );
    assert!(err.contains("select no checked layer"), "{err}");
    let err = run_err(
        &["infer", "--layers", "8,99", "--prompt", "x", "--out", o],
        d,
    );
    assert!(
        err.contains("layer 99 is beyond this 30-layer model"),
        "{err}"
    );
    let err = run_err(&["run", "exp1", "--trials", "18446744073709551615"], d);
    assert!(
        err.contains("--trials 18446744073709551615: expected 1..=100000"),
        "{err}"
    );
    let err = run_err(
        &["infer", "--device", "tpu:0", "--prompt", "x", "--out", o],
        d,
    );
    assert!(err.contains("tpu:0"), "{err}");
    let err = run_err(&["infer", "--top-p", "1.5", "--prompt", "x", "--out", o], d);
    assert!(err.contains("top-p 1.5"), "{err}");
    assert!(
        !out.exists(),
        "a failed infer left {} behind",
        out.display()
    );
    let err = run_err(
        &["run", "exp1", "--min-tokens", "20", "--max-tokens", "4"],
        d,
    );
    assert!(
        err.contains("--min-tokens 20 exceeds the maximum of 4"),
        "{err}"
    );
    let err = run_err(&["run", "exp1", "--jobs", "0"], d);
    assert!(err.contains("--jobs 0"), "{err}");
    let err = run_err(&["run", "exp1", "--verifiers", "17"], d);
    assert!(err.contains("--verifiers 17: expected 1..=16"), "{err}");
    let err = run_err(&["run", "exp9"], d);
    assert!(err.contains("exp9") && err.contains("exp1"), "{err}");
    let err = run_err(&["verify", "/nonexistent/bundle"], d);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    let err = run_err(&["verify", "/tmp", "--cutoff", "1.5"], d);
    assert!(err.contains("--cutoff 1.5"), "{err}");
    let err = run_err(&["verify", "/tmp", "--cutoff", "1"], d);
    assert!(err.contains("--cutoff 1 must be in [0, 1)"), "{err}");
    // A bench size that cannot run is refused before anything is measured.
    let err = run_err(&["bench", "--ratio-at", "128,0"], d);
    assert!(err.contains("--ratio-at 0"), "{err}");
    let err = run_err(&["bench", "--long-prompt", "9000"], d);
    assert!(
        err.contains("--long-prompt 9000: at most 8191 tokens"),
        "{err}"
    );
    // Refused before the run creates its results directory.
    let err = run_err(&["run", "exp1", "--max-tokens", "0"], d);
    assert!(err.contains("--max-tokens 0"), "{err}");
    assert!(!d.join("exp1").exists(), "{err}");
    // `run all --out` checks every experiment's folder before the first one starts.
    let all_out = d.join("all-out");
    std::fs::create_dir_all(all_out.join("exp2").join("old")).unwrap();
    let err = run_err(&["run", "all", "--out", all_out.to_str().unwrap()], d);
    assert!(
        err.contains("exp2") && err.contains("already holds"),
        "{err}"
    );
    assert!(!all_out.join("exp1").exists(), "{err}");
    // A run whose only trial fails before saving anything leaves no empty run folder behind
    // and does not claim to have kept partial results.
    let err = run_err(&["run", "exp1", "--trials", "1", "--max-tokens", "9000"], d);
    assert!(err.contains("exceed the model's context"), "{err}");
    assert!(!err.contains("partial results kept"), "{err}");
    assert_eq!(std::fs::read_dir(d.join("exp1")).unwrap().count(), 0);
    let err = run_err(&["run", "exp1", "--config-dir", "/nonexistent/configs"], d);
    assert!(err.contains("/nonexistent/configs"), "{err}");
}

#[test]
fn tokenize_prints_the_reference_ids() {
    let data = tempfile::tempdir().unwrap();
    // Where the unit tests find the fixtures too: VERILLM_FIXTURES, else tests/fixtures.
    let fixtures = std::env::var_os("VERILLM_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        std::path::PathBuf::from,
    );
    let path = fixtures.join("smollm2-135m/tokenization.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "test fixture {}: {e} (see tests/fixtures/README.md)",
            path.display()
        )
    });
    let fixture: Value = serde_json::from_slice(&bytes).unwrap();
    let case = &fixture[1];
    let out = run_ok(&["tokenize", case["text"].as_str().unwrap()], data.path());
    let ids: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids, case["ids"]);
}

#[test]
fn gpu_flag_moves_the_gpu_roles_and_leaves_cross_device_verifiers() {
    // `--gpu` is how a GPU run picks its dtype; with a CPU profile it rehearses the same layout.
    let data = tempfile::tempdir().unwrap();
    for (experiment, profile, verifier_dtype) in
        [("exp1", "cpu:bf16", "bf16"), ("exp2", "cpu:f16", "f32")]
    {
        let out = run_ok(
            &[
                "run",
                experiment,
                "--gpu",
                profile,
                "--trials",
                "1",
                "--max-tokens",
                "8",
                "--json",
            ],
            data.path(),
        );
        let summary = json(&out);
        let role = |r: &Value| {
            format!(
                "{}:{}",
                r["device"].as_str().unwrap(),
                r["dtype"].as_str().unwrap()
            )
        };
        assert_eq!(role(&summary["inference"]), profile, "{summary}");
        for v in summary["verifiers"].as_array().unwrap() {
            assert_eq!(
                role(v),
                format!("cpu:{verifier_dtype}"),
                "{experiment}: {summary}"
            );
        }
        assert_eq!(summary["aggregate"]["expectation_rate"], 1.0, "{summary}");
    }
    let error = run_err(&["run", "exp1", "--gpu", "cuda:x"], data.path());
    assert!(error.contains("cuda:x"), "{error}");
}

#[test]
fn report_tabulates_each_run_from_its_files() {
    let data = tempfile::tempdir().unwrap();
    for experiment in ["exp1", "exp3"] {
        run_ok(
            &["run", experiment, "--trials", "2", "--max-tokens", "8"],
            data.path(),
        );
    }
    let out = run_ok(
        &["report", data.path().to_str().unwrap(), "--json"],
        data.path(),
    );
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        let name = row["experiment"].as_str().unwrap();
        // The worst relative L2 over every check, read back from the trial files.
        let trials = trial_files(only_run_dir(data.path(), name).as_path());
        let worst = trials
            .iter()
            .flat_map(|t| t["verifiers"].as_array().unwrap().clone())
            .flat_map(|v| v["statistics"]["checks"].as_array().unwrap().clone())
            .map(|c| c["rel_l2"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(row["rel_l2_max"].as_f64().unwrap(), worst, "{name}");
        assert_eq!(row["trials"], 2);
        match name {
            "exp1" => assert_eq!(
                (row["passed"].as_u64(), row["accept_rate"].as_f64()),
                (Some(2), Some(1.0))
            ),
            _ => assert_eq!(row["rejected"], 2, "{row}"),
        }
    }
    let table =
        String::from_utf8(run_ok(&["report", data.path().to_str().unwrap()], data.path()).stdout)
            .unwrap();
    assert!(
        table.contains(
            "| exp1 | same profile: cpu f32 full -> cpu f32 full | 2 | 1.000 | PASS 2/2 (PASS ✓) |"
        ),
        "{table}"
    );
    assert!(table.contains("REJECT 2/2 (REJECT ✓)"), "{table}");
    // A broken summary among good ones is named on stderr; the good runs are still reported.
    let broken = data.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("summary.json"), "{").unwrap();
    let out = run_ok(&["report", data.path().to_str().unwrap()], data.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipped:") && stderr.contains("broken"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let error = run_err(
        &["report", data.path().join("nowhere").to_str().unwrap()],
        data.path(),
    );
    assert!(error.contains("nowhere"), "{error}");
}

/// The H100 results in docs/gpu-h100 (the only GPU evidence this project has) must stay readable
/// by every later version: `report` over its trial files reproduces the table committed beside
/// them, and every run's verdicts are the ones the GPU issue expects.
#[test]
fn the_committed_h100_results_still_load_and_report_as_documented() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gpu-h100");
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(docs.join("results.tar.gz"))
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .expect("this test unpacks docs/gpu-h100/results.tar.gz with the system `tar` (gzip)");
    assert!(status.success());
    let data = unpacked.path().join("results/data");
    let out = run_ok(&["report", data.to_str().unwrap()], unpacked.path());
    let table = String::from_utf8(out.stdout).unwrap();
    let documented = std::fs::read_to_string(docs.join("report.md")).unwrap();
    assert_eq!(table, documented);
    let rows = json(&run_ok(
        &["report", data.to_str().unwrap(), "--json"],
        unpacked.path(),
    ));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 10, "{rows:?}");
    for row in rows {
        let expected_pass = matches!(row["experiment"].as_str(), Some("exp1" | "exp2"));
        let verdicts = if expected_pass {
            &row["passed"]
        } else {
            &row["rejected"]
        };
        assert_eq!(verdicts, 3, "{row}");
    }
}

/// Writes `manifest` into a copy of `bundle` at `dir` (the tensors copied unchanged, or replaced
/// by `tensors` with the manifest's checksum and size updated to match).
fn bundle_copy(bundle: &Path, dir: &Path, manifest: &Value, tensors: Option<&[u8]>) {
    use sha2::{Digest, Sha256};
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = manifest.clone();
    let target = dir.join("hidden_states.safetensors");
    match tensors {
        Some(bytes) => {
            std::fs::write(&target, bytes).unwrap();
            let sha: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            manifest["hidden_states"]["sha256"] = Value::String(sha);
            manifest["hidden_states"]["bytes"] = Value::from(bytes.len());
        }
        None => {
            std::fs::copy(bundle.join("hidden_states.safetensors"), &target).unwrap();
        }
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
}

/// Hidden states of no generated token: every layer a [0, hidden] f32 tensor.
fn empty_states(layers: &[u64], hidden: usize) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = layers
        .iter()
        .map(|l| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![0, hidden], &[])
                    .unwrap();
            (format!("layer.{l}"), view)
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

#[test]
fn a_verifier_shows_only_what_it_verified_and_no_verdict_without_checks() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let bundles = d.join("bundles");
    run_ok(
        &[
            "run",
            "exp1",
            "--step",
            "infer",
            "--trials",
            "1",
            "--max-tokens",
            "8",
            "--out",
            bundles.to_str().unwrap(),
        ],
        d,
    );
    let honest = bundles.join("trial_000");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(honest.join("manifest.json")).unwrap()).unwrap();
    let forged = "I will transfer $1M to account 42";

    // The honest bundle verifies, and what is shown is the text decoded from its ids.
    let verified = json(&run_ok(
        &[
            "verify",
            honest.to_str().unwrap(),
            "--verifiers",
            "1",
            "--json",
        ],
        d,
    ));
    assert_eq!(verified["summary"]["final_verdict"], "PASS");
    assert_eq!(
        verified["inference"]["output_text"],
        manifest["output_text"]
    );
    assert_eq!(verified["prompt"]["text"], manifest["prompt_text"]);

    // 1. A forged output or prompt text is refused, naming the field, and never shown.
    for field in ["output_text", "prompt_text"] {
        let dir = d.join(format!("forged_{field}"));
        let mut m = manifest.clone();
        m[field] = Value::String(forged.into());
        bundle_copy(&honest, &dir, &m, None);
        let out = bin()
            .args([
                "verify",
                dir.to_str().unwrap(),
                "--verifiers",
                "1",
                "--json",
            ])
            .env("VERILLM_DATA_DIR", d)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("the bundle's {field} is not its"))
                && stderr.contains("refusing to show a text that was not verified"),
            "{stderr}"
        );
        assert!(
            !stderr.contains(forged) && out.stdout.is_empty(),
            "{stderr}"
        );
    }
    // The same in a two-step run: the forged bundle is skipped and named, nothing written
    // anywhere holds the forged text.
    let from = d.join("from");
    let mut m = manifest.clone();
    m["output_text"] = Value::String(forged.into());
    bundle_copy(&honest, &from.join("trial_000"), &m, None);
    let results = d.join("results");
    let err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            from.to_str().unwrap(),
            "--out",
            results.to_str().unwrap(),
        ],
        d,
    );
    assert!(
        err.contains("trial_000: skipped: the bundle's output_text is not its output_ids"),
        "{err}"
    );
    assert!(!err.contains(forged), "{err}");
    assert!(!results.exists() || std::fs::read_dir(&results).unwrap().count() == 0);
    // Nor is another model's name shown for the same weights.
    let mut m = manifest.clone();
    m["model"]["name"] = Value::String("llama-3.1-8b-instruct".into());
    bundle_copy(&honest, &from.join("trial_000"), &m, None);
    let err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            from.to_str().unwrap(),
            "--out",
            results.to_str().unwrap(),
        ],
        d,
    );
    assert!(
        err.contains(
            "bundle names model `llama-3.1-8b-instruct`, but exp1's inferencer runs `smollm2-135m`"
        ),
        "{err}"
    );

    // 2. No generated token: no check, so no verdict — an error, not a REJECT (exit 3).
    let layers: Vec<u64> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect();
    let mut m = manifest.clone();
    m["output_ids"] = serde_json::json!([]);
    m["output_text"] = Value::String(String::new());
    m["cancelled"] = Value::Bool(true);
    let empty = d.join("empty").join("trial_000");
    bundle_copy(&honest, &empty, &m, Some(&empty_states(&layers, 576)));
    let out = bin()
        .args(["verify", empty.to_str().unwrap(), "--verifiers", "1"])
        .env("VERILLM_DATA_DIR", d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("output_ids is empty") && stderr.contains("there is no verdict"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("accept rate"));
    let err = run_err(
        &[
            "run",
            "exp1",
            "--step",
            "verify",
            "--from",
            d.join("empty").to_str().unwrap(),
            "--out",
            d.join("empty_results").to_str().unwrap(),
        ],
        d,
    );
    assert!(
        err.contains("no bundle could be verified") && err.contains("there is no verdict"),
        "{err}"
    );
    // A result file from before (a trial judged on no checks) gets no row of NaN in a report.
    run_ok(&["run", "exp1", "--trials", "1", "--max-tokens", "4"], d);
    let run_dir = only_run_dir(d, "exp1");
    let trial_path = run_dir.join("trial_000.json");
    let mut trial: Value = serde_json::from_slice(&std::fs::read(&trial_path).unwrap()).unwrap();
    for v in trial["verifiers"].as_array_mut().unwrap() {
        v["statistics"]["checks"] = serde_json::json!([]);
        v["statistics"]["summary"]["total_checks"] = Value::from(0);
    }
    std::fs::write(&trial_path, serde_json::to_vec(&trial).unwrap()).unwrap();
    let err = run_err(&["report", run_dir.to_str().unwrap()], d);
    assert!(
        err.contains("no verdict: none of its 1 trial(s) has a check") && !err.contains("NaN"),
        "{err}"
    );

    // 8. Numbers and strings of a manifest are bounded before use.
    let mut m = manifest.clone();
    m["context"]["trial"] = Value::from(u64::MAX);
    let huge_trial = d.join("huge_trial");
    bundle_copy(&honest, &huge_trial.join("trial_000"), &m, None);
    let err = run_err(
        &["verify", huge_trial.join("trial_000").to_str().unwrap()],
        d,
    );
    assert!(
        err.contains("context.trial 18446744073709551615 is not a trial number"),
        "{err}"
    );
    let mut m = manifest.clone();
    m["context"]["prompt_category"] = Value::String("x".repeat(1 << 20));
    let long_category = d.join("long_category");
    bundle_copy(&honest, &long_category, &m, None);
    let err = run_err(&["verify", long_category.to_str().unwrap()], d);
    assert!(
        err.contains("context.prompt_category is 1048576 bytes long (at most 256)"),
        "{err}"
    );
}

#[test]
fn ctrl_c_on_run_keeps_the_finished_trials_and_the_interrupted_inference() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let out_dir = d.join("out");
    let mut child = bin()
        .args([
            "run",
            "exp1",
            "--trials",
            "2",
            "--max-tokens",
            "200",
            "--min-tokens",
            "200",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .env("VERILLM_DATA_DIR", d)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    // Trial 0 runs to its end (exp1's short prompts run to 200 tokens with --min-tokens):
    // interrupt once trial 1 has generated 32 tokens.
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        let interrupt = line.starts_with("trial 1: 32 tokens");
        line.clear();
        if interrupt {
            let status = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            break;
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("interrupted: stopping"), "{seen}");
    let summary_path = out_dir.join("summary.json");
    assert!(
        seen.contains(&format!(
            "exp1: interrupted after 1 of 2 trial(s); their results and a summary marked \
             incomplete are in {}",
            summary_path.display()
        )),
        "{seen}"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["complete"], false);
    assert_eq!(summary["trials"], 1);
    assert!(out_dir.join("trial_000.json").is_file());
    // The interrupted inference is a bundle, named, with a command that verifies it.
    let bundle = out_dir.join("trial_001");
    assert!(
        seen.contains(&format!("exp1: bundle kept: {}", bundle.display())),
        "{seen}"
    );
    let hint = format!("`verillm-tui verify {} --layers 8,16,24`", bundle.display());
    assert!(seen.contains(&hint), "{seen}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["cancelled"], true);
    let tokens = manifest["output_ids"].as_array().unwrap().len();
    assert!((32..200).contains(&tokens), "{tokens}");
    run_ok(
        &[
            "verify",
            bundle.to_str().unwrap(),
            "--layers",
            "8,16,24",
            "--verifiers",
            "1",
        ],
        d,
    );
}

#[test]
fn a_closed_pipe_ends_quietly_and_errors_carry_no_backtrace_without_debug() {
    use std::os::unix::process::ExitStatusExt;
    let data = tempfile::tempdir().unwrap();
    // The reader is gone before the output is written (tokenize loads the model first), as
    // with `| head -1`: a quiet end by SIGPIPE, not a panic (exit 101).
    let mut child = bin()
        .args(["tokenize", "hello world"])
        .env("VERILLM_DATA_DIR", data.path())
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    // A broken model file with RUST_BACKTRACE=1: one clear message, no candle frames.
    let bad = data.path().join("bad.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend([0xd4, 0x5a, 0x5f, 0xd4]);
    bytes.extend(vec![7u8; 256]);
    std::fs::write(&bad, bytes).unwrap();
    let out_dir = data.path().join("o");
    let args = [
        "infer",
        "--model",
        bad.to_str().unwrap(),
        "--prompt",
        "hi",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = bin()
        .args(args)
        .env("VERILLM_DATA_DIR", data.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: loading") && stderr.contains("not a readable GGUF file"),
        "{stderr}"
    );
    assert!(!stderr.contains("candle_core::"), "{stderr}");
    // --debug shows where it came from.
    let out = bin()
        .arg("--debug")
        .args(args)
        .env("VERILLM_DATA_DIR", data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Caused by") && stderr.contains("candle_core::"),
        "{stderr}"
    );
}

#[test]
fn messages_name_the_prompt_the_flag_the_directory_the_tensor_and_the_byte() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let out = d.join("out");
    let o = out.to_str().unwrap();
    // A prompt that alone fills the context: the prompt is too long, not "at most 0 tokens".
    let long = d.join("long.txt");
    std::fs::write(&long, "hello ".repeat(9000)).unwrap();
    let args = [
        "infer",
        "--raw",
        "--prompt-file",
        long.to_str().unwrap(),
        "--out",
        o,
    ];
    let err = run_err(&args, d);
    assert!(
        err.contains("the prompt is too long: 9001 tokens leave no room for a new token")
            && !err.contains("at most 0"),
        "{err}"
    );
    // A budget too large for a short prompt names the flag.
    let err = run_err(
        &[
            "infer",
            "--prompt",
            "hi",
            "--max-tokens",
            "9000",
            "--out",
            o,
        ],
        d,
    );
    assert!(
        err.contains("(lower the new-token budget, --max-tokens, to at most"),
        "{err}"
    );
    // Invalid UTF-8 in a prompt file: where it is.
    let bad = d.join("bad.txt");
    std::fs::write(&bad, b"hello \xff world").unwrap();
    let err = run_err(
        &["infer", "--prompt-file", bad.to_str().unwrap(), "--out", o],
        d,
    );
    assert!(
        err.contains("not UTF-8 text: invalid byte 0xff at byte offset 6"),
        "{err}"
    );
    // A bundle directory that is not there is named as a directory.
    let missing = d.join("no-such-bundle");
    let err = run_err(&["verify", missing.to_str().unwrap()], d);
    assert!(
        err.contains(&format!("{}: no such directory", missing.display())),
        "{err}"
    );
    // A tensor whose header claims 10^12 rows is named.
    let bundle = d.join("bundle");
    run_ok(
        &[
            "infer",
            "--prompt",
            "Hi.",
            "--max-tokens",
            "4",
            "--out",
            bundle.to_str().unwrap(),
        ],
        d,
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let bytes = std::fs::read(bundle.join("hidden_states.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    header["layer.16"]["shape"] = serde_json::json!([1_000_000_000_000u64, 576]);
    let mut text = serde_json::to_vec(&header).unwrap();
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(b' ');
    }
    let mut tampered = (text.len() as u64).to_le_bytes().to_vec();
    tampered.extend(&text);
    tampered.extend(&bytes[8 + header_len..]);
    let shaped = d.join("shaped");
    bundle_copy(&bundle, &shaped, &manifest, Some(&tampered));
    let err = run_err(&["verify", shaped.to_str().unwrap()], d);
    assert!(
        err.contains("tensor `layer.16` has shape [1000000000000,576], expected [4, 576]"),
        "{err}"
    );
}

#[test]
fn a_long_prompt_is_prefilled_in_chunks_with_progress() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let prompt = d.join("prompt.txt");
    std::fs::write(&prompt, "hello ".repeat(300)).unwrap();
    let out = d.join("out");
    let done = run_ok(
        &[
            "infer",
            "--raw",
            "--prompt-file",
            prompt.to_str().unwrap(),
            "--max-tokens",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        d,
    );
    let stderr = String::from_utf8_lossy(&done.stderr);
    // 301 tokens in chunks of 128 (the verifier's CPU chunk): progress before each chunk.
    for at in [0, 128, 256] {
        assert!(
            stderr.contains(&format!(
                "trial 0: prefilling the prompt, {at} of 301 tokens"
            )),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("384 of 301"), "{stderr}");
    // What was prefilled in pieces verifies like any bundle.
    run_ok(&["verify", out.to_str().unwrap(), "--verifiers", "1"], d);
}

/// The request flow across processes: `request` writes one, `infer --request` serves it and
/// records it, `verify --request` passes the honest bundle with its token checks, rejects it
/// against another prompt's request (naming the prompt) and against a request with another
/// seed (naming the field), refuses a tampered request file, and without a request says that
/// nothing was checked against one.
#[test]
fn a_verdict_is_bound_to_the_request_it_answers() {
    let data = tempfile::tempdir().unwrap();
    let path = |name: &str| data.path().join(name).to_str().unwrap().to_string();
    let (req, other, reseeded, bundle) = (
        path("req.json"),
        path("other.json"),
        path("seed.json"),
        path("bundle"),
    );
    let request = |prompt: &str, seed: &str, out: &str| {
        run_ok(
            &[
                "request",
                "--prompt",
                prompt,
                "--temperature",
                "0.7",
                "--seed",
                seed,
                "--max-tokens",
                "16",
                "--out",
                out,
            ],
            data.path(),
        );
    };
    request("Name three prime numbers.", "5", &req);
    request("Name three rivers.", "5", &other);
    request("Name three prime numbers.", "6", &reseeded);
    let written: Value = serde_json::from_slice(&std::fs::read(&req).unwrap()).unwrap();
    assert_eq!(written["nonce"].as_str().unwrap().len(), 64);
    assert_eq!(written["sampling"]["seed"], 5);

    run_ok(&["infer", "--request", &req, "--out", &bundle], data.path());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&bundle).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["request"]["nonce"], written["nonce"]);
    assert_eq!(manifest["request"]["sha256"], written["sha256"]);

    let verified = json(&run_ok(
        &[
            "verify",
            &bundle,
            "--request",
            &req,
            "--verifiers",
            "1",
            "--json",
        ],
        data.path(),
    ));
    assert_eq!(verified["summary"]["final_verdict"], "PASS");
    assert_eq!(verified["request_checked"], true);
    let tokens = &verified["verifiers"][0]["token_checks"];
    assert_eq!(tokens["count"], 16);
    assert_eq!(tokens["accepted"], 16);
    assert_eq!(tokens["pass"], true);
    assert!(tokens["first_rejected_position"].is_null());

    let rejected = |request: &str| {
        let out = bin()
            .args(["verify", &bundle, "--request", request, "--verifiers", "1"])
            .env("VERILLM_DATA_DIR", data.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "REJECT exits with 3");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = rejected(&other);
    assert!(
        said.contains("REJECT") && said.contains("prompt:") && said.contains("Name three rivers."),
        "{said}"
    );
    let said = rejected(&reseeded);
    assert!(said.contains("sampling.seed"), "{said}");

    // A request changed after it was written is refused, naming the file and the checksum.
    let mut tampered = written.clone();
    tampered["sampling"]["temperature"] = serde_json::json!(0.9);
    let tampered_path = path("tampered.json");
    std::fs::write(&tampered_path, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let err = run_err(
        &["verify", &bundle, "--request", &tampered_path],
        data.path(),
    );
    assert!(
        err.contains("tampered.json") && err.contains("sha256"),
        "{err}"
    );

    // Without a request: the bundle's own claims, and the output says so.
    let out = run_ok(&["verify", &bundle, "--verifiers", "1"], data.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("request_checked: false"), "{stdout}");
    assert!(stdout.contains("tokens 1.0000 (16/16"), "{stdout}");
    let unchecked = json(&run_ok(
        &["verify", &bundle, "--verifiers", "1", "--json"],
        data.path(),
    ));
    assert_eq!(unchecked["request_checked"], false);
    // State only: no token checks in the result.
    let state_only = json(&run_ok(
        &[
            "verify",
            &bundle,
            "--verifiers",
            "1",
            "--state-only",
            "--json",
        ],
        data.path(),
    ));
    assert!(state_only["verifiers"][0].get("token_checks").is_none());
}

/// `run --step verify` holds each bundle to the request the experiment makes for its trial
/// (prompts.yaml, the experiment's sampling, the run's seed and limits), never to what the
/// bundle says: verified with another seed than the inference used, the bundle is refused,
/// naming the trial's request and the field.
#[test]
fn two_step_verification_rebuilds_each_trials_request() {
    let data = tempfile::tempdir().unwrap();
    let bundles = data.path().join("bundles");
    let b = bundles.to_str().unwrap();
    let common = ["--trials", "1", "--max-tokens", "8", "--verifiers", "1"];
    run_ok(
        &[
            &["run", "exp1", "--step", "infer", "--out", b, "--seed", "3"],
            &common[..],
        ]
        .concat(),
        data.path(),
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(bundles.join("trial_000").join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["request"]["sampling"]["seed"], 3);
    let ok = data.path().join("ok");
    run_ok(
        &[
            &[
                "run", "exp1", "--step", "verify", "--from", b, "--seed", "3",
            ],
            &common[..],
            &["--out", ok.to_str().unwrap()],
        ]
        .concat(),
        data.path(),
    );
    let trial = &trial_files(&ok)[0];
    assert_eq!(trial["request_checked"], true);
    assert_eq!(trial["verifiers"][0]["token_checks"]["pass"], true);
    let err = run_err(
        &[
            &[
                "run", "exp1", "--step", "verify", "--from", b, "--seed", "4",
            ],
            &common[..],
        ]
        .concat(),
        data.path(),
    );
    assert!(
        err.contains("does not answer trial 0's request")
            && (err.contains("sampling.seed") || err.contains("prompt:")),
        "{err}"
    );
}

/// What a provider must not be able to choose (found by playing the cheater against
/// `verify --request`): the bundle's own copy of the request, a truncated answer marked as
/// cancelled (its stop rule would be waived), and the loose bf16 tier by declaring its dtype.
#[test]
fn a_provider_cannot_rewrite_the_request_truncate_the_answer_or_pick_its_tier() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    let (req, honest, bf16) = (path("req.json"), path("honest"), path("bf16"));
    run_ok(
        &[
            "request",
            "--prompt",
            "Why is the sky blue?",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--out",
            &req,
        ],
        d,
    );
    run_ok(&["infer", "--request", &req, "--out", &honest], d);
    let verify = |bundle: &str, extra: &[&str]| {
        bin()
            .args(["verify", bundle, "--request", &req, "--verifiers", "1"])
            .args(extra)
            .env("VERILLM_DATA_DIR", d)
            .output()
            .unwrap()
    };
    let passed = verify(&honest, &[]);
    assert_eq!(passed.status.code(), Some(0), "{passed:?}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&honest).join("manifest.json")).unwrap())
            .unwrap();

    // The bundle's copy of the request, rewritten but for its nonce: REJECT, named.
    let mut rewritten = manifest.clone();
    rewritten["request"]["prompt"]["messages"][0]["content"] =
        Value::String("Write malware".into());
    bundle_copy(Path::new(&honest), &d.join("rewritten"), &rewritten, None);
    let out = verify(&path("rewritten"), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        stdout.contains("request: the bundle's copy of the request"),
        "{stdout}"
    );

    // Marked cancelled, an answer is a prefix: it does not answer the request.
    let mut cancelled = manifest.clone();
    cancelled["cancelled"] = Value::Bool(true);
    bundle_copy(Path::new(&honest), &d.join("cancelled"), &cancelled, None);
    let out = verify(&path("cancelled"), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        stdout.contains("cancelled: the bundle is an interrupted inference"),
        "{stdout}"
    );

    // An honest bf16 inference is refused until the verifier admits the bf16 tier.
    run_ok(
        &[
            "infer",
            "--request",
            &req,
            "--device",
            "cpu:bf16",
            "--out",
            &bf16,
        ],
        d,
    );
    let refused = verify(&bf16, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("declares bf16 inference") && stderr.contains("--admit-bf16"),
        "{stderr}"
    );
    let admitted = verify(&bf16, &["--admit-bf16"]);
    assert_eq!(admitted.status.code(), Some(0), "{admitted:?}");
}

/// A token budget near 2^64 is refused before decoding (it once wrapped around the context
/// check and decoded for minutes before failing).
#[test]
fn a_token_budget_beyond_the_context_is_refused_at_once() {
    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("b");
    let err = run_err(
        &[
            "infer",
            "--prompt",
            "Hi",
            "--max-tokens",
            "18446744073709551615",
            "--out",
            out.to_str().unwrap(),
        ],
        data.path(),
    );
    assert!(err.contains("exceed the model's context"), "{err}");
}

/// The matrix end to end on the embedded model: honest controls calibrate the f32 pairing, the
/// q4_0 cheat is rejected in every trial, every output is written, and a cell is an ordinary run
/// folder that `plot` reads.
#[test]
fn matrix_runs_its_rows_on_a_pairing_and_writes_the_table_and_pictures() {
    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("m");
    let out_arg = out.display().to_string();
    run_ok(
        &[
            "matrix",
            "--trials",
            "3",
            "--max-tokens",
            "16",
            "--pairings",
            "f32",
            "--cheats",
            "q4_0",
            "--out",
            &out_arg,
        ],
        data.path(),
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("matrix.json")).unwrap()).unwrap();
    assert_eq!(report["complete"], true, "{report}");
    let cell = |row: &str| {
        report["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["row"] == row && c["pairing"] == "f32")
            .unwrap_or_else(|| panic!("no {row} cell"))
            .clone()
    };
    let honest = cell("honest");
    assert_eq!(honest["rejected"]["successes"], 0, "{honest}");
    assert_eq!(honest["rejected"]["trials"], 3);
    let cheat = cell("q4_0");
    assert_eq!(cheat["rejected"]["successes"], 3, "{cheat}");
    // Calibrated on 3 × 48 honest checks (p0 ≈ 0.02): five rejected checks decide, two tokens.
    assert!(
        cheat["median_tokens_to_detection"].as_u64().unwrap() <= 2,
        "{cheat}"
    );
    let table = std::fs::read_to_string(out.join("matrix.md")).unwrap();
    assert!(table.contains("| q4_0 | 1.000 ["), "{table}");
    for png in ["matrix.png", "tokens_to_detection.png"] {
        assert!(
            std::fs::metadata(out.join(png)).unwrap().len() > 10_000,
            "{png}"
        );
    }
    let summary = out.join("q4_0").join("f32").join("summary.json");
    let plots = data.path().join("plots");
    run_ok(
        &[
            "plot",
            "--out",
            &plots.display().to_string(),
            &summary.display().to_string(),
        ],
        data.path(),
    );
    // Judged again from its files alone: the same figures.
    run_ok(&["matrix", "--from", &out_arg], data.path());
    let again: Value =
        serde_json::from_slice(&std::fs::read(out.join("matrix.json")).unwrap()).unwrap();
    assert_eq!(again["cells"], report["cells"]);
    // A cheat that is not a row is named.
    let err = run_err(&["matrix", "--cheats", "q9_9", "--out", "x"], data.path());
    assert!(err.contains("q9_9") && err.contains("q4_0"), "{err}");
}

/// Honest control of issue 18: the thread count is the inferencer's and the verifier's own
/// business. Bundles decoded with two compute threads pass verifiers that prefill with one, and
/// the other way round (matrix products split differently sum in another order: f32 drift,
/// far inside the tier), for f32 and for bf16 inference.
#[test]
fn honest_runs_pass_whatever_thread_counts_the_two_sides_use() {
    let data = tempfile::tempdir().unwrap();
    let common = [
        "--trials",
        "2",
        "--max-tokens",
        "16",
        "--verifiers",
        "1",
        "--seed",
        "5",
    ];
    for (experiment, infer_threads, verify_threads) in
        [("exp1", "2", "1"), ("exp1", "1", "2"), ("exp2", "2", "1")]
    {
        let tag = format!("{experiment}-{infer_threads}-{verify_threads}");
        let bundles = data.path().join(format!("bundles-{tag}"));
        let b = bundles.to_str().unwrap();
        run_ok(
            &[
                &[
                    "--threads",
                    infer_threads,
                    "run",
                    experiment,
                    "--step",
                    "infer",
                    "--out",
                    b,
                ][..],
                &common[..],
            ]
            .concat(),
            data.path(),
        );
        let out = data.path().join(format!("verified-{tag}"));
        run_ok(
            &[
                &[
                    "--threads",
                    verify_threads,
                    "run",
                    experiment,
                    "--step",
                    "verify",
                    "--from",
                    b,
                    "--out",
                    out.to_str().unwrap(),
                ][..],
                &common[..],
            ]
            .concat(),
            data.path(),
        );
        let trials = trial_files(&out);
        assert_eq!(trials.len(), 2, "{tag}");
        for t in &trials {
            assert_eq!(t["summary"]["final_verdict"], "PASS", "{tag}");
            assert_eq!(t["verifiers"][0]["token_checks"]["pass"], true, "{tag}");
        }
    }
}
