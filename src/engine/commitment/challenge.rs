//! A verifier's challenge (docs/commitment.md, "Challenge"): drawn from the committed root,
//! the request nonce and the verifier's secret, so it cannot be known before the root is fixed;
//! checked again when read back from another machine; and the rows of the store it opens.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::{parse_hash, Hash};
use super::store::{MAX_COLUMNS, MAX_POSITIONS};
use crate::util::{hex, read_untrusted_file};

const SEED_TAG: &[u8] = b"verillm-challenge-v1";
const LAYER_DRAW: u8 = b'L';
const POSITION_DRAW: u8 = b'P';
const MAX_SECRET_BYTES: u64 = 4096;
const MIN_SECRET_BYTES: usize = 16;

/// A verifier's challenge: derived from SHA-256(tag ‖ root ‖ nonce ‖ secret), so it cannot be
/// known before the root is fixed, and anyone given the secret can recompute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub root: String,
    pub nonce: String,
    /// The verifier's secret, hex: revealed with the challenge so it can be recomputed.
    pub secret: String,
    pub n_layers: usize,
    /// Challenged decoder layers, ascending.
    pub layers: Vec<usize>,
    /// Generated-token indices whose token check is challenged (None: every one).
    #[serde(default)]
    pub token_positions: Option<Vec<usize>>,
    /// How many generated tokens the draw of `token_positions` was over.
    pub generated: usize,
}

fn seed(root: &Hash, nonce: &[u8], secret: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(SEED_TAG);
    h.update(root);
    h.update(nonce);
    h.update(secret);
    h.finalize().into()
}

/// Draws `count` distinct values of 0..n: draw k takes u = the first 8 bytes (little-endian)
/// of SHA-256(seed ‖ kind ‖ k_le32) and removes element u mod (n − k) of the values left.
fn draw(seed: &Hash, kind: u8, n: usize, count: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..n).collect();
    let mut picked = Vec::with_capacity(count.min(n));
    for k in 0..count.min(n) {
        let mut h = Sha256::new();
        h.update(seed);
        h.update([kind]);
        h.update((k as u32).to_le_bytes());
        let block: Hash = h.finalize().into();
        let u = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
        picked.push(left.remove((u % left.len() as u64) as usize));
    }
    picked.sort_unstable();
    picked
}

/// The challenge of `secret` for a commitment `root`, request `nonce` (hex), `layers` decoder
/// layers of `n_layers`, and `token_positions` of `generated` tokens (None: all).
pub fn derive_challenge(
    root: &str,
    nonce: &str,
    secret: &[u8],
    n_layers: usize,
    layers: usize,
    generated: usize,
    token_positions: Option<usize>,
) -> Result<Challenge> {
    let root_bytes = parse_hash("root", root)?;
    let nonce_bytes = parse_hash("request nonce", nonce)?;
    ensure!(
        secret.len() >= MIN_SECRET_BYTES && secret.len() as u64 <= MAX_SECRET_BYTES,
        "the secret has {} bytes; use {MIN_SECRET_BYTES}..={MAX_SECRET_BYTES} random bytes",
        secret.len()
    );
    ensure!(
        (1..=n_layers).contains(&layers),
        "--layers {layers}: expected 1..={n_layers} (the model's decoder layers)"
    );
    let s = seed(&root_bytes, &nonce_bytes, secret);
    let token_positions = match token_positions {
        None => None,
        Some(k) => {
            ensure!(k >= 1, "--token-positions must be at least 1");
            Some(draw(&s, POSITION_DRAW, generated, k))
        }
    };
    Ok(Challenge {
        root: root.into(),
        nonce: nonce.into(),
        secret: hex(secret),
        n_layers,
        layers: draw(&s, LAYER_DRAW, n_layers, layers),
        token_positions,
        generated,
    })
}

/// Reads a verifier's secret file (its raw bytes, bounded).
pub fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_untrusted_file(path, MAX_SECRET_BYTES)
        .with_context(|| format!("--secret-file {}", path.display()))?;
    ensure!(
        bytes.len() >= MIN_SECRET_BYTES,
        "--secret-file {}: {} bytes; a secret needs at least {MIN_SECRET_BYTES} random bytes",
        path.display(),
        bytes.len()
    );
    Ok(bytes)
}

