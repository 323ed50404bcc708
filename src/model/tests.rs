//! The tapped forward pass against Hugging Face transformers' float32 reference, and the
//! safetensors/Qwen2 path on a tiny random model.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::device::DeviceProfile;
use super::load_model;
use super::source::ModelSource;
use super::transformer::top_k_ids;
use super::weights::Precision;
use crate::testutil::{embedded, smollm_fixture};

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let diff = (&a - &b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    let norm = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    diff / norm
}

#[test]
fn full_precision_matches_transformers_at_every_layer() {
    let reference = candle_core::safetensors::load(
        smollm_fixture("reference_hidden_states.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids: Vec<u32> = reference["input_ids"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&x| x as u32)
        .collect();
    let m = embedded(Precision::Full, DeviceProfile::CPU_F32);
    let n = m.model.config.n_layers;
    let taps: Vec<usize> = (0..=n).collect();
    let mut cache = m.model.new_cache();
    let out = m.model.forward(&ids, &mut cache, &taps, true).unwrap();
    let mut worst = 0f64;
    for (index, hidden) in &out.taps {
        let key = if *index == n {
            "hidden.final_norm".to_string()
        } else {
            format!("hidden.{index}")
        };
        let err = rel_l2(hidden, &reference[&key]);
        worst = worst.max(err);
        assert!(err <= 1e-4, "{key}: relative L2 error {err:e} > 1e-4");
    }
    eprintln!("worst per-layer relative L2 vs transformers: {worst:e}");
    // The same positions decoded one token at a time from an empty cache: every step is the
    // fast decode step (transformer/decode_step.rs), held to the same bound.
    assert_eq!(m.model.fast_decode_refusal(), None);
    let mut cache = m.model.new_cache();
    let steps: Vec<_> = ids
        .iter()
        .map(|&id| m.model.forward(&[id], &mut cache, &taps, true).unwrap())
        .collect();
    for (slot, (index, _)) in out.taps.iter().enumerate() {
        let rows: Vec<Tensor> = steps.iter().map(|s| s.taps[slot].1.clone()).collect();
        let key = if *index == n {
            "hidden.final_norm".to_string()
        } else {
            format!("hidden.{index}")
        };
        let reference = reference[&key].reshape(out.taps[slot].1.dims()).unwrap();
        let err = rel_l2(&Tensor::cat(&rows, 0).unwrap(), &reference);
        assert!(
            err <= 1e-4,
            "{key}, decoded: relative L2 error {err:e} > 1e-4"
        );
    }
    let last = steps.last().unwrap().logits.as_ref().unwrap();
    let ref_last = reference["logits_last"].flatten_all().unwrap();
    assert!(rel_l2(last, &ref_last) < 1e-4, "decoded logits");
    let logits = out.logits.unwrap();
    let ref_logits = &reference["logits_last"];
    let ref_logits = ref_logits.flatten_all().unwrap();
    assert_eq!(
        top_k_ids(&logits, 5).unwrap(),
        top_k_ids(&ref_logits, 5).unwrap()
    );
    assert!(rel_l2(&logits, &ref_logits) < 1e-4);
}

#[test]
fn decode_steps_agree_with_one_prefill_and_stopping_early_changes_nothing() {
    let m = embedded(Precision::Full, DeviceProfile::CPU_F32);
    let ids = m
        .tokenizer
        .encode("The capital of France is Paris, and the capital of Italy is")
        .unwrap();
    let layers = [4usize, 15, 29];
    let mut cache = m.model.new_cache();
    let prefill = m.model.forward(&ids, &mut cache, &layers, false).unwrap();
    let mut cache = m.model.new_cache();
    let split = ids.len() - 3;
    m.model
        .forward(&ids[..split], &mut cache, &[], true)
        .unwrap();
    for (k, &id) in ids[split..].iter().enumerate() {
        let step = m.model.forward(&[id], &mut cache, &layers, true).unwrap();
        for ((l1, full), (l2, one)) in prefill.taps.iter().zip(&step.taps) {
            assert_eq!(l1, l2);
            let row = full.narrow(0, split + k, 1).unwrap();
            let err = rel_l2(one, &row);
            assert!(
                err < 1e-5,
                "layer {l1} position {}: decode vs prefill {err:e}",
                split + k
            );
        }
    }
}

#[test]
fn quantized_weights_drift_far_more_than_full_precision() {
    let full = embedded(Precision::Full, DeviceProfile::CPU_F32);
    let q4 = embedded("q4_0".parse().unwrap(), DeviceProfile::CPU_F32);
    let ids = full
        .tokenizer
        .encode("Explain recursion to a child.")
        .unwrap();
    let a = full
        .model
        .forward(&ids, &mut full.model.new_cache(), &[16], false)
        .unwrap();
    let b = q4
        .model
        .forward(&ids, &mut q4.model.new_cache(), &[16], false)
        .unwrap();
    let err = rel_l2(&b.taps[0].1, &a.taps[0].1);
    assert!(err > 1e-2, "q4_0 drift {err:e} should be large");
}

/// Writes a tiny random Qwen2 checkpoint (q/k/v biases, untied head) in the Hugging Face
/// layout, with the real SmolLM2 tokenizer so token ids are meaningful.
pub(super) fn write_tiny_qwen2(dir: &std::path::Path, tied: bool) {
    let dev = Device::Cpu;
    let (vocab, hidden, inter, layers, heads, kv) =
        (49152usize, 32usize, 64usize, 2usize, 4usize, 2usize);
    let head_dim = hidden / heads;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut rnd = |name: &str, shape: &[usize], scale: f64| {
        let x = (Tensor::randn(0f32, 1f32, shape, &dev).unwrap() * scale).unwrap();
        t.insert(name.to_string(), x);
    };
    rnd("model.embed_tokens.weight", &[vocab, hidden], 0.5);
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        rnd(
            &format!("{p}.self_attn.q_proj.weight"),
            &[heads * head_dim, hidden],
            0.2,
        );
        rnd(
            &format!("{p}.self_attn.q_proj.bias"),
            &[heads * head_dim],
            0.1,
        );
        rnd(
            &format!("{p}.self_attn.k_proj.weight"),
            &[kv * head_dim, hidden],
            0.2,
        );
        rnd(&format!("{p}.self_attn.k_proj.bias"), &[kv * head_dim], 0.1);
        rnd(
            &format!("{p}.self_attn.v_proj.weight"),
            &[kv * head_dim, hidden],
            0.2,
        );
        rnd(&format!("{p}.self_attn.v_proj.bias"), &[kv * head_dim], 0.1);
        rnd(
            &format!("{p}.self_attn.o_proj.weight"),
            &[hidden, heads * head_dim],
            0.2,
        );
        rnd(&format!("{p}.mlp.gate_proj.weight"), &[inter, hidden], 0.2);
        rnd(&format!("{p}.mlp.up_proj.weight"), &[inter, hidden], 0.2);
        rnd(&format!("{p}.mlp.down_proj.weight"), &[hidden, inter], 0.2);
        rnd(&format!("{p}.input_layernorm.weight"), &[hidden], 0.1);
        rnd(
            &format!("{p}.post_attention_layernorm.weight"),
            &[hidden],
            0.1,
        );
    }
    rnd("model.norm.weight", &[hidden], 0.1);
    if !tied {
        rnd("lm_head.weight", &[vocab, hidden], 0.2);
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "qwen2", "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "vocab_size": vocab, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 512, "tie_word_embeddings": tied
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        smollm_fixture("hf_tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        smollm_fixture("hf_tokenizer/tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
}

#[test]
fn tiny_qwen2_from_safetensors_decodes_like_it_prefills() {
    for tied in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_qwen2(dir.path(), tied);
        let m = load_model(
            "tiny",
            &ModelSource::HfDir(dir.path().to_path_buf()),
            Precision::Full,
            DeviceProfile::CPU_F32,
        )
        .unwrap();
        assert_eq!(m.model.config.n_layers, 2);
        let ids = m.tokenizer.encode("hello tiny qwen world").unwrap();
        let taps = [0usize, 1, 2];
        let mut cache = m.model.new_cache();
        let full = m.model.forward(&ids, &mut cache, &taps, true).unwrap();
        let mut cache = m.model.new_cache();
        let mut last_logits = None;
        for (pos, &id) in ids.iter().enumerate() {
            let step = m.model.forward(&[id], &mut cache, &taps, true).unwrap();
            for ((l, all), (_, one)) in full.taps.iter().zip(&step.taps) {
                let err = rel_l2(one, &all.narrow(0, pos, 1).unwrap());
                assert!(err < 1e-5, "tied={tied} layer {l} pos {pos}: {err:e}");
            }
            last_logits = step.logits;
        }
        let err = rel_l2(&last_logits.unwrap(), &full.logits.unwrap());
        assert!(err < 1e-5, "tied={tied}: logits {err:e}");
    }
}

/// The hub tests set HF_HOME, HF_ENDPOINT and friends, which the whole process shares.
pub(super) static HUB_ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn hub_ids_resolve_from_the_hugging_face_cache_without_network() {
    let _env = HUB_ENV.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::tempdir().unwrap();
    let repo_dir = home
        .path()
        .join("hub")
        .join("models--verillm-test--tiny-qwen2");
    let snapshot = repo_dir.join("snapshots").join("0123456789abcdef");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), "0123456789abcdef").unwrap();
    write_tiny_qwen2(&snapshot, true);
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let source = super::source::parse_model_arg("hf:verillm-test/tiny-qwen2", home.path()).unwrap();
    let m = load_model(
        "hf:verillm-test/tiny-qwen2",
        &source,
        Precision::Full,
        DeviceProfile::CPU_F32,
    )
    .unwrap();
    assert_eq!(m.model.config.hidden, 32);
    let missing = super::source::parse_model_arg("hf:verillm-test/absent", home.path()).unwrap();
    let err = load_model("absent", &missing, Precision::Full, DeviceProfile::CPU_F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("verillm-test/absent") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    // A revision pinned to a commit, as Python's cache stores it: a snapshot folder named by
    // the commit and no `refs/` entry.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let pinned = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&pinned).unwrap();
    for entry in std::fs::read_dir(&snapshot).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), pinned.join(entry.file_name())).unwrap();
    }
    let arg = format!("hf:verillm-test/tiny-qwen2@{commit}");
    let source = super::source::parse_model_arg(&arg, home.path()).unwrap();
    let m = load_model(&arg, &source, Precision::Full, DeviceProfile::CPU_F32).unwrap();
    assert_eq!(m.model.config.n_layers, 2);
    // A revision becomes a path in the hub cache: only plain names, never `..`.
    for bad in ["a/b@../../x", "a/b@", "a/b@main/../..", "a/b@v 1"] {
        let err = super::source::parse_model_arg(bad, home.path())
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"))
            .to_string();
        assert!(err.contains("revision"), "{bad}: {err}");
    }
    assert!(super::source::parse_model_arg("a/b@refs/pr/1", home.path()).is_ok());
    // A missing file is named as missing, never turned into a hub request.
    for path in [
        "./missing.gguf",
        "missing/x.gguf",
        "/no/such/dir",
        "models/a/b",
        "~/m",
    ] {
        let err = super::source::parse_model_arg(path, home.path())
            .err()
            .unwrap_or_else(|| panic!("{path} accepted"))
            .to_string();
        assert!(err.contains("no such file or directory"), "{path}: {err}");
    }
    // Hub names follow the hub's rules ('.' and '..' are not repo names).
    for bad in ["hf:./x", "hf:a/..", "hf:-a/b", "hf:a/b-", "hf:a--b/c"] {
        assert!(
            super::source::parse_model_arg(bad, home.path()).is_err(),
            "{bad} accepted"
        );
    }
    assert!(super::source::parse_model_arg("Qwen/Qwen2.5-7B-Instruct", home.path()).is_ok());

    // A cache laid out as Python writes it (blobs named by sha256, snapshot links, a
    // `.no_exist` marker for the absent shard index) opens with no network and no
    // HF_HUB_OFFLINE: the endpoint below answers nothing.
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    python_style_cache(home.path(), "blobbed", commit);
    let load = |name: &str| {
        let arg = format!("hf:verillm-test/{name}");
        let source = super::source::parse_model_arg(&arg, home.path()).unwrap();
        load_model(&arg, &source, Precision::Full, DeviceProfile::CPU_F32)
    };
    let m = load("blobbed").unwrap();
    assert_eq!(m.model.config.n_layers, 2);
    // Its identity is the weights' content hash, and a blob whose content no longer matches its
    // name is reported as damaged instead of passing for the real weights.
    let weights_blob = python_style_cache(home.path(), "damaged", commit);
    let mut bytes = std::fs::read(&weights_blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights_blob, bytes).unwrap();
    let Err(error) = load("damaged") else {
        panic!("a damaged blob loaded");
    };
    assert!(format!("{error:#}").contains("damaged"), "{error:#}");

    // A gated repo: HF_TOKEN is sent, and a refusal says what to do about it. The "hub" is a
    // local socket that records the request and answers 401.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hub = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        while reader.read_line(&mut request).unwrap() > 2 && !request.ends_with("\r\n\r\n") {}
        let mut stream = stream;
        stream
            .write_all(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
        request
    });
    std::env::set_var("HF_ENDPOINT", &endpoint);
    std::env::set_var("HF_TOKEN", "hf_verillm_test_token");
    let Err(error) = load("gated") else {
        panic!("a refused repo loaded");
    };
    std::env::remove_var("HF_TOKEN");
    std::env::remove_var("HF_ENDPOINT");
    let request = hub.join().unwrap().to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer hf_verillm_test_token"),
        "{request}"
    );
    assert!(format!("{error:#}").contains("HF_TOKEN"), "{error:#}");
}

