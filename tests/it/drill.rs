//! `cleanroom drill` end to end: its own lab, the seeded incident, every step.

use crate::support::*;

#[test]
fn the_cryptomining_drill_runs_every_step_and_writes_the_report() {
    let out = tempfile::tempdir().unwrap();
    let run = cleanroom(&["drill", "--out", out.path().to_str().unwrap()]);
    run.success().stdout_has("steps succeeded");
    let summary = run.stdout();
    assert!(!summary.contains("!! step failed"), "{summary}");
    let report = std::fs::read_to_string(out.path().join("report.html")).expect("the drill writes the report");
    assert!(report.contains("DRILL-"), "the report names the drill case");
    assert!(out.path().join("cleanroom.toml").exists());
    assert!(out.path().join("01-preflight.log").exists());
}
