use std::collections::BTreeSet;

use serde::Deserialize;

use super::*;
use crate::model::device::DeviceProfile;
use crate::record::results::TrialVerdict;
use crate::stats::policy::PolicyConfig;

fn builtin() -> ConfigSet {
    ConfigSet::builtin().unwrap_or_else(|e| panic!("built-in configs must load: {e}"))
}

#[test]
fn builtin_configs_load_and_define_the_five_experiments() {
    let config = builtin();
    let names = config.experiments.experiment_names();
    let seeds: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("exp"))
        .collect();
    assert_eq!(seeds, ["exp1", "exp2", "exp3", "exp4", "exp5"]);
    // Beside them, the cheats (a cheat, substituted weights or lazy verifiers, expected REJECT
    // but where stated) and the honest controls (expected PASS).
    for name in names.iter().filter(|n| !n.starts_with("exp")) {
        let spec = config.experiments.get(name).unwrap();
        let cheats = spec.inference.cheat.is_some()
            || spec.inference.precision.to_string() != "full"
                && !name.starts_with("control-native")
            || spec.verifiers.iter().any(|v| v.lazy);
        match name.split('-').next() {
            Some("cheat") => {
                assert!(cheats, "{name}");
                // A lazy verifier's run expects PASS of its honest bundles and REJECT of the
                // ones planted among them; a same-seed stale answer is an honest one.
                let expects_pass = spec.plant.is_some() || *name == "cheat-stale-same-seed";
                assert_eq!(spec.expected == TrialVerdict::Pass, expects_pass, "{name}");
            }
            Some("control") => {
                assert!(!cheats, "{name}");
                assert_eq!(spec.expected, TrialVerdict::Pass, "{name}");
            }
            _ => panic!("{name}: neither a seed experiment, a cheat nor a control"),
        }
    }
    let expected = [
        ("exp1", 0.95, TrialVerdict::Pass),
        ("exp2", 0.90, TrialVerdict::Pass),
        ("exp3", 0.80, TrialVerdict::Reject),
        ("exp4", 0.70, TrialVerdict::Reject),
        ("exp5", 0.80, TrialVerdict::Reject),
    ];
    for (name, cutoff, verdict) in expected {
        let spec = config.experiments.get(name).unwrap();
        assert_eq!((spec.cutoff, spec.expected), (cutoff, verdict), "{name}");
        assert_eq!(spec.verifiers.len(), 3, "{name}");
        assert_eq!(spec.policy, PolicyConfig::default(), "{name}");
        let model = config.models.get(&spec.inference.model).unwrap();
        assert_eq!(spec.sampled_layers(model.layers), vec![8, 16, 24], "{name}");
    }
    let exp3 = config.experiments.get("exp3").unwrap();
    assert_eq!(exp3.inference.precision.to_string(), "q4_0");
    let exp5 = config.experiments.get("exp5").unwrap();
    assert!(exp5
        .verifier_roles(GpuUse::None)
        .iter()
        .all(|r| r.precision.to_string() == "q4_0"));
    // exp2 crosses precisions on a CPU-only machine: bf16 inference, f32 verifiers.
    let exp2 = config.experiments.get("exp2").unwrap();
    assert_eq!(
        exp2.inference_role(GpuUse::None).device,
        DeviceProfile::parse("cpu:bf16").unwrap()
    );
    assert_eq!(
        exp2.verifier_roles(GpuUse::None)[0].device,
        DeviceProfile::CPU_F32
    );
    assert_eq!(
        exp2.inference_role(GpuUse::Configured).device,
        DeviceProfile::parse("cuda:0").unwrap()
    );
    // A forced GPU profile replaces every gpu_device; roles without one keep their device.
    let bf16 = DeviceProfile::parse("cuda:0:bf16").unwrap();
    assert_eq!(exp2.inference_role(GpuUse::Forced(bf16)).device, bf16);
    assert!(exp2
        .verifier_roles(GpuUse::Forced(bf16))
        .iter()
        .all(|r| r.device == DeviceProfile::CPU_F32));
    let exp1 = config.experiments.get("exp1").unwrap();
    assert!(exp1
        .verifier_roles(GpuUse::Forced(bf16))
        .iter()
        .all(|r| r.device == bf16));
    assert_eq!(config.dir, None);
}

