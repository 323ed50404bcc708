//! Holding a bundle to the request it claims to answer (`verify --request`, `run --step
//! verify`): the model, the prompt as the verifier renders it, sampling, seed, limits and nonce.
//! Apart from `request.rs` so that the request format knows nothing of bundles.

use std::sync::Arc;

use anyhow::{ensure, Result};

use super::bundle::Manifest;
use super::config::Role;
use super::request::Request;
use super::workspace::Workspace;
use crate::engine::events::EventSink;
use crate::engine::sampling::SamplingParams;
use crate::model::LoadedModel;

/// What a bundle must agree on with the request it claims to answer. `prompt_ids` are the
/// verifier's own rendering of the request's prompt. `check_nonce` is false only where the
/// verifier rebuilt the request itself and cannot know the nonce (`run --step verify`).
/// The error names the first field that differs.
pub fn check_bundle_against_request(
    manifest: &Manifest,
    request: &Request,
    prompt_ids: &[u32],
    check_nonce: bool,
) -> Result<(), String> {
    if manifest.model.weights_sha256 != request.model.weights_sha256 {
        return Err(format!(
            "model: the bundle was made with weights sha256 {}, the request asks for `{}` \
             (sha256 {})",
            manifest.model.weights_sha256, request.model.id, request.model.weights_sha256
        ));
    }
    if manifest.prompt_ids != prompt_ids {
        let first_difference = manifest
            .prompt_ids
            .iter()
            .zip(prompt_ids)
            .position(|(a, b)| a != b)
            .unwrap_or(manifest.prompt_ids.len().min(prompt_ids.len()));
        return Err(format!(
            "prompt: the bundle answers another prompt ({} prompt ids, first difference at \
             {first_difference}; its prompt text ends «{}»), not the request's «{}» ({} ids)",
            manifest.prompt_ids.len(),
            crate::util::escape_controls(&tail_chars(&manifest.prompt_text, 80)).replace('\n', "⏎"),
            request.prompt_summary(),
            prompt_ids.len()
        ));
    }
    let (b, r) = (&manifest.sampling, &request.sampling);
    let floats = [
        ("temperature", b.temperature, r.temperature),
        ("top_p", b.top_p, r.top_p),
        (
            "repetition_penalty",
            b.repetition_penalty,
            r.repetition_penalty,
        ),
    ];
    for (field, ours, theirs) in floats {
        if ours.to_bits() != theirs.to_bits() {
            return Err(format!(
                "sampling.{field}: the bundle used {ours}, the request asks for {theirs}"
            ));
        }
    }
    let ints = [
        ("top_k", b.top_k as u64, r.top_k as u64),
        ("seed", b.seed, r.seed),
        (
            "min_new_tokens",
            b.min_new_tokens as u64,
            r.min_new_tokens as u64,
        ),
        (
            "max_new_tokens",
            b.max_new_tokens as u64,
            r.max_new_tokens as u64,
        ),
    ];
    for (field, ours, theirs) in ints {
        if ours != theirs {
            return Err(format!(
                "sampling.{field}: the bundle used {ours}, the request asks for {theirs}"
            ));
        }
    }
    if check_nonce {
        match &manifest.request {
            None => {
                return Err(
                    "nonce: the bundle records no request, so it cannot show the request's nonce"
                        .into(),
                )
            }
            Some(recorded) if recorded.nonce != request.nonce => {
                return Err(format!(
                    "nonce: the bundle answers request nonce {}, not {}",
                    recorded.nonce, request.nonce
                ))
            }
            // The bundle's copy of the request is what it says it answered: every field must
            // be the requester's (a copy with another prompt or model but the right nonce
            // would otherwise be recorded beside a PASS).
            Some(recorded) if recorded.digest() != request.digest() => {
                return Err(format!(
                    "request: the bundle's copy of the request (sha256 {}) is not the request \
                     file's (sha256 {})",
                    recorded.digest(),
                    request.digest()
                ))
            }
            Some(recorded)
                if recorded
                    .sha256
                    .as_ref()
                    .is_some_and(|claimed| *claimed != request.digest()) =>
            {
                return Err(format!(
                    "request.sha256: the bundle records {}, the request's sha256 is {}",
                    recorded.sha256.as_deref().unwrap_or_default(),
                    request.digest()
                ))
            }
            Some(_) => {}
        }
    }
    // An interrupted inference is a prefix: it does not answer the request, whatever its
    // tokens (its stop rule would otherwise be waived, and any prefix pass).
    if manifest.cancelled {
        return Err(format!(
            "cancelled: the bundle is an interrupted inference ({} of at most {} tokens), a \
             prefix that does not answer the request (verify it without a request to check the \
             prefix alone)",
            manifest.output_ids.len(),
            request.sampling.max_new_tokens
        ));
    }
    Ok(())
}

/// The last `n` characters of `text`, with an ellipsis in front when shortened.
fn tail_chars(text: &str, n: usize) -> String {
    let count = text.chars().count();
    if count <= n {
        return text.to_string();
    }
    format!("…{}", text.chars().skip(count - n).collect::<String>())
}

/// Holds a loaded verifier model to the request's model.
pub fn check_model_is_requested(model: &LoadedModel, request: &Request) -> Result<()> {
    ensure!(
        model.weights_sha256 == request.model.weights_sha256,
        "the request asks for model `{}` (weights sha256 {}), but `{}` has sha256 {}",
        request.model.id,
        request.model.weights_sha256,
        model.name,
        model.weights_sha256
    );
    Ok(())
}

/// Where the request a bundle is held to comes from.
#[derive(Debug, Clone)]
pub enum ExpectedRequest {
    /// A request file (`verify --request`): every field, the nonce included.
    File(Request),
    /// An experiment's own plan (`run --step verify`): prompt from prompts.yaml and the
    /// experiment's sampling; the verifier cannot know the nonce the inferencing side drew.
    Plan {
        messages: Vec<(String, String)>,
        sampling: SamplingParams,
    },
}

/// Loads the verifier model of `role`, renders the expected request's prompt with it and holds
/// the bundle to the request. Outer error: the check could not be made (model, tokenizer);
/// inner error: the bundle does not answer the request (the field named).
pub async fn check_against_request(
    ws: &Arc<Workspace>,
    role: &Role,
    sink: &EventSink,
    manifest: &Manifest,
    expected: &ExpectedRequest,
) -> Result<Result<Request, String>> {
    let (ws, role, sink) = (ws.clone(), role.clone(), sink.clone());
    let (manifest, expected) = (manifest.clone(), expected.clone());
    tokio::task::spawn_blocking(move || -> Result<Result<Request, String>> {
        let model = ws.load_reporting(&role, &sink)?;
        let (request, check_nonce) = match expected {
            ExpectedRequest::File(request) => (request, true),
            ExpectedRequest::Plan { messages, sampling } => {
                (Request::new(&model, &messages, true, sampling), false)
            }
        };
        check_model_is_requested(&model, &request)?;
        let (_, prompt_ids) = request.render(&model)?;
        Ok(
            check_bundle_against_request(&manifest, &request, &prompt_ids, check_nonce)
                .map(|()| request),
        )
    })
    .await?
}
