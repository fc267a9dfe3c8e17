//! The layers of docs/ARCHITECTURE.md, checked: every `crate::…` a module names points to its
//! own top-level module or to one in a layer below it, so that no module imports one that
//! imports it back. (Inside a module its files may name one another, as `api`'s OpenAPI
//! document and the handlers it describes do.)

use std::path::Path;

/// From the top down; a module may name those of the layers after its own.
const LAYERS: &[&[&str]] = &[
    &["main", "lib", "cli"],
    &["startup", "verify", "seed_catalog", "evaluate"],
    &["config"],
    &["server"],
    &["api"],
    &["ingest", "rerank"],
    &["writer"],
    &["context", "handoff", "catalogue"],
    &["event"],
    &["telemetry", "db"],
    &["health", "secret", "retry", "rfc3339"],
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| {
            panic!("{module:?} is in no layer: add it to LAYERS and to docs/ARCHITECTURE.md")
        })
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_names_only_its_own_layer_s_module_or_those_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + 7..];
                // `use crate::{a::B, c}` names each item of its list.
                let names: Vec<String> = match rest.strip_prefix('{') {
                    Some(list) => list
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|item| item.trim().split("::").next().unwrap_or("").to_owned())
                        .filter(|name| !name.is_empty())
                        .collect(),
                    None => vec![
                        rest.chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect(),
                    ],
                };
                for named in names {
                    if named != module && layer(&named) <= layer(&module) {
                        upward.push(format!(
                            "{}:{}: {module} names {named}",
                            relative.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "names upward or sideways:\n{}",
        upward.join("\n")
    );
}
