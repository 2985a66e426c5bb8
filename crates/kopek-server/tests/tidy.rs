//! Rules the build checks (ARCHITECTURE.md), so review need not: the crate graph, read with
//! `cargo metadata`, keeps the arrows the architecture allows; the core depends on nothing;
//! the surfaces write only through the intake; the wall clock is read in one place; every
//! source file says what it is for, and no debugging leftovers or ignored tests slip in.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that do I/O (files, sockets, the network, databases): the core reaches none.
const IO: &[&str] = &[
    "tokio",
    "mio",
    "rusqlite",
    "sqlx",
    "reqwest",
    "hyper",
    "tonic",
    "axum",
    "redis",
    "lapin",
    "rdkafka",
    "async-nats",
];
/// Store adapters and the database clients they wrap.
const STORE_ADAPTERS: &[&str] =
    &["kopek-store-sqlite", "kopek-store-postgres", "rusqlite", "sqlx", "kopek-journal"];
/// Broker clients, and the HTTP client the webhook sender uses.
const BROKER_CLIENTS: &[&str] = &["rdkafka", "lapin", "async-nats", "reqwest"];
/// The API surfaces.
const SURFACES: &[&str] = &["kopek-api-grpc", "kopek-api-http"];

/// Each workspace crate's direct normal (not dev, not build) dependencies, by package name.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The resolved graph of the workspace as `cargo metadata` reports it.
fn metadata_graph() -> (Graph, BTreeSet<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| {
            (package["id"].as_str().expect("id"), package["name"].as_str().expect("name"))
        })
        .collect();
    let members: BTreeSet<String> = metadata["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|id| names[id.as_str().expect("member id")].to_owned())
        .collect();
    let mut graph = Graph::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let name = names[node["id"].as_str().expect("node id")].to_owned();
        let normal = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|kind| kind["kind"].is_null()))
            })
            .map(|dep| names[dep["pkg"].as_str().expect("dep id")].to_owned());
        graph.entry(name).or_default().extend(normal);
    }
    (graph, members)
}

/// Everything `name` reaches through normal dependencies.
fn reaches(graph: &Graph, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![name.to_owned()];
    while let Some(next) = stack.pop() {
        for dep in graph.get(&next).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    seen
}

/// Every arrow the architecture forbids that the graph has, as a sentence.
fn forbidden_arrows(graph: &Graph, members: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut forbid = |from: &str, banned: &[&str], why: &str| {
        let reached = reaches(graph, from);
        for target in banned.iter().filter(|target| reached.contains(**target)) {
            found.push(format!("{from} reaches {target}: {why}"));
        }
    };
    let workspace: Vec<&str> = members.iter().map(String::as_str).collect();
    forbid("kopek-core", &workspace, "the core depends on no other kopek crate (nor the clock)");
    forbid("kopek-core", IO, "the core does no I/O");
    let beyond_port: Vec<&str> = workspace
        .iter()
        .copied()
        .filter(|name| !matches!(*name, "kopek-core" | "kopek-clock"))
        .collect();
    forbid("kopek-store", &beyond_port, "the storage port depends only on the core and the clock");
    for inner in ["kopek-engine", "kopek-intake", "kopek-events"] {
        forbid(inner, SURFACES, "the write path and the events side know no surface");
        forbid(inner, STORE_ADAPTERS, "it works with any store through the port");
        forbid(inner, BROKER_CLIENTS, "delivery beyond the process is kopek-outbox's");
    }
    for surface in SURFACES {
        forbid(surface, STORE_ADAPTERS, "a surface reaches the store through the port");
        forbid(surface, BROKER_CLIENTS, "a surface compiles no broker client");
    }
    forbid("kopek-ingest", SURFACES, "broker ingestion reads commands through the intake");
    for member in &workspace {
        if *member != "kopek-server" {
            forbid(member, &["kopek-server"], "nothing depends on the server");
        }
    }
    // Writers beside the surfaces (broker ingestion, the order saga) write through the intake
    // too: they may reach the engine only through it.
    for writer in ["kopek-ingest", "kopek-outbox"] {
        if graph.get(writer).is_some_and(|deps| deps.contains("kopek-engine")) {
            found.push(format!("{writer} depends on kopek-engine: it writes through the intake"));
        }
    }
    found
}

#[test]
fn the_crate_graph_keeps_the_arrows_architecture_allows() {
    let (graph, members) = metadata_graph();
    for expected in ["kopek-core", "kopek-intake", "kopek-events", "kopek-api-http"] {
        assert!(members.contains(expected), "{expected} is not a workspace member: {members:?}");
    }
    let found = forbidden_arrows(&graph, &members);
    assert!(found.is_empty(), "forbidden dependencies:\n{}", found.join("\n"));
}

#[test]
fn a_forbidden_arrow_is_reported() {
    let (mut graph, members) = metadata_graph();
    // A surface that reaches a store adapter through an intermediate crate, and an inner
    // crate that reaches a broker client.
    graph.entry("kopek-fx".to_owned()).or_default().insert("kopek-store-sqlite".to_owned());
    graph.entry("kopek-events".to_owned()).or_default().insert("lapin".to_owned());
    // The order saga going round the intake.
    graph.entry("kopek-outbox".to_owned()).or_default().insert("kopek-engine".to_owned());
    let found = forbidden_arrows(&graph, &members);
    for expected in [
        "kopek-outbox depends on kopek-engine",
        "kopek-api-http reaches kopek-store-sqlite",
        "kopek-api-grpc reaches kopek-store-sqlite",
        "kopek-events reaches lapin",
        "kopek-api-http reaches lapin",
    ] {
        assert!(found.iter().any(|line| line.starts_with(expected)), "{expected}: {found:#?}");
    }
}

/// Rust files under `dir`, build output left out.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "corpus" && name != "artifacts" {
                rust_files(&path, files);
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn the_wall_clock_is_read_only_in_the_clock() {
    let root = workspace_root();
    let clock = root.join("crates/kopek-clock/src/lib.rs");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("fuzz"), &mut files);
    assert!(files.len() > 100, "the walk found only {} files", files.len());
    assert!(files.contains(&clock), "the clock is not where this test looks");
    // Spelled in two parts so that this file does not match itself.
    let needle = ["SystemTime", "::now"].concat();
    let readers: Vec<String> = files
        .iter()
        .filter(|path| **path != clock)
        .filter(|path| std::fs::read_to_string(path).is_ok_and(|text| text.contains(&needle)))
        .map(|path| path.strip_prefix(&root).unwrap_or(path).display().to_string())
        .collect();
    assert!(readers.is_empty(), "read the time through kopek_clock, not {needle}: {readers:?}");
}

