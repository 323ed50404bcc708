//! `run --slurm` end to end on a real Slurm cluster (CI starts a single-node one with
//! scripts/slurm-local.sh): exp1 and exp3 with 2 trials submitted as array jobs must give the
//! verdicts of the same runs made locally; an array task cancelled with `scancel`, while held
//! and while running (killed mid-decode), is reported missing with its Slurm state, leaves
//! nothing that reads as a landed trial, and `--resume` completes the run without running the
//! finished trial again; a verification task that fails is reported FAILED, and `--resume` then
//! verifies the landed bundle again without another inference. Without Slurm (no `sbatch`, or
//! no cluster answering) it is skipped with a message, except in CI (CI=true), where that is a
//! failure.
//!
//! `--dry-run` needs no Slurm and is tested apart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKENS: &str = "8";
/// The budget of the trial killed while it runs: long enough that it is still decoding when
/// `scancel` lands (it is killed as soon as its log shows 32 tokens; 512 take 7 s at the 77
/// tok/s of an idle core, 20 s at 25 tok/s on a loaded one), short enough that the resume
/// that decodes it again whole adds little to the test.
const KILL_TOKENS: &str = "512";
/// The progress line the inference task logs once its decode is under way.
const DECODING: &str = "trial 0: 32 tokens";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verillm-tui"));
    c.env_remove("VERILLM_CONFIG_DIR");
    // The Slurm tasks inherit the environment (sbatch --export=ALL): one compute thread each,
    // like the local runs they are compared with.
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

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn slurm(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether a Slurm cluster answers here; in CI its absence fails the test.
fn slurm_available() -> bool {
    let answers = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !answers {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but no Slurm cluster answers `sinfo` (scripts/slurm-local.sh start)"
        );
        eprintln!(
            "SKIPPED: no Slurm here (`sinfo` does not answer); scripts/slurm-local.sh install && \
             scripts/slurm-local.sh start runs a single-node cluster"
        );
    }
    answers
}

/// Every job of the run folder's submissions, as recorded.
fn job_ids(run: &Path) -> Vec<String> {
    let subs = read_json(&run.join("slurm/submissions.json"));
    let mut ids = Vec::new();
    for sub in subs.as_array().unwrap() {
        if let Some(infer) = sub["infer"].as_object() {
            ids.push(infer["job_id"].as_str().unwrap().to_string());
        }
        for verify in sub["verify"].as_array().unwrap() {
            ids.push(verify["job_id"].as_str().unwrap().to_string());
        }
        ids.push(sub["collect_job"].as_str().unwrap().to_string());
    }
    ids
}

