//! The house rules that ARCHITECTURE.md states, checked over the source: every Rust file says
//! what it is in a `//!` line; no test is ignored; no module imports itself through others;
//! only `engine.rs` speaks the container engine's command line, in its arguments or inside any
//! string; only `main.rs` and `progress.rs` print; no function outside the tests is over 80
//! lines unless ARCHITECTURE.md says why. Each rule is also shown catching a planted violation.

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

/// Whether `line` calls the macro `name` (so `println!(` is not found inside `eprintln!(`).
fn has_macro(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The string literals on one line of code (their text between the quotes, escapes kept). A
/// literal that goes on past the line ends with it; char literals are skipped.
fn string_literals(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' if i + 2 < bytes.len() && (bytes[i + 2] == b'\'' || bytes[i + 1] == b'\\') => {
                // A char literal such as '"' or '\"': step over it.
                let end = (i + 1..bytes.len()).find(|&j| bytes[j] == b'\'' && j > i + 1);
                i = end.map_or(bytes.len(), |j| j + 1);
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                found.push(&line[start..j.min(bytes.len())]);
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    found
}

/// The engine command a string spells, if any: the engine's program followed by one of its
/// verbs (`docker rmi`), or a placeholder that stands for the program at the start of a command
/// in backticks followed by one (`` `{} save ``).
fn engine_command(literal: &str) -> Option<String> {
    const VERBS: &[&str] = &[
        "build", "commit", "cp", "create", "exec", "image", "images", "info", "inspect", "load",
        "login", "logout", "ps", "pull", "push", "rm", "rmi", "run", "save", "start", "tag",
        "version",
    ];
    let words: Vec<&str> = literal
        .split(|c: char| c.is_whitespace() || c == '(')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).find_map(|pair| {
        let first = pair[0].trim_start_matches('`');
        let program = ["docker", "podman"].contains(&first)
            || (pair[0].starts_with("`{") && pair[0].ends_with('}'));
        let verb = pair[1].trim_end_matches([',', '.', ';', ':', '`', ')']);
        (program && VERBS.contains(&verb)).then(|| format!("{first} {verb}"))
    })
}

/// Every function of a source file outside its test modules, as (name, first line, lines).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let closing = |from: usize, depth: usize| {
        (from..lines.len()).find(|&j| lines[j].trim_end() == format!("{}}}", " ".repeat(depth)))
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if (t == "mod tests {" || t.starts_with("mod tests {"))
            && i > 0
            && lines[i - 1].trim() == "#[cfg(test)]"
        {
            i = closing(i + 1, indent(line)).map_or(lines.len(), |j| j + 1);
            continue;
        }
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .unwrap_or(t);
        let rest = rest.strip_prefix("const ").unwrap_or(rest);
        if let Some(name) = rest.strip_prefix("fn ") {
            let name = name.split(['(', '<']).next().unwrap().to_string();
            // The signature ends in `{` (a body) or `;` (a declaration).
            let end = (i..lines.len()).find(|&j| {
                let l = lines[j].trim_end();
                l.ends_with('{') || l.ends_with(';')
            });
            if let Some(end) = end.filter(|&j| lines[j].trim_end().ends_with('{'))
                && let Some(close) = closing(end, indent(line))
            {
                found.push((name, i + 1, close - i + 1));
            }
        }
        i += 1;
    }
    found
}

/// The functions ARCHITECTURE.md allows to be long, as `path name` pairs: the lines of its
/// "Long functions" section that begin "- `path` `name`:".
fn allowed_long(architecture: &str) -> BTreeSet<String> {
    let section = architecture
        .split("\n## ")
        .find(|s| s.starts_with("Long functions"))
        .unwrap_or("");
    section
        .lines()
        .filter_map(|l| {
            let mut quoted = l.strip_prefix("- `")?.split('`');
            let path = quoted.next()?;
            let name = quoted.nth(1)?;
            Some(format!("{path} {name}"))
        })
        .collect()
}

