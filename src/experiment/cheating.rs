//! The experiment side of the cheats (engine::cheat): what a cheat needs that only the
//! experiment knows (another prompt of the category, the prompt without its system turn, a
//! second model of the inference role), then the engine's cheating inference.

use anyhow::{bail, Context, Result};

use super::config::{PromptCategory, Role};
use super::plan::TrialPlan;
use super::workspace::Workspace;
use crate::engine::cheat::{generate_cheating, Cheat, CheatInputs};
use crate::engine::events::{CancelToken, EventSink, LogLevel};
use crate::engine::inference::InferenceOutput;
use crate::model::chat::render_prompt;
use crate::model::LoadedModel;

/// Runs the plan's inference with `cheat` applied; the caller describes it as the honest
/// request's bundle (prompt ids `prompt_ids`, the plan's sampling and inference role).
#[allow(clippy::too_many_arguments)]
pub fn infer_cheating(
    ws: &Workspace,
    plan: &TrialPlan,
    model: &LoadedModel,
    prompt_ids: &[u32],
    layers: &[usize],
    sink: &EventSink,
    cancel: &CancelToken,
    cheat: &Cheat,
) -> Result<InferenceOutput> {
    let decoded = match cheat {
        Cheat::OtherPrompt => Some(other_prompt_ids(ws, plan, model)?),
        Cheat::DropSystemPrompt => {
            Some(render_prompt(model, &without_system_prompt(&plan.messages))?.1)
        }
        _ => None,
    };
    let other = match cheat.other_precision() {
        Some(precision) => Some(ws.load_reporting(
            &Role {
                precision,
                ..plan.inference.clone()
            },
            sink,
        )?),
        None => None,
    };
    let inputs = CheatInputs {
        decoded_prompt_ids: decoded.as_deref(),
        other_model: other.as_ref(),
    };
    let out = generate_cheating(
        model,
        cheat,
        &inputs,
        prompt_ids,
        &plan.sampling,
        layers,
        sink,
        plan.trial,
        cancel,
    )
    .with_context(|| format!("trial {}: cheat {}", plan.trial, cheat.label()))?;
    let mut note = format!(
        "trial {}: cheating inferencer ({})",
        plan.trial,
        cheat.label()
    );
    if let Some(change) = out.relative_weight_change {
        note.push_str(&format!(", relative weight change {change:.3e}"));
    }
    if matches!(
        cheat,
        Cheat::Temperature(_)
            | Cheat::Seed(_)
            | Cheat::SecondBestEvery(_)
            | Cheat::SecondBestRate(_)
    ) {
        note.push_str(&format!(
            ", {} of {} tokens chosen against the rule (positions {:?})",
            out.cheated_positions.len(),
            out.output.output_ids.len(),
            out.cheated_positions
        ));
    }
    sink.log(LogLevel::Info, note);
    Ok(out.output)
}

/// The chat turns with the system turn emptied (inserted empty where there was none, so a
/// template's default system prompt is dropped too).
pub fn without_system_prompt(messages: &[(String, String)]) -> Vec<(String, String)> {
    let mut turns = messages.to_vec();
    match turns.first_mut() {
        Some((role, content)) if role == "system" => content.clear(),
        _ => turns.insert(0, ("system".into(), String::new())),
    }
    turns
}

/// The prompt ids of the next prompt of the plan's category (prompts.yaml order, wrapping).
fn other_prompt_ids(ws: &Workspace, plan: &TrialPlan, model: &LoadedModel) -> Result<Vec<u32>> {
    let Some(category) = PromptCategory::ALL
        .into_iter()
        .find(|c| c.as_str() == plan.prompt.category)
    else {
        bail!(
            "prompt category `{}` is not one of prompts.yaml's",
            plan.prompt.category
        );
    };
    let pool = &ws.config.prompts.category(category).prompts;
    let Some(index) = pool.iter().position(|p| p.id == plan.prompt.id) else {
        bail!("prompt `{}` is not in prompts.yaml", plan.prompt.id);
    };
    if pool.len() < 2 {
        bail!("other_prompt needs a second prompt in category `{category}`");
    }
    let other = &pool[(index + 1) % pool.len()];
    let messages: Vec<(String, String)> = other
        .messages()
        .iter()
        .map(|m| (m.role.as_str().to_string(), m.content.clone()))
        .collect();
    Ok(render_prompt(model, &messages)?.1)
}
