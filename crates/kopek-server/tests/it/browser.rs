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

#[tokio::test]
async fn the_ui_works_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        return skip("no Chromium at /usr/bin/chromium (apt-get install chromium)");
    };
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let Some(node_dir) = playwright(&tests) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--auth", "required", "--fx-spread-bp", "50"]);
    let key = server.admin_key.clone().expect("the first start prints an admin key");
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot dir");
    let screenshot = screenshots.join("ui-phone.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = tokio::process::Command::new("node")
        .arg(tests.join("ui_test.mjs"))
        .env("PLAYWRIGHT_DIR", node_dir.join("node_modules"))
        .env("KOPEK_HTTP_URL", format!("http://{}", server.http_address))
        .env("SCREENSHOT_PATH", &screenshot)
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
    assert!(output.status.success(), "the browser test failed:\n{report}");
    let size = std::fs::metadata(&screenshot).map(|meta| meta.len()).unwrap_or(0);
    assert!(size > 10_000, "the screenshot {} is missing or empty", screenshot.display());
}
