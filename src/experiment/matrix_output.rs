//! The matrix as Markdown (`matrix.md`): the sequential test's table (detection rate of each
//! cheat, false-alarm rate of each control, with intervals and median tokens), the trial-level
//! test's table beside it, where the trial-level test closes a per-check blind spot, and the
//! calibration of each pairing.

use std::fmt::Write;

use super::matrix::{MatrixCell, MatrixReport, RowKind};

/// `0.875 [0.473, 0.997] · 3 tok` for a cheat, `FA 0.000 [0, 0.369]` for a control.
pub fn cell_text(cell: &MatrixCell) -> String {
    if cell.rejected.trials == 0 {
        return if cell.trials.is_empty() {
            "—".into()
        } else {
            "uncalibrated".into()
        };
    }
    let rate = cell.rejected.display();
    match cell.kind {
        RowKind::Control => format!("FA {rate}"),
        RowKind::Cheat => match cell.median_tokens_to_detection {
            Some(t) => format!("{rate} · {t} tok"),
            None => rate,
        },
    }
}

fn trial_level_text(cell: &MatrixCell) -> String {
    if cell.trial_level_rejected.trials == 0 {
        return "—".into();
    }
    let rate = cell.trial_level_rejected.display();
    match (cell.kind, cell.trial_level_median_tokens) {
        (RowKind::Control, _) => format!("FA {rate}"),
        (RowKind::Cheat, Some(t)) => format!("{rate} · {t} tok"),
        (RowKind::Cheat, None) => rate,
    }
}

/// A cheat cell the per-check test misses (detects under half its trials) while the
/// trial-level test catches most of them.
pub fn closes_blind_spot(cell: &MatrixCell) -> bool {
    cell.kind == RowKind::Cheat
        && cell.rejected.trials > 0
        && cell.trial_level_rejected.trials > 0
        && cell.rejected.rate < 0.5
        && cell.trial_level_rejected.rate >= 0.5
}

/// A cheat cell neither test detects in most trials.
pub fn undetected(cell: &MatrixCell) -> bool {
    cell.kind == RowKind::Cheat
        && cell.rejected.trials > 0
        && cell.rejected.rate < 0.5
        && !(cell.trial_level_rejected.trials > 0 && cell.trial_level_rejected.rate >= 0.5)
}

pub fn markdown(report: &MatrixReport) -> String {
    let mut s = String::new();
    let done: usize = report.cells.iter().map(|c| c.trials.len()).sum();
    let _ = writeln!(
        s,
        "# Cheat matrix\n\n{} trials per cell, up to {} new tokens; sequential test α = {}, β = {}; \
         intervals: Clopper–Pearson, {:.0} %; {} trials finished{}.\n",
        report.trials_per_cell,
        report.max_new_tokens,
        report.alpha,
        report.beta,
        100.0 * report.interval_confidence,
        done,
        if report.complete { "" } else { " (incomplete)" }
    );
    let header = |s: &mut String, first: &str| {
        let _ = write!(s, "| {first} |");
        for p in &report.pairings {
            let _ = write!(s, " {} |", p.label);
        }
        let _ = write!(s, "\n|---|");
        for _ in &report.pairings {
            let _ = write!(s, "---|");
        }
        s.push('\n');
    };
    let _ = writeln!(
        s,
        "## Per-check verdict: sequential test (SPRT) on the state checks, or a token check \
         failing\n\nCheat rows: detection rate [interval] · median tokens to detection. Control \
         rows: false-alarm rate (FA). Each pairing is calibrated on its control trials (a control \
         trial on the others only).\n"
    );
    header(&mut s, "row");
    for row in &report.rows {
        let _ = write!(s, "| {} |", row.id);
        for p in &report.pairings {
            let text = report.cell(&row.id, &p.id).map_or("—".into(), cell_text);
            let _ = write!(s, " {text} |");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\nWho rejected (trials): sequential test on the state checks / token checks.\n"
    );
    header(&mut s, "row");
    for row in &report.rows {
        let _ = write!(s, "| {} |", row.id);
        for p in &report.pairings {
            let text = report.cell(&row.id, &p.id).map_or("—".into(), |c| {
                format!(
                    "{} / {} of {}",
                    c.sprt_cheat, c.token_rejected, c.rejected.trials
                )
            });
            let _ = write!(s, " {text} |");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n## Trial-level test (mean log10 rel L2 per token against the pairing's honest \
         distribution, one-sided at α)\n"
    );
    header(&mut s, "row");
    for row in &report.rows {
        let _ = write!(s, "| {} |", row.id);
        for p in &report.pairings {
            let text = report
                .cell(&row.id, &p.id)
                .map_or("—".into(), trial_level_text);
            let _ = write!(s, " {text} |");
        }
        s.push('\n');
    }
    let blind: Vec<String> = report
        .cells
        .iter()
        .filter(|c| closes_blind_spot(c))
        .map(|c| format!("{} on {}", c.row, c.pairing))
        .collect();
    let missed: Vec<String> = report
        .cells
        .iter()
        .filter(|c| undetected(c))
        .map(|c| format!("{} on {}", c.row, c.pairing))
        .collect();
    let _ =
        writeln!(
        s,
        "\nThe trial-level test closes a per-check blind spot for: {}.\n\nNot detected by either \
         test (in most trials): {}.\n",
        if blind.is_empty() { "none".into() } else { blind.join(", ") },
        if missed.is_empty() { "none".into() } else { missed.join(", ") }
    );
    let _ = writeln!(
        s,
        "## Calibration\n\n| pairing | honest trials | rejected / checks | p0 (95 % upper) | p1 | \
         honest mean log10 rel L2 | token sd | trial-mean sd |\n|---|---|---|---|---|---|---|---|"
    );
    for c in &report.calibration {
        let (mean, sd, tsd) = c.profile.map_or(
            ("—".to_string(), "—".to_string(), "—".to_string()),
            |p| {
                (
                    format!("{:.3}", p.mean),
                    format!("{:.3}", p.token_sd),
                    p.trial_mean_sd.map_or("—".into(), |v| format!("{v:.3}")),
                )
            },
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {:.2e} | {} | {mean} | {sd} | {tsd} |",
            c.pairing, c.honest.trials, c.honest.rejected, c.honest.checks, c.p0, c.p1
        );
    }
    let _ = writeln!(s, "\n## Cutoff rule (before issue 18), trials rejected\n");
    header(&mut s, "row");
    for row in &report.rows {
        let _ = write!(s, "| {} |", row.id);
        for p in &report.pairings {
            let text = report.cell(&row.id, &p.id).map_or("—".into(), |c| {
                format!("{}/{}", c.cutoff_rejected, c.trials.len())
            });
            let _ = write!(s, " {text} |");
        }
        s.push('\n');
    }
    s
}
