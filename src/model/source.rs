//! Where a model's files come from: the embedded GGUF, a local GGUF file, a local Hugging Face
//! directory, or a hub repo id fetched with hf-hub into the standard Hugging Face cache.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::embedded::{ensure_embedded_model, EMBEDDED_MODEL_ID};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    Gguf(PathBuf),
    /// A directory with `config.json`, `*.safetensors`, `tokenizer.json`.
    HfDir(PathBuf),
    Hub {
        repo: String,
        revision: String,
    },
}

/// Reads a model argument: `smollm2-135m`/`embedded`, a path to a `.gguf` file or a
/// Hugging Face directory, or `hf:org/name[@revision]` (also plain `org/name` when no such
/// path exists).
pub fn parse_model_arg(arg: &str, model_dir: &Path) -> Result<ModelSource> {
    if arg == EMBEDDED_MODEL_ID || arg == "embedded" {
        return Ok(ModelSource::Gguf(ensure_embedded_model(model_dir)?));
    }
    let path = Path::new(arg);
    if path.exists() {
        return local_model(path);
    }
    let explicit_hub = arg.starts_with("hf:");
    let repo = arg.strip_prefix("hf:").unwrap_or(arg);
    let (repo, revision) = match repo.split_once('@') {
        Some((r, rev)) => (r, rev),
        None => (repo, "main"),
    };
    // Something written as a path that does not exist is a missing file, never a hub id to
    // request from the network (`hf:` makes any id explicit).
    if !explicit_hub && looks_like_a_path(repo) {
        bail!("model `{arg}`: no such file or directory");
    }
    let valid = repo.split('/').count() == 2 && repo.split('/').all(is_hub_name);
    if !valid {
        bail!("model `{arg}`: not a known model id, an existing path, or a hub repo id like hf:org/name");
    }
    check_revision(revision).map_err(|e| anyhow!("model `{arg}`: {e}"))?;
    Ok(ModelSource::Hub {
        repo: repo.to_string(),
        revision: revision.to_string(),
    })
}

/// A model at a local path: a `.gguf` file or a Hugging Face model directory. Never a hub id,
/// whatever the path looks like (models.yaml's `path:` sources come here).
pub fn local_model(path: &Path) -> Result<ModelSource> {
    if path.is_file() {
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            bail!(
                "model file {}: expected a .gguf file or a Hugging Face model directory",
                path.display()
            );
        }
        return Ok(ModelSource::Gguf(path.to_path_buf()));
    }
    if path.is_dir() {
        return Ok(ModelSource::HfDir(path.to_path_buf()));
    }
    bail!("model `{}`: no such file or directory", path.display())
}

fn looks_like_a_path(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    arg.starts_with(['/', '.', '~'])
        || arg.contains('\\')
        || arg.matches('/').count() > 1
        || [".gguf", ".safetensors", ".json", ".bin"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

/// One half of a hub repo id, by the hub's rules: letters, digits, '-', '_', '.', not starting
/// or ending with '-' or '.', no '--' or '..'.
pub(crate) fn is_hub_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 96
        && name.chars().all(crate::util::is_plain_name_char)
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
        && !name.contains("--")
        && !name.contains("..")
}

/// A hub revision (branch, tag, commit or `refs/pr/N`) becomes part of a path in the
/// Hugging Face cache: only plain components, never `..`.
pub fn check_revision(revision: &str) -> Result<(), String> {
    let plain = !revision.is_empty()
        && revision.len() <= 256
        && revision.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.chars().all(crate::util::is_plain_name_char)
        });
    if plain {
        Ok(())
    } else {
        Err(format!(
            "revision `{revision}` is not a branch, tag or commit name (expected letters, digits, \
             '-', '_', '.', components separated by '/', no '..')"
        ))
    }
}