/// Waits until Slurm has none of the run's jobs queued or running.
fn wait_for(run: &Path) {
    let ids = job_ids(run);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = slurm(&["squeue", "-h", "-o", "%F"]);
        let queued = String::from_utf8_lossy(&out.stdout).to_string();
        if !queued.lines().any(|l| ids.iter().any(|id| id == l.trim())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs {ids:?} of {} still queued after 10 minutes",
            run.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An array task's state in `squeue` (empty once it has left the queue).
fn queue_state(task: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-j", task, "-o", "%T"])
        .output()
        .unwrap_or_else(|e| panic!("squeue: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until inference task `JOB_0` of `run` is RUNNING and its log shows its decode under
/// way, then cancels it with `scancel`: a task killed mid-run, not one cancelled in the queue.
/// Returns the task's id and its log.
fn kill_while_decoding(run: &Path) -> (String, PathBuf) {
    let infer = job_ids(run)[0].clone();
    let task = format!("{infer}_0");
    let log = run.join(format!("slurm/logs/infer_{infer}_0.out"));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let state = queue_state(&task);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if state == "RUNNING" && text.contains(DECODING) {
            break;
        }
        assert!(
            !text.contains("inference done"),
            "inference task {task} finished before it could be killed (raise KILL_TOKENS):\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "inference task {task} was not seen decoding within 3 minutes (squeue state \
             {state:?}; the log {} should show {DECODING:?}):\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    slurm(&["scancel", &task]);
    (task, log)
}

/// What must match between a Slurm run and a local one, per trial: the generated tokens, each
/// verifier's verdict and check counts, the trial's verdict.
fn verdicts(run: &Path, summary: &Value) -> Vec<Value> {
    summary["trial_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| {
            let trial = read_json(&run.join(file.as_str().unwrap()));
            let verifiers: Vec<Value> = trial["verifiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "verdict": v["verdict"],
                        "accepted": v["statistics"]["summary"]["accepted"],
                        "total_checks": v["statistics"]["summary"]["total_checks"],
                    })
                })
                .collect();
            serde_json::json!({
                "trial": trial["trial"],
                "output_ids": trial["inference"]["output_ids"],
                "verifiers": verifiers,
                "final_verdict": trial["summary"]["final_verdict"],
            })
        })
        .collect()
}

fn local_run(experiment: &str, out: &Path, data: &Path) -> Vec<Value> {
    let out_arg = out.to_str().unwrap();
    run_ok(
        &[
            "run",
            experiment,
            "--trials",
            "2",
            "--max-tokens",
            TOKENS,
            "--out",
            out_arg,
        ],
        data,
    );
    verdicts(out, &read_json(&out.join("summary.json")))
}

fn submit(experiment: &str, out: &Path, data: &Path, extra: &[&str]) {
    let mut args = vec![
        "run",
        experiment,
        "--trials",
        "2",
        "--max-tokens",
        TOKENS,
        "--slurm",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let printed = run_ok(&args, data);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        out.to_str().unwrap(),
        "stdout names the run folder"
    );
}

#[test]
fn experiments_on_slurm_match_local_runs_and_a_cancelled_task_is_resumed() {
    if !slurm_available() {
        return;
    }
    // A space in every path: the job scripts must quote them.
    let scratch = tempfile::Builder::new()
        .prefix("verillm slurm ")
        .tempdir()
        .unwrap();
    let root = scratch.path();
    let data = root.join("data dir");

    // A run whose one trial is killed while it decodes: submitted first, so that its inference
    // task starts at once, and cancelled as soon as its log shows the decode under way.
    let killed_run = root.join("exp1 killed while running");
    let killed_arg = killed_run.to_str().unwrap();
    run_ok(
        &[
            "run",
            "exp1",
            "--trials",
            "1",
            "--max-tokens",
            KILL_TOKENS,
            "--min-tokens",
            KILL_TOKENS,
            "--slurm",
            "--out",
            killed_arg,
        ],
        &data,
    );
    // exp1 runs straight through; exp3 is submitted held so that one array task can be
    // cancelled before it starts, at a point that does not depend on timing.
    let exp1 = root.join("exp1 on slurm");
    submit("exp1", &exp1, &data, &[]);
    let (running_task, running_log) = kill_while_decoding(&killed_run);
    let exp3 = root.join("exp3 on slurm");
    submit("exp3", &exp3, &data, &["--hold", "--array-parallel", "1"]);
    let ids = job_ids(&exp3);
    let infer = &ids[0];
    // A resume while the run's jobs are queued is refused: the same trial would run twice.
    let refused = bin()
        .args(["run", "exp3", "--slurm", "--resume", exp3.to_str().unwrap()])
        .env("VERILLM_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let refused = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused.contains("still queued") && refused.contains(infer.as_str()),
        "{refused}"
    );
    // A third run whose verification of trial 1 fails: a folder stands where its result goes,
    // so writing the result fails (whoever runs the test, root included).
    let failing = root.join("exp1 verification fails");
    submit("exp1", &failing, &data, &["--hold"]);
    std::fs::create_dir(failing.join("trial_001.json")).unwrap();
    slurm(&["scontrol", "release", &job_ids(&failing).join(",")]);
    // Updating one task of a pending array makes it a job of its own, which Slurm records
    // (a pending element cancelled inside its array leaves no trace in sacct).
    let killed = format!("{infer}_1");
    slurm(&[
        "scontrol",
        "update",
        &format!("JobId={killed}"),
        "Comment=cancelled-by-test",
    ]);
    slurm(&["scancel", &killed]);
    // Releasing the array names the cancelled task as finished; that answer is not an error.
    let _ = Command::new("scontrol").arg("release").args(&ids).output();

    // Meanwhile the same runs locally.
    let local1 = local_run("exp1", &root.join("exp1 local"), &data);
    let local3 = local_run("exp3", &root.join("exp3 local"), &data);
    assert_eq!(local1.len(), 2);
    assert!(local1.iter().all(|t| t["final_verdict"] == "PASS"));
    assert!(local3.iter().all(|t| t["final_verdict"] == "REJECT"));

    // The task killed mid-run is reported missing with its state from sacct, and nothing of it
    // reads as a landed trial; then --resume runs it again, whole.
    wait_for(&killed_run);
    let log = std::fs::read_to_string(&running_log).unwrap();
    assert!(
        log.contains(DECODING) && log.contains("CANCELLED") && !log.contains("inference done"),
        "{log}"
    );
    let report = read_json(&killed_run.join("slurm/collect.json"));
    assert_eq!(report["landed"], serde_json::json!([]), "{report}");
    let missing = &report["missing"];
    assert_eq!(missing.as_array().unwrap().len(), 1, "{missing}");
    assert_eq!(missing[0]["trial"], 0, "{missing}");
    assert_eq!(missing[0]["lacking"], "inference", "{missing}");
    let tasks = missing[0]["tasks"].as_array().unwrap();
    let infer_state = tasks.iter().find(|t| t["stage"] == "inference").unwrap();
    assert_eq!(infer_state["job_id"], running_task.as_str(), "{missing}");
    assert_eq!(infer_state["state"], "CANCELLED", "{missing}");
    assert_eq!(infer_state["source"], "sacct", "{missing}");
    let verify_state = tasks.iter().find(|t| t["stage"] == "verification").unwrap();
    assert_eq!(verify_state["state"], "CANCELLED", "{missing}");
    // No bundle, no staged half of one, no result; no summary either (no trial landed, and
    // the collect step says so rather than write an empty one).
    let left: Vec<String> = std::fs::read_dir(killed_run.join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(left.is_empty(), "the killed task left {left:?} in bundles/");
    assert!(!killed_run.join("trial_000.json").exists());
    assert!(!killed_run.join("summary.json").exists());
    // Its node-local scratch (verillm-<job id>.XXXXXX in the temporary folder) was removed.
    let job = log
        .split_whitespace()
        .skip_while(|w| *w != "job")
        .nth(1)
        .unwrap_or_else(|| panic!("no job id in the log:\n{log}"));
    let scratch_prefix = format!("verillm-{job}.");
    let scratch_left: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&scratch_prefix))
        })
        .collect();
    assert!(scratch_left.is_empty(), "scratch left: {scratch_left:?}");
    run_ok(&["run", "exp1", "--slurm", "--resume", killed_arg], &data);

    wait_for(&exp1);
    let summary1 = read_json(&exp1.join("summary.json"));
    assert_eq!(summary1["complete"], true);
    assert_eq!(summary1["missing_trials"], serde_json::json!([]));
    assert_eq!(verdicts(&exp1, &summary1), local1);
    // The bundles went to the run folder; the scratch folders were removed.
    assert!(exp1.join("bundles/trial_001/manifest.json").is_file());

    // The failed verification is reported with its state; its inference succeeded, so a
    // resume verifies the landed bundle again and runs no inference.
    wait_for(&failing);
    let summary = read_json(&failing.join("summary.json"));
    assert_eq!(summary["complete"], false);
    let missing = &summary["missing_trials"];
    assert_eq!(missing[0]["trial"], 1, "{missing}");
    assert_eq!(missing[0]["lacking"], "verification");
    let states: Vec<(&str, &str)> = missing[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["stage"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("inference", "COMPLETED"), ("verification", "FAILED")],
        "{missing}"
    );
    std::fs::remove_dir(failing.join("trial_001.json")).unwrap();
    run_ok(
        &[
            "run",
            "exp1",
            "--slurm",
            "--resume",
            failing.to_str().unwrap(),
        ],
        &data,
    );
    let subs = read_json(&failing.join("slurm/submissions.json"));
    let resumed = &subs.as_array().unwrap()[1];
    assert_eq!(resumed["infer"], Value::Null, "{resumed}");
    assert_eq!(resumed["verify"][0]["trials"], serde_json::json!([1]));
    wait_for(&failing);
    let summary = read_json(&failing.join("summary.json"));
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(verdicts(&failing, &summary), local1);

    wait_for(&exp3);
    let summary3 = read_json(&exp3.join("summary.json"));
    assert_eq!(summary3["complete"], false);
    assert_eq!(summary3["trials"], 1);
    assert_eq!(summary3["planned_trials"], 2);
    let missing = &summary3["missing_trials"];
    assert_eq!(missing.as_array().unwrap().len(), 1, "{missing}");
    assert_eq!(missing[0]["trial"], 1);
    assert_eq!(missing[0]["lacking"], "inference");
    let tasks = missing[0]["tasks"].as_array().unwrap();
    let infer_state = tasks.iter().find(|t| t["stage"] == "inference").unwrap();
    assert_eq!(infer_state["job_id"], killed.as_str());
    assert_eq!(infer_state["state"], "CANCELLED", "{missing}");
    assert_eq!(infer_state["source"], "sacct", "{missing}");
    // Its verification could never start: Slurm cancelled it (--kill-on-invalid-dep).
    let verify_state = tasks.iter().find(|t| t["stage"] == "verification").unwrap();
    assert_eq!(verify_state["state"], "CANCELLED", "{missing}");
    assert_eq!(
        read_json(&exp3.join("slurm/collect.json"))["missing"],
        *missing
    );
    assert_eq!(verdicts(&exp3, &summary3), local3[..1]);

    // --resume submits trial 1 only; trial 0's result and bundle are left as they are.
    let kept_result = std::fs::read(exp3.join("trial_000.json")).unwrap();
    let kept_manifest = std::fs::read(exp3.join("bundles/trial_000/manifest.json")).unwrap();
    // Whatever was left in the folder's scripts is not what runs: --resume writes them again.
    let infer_script = exp3.join("slurm/infer.sh");
    let mut edited = std::fs::read_to_string(&infer_script).unwrap();
    edited.push_str("touch \"$RUN_DIR/edited-script-ran\"\n");
    std::fs::write(&infer_script, edited).unwrap();
    run_ok(
        &["run", "exp3", "--slurm", "--resume", exp3.to_str().unwrap()],
        &data,
    );
    let subs = read_json(&exp3.join("slurm/submissions.json"));
    let resumed = &subs.as_array().unwrap()[1];
    assert_eq!(resumed["trials"], serde_json::json!([1]));
    assert_eq!(resumed["infer"]["trials"], serde_json::json!([1]));
    wait_for(&exp3);
    let summary3 = read_json(&exp3.join("summary.json"));
    assert_eq!(summary3["complete"], true, "{summary3}");
    assert!(!exp3.join("edited-script-ran").exists());
    assert_eq!(summary3["missing_trials"], serde_json::json!([]));
    assert_eq!(verdicts(&exp3, &summary3), local3);
    assert_eq!(
        std::fs::read(exp3.join("trial_000.json")).unwrap(),
        kept_result
    );
    assert_eq!(
        std::fs::read(exp3.join("bundles/trial_000/manifest.json")).unwrap(),
        kept_manifest
    );
    // Trial 0's inference ran once in all: one log of the first submission's task 0.
    let logs: Vec<PathBuf> = std::fs::read_dir(exp3.join("slurm/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let infer_logs = |trial: &str| {
        logs.iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                name.starts_with("infer_") && name.ends_with(&format!("_{trial}.out"))
            })
            .count()
    };
    assert_eq!(infer_logs("0"), 1, "{logs:?}");
    assert_eq!(infer_logs("1"), 1, "{logs:?}");

    // The resumed trial ran whole, with the run's budget, and verifies as a local run does:
    // its first tokens are the local trial 0's.
    wait_for(&killed_run);
    let summary = read_json(&killed_run.join("summary.json"));
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["missing_trials"], serde_json::json!([]));
    let resumed = &verdicts(&killed_run, &summary)[0];
    assert_eq!(resumed["final_verdict"], "PASS", "{resumed}");
    let ids = resumed["output_ids"].as_array().unwrap();
    assert_eq!(ids.len().to_string(), KILL_TOKENS);
    let local_ids = local1[0]["output_ids"].as_array().unwrap();
    assert_eq!(ids[..local_ids.len()], local_ids[..]);
    let logs = std::fs::read_dir(killed_run.join("slurm/logs"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("infer_")
        })
        .count();
    assert_eq!(logs, 2, "the killed task and its resumed twin");
}

