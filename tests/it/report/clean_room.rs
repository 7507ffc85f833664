//! Clean-room results in the report: a case on the in-memory store holding the disk
//! image, triage and YARA results the collection documents wrote for the fixture disk
//! (`fixtures/`, from `ssm-documents/scripts/*.sh` run on
//! `ssm-documents/tests/fixtures/build-image.sh`), plus a finding whose file name is
//! hostile. Each finding must show its path, inode and digest with the evidence item
//! it comes from, and a result whose bytes are not the ones custody recorded must not
//! be used at all.

use std::sync::Arc;

use cleanroom::evidence::{Case, LockMode, NewItem, Retention};
use cleanroom::fake::store::MemoryStore;
use cleanroom::ids::AccountId;
use cleanroom::report::{self, Format, sources};
use cleanroom::verify::load_case;

use super::browser::{self, squeeze};
use crate::evidence::{actor, case_id, local_signer, tool};

const INSTANCE: &str = "i-0123456789abcdef0";
const VOLUME: &str = "vol-0123456789abcdef0";
/// A file name on the suspect's disk built to break out of the page, the terminal
/// and a path.
const HOSTILE_PATH: &str = "/tmp/.x/<img src=x onerror=alert(1)>\u{1b}[2J/../../etc/evil";

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/it/report/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn item(account: &AccountId, name: &str) -> NewItem {
    NewItem {
        id: format!("{account}/{INSTANCE}/{VOLUME}/{name}"),
        account: account.clone(),
        subject: INSTANCE.into(),
        name: format!("{VOLUME}/{name}"),
        source: "ssm:Cleanroom-Triage on the analysis instance".into(),
        method: "the collection document's result file".into(),
        derived_from: vec![],
    }
}

/// A signed case holding the three results and the key-file archive.
async fn case_with_results(name: &str) -> (Case, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::with_default_lock("report", LockMode::Compliance, 30));
    let account: AccountId = "111122223333".parse().unwrap();
    let case = Case::open_signed(
        store.clone(),
        &case_id(name),
        actor(&account),
        tool(),
        "sha256:config".into(),
        Retention::explicit(LockMode::Compliance, 30),
        local_signer(),
    )
    .await
    .unwrap();
    let mut triage = fixture("triage.json");
    triage["findings"].as_array_mut().unwrap().push(serde_json::json!({
        "kind": "tmp_executable", "path": HOSTILE_PATH, "inode": 99,
        "sha256": format!("sha256:{}", "ab".repeat(32)), "fs_offset_sector": 0,
        "detail": format!("script of 12 bytes in a temporary directory: {HOSTILE_PATH}"),
        "evidence": "<script>document.write('SCRIPT'+'RAN')</script>", "line_number": 1,
    }));
    case.store_json(item(&account, "image.json"), &fixture("image.json")).await.unwrap();
    case.store_json(item(&account, "triage.json"), &triage).await.unwrap();
    case.store_bytes(
        item(&account, "key-files.tar.gz"),
        b"not really a tarball".to_vec(),
        "application/gzip",
    )
    .await
    .unwrap();
    case.store_json(item(&account, "yara.json"), &fixture("yara.json")).await.unwrap();
    case.seal().await.unwrap();
    (case, store)
}

