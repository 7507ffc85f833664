//! Where everything of a case lives in the evidence bucket: the one place that builds
//! and parses `cases/...` keys. Nothing else writes `format!("cases/...")`.
//!
//! ```text
//! cases/<case>/case.json                                  who opened it, when, config, tool
//! cases/<case>/custody/<seq:010>.json                     one custody record per event
//! cases/<case>/evidence/<account>/<subject>/<name>        an evidence item
//! cases/<case>/evidence/<account>/<subject>/<sub>/<name>  a per-volume output, e.g. .../i-0abc/vol-0def/image.raw
//! cases/<case>/manifest.json                              every item and the custody head
//! cases/<case>/keys/<sha256 hex>.pem                      public key the records are signed with
//! cases/<case>/report/report.<html|md|json>               the hand-off report
//! cases/<case>/journal/<entry>.json                       the operational journal (what was asked, what was created)
//! ```
//!
//! Every segment that comes from data (subject, sub-folder, name, journal entry) is
//! checked by [`check_segment`]: a key never gains a `..`, an empty segment, a
//! separator or a character a shell or a terminal would act on.

use crate::ids::{AccountId, CaseId};

/// The prefix every case lives under.
pub const CASES: &str = "cases/";
/// Longest segment we accept: S3 keys may be 1,024 bytes; a case key has at most
/// six data segments, so 200 each keeps every key well under the limit.
pub const MAX_SEGMENT: usize = 200;
/// Sub-folders allowed below an evidence subject (`<instance>/<vol-id>/<name>`).
pub const MAX_EVIDENCE_SUBFOLDERS: usize = 1;
/// Sub-folders allowed in a journal entry name (`<instance>/<step>`).
pub const MAX_JOURNAL_SUBFOLDERS: usize = 1;

/// Why a segment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSegment {
    pub field: &'static str,
    pub problem: &'static str,
}

impl std::fmt::Display for InvalidSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidSegment {}

/// Checks one path segment taken from data.
pub fn check_segment(field: &'static str, value: &str) -> Result<(), InvalidSegment> {
    let bad = |problem| Err(InvalidSegment { field, problem });
    if value.is_empty() || value.len() > MAX_SEGMENT {
        return bad("must be 1 to 200 characters");
    }
    if value == "." || value == ".." || value.contains('/') || value.contains('\\') {
        return bad("must not be '.', '..' or contain a path separator");
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:+=@,".contains(&b)) {
        return bad("may contain only letters, digits and ._-:+=@,");
    }
    Ok(())
}

/// Checks `value` as 1 to `1 + max_subfolders` segments separated by `/`.
fn check_path(field: &'static str, value: &str, max_subfolders: usize) -> Result<(), InvalidSegment> {
    let segments: Vec<&str> = value.split('/').collect();
    if segments.len() > 1 + max_subfolders {
        return Err(InvalidSegment {
            field,
            problem: if max_subfolders == 1 {
                "may hold at most one sub-folder (<sub>/<file>)"
            } else {
                "has too many sub-folders"
            },
        });
    }
    segments.iter().try_for_each(|s| check_segment(field, s))
}

/// `cases/<case>/`.
pub fn case_prefix(case: &CaseId) -> String {
    format!("{CASES}{case}/")
}

/// `cases/<case>/case.json`.
pub fn case_file(case: &CaseId) -> String {
    format!("{CASES}{case}/case.json")
}

/// The case a `cases/<case>/case.json` key belongs to (for listing cases).
pub fn case_of_case_file(key: &str) -> Option<CaseId> {
    key.strip_prefix(CASES)?.strip_suffix("/case.json")?.parse().ok()
}

/// `cases/<case>/custody/`.
pub fn custody_prefix(case: &CaseId) -> String {
    format!("{CASES}{case}/custody/")
}

/// `cases/<case>/custody/<seq, 10 digits>.json`: zero-padded so keys list in order.
pub fn custody_record(case: &CaseId, seq: u64) -> String {
    format!("{CASES}{case}/custody/{seq:010}.json")
}

