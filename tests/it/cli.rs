//! The command line contract: bad input is refused before any AWS call, with exit 2
//! and a message that shows the expected form.

use crate::support::*;

#[test]
fn a_malformed_instance_id_is_refused_with_the_expected_form() {
    // The id is refused at parse time. The config path does not exist (nothing was
    // read), and every endpoint is a tripwire that counts connections (nothing was
    // called): against the lab, a call would have been answered and gone unseen.
    let tripwire = Tripwire::new();
    let run = tripwire.cleanroom(&["--config", "/nonexistent.toml", "isolate", "i-xyz", "--case", "IR-1"]);
    run.expect_code(2).stderr_has("i- followed by 8 or 17");
    assert_eq!(tripwire.connections(), 0, "no AWS call before the refusal");
}

#[test]
fn a_malformed_case_id_is_refused() {
    let run = cleanroom(&["--config", "/nonexistent.toml", "verify", "--case", "../etc"]);
    run.expect_code(2).stderr_has("invalid case id");
}

#[test]
fn a_malformed_account_id_is_refused() {
    let run = cleanroom(&["--config", "/nonexistent.toml", "preflight", "--account", "1234"]);
    run.expect_code(2).stderr_has("exactly 12 digits");
}

#[test]
fn a_missing_configuration_says_how_to_make_one() {
    let run = cleanroom(&["--config", "/nonexistent.toml", "preflight"]);
    run.expect_code(2).stderr_has("cleanroom init");
}

#[test]
fn a_malformed_configuration_value_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = cleanroom::config::EXAMPLE.replace("region = \"eu-west-1\"", "region = \"Ireland\"");
    std::fs::write(&path, text).unwrap();
    let run = cleanroom(&["--config", path.to_str().unwrap(), "preflight"]);
    run.expect_code(2).stderr_has("region").stderr_has("us-east-1").stderr_has("fix:");
}

#[test]
fn init_writes_a_config_that_loads_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cleanroom.toml");
    let p = path.to_str().unwrap();
    cleanroom(&["--config", p, "init"]).success();
    assert!(std::fs::read_to_string(&path).unwrap().contains("[forensics]"));
    cleanroom(&["--config", p, "init"]).expect_code(2).stderr_has("refusing to overwrite");
}

// Regression (spine issue): `cleanroom ... | head` closed stdout early and the binary
// panicked on the broken pipe. It now ends quietly with success.
#[test]
fn stdout_closed_early_exits_quietly() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cleanroom"))
        .args(["init", "--stdout"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}
