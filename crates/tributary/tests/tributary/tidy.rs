//! What humans forget, checked on every test run: module docs, ignored tests, panicking tests
//! without a message, and edits to migrations that have already landed.

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
    let mut locked = std::collections::BTreeMap::new();
    for line in lock
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
    {
        let (hash, name) = line.split_once("  ").expect("`<sha256>  <file>` lines");
        locked.insert(name.to_owned(), hash.to_owned());
    }
    let mut on_disk = std::collections::BTreeMap::new();
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
