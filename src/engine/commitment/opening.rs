//! An opening (docs/commitment.md, "Opening"): the inferencer writes the challenged rows with
//! their proofs; the verifier reads them (untrusted: sizes bounded, file names fixed) and
//! proves every row against the committed root before any value is handed out.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::challenge::{check_challenge, rows_to_open, Challenge};
use super::merkle::{
    dtype_tag, leaf_hash, parse_hash, proof_len, root_from_proof, Hash, MerkleTree,
};
use super::store::{column_file, commitment_root, dtype_of, Commitment, StoreShape};
use crate::engine::capture::CapturedStates;
use crate::util::{read_untrusted_file, sha256_bytes, write_file_atomic};

pub const OPENING_FILE: &str = "opening.json";
pub const OPENING_FORMAT_VERSION: u32 = 1;
/// An opening's JSON: a few hundred bytes per opened column.
const MAX_OPENING_JSON_BYTES: u64 = 16 << 20;
/// One opened column's rows or proofs: 1M positions × 16k wide × 4 bytes would be 64 GiB.
const MAX_COLUMN_FILE_BYTES: u64 = 8 << 30;
/// A whole opening, rows and proofs, all held in memory while verified: 4 GiB covers c = 4 of a
/// 70B model (8192 wide) at 8k tokens in f32 (10 columns of 256 MiB); the embedded model's
/// c = 4 opening at N = 1024 is 30 MB (measure-commitment.sh).
pub const MAX_OPENING_BYTES: u64 = 4 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenedColumnFile {
    pub column: usize,
    /// Positions opened, ascending; the data file holds their rows in this order.
    pub positions: Vec<usize>,
    pub data: String,
    pub data_sha256: String,
    /// Each row's siblings back to back (`proof_len` of its leaf each, 32 bytes apiece).
    pub proofs: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningFile {
    pub format_version: u32,
    pub commitment: Commitment,
    pub challenge: Challenge,
    pub columns: Vec<OpenedColumnFile>,
}

/// Writes the opening of `ch` into `out`: `opening.json` and, per column, its rows and proofs.
pub fn write_opening(
    out: &Path,
    commitment: &Commitment,
    store: &CapturedStates,
    tree: &MerkleTree,
    ch: &Challenge,
    prompt_len: usize,
) -> Result<u64> {
    ensure!(
        ch.root == commitment.root,
        "the challenge is for root {}, this bundle commits {}",
        ch.root,
        commitment.root
    );
    check_challenge(ch)?;
    let generated = commitment.shape.positions - prompt_len;
    ensure!(
        ch.n_layers + 1 == commitment.shape.columns && ch.generated == generated,
        "the challenge is for {} layers and {} tokens, the commitment holds {} columns and {generated} tokens",
        ch.n_layers,
        ch.generated,
        commitment.shape.columns
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let shape = commitment.shape;
    let row_bytes = shape.hidden * store.dtype.size_in_bytes();
    let mut columns = Vec::new();
    let mut total = 0u64;
    for (column, positions) in rows_to_open(ch, prompt_len, generated) {
        let mut data = Vec::with_capacity(positions.len() * row_bytes);
        let mut proofs = Vec::new();
        for &p in &positions {
            data.extend_from_slice(&store.data[column][p * row_bytes..(p + 1) * row_bytes]);
            for s in tree.proof(shape.leaf_index(column, p)) {
                proofs.extend_from_slice(&s);
            }
        }
        let data_name = column_file(column);
        let proof_name = format!("column_{column:04}.proofs");
        write_file_atomic(&out.join(&data_name), &data)?;
        write_file_atomic(&out.join(&proof_name), &proofs)?;
        total += (data.len() + proofs.len()) as u64;
        columns.push(OpenedColumnFile {
            column,
            positions,
            data_sha256: sha256_bytes(&data),
            data: data_name,
            proofs: proof_name,
        });
    }
    let file = OpeningFile {
        format_version: OPENING_FORMAT_VERSION,
        commitment: commitment.clone(),
        challenge: ch.clone(),
        columns,
    };
    let json = serde_json::to_vec_pretty(&file)?;
    total += json.len() as u64;
    write_file_atomic(&out.join(OPENING_FILE), &json)?;
    Ok(total)
}

/// An opening whose every row was proven against the expected root.
#[derive(Debug, Clone)]
pub struct VerifiedOpening {
    pub challenge: Challenge,
    pub shape: StoreShape,
    pub dtype: DType,
    /// (column, positions, rows: positions.len() × hidden values, little-endian bytes).
    pub columns: Vec<(usize, Vec<usize>, Vec<u8>)>,
    pub proofs_checked: usize,
    pub bytes_received: u64,
}

impl VerifiedOpening {
    /// The opened rows of `column` at exactly `positions`, widened to f32, or why not.
    pub fn rows_f32(&self, column: usize, positions: &[usize]) -> Result<Vec<Vec<f32>>> {
        let (_, have, data) = self
            .columns
            .iter()
            .find(|(c, _, _)| *c == column)
            .with_context(|| format!("the opening has no column {column}"))?;
        let row_bytes = self.shape.hidden * self.dtype.size_in_bytes();
        positions
            .iter()
            .map(|p| {
                let k = have.binary_search(p).map_err(|_| {
                    anyhow::anyhow!("the opening has no row {p} of column {column}")
                })?;
                Ok(crate::engine::capture::decode_f32(
                    &data[k * row_bytes..(k + 1) * row_bytes],
                    self.dtype,
                ))
            })
            .collect()
    }
}

/// Reads an opening from `dir` (untrusted) against what the verifier knows: the commitment of
/// the manifest it holds and the request's sha256 and nonce. Every row's proof is checked
/// against the root before any value is returned; the challenge must be the one its secret
/// draws for this root and nonce, and must open what it asks for.
pub fn read_opening(
    dir: &Path,
    expected: &Commitment,
    request_sha256: &str,
    nonce: &str,
    prompt_len: usize,
) -> Result<VerifiedOpening> {
    let json_path = dir.join(OPENING_FILE);
    let json = read_untrusted_file(&json_path, MAX_OPENING_JSON_BYTES)?;
    let file: OpeningFile = serde_json::from_slice(&json)
        .with_context(|| format!("{}: not an opening", json_path.display()))?;
    let at = json_path.display();
    ensure!(
        file.format_version == OPENING_FORMAT_VERSION,
        "{at}: format_version {}, expected {OPENING_FORMAT_VERSION}",
        file.format_version
    );
    expected.check()?;
    ensure!(
        expected.request_sha256 == request_sha256,
        "the bundle's commitment is bound to request {}, not to the request being verified ({request_sha256})",
        expected.request_sha256
    );
    ensure!(
        file.commitment == *expected,
        "{at}: the opening is for root {} (request {}), the bundle commits root {} (request {}): \
         an opening of another run or request",
        file.commitment.root,
        file.commitment.request_sha256,
        expected.root,
        expected.request_sha256
    );
    let ch = &file.challenge;
    ensure!(
        ch.root == expected.root && ch.nonce == nonce,
        "{at}: the challenge was drawn for root {} and nonce {}, not this run's root {} and \
         request nonce {nonce}: a reused opening",
        ch.root,
        ch.nonce,
        expected.root
    );
    check_challenge(ch).with_context(|| format!("{at}: challenge"))?;
    let shape = expected.shape;
    ensure!(
        prompt_len < shape.positions && ch.n_layers + 1 == shape.columns,
        "{at}: the challenge's shape does not fit the commitment"
    );
    let generated = shape.positions - prompt_len;
    ensure!(
        ch.generated == generated,
        "{at}: the challenge counts {} tokens, the run {generated}",
        ch.generated
    );
    let wanted = rows_to_open(ch, prompt_len, generated);
    ensure!(
        file.columns.len() == wanted.len(),
        "{at}: {} columns opened, the challenge asks for {}",
        file.columns.len(),
        wanted.len()
    );
    let dtype = dtype_of(&expected.dtype)?;
    let tag = dtype_tag(dtype)?;
    let root = parse_hash("root", &expected.root)?;
    let request = parse_hash("request sha256", request_sha256)?;
    let row_bytes = shape.hidden * dtype.size_in_bytes();
    // The whole opening's size follows from the commitment and the challenge alone: refused
    // before any of it is read when it exceeds what a verifier holds in memory.
    let expected_bytes: u128 = wanted
        .iter()
        .map(|(column, positions)| {
            positions
                .iter()
                .map(|&p| {
                    row_bytes as u128
                        + 32 * proof_len(shape.leaf_index(*column, p), shape.leaves()) as u128
                })
                .sum::<u128>()
        })
        .sum();
    ensure!(
        expected_bytes <= MAX_OPENING_BYTES as u128,
        "{at}: the challenge opens {expected_bytes} bytes of rows and proofs ({} columns of \
         {} positions × {} wide), more than the {MAX_OPENING_BYTES} bytes a verifier reads; \
         challenge fewer layers or token positions",
        wanted.len(),
        shape.positions,
        shape.hidden
    );
    let mut columns = Vec::new();
    let mut proofs_checked = 0;
    let mut bytes_received = json.len() as u64;
    // The tree root every proof must lead to, found from the first proof and bound to the
    // commitment root before it is trusted for the others.
    let mut tree_root: Option<Hash> = None;
    for (entry, (column, positions)) in file.columns.iter().zip(&wanted) {
        ensure!(
            entry.column == *column && entry.positions == *positions,
            "{at}: column entry {} does not open what the challenge asks (column {column}, {} positions)",
            entry.column,
            positions.len()
        );
        ensure!(
            entry.data == column_file(*column)
                && entry.proofs == format!("column_{column:04}.proofs"),
            "{at}: column {column}: file names `{}`/`{}` are not the fixed names",
            crate::util::escape_controls(&entry.data.chars().take(80).collect::<String>()),
            crate::util::escape_controls(&entry.proofs.chars().take(80).collect::<String>())
        );
        let data_len = (positions.len() * row_bytes) as u64;
        ensure!(
            data_len <= MAX_COLUMN_FILE_BYTES,
            "{at}: column {column} is too large"
        );
        let data = read_untrusted_file(&dir.join(&entry.data), data_len)?;
        ensure!(
            data.len() as u64 == data_len,
            "{}: {} bytes, expected {data_len}",
            dir.join(&entry.data).display(),
            data.len()
        );
        ensure!(
            sha256_bytes(&data) == entry.data_sha256,
            "{}: sha256 differs from the opening's",
            dir.join(&entry.data).display()
        );
        let proof_len_total: usize = positions
            .iter()
            .map(|&p| proof_len(shape.leaf_index(*column, p), shape.leaves()))
            .sum();
        let proofs = read_untrusted_file(&dir.join(&entry.proofs), (proof_len_total * 32) as u64)?;
        ensure!(
            proofs.len() == proof_len_total * 32,
            "{}: {} bytes, expected {}",
            dir.join(&entry.proofs).display(),
            proofs.len(),
            proof_len_total * 32
        );
        let mut offset = 0;
        for (k, &p) in positions.iter().enumerate() {
            let index = shape.leaf_index(*column, p);
            let n = proof_len(index, shape.leaves());
            let siblings: Vec<Hash> = proofs[offset..offset + 32 * n]
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32 bytes"))
                .collect();
            offset += 32 * n;
            let leaf = leaf_hash(*column, p, tag, &data[k * row_bytes..(k + 1) * row_bytes]);
            let reached = root_from_proof(leaf, index, shape.leaves(), &siblings)?;
            match tree_root {
                Some(t) => ensure!(
                    t == reached,
                    "{at}: the proof of column {column} position {p} does not lead to the committed root (state or proof altered)"
                ),
                None => {
                    ensure!(
                        commitment_root(&request, tag, &shape, &reached) == root,
                        "{at}: the proof of column {column} position {p} does not lead to the committed root (state or proof altered)"
                    );
                    tree_root = Some(reached);
                }
            }
            proofs_checked += 1;
        }
        bytes_received += (data.len() + proofs.len()) as u64;
        columns.push((*column, positions.clone(), data));
    }
    Ok(VerifiedOpening {
        challenge: ch.clone(),
        shape,
        dtype,
        columns,
        proofs_checked,
        bytes_received,
    })
}
