//! `verillm-tui report`: one row per run, computed from its summary and trial files — accept
//! rate, verdicts against the expectation, the distribution of the relative L2 error over every
//! check, decode speed and verification overhead. It turns a results folder (say, one brought
//! back from a GPU machine) into the table a write-up needs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::record::input::{load_input, PlotInput};
use crate::record::results::{RunSummary, TrialResult, TrialVerdict};
use crate::stats::aggregate::{percentile_of_sorted, sorted_worst_last};
use crate::stats::metrics::float_serde;

/// Folders below a given one are searched this deep for `summary.json` files.
const MAX_SEARCH_DEPTH: usize = 8;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRow {
    pub path: PathBuf,
    pub experiment: String,
    pub pairing: String,
    pub trials: usize,
    pub expected: TrialVerdict,
    pub passed: usize,
    pub rejected: usize,
    /// Mean over trials of the verifiers' mean accept rate.
    pub accept_rate: f64,
    pub checks: usize,
    // The figures below are NaN without checks and infinite with a non-finite check; they are
    // written as "nan"/"inf" like the result files, not as JSON null.
    /// Relative L2 error over every check of every verifier: median, 99th percentile, maximum.
    #[serde(serialize_with = "float_serde::serialize")]
    pub rel_l2_p50: f64,
    #[serde(serialize_with = "float_serde::serialize")]
    pub rel_l2_p99: f64,
    #[serde(serialize_with = "float_serde::serialize")]
    pub rel_l2_max: f64,
    /// Mean exponent-mismatch rate over every check.
    #[serde(serialize_with = "float_serde::serialize")]
    pub pe_mean: f64,
    /// Mean decode speed of the inferencer (the decode loop alone, as `bench` measures it),
    /// tokens per second; NaN when no trial file records its decode time.
    #[serde(serialize_with = "float_serde::serialize")]
    pub decode_tokens_per_s: f64,
    pub avg_overhead_percentage: f64,
    /// Trials run side by side: above 1 they shared the CPU, so speeds are not clean.
    pub jobs: usize,
    /// Trials without a single check (no generated tokens): no verdict, left out of the figures.
    pub no_verdict: usize,
    pub complete: bool,
}

/// The summary files named, and those found below the folders named (in name order).
pub fn find_summaries(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(!paths.is_empty(), "no result files or folders given");
    let mut found = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{}: cannot be read", path.display()))?;
        if meta.is_dir() {
            let before = found.len();
            search(path, 0, &mut found)?;
            if found.len() == before {
                bail!("{}: no summary.json below this folder", path.display());
            }
        } else {
            found.push(path.clone());
        }
    }
    Ok(found)
}

fn search(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|entry| entry.ok())
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        // Links are not followed: a results folder from elsewhere must not lead out of itself.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() && depth < MAX_SEARCH_DEPTH {
            search(&path, depth + 1, found)?;
        } else if kind.is_file() && entry.file_name() == "summary.json" {
            found.push(path);
        }
    }
    Ok(())
}

/// Rows of every summary that can be read, and for each one that cannot, why: one broken or
/// half-written run (say, one cut short on another machine) must not hide the others. An error
/// only when no row at all can be made.
pub fn load_rows(paths: &[PathBuf]) -> Result<(Vec<RunRow>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for path in find_summaries(paths)? {
        match load_row(&path) {
            Ok(row) => rows.push(row),
            Err(error) => skipped.push(format!("{error:#}")),
        }
    }
    if rows.is_empty() {
        bail!("no run summary could be read: {}", skipped.join("; "));
    }
    Ok((rows, skipped))
}

/// `verillm-tui report`: the rows on stdout (Markdown, or JSON), what was skipped on stderr.
pub fn print_rows(paths: &[PathBuf], json: bool) -> Result<()> {
    let (rows, skipped) = load_rows(paths)?;
    for reason in &skipped {
        eprintln!("skipped: {}", crate::util::escape_controls(reason));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", format_markdown(&rows));
    }
    Ok(())
}

/// Reads one run summary with its trials and computes its row.
pub fn load_row(path: &Path) -> Result<RunRow> {
    match load_input(path)? {
        PlotInput::Summary {
            summary, trials, ..
        } => {
            let trials: Vec<TrialResult> = trials.into_iter().map(|(_, t)| t).collect();
            run_row(path, &summary, &trials)
        }
        _ => bail!("{}: not a run summary (summary.json)", path.display()),
    }
}

