//! The crate's modules form layers, read from the source's `crate::` paths: no top-level module
//! reaches itself through the others (a folder counts as one module; `lib.rs`, the root that
//! declares and wires them all, is left out), the JSON API imports no page module, and the
//! shell and the page kit import no page. Inside the JSON API's folder the same holds between its
//! files: `api/mod.rs` declares and routes the others, so none of them names anything it defines.
//! An import that closes a circle fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules that serve pages: the shell, the page kit and the API must not import them.
const PAGE_MODULES: [&str; 3] = ["app", "live", "site"];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// Each top-level module with the top-level modules it names as `crate::<module>`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_of = |path: &Path| {
        let first = path
            .strip_prefix(&src)
            .unwrap()
            .components()
            .next()
            .unwrap();
        let name = first.as_os_str().to_str().unwrap();
        name.strip_suffix(".rs").unwrap_or(name).to_owned()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|path| module_of(path))
        .filter(|module| module != "lib")
        .collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|module| (module.clone(), BTreeSet::new()))
        .collect();
    for path in &files {
        let module = module_of(path);
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            // Comments name modules without importing them.
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let named: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if named != module && modules.contains(&named) {
                    imports.get_mut(&module).unwrap().insert(named);
                }
            }
        }
    }
    imports
}

/// Whether `from` reaches `to` through the imports.
fn reaches(imports: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut next = vec![from.to_owned()];
    while let Some(module) = next.pop() {
        for named in &imports[&module] {
            if named == to {
                return true;
            }
            if seen.insert(named.clone()) {
                next.push(named.clone());
            }
        }
    }
    false
}

#[test]
fn modules_import_each_other_in_one_direction_only() {
    let imports = imports();
    assert!(
        ["api", "app", "auth", "pages", "shell"]
            .iter()
            .all(|module| imports.contains_key(*module)),
        "the modules this test is about are where it looks: {:?}",
        imports.keys()
    );
    let circles: Vec<&String> = imports
        .keys()
        .filter(|module| reaches(&imports, module, module))
        .collect();
    assert!(circles.is_empty(), "in an import circle: {circles:?}");
    for (module, forbidden) in [
        ("api", &PAGE_MODULES[..]),
        ("api", &["shell"][..]),
        ("shell", &PAGE_MODULES[..]),
        ("pages", &PAGE_MODULES[..]),
    ] {
        for page in forbidden {
            assert!(
                !reaches(&imports, module, page),
                "{module} imports {page}, directly or through others"
            );
        }
    }
}

/// The modules of `api/` that `code`, the text of `api/<module>.rs`, names: a sibling `X` as
/// `super::X` or `crate::api::X` where `X` is a file of `api/`, and `mod` (what `api/mod.rs`
/// defines) for any other item named so. Inside an inline module (`mod tests { .. }`) a path
/// climbs one `super` more to reach `api/`. For `mod` itself: the children it declares.
fn api_names(module: &str, code: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    // Comments name modules without importing them.
    let lines: Vec<&str> = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect();
    if module == "mod" {
        for line in &lines {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            if let Some(child) = line
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'))
                && siblings.contains(child)
            {
                named.insert(child.to_owned());
            }
        }
        return named;
    }
    // The text as one string, with the depth of inline modules each line is in (rustfmt closes
    // a module at its opening line's indentation), so that a `use` list may span lines.
    let mut text = String::new();
    let mut depth_at = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    for line in &lines {
        let indent = line.len() - line.trim_start().len();
        if open.last() == Some(&indent) && line.trim() == "}" {
            open.pop();
        }
        depth_at.push((text.len(), open.len()));
        let trimmed = line.trim();
        let declaration = trimmed
            .split_once("mod ")
            .is_some_and(|(before, _)| before.is_empty() || before.starts_with("pub"));
        if declaration && trimmed.ends_with('{') {
            open.push(indent);
        }
        text.push_str(line);
        text.push('\n');
    }
    let depth = |at: usize| {
        depth_at
            .iter()
            .rev()
            .find(|(start, _)| *start <= at)
            .map_or(0, |(_, depth)| *depth)
    };
    let ident = |rest: &str| -> String {
        rest.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '*')
            .collect()
    };
    // What `rest`, the path after `api::`, names: a sibling, or an item of `mod`; a `{..}`
    // list names what each of its entries does.
    let resolve = |rest: &str, named: &mut BTreeSet<String>| {
        let rest = rest.trim_start();
        let entries: Vec<String> = if let Some(list) = rest.strip_prefix('{') {
            let mut level = 0;
            let mut entries = vec![String::new()];
            for c in list.chars() {
                match c {
                    '{' => level += 1,
                    '}' if level == 0 => break,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        entries.push(String::new());
                        continue;
                    }
                    _ => {}
                }
                entries.last_mut().unwrap().push(c);
            }
            entries.iter().map(|entry| ident(entry)).collect()
        } else {
            vec![ident(rest)]
        };
        for entry in entries.into_iter().filter(|entry| !entry.is_empty()) {
            if siblings.contains(&entry) {
                named.insert(entry.to_owned());
            } else {
                named.insert("mod".to_owned());
            }
        }
    };
    for (at, _) in text.match_indices("crate::api::") {
        resolve(&text[at + "crate::api::".len()..], &mut named);
    }
    for (at, _) in text.match_indices("super::") {
        // Only where a chain of `super::` starts.
        if text[..at].ends_with("::") {
            continue;
        }
        let mut rest = &text[at..];
        let mut climbs = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = after;
        }
        // Fewer climbs stay in this file; more leave `api/` for the crate (the top-level test).
        if climbs == depth(at) + 1 {
            resolve(rest, &mut named);
        }
    }
    named.remove(module);
    named
}