/// Fetches a hub repo's files into the Hugging Face cache (HF_HOME respected, so downloads made
/// by Python are reused) and returns the snapshot directory. Files already cached, and files
/// the cache records as absent (`.no_exist`, as Python writes it), need no network, so a cache
/// Python wrote opens offline; an optional file that is neither (hf-hub records no absences)
/// is asked of the hub unless HF_HUB_OFFLINE=1. `HF_TOKEN` (or the token file in HF_HOME)
/// authenticates gated repos. Each download is reported through `report` as it goes
/// ([`DownloadProgress`]): a multi-GB checkpoint must not look like a hang.
pub fn fetch_hub_snapshot(repo: &str, revision: &str, report: &dyn Fn(String)) -> Result<PathBuf> {
    use hf_hub::{Repo, RepoType};
    let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let api = if offline {
        None
    } else {
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_progress(false);
        if token.is_some() {
            builder = builder.with_token(token);
        }
        Some(
            builder
                .build()
                .context("setting up the Hugging Face hub client")?
                .repo(hf_repo.clone()),
        )
    };
    // hf-hub downloads into the snapshot of the hub's current commit and moves the ref there:
    // a cache whose ref pointed at an older commit can end up split across two snapshots. A
    // second pass then finds (or fetches) everything in the new one.
    let first = resolve_snapshot(repo, revision, &hf_repo, api.as_ref(), report)?;
    if first.consistent {
        return Ok(first.snapshot);
    }
    let second = resolve_snapshot(repo, revision, &hf_repo, api.as_ref(), report)?;
    anyhow::ensure!(
        second.consistent,
        "{repo}@{revision}: its files are split across snapshots of different commits in the \
         Hugging Face cache (under {}); download the model again",
        second.snapshot.display()
    );
    Ok(second.snapshot)
}

/// Turns hf-hub's byte counts for one file into progress messages: when it starts, at every
/// further 5 %, and when it is complete; so a log gets at most 21 lines per file.
pub(crate) struct DownloadProgress<'a> {
    repo: &'a str,
    file: &'a str,
    total: usize,
    done: usize,
    /// The last 5 % step reported (0..=20).
    reported: Option<usize>,
    report: &'a dyn Fn(String),
}

impl<'a> DownloadProgress<'a> {
    pub(crate) fn new(repo: &'a str, file: &'a str, report: &'a dyn Fn(String)) -> Self {
        DownloadProgress {
            repo,
            file,
            total: 0,
            done: 0,
            reported: None,
            report,
        }
    }

    fn report_if_further(&mut self) {
        let step = if self.total == 0 {
            20
        } else {
            (self.done.min(self.total) as u128 * 20 / self.total as u128) as usize
        };
        if self.reported.is_some_and(|r| r >= step) {
            return;
        }
        self.reported = Some(step);
        const MB: f64 = 1e6;
        (self.report)(format!(
            "downloading {} of {}: {:.1} of {:.1} MB ({}%)",
            self.file,
            self.repo,
            self.done.min(self.total) as f64 / MB,
            self.total as f64 / MB,
            step * 5
        ));
    }
}

impl hf_hub::api::Progress for DownloadProgress<'_> {
    // hf-hub calls `init` again, then `update` with the bytes already on disk, when it starts
    // (or resumes) the transfer: the count restarts, the steps reported do not repeat.
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size;
        self.done = 0;
        if self.reported.is_none() {
            self.report_if_further();
        }
    }

    fn update(&mut self, size: usize) {
        self.done = self.done.saturating_add(size);
        self.report_if_further();
    }

    fn finish(&mut self) {
        self.done = self.total;
        self.report_if_further();
    }
}

/// Where one pass over a repo's files found them.
struct Resolved {
    snapshot: PathBuf,
    /// Every file found lies in `snapshot`.
    consistent: bool,
}

/// The HTTP status of a hub request's error (ureq writes "<url>: status code <n>"); matched at
/// the end, so digits in the URL (a commit hash) never pass for a status.
pub(crate) fn http_status(error: &str) -> Option<u16> {
    let (_, code) = error.rsplit_once("status code ")?;
    code.trim().parse().ok()
}

