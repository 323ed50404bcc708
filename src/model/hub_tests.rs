//! The Hugging Face hub path end to end, against a local stand-in for the hub: hf-hub's real
//! client downloads a tiny model over HTTP into a fresh cache, reports its progress, reopens it
//! with no network, and heals a cache split across two commits.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::device::DeviceProfile;
use super::load_model_reporting;
use super::source::parse_model_arg;
use super::tests::{write_tiny_qwen2, HUB_ENV};
use super::weights::Precision;

/// What the stand-in hub serves: the repo's commit and its files, each with the hash it
/// announces for it (taken when served, so a test can damage the bytes afterwards).
struct Served {
    commit: String,
    files: HashMap<String, (Vec<u8>, String)>,
}

/// A minimal hub: `GET /<repo>/resolve/<revision>/<file>` with a `Range` header, answered as
/// huggingface.co answers it (206, `content-range`, `etag` = the sha256, `x-repo-commit`), or
/// 404. Every request line is recorded.
struct StandInHub {
    endpoint: String,
    served: Arc<Mutex<Served>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl StandInHub {
    fn start(commit: &str, dir: &Path) -> StandInHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(Served {
            commit: commit.into(),
            files: files_of(dir),
        }));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (served.clone(), requests.clone());
        // Left blocked in accept when the test ends; the test process ends it.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                answer(stream.unwrap(), &s, &r);
            }
        });
        StandInHub {
            endpoint,
            served,
            requests,
        }
    }

    fn serve(&self, commit: &str, dir: &Path) {
        *self.served.lock().unwrap() = Served {
            commit: commit.into(),
            files: files_of(dir),
        };
    }

    fn requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

fn files_of(dir: &Path) -> HashMap<String, (Vec<u8>, String)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            let sha256 = crate::util::sha256_bytes(&bytes);
            (name, (bytes, sha256))
        })
        .collect()
}