/// The row of one run. A trial without a single check (its inference stopped before the first
/// token) has no verdict: it is counted apart, never as a REJECT or an accept rate of 0, and a
/// run with no check at all has no row (an error naming it), never a row of NaN.
pub fn run_row(path: &Path, summary: &RunSummary, all_trials: &[TrialResult]) -> Result<RunRow> {
    let has_checks = |t: &TrialResult| t.verifiers.iter().any(|v| !v.statistics.checks.is_empty());
    let trials: Vec<TrialResult> = all_trials
        .iter()
        .filter(|t| has_checks(t))
        .cloned()
        .collect();
    let no_verdict = all_trials.len() - trials.len();
    if trials.is_empty() {
        bail!(
            "{}: no verdict: none of its {} trial(s) has a check (no generated tokens)",
            path.display(),
            all_trials.len()
        );
    }
    let checks: Vec<_> = trials
        .iter()
        .flat_map(|t| &t.verifiers)
        .flat_map(|v| &v.statistics.checks)
        .collect();
    let rel_l2 = sorted_worst_last(&checks.iter().map(|c| c.metrics.rel_l2).collect::<Vec<_>>());
    let mean = |values: &mut dyn Iterator<Item = f64>| {
        let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        }
    };
    let verdicts = |verdict| {
        trials
            .iter()
            .filter(|t| t.summary.final_verdict == verdict)
            .count()
    };
    Ok(RunRow {
        path: path.to_path_buf(),
        experiment: summary.experiment.clone(),
        pairing: summary.pairing.clone(),
        jobs: summary.jobs.unwrap_or(1),
        trials: trials.len(),
        expected: summary.expected_verdict,
        passed: verdicts(TrialVerdict::Pass),
        rejected: verdicts(TrialVerdict::Reject),
        accept_rate: mean(&mut trials.iter().map(|t| t.summary.avg_accept_rate)),
        checks: checks.len(),
        rel_l2_p50: percentile_of_sorted(&rel_l2, 50.0),
        rel_l2_p99: percentile_of_sorted(&rel_l2, 99.0),
        rel_l2_max: rel_l2.last().copied().unwrap_or(f64::NAN),
        pe_mean: mean(&mut checks.iter().map(|c| c.metrics.pe)),
        decode_tokens_per_s: mean(
            &mut trials
                .iter()
                .filter_map(|t| t.inference.decode_tokens_per_s()),
        ),
        avg_overhead_percentage: summary.aggregate.avg_overhead_percentage,
        no_verdict,
        complete: summary.complete && no_verdict == 0 && trials.iter().all(|t| t.complete),
    })
}

/// The rows as a Markdown table.
pub fn format_markdown(rows: &[RunRow]) -> String {
    let mut out = String::from(
        "| exp | pairing | trials | accept rate | verdicts (expected) | rel L2 p50 / p99 / max | Pe mean | decode tok/s | overhead |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let held = match r.expected {
            TrialVerdict::Pass => r.passed,
            TrialVerdict::Reject => r.rejected,
        };
        let verdicts = if r.passed > 0 && r.rejected > 0 {
            format!("PASS {} · REJECT {}", r.passed, r.rejected)
        } else if r.rejected > 0 {
            format!("REJECT {}/{}", r.rejected, r.trials)
        } else {
            format!("PASS {}/{}", r.passed, r.trials)
        };
        let verdicts = if r.no_verdict > 0 {
            format!("{verdicts} · no verdict {}", r.no_verdict)
        } else {
            verdicts
        };
        let mark = if held == r.trials { "✓" } else { "✗" };
        let incomplete = if r.complete { "" } else { " (incomplete)" };
        out.push_str(&format!(
            "| {}{incomplete} | {} | {} | {:.3} | {verdicts} ({} {mark}) | {} / {} / {} | {:.4} | {} | {:.1} % |\n",
            cell(&r.experiment),
            // Speeds of trials that shared the CPU are not clean: the row says so.
            if r.jobs > 1 {
                format!("{} · {} jobs at once", cell(&r.pairing), r.jobs)
            } else {
                cell(&r.pairing)
            },
            r.trials,
            r.accept_rate,
            r.expected,
            sci(r.rel_l2_p50),
            sci(r.rel_l2_p99),
            sci(r.rel_l2_max),
            r.pe_mean,
            speed(r.decode_tokens_per_s),
            r.avg_overhead_percentage,
        ));
    }
    out
}

/// Text from a result file as one table cell: a `|` or a line break would end the cell.
fn cell(text: &str) -> String {
    // Strings from result files: other control characters are written out, never sent.
    crate::util::escape_controls(&text.replace('|', "\\|").replace(['\r', '\n'], " ")).into_owned()
}

