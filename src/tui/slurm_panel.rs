//! The results view's panel of runs submitted to Slurm (`run --slurm`): each run's trials as
//! they land in its folder, with the Slurm job ids producing them.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::widgets::{focus_block, verdict_style};
use crate::experiment::slurm::watch::SlurmRunWatch;
use crate::util::escape_controls;

/// Runs shown; the newest first.
const MAX_SHOWN: usize = 3;

/// Rows the panel needs: two per run shown, plus its border.
pub fn height(runs: &[SlurmRunWatch]) -> u16 {
    2 + 2 * runs.len().min(MAX_SHOWN) as u16
}

pub fn render(frame: &mut Frame, area: Rect, runs: &[SlurmRunWatch]) {
    let more = runs.len().saturating_sub(MAX_SHOWN);
    let title = if more > 0 {
        format!(
            "Submitted to Slurm · {} runs ({more} older not shown)",
            runs.len()
        )
    } else {
        "Submitted to Slurm".to_string()
    };
    let block = focus_block(&title, false);
    let dim = Style::default().fg(Color::DarkGray);
    let mut lines = Vec::new();
    for run in runs.iter().take(MAX_SHOWN) {
        let (status, status_style) = match &run.collected_missing {
            None => (
                "queued or running".to_string(),
                Style::default().fg(Color::Yellow),
            ),
            Some(missing) if missing.is_empty() => {
                ("collected".to_string(), Style::default().fg(Color::Green))
            }
            Some(missing) => (
                format!(
                    "collected, missing trial {} (run --resume)",
                    missing
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Style::default().fg(Color::Red),
            ),
        };
        let jobs = run
            .jobs
            .iter()
            .map(|(stage, id)| format!("{stage} {id}"))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(Line::from(vec![
            Span::styled(
                escape_controls(&run.experiment).into_owned(),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "{} · {}/{} trials landed, {}/{} bundles · ",
                run.protocol.label(),
                run.landed.len(),
                run.planned,
                run.bundles,
                run.planned
            )),
            Span::styled(status, status_style),
        ]));
        let mut second = vec![Span::raw(format!("  jobs {jobs} · "))];
        for trial in &run.landed {
            second.push(Span::raw(format!("trial {} ", trial.trial)));
            second.push(Span::styled(
                trial.verdict.to_string(),
                verdict_style(trial.verdict.is_pass()),
            ));
            second.push(Span::raw(format!(" {:.1}% · ", trial.accept_rate * 100.0)));
        }
        second.push(Span::styled(
            escape_controls(&run.run_dir.display().to_string()).into_owned(),
            dim,
        ));
        lines.push(Line::from(second));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
