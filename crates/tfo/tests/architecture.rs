//! ARCHITECTURE.md stays true to the tree: every module file it names
//! (`something.rs`, or a path like `cmd/probe.rs`) exists in some crate.

use std::path::{Path, PathBuf};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with(".git") {
                files_under(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_file_the_map_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    files_under(&root.join("crates"), &mut files);
    let named: Vec<&str> = map
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.ends_with(".rs") && !t.contains(' ') && !t.contains('*'))
        .collect();
    assert!(named.len() > 40, "the map names modules: {}", named.len());
    let missing: Vec<&&str> =
        named.iter().filter(|n| !files.iter().any(|f| f.to_string_lossy().ends_with(&format!("/{n}")))).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md names files that do not exist: {missing:?}");
}
