//! What a verifier in segment mode (docs/commitment.md) records in a trial file, beside the
//! usual statistics: its challenge (with the secret that drew it, so anyone can recompute the
//! draw), what it received and proved, and each challenged layer's figures. Plain data with no
//! dependency but serde, so it can live wherever the other result records do. Absent from
//! files written in full mode, which stay byte for byte what they were.

use serde::{Deserialize, Serialize};

/// One challenged decoder layer l: recomputed alone from the committed column entering it and
/// compared with the committed column entering l + 1 at every position, prompt included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentLayerRecord {
    pub layer: usize,
    /// Positions compared (prompt + output).
    pub positions: usize,
    pub accepted: usize,
    /// Seconds spent recomputing this layer alone.
    pub recompute_s: f64,
    /// Whether this layer's accept rate passed the cutoff.
    pub pass: bool,
    /// The layer-update check's figures (absent from files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<LayerUpdateRecord>,
}

/// The layer-update check of one challenged layer (docs/policy.md "Segment mode"): z is the
/// error of the committed state leaving the layer, against the recomputed one, in units of
/// what honest rounding in the pair's tier can cause; a position accepts when z ≤ `limit`
/// (and its state check accepts), so `accepted` above counts both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerUpdateRecord {
    /// Positions whose z is within the limit.
    pub accepted: usize,
    #[serde(with = "crate::stats::metrics::float_serde")]
    pub z_median: f64,
    #[serde(with = "crate::stats::metrics::float_serde")]
    pub z_max: f64,
    pub limit: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// The commitment root the challenge was drawn for.
    pub root: String,
    /// The request's nonce the challenge was drawn with.
    pub nonce: String,
    /// The verifier's secret, hex, revealed: SHA-256(root ‖ nonce ‖ secret) gives the draw.
    pub secret: String,
    /// The model's decoder layers (L): the challenge drew from 0..L.
    pub n_layers: usize,
    /// Decoder layers challenged, ascending; the checks of layer l sit at hidden-state index
    /// l + 1 in `statistics.checks`.
    pub challenged_layers: Vec<usize>,
    /// Generated-token indices whose token checks were challenged (absent: every token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_positions: Option<Vec<usize>>,
    /// Rows whose Merkle proof was checked against the root before use.
    pub proofs_checked: usize,
    /// Bytes of the opening read (its JSON, rows and proofs).
    pub bytes_received: u64,
    pub layers: Vec<SegmentLayerRecord>,
    /// Column 0 (the tokens' embeddings) at every position.
    pub embedding_rows: usize,
    pub embedding_rows_accepted: usize,
    /// Seconds recomputing the challenged layers (the sum of `layers[].recompute_s`).
    pub recompute_s: f64,
    /// Seconds of the whole segment verification: proofs, layers, embeddings, lm_head and
    /// token checks.
    pub time_s: f64,
}

impl SegmentRecord {
    pub fn layer(&self, layer: usize) -> Option<&SegmentLayerRecord> {
        self.layers.iter().find(|l| l.layer == layer)
    }
}
