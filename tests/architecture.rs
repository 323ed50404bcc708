//! The layering the compiler does not keep by itself (one crate, see docs/architecture.md):
//! every `crate::`, `super::` and child-module path in `src/` is an edge of the module graph,
//! and the graph must (1) only point down the layers of [`ALLOWED`] and (2) have no loop
//! between modules (file-level: `experiment::runner`, `tui::draw`, …). Test-only code
//! (`tests*.rs`, `*_tests.rs`, `testutil.rs` and `testutil/`, a trailing `#[cfg(test)] mod`)
//! may reach across layers and is left out. The checker itself is tested on synthetic source
//! maps below, so a planted upward import or loop is shown to fail without editing a real file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which top-level modules each top-level module may use (besides itself). One table: a new
/// edge is a decision made here, in review, not an accident in a `use` line.
const ALLOWED: &[(&str, &[&str])] = &[
    // Bottom: pure helpers, the model, the statistics, the record types.
    ("util", &[]),
    ("model", &["util"]),
    ("stats", &["util"]),
    ("record", &["stats", "util"]),
    // The engines: decode, verify, sample, commit; they report through `engine::events`.
    ("engine", &["model", "stats", "record", "util"]),
    ("progress", &["engine", "util"]),
    // Experiments: configuration, planning and running trials, bundles, result files.
    (
        "experiment",
        &["model", "engine", "stats", "record", "util", "progress"],
    ),
    // Above the experiments: figures, the console, the command line and their wiring.
    ("plot", &["record", "stats", "experiment", "util", "model"]),
    (
        "tui",
        &[
            "record",
            "stats",
            "experiment",
            "plot",
            "util",
            "model",
            "engine",
        ],
    ),
    (
        "console",
        &[
            "tui",
            "experiment",
            "engine",
            "record",
            "plot",
            "model",
            "util",
            "progress",
        ],
    ),
    (
        "doctor",
        &["experiment", "model", "stats", "record", "plot", "util"],
    ),
    // `bench` is a command like the others in `cli`: it also times the console's frames.
    (
        "bench",
        &[
            "model",
            "engine",
            "stats",
            "record",
            "experiment",
            "util",
            "progress",
            "tui",
        ],
    ),
    (
        "cli",
        &[
            "model",
            "engine",
            "stats",
            "record",
            "experiment",
            "plot",
            "tui",
            "console",
            "bench",
            "doctor",
            "progress",
            "util",
        ],
    ),
];

/// Inside an allowed layer edge, the parts of a lower layer a module may reach: the console
/// (tui) sees the engines only through their event API, never their internals.
const ONLY_THROUGH: &[(&str, &str, &[&str])] = &[("tui", "engine", &["engine::events"])];

/// A module path, `a::b::c`, with the crate root as "".
type Module = String;

/// The module a source file defines: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn module_of(relative: &str) -> Module {
    let trimmed = relative.trim_end_matches(".rs");
    let mut parts: Vec<&str> = trimmed.split('/').collect();
    if matches!(parts.last(), Some(&"mod" | &"lib" | &"main")) {
        parts.pop();
    }
    parts.join("::")
}

fn is_test_file(relative: &str) -> bool {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    name == "tests.rs"
        || name.starts_with("tests_")
        || name.ends_with("_tests.rs")
        || name == "testutil.rs"
        || relative.starts_with("testutil/")
        || name == "main.rs"
}

