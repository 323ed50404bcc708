//! The built-in cheat and control experiments in the console's picker, as a person sees them:
//! listed after exp1–exp5, with what the cheat does and the verdict it should get.

use std::sync::Arc;

use super::tests::{assert_shows, screen};
use super::*;
use crate::experiment::config::ConfigSet;
use crate::experiment::workspace::Workspace;

#[test]
fn the_picker_offers_the_cheats_and_controls_with_their_expected_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::new(
        ConfigSet::builtin().unwrap(),
        dir.path().into(),
        dir.path().join("data"),
    );
    let backend = crate::console::WorkspaceBackend::new(Arc::new(ws));
    let catalog = Catalog::from_backend(&backend);
    let names: Vec<&str> = catalog
        .experiments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(&names[..5], ["exp1", "exp2", "exp3", "exp4", "exp5"]);
    let index = |name: &str| names.iter().position(|n| *n == name).unwrap();
    let mut app = App::new(catalog.clone());
    for (name, says, verdict) in [
        (
            "cheat-skip-mid",
            "decoder layer 15 skipped",
            "expect REJECT",
        ),
        ("cheat-lazy-verifier", "lazy verifier", "expect PASS"),
        (
            "control-f16-f32",
            "honest f16 inference verified in f32",
            "expect PASS",
        ),
    ] {
        app.picker.selected = index(name);
        let buffer = screen(&app, 160, 48);
        assert_shows(&buffer, name);
        assert_shows(&buffer, says);
        assert_shows(&buffer, verdict);
    }
}
