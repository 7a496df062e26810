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

/// The modules of a library crate that each module imports (`crate::x`, or a
/// name `lib.rs` re-exports from `x`), test modules and comments left out.
fn module_imports(src: &Path) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut files = Vec::new();
    files_under(src, &mut files);
    let module_of = |f: &Path| {
        let rel = f.strip_prefix(src).unwrap().to_string_lossy().to_string();
        rel.trim_end_matches(".rs").split('/').next().unwrap().to_string()
    };
    let modules: std::collections::BTreeSet<String> =
        files.iter().filter(|f| !f.ends_with("lib.rs")).map(|f| module_of(f)).collect();
    // `pub use module::{A, B};` in lib.rs: A and B come from `module`.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut reexported = std::collections::BTreeMap::new();
    for statement in lib.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else { continue };
        let Some((module, items)) = rest.split_once("::") else { continue };
        for item in items.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|i| !i.is_empty()) {
            reexported.insert(item.to_string(), module.to_string());
        }
    }
    let mut imports = std::collections::BTreeMap::new();
    for file in files.iter().filter(|f| !f.ends_with("lib.rs") && f.extension().is_some_and(|e| e == "rs")) {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let targets: &mut std::collections::BTreeSet<String> = imports.entry(module.clone()).or_default();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    group.split('}').next().unwrap().split(',').map(|n| n.trim().split("::").next().unwrap()).collect()
                } else {
                    vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap()]
                };
                for name in names {
                    let target =
                        if modules.contains(name) { Some(name.to_string()) } else { reexported.get(name).cloned() };
                    if let Some(target) = target.filter(|t| *t != module) {
                        targets.insert(target);
                    }
                }
            }
        }
    }
    imports
}

/// No library crate's modules import each other in a circle (ARCHITECTURE.md's
/// rule: each concept has one home, and the homes form layers). A name taken
/// through a re-export counts as an import of the module that defines it.
#[test]
fn no_module_circles_in_the_libraries() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for library in ["fastopen", "fastopen-wire", "fastopen-lab", "fastopen-tools", "fastopen-preload"] {
        let imports = module_imports(&crates.join(library).join("src"));
        assert!(imports.len() > 3, "{library}: modules read: {imports:?}");
        // Depth-first from each module: a path back to it is a circle.
        for start in imports.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = std::collections::BTreeSet::new();
            while let Some((module, path)) = stack.pop() {
                for next in imports.get(&module).into_iter().flatten() {
                    assert!(next != start, "{library}: a circle of modules: {} -> {start}", path.join(" -> "));
                    if seen.insert(next.clone()) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }
}

/// The kernel-message parsers (each `wire.rs`, and the whole of
/// fastopen-wire) do no I/O: bytes in, values out, so fuzzing and byte tests
/// reach all of them.
#[test]
fn the_parsers_do_no_io() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    files_under(&crates.join("fastopen/src"), &mut files);
    files.retain(|f| f.ends_with("wire.rs"));
    assert!(files.len() >= 3, "netlink, sock_diag, tcp_metrics: {files:?}");
    files_under(&crates.join("fastopen-wire/src"), &mut files);
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for io in ["crate::sys", "sys::", "std::fs", "OwnedFd", "AsFd", "std::io::Read", "TcpStream", "libc::"] {
            assert!(!code.contains(io), "{} uses {io}: a parser must do no I/O", file.display());
        }
    }
}
