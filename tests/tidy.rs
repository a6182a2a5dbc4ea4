//! The house rules that ARCHITECTURE.md states, checked over the source: every Rust file says
//! what it is in a `//!` line; no test is ignored; no module imports itself through others;
//! only `engine.rs` speaks the container engine's command line; only `main.rs`, the terminal
//! reporter and the commands' `run` functions print. Each rule is also shown catching a
//! planted violation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, sorted, as (path relative to the project root, text).
fn rust_files(root: &Path, dir: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("{}: {e}", root.join(dir).display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            rust_files(root, &rel, out);
        } else if rel.ends_with(".rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((rel, text));
        }
    }
}

/// The engine's command-line words, as string literals. Spelled in pieces so that this file
/// does not trip its own rule.
fn engine_words() -> Vec<String> {
    [
        "docker",
        "podman",
        "--rm",
        "--attach",
        "--tty",
        "--interactive",
        "cp",
        "commit",
        "inspect",
        "exec",
        "buildx",
    ]
    .iter()
    .map(|w| format!("\"{w}\""))
    .chain(["run --rm", "} commit {"].map(String::from))
    .collect()
}

/// The lines of `text` that are code, with their numbers: comments are skipped.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// The name of the function whose body holds line `at` (1-based): the nearest `fn` line above
/// it that is indented less.
fn enclosing_fn(text: &str, at: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let depth = indent(lines[at - 1]);
    lines[..at - 1].iter().rev().find_map(|l| {
        let t = l.trim_start();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let name = t.strip_prefix("fn ")?;
        (indent(l) < depth).then(|| name.split(['(', '<']).next().unwrap().to_string())
    })
}

/// Whether `line` calls the macro `name` (so `println!(` is not found inside `eprintln!(`).
fn has_macro(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Every broken rule in `files`, one line each, naming the file, the line and the fix.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let ignore = format!("#[{}", "ignore");
    let prints = ["print!(", "println!(", "eprint!(", "eprintln!(", "dbg!("];
    let mut found = Vec::new();
    for (path, text) in files {
        if !text.starts_with("//!") {
            found.push(format!(
                "{path}: the file does not begin with a `//!` line saying what it is"
            ));
        }
        if path == "tests/tidy.rs" {
            continue;
        }
        let src = path.starts_with("xtask/src/");
        for (n, line) in code_lines(text) {
            if line.contains(&ignore) {
                found.push(format!(
                    "{path}:{n}: an ignored test; make it run or delete it"
                ));
            }
            // In the tool only engine.rs names the engine; in the tests only their support.
            let may_speak_engine = match src {
                true => path == "xtask/src/engine.rs",
                false => path.starts_with("tests/support/"),
            };
            // The tests' support runs the engine for them, so the tests name only the program.
            let words = match src {
                true => engine_words(),
                false => engine_words().into_iter().take(2).collect(),
            };
            if !may_speak_engine {
                for word in words {
                    if line.contains(&word) {
                        found.push(format!(
                            "{path}:{n}: the engine's command line ({word}) outside engine.rs; \
                             add a method to `Engine`"
                        ));
                    }
                }
            }
            let may_print = !src
                || path == "xtask/src/main.rs"
                || path == "xtask/src/progress.rs"
                || enclosing_fn(text, n).as_deref() == Some("run");
            if !may_print && let Some(p) = prints.iter().find(|p| has_macro(line, p)) {
                found.push(format!(
                    "{path}:{n}: {p}..) outside a command's `run`; tell the `Reporter` instead"
                ));
            }
        }
    }
    found
}