#[test]
fn the_surfaces_write_only_through_the_intake() {
    // What sends a command to the engine without the intake's rules and typed answers.
    let engine_calls =
        ["CommandBody", "CommandResult", "submit_command", "enqueue_now", "enqueue_command"];
    let found = surfaces_naming(&engine_calls, |text| text);
    assert!(found.is_empty(), "send commands through kopek_intake::Intake: {found:#?}");
}

/// `path: needle` for each source file of a surface (the API crates, ingest) whose text, as
/// `normal` gives it, holds one of `needles`.
fn surfaces_naming(needles: &[&str], normal: impl Fn(String) -> String) -> Vec<String> {
    let root = workspace_root();
    let mut files = Vec::new();
    for surface in ["kopek-api-grpc", "kopek-api-http", "kopek-ingest"] {
        rust_files(&root.join("crates").join(surface).join("src"), &mut files);
    }
    assert!(files.len() > 20, "the walk found only {} files", files.len());
    let mut found = Vec::new();
    for path in &files {
        let text = normal(std::fs::read_to_string(path).expect("read"));
        for needle in needles.iter().filter(|needle| text.contains(**needle)) {
            found.push(format!("{}: {needle}", path.strip_prefix(&root).unwrap_or(path).display()));
        }
    }
    found
}

/// What a caller may read is decided once, in `kopek_intake::access`: no surface filters by
/// tenant or bound user itself, or reads what needs that decision straight from the store.
#[test]
fn the_surfaces_read_what_a_caller_may_see_through_the_intake() {
    let decisions = [
        ".sees(",
        "refuse_bound(",
        "store().account(",
        "store().transfer(",
        "store().transfer_by_key(",
        "store().list_accounts(",
        "store().spending(",
        "store().user(",
        "store.account(",
        "store.transfer(",
        "store.transfer_by_key(",
        "store.user(",
        "store.spending(",
        "store.list_accounts(",
    ];
    // Calls may span lines: compare without whitespace.
    let found = surfaces_naming(&decisions, |text| text.split_whitespace().collect());
    assert!(found.is_empty(), "read through kopek_intake::access: {found:#?}");
}

#[test]
fn the_core_depends_on_nothing() {
    let manifest = std::fs::read_to_string(workspace_root().join("crates/kopek-core/Cargo.toml"))
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
    rust_files(&workspace_root().join("crates"), &mut files);
    assert!(files.len() > 20, "found too few sources: {}", files.len());
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        let name = file.strip_prefix(workspace_root()).unwrap_or(file).display().to_string();
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
