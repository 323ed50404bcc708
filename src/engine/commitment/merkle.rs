//! The Merkle tree of a commitment (docs/commitment.md, "Tree"): the domain-separated leaf,
//! and node hashes, the tree over a store's leaves, its proofs, and the walk from a leaf
//! and its proof back to the root that checks an opening.

use anyhow::{bail, ensure, Context, Result};
use candle_core::DType;
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;

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