#[test]
fn the_source_keeps_the_house_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(root, "xtask/src", &mut files);
    rust_files(root, "tests", &mut files);
    assert!(
        files.iter().any(|(p, _)| p == "xtask/src/engine.rs"),
        "the walk missed the source"
    );
    let found = violations(&files);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The modules of xtask/src that each module names through `crate::` (in `use` lines and paths
/// alike), a submodule counting as its parent.
fn module_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let module = |path: &str| {
        let rel = path.strip_prefix("xtask/src/")?;
        Some(rel.split('/').next()?.trim_end_matches(".rs").to_string())
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let Some(from) = module(path) else { continue };
        let deps = graph.entry(from.clone()).or_default();
        for (_, line) in code_lines(text) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                // `crate::{a, b::c}` names a and b; `crate::a::x` names a.
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or(""))
                        .collect(),
                    None => vec![rest],
                };
                for name in names {
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != from {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A circle of imports in `graph`, as `a -> b -> a`, if there is one.
fn import_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|m| m == at) {
            let mut circle = path[i..].to_vec();
            circle.push(at.to_string());
            return Some(circle.join(" -> "));
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_string());
        for next in &graph[at] {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(at.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(graph, m, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_itself_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(root, "xtask/src", &mut files);
    let graph = module_graph(&files);
    assert!(
        graph["python"].contains("build"),
        "the graph missed imports"
    );
    if let Some(circle) = import_circle(&graph) {
        panic!("an import circle: {circle}; move what both sides need below them");
    }
    // A planted circle is found.
    let planted = [
        ("xtask/src/a.rs", "//! A.\nuse crate::b::X;\n"),
        ("xtask/src/b.rs", "//! B.\nuse crate::{c, d::Y};\n"),
        ("xtask/src/c.rs", "//! C.\nfn f() { crate::a::g() }\n"),
        ("xtask/src/d.rs", "//! D.\n"),
    ]
    .map(|(p, t)| (p.to_string(), t.to_string()));
    assert_eq!(
        import_circle(&module_graph(&planted)).as_deref(),
        Some("a -> b -> c -> a")
    );
}

#[test]
fn each_rule_catches_a_planted_violation() {
    let file = |path: &str, text: &str| (path.to_string(), text.to_string());
    let ignored = format!("//! A test.\n#[{}]\nfn t() {{}}\n", "ignore");
    let engine = format!(
        "//! Images.\nfn f() {{\n    run(&[\"{}\", \"ps\"]);\n}}\n",
        "docker"
    );
    let planted = [
        file("xtask/src/nodoc.rs", "fn f() {}\n"),
        file("tests/e2e_x.rs", &ignored),
        file("xtask/src/image.rs", &engine),
        file(
            "xtask/src/cache.rs",
            "//! Cache.\nfn open() {\n    eprintln!(\"opening\");\n}\n",
        ),
    ];
    let found = violations(&planted);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("xtask/src/nodoc.rs: "), "{}", found[0]);
    assert!(
        found[1].starts_with("tests/e2e_x.rs:2: an ignored test"),
        "{}",
        found[1]
    );
    assert!(
        found[2].starts_with("xtask/src/image.rs:3: the engine"),
        "{}",
        found[2]
    );
    assert!(
        found[3].starts_with("xtask/src/cache.rs:3: eprintln!"),
        "{}",
        found[3]
    );

    // What the rules allow: a command's `run` prints, engine.rs and the tests' support name
    // the engine, the tests name the engine's words through their support, comments say
    // anything.
    let allowed = [
        file(
            "xtask/src/fetch.rs",
            "//! Fetch.\nimpl X {\n    pub fn run(self) {\n        println!(\"done\");\n    }\n}\n",
        ),
        file("xtask/src/engine.rs", &engine),
        file("tests/support/mod.rs", &engine),
        file(
            "tests/e2e_y.rs",
            "//! A test.\nfn t() {\n    docker(&[\"inspect\", \"--rm\"]);\n}\n",
        ),
        file(
            "xtask/src/pipeline.rs",
            "//! Stages.\n// \"docker\" eprintln!(\nfn f() {}\n",
        ),
    ];
    assert_eq!(violations(&allowed), Vec::<String>::new());
}
