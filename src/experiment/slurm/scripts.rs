//! The job scripts: plain, readable bash, one per stage. Every path is single-quoted (spaces,
//! quotes and `$` in a path are carried as they are), the binary is referenced by absolute path,
//! and `#SBATCH` lines carry only validated option values (no paths: the output files and the
//! array are given on sbatch's command line, as separate arguments).

use super::{JobFolder, JobPlan, Stage};

/// `text` as one bash word: single-quoted, with `'` written as `'\''`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// One job script, independent of what it runs: a batch of array tasks of the cheat matrix can
/// be described by the same fields.
#[derive(Debug, Clone)]
pub struct ScriptSpec {
    pub job_name: String,
    /// Comment lines saying what the script does (without the leading `# `).
    pub about: Vec<String>,
    /// `#SBATCH` options (`--partition=gpu`): validated values only.
    pub sbatch: Vec<String>,
    /// Shell variables set before the command: (NAME, value), value quoted here.
    pub vars: Vec<(String, String)>,
    /// Whether the task is an array element (`SLURM_ARRAY_TASK_ID` is its index).
    pub array: bool,
    /// The command, referring to the variables as "$NAME".
    pub command: Vec<String>,
}

impl ScriptSpec {
    pub fn render(&self) -> String {
        let mut out = String::from("#!/bin/bash\n");
        for line in &self.about {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("#SBATCH --job-name={}\n", self.job_name));
        for option in &self.sbatch {
            out.push_str(&format!("#SBATCH {option}\n"));
        }
        out.push_str("set -euo pipefail\n\n");
        for (name, value) in &self.vars {
            out.push_str(&format!("{name}={}\n", shell_quote(value)));
        }
        if self.array {
            out.push_str(
                "TRIAL=\"${SLURM_ARRAY_TASK_ID:?run this script as an array task (sbatch --array)}\"\n",
            );
        }
        out.push_str(
            "# Node-local scratch for the task's private state (work files, logs): the job's own\n\
             # temporary folder when the site sets one, else TMPDIR, else /tmp. Removed at exit.\n\
             SCRATCH=\"$(mktemp -d \"${SLURM_TMPDIR:-${TMPDIR:-/tmp}}/verillm-${SLURM_JOB_ID:-nojob}.XXXXXX\")\"\n\
             trap 'rm -rf -- \"$SCRATCH\"' EXIT\n",
        );
        out.push_str(&format!(
            "echo \"{}{}: job ${{SLURM_JOB_ID:-none}} on $(hostname), CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}}\"\n\n",
            self.job_name,
            if self.array { " trial $TRIAL" } else { "" }
        ));
        out.push_str(&self.command.join(" \\\n    "));
        out.push('\n');
        out
    }
}

/// The three scripts of an experiment run, in stage order.
pub fn experiment_scripts(plan: &JobPlan, folder: &JobFolder) -> Vec<(Stage, ScriptSpec)> {
    let mut sbatch = Vec::new();
    let options = &plan.options;
    if let Some(p) = &options.partition {
        sbatch.push(format!("--partition={p}"));
    }
    if let Some(a) = &options.account {
        sbatch.push(format!("--account={a}"));
    }
    if let Some(t) = &options.time {
        sbatch.push(format!("--time={t}"));
    }
    let vars = vec![
        (
            "BIN".to_string(),
            plan.binary.to_string_lossy().into_owned(),
        ),
        (
            "RUN_DIR".to_string(),
            folder.root.to_string_lossy().into_owned(),
        ),
        (
            "MODEL_DIR".to_string(),
            plan.model_dir.to_string_lossy().into_owned(),
        ),
    ];
    let mut global = vec![
        "\"$BIN\"".to_string(),
        "--model-dir \"$MODEL_DIR\"".to_string(),
        "--config-dir \"$RUN_DIR/slurm/config\"".to_string(),
        "--data-dir \"$SCRATCH/data\"".to_string(),
    ];
    if let Some(threads) = plan.threads {
        global.push(format!("--threads {threads}"));
    }
    let experiment = &plan.experiment;
    let job = |stage: Stage| format!("verillm-{experiment}-{}", stage.name());
    Stage::ALL
        .into_iter()
        .map(|stage| {
            let (about, gres, array, task): (Vec<String>, bool, bool, Vec<String>) = match stage {
                Stage::Infer => (
                    vec![
                        format!("verillm-tui · {experiment} · inference: array task N runs trial N."),
                        "Decodes the trial's prompt with hidden-state capture and writes its bundle to"
                            .into(),
                        "$RUN_DIR/bundles/trial_NNN (built in scratch, moved into place whole). A trial"
                            .into(),
                        "whose bundle is already there is not run again.".into(),
                    ],
                    true,
                    true,
                    vec![
                        "slurm-task infer \"$RUN_DIR\" --trial \"$TRIAL\" --scratch \"$SCRATCH\""
                            .into(),
                    ],
                ),
                Stage::Verify => (
                    vec![
                        format!("verillm-tui · {experiment} · verification: array task N verifies trial N."),
                        "Starts once inference task N succeeded (--dependency=aftercorr); every verifier"
                            .into(),
                        "of the experiment recomputes the bundle with one prefill on its own device".into(),
                        "profile and the trial's result is written to $RUN_DIR/trial_NNN.json. A trial"
                            .into(),
                        "already verified is not verified again.".into(),
                    ],
                    true,
                    true,
                    vec!["slurm-task verify \"$RUN_DIR\" --trial \"$TRIAL\"".into()],
                ),
                Stage::Collect => (
                    vec![
                        format!("verillm-tui · {experiment} · collect: one job after every verification task"),
                        "ended, however it ended (--dependency=afterany). Writes $RUN_DIR/summary.json".into(),
                        "over the trials that landed, and $RUN_DIR/slurm/collect.json naming each missing"
                            .into(),
                        "trial with the Slurm state of its tasks (sacct). `run --resume` submits those again."
                            .into(),
                    ],
                    false,
                    false,
                    vec!["slurm-task collect \"$RUN_DIR\"".into()],
                ),
            };
            let mut options = sbatch.clone();
            if gres {
                if let Some(g) = &plan.options.gres {
                    options.push(format!("--gres={g}"));
                }
            }
            let mut command = global.clone();
            command.extend(task);
            (
                stage,
                ScriptSpec {
                    job_name: job(stage),
                    about,
                    sbatch: options,
                    vars: vars.clone(),
                    array,
                    command,
                },
            )
        })
        .collect()
}