/// The code without comments, string or char literals, and without a test module at the end.
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let bytes: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i] == '/' && bytes.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == '*' && bytes.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&bytes, i) {
            // Raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while bytes.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if bytes.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= bytes.len() {
                    break;
                }
                if bytes[j] == '"' && (0..hashes).all(|h| bytes.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the former is skipped.
            let close = if next == Some('\\') {
                (i + 2..bytes.len().min(i + 12)).find(|&j| bytes[j] == '\'')
            } else if bytes.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    // A test module at the end of a file (`#[cfg(test)]` then `mod name {`) is test-only code.
    let lines: Vec<&str> = out.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            let following = lines.get(n + 1).map(|l| l.trim()).unwrap_or("");
            if following.starts_with("mod ") && following.ends_with('{') {
                return lines[..n].join("\n");
            }
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Splits code into identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if is_ident_char(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Every path a piece of code names, as written: `use` trees expanded (`a::{b, c::D}` gives
/// `a::b` and `a::c::D`), and `crate::…`/`super::…` paths anywhere in expressions and types.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let tokens = tokens(code);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "use" {
            let mut j = i + 1;
            if tokens.get(j).map(String::as_str) == Some("::") {
                j += 1;
            }
            j = use_tree(&tokens, j, Vec::new(), &mut paths);
            i = j.max(i + 1);
            continue;
        }
        let starts_path = matches!(tokens[i].as_str(), "crate" | "super" | "self")
            && tokens.get(i + 1).map(String::as_str) == Some("::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts_path {
            let mut path = vec![tokens[i].clone()];
            let mut j = i + 1;
            while tokens.get(j).map(String::as_str) == Some("::") {
                match tokens.get(j + 1) {
                    Some(t) if t.chars().all(is_ident_char) => {
                        path.push(t.clone());
                        j += 2;
                    }
                    Some(t) if t == "{" => {
                        j = use_tree(&tokens, j + 1, path.clone(), &mut paths);
                        path.clear();
                        break;
                    }
                    _ => break,
                }
            }
            if !path.is_empty() {
                paths.push(path);
            }
            i = j;
            continue;
        }
        i += 1;
    }
    paths
}

/// Reads one use tree from `tokens[at]` with `prefix` already read; returns the index after it.
fn use_tree(
    tokens: &[String],
    mut at: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        match tokens.get(at).map(String::as_str) {
            Some("{") => {
                at += 1;
                loop {
                    match tokens.get(at).map(String::as_str) {
                        Some("}") => return at + 1,
                        Some(",") => at += 1,
                        None => return at,
                        _ => at = use_tree(tokens, at, path.clone(), out),
                    }
                }
            }
            Some("*") => {
                out.push(path);
                return at + 1;
            }
            Some(t) if t.chars().all(is_ident_char) => {
                path.push(t.to_string());
                at += 1;
                if tokens.get(at).map(String::as_str) == Some("::") {
                    at += 1;
                    continue;
                }
                if tokens.get(at).map(String::as_str) == Some("as") {
                    at += 2;
                }
                out.push(path);
                return at;
            }
            _ => return at,
        }
    }
}

/// The module graph of a source map (path under `src/` → text): for each module, the other
/// modules it names, with the line-free reason (the path as written) for messages.
fn module_graph(sources: &BTreeMap<String, String>) -> BTreeMap<Module, BTreeMap<Module, String>> {
    let modules: BTreeSet<Module> = sources
        .keys()
        .filter(|f| !is_test_file(f))
        .map(|f| module_of(f))
        .collect();
    let code: BTreeMap<Module, String> = sources
        .iter()
        .filter(|(file, _)| !is_test_file(file))
        .map(|(file, text)| (module_of(file), code_only(text)))
        .collect();
    // What each module re-exports (`pub use`), by name: a path through a facade is an edge to
    // the module that defines the item, so a loop cannot hide behind a `mod.rs`.
    let mut reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (module, text) in &code {
        for written in pub_use_paths(text) {
            let (Some(name), Some(absolute)) =
                (written.last(), resolve(module, &written, &modules))
            else {
                continue;
            };
            if name != "self" {
                reexports
                    .entry(module.clone())
                    .or_default()
                    .insert(name.clone(), absolute);
            }
        }
    }
    let longest_module = |absolute: &[String]| {
        (1..=absolute.len())
            .rev()
            .find(|&n| modules.contains(&absolute[..n].join("::")))
    };
    let mut graph: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    for (from, text) in &code {
        let edges = graph.entry(from.clone()).or_default();
        for written in paths_in(text) {
            let Some(mut absolute) = resolve(from, &written, &modules) else {
                continue;
            };
            // Follow re-exports to the defining module (a few hops at most in real code).
            for _ in 0..8 {
                let Some(n) = longest_module(&absolute) else {
                    break;
                };
                let module = absolute[..n].join("::");
                let target = absolute
                    .get(n)
                    .and_then(|name| reexports.get(&module)?.get(name));
                match target {
                    Some(target) if *target != absolute[..=n] && module != *from => {
                        let mut next = target.clone();
                        next.extend(absolute[n + 1..].iter().cloned());
                        absolute = next;
                    }
                    _ => break,
                }
            }
            if let Some(n) = longest_module(&absolute) {
                let target = absolute[..n].join("::");
                if target != *from && !target.is_empty() {
                    edges.entry(target).or_insert_with(|| written.join("::"));
                }
            }
        }
    }
    graph
}

