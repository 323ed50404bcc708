//! `optimize`: run honest and cheating scenarios, pool every check and accept rate, and measure
//! how well each metric separates them; recommend thresholds from the data.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::output::new_run_dir;
use super::plan::RunRequest;
use super::runner::run_experiment;
use super::workspace::Workspace;
use crate::engine::events::{CancelToken, EventSink};
use crate::model::device::DeviceProfile;
use crate::record::results::{TrialResult, TrialVerdict};
use crate::stats::metrics::{CheckMetrics, CompareDtype};
use crate::stats::optimize::{build_report_by_tier, OptimizationReport, TierChecks};

pub struct OptimizeOutcome {
    pub report: OptimizationReport,
    pub json_path: PathBuf,
    pub yaml_path: PathBuf,
    /// The recommended thresholds on trials they were not fitted on.
    pub held_out: super::optimize_holdout::HeldOutReport,
}

/// The precision tier a trial's checks were judged at (coarsest dtype of the pair).
fn trial_tier(t: &TrialResult) -> CompareDtype {
    let inference = CompareDtype::from_name(&t.inference.role.dtype).unwrap_or(CompareDtype::F32);
    // The tier each verifier was judged in, where recorded (it also counts quantized kernels'
    // activation rounding); otherwise the coarsest dtype of the roles.
    t.verifiers
        .iter()
        .filter_map(|v| match &v.tier {
            Some(tier) => CompareDtype::from_name(tier),
            None => {
                CompareDtype::from_name(&v.role.dtype).map(|d| CompareDtype::coarsest(d, inference))
            }
        })
        .fold(inference, CompareDtype::coarsest)
}

/// Splits finished trials into honest (expected PASS) and cheat (expected REJECT) data.
pub fn pool<'a>(
    trials: impl IntoIterator<Item = &'a TrialResult>,
) -> (Vec<CheckMetrics>, Vec<CheckMetrics>, Vec<f64>, Vec<f64>) {
    let (mut honest, mut cheat, mut honest_rates, mut cheat_rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in trials {
        let is_honest = t.summary.expected_verdict == TrialVerdict::Pass;
        for v in &t.verifiers {
            let checks = v.statistics.checks.iter().map(|c| c.metrics.clone());
            if is_honest {
                honest.extend(checks);
                honest_rates.push(v.statistics.summary.accept_rate);
            } else {
                cheat.extend(checks);
                cheat_rates.push(v.statistics.summary.accept_rate);
            }
        }
    }
    (honest, cheat, honest_rates, cheat_rates)
}

pub async fn optimize(
    ws: Arc<Workspace>,
    experiments: Vec<String>,
    trials: usize,
    max_new_tokens: Option<usize>,
    gpu_profile: Option<DeviceProfile>,
    sink: EventSink,
    cancel: CancelToken,
) -> Result<OptimizeOutcome> {
    let mut all = Vec::new();
    for name in &experiments {
        let req = RunRequest {
            experiment: name.clone(),
            trials: Some(trials),
            max_new_tokens,
            gpu_profile,
            jobs: 1,
            ..Default::default()
        };
        let outcome = run_experiment(ws.clone(), req, sink.clone(), cancel.clone()).await?;
        all.extend(outcome.trials);
    }
    let (honest, cheat, honest_rates, cheat_rates) = pool(&all);
    // Thresholds are per precision tier: each tier's come from the trials judged at it.
    let mut tiers: Vec<CompareDtype> = all.iter().map(trial_tier).collect();
    tiers.sort_by_key(|t| t.name());
    tiers.dedup();
    let pooled: Vec<_> = tiers
        .iter()
        .map(|&tier| {
            let (honest, cheat, _, _) = pool(all.iter().filter(|t| trial_tier(t) == tier));
            (tier, honest, cheat)
        })
        .collect();
    let by_tier: Vec<TierChecks<'_>> = pooled
        .iter()
        .map(|(tier, honest, cheat)| TierChecks {
            tier: *tier,
            honest,
            cheat,
        })
        .collect();
    let report = build_report_by_tier(
        experiments.clone(),
        trials,
        &honest,
        &cheat,
        &honest_rates,
        &cheat_rates,
        &by_tier,
    );
    let dir = new_run_dir(&ws.data_dir, "optimize")?;
    // The same experiments again on other seeds and prompts, to test what was just fitted;
    // their runs live in the optimization's own folder (held_out/<experiment>).
    let mut held_out_trials = Vec::new();
    for name in &experiments {
        let base = ws
            .config
            .experiments
            .get(name)
            .and_then(|spec| spec.seed)
            .unwrap_or(0);
        let req = RunRequest {
            experiment: name.clone(),
            trials: Some(trials),
            max_new_tokens,
            gpu_profile,
            seed: Some(base + super::optimize_holdout::HELD_OUT_SEED_OFFSET),
            out: Some(dir.join("held_out").join(name)),
            jobs: 1,
            ..Default::default()
        };
        let outcome = run_experiment(ws.clone(), req, sink.clone(), cancel.clone()).await?;
        held_out_trials.extend(outcome.trials);
    }
    let held_out = super::optimize_holdout::validate(&report, &all, &held_out_trials);
    std::fs::write(
        dir.join("held_out.json"),
        serde_json::to_vec_pretty(&held_out)?,
    )
    .with_context(|| format!("writing {}", dir.join("held_out.json").display()))?;
    let json_path = dir.join("optimization.json");
    let yaml_path = dir.join("recommended_policy.yaml");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&yaml_path, &report.recommended_yaml)?;
    Ok(OptimizeOutcome {
        report,
        json_path,
        yaml_path,
        held_out,
    })
}

/// A plain-text table of the report for the terminal.
pub fn format_report(r: &OptimizationReport) -> String {
    let mut out = format!(
        "{:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}  {:<23} {}\n",
        "metric",
        "honest p50",
        "p95",
        "p99",
        "max",
        "cheat p50",
        "AUC",
        "zero-error interval",
        "pooled threshold"
    );
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3e}"));
    for m in &r.metrics {
        let h = m.honest.as_ref();
        out.push_str(&format!(
            "{:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}  {:<23} {}\n",
            m.metric,
            f(h.map(|d| d.p50)),
            f(h.map(|d| d.p95)),
            f(h.map(|d| d.p99)),
            f(h.map(|d| d.max)),
            f(m.cheat.as_ref().map(|d| d.p50)),
            m.auc.map_or("-".into(), |a| format!("{a:.4}")),
            m.zero_error_interval
                .map_or("none".into(), |(a, b)| format!("[{a:.2e}, {b:.2e})")),
            f(m.recommended_threshold),
        ));
    }
    let rates = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    out.push_str(&format!(
        "accept rates — honest: [{}]  cheat: [{}]\n",
        rates(&r.accept_rates.honest),
        rates(&r.accept_rates.cheat)
    ));
    // What the YAML snippet says, tier by tier (the table above pools every tier's checks).
    for t in &r.tiers {
        out.push_str(&format!(
            "recommended for the {} tier ({} honest, {} cheat checks): rel_l2_max {:.3e}, \
             pe_max {:.3e}\n",
            t.tier, t.honest_checks, t.cheat_checks, t.rel_l2_max, t.pe_max
        ));
    }
    out
}
