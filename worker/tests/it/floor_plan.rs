//! The floor plan of the two binaries, checked on their sources (ARCHITECTURE.md describes it).
//!
//! Worker: every module lives on a floor and imports only modules on lower floors, so the
//! import graph has no loops and the delivery path knows nothing of GraphQL or sign-in; all
//! SQL and every mention of SQLite live in `store/`; GraphQL lives in `api/`; NATS only where
//! the intake stream, the worker lease and the health check need it. Ingest: no import loops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The worker's floors, ground floor first. A module may import modules on lower floors only.
const WORKER_FLOORS: &[&[&str]] = &[
    &["model"],
    &["metric_names"],
    &["store", "programs"],
    &["breaker", "routes", "pull", "ownership", "http"],
    &["deliver"],
    &["record"],
    &["replay", "quarantine", "backfill"],
    &["auth", "console"],
    &["api"],
    &["lib", "main"],
];

/// Which modules may name a crate (by its path prefix); any other module naming it fails.
const CONFINED_CRATES: &[(&str, &[&str])] = &[
    ("rusqlite", &["store"]),
    ("r2d2", &["store"]),
    ("tokio_postgres", &["store"]),
    ("deadpool_postgres", &["store"]),
    ("async_graphql", &["api"]),
    // The intake consumer, the worker lease, the health check's connection state, and
    // The quarantine stream: listed, counted, admitted from; a backfill's publishes.
    ("async_nats", &["record", "pull", "ownership", "http", "quarantine", "backfill", "lib"]),
];

/// SQL statements start like this; only `store/` may hold one.
const SQL_STARTS: &[&str] = &["SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE TABLE", "PRAGMA "];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file belongs to (`store/writer.rs` → `store`, `lib.rs` → `lib`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
    first.trim_end_matches(".rs").to_owned()
}

/// The file's code lines: comments (doc links included) left out.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim_start).filter(|line| !line.starts_with("//"))
}

/// `crate::x` paths named in code, as module names.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut imports = BTreeSet::new();
    for line in code_lines(text) {
        for (at, _) in line.match_indices("crate::") {
            // `inlet_shared::crate::` does not exist; `$crate::` is a macro's own crate.
            if at > 0 && line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let name: String =
                line[at + "crate::".len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                imports.insert(name);
            }
        }
    }
    imports
}

fn names_crate(text: &str, krate: &str) -> bool {
    code_lines(text).any(|line| line.contains(&format!("{krate}::")) || line.contains(&format!("use {krate};")))
}

fn holds_sql(text: &str) -> Option<String> {
    code_lines(text).find(|line| SQL_STARTS.iter().any(|start| line.contains(&format!("\"{start}")))).map(str::to_owned)
}

#[test]
fn worker_modules_import_only_lower_floors_and_keep_sql_and_graphql_in_their_rooms() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let floor_of: BTreeMap<&str, usize> = WORKER_FLOORS
        .iter()
        .enumerate()
        .flat_map(|(floor, modules)| modules.iter().map(move |module| (*module, floor)))
        .collect();
    let mut problems = Vec::new();
    for file in rust_files(&src) {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        let Some(&floor) = floor_of.get(module.as_str()) else {
            problems.push(format!("{shown}: module `{module}` is on no floor (add it to WORKER_FLOORS)"));
            continue;
        };
        for import in crate_imports(&text) {
            if import == module {
                continue;
            }
            match floor_of.get(import.as_str()) {
                Some(&imported) if imported < floor => {}
                Some(_) => problems.push(format!("{shown}: `{module}` imports `{import}`, not on a lower floor")),
                None => problems.push(format!("{shown}: imports `crate::{import}`, which is on no floor")),
            }
        }
        for (krate, allowed) in CONFINED_CRATES {
            if names_crate(&text, krate) && !allowed.contains(&module.as_str()) {
                problems.push(format!("{shown}: names `{krate}`, which only {allowed:?} may"));
            }
        }
        if module != "store"
            && let Some(line) = holds_sql(&text)
        {
            problems.push(format!("{shown}: SQL outside store/: {line}"));
        }
    }
    assert!(problems.is_empty(), "the worker's floor plan is broken:\n{}", problems.join("\n"));
}

#[test]
fn ingest_modules_import_each_other_without_loops() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ingest/src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let module = module_of(&src, &file);
        let imports = crate_imports(&std::fs::read_to_string(&file).unwrap());
        graph.entry(module.clone()).or_default().extend(imports.into_iter().filter(|import| *import != module));
    }
    // Depth-first search for a back edge; the loop found is named in full.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for import in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(import, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("ingest has an import loop: {}", cycle.join(" → "));
        }
    }
    assert!(graph.contains_key("publish") && graph["publish"].contains("health"), "the scan sees imports");
}

#[test]
fn the_scan_sees_imports_comments_and_sql() {
    let text = "//! [`crate::api`] is only a doc link\nuse crate::store::{Store, x};\nlet a = crate::model::UnixMs::now();\nc.execute(\"DELETE FROM t\", [])";
    assert_eq!(crate_imports(text), BTreeSet::from(["store".to_owned(), "model".to_owned()]));
    assert!(holds_sql(text).is_some());
    assert!(names_crate("use rusqlite::params;", "rusqlite"));
    assert!(!names_crate("// rusqlite::params", "rusqlite"));
}
