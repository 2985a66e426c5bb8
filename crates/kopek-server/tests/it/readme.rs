//! The README's examples, run as a reader would run them against a fresh server: every shell
//! block marked `<!-- tests/it/readme.rs runs this -->` in one bash session each, with `kopek`
//! on the PATH, the server's addresses in place of the defaults, and the working directory the
//! one whose `./kopek-data` the server serves. A command must exit 0 unless its comment says
//! `# exit N: TEXT`; `# => TEXT` is what it prints; `# eventually => TEXT` is what it prints
//! once the asynchronous work behind it is done (it is run again until it does, for 20 s).

use crate::support::*;
use std::path::Path;

const MARKER: &str = "<!-- tests/it/readme.rs runs this -->";

/// One command of a block and what its comment expects.
#[derive(Debug)]
struct Step {
    command: String,
    exit: i32,
    prints: Option<String>,
    eventually: bool,
}

/// The marked blocks' commands, continuation lines joined, comments read.
fn marked_blocks(readme: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != MARKER {
            continue;
        }
        assert_eq!(lines.next().map(str::trim), Some("```sh"), "a marked block is a ```sh block");
        let mut steps = Vec::new();
        let mut pending = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                continue;
            }
            pending.push_str(line);
            let text = std::mem::take(&mut pending);
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') || text.starts_with("alias kopek=") {
                continue;
            }
            steps.push(step(text));
        }
        blocks.push(steps);
    }
    blocks
}

fn step(text: &str) -> Step {
    let (command, comment) = match text.find("  #") {
        Some(at) => (text[..at].trim(), text[at..].trim().trim_start_matches('#').trim()),
        None => (text, ""),
    };
    let mut step = Step { command: command.to_owned(), exit: 0, prints: None, eventually: false };
    if let Some(rest) = comment.strip_prefix("exit ") {
        let (code, said) = rest.split_once(':').unwrap_or((rest, ""));
        step.exit = code.trim().parse().expect("exit code");
        step.prints = Some(said.trim().to_owned()).filter(|said| !said.is_empty());
    } else if let Some(said) = comment.strip_prefix("=>") {
        step.prints = Some(said.trim().to_owned());
    } else if let Some(said) = comment.strip_prefix("eventually =>") {
        step.prints = Some(said.trim().to_owned());
        step.eventually = true;
    }
    step
}

/// Runs `steps` in one bash session in `dir`; each step's exit code and output.
fn run_session(dir: &Path, steps: &[Step], server: &Server, bin: &Path) -> Vec<(i32, String)> {
    let mut script = String::from("export PATH=\"$KOPEK_BIN_DIR:$PATH\"\n");
    for (index, step) in steps.iter().enumerate() {
        let command = step.command.replace("localhost:8000", &server.http_address);
        // `NAME=$(...)` sets a variable later steps use: it runs in the session itself.
        if let Some((name, _)) = command.split_once("=$(")
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            script.push_str(&format!(
                "echo '@@step {index}'\n{command}\nrc=$?\nprintf '%s\\n' \"${name}\"\necho \"@@rc $rc\"\n"
            ));
            continue;
        }
        let attempts = if step.eventually { 200 } else { 1 };
        let wanted = step.prints.clone().unwrap_or_default().replace('\'', "'\\''");
        script.push_str(&format!(
            "echo '@@step {index}'\nfor attempt in $(seq {attempts}); do\n  out=$( {{ {command} ; }} 2>&1 ); rc=$?\n  \
             case \"$out\" in *'{wanted}'*) break;; esac\n  [ {attempts} -gt 1 ] && sleep 0.1\ndone\n\
             printf '%s\\n' \"$out\"\necho \"@@rc $rc\"\n"
        ));
    }
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("KOPEK_BIN_DIR", bin.parent().expect("bin dir"))
        .env("KOPEK_ADDR", server.grpc_url())
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut results = Vec::new();
    for part in text.split("@@step ").skip(1) {
        let (body, rc) = part.rsplit_once("@@rc ").expect("an exit code");
        let body = body.split_once('\n').map_or("", |(_, rest)| rest).to_owned();
        results.push((rc.trim().parse().expect("rc"), body));
    }
    assert_eq!(
        results.len(),
        steps.len(),
        "every step ran: {text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    results
}

#[tokio::test]
async fn the_readmes_examples_run_against_a_fresh_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let blocks = marked_blocks(&readme);
    assert!(blocks.len() >= 2, "the CLI and the curl examples are marked");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("kopek-data"));
    let bin = Path::new(env!("CARGO_BIN_EXE_kopek"));
    for steps in &blocks {
        for (step, (rc, out)) in steps.iter().zip(run_session(dir.path(), steps, &server, bin)) {
            assert_eq!(rc, step.exit, "`{}` exited {rc}: {out}", step.command);
            if let Some(wanted) = &step.prints {
                assert!(
                    out.contains(wanted.as_str()),
                    "`{}` printed {out:?}, not {wanted:?}",
                    step.command
                );
            }
        }
    }
}