#[test]
fn dry_run_prints_the_scripts_and_submits_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let out = scratch.path().join("a run's folder");
    // No sbatch can be reached: a dry run must not need one.
    let printed = bin()
        .args([
            "run",
            "exp3",
            "--trials",
            "3",
            "--slurm",
            "--dry-run",
            "--partition",
            "gpu",
            "--gres",
            "gpu:1",
            "--time",
            "0:30:00",
            "--array-parallel",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("VERILLM_DATA_DIR", &data)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let text = String::from_utf8_lossy(&printed.stdout);
    for stage in ["infer", "verify", "collect"] {
        assert!(
            text.contains(&format!("slurm-task {stage} \"$RUN_DIR\"")),
            "{text}"
        );
    }
    assert!(
        text.contains("RUN_DIR='") && text.contains("a run'\\''s folder'"),
        "{text}"
    );
    assert!(text.contains("#SBATCH --partition=gpu\n#SBATCH --time=0:30:00\n#SBATCH --gres=gpu:1"));
    assert!(text.contains("'--array=0-2%2'"), "{text}");
    assert!(
        text.contains("\"--dependency=aftercorr:$INFER_JOB0\""),
        "{text}"
    );
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_verillm-tui")).unwrap();
    assert!(
        text.contains(&format!("BIN='{}'", binary.display())),
        "{text}"
    );
    // Nothing was written.
    assert!(!out.exists());
    assert!(!data.exists() || std::fs::read_dir(&data).unwrap().next().is_none());

    // A value that could end a script line is refused, naming the flag.
    let refused = bin()
        .args(["run", "exp1", "--slurm", "--dry-run", "--partition", "a b"])
        .env("VERILLM_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--partition \"a b\""));
}

