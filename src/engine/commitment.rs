//! The commit–challenge–open protocol (docs/commitment.md): the inferencer keeps every column
//! of the residual stream (column l < L = entering decoder layer l, column L = entering the
//! final norm) at every position in a private store, commits to it with one SHA-256 Merkle
//! root bound to the request, and later opens only the columns a verifier's unpredictable
//! challenge names, each row with its proof. Everything read here from another machine (an
//! opening, a challenge) is untrusted: sizes bounded, names fixed, every proof checked against
//! the root before any value is handed out.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::capture::CapturedStates;
use crate::util::{hex, read_untrusted_file, sha256_bytes, write_file_atomic};

pub type Hash = [u8; 32];

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;
const ROOT_TAG: u8 = 0x02;
const SEED_TAG: &[u8] = b"verillm-challenge-v1";
const LAYER_DRAW: u8 = b'L';
const POSITION_DRAW: u8 = b'P';

pub const STORE_DIR: &str = "states";
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
const MAX_COLUMNS: usize = 1025;
const MAX_POSITIONS: usize = 1 << 20;
const MAX_HIDDEN: usize = 1 << 17;
const MAX_SECRET_BYTES: u64 = 4096;
const MIN_SECRET_BYTES: usize = 16;

/// The byte naming a state's dtype inside every leaf.
pub fn dtype_tag(dtype: DType) -> Result<u8> {
    Ok(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        other => bail!("no commitment dtype tag for {other:?}"),
    })
}

/// H(0x00 ‖ column_le32 ‖ position_le32 ‖ dtype tag ‖ state bytes).
pub fn leaf_hash(column: usize, position: usize, tag: u8, bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_TAG]);
    h.update((column as u32).to_le_bytes());
    h.update((position as u32).to_le_bytes());
    h.update([tag]);
    h.update(bytes);
    h.finalize().into()
}

/// H(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_TAG]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The shape a commitment covers; bound into its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreShape {
    /// n_layers + 1.
    pub columns: usize,
    /// Prompt + generated tokens.
    pub positions: usize,
    pub hidden: usize,
}

impl StoreShape {
    pub fn leaves(&self) -> usize {
        self.columns * self.positions
    }
    /// Leaves are ordered column-major: all positions of column 0, then column 1, …
    pub fn leaf_index(&self, column: usize, position: usize) -> usize {
        column * self.positions + position
    }
    fn check(&self) -> Result<()> {
        ensure!(
            (2..=MAX_COLUMNS).contains(&self.columns),
            "columns {} outside 2..={MAX_COLUMNS}",
            self.columns
        );
        ensure!(
            (1..=MAX_POSITIONS).contains(&self.positions),
            "positions {} outside 1..={MAX_POSITIONS}",
            self.positions
        );
        ensure!(
            (1..=MAX_HIDDEN).contains(&self.hidden),
            "hidden {} outside 1..={MAX_HIDDEN}",
            self.hidden
        );
        Ok(())
    }
}

/// A binary Merkle tree; a level with an odd count carries its last node up unchanged.
#[derive(Debug)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    pub fn from_leaves(leaves: Vec<Hash>) -> Result<Self> {
        ensure!(!leaves.is_empty(), "a Merkle tree needs at least one leaf");
        let mut levels = vec![leaves];
        while levels.last().map_or(0, Vec::len) > 1 {
            let below = levels.last().expect("a level");
            let up = below
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [single] => *single,
                    _ => unreachable!(),
                })
                .collect();
            levels.push(up);
        }
        Ok(MerkleTree { levels })
    }

    pub fn root(&self) -> Hash {
        self.levels.last().expect("a level")[0]
    }

    /// The siblings from leaf `index` up to the root (levels where it has none are skipped).
    pub fn proof(&self, mut index: usize) -> Vec<Hash> {
        let mut siblings = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(s) = level.get(index ^ 1) {
                siblings.push(*s);
            }
            index >>= 1;
        }
        siblings
    }
}

/// How many siblings the proof of leaf `index` among `count` leaves holds.
pub fn proof_len(mut index: usize, mut count: usize) -> usize {
    let mut n = 0;
    while count > 1 {
        if (index ^ 1) < count {
            n += 1;
        }
        index >>= 1;
        count = count.div_ceil(2);
    }
    n
}

/// The root a proof leads to from `leaf` at `index` among `count` leaves.
pub fn root_from_proof(
    leaf: Hash,
    mut index: usize,
    mut count: usize,
    siblings: &[Hash],
) -> Result<Hash> {
    ensure!(index < count, "leaf {index} of {count}");
    let mut acc = leaf;
    let mut used = 0;
    while count > 1 {
        if (index ^ 1) < count {
            let s = siblings.get(used).context("proof too short")?;
            acc = if index & 1 == 0 {
                node_hash(&acc, s)
            } else {
                node_hash(s, &acc)
            };
            used += 1;
        }
        index >>= 1;
        count = count.div_ceil(2);
    }
    ensure!(used == siblings.len(), "proof too long");
    Ok(acc)
}

