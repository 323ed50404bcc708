//! Bundle tests: writing and reading back, and every refusal of a damaged or hostile bundle
//! (sizes, checksums, names, shapes, dtypes) naming what is wrong.

use super::*;

/// A small valid bundle: 3 generated tokens, hidden 4, layers 0 and 2 of a 2-layer model.
fn write_sample(dir: &Path) -> Manifest {
    let rows = 3;
    let hidden = 4;
    let layers = vec![0, 2];
    let data = layers
        .iter()
        .map(|&l| {
            (0..rows * hidden)
                .flat_map(|i| (i as f32 + l as f32 * 0.5).to_le_bytes())
                .collect()
        })
        .collect();
    let states = CapturedStates::from_parts(layers, hidden, DType::F32, rows, data).unwrap();
    let manifest = Manifest {
        format_version: BUNDLE_FORMAT_VERSION,
        model: ModelIdentity {
            name: "smollm2-135m".into(),
            weights_sha256: "0".repeat(64),
            n_layers: 2,
            hidden,
        },
        precision: "full".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
        tokenizer: "t".into(),
        prompt_text: "p".into(),
        prompt_ids: vec![1, 2],
        output_ids: vec![3, 4, 5],
        output_text: "abc".into(),
        sampling: SamplingParams::default(),
        layers: vec![],
        timings: Timings {
            prefill_s: 0.1,
            decode_s: 0.2,
            total_s: 0.3,
            tokens_per_s: 10.0,
        },
        cancelled: false,
        hidden_states: TensorFile {
            file: String::new(),
            sha256: String::new(),
            bytes: 0,
        },
        context: None,
        request: None,
        commitment: None,
    };
    write_bundle(dir, manifest, &states).unwrap();
    serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap()
}

fn error_of(dir: &Path) -> String {
    match read_bundle(dir) {
        Ok(_) => panic!("{} should be refused", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_written_bundle_reads_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_sample(dir.path());
    let bundle = read_bundle(dir.path()).unwrap();
    assert_eq!(bundle.manifest, manifest);
    assert_eq!(bundle.states.layers, vec![0, 2]);
    assert_eq!(bundle.states.row_f32(1, 2), vec![9.0, 10.0, 11.0, 12.0]);
}

#[test]
fn writing_replaces_a_planted_link_instead_of_following_it() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    std::fs::create_dir(&bundle).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for name in [TENSORS_FILE, MANIFEST_FILE] {
        std::os::unix::fs::symlink(&victim, bundle.join(name)).unwrap();
    }
    write_sample(&bundle);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Both files get the mode of an ordinary new file (the tensors' temporary file was
    // private).
    use std::os::unix::fs::PermissionsExt;
    let mode = |name: &str| {
        std::fs::metadata(bundle.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    std::fs::write(bundle.join("ordinary"), b"").unwrap();
    assert_eq!(mode(TENSORS_FILE), mode("ordinary"));
    assert_eq!(mode(MANIFEST_FILE), mode("ordinary"));
    // And what was written is what the manifest's size and checksum describe.
    assert!(read_bundle(&bundle).is_ok());
}

#[test]
fn links_and_non_files_inside_a_bundle_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    write_sample(&bundle);
    let tensors = bundle.join(TENSORS_FILE);
    let elsewhere = dir.path().join("elsewhere.safetensors");
    std::fs::rename(&tensors, &elsewhere).unwrap();

    // The same bytes behind a link: refused, a bundle's files must be its own.
    std::os::unix::fs::symlink(&elsewhere, &tensors).unwrap();
    let err = error_of(&bundle);
    assert!(
        err.contains("symbolic link") && err.contains(TENSORS_FILE),
        "{err}"
    );

    // A FIFO could hand the hash one stream of bytes and the parser another, or block
    // forever waiting for a writer: refused before it is opened.
    std::fs::remove_file(&tensors).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&tensors)
        .status()
        .unwrap();
    assert!(status.success());
    let err = error_of(&bundle);
    assert!(err.contains("not a regular file"), "{err}");

    // A manifest that is a link is refused too.
    std::fs::remove_file(&tensors).unwrap();
    std::fs::rename(&elsewhere, &tensors).unwrap();
    let manifest = bundle.join(MANIFEST_FILE);
    let moved = dir.path().join("manifest.json");
    std::fs::rename(&manifest, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &manifest).unwrap();
    let err = error_of(&bundle);
    assert!(
        err.contains("symbolic link") && err.contains(MANIFEST_FILE),
        "{err}"
    );
}

#[test]
fn sizes_and_layers_are_checked_against_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_sample(dir.path());
    let write_manifest = |m: &Manifest| {
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(m).unwrap(),
        )
        .unwrap()
    };

    // A claimed size beyond the limit is refused before the file is touched.
    let mut m = manifest.clone();
    m.hidden_states.bytes = MAX_TENSOR_BYTES + 1;
    write_manifest(&m);
    let err = error_of(dir.path());
    assert!(err.contains("hidden_states.bytes"), "{err}");

    // A file longer than the manifest says is cut off at the claimed size and refused.
    let mut m = manifest.clone();
    m.hidden_states.bytes -= 1;
    write_manifest(&m);
    let err = error_of(dir.path());
    assert!(err.contains("limit"), "{err}");

    // Only the embeddings: nothing would be checked, so the bundle is refused.
    let mut m = manifest.clone();
    m.layers = vec![0];
    write_manifest(&m);
    let err = error_of(dir.path());
    assert!(err.contains("no checked layer"), "{err}");

    // A model shape no transformer has: it would size the layer list an experiment
    // checks (10^15 layers hung the verifier).
    let mut m = manifest.clone();
    m.model.n_layers = 1_000_000_000_000_000;
    write_manifest(&m);
    let err = error_of(dir.path());
    assert!(err.contains("model.n_layers 1000000000000000"), "{err}");

    // Timings that are not durations would turn into absurd overheads.
    for total_s in [0.0, -1.0] {
        let mut m = manifest.clone();
        m.timings.total_s = total_s;
        write_manifest(&m);
        let err = error_of(dir.path());
        assert!(err.contains("timings"), "{total_s}: {err}");
    }

    write_manifest(&manifest);
    assert!(read_bundle(dir.path()).is_ok());
}

#[test]
fn bundles_without_the_cancelled_field_read_as_finished() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path());
    let path = dir.path().join(MANIFEST_FILE);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(value["cancelled"], false);
    value.as_object_mut().unwrap().remove("cancelled");
    std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
    assert!(!read_bundle(dir.path()).unwrap().manifest.cancelled);
}