/// Per trial of a segment-mode run: the tokens, each verifier's verdict and challenge size, the
/// trial's verdict (the challenged layers themselves are drawn afresh by every verifier).
fn segment_verdicts(run: &Path) -> Vec<Value> {
    let summary = read_json(&run.join("summary.json"));
    summary["trial_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| {
            let trial = read_json(&run.join(file.as_str().unwrap()));
            let verifiers: Vec<Value> = trial["verifiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "verdict": v["verdict"],
                        "challenged": v["segment"]["challenged_layers"].as_array().unwrap().len(),
                    })
                })
                .collect();
            serde_json::json!({
                "trial": trial["trial"],
                "output_ids": trial["inference"]["output_ids"],
                "verifiers": verifiers,
                "final_verdict": trial["summary"]["final_verdict"],
            })
        })
        .collect()
}

#[test]
fn segment_mode_on_slurm_commits_exchanges_and_matches_local_runs() {
    if !slurm_available() {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("verillm slurm segment ")
        .tempdir()
        .unwrap();
    let root = scratch.path();
    let data = root.join("data dir");
    let segment = ["--mode", "segment", "--challenge-layers", "2"];
    let mut runs = Vec::new();
    for experiment in ["exp1", "exp3"] {
        let run = root.join(format!("{experiment} segment on slurm"));
        submit(experiment, &run, &data, &segment);
        runs.push((experiment, run));
    }
    for (experiment, run) in &runs {
        wait_for(run);
        let plan = read_json(&run.join("slurm/plan.json"));
        assert_eq!(plan["protocol"]["mode"], "segment");
        assert_eq!(plan["protocol"]["challenge_layers"], 2);
        for trial in ["trial_000", "trial_001"] {
            // The inferencer's side: a root-only bundle and its private store; the exchange's
            // challenges and openings beside it.
            let bundle = run.join("bundles").join(trial);
            assert!(bundle.join("manifest.json").is_file());
            assert!(!bundle.join("hidden_states.safetensors").exists());
            assert!(bundle.join("states/column_0000.bin").is_file());
            assert!(bundle.join("challenges/verifier_1.json").is_file());
            assert!(bundle.join("openings/verifier_1/opening.json").is_file());
        }
        let local = root.join(format!("{experiment} segment locally"));
        let out_arg = local.to_str().unwrap();
        let mut args = vec![
            "run",
            experiment,
            "--trials",
            "2",
            "--max-tokens",
            TOKENS,
            "--out",
            out_arg,
        ];
        args.extend(segment);
        run_ok(&args, &data);
        let on_slurm = segment_verdicts(run);
        assert_eq!(on_slurm.len(), 2, "{experiment}: both trials landed");
        assert_eq!(on_slurm, segment_verdicts(&local), "{experiment}");
        let expected = if *experiment == "exp1" {
            "PASS"
        } else {
            "REJECT"
        };
        assert!(on_slurm.iter().all(|t| t["final_verdict"] == expected));
    }
}