/// A speed for the table: one decimal, or a dash when it is unknown.
fn speed(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else {
        "–".into()
    }
}

/// Two significant digits in scientific notation (`2.9e-6`), the way drift is usually quoted.
pub fn sci(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.is_finite() {
        format!("{value:.1e}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_searched_for_summaries_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("exp1").join("run-1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("summary.json"), "{}").unwrap();
        std::fs::write(run.join("trial_000.json"), "{}").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("summary.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("elsewhere")).unwrap();

        let found = find_summaries(&[root.path().to_path_buf()]).unwrap();
        assert_eq!(found, vec![run.join("summary.json")]);

        let empty = tempfile::tempdir().unwrap();
        let error = find_summaries(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(
            format!("{error:#}").contains("no summary.json"),
            "{error:#}"
        );
        let error = find_summaries(&[root.path().join("missing")]).unwrap_err();
        assert!(format!("{error:#}").contains("missing"), "{error:#}");
    }

    #[test]
    fn a_file_that_is_not_a_summary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        std::fs::write(&path, r#"{"hello": 1}"#).unwrap();
        let error = load_row(&path).unwrap_err();
        assert!(format!("{error:#}").contains("summary.json"), "{error:#}");
    }

    #[test]
    fn text_from_result_files_stays_inside_its_cell() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        // And cannot drive the terminal the table is printed on.
        assert_eq!(cell("exp1\x1b[2J"), "exp1\\u{1b}[2J");
    }

    #[test]
    fn one_unreadable_summary_is_reported_and_the_rest_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("a").join("summary.json");
        std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
        std::fs::write(&broken, "{ not json").unwrap();
        let error = load_rows(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(format!("{error:#}").contains("a/summary.json"), "{error:#}");
    }

    /// A trial with a non-finite check (an f16 overflow, a hostile bundle) is still a readable
    /// run: its summary fields are written as "inf", not as a JSON null that no reader accepts.
    #[test]
    fn a_run_with_a_non_finite_check_is_reported_with_its_decode_speed() {
        let dir = tempfile::tempdir().unwrap();
        let mut trials: Vec<TrialResult> = (0..2)
            .map(|i| crate::testutil::trials::trial("exp1", i, true, &[8, 16], 10))
            .collect();
        let verifier = &mut trials[0].verifiers[0];
        verifier.statistics.checks[3].metrics.rel_l2 = f64::INFINITY;
        verifier.statistics.summary.max_rel_l2 = f64::INFINITY;
        verifier.statistics.summary.mean_rel_l2 = f64::INFINITY;
        // Decode loops of 5 s (the fixture's) and 2 s over 10 tokens: 2 and 5 tok/s.
        trials[1].inference.decode_s = Some(2.0);
        let files = vec!["trial_000.json".to_string(), "trial_001.json".to_string()];
        for (trial, file) in trials.iter().zip(&files) {
            crate::testutil::trials::write_json(&dir.path().join(file), trial);
        }
        let mut summary = crate::testutil::trials::summary_for("exp1", &trials, files);
        summary.jobs = Some(2);
        let path = dir.path().join("summary.json");
        crate::testutil::trials::write_json(&path, &summary);

        let row = load_row(&path).unwrap();
        assert_eq!(row.rel_l2_max, f64::INFINITY);
        assert_eq!(row.jobs, 2);
        assert!((row.decode_tokens_per_s - 3.5).abs() < 1e-12, "{row:?}");
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["rel_l2_max"], "inf");
        let table = format_markdown(&[row]);
        assert!(
            table.contains("| 3.5 |") && table.contains(" · 2 jobs at once |"),
            "{table}"
        );

        // Files written before the decode time was recorded: the speed is unknown, not the
        // end-to-end rate under the decode label.
        for (trial, file) in trials.iter_mut().zip(["trial_000.json", "trial_001.json"]) {
            trial.inference.decode_s = None;
            crate::testutil::trials::write_json(&dir.path().join(file), trial);
        }
        let row = load_row(&path).unwrap();
        assert!(row.decode_tokens_per_s.is_nan());
        assert!(format_markdown(&[row]).contains("| – |"));
    }

    #[test]
    fn drift_is_quoted_with_two_significant_digits() {
        assert_eq!(sci(2.94e-6), "2.9e-6");
        assert_eq!(sci(0.0), "0");
        assert_eq!(sci(0.2049), "2.0e-1");
        assert_eq!(sci(f64::NAN), "NaN");
    }
}