/// Each module of `api/` (each file; `mod.rs` is `mod`) with the modules of `api/` it names.
fn api_imports() -> BTreeMap<String, BTreeSet<String>> {
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&api).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            !path.is_dir(),
            "api/ holds files only, each read here as one module: {}",
            path.display()
        );
        files.push(path);
    }
    let module_of = |path: &Path| {
        let name = path.file_name().unwrap().to_str().unwrap();
        name.strip_suffix(".rs").unwrap_or(name).to_owned()
    };
    let siblings: BTreeSet<String> = files
        .iter()
        .map(|path| module_of(path))
        .filter(|module| module != "mod")
        .collect();
    files
        .iter()
        .map(|path| {
            let module = module_of(path);
            let text = std::fs::read_to_string(path).unwrap();
            let named = api_names(&module, &text, &siblings);
            (module, named)
        })
        .collect()
}

/// The reading of `api/` paths sees what it must: a sibling, an item of `mod.rs`, a `use` list
/// over lines, and the extra `super` of an inline test module.
#[test]
fn api_paths_are_read_as_the_compiler_resolves_them() {
    let siblings: BTreeSet<String> = ["extract", "error", "openapi"].map(String::from).into();
    let names = |module: &str, code: &str| -> Vec<String> {
        api_names(module, code, &siblings).into_iter().collect()
    };
    assert_eq!(names("openapi", "use super::extract::Body;"), ["extract"]);
    assert_eq!(names("openapi", "use super::ApiError;"), ["mod"]);
    assert_eq!(
        names(
            "openapi",
            "use super::{\n    error::ApiError,\n    Routes,\n};"
        ),
        ["error", "mod"]
    );
    assert_eq!(names("openapi", "let _ = crate::api::routes();"), ["mod"]);
    assert_eq!(
        names(
            "openapi",
            "fn f() { super::error::parse_id(); } // super::Routes"
        ),
        ["error"]
    );
    let test_module = "#[cfg(test)]\nmod tests {\n    use super::*;\n}\nuse super::error::X;";
    assert_eq!(names("openapi", test_module), ["error"]);
    let climbing = "mod tests {\n    fn f() {\n        super::super::routes_served();\n    }\n}";
    assert_eq!(names("openapi", climbing), ["mod"]);
    assert_eq!(
        names("mod", "mod error;\npub mod extract;\nmod tests {\n}"),
        ["error", "extract"]
    );
}

#[test]
fn api_modules_import_each_other_in_one_direction_only() {
    let imports = api_imports();
    assert!(
        ["mod", "extract", "openapi"]
            .iter()
            .all(|module| imports.contains_key(*module))
            && imports["mod"].contains("openapi"),
        "the modules this test is about are where it looks: {imports:?}"
    );
    let circles: Vec<&String> = imports
        .keys()
        .filter(|module| reaches(&imports, module, module))
        .collect();
    let naming_mod: Vec<&String> = imports
        .iter()
        .filter(|(_, named)| named.contains("mod"))
        .map(|(module, _)| module)
        .collect();
    assert!(
        circles.is_empty(),
        "in an import circle inside api/: {circles:?} (naming what api/mod.rs defines: \
         {naming_mod:?})"
    );
}

/// The web app holds the app handle only (`store::AppDb`). The compiler already refuses a
/// handler that passes it where the service handle is wanted; this keeps the crate from ever
/// naming the service handle, the service module or the pair of handles, so the RLS boundary
/// cannot be crossed by acquiring one some other way.
#[test]
fn the_web_app_never_names_the_service_handle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "the web crate's sources are where this test looks"
    );
    let forbidden = [
        "ServiceDb",
        "store::service",
        "begin_service",
        "store::Database",
    ];
    let mut found = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for name in forbidden {
                if code.contains(name) {
                    found.push(format!("{}:{}: {name}", path.display(), number + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the web app names the service handle: {found:#?}"
    );
    // And the check itself can see a use: the state's field is the app handle.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(
        lib.contains("pub database: AppDb"),
        "AppState holds the app handle"
    );
}