/// Writes the scripts into the folder (executable), returning their paths.
pub fn write_scripts(plan: &JobPlan, folder: &JobFolder) -> anyhow::Result<()> {
    for (stage, spec) in experiment_scripts(plan, folder) {
        let path = folder.script_path(stage);
        crate::util::write_file_atomic(&path, spec.render().as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| anyhow::anyhow!("{}: making it executable: {e}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::slurm::{SlurmOptions, SLURM_FORMAT_VERSION};

    fn plan(root: &str) -> (JobPlan, JobFolder) {
        let plan = JobPlan {
            format_version: SLURM_FORMAT_VERSION,
            experiment: "exp1".into(),
            trials: 2,
            verifiers: None,
            max_new_tokens: Some(8),
            min_new_tokens: None,
            seed: None,
            gpu: None,
            binary: "/opt/it's here/verillm-tui".into(),
            model_dir: "/models dir".into(),
            threads: Some(1),
            options: SlurmOptions {
                partition: Some("gpu".into()),
                gres: Some("gpu:1".into()),
                ..Default::default()
            },
            created_at: 0,
            protocol: Default::default(),
        };
        (plan, JobFolder::new(root))
    }

    #[test]
    fn quoting_survives_bash() {
        for text in [
            "plain",
            "with space",
            "it's",
            "$HOME `id` \"x\"",
            "a\nb",
            "",
        ] {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(text)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
        }
    }

    #[test]
    fn scripts_quote_every_path_and_name_the_binary_absolutely() {
        let (plan, folder) = plan("/shared/my runs/exp1 run");
        let scripts = experiment_scripts(&plan, &folder);
        assert_eq!(scripts.len(), 3);
        let infer = scripts[0].1.render();
        assert!(
            infer.contains("BIN='/opt/it'\\''s here/verillm-tui'"),
            "{infer}"
        );
        assert!(
            infer.contains("RUN_DIR='/shared/my runs/exp1 run'"),
            "{infer}"
        );
        assert!(infer.contains("#SBATCH --partition=gpu\n"));
        assert!(infer.contains("#SBATCH --gres=gpu:1\n"));
        assert!(infer.contains("slurm-task infer \"$RUN_DIR\" --trial \"$TRIAL\""));
        // The collect job needs no GPU.
        let collect = scripts[2].1.render();
        assert!(!collect.contains("--gres"), "{collect}");
        assert!(!collect.contains("SLURM_ARRAY_TASK_ID"));
        // Every script is valid bash.
        for (_, spec) in &scripts {
            let status = std::process::Command::new("bash")
                .arg("-n")
                .arg("-c")
                .arg(spec.render())
                .status()
                .unwrap();
            assert!(status.success(), "{}", spec.render());
        }
    }
}
