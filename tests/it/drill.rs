//! `cleanroom drill` end to end: its own lab, the seeded incident, every step.

use crate::support::*;

#[test]
fn the_cryptomining_drill_runs_every_step_and_the_report_shows_the_planted_traces() {
    let out = tempfile::tempdir().unwrap();
    let run = cleanroom(&["drill", "--out", out.path().to_str().unwrap()]);
    run.success().stdout_has("steps succeeded").stdout_has("## summary");
    let stdout = run.stdout();
    assert!(!stdout.contains("!! "), "{stdout}");
    // The release without approval was refused, and said how to approve it.
    assert!(stdout.contains("release without approval is refused"), "{stdout}");
    let report =
        std::fs::read_to_string(out.path().join("report.html")).expect("the drill writes the report");
    assert!(report.contains("DRILL-"), "the report names the drill case");
    // The summary names each planted trace with the digest the report for legal shows.
    for trace in ["/tmp/.cache/xmrig", "/etc/crontab", "/root/.ssh/authorized_keys"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(trace) && l.contains("sha256 "))
            .unwrap_or_else(|| panic!("the summary does not name {trace} with a digest:\n{stdout}"));
        let digest = line.rsplit(' ').next().unwrap();
        assert_eq!(digest.len(), 64, "{line}");
        assert!(report.contains(digest), "report.html does not show {digest} of {trace}");
    }
    // The third party's offline copy holds the disk image, streamed to a file.
    let images = walk(&out.path().join(format!("{}-download", case_of(&stdout))))
        .into_iter()
        .filter(|p| p.ends_with("image.raw"))
        .count();
    assert!(images >= 1, "no disk image in the downloaded case");
}

/// The case id the drill printed (`## drill DRILL-... finished`).
fn case_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("## drill ").and_then(|r| r.split(' ').next()))
        .expect("the drill names its case")
        .to_owned()
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn the_unauthorized_launch_drill_preserves_every_instance_the_key_launched_and_nothing_else() {
    let out = tempfile::tempdir().unwrap();
    let run =
        cleanroom(&["drill", "--scenario", "unauthorized-launch", "--out", out.path().to_str().unwrap()]);
    run.success().stdout_has("steps succeeded").stdout_has("untouched");
    let stdout = run.stdout();
    assert!(!stdout.contains("!! "), "{stdout}");
    // Three of the key's instances in two regions, each contained.
    let contained: Vec<&str> = stdout.lines().filter(|l| l.contains("containment verified")).collect();
    assert_eq!(contained.len(), 3, "{stdout}");
    assert!(
        contained.iter().any(|l| l.contains("us-east-1"))
            && contained.iter().any(|l| l.contains("eu-west-1"))
    );
}
