//! `cleanroom collect --image`: the clean room's triage and YARA on a workstation image,
//! against the lab's evidence bucket. The planted fixture of ssm-documents (the
//! cryptomining intrusion on an ext4 disk) is stored with its digests and findings; a
//! file that is not a disk image, and a truncated image, are refused (exit 2) before
//! anything reaches the case.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::digest::digests_of;
use cleanroom::evidence::store::{ObjectStore, get_all};

use crate::support::*;

/// The planted fixture image, built once per test binary by the script the collection
/// documents' own tests use (reproducible bytes).
fn fixture() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("collect-fixture");
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("planted-disk.raw");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("ssm-documents/tests/fixtures/build-image.sh");
        let out = std::process::Command::new("bash").arg(script).arg(&image).output().unwrap();
        assert!(out.status.success(), "build-image.sh: {}", String::from_utf8_lossy(&out.stderr));
        image
    })
}

struct Workstation {
    f: Forensics,
    dir: tempfile::TempDir,
}

impl Workstation {
    async fn new() -> Self {
        Self { f: Forensics::seed().await, dir: tempfile::tempdir().unwrap() }
    }

    fn store(&self) -> S3Store {
        S3Store::new(self.f.clients().s3, self.f.config.forensics.evidence_bucket.clone())
    }

    async fn keys(&self, case: &str) -> Vec<String> {
        let mut keys = self.store().list(&format!("cases/{case}/")).await.unwrap();
        keys.sort();
        keys
    }

    fn collect(&self, image: &Path, case: &str) -> Run {
        self.f.cleanroom(&["--json", "collect", "--image", image.to_str().unwrap(), "--case", case])
    }

    /// A file in the workstation's folder.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `bad` is refused with `expected` in the message, before the case exists and once
    /// it does, and nothing is added to the case; teardown and verify still work on it.
    async fn refuses(&self, bad: &Path, case: &str, expected: &[&str]) {
        let before = self.collect(bad, case);
        before.expect_code(2);
        for e in expected {
            before.stderr_has(e);
        }
        before.stderr_has("nothing was written to the case");
        assert!(self.keys(case).await.is_empty(), "the case was touched: {:#?}", self.keys(case).await);

        // The case made by the workstation's text run: findings shown to the responder.
        self.f
            .cleanroom(&["collect", "--image", fixture().to_str().unwrap(), "--case", case])
            .success()
            .stdout_has("findings (")
            .stdout_has("kswapd0");
        let stored = self.keys(case).await;
        let again = self.collect(bad, case);
        again.expect_code(2);
        for e in expected {
            again.stderr_has(e);
        }
        assert_eq!(self.keys(case).await, stored, "a refused image changed the case");
        self.f.cleanroom(&["verify", "--case", case]).success().stdout_has("VERIFIED");
        self.f.cleanroom(&["teardown", "--case", case]).success().stdout_has("nothing removed");
    }
}

#[tokio::test]
async fn collect_image_of_the_planted_fixture_stores_every_item_with_its_digests_and_verifies() {
    let w = Workstation::new().await;
    let case = "IR-COLLECT-FIXTURE";
    let image = fixture();
    let run = w.collect(image, case);
    run.success();
    let out = run.json();
    let items = out["items"].as_array().unwrap();
    let want = digests_of(&std::fs::read(image).unwrap());
    let stored = items
        .iter()
        .find(|i| i["id"].as_str().unwrap().ends_with("/image.raw"))
        .unwrap_or_else(|| panic!("no image.raw in {items:#?}"));
    assert_eq!(stored["sha256"], want.sha256.as_str());
    for name in ["triage/triage.json", "triage/timeline.csv", "triage/key-files.tar.gz", "yara/yara.json"] {
        assert!(items.iter().any(|i| i["id"].as_str().unwrap().ends_with(name)), "no {name}: {items:#?}");
    }
    // Every item is in the bucket with the digest it was listed with.
    let store = w.store();
    for item in items {
        let key = item["s3_key"].as_str().unwrap();
        let bytes = get_all(&store, key, item["version_id"].as_str(), 1 << 30).await.unwrap();
        assert_eq!(digests_of(&bytes).sha256, item["sha256"].as_str().unwrap(), "{key}");
    }
    // SHA-1 and MD5 of the image, as computed while storing, are in its custody record.
    let mut records = Vec::new();
    for key in w.keys(case).await.iter().filter(|k| k.contains("/custody/")) {
        let r: serde_json::Value =
            serde_json::from_slice(&get_all(&store, key, None, 1 << 20).await.unwrap()).unwrap();
        records.push(r);
    }
    let record = records
        .iter()
        .find(|r| r["action"] == "evidence_stored" && r.to_string().contains("image.raw"))
        .unwrap_or_else(|| panic!("no record of image.raw: {records:#?}"));
    let text = record.to_string();
    assert!(text.contains(&want.sha1) && text.contains(&want.md5), "{record:#}");
    assert!(records.iter().any(|r| r["action"] == "collection_completed"), "{records:#?}");

    // The planted intrusion is found.
    let findings = out["findings"].as_array().unwrap();
    let kinds: Vec<&str> = findings.iter().filter_map(|f| f["kind"].as_str()).collect();
    for kind in ["authorized_key", "fetch_and_run", "ld_preload"] {
        assert!(kinds.contains(&kind), "no {kind} finding in {kinds:?}");
    }
    assert!(findings.iter().any(|f| f["source"] == "yara"), "no YARA match: {kinds:?}");

    w.f.cleanroom(&["verify", "--case", case]).success().stdout_has("VERIFIED");
    w.f.cleanroom(&["teardown", "--case", case]).success().stdout_has("nothing removed");
}

#[tokio::test]
async fn collect_image_of_a_file_that_is_not_a_disk_image_is_refused_and_stores_nothing() {
    let w = Workstation::new().await;
    let text = w.file("notes.txt", &b"the suspect's notes, not a disk\n".repeat(4096));
    w.refuses(
        &text,
        "IR-COLLECT-NOT-AN-IMAGE",
        &["is refused by the triage script (exit 3", "is not a disk image", "give the raw image"],
    )
    .await;
}

#[tokio::test]
async fn collect_image_of_a_truncated_image_is_refused_and_stores_nothing() {
    let w = Workstation::new().await;
    let whole = std::fs::read(fixture()).unwrap();
    let truncated = w.file("truncated.raw", &whole[..whole.len() / 3]);
    w.refuses(
        &truncated,
        "IR-COLLECT-TRUNCATED",
        &["is refused by the triage script (exit 4", "is truncated", "acquire the whole volume again"],
    )
    .await;
}
