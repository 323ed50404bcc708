//! Shared test helpers: where the reference fixtures and the embedded model are.

pub mod trials;

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::model::device::DeviceProfile;
use crate::model::embedded::{ensure_embedded_model, model_dir};
use crate::model::source::ModelSource;
use crate::model::weights::Precision;
use crate::model::{load_model, LoadedModel};

/// The reference fixtures that travel with the repository (`tests/fixtures`, see its README),
/// or `VERILLM_FIXTURES` to point the tests at another copy.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("VERILLM_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")))
}

/// A SmolLM2 fixture file (or the folder itself for `""`); a missing one stops the test with
/// what is missing and where it was looked for, not a bare "No such file".
pub fn smollm_fixture(name: &str) -> PathBuf {
    let path = fixtures_dir().join("smollm2-135m").join(name);
    assert!(
        path.exists(),
        "test fixture {name:?} is missing: expected {} (the fixtures ship in tests/fixtures, \
         see tests/fixtures/README.md; VERILLM_FIXTURES overrides the folder)",
        path.display()
    );
    path
}

/// The embedded GGUF (fetched once if missing), or `VERILLM_TEST_MODEL`.
pub fn embedded_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("VERILLM_TEST_MODEL") {
        return PathBuf::from(p);
    }
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| ensure_embedded_model(&model_dir(None)).expect("embedded model available"))
        .clone()
}

/// The embedded model at a precision on the CPU, loaded once per process and profile.
pub fn embedded(precision: Precision, profile: DeviceProfile) -> LoadedModel {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<(Precision, DeviceProfile), LoadedModel>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap();
    map.entry((precision, profile))
        .or_insert_with(|| {
            load_model(
                "smollm2-135m",
                &ModelSource::Gguf(embedded_gguf()),
                precision,
                profile,
            )
            .expect("load embedded model")
        })
        .clone()
}