#[tokio::test]
async fn clean_room_findings_show_path_inode_digest_and_their_evidence_and_print_inert() {
    let (case, store) = case_with_results("IR-REPORT-CR").await;
    let loaded = load_case(store.as_ref(), case.id()).await.unwrap();
    let items: Vec<_> = loaded.items().into_values().collect();
    let read = sources::load(store.as_ref(), &items).await;
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let data = report::build(&loaded, &read);
    let json = serde_json::to_value(&data).unwrap();
    let findings = json["findings"].as_array().unwrap();

    let triage_count = fixture("triage.json")["findings"].as_array().unwrap().len() + 1;
    let yara_count = fixture("yara.json")["matches"].as_array().unwrap().len();
    assert_eq!(findings.iter().filter(|f| f["source"] == "triage").count(), triage_count);
    assert_eq!(findings.iter().filter(|f| f["source"] == "YARA").count(), yara_count);
    let number_of = |name: &str| {
        json["items"].as_array().unwrap().iter().find(|i| i["name"] == format!("{VOLUME}/{name}")).unwrap()["number"]
            .clone()
    };
    let preload = findings.iter().find(|f| f["kind"] == "ld_preload").expect("the ld.so.preload finding");
    assert_eq!(preload["path"], "/etc/ld.so.preload");
    assert_eq!(preload["inode"], "23");
    assert!(preload["sha256"].as_str().unwrap().starts_with("sha256:2320499610b4"));
    assert_eq!(preload["volume"], VOLUME);
    assert_eq!(preload["evidence"][0]["number"], number_of("triage.json"));
    assert_eq!(
        preload["evidence"][1]["number"],
        number_of("key-files.tar.gz"),
        "the key files are evidence too"
    );
    let deleted = findings
        .iter()
        .find(|f| f["source"] == "YARA" && f["path"] == "/tmp/.x/install.sh")
        .expect("the YARA match on the deleted dropper");
    assert!(deleted["title"].as_str().unwrap().contains("matched a deleted file"), "{deleted:#}");
    assert_eq!(deleted["evidence"][0]["number"], number_of("yara.json"));
    let image = findings.iter().find(|f| f["kind"] == "disk_image").expect("the disk image");
    assert!(image["title"].as_str().unwrap().contains("it matches"), "{image:#}");
    assert_eq!(image["process_problem"], false);
    let story: Vec<&str> = json["summary"]["instances"][0]["story"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        story,
        [format!(
            "its volume {VOLUME} was examined in the clean room: imaged, triaged with the Sleuth Kit and scanned with YARA (findings in section 2)"
        )],
        "the first page tells it"
    );
    let hostile = findings.iter().find(|f| f["inode"] == "99").unwrap();
    assert_eq!(hostile["path"], HOSTILE_PATH, "kept exactly as found");

    let dir = tempfile::tempdir().unwrap();
    let html_path = dir.path().join("report.html");
    let html = report::render(&data, Format::Html);
    browser::only_our_markup(&html).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&html_path, &html).unwrap();
    let md = report::render(&data, Format::Md);
    let prose = browser::markdown_outside_code(&md);
    assert!(!prose.contains('<') && !md.contains('\u{1b}'), "{md}");
    assert!(
        md.contains("\"/tmp/.x/&lt;img src=x onerror=alert(1)&gt;\\\\u{1b}\\[2J/../../etc/evil\""),
        "{md}"
    );

    let page = browser::render(&html_path, "clean-room-report");
    let text = page.squeezed();
    assert!(page.page_fetches.is_empty(), "the page fetched {:?}", page.page_fetches);
    assert!(
        text.contains(&squeeze("/tmp/.x/<img src=x onerror=alert(1)>\\u{1b}[2J/../../etc/evil")),
        "{}",
        page.text
    );
    assert!(!text.contains("SCRIPTRAN"));
    for shown in [
        "F1",
        "/etc/ld.so.preload",
        "inode23",
        "Cleanroom_Miner_Pool_Domain",
        "matchedadeletedfile",
        &format!("volume{VOLUME}"),
        "wasimagedinthecleanroom",
    ] {
        assert!(text.contains(shown), "the printed report lacks {shown:?}:\n{}", page.text);
    }
}

#[tokio::test]
async fn a_result_whose_bytes_are_not_the_recorded_ones_is_not_used() {
    let (case, store) = case_with_results("IR-REPORT-CR-DIGEST").await;
    let loaded = load_case(store.as_ref(), case.id()).await.unwrap();
    let mut items: Vec<_> = loaded.items().into_values().collect();
    // As if the record named other bytes than the object holds (a swapped object).
    let triage = items.iter_mut().find(|i| i.name.ends_with("triage.json")).unwrap();
    triage.sha256 = format!("sha256:{}", "00".repeat(32));
    let read = sources::load(store.as_ref(), &items).await;
    assert!(read.triage.is_empty(), "the triage result was used");
    assert_eq!(read.yara.len(), 1, "the others are");
    assert!(
        read.problems.iter().any(|p| p.contains("triage.json") && p.contains("not the sha256:0000")),
        "{:?}",
        read.problems
    );
    let data = report::build(&loaded, &read);
    let html = report::render(&data, Format::Html);
    assert!(html.contains("Evidence this report could not use"), "said in the report");
}
