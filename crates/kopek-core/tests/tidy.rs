//! Workspace hygiene that review would otherwise have to catch: the core stays pure, every
//! source file says what it is for, and no debugging leftovers or ignored tests slip in.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in
        std::fs::read_dir(dir).expect("read dir").map(|entry| entry.expect("dir entry").path())
    {
        if entry.is_dir() && entry.file_name().is_some_and(|name| name != "target") {
            rust_files(&entry, out);
        } else if entry.extension().is_some_and(|ext| ext == "rs") {
            out.push(entry);
        }
    }
}

#[test]
fn the_core_depends_on_nothing() {
    let manifest = std::fs::read_to_string(workspace().join("crates/kopek-core/Cargo.toml"))
        .expect("core manifest");
    let dependencies = manifest.split("[dependencies]").nth(1).expect("a [dependencies] table");
    let dependencies = dependencies.split("\n[").next().unwrap_or_default();
    let names: Vec<&str> = dependencies
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(
        names.is_empty(),
        "kopek-core must stay free of dependencies (no async, I/O, serde): {names:?}"
    );
}

#[test]
fn sources_open_with_a_purpose_and_carry_no_leftovers() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    assert!(files.len() > 20, "found too few sources: {}", files.len());
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        let name = file.strip_prefix(workspace()).unwrap_or(file).display().to_string();
        if !text.starts_with("//!") {
            problems.push(format!("{name}: does not open with a //! line saying what it is for"));
        }
        let dbg_call = ["dbg", "!("].concat();
        let ignore_attribute = ["#[", "ignore"].concat();
        if text.contains(&dbg_call) {
            problems.push(format!("{name}: a stray dbg! call"));
        }
        if text.contains(&ignore_attribute) {
            problems.push(format!(
                "{name}: an ignored test; assert today's behaviour with a FIXME instead"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