#[test]
fn builtin_models_have_the_published_shapes() {
    let config = builtin();
    let smol = config.models.get("smollm2-135m").unwrap();
    assert_eq!(
        (smol.layers, smol.hidden, smol.arch),
        (30, 576, ModelArch::Llama)
    );
    assert_eq!(
        smol.source.location(),
        WeightsLocation::Embedded {
            upstream: Some("HuggingFaceTB/SmolLM2-135M-Instruct")
        }
    );
    let qwen = config.models.get("qwen2.5-7b-instruct").unwrap();
    assert_eq!(
        (qwen.layers, qwen.hidden, qwen.arch),
        (28, 3584, ModelArch::Qwen2)
    );
    assert_eq!(
        qwen.source.location(),
        WeightsLocation::Hub {
            repo: "Qwen/Qwen2.5-7B-Instruct",
            revision: "main"
        }
    );
    assert_eq!(
        qwen.gguf.as_ref().unwrap().file,
        "qwen2.5-7b-instruct-q4_k_m.gguf"
    );
    assert_eq!(
        config.models.get("llama-3.1-8b-instruct").unwrap().layers,
        32
    );
    assert_eq!(
        config
            .models
            .get("mistral-7b-instruct-v0.3")
            .unwrap()
            .hidden,
        4096
    );
}

#[test]
fn every_prompt_category_is_big_enough_and_long_prompts_are_long() {
    let config = builtin();
    for category in PromptCategory::ALL {
        let prompts = &config.prompts.category(category).prompts;
        assert!(
            prompts.len() >= 10,
            "{category}: only {} prompts",
            prompts.len()
        );
    }
    for prompt in &config.prompts.long.prompts {
        assert!(
            prompt.char_count() >= 6000,
            "long prompt {} has {} chars",
            prompt.id,
            prompt.char_count()
        );
    }
    for prompt in &config.prompts.short.prompts {
        assert!(
            prompt.char_count() < 400,
            "short prompt {} has {} chars",
            prompt.id,
            prompt.char_count()
        );
    }
    for prompt in &config.prompts.medium.prompts {
        let chars = prompt.char_count();
        assert!(
            (600..6000).contains(&chars),
            "medium prompt {} has {chars} chars",
            prompt.id
        );
    }
}

#[test]
fn long_prompts_are_not_padded_by_repetition() {
    let config = builtin();
    for prompt in &config.prompts.long.prompts {
        let text = prompt.plain_text();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.len() > 40)
            .collect();
        let distinct: BTreeSet<&str> = lines.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            lines.len(),
            "long prompt {} repeats a line",
            prompt.id
        );
    }
}

#[test]
fn prompt_selection_is_deterministic_and_cycles() {
    let config = builtin();
    let ids = |seed| -> Vec<String> {
        config
            .prompts
            .select(PromptCategory::Short, 25, seed)
            .iter()
            .map(|p| p.id.clone())
            .collect()
    };
    assert_eq!(ids(7), ids(7));
    assert_ne!(ids(7), ids(8));
    let first = ids(7);
    let n = config.prompts.short.prompts.len();
    assert_eq!(first.len(), 25);
    assert_eq!(
        first[..n].iter().collect::<BTreeSet<_>>().len(),
        n,
        "a full pass before repeating"
    );
    assert_eq!(first[n], first[0]);
}

/// `run --trials N --seed S` draws N prompts with seed S, not the experiment's own count and
/// seed (7 trials of exp1 reused prompts while the category had 12).
#[test]
fn a_run_draws_as_many_prompts_as_trials_with_its_own_seed() {
    let config = builtin();
    let exp1 = config.experiments.get("exp1").unwrap();
    assert!(exp1.prompts.count.is_none() && exp1.trials < 7);
    let ids = |trials, seed| -> Vec<String> {
        exp1.select_prompts(&config.prompts, trials, seed)
            .iter()
            .map(|p| p.id.clone())
            .collect()
    };
    let seven = ids(7, 0);
    assert_eq!(seven.len(), 7);
    assert_eq!(seven.iter().collect::<BTreeSet<_>>().len(), 7, "{seven:?}");
    assert_ne!(ids(1, 1), ids(1, 99), "the seed chooses the prompts too");
}

