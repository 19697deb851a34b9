//! The crate's modules form layers, read from the source's `crate::` paths: no top-level module
//! reaches itself through the others (a folder counts as one module; `lib.rs`, the root that
//! declares and wires them all, is left out), the JSON API imports no page module, and the
//! shell and the page kit import no page. An import that closes a circle fails here.

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
