//! The commit–challenge–open protocol (docs/commitment.md): the inferencer keeps every column
//! of the residual stream (column l < L = entering decoder layer l, column L = entering the
//! final norm) at every position in a private store, commits to it with one SHA-256 Merkle
//! root bound to the request, and later opens only the columns a verifier's unpredictable
//! challenge names, each row with its proof. Everything read here from another machine (an
//! opening, a challenge) is untrusted: sizes bounded, names fixed, every proof checked against
//! the root before any value is handed out.
//!
//! One file per step: `merkle.rs` (hashes, the tree, proofs), `store.rs` (the private store and
//! the commitment a manifest carries), `challenge.rs` (the verifier's draw), `opening.rs`
//! (writing and checking an opening). Callers use the names re-exported here.

mod challenge;
mod merkle;
mod opening;
mod store;

pub use challenge::{
    check_challenge, check_secret_unrevealed, derive_challenge, read_secret,
    record_secret_revealed, revealed_ledger, rows_to_open, Challenge,
};
pub use merkle::{
    dtype_tag, leaf_hash, node_hash, parse_hash, proof_len, root_from_proof, Hash, MerkleTree,
};
pub use opening::{
    read_opening, write_opening, OpenedColumnFile, OpeningFile, VerifiedOpening, OPENING_FILE,
    OPENING_FORMAT_VERSION,
};
pub use store::{
    commit, commitment_root, read_store, write_store, Commitment, StoreShape, STORE_DIR,
};

#[cfg(test)]
mod tests;
