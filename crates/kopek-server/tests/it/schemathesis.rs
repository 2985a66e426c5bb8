//! Schemathesis (from PyPI) against `/openapi.json` of the real server: generated requests for
//! every documented operation; no answer may be a 5xx and every answer must match its schema.
//! Outside CI it skips, saying why, where Python or PyPI is missing; with `CI=true` it runs.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

fn skip(reason: &str) -> Option<PathBuf> {
    assert!(!in_ci(), "schemathesis must run in CI: {reason}");
    eprintln!("SKIPPED schemathesis: {reason}");
    None
}

/// A virtualenv with schemathesis, made once per target directory.
fn schemathesis(requirements: &Path) -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-schemathesis");
    let tool = venv.join("bin/schemathesis");
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read_to_string(requirements).expect("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && tool.exists() {
        return Some(tool);
    }
    match Command::new("python3").args(["-m", "venv"]).arg(&venv).output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            return skip(&format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Err(error) => return skip(&format!("python3 could not run: {error}")),
    }
    let pip = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(requirements)
        .output();
    match pip {
        Ok(output) if output.status.success() => {
            std::fs::write(&stamp, wanted).expect("write the stamp");
            Some(tool)
        }
        Ok(output) => skip(&format!(
            "pip install schemathesis failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )),
        Err(error) => skip(&format!("pip could not run: {error}")),
    }
}

#[tokio::test]
async fn generated_requests_get_no_5xx_and_schema_conforming_answers() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let Some(tool) = schemathesis(&tests.join("requirements.txt")) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    // With auth on, as a deployment reachable from elsewhere runs: every call carries the key.
    let server = Server::start_with(dir.path(), &["--auth", "required"]);
    let key = server.admin_key.clone().expect("the first start prints an admin key");
    let reports = tempfile::tempdir().expect("report dir");
    let output = tokio::process::Command::new(tool)
        .arg("run")
        .arg(format!("http://{}/openapi.json", server.http_address))
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "50", "--seed", "20261121", "--no-color"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {key}"))
        .arg("--report-dir")
        .arg(reports.path())
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("generated") || line.contains("passed"))
        .collect();
    println!("schemathesis: {}", summary.join(" | "));
    assert!(output.status.success(), "schemathesis found failures:\n{report}");
    assert!(report.contains("generated"), "schemathesis ran no test:\n{report}");
}