#[test]
fn hub_errors_are_read_by_their_status_not_by_digits_in_the_url() {
    use super::source::http_status;
    let url = "https://huggingface.co/a/b/resolve/12345678904041ef/tokenizer_config.json";
    assert_eq!(http_status(&format!("{url}: status code 404")), Some(404));
    assert_eq!(http_status(&format!("{url}: status code 401")), Some(401));
    // A connection failure whose URL happens to contain "404" is no "file absent".
    assert_eq!(
        http_status(&format!("{url}: Connection Failed: refused")),
        None
    );
}

/// Writes the tiny Qwen2 model into `home`'s hub cache as `verillm-test/<name>` the way Python's
/// huggingface_hub lays it out, and returns the weights blob.
fn python_style_cache(home: &std::path::Path, name: &str, commit: &str) -> std::path::PathBuf {
    let repo_dir = home
        .join("hub")
        .join(format!("models--verillm-test--{name}"));
    let files = tempfile::tempdir().unwrap();
    write_tiny_qwen2(files.path(), true);
    let (blobs, snapshot) = (
        repo_dir.join("blobs"),
        repo_dir.join("snapshots").join(commit),
    );
    for dir in [&blobs, &snapshot, &repo_dir.join("refs")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut weights = None;
    for entry in std::fs::read_dir(files.path()).unwrap() {
        let path = entry.unwrap().path();
        let hash = crate::util::sha256_file(&path).unwrap();
        std::fs::copy(&path, blobs.join(&hash)).unwrap();
        let file_name = path.file_name().unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{hash}"), snapshot.join(file_name))
            .unwrap();
        if file_name == "model.safetensors" {
            weights = Some(blobs.join(&hash));
        }
    }
    std::fs::write(repo_dir.join("refs").join("main"), commit).unwrap();
    let absent = repo_dir.join(".no_exist").join(commit);
    std::fs::create_dir_all(&absent).unwrap();
    std::fs::write(absent.join("model.safetensors.index.json"), "").unwrap();
    weights.expect("the tiny model has weights")
}

#[test]
fn warm_up_runs_prefill_and_decode_at_every_precision_kind_and_dtype() {
    // The embedded GGUF mixes Q4_1 and float tensors: at `native` precision in a half dtype the
    // float ones must not meet f32 activations (this failed in `bench --device cpu:bf16`).
    for profile in ["cpu", "cpu:bf16", "cpu:f16"] {
        let profile = DeviceProfile::parse(profile).unwrap();
        for precision in [Precision::Full, Precision::Native] {
            let m = embedded(precision, profile);
            m.model
                .warm_up()
                .unwrap_or_else(|e| panic!("{precision} on {profile}: {e:#}"));
        }
    }
}

/// The tiny model's config.json with `changes` merged in (the string "<absent>" removes a key),
/// parsed.
fn tiny_config_with(changes: serde_json::Value) -> anyhow::Result<super::config::ModelConfig> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = serde_json::json!({
        "model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 49152, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 512
    });
    for (key, value) in changes.as_object().unwrap() {
        if value == "<absent>" {
            config.as_object_mut().unwrap().remove(key);
        } else {
            config[key] = value.clone();
        }
    }
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    super::config::ModelConfig::from_hf_config(&path)
}

