//! engage-core's modules are layers: each uses only the ones above it in this list, so
//! there is no cycle. Read off the source: every `crate::<module>` a file names must be its
//! own layer or an earlier one.

use std::path::Path;

const LAYERS: [&str; 11] = [
    "text", "rng", "model", "validate", "wire", "batch", "exchange", "delivery", "driver",
    "client", "lib",
];

fn layer_of(path: &Path, src: &Path) -> usize {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    let name = first.trim_end_matches(".rs");
    LAYERS
        .iter()
        .position(|l| *l == name)
        .unwrap_or_else(|| panic!("{} is in no layer: add it to LAYERS", rel.display()))
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn each_module_uses_only_the_layers_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    assert!(all.len() > 10, "found the sources");
    let mut violations = Vec::new();
    for path in &all {
        let own = layer_of(path, &src);
        // Code only: a doc comment may point anywhere.
        let text: String = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let Some(used) = LAYERS.iter().position(|l| *l == name) else {
                continue; // an item of the root (`crate::Update` in docs) or a macro path
            };
            if used > own {
                violations.push(format!(
                    "{} (layer {}) uses crate::{name} (layer {used})",
                    path.strip_prefix(&src).unwrap().display(),
                    LAYERS[own]
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