/// The paths of a piece of code's `pub use` (also `pub(crate) use`, …) declarations.
fn pub_use_paths(code: &str) -> Vec<Vec<String>> {
    let tokens = tokens(code);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "pub" {
            let mut j = i + 1;
            if tokens.get(j).map(String::as_str) == Some("(") {
                while j < tokens.len() && tokens[j] != ")" {
                    j += 1;
                }
                j += 1;
            }
            if tokens.get(j).map(String::as_str) == Some("use") {
                i = use_tree(&tokens, j + 1, Vec::new(), &mut paths);
                continue;
            }
        }
        i += 1;
    }
    paths
}

/// A path as written in module `from`, made absolute (without `crate`); `None` for a path
/// outside the crate (std, a dependency, a local item).
fn resolve(from: &str, written: &[String], modules: &BTreeSet<Module>) -> Option<Vec<String>> {
    let mut base: Vec<String> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").map(String::from).collect()
    };
    let mut rest = written;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some("self") => rest = &rest[1..],
        Some(first) => {
            // A relative path in a `use`: a child module of `from` (2018 paths), else external.
            let child = if from.is_empty() {
                first.to_string()
            } else {
                format!("{from}::{first}")
            };
            if !modules.contains(&child) {
                return None;
            }
        }
        None => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Every edge that goes against [`ALLOWED`] / [`ONLY_THROUGH`], as readable lines.
fn forbidden_edges(graph: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut errors = Vec::new();
    for (from, edges) in graph {
        let from_top = top(from);
        if from.is_empty() {
            continue; // lib.rs declares the modules.
        }
        let Some(may_use) = allowed.get(from_top) else {
            errors.push(format!(
                "module `{from}` is in no layer: add `{from_top}` to ALLOWED in tests/architecture.rs"
            ));
            continue;
        };
        for (to, written) in edges {
            let to_top = top(to);
            if to_top == from_top {
                continue;
            }
            if !may_use.contains(&to_top) {
                errors.push(format!(
                    "`{from}` uses `{written}`: layer `{from_top}` may not import `{to_top}`"
                ));
                continue;
            }
            for (user, lower, through) in ONLY_THROUGH {
                let inside = |t: &str| t == *to || to.starts_with(&format!("{t}::"));
                if from_top == *user && to_top == *lower && !through.iter().any(|t| inside(t)) {
                    errors.push(format!(
                        "`{from}` uses `{written}`: `{user}` reaches `{lower}` only through {through:?}"
                    ));
                }
            }
        }
    }
    errors
}