/// Where a secret file's reveals are listed: `FILE.revealed`, one root (hex) per line.
pub fn revealed_ledger(secret_file: &Path) -> std::path::PathBuf {
    let mut name = secret_file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".revealed");
    secret_file.with_file_name(name)
}

/// Refuses a secret already revealed in a challenge for another root. The challenge file
/// states the secret and goes to the inferencer: with it, the inferencer can grind its next
/// root (any unread bit of its store) until the draw misses the layers it skipped (played out:
/// 35 tries, 1.1 s, for a c = 4 draw missing 15 chosen layers; docs/commitment.md). The same
/// root again is the same draw, so it is allowed.
pub fn check_secret_unrevealed(secret_file: &Path, root: &str) -> Result<()> {
    let ledger = revealed_ledger(secret_file);
    let listed = match read_untrusted_file(&ledger, 1 << 20) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) if !ledger.exists() => return Ok(()),
        Err(e) => return Err(e.context(format!("reading {}", ledger.display()))),
    };
    if let Some(other) = listed
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && *line != root)
    {
        anyhow::bail!(
            "--secret-file {}: this secret was already revealed in a challenge for root {other} \
             (listed in {}); an inferencer that has seen it can grind its next root until the \
             draw misses the layers it skipped. Use a fresh secret for every challenge (omit \
             --secret-file and one is drawn from the operating system)",
            secret_file.display(),
            ledger.display()
        );
    }
    Ok(())
}

/// Lists `root` in the secret file's ledger (once).
pub fn record_secret_revealed(secret_file: &Path, root: &str) -> Result<()> {
    let ledger = revealed_ledger(secret_file);
    let mut listed = std::fs::read_to_string(&ledger).unwrap_or_default();
    if listed.lines().any(|line| line.trim() == root) {
        return Ok(());
    }
    listed.push_str(root);
    listed.push('\n');
    crate::util::write_file_atomic(&ledger, listed.as_bytes())
        .with_context(|| format!("writing {}", ledger.display()))
}

/// A challenge read back: its draw recomputed from its own secret must match what it says.
pub fn check_challenge(ch: &Challenge) -> Result<()> {
    ensure!(
        ch.secret.len().is_multiple_of(2) && ch.secret.len() <= 2 * MAX_SECRET_BYTES as usize,
        "challenge secret: bad length"
    );
    let secret: Vec<u8> = (0..ch.secret.len() / 2)
        .map(|i| u8::from_str_radix(&ch.secret[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .context("challenge secret is not hex")?;
    ensure!(
        ch.n_layers >= 1 && ch.n_layers < MAX_COLUMNS,
        "challenge n_layers {}",
        ch.n_layers
    );
    ensure!(
        ch.generated <= MAX_POSITIONS,
        "challenge generated {}",
        ch.generated
    );
    let again = derive_challenge(
        &ch.root,
        &ch.nonce,
        &secret,
        ch.n_layers,
        ch.layers.len(),
        ch.generated,
        ch.token_positions.as_ref().map(Vec::len),
    )?;
    ensure!(
        &again == ch,
        "the challenge is not the one its secret draws for root {} and nonce {} (layers {:?} \
         drawn, {:?} claimed)",
        ch.root,
        ch.nonce,
        again.layers,
        ch.layers
    );
    Ok(())
}

/// Which rows of which columns a challenge opens: for layer l, columns l and l+1 at every
/// position; column 0 always (the tokens' embeddings bind the prompt and output); column L at
/// the positions whose logits chose a checked token (prompt_len − 1 + i for token i).
pub fn rows_to_open(
    ch: &Challenge,
    prompt_len: usize,
    generated: usize,
) -> Vec<(usize, Vec<usize>)> {
    let positions = prompt_len + generated;
    let mut wanted: Vec<std::collections::BTreeSet<usize>> =
        vec![Default::default(); ch.n_layers + 1];
    wanted[0].extend(0..positions);
    for &l in &ch.layers {
        wanted[l].extend(0..positions);
        wanted[l + 1].extend(0..positions);
    }
    let tokens: Vec<usize> = match &ch.token_positions {
        Some(p) => p.clone(),
        None => (0..generated).collect(),
    };
    wanted[ch.n_layers].extend(tokens.iter().map(|i| prompt_len - 1 + i));
    wanted
        .into_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(c, rows)| (c, rows.into_iter().collect()))
        .collect()
}
