//! Drives the real binary's console in a pseudo-terminal (tmux), as a person would: launch,
//! choose exp1 with a small budget, start, watch tokens and three gauges reach their verdicts,
//! export PNGs, quit — and check the terminal is back in its normal mode.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
    session: &'static str,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = self
                .cmd()
                .args(["send-keys", "-t", self.session, k])
                .status()
                .unwrap()
                .success();
            assert!(ok, "send-keys {k}");
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Tmux {
    /// Starts `script` in a detached 160×48 session on a tmux socket of its own.
    fn launch(session: &'static str, script: &str) -> Tmux {
        let has_tmux = Command::new("tmux").arg("-V").output();
        assert!(
            has_tmux.is_ok_and(|o| o.status.success()),
            "this test needs tmux (apt-get install tmux; .ci/run installs it)"
        );
        let tmux = Tmux {
            socket: format!("verillm-{session}-{}", std::process::id()),
            session,
        };
        let size = ["-x", "160", "-y", "48"];
        let ok = tmux
            .cmd()
            .args(["new-session", "-d", "-s", session])
            .args(size)
            .args(["sh", "-c", script])
            .env_remove("VERILLM_CONFIG_DIR")
            // Consoles of parallel tests must not oversubscribe the cores.
            .env("RAYON_NUM_THREADS", "1")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session");
        tmux.wait_for("the experiment picker", Duration::from_secs(60), |s| {
            s.contains("pick an experiment")
        });
        tmux
    }

    /// From the experiment list into exp1's settings (4 roles × model, precision, device come
    /// first), then types the trial count and the token budget.
    fn set_trials_and_tokens(&self, trials: &str, tokens: &str) {
        self.keys(&["Tab"]);
        for _ in 0..12 {
            self.keys(&["Down"]);
        }
        self.keys(&["BSpace", "BSpace", "BSpace", trials, "Down"]);
        self.keys(&["BSpace", "BSpace", "BSpace", "BSpace", tokens]);
    }

    /// Waits until the run view's token counter shows at least `at_least` of `budget` tokens.
    fn wait_for_tokens(&self, budget: usize, at_least: usize) {
        let suffix = format!("/{budget}");
        self.wait_for("some tokens", Duration::from_secs(120), |s| {
            s.split_whitespace().any(|w| {
                w.ends_with(&suffix)
                    && w.split('/')
                        .next()
                        .and_then(|n| n.parse::<usize>().ok())
                        .is_some_and(|n| n >= at_least)
            })
        });
    }

    /// q steps back (run → picker settings → experiment list) and quits from the list.
    fn quit(&self) -> String {
        for _ in 0..4 {
            if self.screen().contains("EXIT=") {
                break;
            }
            self.keys(&["q"]);
            std::thread::sleep(Duration::from_millis(300));
        }
        self.wait_for("the program to exit", Duration::from_secs(20), |s| {
            s.contains("EXIT=")
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().args(["kill-server"]).status();
    }
}

#[test]
fn console_runs_exp1_live_exports_pngs_and_restores_the_terminal() {
    let data = tempfile::tempdir().unwrap();
    let stty = data.path().join("stty");
    let script = format!(
        "stty -g > {s}.before; VERILLM_DATA_DIR={d} {bin}; echo EXIT=$?; stty -g > {s}.after; sleep 60",
        s = stty.display(),
        d = data.path().display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
    );
    let tmux = Tmux::launch("e2e", &script);
    let s = tmux.screen();
    assert!(s.contains("exp1") && s.contains("exp5"), "{s}");

    tmux.set_trials_and_tokens("1", "16");
    let s = tmux.screen();
    assert!(
        s.contains("Trials          1") && s.contains("Max new tokens  16"),
        "{s}"
    );
    tmux.keys(&["Enter"]);

    let s = tmux.wait_for("the verdicts", Duration::from_secs(300), |s| {
        s.contains("finished") && s.contains("verdict")
    });
    assert!(s.contains("verdict PASS (expected PASS"), "{s}");
    assert!(
        s.contains("16/16 tokens"),
        "tokens streamed to the budget:\n{s}"
    );
    assert_eq!(
        s.matches("100.0% accepted").count(),
        3,
        "three gauges at their final values:\n{s}"
    );
    assert_eq!(
        s.matches(" PASS overhead").count(),
        3,
        "three verifier verdicts:\n{s}"
    );
    assert_eq!(
        s.matches("tok 16/16 ✓").count(),
        3,
        "three token-check gauges, every token accepted:\n{s}"
    );
    assert!(
        s.contains("request ✓"),
        "the run's own request was checked:\n{s}"
    );
    assert!(
        s.contains("L8") && s.contains("L16") && s.contains("L24"),
        "heatmap rows:\n{s}"
    );

    tmux.keys(&["e"]);
    let plots = data.path().join("plots").join("exp1");
    let start = Instant::now();
    while count_pngs(&plots) < 6 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        count_pngs(&plots) >= 6,
        "PNGs exported to {}",
        plots.display()
    );
    tmux.wait_for("the export message", Duration::from_secs(30), |s| {
        s.contains("wrote")
    });
    // From the results list, the whole run: its trials' figures and its own, in a folder
    // named as the run's.
    tmux.keys(&["r"]);
    tmux.keys(&["e"]);
    tmux.wait_for("the run export message", Duration::from_secs(60), |s| {
        s.contains("PNGs of the run in")
    });
    let run_figures: Vec<String> = std::fs::read_dir(&plots)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for figure in [
        "accept_rates",
        "token_margins",
        "threshold_distributions",
        "overhead",
        "heatmap",
    ] {
        assert!(
            run_figures.iter().any(|name| name.contains(figure)),
            "no {figure} figure among {run_figures:?}"
        );
    }

    let s = tmux.quit();
    assert!(s.contains("EXIT=0"), "{s}");
    let s = tmux.wait_for("stty", Duration::from_secs(5), |_| {
        stty.with_extension("after").exists()
    });
    let before = std::fs::read_to_string(stty.with_extension("before")).unwrap();
    let after = std::fs::read_to_string(stty.with_extension("after")).unwrap();
    assert_eq!(before, after, "terminal modes restored after quitting\n{s}");
    assert!(!s.contains("Generated text"), "alternate screen left:\n{s}");
}

/// Segment mode chosen in the picker: every verifier shows the strip of the 30 layers with
/// the ones it challenged, and the heatmap its challenged layers.
#[test]
fn console_runs_exp1_in_segment_mode_and_shows_each_verifiers_challenged_layers() {
    let data = tempfile::tempdir().unwrap();
    let script = format!(
        "VERILLM_DATA_DIR={d} {bin}; echo EXIT=$?; sleep 60",
        d = data.path().display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
    );
    let tmux = Tmux::launch("segment", &script);
    tmux.set_trials_and_tokens("1", "8");
    // Max new tokens → Seed → Verification, switched to segment.
    tmux.keys(&["Down", "Down", "Right"]);
    let s = tmux.screen();
    assert!(
        s.contains("Verification    segment") && s.contains("Layers (c)      4"),
        "{s}"
    );
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the verdicts", Duration::from_secs(300), |s| {
        s.contains("finished") && s.contains("verdict")
    });
    assert!(s.contains("verdict PASS (expected PASS"), "{s}");
    assert_eq!(
        s.matches("4/30 · all matched").count(),
        3,
        "a strip per verifier, its 4 layers matched:\n{s}"
    );
    assert_eq!(s.matches(" L29").count(), 3, "{s}");
    assert!(s.contains("challenged layers"), "{s}");
    let s = tmux.quit();
    assert!(s.contains("EXIT=0"), "{s}");
}