#[test]
fn hf_configs_with_features_this_forward_does_not_compute_are_refused() {
    use serde_json::json;
    let refused = [
        (
            json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
            "linear",
        ),
        (
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
            "yarn",
        ),
        (json!({"hidden_act": "gelu"}), "hidden_act"),
        (
            json!({"model_type": "llama", "attention_bias": true}),
            "attention_bias",
        ),
        (json!({"mlp_bias": true}), "mlp_bias"),
    ];
    for (changes, needle) in refused {
        let err = format!("{:#}", tiny_config_with(changes.clone()).unwrap_err());
        assert!(
            err.contains(needle) && err.contains("config.json"),
            "{changes}: {err}"
        );
    }
    // transformers >= 5: theta and scaling live in rope_parameters.
    let v5 = tiny_config_with(json!({
        "rope_theta": "<absent>",
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}
    }))
    .unwrap();
    assert_eq!(v5.rope_theta, 500000.0);
    assert!(v5.rope_scaling.is_some());
    // Qwen2's window (from max_window_layers on) is not modelled, so it bounds the context,
    // with transformers' default (off unless asked). Mistral's window is computed (windowed
    // attention), so it no longer bounds the context: absent = 4096, null = none.
    let positions = |changes: serde_json::Value| tiny_config_with(changes).unwrap().max_positions;
    let window = |changes: serde_json::Value| tiny_config_with(changes).unwrap().sliding_window;
    assert_eq!(positions(json!({"sliding_window": 64})), 512);
    assert_eq!(
        positions(json!({"sliding_window": 64, "use_sliding_window": true})),
        64
    );
    assert_eq!(
        positions(json!({"model_type": "mistral", "sliding_window": 64})),
        512
    );
    assert_eq!(
        window(json!({"model_type": "mistral", "sliding_window": 64})),
        Some(64)
    );
    assert_eq!(
        positions(
            json!({"model_type": "mistral", "sliding_window": null, "max_position_embeddings": 32768})
        ),
        32768
    );
    assert_eq!(
        window(json!({"model_type": "mistral", "sliding_window": null})),
        None
    );
    assert_eq!(
        positions(json!({"model_type": "mistral", "max_position_embeddings": 32768})),
        32768
    );
    assert_eq!(
        window(json!({"model_type": "mistral", "max_position_embeddings": 32768})),
        Some(4096)
    );
    assert_eq!(window(json!({"sliding_window": 64})), None);
    assert!(tiny_config_with(json!({"hidden_act": "silu"})).is_ok());
    assert!(tiny_config_with(json!({"hidden_act": "swish"})).is_ok());
}