/// Pinned on a synthetic pool, so that a change to the algorithm (which would silently
/// change every run's prompts) is noticed while editing prompts.yaml is not.
#[test]
fn prompt_selection_algorithm_is_pinned() {
    let pool: String = (0..6)
        .map(|i| format!("    - {{id: p{i}, text: t}}\n"))
        .collect();
    let category = |name: &str, pool: &str| {
        format!("{name}:\n  min_new_tokens: 1\n  max_new_tokens: 2\n  prompts:\n{pool}")
    };
    let yaml = category("short", &pool)
        + &category("medium", "    - {id: m, text: t}\n")
        + &category("long", "    - {id: l, text: t}\n");
    let prompts: PromptsFile = serde_yaml::from_str(&yaml).unwrap();
    let ids: Vec<&str> = prompts
        .select(PromptCategory::Short, 8, 42)
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(ids, PINNED_SELECTION);
}

const PINNED_SELECTION: [&str; 8] = ["p4", "p3", "p0", "p2", "p5", "p1", "p4", "p3"];

#[test]
fn sampled_layers_follow_the_hf_convention() {
    let every = |n| LayerSelection::Every(n);
    assert_eq!(every(8).resolve(30), vec![8, 16, 24]);
    assert_eq!(every(8).resolve(32), vec![8, 16, 24, 32]);
    assert_eq!(every(40).resolve(30), Vec::<usize>::new());
    assert_eq!(LayerSelection::All.resolve(3), vec![1, 2, 3]);
    assert_eq!(
        LayerSelection::List(vec![24, 0, 8, 8, 99]).resolve(30),
        vec![0, 8, 24]
    );
}

#[test]
fn layer_selection_parses_both_shapes() {
    #[derive(Deserialize)]
    struct Holder {
        layers: LayerSelection,
    }
    let parse = |yaml: &str| serde_yaml::from_str::<Holder>(yaml).map(|h| h.layers);
    assert_eq!(parse("layers: every:4").unwrap(), LayerSelection::Every(4));
    assert_eq!(parse("layers: all").unwrap(), LayerSelection::All);
    assert_eq!(
        parse("layers: [8, 16]").unwrap(),
        LayerSelection::List(vec![8, 16])
    );
    let err = parse("layers: every:0").unwrap_err().to_string();
    assert!(err.contains("every:0"), "{err}");
    assert!(parse("layers: sometimes").is_err());
    assert!(parse("layers: [-1]").is_err());
}

#[test]
fn experiment_specs_round_trip_through_yaml() {
    let config = builtin();
    let yaml = serde_yaml::to_string(&config.experiments).unwrap();
    let back: ExperimentsFile = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, config.experiments);
}

#[test]
fn locator_finds_block_flow_and_sequence_positions() {
    let text = "\
# comment
experiments:
  exp1:
    description: x   # note
    inference: {model: m, precision: full, device: cpu}
    verifiers:
      - precision: full
        model: foo
      - {precision: q4_0, model: bar}
    layers: [8, 16, 40]
    cutoff: 1.5
  exp2:
    cutoff: 0.5
    list:
    - a
    - b: 1
      c: 2
";
    let at = |path: KeyPath| locate_key(text, &path);
    let exp1 = KeyPath::root().key("experiments").key("exp1");
    assert_eq!(at(exp1.key("cutoff")), Some((11, 5)));
    assert_eq!(at(exp1.key("inference").key("precision")), Some((5, 27)));
    assert_eq!(
        at(exp1.key("verifiers").index(0).key("model")),
        Some((8, 9))
    );
    assert_eq!(at(exp1.key("verifiers").index(1)), Some((9, 7)));
    assert_eq!(
        at(exp1.key("verifiers").index(1).key("model")),
        Some((9, 27))
    );
    assert_eq!(at(exp1.key("layers").index(2)), Some((10, 21)));
    let exp2 = KeyPath::root().key("experiments").key("exp2");
    assert_eq!(at(exp2.key("cutoff")), Some((13, 5)));
    assert_eq!(at(exp2.key("list").index(1).key("c")), Some((17, 7)));
    // Missing keys fall back to the deepest ancestor found.
    assert_eq!(at(exp2.key("trials")), Some((12, 3)));
    assert_eq!(at(KeyPath::root().key("nothing")), None);
    // Keys with dots are one segment; quoted keys are found too.
    let dotted = "models:\n  qwen2.5-7b: {layers: 28}\n  \"quoted\":\n    layers: 3\n";
    let models = KeyPath::root().key("models");
    assert_eq!(
        locate_key(dotted, &models.key("qwen2.5-7b").key("layers")),
        Some((2, 16))
    );
    assert_eq!(
        locate_key(dotted, &models.key("quoted").key("layers")),
        Some((4, 5))
    );
}

