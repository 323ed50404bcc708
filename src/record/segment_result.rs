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
    /// Seconds of one full prefill of prompt + output on this verifier's model profile, timed
    /// in the same trial (what full mode would pay; a reference, never part of the verdict).
    /// Absent when the run skipped it (`--no-reference-prefill`) or was cancelled first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_prefill_s: Option<f64>,
    /// `time_s / full_prefill_s`: the whole segment verification against a full prefill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_to_full_prefill: Option<f64>,
    /// Seconds per challenged layer (`recompute_s / layers`) against a full prefill (≈ 1/L
    /// when recomputing a layer costs what it costs inside the prefill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_to_full_prefill: Option<f64>,
}

impl SegmentRecord {
    /// Records the reference prefill's seconds and the two ratios derived from it.
    /// The state side of the segment verdict: some layer was recomputed, every recomputed
    /// layer passed and every embedding row matched. A verdict decided again later (the
    /// sequential test of `run --step verify`) must keep this, or it would judge the generated
    /// positions' checks alone and drop the prompt's and the embeddings.
    pub fn states_pass(&self) -> bool {
        !self.layers.is_empty()
            && self.layers.iter().all(|l| l.pass)
            && self.embedding_rows_accepted == self.embedding_rows
    }

    pub fn set_full_prefill(&mut self, seconds: Option<f64>) {
        let ratio = |part: f64| seconds.filter(|s| *s > 0.0).map(|s| part / s);
        self.full_prefill_s = seconds;
        self.segment_to_full_prefill = ratio(self.time_s);
        self.layer_to_full_prefill = if self.layers.is_empty() {
            None
        } else {
            ratio(self.recompute_s / self.layers.len() as f64)
        };
    }

    /// One line for a terminal: `layers [4, 13] 1/2 matched · 478 proofs · 1.3 MB · segment
    /// 1.17 s (layers 0.09 s) · full prefill 2.78 s: segment 0.42×, a layer 0.016×`.
    pub fn summary(&self) -> String {
        let matched = self.layers.iter().filter(|l| l.pass).count();
        let mut line = format!(
            "layers {:?} {matched}/{} matched · {} proofs · {:.1} MB · segment {:.2} s (layers {:.2} s)",
            self.challenged_layers,
            self.layers.len(),
            self.proofs_checked,
            self.bytes_received as f64 / 1e6,
            self.time_s,
            self.recompute_s
        );
        if let (Some(full), Some(segment), Some(layer)) = (
            self.full_prefill_s,
            self.segment_to_full_prefill,
            self.layer_to_full_prefill,
        ) {
            line +=
                &format!(" · full prefill {full:.2} s: segment {segment:.2}×, a layer {layer:.3}×");
        }
        line
    }

    pub fn layer(&self, layer: usize) -> Option<&SegmentLayerRecord> {
        self.layers.iter().find(|l| l.layer == layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_prefill_gives_both_ratios_and_the_summary_names_them() {
        let mut record = SegmentRecord {
            root: String::new(),
            nonce: String::new(),
            secret: String::new(),
            n_layers: 30,
            challenged_layers: vec![4, 13],
            token_positions: None,
            proofs_checked: 478,
            bytes_received: 1_300_000,
            layers: [(4, true), (13, false)]
                .map(|(layer, pass)| SegmentLayerRecord {
                    layer,
                    positions: 66,
                    accepted: 66,
                    recompute_s: 0.05,
                    pass,
                    update: None,
                })
                .to_vec(),
            embedding_rows: 66,
            embedding_rows_accepted: 66,
            recompute_s: 0.1,
            time_s: 1.0,
            full_prefill_s: None,
            segment_to_full_prefill: None,
            layer_to_full_prefill: None,
        };
        assert!(!record.summary().contains("full prefill"));
        record.set_full_prefill(Some(2.5));
        assert_eq!(record.segment_to_full_prefill, Some(0.4));
        assert_eq!(record.layer_to_full_prefill, Some(0.02));
        assert_eq!(
            record.summary(),
            "layers [4, 13] 1/2 matched · 478 proofs · 1.3 MB · segment 1.00 s (layers 0.10 s) \
             · full prefill 2.50 s: segment 0.40×, a layer 0.020×"
        );
        record.set_full_prefill(None);
        assert_eq!(record.layer_to_full_prefill, None);
    }
}
