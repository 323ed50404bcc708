//! The matrix view's state: which matrix folder it shows, the trial files parsed so far, and the
//! grid aggregated from them. Re-read every second while the view is open: a trial file is
//! parsed once (they are written whole and never change), so the grid fills as trials finish.
//! Drawing and keys are in matrix_view.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::experiment::matrix::{aggregate, cell_dir, CellTrials, MatrixReport};
use crate::experiment::matrix_run::{read_plan, MatrixPlan, PLAN_FILE};
use crate::record::results::TrialResult;

/// How often the open view re-reads the matrix folder.
pub const MATRIX_REFRESH: Duration = Duration::from_secs(1);
/// Trial files parsed per refresh at most, so that opening a large finished matrix never
/// freezes a frame for long (the rest come on the next refreshes).
const PARSE_PER_REFRESH: usize = 64;

pub const MATRIX_KEYS: [(&str, &str); 5] = [
    ("q", "back"),
    ("↑↓←→", "cell"),
    ("Enter", "open the cell's run"),
    ("r", "results"),
    ("?", "help"),
];

#[derive(Debug, Default)]
pub struct MatrixViewState {
    /// The matrix folder shown.
    pub dir: Option<PathBuf>,
    pub plan: Option<MatrixPlan>,
    /// Parsed trial files by path.
    trials: BTreeMap<PathBuf, TrialResult>,
    pub report: Option<MatrixReport>,
    pub row: usize,
    pub col: usize,
    /// Why nothing can be shown (no matrix yet, an unreadable file).
    pub problem: Option<String>,
    pub refreshed: Option<Instant>,
    /// The run view was opened from here: `q` there comes back.
    pub opened_cell: bool,
}

/// The newest matrix folder (by name: `matrix-<UTC time>` sorts by time) under `root` that
/// has a plan.
pub fn newest_matrix(root: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(PLAN_FILE).is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl MatrixViewState {
    pub fn due(&self) -> bool {
        self.refreshed
            .is_none_or(|at| at.elapsed() >= MATRIX_REFRESH)
    }

    /// Re-reads the newest matrix under `root` (`<data>/matrix`); true when what is shown changed.
    pub fn refresh(&mut self, root: &Path) -> bool {
        self.refreshed = Some(Instant::now());
        let Some(dir) = newest_matrix(root) else {
            let problem = Some(format!(
                "no matrix in {} yet: run `verillm-tui matrix` (its folder fills this view as trials finish)",
                root.display()
            ));
            let changed = self.problem != problem;
            self.problem = problem;
            return changed;
        };
        self.load(&dir)
    }

    /// Reads the matrix folder `dir`, parsing trial files not seen before.
    pub fn load(&mut self, dir: &Path) -> bool {
        if self.dir.as_deref() != Some(dir) {
            *self = MatrixViewState {
                opened_cell: self.opened_cell,
                ..Default::default()
            };
            self.dir = Some(dir.to_path_buf());
        }
        self.refreshed = Some(Instant::now());
        let plan = match read_plan(dir) {
            Ok(plan) => plan,
            Err(e) => {
                self.problem = Some(format!("{e:#}"));
                return true;
            }
        };
        let mut parsed = 0;
        let mut cells = CellTrials::new();
        let mut problem = None;
        for (r, p) in plan.config.cells() {
            let (row, pairing) = (&plan.config.rows[r], &plan.config.pairings[p]);
            let cell = cell_dir(dir, &row.id, &pairing.id);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&cell)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("trial_") && n.ends_with(".json"))
                })
                .collect();
            files.sort();
            let mut trials = Vec::new();
            for file in files {
                if !self.trials.contains_key(&file) {
                    if parsed >= PARSE_PER_REFRESH {
                        continue;
                    }
                    parsed += 1;
                    match read_trial(&file) {
                        Ok(t) => {
                            self.trials.insert(file.clone(), t);
                        }
                        Err(e) => {
                            problem = Some(e);
                            continue;
                        }
                    }
                }
                trials.push(self.trials[&file].clone());
            }
            cells.insert((row.id.clone(), pairing.id.clone()), trials);
        }
        let report = aggregate(&plan.config, &plan.config_file, plan.started_at, &cells);
        // Reports hold NaN rates for empty cells, so they are compared by what fills them.
        let count = |r: &MatrixReport| r.cells.iter().map(|c| c.trials.len()).sum::<usize>();
        let changed =
            self.report.as_ref().map(count) != Some(count(&report)) || self.problem != problem;
        self.row = self.row.min(report.rows.len().saturating_sub(1));
        self.col = self.col.min(report.pairings.len().saturating_sub(1));
        self.report = Some(report);
        self.plan = Some(plan);
        self.problem = problem;
        changed
    }

    pub(super) fn selected_ids(&self) -> Option<(String, String)> {
        let report = self.report.as_ref()?;
        Some((
            report.rows.get(self.row)?.id.clone(),
            report.pairings.get(self.col)?.id.clone(),
        ))
    }
}

fn read_trial(path: &Path) -> Result<TrialResult, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let trial: TrialResult =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    trial
        .check_consistency()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(trial)
}