/// The functions over `limit` lines in the tool's source, outside its tests, that
/// `allowed` does not name, and the entries of `allowed` that are not such a function.
fn long_functions(
    files: &[(String, String)],
    allowed: &BTreeSet<String>,
    limit: usize,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut long = BTreeSet::new();
    for (path, text) in files {
        let tests = path.ends_with("/tests.rs") || path == "xtask/src/testutil.rs";
        if !path.starts_with("xtask/src/") || tests {
            continue;
        }
        for (name, at, lines) in functions(text) {
            if lines <= limit {
                continue;
            }
            let id = format!("{path} {name}");
            if !allowed.contains(&id) {
                found.push(format!(
                    "{path}:{at}: fn {name} is {lines} lines (over {limit}); split it, or say \
                     why in ARCHITECTURE.md's \"Long functions\""
                ));
            }
            long.insert(id);
        }
    }
    for id in allowed.difference(&long) {
        found.push(format!(
            "ARCHITECTURE.md: \"Long functions\" names {id}, which is not over {limit} lines; \
             remove the entry"
        ));
    }
    found
}

#[test]
fn no_function_is_long_without_a_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(root, "xtask/src", &mut files);
    let (_, build) = files
        .iter()
        .find(|(p, _)| p == "xtask/src/build.rs")
        .expect("the walk missed the source");
    assert!(
        functions(build).iter().any(|(name, ..)| name == "start"),
        "the function finder missed Build::start"
    );
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let found = long_functions(&files, &allowed_long(&architecture), 80);
    assert!(found.is_empty(), "{}", found.join("\n"));

    // Planted: a long function, one allowed, a stale entry, and a long test that counts not.
    let body = |name: &str, n: usize| format!("fn {name}() {{\n{}}}\n", "    x();\n".repeat(n - 2));
    let text = format!(
        "//! X.\n{}{}\n#[cfg(test)]\nmod tests {{\n    fn t() {{\n{}    }}\n}}\n",
        body("long", 81),
        body("why", 90),
        "        y();\n".repeat(100)
    );
    let planted = [("xtask/src/x.rs".to_string(), text)];
    let allowed = allowed_long(
        "# A\n\n## Long functions\n\n- `xtask/src/x.rs` `why`: a table.\n- `xtask/src/x.rs` `gone`: was long.\n\n## Next\n",
    );
    let found = long_functions(&planted, &allowed, 80);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("xtask/src/x.rs:2: fn long is 81 lines"),
        "{}",
        found[0]
    );
    assert!(
        found[1].contains("names xtask/src/x.rs gone"),
        "{}",
        found[1]
    );
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
            if src && !may_speak_engine {
                for literal in string_literals(line) {
                    if let Some(command) = engine_command(literal) {
                        found.push(format!(
                            "{path}:{n}: the engine's command line ({command}) inside a string; \
                             let an `Engine` hint method spell it"
                        ));
                    }
                }
            }
            let may_print = !src || path == "xtask/src/main.rs" || path == "xtask/src/progress.rs";
            if !may_print && let Some(p) = prints.iter().find(|p| has_macro(line, p)) {
                found.push(format!(
                    "{path}:{n}: {p}..) outside main.rs and progress.rs; tell the `Reporter`, or \
                     give a command's answer to `progress::answer!`"
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
        file(
            "xtask/src/fetch.rs",
            "//! Fetch.\nimpl X {\n    pub fn run(self) {\n        println!(\"done\");\n    }\n}\n",
        ),
        file(
            "xtask/src/rebuild.rs",
            "//! Rebuild.\nfn hint(p: &str) -> String {\n    format!(\"remove it (`{p} rmi x`)\")\n}\n",
        ),
    ];
    let found = violations(&planted);
    assert_eq!(found.len(), 6, "{found:#?}");
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
    assert!(
        found[4].starts_with("xtask/src/fetch.rs:4: println!"),
        "{}",
        found[4]
    );
    assert!(
        found[5].starts_with("xtask/src/rebuild.rs:3: the engine's command line ({p} rmi) inside"),
        "{}",
        found[5]
    );
    assert_eq!(
        engine_command("load it with `{} save x`"),
        Some("{} save".into())
    );
    assert_eq!(
        engine_command("run it with docker run, then"),
        Some("docker run".into())
    );
    assert_eq!(engine_command("cannot publish the {} image"), None);

    // What the rules allow: progress.rs prints, engine.rs and the tests' support name the
    // engine, the tests name the engine's words through their support, comments say anything.
    let allowed = [
        file(
            "xtask/src/progress.rs",
            "//! Progress.\npub fn print_answer(line: &str) {\n    println!(\"{line}\");\n}\n",
        ),
        file(
            "xtask/src/engine.rs",
            "//! Engine.\nfn hint(p: &str) -> String {\n    format!(\"`{p} rmi x`\")\n}\n",
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
