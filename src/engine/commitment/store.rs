//! The inferencer's private store and its commitment: the shape a commitment covers (bounded,
//! since a manifest comes from another machine), the root that binds the tree to one request
//! and shape, the commitment a manifest carries, building it
//! from captured states, and writing and re-reading the store under a bundle's `states/`.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::{dtype_tag, leaf_hash, parse_hash, Hash, MerkleTree};
use crate::engine::capture::CapturedStates;
use crate::util::{hex, read_untrusted_file, write_file_atomic};

pub const STORE_DIR: &str = "states";
pub(super) const MAX_COLUMNS: usize = 1025;
pub(super) const MAX_POSITIONS: usize = 1 << 20;
const MAX_HIDDEN: usize = 1 << 17;
const ROOT_TAG: u8 = 0x02;

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
    pub(super) fn check(&self) -> Result<()> {
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

pub(super) fn dtype_of(name: &str) -> Result<DType> {
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

pub(super) fn column_file(column: usize) -> String {
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