fn answer(stream: TcpStream, served: &Mutex<Served>, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut range_start = 0usize;
    let mut range_end = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
            break;
        }
        let header = header.trim().to_ascii_lowercase();
        if let Some(range) = header.strip_prefix("range: bytes=") {
            let (a, b) = range.split_once('-').unwrap();
            range_start = a.parse().unwrap();
            range_end = b.parse::<usize>().ok();
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    requests.lock().unwrap().push(path.clone());
    let file = path.rsplit('/').next().unwrap_or("");
    let served = served.lock().unwrap();
    let mut stream = stream;
    match served.files.get(file) {
        Some((bytes, sha256)) => {
            let end = range_end.unwrap_or(bytes.len() - 1).min(bytes.len() - 1);
            let body = &bytes[range_start..=end];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes \
                 {range_start}-{end}/{}\r\netag: \"{}\"\r\nx-repo-commit: {}\r\nconnection: \
                 close\r\n\r\n",
                body.len(),
                bytes.len(),
                sha256,
                served.commit
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
        None => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    }
}

/// The tiny model's weights split into two shards with an index, as large checkpoints are.
fn shard(dir: &Path) {
    let single = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&single, &candle_core::Device::Cpu).unwrap();
    std::fs::remove_file(&single).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (part, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", part + 1);
        let subset: HashMap<String, candle_core::Tensor> = chunk
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&subset, dir.join(&file)).unwrap();
        for n in chunk {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

struct Loaded {
    hidden: usize,
    messages: Vec<String>,
}

fn load(repo: &str) -> anyhow::Result<Loaded> {
    let arg = format!("hf:{repo}");
    let source = parse_model_arg(&arg, Path::new("/")).unwrap();
    let messages = Mutex::new(Vec::new());
    let m = load_model_reporting(
        &arg,
        &source,
        Precision::Full,
        DeviceProfile::CPU_F32,
        &|m| messages.lock().unwrap().push(m),
    )?;
    Ok(Loaded {
        hidden: m.model.config.hidden,
        messages: messages.into_inner().unwrap(),
    })
}

fn snapshot_commits(home: &Path, repo_folder: &str) -> Vec<String> {
    let mut commits: Vec<String> =
        std::fs::read_dir(home.join("hub").join(repo_folder).join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    commits.sort();
    commits
}

#[test]
fn a_model_downloads_from_the_hub_with_progress_and_reopens_offline() {
    let _env = HUB_ENV.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    write_tiny_qwen2(remote.path(), true);
    shard(remote.path());
    // Added by a later commit below.
    std::fs::remove_file(remote.path().join("tokenizer_config.json")).unwrap();
    let commit_a = "a".repeat(40);
    let hub = StandInHub::start(&commit_a, remote.path());
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_ENDPOINT", &hub.endpoint);
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("HF_TOKEN");

    let loaded = load("verillm-test/remote").unwrap();
    assert_eq!(loaded.hidden, 32);
    let asked = hub.requests();
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let path = format!("/verillm-test/remote/resolve/main/{file}");
        assert!(asked.contains(&path), "{file} not fetched: {asked:?}");
    }
    // Each file is reported from 0 % to 100 %, the big shard in steps, never a step twice.
    let shard_lines: Vec<&String> = loaded
        .messages
        .iter()
        .filter(|m| {
            m.starts_with("downloading model-00001-of-00002.safetensors of verillm-test/remote")
        })
        .collect();
    assert!(
        shard_lines.first().unwrap().ends_with("(0%)"),
        "{shard_lines:?}"
    );
    assert!(
        shard_lines.last().unwrap().ends_with("(100%)"),
        "{shard_lines:?}"
    );
    assert!((3..=21).contains(&shard_lines.len()), "{shard_lines:?}");
    let mut deduped = shard_lines.clone();
    deduped.dedup();
    assert_eq!(deduped, shard_lines);
    assert!(
        loaded
            .messages
            .last()
            .unwrap()
            .starts_with("reading the weights of verillm-test/remote"),
        "{:?}",
        loaded.messages
    );
    assert_eq!(
        snapshot_commits(home.path(), "models--verillm-test--remote"),
        std::slice::from_ref(&commit_a)
    );

    // Cached now: the hub is asked only for the optional file it never had (hf-hub records no
    // absence), and with HF_HUB_OFFLINE not even that.
    let again = load("verillm-test/remote").unwrap();
    assert!(
        again.messages.iter().all(|m| !m.starts_with("downloading")),
        "{:?}",
        again.messages
    );
    assert_eq!(
        hub.requests(),
        ["/verillm-test/remote/resolve/main/tokenizer_config.json"]
    );
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert_eq!(load("verillm-test/remote").unwrap().hidden, 32);
    assert!(hub.requests().is_empty());
    std::env::remove_var("HF_HUB_OFFLINE");

    // The repo moves on to a commit that adds tokenizer_config.json. Fetching that file puts it
    // in the new commit's snapshot and moves the ref, splitting the cache; the second pass
    // fetches the rest into the new snapshot, which is what loads.
    let commit_b = "b".repeat(40);
    std::fs::copy(
        crate::testutil::smollm_fixture("hf_tokenizer/tokenizer_config.json"),
        remote.path().join("tokenizer_config.json"),
    )
    .unwrap();
    hub.serve(&commit_b, remote.path());
    let healed = load("verillm-test/remote").unwrap();
    assert_eq!(healed.hidden, 32);
    assert_eq!(
        snapshot_commits(home.path(), "models--verillm-test--remote"),
        [commit_a, commit_b.clone()]
    );
    let reading = healed.messages.last().unwrap();
    assert!(
        reading.ends_with(&format!("snapshots/{commit_b}")),
        "{reading}"
    );
    let snapshot: PathBuf = home
        .path()
        .join("hub/models--verillm-test--remote/snapshots")
        .join(&commit_b);
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(
            snapshot.join(file).exists(),
            "{file} missing from the new snapshot"
        );
    }

    // A file whose bytes do not match the hash the hub announced for it is refused.
    let damaged_remote = tempfile::tempdir().unwrap();
    write_tiny_qwen2(damaged_remote.path(), true);
    hub.serve(&"c".repeat(40), damaged_remote.path());
    {
        let mut served = hub.served.lock().unwrap();
        let (weights, _) = served.files.get_mut("model.safetensors").unwrap();
        let last = weights.len() - 1;
        weights[last] ^= 1;
    }
    let Err(error) = load("verillm-test/damaged") else {
        panic!("weights that do not match their announced hash loaded");
    };
    assert!(format!("{error:#}").contains("damaged"), "{error:#}");

    std::env::remove_var("HF_ENDPOINT");
    std::env::remove_var("HF_HOME");
}
