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

/// The CLI's rule: no subcommand imports another. A subcommand's module may
/// use only its own helpers (`watch` → `watch_metrics`, `demo` → `demo_replay`);
/// what two commands share lives outside `cmd/` or in an engine crate.
#[test]
fn no_subcommand_imports_another() {
    let cmd = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cmd");
    let mut offences = Vec::new();
    for entry in std::fs::read_dir(&cmd).unwrap().flatten() {
        let path = entry.path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if stem == "mod" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("super::").chain(code.match_indices("crate::cmd::")) {
                let rest = &code[at..];
                let rest = rest.strip_prefix("super::").or_else(|| rest.strip_prefix("crate::cmd::")).unwrap();
                let module: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                // `super::*` in a test module, and this command's own helpers.
                if module.is_empty() || module.starts_with(&format!("{stem}_")) {
                    continue;
                }
                offences.push(format!("cmd/{stem}.rs:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(offences.is_empty(), "a subcommand imports another: {offences:#?}");
}