#[test]
fn locator_skips_block_scalars() {
    let text = "short:\n  prompts:\n    - id: a\n      text: |\n        id: not-this\n        - fake\n    - id: b\n";
    let prompts = KeyPath::root().key("short").key("prompts");
    assert_eq!(locate_key(text, &prompts.index(1).key("id")), Some((7, 7)));
    assert_eq!(locate_key(text, &prompts.index(2)), Some((2, 3)));
}

#[test]
fn key_paths_display_like_serde_yaml() {
    let path = KeyPath::root()
        .key("experiments")
        .key("exp3")
        .key("verifiers")
        .index(1)
        .key("model");
    assert_eq!(path.to_string(), "experiments.exp3.verifiers[1].model");
}

/// One directory per malformed config under tests/fixtures/bad_configs, each with an
/// `expected_error.yaml` naming the file, line and text the error must contain.
#[test]
fn bad_config_fixtures_report_file_line_and_key() {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Expected {
        file: String,
        line: usize,
        contains: Vec<String>,
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad_configs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("{}: {e}", fixtures.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 7,
        "expected at least 7 fixtures, found {}",
        dirs.len()
    );
    for dir in dirs {
        let expected_text = std::fs::read_to_string(dir.join("expected_error.yaml")).unwrap();
        let expected: Expected = serde_yaml::from_str(&expected_text).unwrap();
        let err = match ConfigSet::load(Some(&dir)) {
            Ok(_) => panic!("{}: loaded without error", dir.display()),
            Err(err) => err,
        };
        let text = err.to_string();
        let place = format!("{}:{}:", dir.join(&expected.file).display(), expected.line);
        assert!(
            text.starts_with(&place),
            "{}: expected {place}…, got: {text}",
            dir.display()
        );
        assert_eq!(err.line(), expected.line, "{text}");
        for needle in &expected.contains {
            assert!(
                text.contains(needle),
                "{}: `{needle}` missing from: {text}",
                dir.display()
            );
        }
    }
}

#[test]
fn user_models_merge_over_builtins_and_other_files_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
            dir.path().join(MODELS_FILE),
            "models:\n  tiny-local:\n    description: a local test model\n    arch: llama\n    layers: 4\n    \
             hidden: 64\n    source: {path: /tmp/tiny.gguf}\n  beside:\n    description: next to the file\n    \
             arch: llama\n    layers: 4\n    hidden: 64\n    source: {path: weights/m.gguf}\n",
        )
        .unwrap();
    let config = ConfigSet::load(Some(dir.path())).unwrap();
    let path = |id: &str| config.models.get(id).unwrap().source.path.clone().unwrap();
    assert_eq!(path("tiny-local"), std::path::Path::new("/tmp/tiny.gguf"));
    // Relative to the models.yaml that names it, not to the working directory.
    assert_eq!(path("beside"), dir.path().join("weights/m.gguf"));
    // Also when the config folder itself was given relative to the working directory.
    let cwd = std::env::current_dir().unwrap();
    let relative: std::path::PathBuf = cwd
        .components()
        .skip(1)
        .map(|_| std::path::Component::ParentDir)
        .chain(dir.path().components().skip(1))
        .collect();
    assert!(relative.is_relative());
    let relative_config = ConfigSet::load(Some(&relative)).unwrap();
    let beside = relative_config.models.get("beside").unwrap();
    let resolved = beside.source.path.clone().unwrap();
    assert!(resolved.is_absolute(), "{}", resolved.display());
    std::fs::create_dir_all(dir.path().join("weights")).unwrap();
    assert_eq!(
        resolved.parent().unwrap().canonicalize().unwrap(),
        dir.path().join("weights").canonicalize().unwrap()
    );
    // A configured path that does not exist is a missing file, never a hub id to fetch.
    let ws = crate::experiment::workspace::Workspace::new(
        relative_config,
        dir.path().into(),
        dir.path().into(),
    );
    let error = format!("{:#}", ws.model_source("beside").unwrap_err());
    assert!(error.contains("no such file or directory"), "{error}");
    assert!(
        config.models.get("smollm2-135m").is_some(),
        "built-in models stay"
    );
    assert_eq!(
        config.experiments,
        builtin().experiments,
        "experiments fall back to the built-in file"
    );
    assert_eq!(config.dir.as_deref(), Some(dir.path()));
    assert_eq!(
        config.models.get("tiny-local").unwrap().source.location(),
        WeightsLocation::Path(Path::new("/tmp/tiny.gguf"))
    );
}