fn resolve_snapshot(
    repo: &str,
    revision: &str,
    hf_repo: &hf_hub::Repo,
    api: Option<&hf_hub::api::sync::ApiRepo>,
    report: &dyn Fn(String),
) -> Result<Resolved> {
    use hf_hub::Cache;
    let cache = Cache::from_env().repo(hf_repo.clone());
    let repo_dir = Cache::from_env().path().join(hf_repo.folder_name());
    let is_commit = |r: &str| {
        r.len() == 40
            && r.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    // The commit the revision names: itself when pinned (caches Python wrote have no `refs/`
    // entry for it), else what `refs/<revision>` records.
    let commit = if is_commit(revision) {
        Some(revision.to_string())
    } else {
        // A ref holds one commit id: read bounded, as every other file of a model is.
        crate::util::read_optional_text(&repo_dir.join("refs").join(revision), 1024)
            .ok()
            .flatten()
            .map(|c| c.trim().to_string())
            .filter(|c| is_commit(c))
    };
    let cached = |file: &str| -> Option<PathBuf> {
        cache.get(file).or_else(|| {
            let c = commit.as_ref()?;
            Some(repo_dir.join("snapshots").join(c).join(file)).filter(|p| p.exists())
        })
    };
    let known_absent = |file: &str| {
        commit
            .as_ref()
            .is_some_and(|c| repo_dir.join(".no_exist").join(c).join(file).exists())
    };
    let get = |file: &str| -> Result<Option<PathBuf>> {
        if let Some(p) = cached(file) {
            return Ok(Some(p));
        }
        if known_absent(file) {
            return Ok(None);
        }
        let Some(api) = api else { return Ok(None) };
        // Not in the cache (checked above, as `ApiRepo::get` would): download it.
        match api.download_with_progress(file, DownloadProgress::new(repo, file, report)) {
            Ok(p) => Ok(Some(p)),
            // Optional files (tokenizer_config.json, the shard index) answer 404 when absent.
            Err(e) if http_status(&e.to_string()) == Some(404) => Ok(None),
            Err(e) => {
                let text = e.to_string();
                let hint = if matches!(http_status(&text), Some(401 | 403)) {
                    "the repo is gated or private: accept its licence on huggingface.co and set \
                     HF_TOKEN (or log in with `huggingface-cli login`)"
                } else {
                    "if the model is in the Hugging Face cache (HF_HOME) already, set \
                     HF_HUB_OFFLINE=1; otherwise download it there elsewhere, or pass a local \
                     directory with --model"
                };
                Err(anyhow!(
                    "could not fetch {file} of {repo}@{revision} from the Hugging Face hub: \
                     {text}. {hint}"
                ))
            }
        }
    };
    let config = get("config.json")?.ok_or_else(|| {
        if api.is_some() {
            anyhow!(
                "{repo}@{revision}: the hub has no config.json there (a GGUF-only repo? pass the \
                 .gguf file's local path with --model)"
            )
        } else {
            anyhow!(
                "{repo}@{revision}: config.json is not in the Hugging Face cache ({}) and \
                 HF_HUB_OFFLINE is set",
                Cache::from_env().path().display()
            )
        }
    })?;
    let snapshot = config.parent().map(Path::to_path_buf).unwrap_or_default();
    // Every file this pass found, to check they share one snapshot.
    let mut found = vec![config.clone()];
    found.extend(get("tokenizer.json")?);
    found.extend(get("tokenizer_config.json")?);
    // A single cached weights file needs no index (and no network to ask for one).
    if let Some(weights) = cached("model.safetensors") {
        found.push(weights);
    } else if let Some(index) = get("model.safetensors.index.json")? {
        for shard in shard_names(&index)? {
            found.push(get(&shard)?.ok_or_else(|| {
                anyhow!(
                    "{repo}: shard {shard} is missing from {}",
                    snapshot.display()
                )
            })?);
        }
        found.push(index);
    } else {
        found.push(get("model.safetensors")?.ok_or_else(|| {
            anyhow!(
                "{repo}@{revision}: neither model.safetensors nor an index was found in {}",
                snapshot.display()
            )
        })?);
    }
    let consistent = found.iter().all(|p| p.parent() == Some(snapshot.as_path()));
    Ok(Resolved {
        snapshot,
        consistent,
    })
}

/// The shard files named by a `model.safetensors.index.json`, refusing any that leave the
/// directory.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = crate::util::read_text(index, crate::util::MAX_MODEL_TEXT_BYTES)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| anyhow!("{}: no weight_map object", index.display()))?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    names.sort();
    names.dedup();
    for n in &names {
        if n.contains('/') || n.contains('\\') || n.starts_with('.') {
            bail!(
                "{}: shard name `{n}` leaves the model directory",
                index.display()
            );
        }
    }
    Ok(names)
}

/// The safetensors files of a Hugging Face directory.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        return Ok(shard_names(&index)?
            .into_iter()
            .map(|n| dir.join(n))
            .collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    bail!(
        "{}: no model.safetensors or model.safetensors.index.json",
        dir.display()
    )
}