/// The sequence number a custody record key names, if it is one.
pub fn custody_seq(case: &CaseId, key: &str) -> Option<u64> {
    let name = key.strip_prefix(&custody_prefix(case))?.strip_suffix(".json")?;
    (name.len() == 10 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten()
}

/// `cases/<case>/evidence/`.
pub fn evidence_prefix(case: &CaseId) -> String {
    format!("{CASES}{case}/evidence/")
}

/// `cases/<case>/evidence/<account>/<subject>/<name>`; `name` may hold one
/// sub-folder (`vol-0def/image.raw`) for per-volume outputs.
pub fn evidence(
    case: &CaseId,
    account: &AccountId,
    subject: &str,
    name: &str,
) -> Result<String, InvalidSegment> {
    check_segment("subject", subject)?;
    check_path("name", name, MAX_EVIDENCE_SUBFOLDERS)?;
    Ok(format!("{CASES}{case}/evidence/{account}/{subject}/{name}"))
}

/// `cases/<case>/evidence/<account>/<subject>/<folder>/`: where the clean room writes
/// one volume's outputs (a document's `EvidencePrefix`).
pub fn evidence_folder(
    case: &CaseId,
    account: &AccountId,
    subject: &str,
    folder: &str,
) -> Result<String, InvalidSegment> {
    check_segment("subject", subject)?;
    check_segment("folder", folder)?;
    Ok(format!("{CASES}{case}/evidence/{account}/{subject}/{folder}/"))
}

/// `cases/<case>/manifest.json`.
pub fn manifest(case: &CaseId) -> String {
    format!("{CASES}{case}/manifest.json")
}

/// `cases/<case>/keys/`.
pub fn keys_prefix(case: &CaseId) -> String {
    format!("{CASES}{case}/keys/")
}

/// `cases/<case>/keys/<hex>.pem` for a `sha256:<64 hex>` fingerprint; None when the
/// fingerprint does not have that form (it may come from a forged record).
pub fn public_key(case: &CaseId, fingerprint: &str) -> Option<String> {
    let hex = fingerprint.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| format!("{CASES}{case}/keys/{hex}.pem"))
}

/// The `sha256:<hex>` fingerprint a key file's name claims, if it is one.
pub fn public_key_fingerprint(case: &CaseId, key: &str) -> Option<String> {
    let hex = key.strip_prefix(&keys_prefix(case))?.strip_suffix(".pem")?;
    let fingerprint = format!("sha256:{hex}");
    (public_key(case, &fingerprint).as_deref() == Some(key)).then_some(fingerprint)
}

/// `cases/<case>/report/`.
pub fn report_prefix(case: &CaseId) -> String {
    format!("{CASES}{case}/report/")
}

/// `cases/<case>/report/report.<extension>`.
pub fn report(case: &CaseId, extension: &str) -> Result<String, InvalidSegment> {
    check_segment("report extension", extension)?;
    Ok(format!("{CASES}{case}/report/report.{extension}"))
}

/// `cases/<case>/journal/`.
pub fn journal_prefix(case: &CaseId) -> String {
    format!("{CASES}{case}/journal/")
}

/// `cases/<case>/journal/<entry>.json`; `entry` may hold one sub-folder
/// (`i-0abc/snapshot`).
pub fn journal(case: &CaseId, entry: &str) -> Result<String, InvalidSegment> {
    check_path("journal entry", entry, MAX_JOURNAL_SUBFOLDERS)?;
    Ok(format!("{CASES}{case}/journal/{entry}.json"))
}

/// `key` relative to its case prefix (`custody/0000000001.json`), if it is inside it.
pub fn relative<'a>(case: &CaseId, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(CASES)?.strip_prefix(case.as_str())?.strip_prefix('/')
}

/// What a key of a case is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    CaseFile,
    Custody(u64),
    Evidence,
    Manifest,
    PublicKey,
    Report,
    Journal,
    /// Inside the case but of no shape the tool writes.
    Other,
}