#[test]
fn a_missing_explicit_dir_is_an_error() {
    let err = ConfigSet::load(Some(Path::new("/nonexistent/verillm-config"))).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/verillm-config"),
        "{err}"
    );
}

#[test]
fn model_sources_must_be_one_shape() {
    let source = |yaml: &str| {
        serde_yaml::from_str::<ModelSource>(yaml)
            .unwrap()
            .validate()
    };
    assert!(source("{embedded: true}").is_ok());
    assert!(source("{hub: a/b, revision: v1}").is_ok());
    assert!(source("{path: /x}").is_ok());
    assert_eq!(source("{hub: a/b, path: /x}").unwrap_err().0, "path");
    assert_eq!(source("{embedded: false}").unwrap_err().0, "embedded");
    assert_eq!(
        source("{embedded: true, revision: v1}").unwrap_err().0,
        "revision"
    );
    assert_eq!(source("{hub: not-a-repo}").unwrap_err().0, "hub");
    assert_eq!(
        source("{hub: a/b, revision: ../../outside}").unwrap_err().0,
        "revision"
    );
}

#[test]
fn hostile_config_files_are_refused_by_name() {
    let model = |id: &str, hub: &str| {
        format!(
            "  {id}:\n    description: d\n    arch: llama\n    layers: 4\n    hidden: 64\n    \
             source: {{hub: \"{hub}\"}}\n"
        )
    };
    let load_models = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MODELS_FILE), text).unwrap();
        ConfigSet::load(Some(dir.path()))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // An id given twice: the second silently replaced the first.
    let twice = format!("models:\n{}{}", model("tiny", "a/b"), model("tiny", "c/d"));
    let err = load_models(&twice);
    assert!(
        err.contains("models.yaml") && err.contains("duplicate entry"),
        "{err}"
    );
    // Hub ids follow the hub's rules, as on the command line.
    for bad in ["../..", "a/b?x=1#", "a/.."] {
        let err = load_models(&format!("models:\n{}", model("m", bad)));
        assert!(err.contains("not a hub repository id"), "{bad}: {err}");
    }
    // Aliases: a 1 MB anchored string referenced 3000 times took 3 GB to load. They are found
    // by libyaml itself, wherever YAML allows them (after a tag, in flow collections, after a
    // tab, as complex keys), and text that merely contains '&' or '*' is left alone.
    let aliased = "models:\n  a: &big\n    description: d\n    arch: llama\n    layers: 4\n    \
                   hidden: 64\n    source: {hub: a/b}\n  b: *big\n";
    let err = load_models(aliased);
    assert!(
        err.contains("models.yaml:8:6") && err.contains("aliases"),
        "{err}"
    );
    use super::aliases::{screen, Finding};
    for (yaml, (line, column)) in [
        ("text: !!str &big \"x\"\nother: *big\n", (2, 8)),
        (
            "- {id: 'p1', text: &a x}\n- {id: 'p2', text: *a}\n",
            (2, 20),
        ),
        ("key: [&a x, *a]\n", (1, 13)),
        ("a:\t&t x\nb:\t*t\n", (2, 4)),
        ("? &k text\n: 1\n? *k\n: 2\n", (3, 3)),
        (
            "- id: x\n  text: |\n    block\n  role: &r user\n- role: *r\n",
            (5, 9),
        ),
    ] {
        assert_eq!(screen(yaml), Some(Finding::Alias(line, column)), "{yaml}");
    }
    for yaml in [
        "text: R&D uses &mut x\nlist:\n- a *b\n",
        "text: \"Rewrite this:\n  *Emphasis* marks, &x and Q: *y\"\n",
        "text: 'Explain C pointers:\n  *p = 1; &x'\n",
        "text: plain\n  *continued and &more\n",
        "- text: |\n    *count += 1\n- text: >-\n    &x *y\n",
        "k: {id: a, text: '&b'}\n",
        "anchored: &only-an-anchor x\n",
    ] {
        assert_eq!(screen(yaml), None, "{yaml}");
        // Valid YAML, so None means no alias, not a parse failure.
        assert!(
            serde_yaml::from_str::<serde_yaml::Value>(yaml).is_ok(),
            "{yaml}"
        );
    }

    // Deep flow nesting made the YAML parser take quadratic time (80,000 brackets: 11 s),
    // also with closing brackets hidden in quotes, which only a real scanner sees through.
    let nested = format!("zz: {}{}\n", "[".repeat(80_000), "]".repeat(80_000));
    let err = load_models(&nested);
    assert!(
        err.contains("models.yaml:1:69") && err.contains("nest deeper"),
        "{err}"
    );
    let hidden = format!("zz: {}{}\n", "[']', ".repeat(80_000), "]".repeat(80_000));
    assert_eq!(screen(&hidden), Some(Finding::DeepFlow(1, 5 + 6 * 64)));
    // Brackets in text (prompts with code, 300 unclosed half-open intervals) are no nesting.
    assert_eq!(screen(BUILTIN_PROMPTS), None);
    let intervals: String = (0..300)
        .map(|i| format!("x{i} in [{i}, {}), ", i + 1))
        .collect();
    let text = format!("text: |\n  {intervals}\nmore: \"{intervals}\"\n");
    assert!(serde_yaml::from_str::<serde_yaml::Value>(&text).is_ok());
    assert_eq!(screen(&text), None);

    // A FIFO or a folder where a config file goes is the user's file, not a reason to fall
    // back to the built-in one (a FIFO blocked nothing only because it was skipped).
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join(EXPERIMENTS_FILE);
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let err = ConfigSet::load(Some(dir.path()))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("experiments.yaml") && err.contains("not a regular file"),
        "{err}"
    );
    std::fs::remove_file(&fifo).unwrap();
    std::fs::create_dir(&fifo).unwrap();
    let err = ConfigSet::load(Some(dir.path()))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    // A link to nowhere is the user's file too, and an error.
    std::fs::remove_dir(&fifo).unwrap();
    std::os::unix::fs::symlink("/nonexistent/experiments.yaml", &fifo).unwrap();
    let err = ConfigSet::load(Some(dir.path()))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("experiments.yaml") && err.contains("cannot open"),
        "{err}"
    );
    std::fs::remove_file(&fifo).unwrap();
    std::fs::create_dir(&fifo).unwrap();
    // And a huge file is refused before it is parsed.
    let huge = dir.path().join(PROMPTS_FILE);
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_CONFIG_BYTES + 1)
        .unwrap();
    std::fs::remove_dir(&fifo).unwrap();
    let err = ConfigSet::load(Some(dir.path()))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prompts.yaml") && err.contains("limit"),
        "{err}"
    );
}
