//! What humans forget, checked on every test run: module docs, ignored tests, panicking tests
//! without a message, edits to migrations that have already landed, and modules of the server
//! and the benchmarks that import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_module_says_what_it_owns_and_no_test_is_ignored() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let relative = file
            .strip_prefix(workspace())
            .unwrap()
            .display()
            .to_string();
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default();
        if !first.starts_with("//!") {
            problems.push(format!(
                "{relative}: does not open with a `//!` line saying what it owns"
            ));
        }
        // Built from pieces so this file does not flag itself.
        let ignore = concat!("#[", "ignore");
        let should_panic = concat!("#[", "should_panic");
        for (number, line) in text.lines().enumerate() {
            if line.contains(ignore) {
                problems.push(format!("{relative}:{}: ignored test", number + 1));
            }
            if line.contains(should_panic) && !line.contains("expected") {
                problems.push(format!(
                    "{relative}:{}: should_panic without expected message",
                    number + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Migrations are immutable once landed: each is listed with its SHA-256 in `migrations.lock`.
/// A new migration is added to the lock in the commit that lands it; a landed one never changes
/// (sqlx would also refuse to start on a database where it was applied with other content).
#[test]
fn landed_migrations_are_unchanged() {
    use sha2::{Digest, Sha256};

    let dir = workspace().join("crates/store/migrations");
    let lock = std::fs::read_to_string(dir.join("../migrations.lock")).unwrap();
    let mut locked = BTreeMap::new();
    for line in lock
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
    {
        let (hash, name) = line.split_once("  ").expect("`<sha256>  <file>` lines");
        locked.insert(name.to_owned(), hash.to_owned());
    }
    let mut on_disk = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let hash = hex::encode(Sha256::digest(std::fs::read(entry.path()).unwrap()));
        on_disk.insert(name, hash);
    }
    for (name, hash) in &locked {
        match on_disk.get(name) {
            None => panic!("landed migration {name} was deleted"),
            Some(actual) => assert_eq!(
                actual, hash,
                "landed migration {name} was edited: add a new migration instead"
            ),
        }
    }
    for name in on_disk.keys() {
        assert!(
            locked.contains_key(name),
            "{name} is not in migrations.lock: add `sha256sum {name}` there"
        );
    }
}

/// The crates whose modules must not import each other in a circle.
const LAYERED_CRATES: [&str; 2] = ["crates/tributary/src", "crates/bench/src"];

/// No module of the server or the benchmarks uses itself through others: every `crate::` and
/// `super::` path is an edge to the module it names (the longest module prefix of the path, or
/// the parent holding the item), a parent depends on the modules it declares, and the graph
/// must have no cycle. Shared pieces move down into a module of their own instead.
#[test]
fn modules_do_not_import_each_other_in_a_circle() {
    for crate_dir in LAYERED_CRATES {
        let root = workspace().join(crate_dir);
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        let module_of = |file: &Path| -> Option<String> {
            let relative = file.strip_prefix(&root).unwrap().with_extension("");
            let parts: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            match parts.as_slice() {
                // The binary is a crate of its own.
                [only] if only == "main" => None,
                [only] if only == "lib" => Some(String::new()),
                [parents @ .., last] if last == "mod" => Some(parents.join("::")),
                parts => Some(parts.join("::")),
            }
        };
        let modules: Vec<(String, String)> = files
            .iter()
            .filter_map(|file| {
                let module = module_of(file)?;
                Some((module, std::fs::read_to_string(file).unwrap()))
            })
            .collect();
        let known: BTreeSet<&str> = modules.iter().map(|(module, _)| module.as_str()).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, text) in &modules {
            graph.entry(module.clone()).or_default();
            if !module.is_empty() {
                // A parent depends on the modules it declares.
                graph
                    .entry(parent_of(module))
                    .or_default()
                    .insert(module.clone());
            }
            for path in module_paths(module, text) {
                // The longest prefix of the path that is a module; otherwise the root's item.
                let segments: Vec<&str> = path.split("::").collect();
                let target = (0..=segments.len())
                    .rev()
                    .map(|length| segments[..length].join("::"))
                    .find(|prefix| known.contains(prefix.as_str()))
                    .unwrap_or_default();
                if &target != module {
                    graph.entry(module.clone()).or_default().insert(target);
                }
            }
        }
        let circles: Vec<String> = circles(&graph)
            .into_iter()
            .map(|circle| {
                let named: Vec<&str> = circle
                    .iter()
                    .map(|module| {
                        if module.is_empty() {
                            "(crate root)"
                        } else {
                            module.as_str()
                        }
                    })
                    .collect();
                named.join(", ")
            })
            .collect();
        assert!(
            circles.is_empty(),
            "{crate_dir}: modules that import each other in a circle: {}",
            circles.join("; ")
        );
    }
}

/// The module paths `text` (the file of `module`) names through `crate::` and `super::`, as
/// paths from the crate root. `super::` inside an inline module (`mod tests { use super::*; }`)
/// names the file's own module and is left out.
fn module_paths(module: &str, text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut inline_module = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let trimmed = code.trim_start();
        if (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod "))
            && trimmed.trim_end().ends_with('{')
        {
            inline_module = true;
        }
        for (prefix, base) in [("crate::", String::new()), ("super::", parent_of(module))] {
            if prefix == "super::" && inline_module {
                continue;
            }
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let preceded_by_path = rest[..at].ends_with("::")
                    || rest[..at]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_');
                rest = &rest[at + prefix.len()..];
                if preceded_by_path {
                    continue;
                }
                let joined = |tail: &str| {
                    if base.is_empty() {
                        tail.to_owned()
                    } else {
                        format!("{base}::{tail}")
                    }
                };
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or_default();
                    for item in group.split(',') {
                        let item = item.trim();
                        if !item.is_empty() {
                            paths.push(joined(&path_of(item)));
                        }
                    }
                } else {
                    paths.push(joined(&path_of(rest)));
                }
            }
        }
    }
    paths
}

/// The leading `a::b::c` of `text`.
fn path_of(text: &str) -> String {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end].trim_end_matches(':').to_owned()
}

fn parent_of(module: &str) -> String {
    module
        .rsplit_once("::")
        .map(|(parent, _)| parent.to_owned())
        .unwrap_or_default()
}

/// The circles of `graph`: each set of two or more modules that all reach each other.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |start: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|node| (node, reach(node))).collect();
    let mut circles: Vec<BTreeSet<String>> = Vec::new();
    for (node, from_node) in &reachable {
        if !from_node.contains(*node) || circles.iter().any(|circle| circle.contains(*node)) {
            continue;
        }
        circles.push(
            from_node
                .iter()
                .filter(|other| reachable[other].contains(*node))
                .cloned()
                .collect(),
        );
    }
    circles
}