/// Classifies a key of `case` (None when it is outside the case).
pub fn kind(case: &CaseId, key: &str) -> Option<Kind> {
    let rel = relative(case, key)?;
    Some(if key == case_file(case) {
        Kind::CaseFile
    } else if let Some(seq) = custody_seq(case, key) {
        Kind::Custody(seq)
    } else if key == manifest(case) {
        Kind::Manifest
    } else if public_key_fingerprint(case, key).is_some() {
        Kind::PublicKey
    } else if rel.starts_with("evidence/") {
        Kind::Evidence
    } else if rel.starts_with("report/") {
        Kind::Report
    } else if rel.starts_with("journal/") {
        Kind::Journal
    } else {
        Kind::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> CaseId {
        "IR-1".parse().unwrap()
    }

    fn account() -> AccountId {
        "111122223333".parse().unwrap()
    }

    #[test]
    fn every_key_shape_round_trips_through_kind() {
        let c = case();
        let fp = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            (case_file(&c), Kind::CaseFile),
            (custody_record(&c, 42), Kind::Custody(42)),
            (evidence(&c, &account(), "i-0abc", "state.json").unwrap(), Kind::Evidence),
            (evidence(&c, &account(), "i-0abc", "vol-0def/image.raw").unwrap(), Kind::Evidence),
            (manifest(&c), Kind::Manifest),
            (public_key(&c, &fp).unwrap(), Kind::PublicKey),
            (report(&c, "html").unwrap(), Kind::Report),
            (journal(&c, "i-0abc/snapshot").unwrap(), Kind::Journal),
            ("cases/IR-1/stray.txt".into(), Kind::Other),
        ];
        for (key, expected) in cases {
            assert!(key.starts_with(&case_prefix(&c)), "{key}");
            assert_eq!(kind(&c, &key), Some(expected), "{key}");
        }
        assert_eq!(kind(&c, "cases/IR-10/case.json"), None);
        assert_eq!(custody_record(&c, 7), "cases/IR-1/custody/0000000007.json");
        assert_eq!(custody_seq(&c, "cases/IR-1/custody/42.json"), None);
        assert_eq!(public_key_fingerprint(&c, &public_key(&c, &fp).unwrap()), Some(fp));
        assert_eq!(case_of_case_file("cases/IR-1/case.json"), Some(c));
        assert_eq!(case_of_case_file("cases/a/b/case.json"), None);
    }

    #[test]
    fn evidence_keys_allow_one_sub_folder_and_check_every_segment() {
        let c = case();
        let key = evidence(&c, &account(), "i-0abc", "vol-0def/image.raw").unwrap();
        assert_eq!(key, "cases/IR-1/evidence/111122223333/i-0abc/vol-0def/image.raw");
        for (subject, name, field) in [
            ("i-0abc", "a/b/c.raw", "name"),
            ("i-0abc", "../x.json", "name"),
            ("i-0abc", "vol-0def/..", "name"),
            ("i-0abc", "vol-0def/", "name"),
            ("i-0abc", "/x", "name"),
            ("i-0abc", "x y", "name"),
            ("i-0abc", "x\u{202e}y", "name"),
            ("i-0abc", "x\\y", "name"),
            ("..", "x.json", "subject"),
            ("i-0abc/vol", "x.json", "subject"),
            ("", "x.json", "subject"),
        ] {
            let err = evidence(&c, &account(), subject, name).unwrap_err();
            assert_eq!(err.field, field, "{subject:?} {name:?}: {err}");
        }
        assert!(evidence(&c, &account(), &"a".repeat(201), "x").is_err());
    }

    #[test]
    fn public_key_names_come_only_from_well_formed_fingerprints() {
        let c = case();
        assert_eq!(public_key(&c, "sha256:../../x"), None);
        assert_eq!(public_key(&c, &format!("sha256:{}", "AB".repeat(32))), None);
        assert_eq!(public_key_fingerprint(&c, "cases/IR-1/keys/abc.pem"), None);
        assert!(journal(&c, "a/b/c").is_err());
        assert!(report(&c, "../x").is_err());
    }
}
