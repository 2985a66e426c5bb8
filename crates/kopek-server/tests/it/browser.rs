//! The web UI in a real browser: Debian's Chromium driven by Playwright (playwright-core from
//! npm, installed under the target directory) at phone width. Outside CI it skips, saying
//! why, when Chromium or npm is missing; with `CI=true` it must run.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

fn skip(reason: &str) {
    assert!(!in_ci(), "the browser test must run in CI: {reason}");
    eprintln!("SKIPPED browser test: {reason}");
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    path.exists().then_some(path)
}

/// playwright-core installed once per target directory, at the version package.json pins.
fn playwright(tests: &Path) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-node");
    let wanted = std::fs::read_to_string(tests.join("package.json")).expect("package.json");
    let stamp = dir.join("package.json");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        && dir.join("node_modules/playwright-core").exists()
    {
        return Some(dir);
    }
    std::fs::create_dir_all(&dir).expect("create the node dir");
    std::fs::write(&stamp, &wanted).expect("write package.json");
    let output = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .output();
    match output {
        Ok(output) if output.status.success() => Some(dir),
        Ok(output) => {
            let _ = std::fs::remove_file(&stamp);
            skip(&format!("npm install failed: {}", String::from_utf8_lossy(&output.stderr)));
            None
        }
        Err(error) => {
            let _ = std::fs::remove_file(&stamp);
            skip(&format!("npm could not run: {error}"));
            None
        }
    }
}

/// Runs one of `tests/browser/*.mjs` against a server that requires API keys; its report.
async fn run_script(script: &str, extra: &[&str], shots: &Path) -> Option<String> {
    let Some(chromium) = chromium() else {
        skip("no Chromium at /usr/bin/chromium (apt-get install chromium)");
        return None;
    };
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let node_dir = playwright(&tests)?;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut flags = vec!["--auth", "required"];
    flags.extend_from_slice(extra);
    let server = Server::start_with(dir.path(), &flags);
    let key = server.admin_key.clone().expect("the first start prints an admin key");
    let output = tokio::process::Command::new("node")
        .arg(tests.join(script))
        .env("PLAYWRIGHT_DIR", node_dir.join("node_modules"))
        .env("KOPEK_HTTP_URL", format!("http://{}", server.http_address))
        .env("SCREENSHOT_PATH", shots.join("ui-phone.png"))
        .env("SCREENSHOT_DIR", shots)
        .env("KOPEK_API_KEY", &key)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("run node");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "the browser test {script} failed:\n{report}");
    Some(report)
}

/// A directory for one test's screenshots, emptied.
fn screenshots(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn screenshot_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

#[tokio::test]
async fn the_ui_works_in_a_real_browser() {
    let shots = screenshots("wallet");
    if run_script("ui_test.mjs", &["--fx-spread-bp", "50"], &shots).await.is_none() {
        return;
    }
    let screenshot = shots.join("ui-phone.png");
    let size = screenshot_size(&screenshot);
    assert!(size > 10_000, "the screenshot {} is missing or empty", screenshot.display());
}

/// The operator console (issue 22), at 1280x800 and 390x844: each view's main flow.
#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let shots = screenshots("console");
    if run_script("console_test.mjs", &[], &shots).await.is_none() {
        return;
    }
    for view in ["accounts", "account", "transfers", "transfer", "events", "users", "wallet"] {
        for size in ["desktop", "phone"] {
            let screenshot = shots.join(format!("console-{view}-{size}.png"));
            let bytes = screenshot_size(&screenshot);
            assert!(bytes > 5_000, "the screenshot {} is missing or empty", screenshot.display());
        }
    }
}
