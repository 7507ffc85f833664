//! Bad input to `isolate` and `release` is refused before any AWS call: the binary is
//! pointed at a tripwire port that counts connections, not at the lab (which would
//! answer a call, unseen).

use crate::support::*;

#[test]
fn the_tripwire_sees_a_call_when_one_is_made() {
    // The check below can fail: a well-formed run does reach the endpoint.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cleanroom.toml");
    std::fs::write(&path, cleanroom::config::EXAMPLE).unwrap();
    let tripwire = Tripwire::new();
    let run = tripwire.cleanroom(&[
        "--config",
        path.to_str().unwrap(),
        "isolate",
        "--case",
        "IR-1",
        "i-0123456789abcdef0",
    ]);
    assert_ne!(run.code(), 0, "nothing answers at the tripwire");
    assert!(tripwire.connections() > 0, "a call was made and seen:\n{}", run.stderr());
}

#[test]
fn a_malformed_instance_to_release_is_refused_before_any_call() {
    let tripwire = Tripwire::new();
    tripwire
        .cleanroom(&["--config", "/nonexistent.toml", "release", "i-xyz", "--case", "IR-1"])
        .expect_code(2)
        .stderr_has("i- followed by 8 or 17");
    assert_eq!(tripwire.connections(), 0);
}

#[test]
fn a_malformed_filter_is_refused_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cleanroom.toml");
    std::fs::write(&path, cleanroom::config::EXAMPLE).unwrap();
    let tripwire = Tripwire::new();
    tripwire
        .cleanroom(&["--config", path.to_str().unwrap(), "isolate", "--case", "IR-1", "--filter", "Name=web"])
        .expect_code(2)
        .stderr_has("tag:KEY=VALUE");
    assert_eq!(tripwire.connections(), 0);
}