#[test]
fn an_interrupt_signal_from_outside_restores_the_terminal() {
    // Ctrl-C typed in the console is a key (raw mode); `kill -INT` from a script is a signal,
    // and must end the session as cleanly as a quit.
    let data = tempfile::tempdir().unwrap();
    let stty = data.path().join("stty");
    let go = data.path().join("go");
    let script = format!(
        "stty -g > {s}.before; (while [ ! -e {go} ]; do sleep 0.1; done; pkill -INT -P $$ -x verillm-tui) & \
         VERILLM_DATA_DIR={d} {bin}; echo EXIT=$?; stty -g > {s}.after; sleep 60",
        s = stty.display(),
        go = go.display(),
        d = data.path().display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
    );
    let tmux = Tmux::launch("sigint", &script);
    std::fs::write(&go, b"").unwrap();
    let s = tmux.wait_for("the program to exit", Duration::from_secs(20), |s| {
        s.contains("EXIT=")
    });
    assert!(
        !s.contains("pick an experiment"),
        "alternate screen left:\n{s}"
    );
    let alternate = tmux
        .cmd()
        .args(["display", "-p", "-t", "sigint", "#{alternate_on}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&alternate.stdout).trim(), "0");
    tmux.wait_for("stty", Duration::from_secs(5), |_| {
        stty.with_extension("after").exists()
    });
    let before = std::fs::read_to_string(stty.with_extension("before")).unwrap();
    let after = std::fs::read_to_string(stty.with_extension("after")).unwrap();
    assert_eq!(before, after, "terminal modes restored after SIGINT");
    // 128 + SIGINT, as a shell reports a process a signal ended: a script can tell it from a quit.
    assert!(s.contains("EXIT=130"), "{s}");
    // The log says when (in UTC a person reads) the console started and that a signal ended it.
    let log = std::fs::read_to_string(data.path().join("logs/verillm-tui.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let stamp = line.split(' ').next().unwrap();
        assert!(
            stamp.len() == 20
                && stamp.starts_with("20")
                && stamp.ends_with('Z')
                && stamp.contains('T'),
            "{log}"
        );
    }
    assert!(lines[0].contains(" Info console started (pid "), "{log}");
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("Info console closed by signal 2 (SIGINT)"),
        "{log}"
    );
}

#[test]
fn an_unusable_data_directory_is_named_on_the_first_screen() {
    // A file where the data directory should be: found at start-up, not when a run ends.
    let scratch = tempfile::tempdir().unwrap();
    let not_a_dir = scratch.path().join("data-file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let script = format!(
        "{bin} --data-dir {d}; echo EXIT=$?; sleep 60",
        d = not_a_dir.display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
    );
    let tmux = Tmux::launch("baddata", &script);
    let s = tmux.screen();
    assert!(
        s.contains(&format!(
            "the data directory {} cannot be used",
            not_a_dir.display()
        )),
        "{s}"
    );
    let s = tmux.quit();
    assert!(s.contains("EXIT=0"), "{s}");
}

#[test]
fn a_termination_signal_during_a_run_keeps_its_partial_bundle() {
    // A supervisor's SIGTERM gets the grace a quit gets: the inference cancelled mid-way is
    // saved as a bundle before the console ends.
    let data = tempfile::tempdir().unwrap();
    let go = data.path().join("go");
    let script = format!(
        "(while [ ! -e {go} ]; do sleep 0.1; done; pkill -TERM -P $$ -x verillm-tui) & \
         VERILLM_DATA_DIR={d} {bin}; echo EXIT=$?; sleep 60",
        go = go.display(),
        d = data.path().display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
    );
    let tmux = Tmux::launch("sigterm", &script);
    tmux.set_trials_and_tokens("1", "512");
    tmux.keys(&["Enter"]);
    tmux.wait_for_tokens(512, 8);
    std::fs::write(&go, b"").unwrap();
    let s = tmux.wait_for("the program to exit", Duration::from_secs(30), |s| {
        s.contains("EXIT=")
    });
    assert!(s.contains("EXIT=143"), "{s}");
    let (_, manifest) = only_exp1_run_first_bundle(data.path());
    assert_eq!(manifest["cancelled"], true);
    assert!(manifest["output_ids"].as_array().unwrap().len() >= 8);
}

#[test]
fn a_terminal_that_goes_away_mid_run_is_a_hang_up_that_keeps_the_bundle() {
    // The window closes while its shell ignores SIGHUP, so no signal reaches the console: its
    // terminal just stops working. That must end it like a hang-up (exit 129), with the
    // interrupted inference saved, not as an I/O error.
    let data = tempfile::tempdir().unwrap();
    let status = data.path().join("status");
    let script = format!(
        "trap '' HUP; VERILLM_DATA_DIR={d} {bin}; echo $? > {status}",
        d = data.path().display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
        status = status.display(),
    );
    let tmux = Tmux::launch("gone", &script);
    tmux.set_trials_and_tokens("1", "512");
    tmux.keys(&["Enter"]);
    tmux.wait_for_tokens(512, 8);
    let _ = tmux.cmd().args(["kill-session", "-t", "gone"]).status();
    // stderr was that terminal too: nothing may panic writing to it (101).
    assert_eq!(exit_status_written_to(&status), "129");
    let (_, manifest) = only_exp1_run_first_bundle(data.path());
    assert_eq!(manifest["cancelled"], true);

    // An idle console notices too (its input only reads end-of-file): it must not linger.
    let idle_status = data.path().join("idle-status");
    let script = format!(
        "trap '' HUP; VERILLM_DATA_DIR={d} {bin}; echo $? > {status}",
        d = data.path().display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
        status = idle_status.display(),
    );
    let idle = Tmux::launch("gone-idle", &script);
    let _ = idle
        .cmd()
        .args(["kill-session", "-t", "gone-idle"])
        .status();
    assert_eq!(exit_status_written_to(&idle_status), "129");
}

/// The exit status a pane's script wrote to `path` once the console ended (30 s at most).
fn exit_status_written_to(path: &Path) -> String {
    let start = Instant::now();
    while !path.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(path)
        .expect("the console ended")
        .trim()
        .to_string()
}

/// The bundle of trial 0 of the one exp1 run in the data directory, and its manifest.
fn only_exp1_run_first_bundle(data: &Path) -> (std::path::PathBuf, serde_json::Value) {
    let runs: Vec<_> = std::fs::read_dir(data.join("exp1"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1);
    let bundle = runs[0].path().join("trial_000");
    let manifest =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    (bundle, manifest)
}

#[test]
fn cancelling_a_run_keeps_the_generated_tokens_as_a_bundle() {
    let data = tempfile::tempdir().unwrap();
    let script = format!(
        "VERILLM_DATA_DIR={d} {bin}; echo EXIT=$?; sleep 60",
        d = data.path().display(),
        bin = env!("CARGO_BIN_EXE_verillm-tui"),
    );
    let tmux = Tmux::launch("cancel", &script);
    // One trial with a long budget, so the cancel lands during inference.
    tmux.set_trials_and_tokens("1", "512");
    tmux.keys(&["Enter"]);
    tmux.wait_for_tokens(512, 16);
    tmux.keys(&["c"]);
    tmux.wait_for("the cancel question", Duration::from_secs(10), |s| {
        s.contains("Cancel exp1?")
    });
    tmux.keys(&["y"]);
    let s = tmux.wait_for("the cancelled run", Duration::from_secs(60), |s| {
        s.contains("cancelled")
    });
    assert!(s.contains("incomplete"), "{s}");
    let (bundle, manifest) = only_exp1_run_first_bundle(data.path());
    let tokens = manifest["output_ids"].as_array().unwrap().len();
    assert!(
        (16..512).contains(&tokens),
        "kept {tokens} generated tokens"
    );
    assert!(bundle.join("hidden_states.safetensors").exists());
    assert_eq!(manifest["cancelled"], true);
    // Verified later, its checks are real but the trial is marked incomplete: a prefix of an
    // output is not a finished inference.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verillm-tui"))
        .args([
            "verify",
            bundle.to_str().unwrap(),
            "--json",
            "--threads",
            "1",
        ])
        .env("VERILLM_DATA_DIR", data.path())
        .env_remove("VERILLM_CONFIG_DIR")
        .output()
        .unwrap();
    let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(verified["complete"], false, "{verified}");
    assert_eq!(verified["summary"]["final_verdict"], "PASS", "{verified}");
    let s = tmux.quit();
    assert!(s.contains("EXIT=0"), "{s}");
}

/// PNGs in `dir` and its subfolders (the console exports into one folder per trial run).
fn count_pngs(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    count_pngs(&path)
                } else {
                    usize::from(path.extension().is_some_and(|x| x == "png"))
                }
            })
            .sum()
    })
}