#[test]
fn tiny_model_problems_are_errors_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_qwen2(dir.path(), true);
    let source = ModelSource::HfDir(dir.path().to_path_buf());
    let load = || load_model("tiny", &source, Precision::Full, DeviceProfile::CPU_F32);

    // A prompt plus budget beyond the context is refused before the first step.
    let m = load().unwrap();
    let params = crate::engine::sampling::SamplingParams {
        max_new_tokens: 600,
        ..Default::default()
    };
    let err = crate::engine::inference::generate(
        &m,
        &[1, 2, 3],
        &params,
        &[1],
        &crate::engine::events::EventSink::none(),
        0,
        &crate::engine::events::CancelToken::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("context of 512") && err.contains("at most 509"),
        "{err}"
    );

    // A chat template that does not compile is an error, not silently plain text.
    let config = dir.path().join("tokenizer_config.json");
    let good = std::fs::read(&config).unwrap();
    std::fs::write(&config, r#"{"chat_template": "{% generation %}"}"#).unwrap();
    let err = format!("{:#}", load().err().unwrap());
    assert!(
        err.contains("tokenizer_config.json") && err.contains("chat template"),
        "{err}"
    );
    std::fs::write(&config, good).unwrap();

    // Qwen2 without its attention biases would compute another model: refused.
    let weights = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    tensors.remove("model.layers.0.self_attn.k_proj.bias");
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let err = format!("{:#}", load().err().unwrap());
    assert!(
        err.contains("model.layers.0.self_attn.k_proj.bias"),
        "{err}"
    );
}

