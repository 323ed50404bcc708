//! Mistral's sliding window, computed: a tiny random Mistral checkpoint with a window of 8
//! positions decodes what it prefills (in any chunking), equals full attention inside the
//! window and not beyond it, and its window no longer caps the usable context.

use candle_core::Tensor;

use super::device::DeviceProfile;
use super::load_model;
use super::source::ModelSource;
use super::tests::write_tiny_qwen2;
use super::weights::Precision;
use super::LoadedModel;

const WINDOW: usize = 8;

/// The tiny random checkpoint written in `dir` (once), loaded as a Mistral with `window`.
fn tiny_mistral(dir: &std::path::Path, window: serde_json::Value) -> LoadedModel {
    let path = dir.join("config.json");
    if !path.exists() {
        write_tiny_qwen2(dir, false);
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["model_type"] = "mistral".into();
    config["sliding_window"] = window;
    std::fs::write(&path, config.to_string()).unwrap();
    load_model(
        "tiny-mistral",
        &ModelSource::HfDir(dir.to_path_buf()),
        Precision::Full,
        DeviceProfile::CPU_F32,
    )
    .unwrap()
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

#[test]
fn mistral_sliding_window_is_computed_and_no_longer_caps_the_context() {
    // The same random weights, with and without the window.
    let dir = tempfile::tempdir().unwrap();
    let full = tiny_mistral(dir.path(), serde_json::Value::Null);
    let windowed = tiny_mistral(dir.path(), WINDOW.into());
    assert_eq!(windowed.model.attention_window(), Some(WINDOW));
    assert_eq!(full.model.attention_window(), None);
    // The window was once the context's bound; now the checkpoint's own 512 positions are.
    assert_eq!(windowed.model.max_positions(), 512);

    let ids: Vec<u32> = (0..40u32).map(|i| 100 + 37 * i).collect();
    let taps = [1usize, 2];
    let prefill = |model: &LoadedModel, chunk: usize| -> Vec<Tensor> {
        let mut cache = model.model.new_cache();
        let mut rows: Vec<Vec<Tensor>> = vec![Vec::new(); taps.len()];
        for piece in ids.chunks(chunk) {
            let out = model.model.forward(piece, &mut cache, &taps, true).unwrap();
            for (slot, (_, t)) in out.taps.into_iter().enumerate() {
                rows[slot].push(t);
            }
        }
        rows.iter().map(|r| Tensor::cat(r, 0).unwrap()).collect()
    };
    let whole = prefill(&windowed, ids.len());
    // One step at a time (the KV cache truncated to the window) and in odd chunks: the same.
    for chunk in [1, 3, 8, 13] {
        for (slot, tensor) in prefill(&windowed, chunk).iter().enumerate() {
            let err = rel_l2(tensor, &whole[slot]);
            assert!(err < 1e-5, "chunk {chunk}, tap {}: {err:e}", taps[slot]);
        }
    }
    // Inside the window the window is full attention, bit for bit; beyond it, not.
    let reference = prefill(&full, ids.len());
    for position in 0..ids.len() {
        let row = |t: &Tensor| t.narrow(0, position, 1).unwrap();
        let err = rel_l2(&row(&whole[1]), &row(&reference[1]));
        if position < WINDOW {
            assert_eq!(err, 0.0, "position {position}");
        } else {
            assert!(err > 1e-4, "position {position}: {err:e}");
        }
    }
    // A sequence longer than the window decodes (it was refused before).
    let params = crate::engine::sampling::SamplingParams {
        min_new_tokens: 3 * WINDOW,
        max_new_tokens: 3 * WINDOW,
        ..Default::default()
    };
    let out = crate::engine::inference::generate(
        &windowed,
        &ids[..4],
        &params,
        &[2],
        &crate::engine::events::EventSink::none(),
        0,
        &crate::engine::events::CancelToken::new(),
    )
    .unwrap();
    assert_eq!(out.output_ids.len(), 3 * WINDOW);
}