/// H(0x02 ‖ request sha256 (32 bytes) ‖ dtype tag ‖ columns_le32 ‖ positions_le32 ‖
/// hidden_le32 ‖ tree root): the root a manifest carries, bound to one request and shape.
pub fn commitment_root(
    request_sha256: &Hash,
    tag: u8,
    shape: &StoreShape,
    tree_root: &Hash,
) -> Hash {
    let mut h = Sha256::new();
    h.update([ROOT_TAG]);
    h.update(request_sha256);
    h.update([tag]);
    h.update((shape.columns as u32).to_le_bytes());
    h.update((shape.positions as u32).to_le_bytes());
    h.update((shape.hidden as u32).to_le_bytes());
    h.update(tree_root);
    h.finalize().into()
}

pub fn parse_hash(field: &str, text: &str) -> Result<Hash> {
    ensure!(
        text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{field} `{}` is not 64 lowercase hex digits",
        crate::util::escape_controls(&text.chars().take(80).collect::<String>())
    );
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// What a manifest states about the commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitment {
    /// [`commitment_root`], hex.
    pub root: String,
    pub request_sha256: String,
    pub dtype: String,
    #[serde(flatten)]
    pub shape: StoreShape,
}

impl Commitment {
    pub fn check(&self) -> Result<()> {
        parse_hash("commitment.root", &self.root)?;
        parse_hash("commitment.request_sha256", &self.request_sha256)?;
        dtype_of(&self.dtype)?;
        self.shape.check().context("commitment")
    }
}

fn dtype_of(name: &str) -> Result<DType> {
    Ok(match name {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!(
            "commitment dtype `{}` is not f32, f16 or bf16",
            crate::util::escape_controls(&other.chars().take(40).collect::<String>())
        ),
    })
}

fn dtype_label(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// Every leaf of a store, column-major.
fn leaves_of(store: &CapturedStates) -> Result<Vec<Hash>> {
    let tag = dtype_tag(store.dtype)?;
    let row_bytes = store.hidden * store.dtype.size_in_bytes();
    let mut leaves = Vec::with_capacity(store.layers.len() * store.rows);
    for (column, data) in store.data.iter().enumerate() {
        for position in 0..store.rows {
            let row = &data[position * row_bytes..(position + 1) * row_bytes];
            leaves.push(leaf_hash(column, position, tag, row));
        }
    }
    Ok(leaves)
}

fn shape_of(store: &CapturedStates) -> StoreShape {
    StoreShape {
        columns: store.layers.len(),
        positions: store.rows,
        hidden: store.hidden,
    }
}

/// Builds the tree over a store (columns 0..=L, rows = positions) and its commitment.
pub fn commit(store: &CapturedStates, request_sha256: &str) -> Result<(Commitment, MerkleTree)> {
    let shape = shape_of(store);
    shape.check()?;
    ensure!(
        store.layers.iter().enumerate().all(|(i, &c)| i == c),
        "a commitment store holds columns 0..=L in order"
    );
    let request = parse_hash("request sha256", request_sha256)?;
    let tree = MerkleTree::from_leaves(leaves_of(store)?)?;
    let root = commitment_root(&request, dtype_tag(store.dtype)?, &shape, &tree.root());
    Ok((
        Commitment {
            root: hex(&root),
            request_sha256: request_sha256.to_string(),
            dtype: dtype_label(store.dtype).into(),
            shape,
        },
        tree,
    ))
}

fn column_file(column: usize) -> String {
    format!("column_{column:04}.bin")
}

/// Writes the private store under `bundle/states/`: one file per column, its rows (positions
/// 0..T) back to back, little-endian values of the run's dtype.
pub fn write_store(bundle: &Path, store: &CapturedStates) -> Result<()> {
    let dir = bundle.join(STORE_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (column, data) in store.data.iter().enumerate() {
        write_file_atomic(&dir.join(column_file(column)), data)?;
    }
    Ok(())
}

/// Reads this machine's own store back as the manifest's commitment describes it, and checks
/// that it still hashes to the committed root.
pub fn read_store(bundle: &Path, commitment: &Commitment) -> Result<(CapturedStates, MerkleTree)> {
    commitment.check()?;
    let dtype = dtype_of(&commitment.dtype)?;
    let shape = commitment.shape;
    let bytes = (shape.positions * shape.hidden * dtype.size_in_bytes()) as u64;
    let mut data = Vec::with_capacity(shape.columns);
    for column in 0..shape.columns {
        let path = bundle.join(STORE_DIR).join(column_file(column));
        let d = read_untrusted_file(&path, bytes)
            .with_context(|| format!("reading the commitment store ({})", path.display()))?;
        ensure!(
            d.len() as u64 == bytes,
            "{}: {} bytes, expected {bytes}",
            path.display(),
            d.len()
        );
        data.push(d);
    }
    let store = CapturedStates::from_parts(
        (0..shape.columns).collect(),
        shape.hidden,
        dtype,
        shape.positions,
        data,
    )?;
    let (again, tree) = commit(&store, &commitment.request_sha256)?;
    ensure!(
        again.root == commitment.root,
        "{}: the store hashes to root {}, the manifest commits {}",
        bundle.join(STORE_DIR).display(),
        again.root,
        commitment.root
    );
    Ok((store, tree))
}

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
                Ok(super::capture::decode_f32(
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

#[cfg(test)]
#[path = "commitment_tests.rs"]
mod tests;