#[test]
fn chat_prompts_are_encoded_without_a_second_bos() {
    // A Llama-3 style tokenizer adds BOS in its post-processor; a template that renders
    // `{{ bos_token }}` already wrote it, so the rendered prompt is encoded as transformers'
    // apply_chat_template does: without added special tokens.
    let dir = tempfile::tempdir().unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(smollm_fixture("hf_tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    json["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}
    });
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let tokenizer = super::tokenizer::TextTokenizer::from_tokenizer_json(&path).unwrap();
    let rendered = "<|im_start|>user\nhi<|im_end|>\n";
    let plain = tokenizer.encode(rendered).unwrap();
    assert_eq!(&plain[..2], &[1, 1], "the post-processor adds BOS");
    let ids = tokenizer.encode_rendered(rendered).unwrap();
    assert_eq!(ids[0], 1);
    assert_ne!(ids[1], 1);
    assert_eq!(&ids[..], &plain[1..]);
}

#[test]
fn a_fifo_in_a_model_directory_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_qwen2(dir.path(), true);
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        let path = dir.path().join(file);
        let kept = dir.path().join(format!("{file}.kept"));
        std::fs::rename(&path, &kept).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success());
        let source = ModelSource::HfDir(dir.path().to_path_buf());
        let err = match load_model("tiny", &source, Precision::Full, DeviceProfile::CPU_F32) {
            Ok(_) => panic!("{file} as a FIFO loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(file) && err.contains("not a regular file"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&kept, &path).unwrap();
    }
}

/// The fixtures ship in `tests/fixtures` (a fresh clone has no shared folder beside it), unchanged:
/// each file's SHA-256 is the one its README records.
#[test]
fn fixtures_travel_with_the_repository() {
    use sha2::{Digest, Sha256};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("tests/fixtures/README.md");
    let listed: Vec<(&str, &str)> = readme
        .lines()
        .filter_map(|line| line.trim().split_once("  "))
        .filter(|(hash, _)| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(
        listed.len(),
        5,
        "the README lists every SmolLM2 fixture with its SHA-256"
    );
    for (hash, name) in listed {
        let path = root.join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let actual: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            actual, hash,
            "{name} differs from the copy its README describes"
        );
    }
}