/// The import loops of the graph, one per strongly connected component of more than one
/// module. A `mod.rs` naming its own child (declaring or re-exporting it) is structure, not an
/// import, and is not counted; a child importing its parent's items is.
fn import_loops(graph: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<Vec<Module>> {
    let nodes: Vec<&Module> = graph.keys().collect();
    let index: BTreeMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let is_child = |parent: &str, child: &str| {
        let prefix = if parent.is_empty() {
            String::new()
        } else {
            format!("{parent}::")
        };
        child.starts_with(&prefix) && !child[prefix.len()..].contains("::")
    };
    let successors: Vec<Vec<usize>> = nodes
        .iter()
        .map(|from| {
            graph[*from]
                .keys()
                .filter(|to| !is_child(from, to))
                .filter_map(|to| index.get(to).copied())
                .collect()
        })
        .collect();
    // Tarjan's strongly connected components.
    struct State {
        next: usize,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        components: Vec<Vec<usize>>,
    }
    fn visit(v: usize, successors: &[Vec<usize>], s: &mut State) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &successors[v] {
            match s.index[w] {
                None => {
                    visit(w, successors, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let n = nodes.len();
    let mut state = State {
        next: 0,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on_stack: vec![false; n],
        components: Vec::new(),
    };
    for v in 0..n {
        if state.index[v].is_none() {
            visit(v, &successors, &mut state);
        }
    }
    let mut loops: Vec<Vec<Module>> = state
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut names: Vec<Module> = c.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect();
    loops.sort();
    loops
}

fn read_sources(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(relative, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn describe_loops(
    graph: &BTreeMap<Module, BTreeMap<Module, String>>,
    loops: &[Vec<Module>],
) -> String {
    loops
        .iter()
        .map(|members| {
            let edges: Vec<String> = members
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| members.contains(to))
                        .map(move |(to, written)| format!("  {from} → {to} (`{written}`)"))
                })
                .collect();
            format!("loop among {members:?}:\n{}", edges.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_source_tree_keeps_its_layers_and_has_no_import_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_sources(&src);
    assert!(
        sources.len() > 50,
        "read {} files from {}",
        sources.len(),
        src.display()
    );
    let graph = module_graph(&sources);
    // The checker sees the edges that matter (a sanity check that parsing still works).
    assert!(
        graph["engine::inference"].contains_key("model"),
        "{:?}",
        graph["engine::inference"]
    );
    assert!(graph["experiment::trial"]
        .keys()
        .any(|m| m.starts_with("engine::")));
    let forbidden = forbidden_edges(&graph);
    let loops = import_loops(&graph);
    assert!(
        forbidden.is_empty() && loops.is_empty(),
        "forbidden imports:\n{}\nimport loops:\n{}",
        forbidden.join("\n"),
        describe_loops(&graph, &loops)
    );
}

fn synthetic(files: &[(&str, &str)]) -> BTreeMap<Module, BTreeMap<Module, String>> {
    let sources = files
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    module_graph(&sources)
}

#[test]
fn a_planted_upward_import_is_caught_with_the_path_as_written() {
    let graph = synthetic(&[
        (
            "lib.rs",
            "pub mod engine; pub mod experiment; pub mod record;",
        ),
        ("engine/mod.rs", "pub mod verification;"),
        (
            "engine/verification.rs",
            "use crate::record::CheckRecord;\nuse crate::experiment::{config::Role, runner};\n",
        ),
        ("record/mod.rs", "pub struct CheckRecord;"),
        ("experiment/mod.rs", "pub mod config; pub mod runner;"),
        ("experiment/config.rs", "pub struct Role;"),
        ("experiment/runner.rs", "use crate::engine::verification;"),
    ]);
    let errors = forbidden_edges(&graph);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("`engine::verification` uses `crate::experiment::config::Role`"));
    assert!(errors[0].contains("layer `engine` may not import `experiment`"));
    assert!(
        errors[1].contains("crate::experiment::runner"),
        "{errors:?}"
    );
}

#[test]
fn an_upward_path_in_an_expression_or_through_super_is_caught_but_comments_and_tests_are_not() {
    let graph = synthetic(&[
        ("lib.rs", ""),
        ("stats/mod.rs", "pub mod policy;"),
        (
            "stats/policy.rs",
            "// crate::tui::draw in a comment\nfn f() { let s = \"crate::cli::x\"; \
             let v = super::super::plot::style::X; }\n#[cfg(test)]\nmod tests {\n use crate::tui::App;\n}\n",
        ),
        ("stats/policy_tests.rs", "use crate::experiment::runner;"),
        ("plot/mod.rs", "pub mod style;"),
        ("plot/style.rs", "pub const X: u8 = 0;"),
        ("tui/mod.rs", "pub struct App;"),
    ]);
    let errors = forbidden_edges(&graph);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("`stats::policy` uses `super::super::plot::style::X`"));
}

#[test]
fn the_console_reaches_the_engines_only_through_their_events() {
    let graph = synthetic(&[
        ("lib.rs", ""),
        ("engine/mod.rs", "pub mod events; pub mod verification;"),
        ("engine/events.rs", "pub enum EngineEvent {}"),
        ("engine/verification.rs", "pub fn verify() {}"),
        (
            "tui/app.rs",
            "use crate::engine::events::EngineEvent;\nfn f() { crate::engine::verification::verify(); }",
        ),
    ]);
    let errors = forbidden_edges(&graph);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("`tui::app` uses `crate::engine::verification::verify`"));
}

#[test]
fn a_planted_loop_is_found_but_a_mod_rs_facade_is_not_one() {
    let graph = synthetic(&[
        ("lib.rs", ""),
        (
            "experiment/mod.rs",
            "pub mod runner; pub mod trial; pub use runner::run;",
        ),
        (
            "experiment/runner.rs",
            "pub use super::trial::infer;\npub fn run() {}",
        ),
        (
            "experiment/trial.rs",
            "use super::verify_step::X;\npub fn infer() {}",
        ),
        (
            "experiment/verify_step.rs",
            "use super::runner::{infer, run};\npub struct X;",
        ),
        ("experiment/config.rs", "use super::run;"),
    ]);
    let loops = import_loops(&graph);
    assert_eq!(
        loops,
        vec![vec![
            "experiment::runner".to_string(),
            "experiment::trial".to_string(),
            "experiment::verify_step".to_string()
        ]],
        "{}",
        describe_loops(&graph, &loops)
    );
    // Without the back edge there is none.
    let graph = synthetic(&[
        ("lib.rs", ""),
        ("experiment/mod.rs", "pub mod runner; pub use runner::run;"),
        (
            "experiment/runner.rs",
            "use super::trial::infer;\npub fn run() {}",
        ),
        ("experiment/trial.rs", "pub fn infer() {}"),
        ("experiment/config.rs", "use super::run;"),
    ]);
    assert!(import_loops(&graph).is_empty());
}

#[test]
fn a_loop_behind_a_mod_rs_re_export_is_found() {
    let graph = synthetic(&[
        ("lib.rs", ""),
        ("experiment/mod.rs", "pub mod config; pub mod results;"),
        (
            "experiment/config/mod.rs",
            "mod experiments;\npub use experiments::{Spec, MAX_TRIALS};",
        ),
        (
            "experiment/config/experiments.rs",
            "use crate::experiment::results::TrialVerdict;\npub const MAX_TRIALS: usize = 9;",
        ),
        (
            "experiment/results.rs",
            "pub enum TrialVerdict {}\nfn f() -> usize { crate::experiment::config::MAX_TRIALS }",
        ),
    ]);
    assert_eq!(
        graph["experiment::results"].keys().collect::<Vec<_>>(),
        ["experiment::config::experiments"]
    );
    assert_eq!(
        import_loops(&graph),
        vec![vec![
            "experiment::config::experiments".to_string(),
            "experiment::results".to_string()
        ]]
    );
}

#[test]
fn use_trees_expand_to_every_leaf() {
    let paths = paths_in("use crate::a::{b::{C, D as E}, f, self};\npub use super::*;");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "crate::a::b::C",
            "crate::a::b::D",
            "crate::a::f",
            "crate::a::self",
            "super"
        ]
    );
}
