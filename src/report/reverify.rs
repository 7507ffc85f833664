//! The commands that re-verify the evidence with standard tools: the AWS CLI,
//! `sha256sum`/`sha1sum`/`md5sum`, `jq` and `openssl` with the public key exported from
//! KMS. Every value pasted into a command is first checked against the form it must
//! have (bucket name, case id, an S3 key of this case, version id, digest, key ARN,
//! base64) and then shell-quoted; a value of any other form leaves its commands out,
//! saying why. Each command that prints something says what it must print
//! (`# expected: ...`).

use serde::Serialize;

use super::model::{Item, Report};
use crate::evidence::checkpoint::CHECKPOINT_PURPOSE;
use crate::evidence::custody::canonical;
use crate::evidence::layout;
use crate::evidence::signing::Signed;
use crate::ids::{BucketName, CaseId, KmsKeyArn};

/// Longest base64 signature accepted in a command: a DER ECDSA P-256 signature is
/// at most 72 bytes (96 base64 characters); 1,024 leaves room for any key we accept.
const MAX_BASE64: usize = 1024;
/// Longest S3 version id accepted (S3 writes 32; the lab writes UUIDs).
const MAX_VERSION_ID: usize = 1024;

/// The file the public key is written to by the first step, used by every `openssl`.
pub const PUBLIC_KEY_FILE: &str = "signing-key.pem";

/// One step of the case-wide verification: why, and the commands (may be empty).
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub why: String,
    pub commands: String,
}

/// `'value'` for a POSIX shell: the value can hold nothing the shell acts on.
pub fn sh(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Characters every value pasted into a command is limited to (on top of its form).
pub fn plain(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/+=@,-".contains(&b))
}

/// `<algorithm>:` and `hex_len` lowercase hex digits; the hex.
fn hex_digest<'a>(value: &'a str, algorithm: &str, hex_len: usize) -> Option<&'a str> {
    let hex = value.strip_prefix(algorithm)?.strip_prefix(':')?;
    (hex.len() == hex_len && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then_some(hex)
}

pub fn sha256_hex(value: &str) -> Option<&str> {
    hex_digest(value, "sha256", 64)
}

/// An S3 version id as S3 writes them: URL-safe characters.
fn is_version_id(value: &str) -> bool {
    value.len() <= MAX_VERSION_ID && plain(value)
}

/// An evidence key of this case, of the shape `layout` builds.
fn is_evidence_key(case: &CaseId, key: &str) -> bool {
    plain(key) && layout::kind(case, key) == Some(layout::Kind::Evidence)
}

fn is_base64(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_BASE64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
}

/// The case and bucket of the report, when both have their form.
fn case_and_bucket(r: &Report) -> Option<(CaseId, BucketName)> {
    Some((r.case.parse().ok()?, r.bucket.parse().ok()?))
}

/// The local file name for item `number`: `item-03-userdata.bin`, or `item-03` when
/// the item's name is not a plain file name.
fn file_name(item: &Item) -> String {
    let last = item.item.name.rsplit('/').next().unwrap_or("");
    if layout::check_segment("name", last).is_ok() && !last.starts_with('-') {
        format!("item-{:02}-{last}", item.number)
    } else {
        format!("item-{:02}", item.number)
    }
}

/// The commands that re-verify one item, or why there are none.
pub fn item_commands(r: &Report, item: &Item) -> (Vec<String>, Option<String>) {
    let Some((case, bucket)) = case_and_bucket(r) else {
        return (vec![], Some("the case id or the bucket name is not of its form".into()));
    };
    let i = &item.item;
    let version = i.version_id.as_deref().filter(|v| is_version_id(v));
    let digests = (sha256_hex(&i.sha256), hex_digest(&i.sha1, "sha1", 40), hex_digest(&i.md5, "md5", 32));
    let (Some(version), true, (Some(sha256), Some(sha1), Some(md5))) =
        (version, is_evidence_key(&case, &i.s3_key), digests)
    else {
        return (vec![], Some("its S3 key, version id or digests are not of the form they must have".into()));
    };
    // Shell variables keep each value in one place, quoted once.
    let mut lines = vec![
        format!("b={} k={} v={} f={}", sh(bucket.as_str()), sh(&i.s3_key), sh(version), sh(&file_name(item))),
        format!(
            "aws s3api get-object --bucket \"$b\" --key \"$k\" --version-id \"$v\" \"$f\" --query VersionId --output text   # expected: {version}"
        ),
        format!("sha256sum \"$f\"   # expected: {sha256}"),
        format!("sha1sum \"$f\"     # expected: {sha1}"),
        format!("md5sum \"$f\"      # expected: {md5}"),
    ];
    let lock = match (&i.lock_mode, &i.retain_until) {
        (Some(mode), Some(until)) if plain(until) => format!("{mode} (retain until {until})"),
        (Some(mode), _) => format!("{mode}"),
        _ => "the bucket's default mode".into(),
    };
    lines.push(format!(
        "aws s3api get-object-retention --bucket \"$b\" --key \"$k\" --version-id \"$v\" --query Retention.Mode --output text   # expected: {lock}"
    ));
    let Some(rec) = &item.recorded_in else {
        return (lines, Some("no custody record of it was found".into()));
    };
    let record_version = rec.version_id.as_deref().filter(|v| is_version_id(v));
    let (Some(record_version), true, Some(record_hash)) =
        (record_version, rec.key == layout::custody_record(&case, rec.seq), sha256_hex(&rec.hash))
    else {
        return (lines, Some("its custody record's key, version id or hash is not of its form".into()));
    };
    lines.push(format!(
        "rk={} rv={} r={}",
        sh(&rec.key),
        sh(record_version),
        sh(&format!("record-{:010}.json", rec.seq))
    ));
    lines.push(format!(
        "aws s3api get-object --bucket \"$b\" --key \"$rk\" --version-id \"$rv\" \"$r\" --query VersionId --output text   # expected: {record_version}"
    ));
    lines.push(format!(
        "jq -r .details.item.sha256 \"$r\"   # expected: {} (the custody record names the item's digest)",
        i.sha256
    ));
    lines.push(format!(
        "jq -cS 'del(.hash, .signature)' \"$r\" | tr -d '\\n' | sha256sum   # expected: {record_hash} (the record's own hash)"
    ));
    match rec.signature.as_deref().filter(|s| is_base64(s)) {
        Some(_) if r.signing_key.is_some() => {
            let signed = String::from_utf8(canonical(&Signed::record(&case, rec.seq, &rec.hash)))
                .expect("canonical JSON is UTF-8");
            lines.push("jq -r .signature.value \"$r\" | base64 -d > \"$r.sig\"".to_owned());
            lines.push(format!(
                "printf '%s' {} | openssl dgst -sha256 -verify {PUBLIC_KEY_FILE} -signature \"$r.sig\"   # expected: Verified OK",
                sh(&signed)
            ));
            (lines, None)
        }
        Some(_) => (lines, Some("the record is signed, but by no key of the form expected".into())),
        None if rec.signature.is_some() => {
            (lines, Some("its custody record's signature is not of the form it must have".into()))
        }
        None => (lines, Some("its custody record is not signed: it proves integrity only".into())),
    }
}

/// The case-wide steps: the public key, the versions, the whole case offline, the
/// checkpoint.
pub fn case_steps(d: &Report) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut omitted: Vec<String> = Vec::new();
    let step = |why: String, commands: String| Step { why, commands };
    let Some((case, bucket)) = case_and_bucket(d) else {
        steps.push(step(
            format!(
                "The evidence store ({}) or the case id ({}) does not have the form of an S3 bucket name and a case id: no commands are given for it. Ask the examiner where the evidence is.",
                d.bucket, d.case
            ),
            String::new(),
        ));
        return steps;
    };
    let (b, c) = (sh(bucket.as_str()), sh(case.as_str()));
    let key_arn = d
        .signing_key
        .as_ref()
        .filter(|k| sha256_hex(&k.public_key_sha256).is_some() && plain(&k.key_id))
        .and_then(|k| k.key_id.parse::<KmsKeyArn>().ok().map(|arn| (arn, k.public_key_sha256.clone())));
    match &key_arn {
        Some((arn, fingerprint)) => steps.push(step(
            format!(
                "Get the signing key's public key from AWS KMS (not from the case: whoever can write the case could replace the copy in it) and check its fingerprint (expected {fingerprint}). Every openssl command below uses it.",
            ),
            format!(
                "aws kms get-public-key --key-id {} --query PublicKey --output text | base64 -d > signing-key.der\nopenssl pkey -pubin -inform DER -in signing-key.der -out {PUBLIC_KEY_FILE}\nsha256sum signing-key.der   # expected: {}",
                sh(arn.as_str()),
                fingerprint.trim_start_matches("sha256:")
            ),
        )),
        None if d.signing_key.is_some() => {
            omitted.push("the signing key: its id or fingerprint is not of the expected form".into());
        }
        None => {}
    }
    if !d.items.is_empty() {
        steps.push(step(
            "Check each evidence item with the commands printed under it in the evidence section: download it by its version id, compare its SHA-256, SHA-1 and MD5, check its Object Lock, and check the signed custody record that recorded its digest.".into(),
            String::new(),
        ));
    }
    steps.push(step(
        "Check that no newer version or delete marker was added over any evidence key or custody record: every key must list exactly one version (the report itself and the manifest are rewritten as new versions by design).".into(),
        format!("aws s3api list-object-versions --bucket {b} --prefix {}", sh(&layout::case_prefix(&case))),
    ));
    let prefix = sh(&format!("s3://{bucket}/{}", layout::case_prefix(&case)));
    steps.push(step(
        "Download the whole case and let cleanroom (or your own script) re-check every digest, the custody chain and every record's signature offline: each custody record's \"hash\" is the SHA-256 of its RFC 8785 canonical JSON without the \"hash\" and \"signature\" fields, each \"prev\" is the previous record's \"hash\", and each \"signature\" is an ECDSA P-256 signature over the canonical JSON {\"case\",\"hash\",\"purpose\":\"cleanroom.custody-record/1\",\"seq\"}.".into(),
        format!(
            "aws s3 cp --recursive {prefix} {dir}\ncleanroom verify --case {c} --dir {dir}{key}",
            dir = sh(&format!("./{case}/")),
            key = if key_arn.is_some() { format!(" --public-key {PUBLIC_KEY_FILE}") } else { String::new() }
        ),
    ));
    if let Some(cp) = &d.checkpoint {
        let s = &cp.signed;
        let well_formed = s.purpose == CHECKPOINT_PURPOSE
            && s.case == case.as_str()
            && sha256_hex(&s.hash).is_some()
            && is_base64(&cp.signature)
            && sha256_hex(&cp.public_key_sha256).is_some();
        if well_formed && key_arn.is_some() {
            let signed = String::from_utf8(canonical(s)).unwrap_or_default();
            steps.push(step(
                format!(
                    "Verify the signed checkpoint over custody records 1 to {} with the public key from KMS alone ({}; key {}).",
                    s.seq, cp.public_key_sha256, cp.key_id
                ),
                format!(
                    "printf '%s' {} > checkpoint.json\nprintf '%s' {} | base64 -d > checkpoint.sig\nopenssl dgst -sha256 -verify {PUBLIC_KEY_FILE} -signature checkpoint.sig checkpoint.json   # expected: Verified OK",
                    sh(&signed),
                    sh(&cp.signature)
                ),
            ));
        } else if !well_formed {
            omitted.push("the checkpoint: its statement or signature is not of the expected form".into());
        }
    }
    if !omitted.is_empty() {
        steps.push(step(
            format!(
                "Commands left out because a value is not of the form it must have (investigate these): {}.",
                omitted.join("; ")
            ),
            String::new(),
        ));
    }
    steps
}

pub const CERTIFICATION: &str = "I, [NAME], declare under penalty of perjury under the laws of the United States that the following is true and correct:

1. I am [TITLE] at [ORGANISATION]. I am qualified by [TRAINING AND EXPERIENCE] to authenticate electronic evidence by a process of digital identification.
2. The evidence items listed in this report (case [CASE]) were acquired on the dates and by the methods recorded in its chain-of-custody log. At acquisition, the SHA-256, SHA-1 and MD5 hash values of each item were computed as the bytes were read and recorded in the manifest.
3. On [DATE OF COMPARISON], I [or: the process described in this report] retrieved each item from the storage location listed and computed its SHA-256 hash value again. Each recomputed hash value matches the value recorded at acquisition, which establishes that the item is an exact copy of the data acquired.
4. The items have been stored in Amazon S3 with Object Lock retention in COMPLIANCE mode, under which no user, including the account's administrators, can modify or delete a stored object version before its retention date.
5. This certification is made under Federal Rules of Evidence 902(14) (and 902(13) as to the process that produced the records), and the proponent will give the adverse party reasonable written notice and make the records and this certification available for inspection, as Rule 902(11) requires.

Executed on [DATE] at [PLACE].

______________________________
[NAME]";

/// The certification template with the case id (only a valid id: the template is
/// printed inside a code block).
pub fn certification(d: &Report) -> String {
    let case = d.case.parse::<CaseId>().map(|c| c.to_string()).unwrap_or_else(|_| "[CASE]".into());
    CERTIFICATION.replace("[CASE]", &case)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::build_at;
    use crate::report::model::fixtures;
    use crate::report::sources::Sources;

    fn report() -> Report {
        let mut case = fixtures::case();
        // Signed records, as a case with a signing key writes them.
        for r in case.records.iter_mut().filter_map(|r| r.record.as_mut()) {
            r.signature = Some(crate::evidence::custody::RecordSignature {
                key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd".into(),
                public_key_sha256: fixtures::hex('f'),
                algorithm: "ECDSA_SHA_256".into(),
                value: "MEUCIQ==".into(),
                request_id: None,
            });
        }
        build_at(&case, &Sources::default(), "t".into())
    }

    #[test]
    fn shell_quoting_keeps_any_value_one_inert_word() {
        assert_eq!(sh("plain"), "'plain'");
        assert_eq!(sh("it's $(reboot)"), "'it'\\''s $(reboot)'");
    }

    #[test]
    fn item_commands_quote_values_of_the_expected_form_and_say_what_they_print() {
        let r = report();
        let item = r.items.iter().find(|i| i.item.name == "userdata.bin").unwrap();
        assert_eq!(item.commands_note, None, "{:?}", item.commands);
        let all = item.commands.join("\n");
        assert!(
            all.starts_with(&format!(
                "b='acme-evidence' k='{}' v='v1.abc_DEF' f='item-02-userdata.bin'",
                item.item.s3_key
            )),
            "{all}"
        );
        assert!(all.contains(&format!("sha256sum \"$f\"   # expected: {}", "a".repeat(64))), "{all}");
        assert!(all.contains(&format!("md5sum \"$f\"      # expected: {}", "5".repeat(32))), "{all}");
        assert!(all.contains("# expected: COMPLIANCE (retain until 2026-12-22T05:44:02.000Z)"), "{all}");
        assert!(
            all.contains("rk='cases/IR-1/custody/0000000002.json' rv='rv2' r='record-0000000002.json'"),
            "{all}"
        );
        assert!(all.contains(&format!(
            "printf '%s' '{{\"case\":\"IR-1\",\"hash\":\"{}\",\"purpose\":\"cleanroom.custody-record/1\",\"seq\":2}}' | openssl dgst -sha256 -verify signing-key.pem -signature \"$r.sig\"   # expected: Verified OK",
            fixtures::hex('c')
        )), "{all}");
    }

    #[test]
    fn a_value_not_of_its_form_leaves_its_commands_out_and_says_why() {
        for (key, version) in [
            ("cases/IR-1/evidence/444455556666/i-0123456789abcdef0/$(reboot)", "v1"),
            ("cases/IR-2/evidence/444455556666/i-0123456789abcdef0/x.json", "v1"),
            ("cases/IR-1/evidence/444455556666/i-0123456789abcdef0/x.json", "v1'; reboot; '"),
            ("cases/IR-1/evidence/444455556666/i-0123456789abcdef0/x.json", "v1\nreboot"),
        ] {
            let mut r = report();
            let mut item = r.items.remove(0);
            item.item.s3_key = key.into();
            item.item.version_id = Some(version.into());
            let (commands, note) = item_commands(&r, &item);
            assert!(commands.is_empty(), "{key:?} {version:?}: {commands:?}");
            assert!(note.unwrap().contains("not of the form"), "{key:?}");
        }
        let mut r = report();
        r.bucket = "Bad Bucket`x`".into();
        assert!(case_steps(&r).iter().all(|s| s.commands.is_empty()));
        let (commands, _) = item_commands(&r, &r.items[0]);
        assert!(commands.is_empty());
    }

    #[test]
    fn case_steps_fetch_the_key_from_kms_and_verify_offline_with_it() {
        let steps = case_steps(&report());
        let all: String = steps.iter().map(|s| s.commands.as_str()).collect::<Vec<_>>().join("\n");
        assert!(all.starts_with(
            "aws kms get-public-key --key-id 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd' --query PublicKey --output text | base64 -d > signing-key.der"
        ), "{all}");
        assert!(
            all.contains("aws s3api list-object-versions --bucket 'acme-evidence' --prefix 'cases/IR-1/'"),
            "{all}"
        );
        assert!(
            all.contains("cleanroom verify --case 'IR-1' --dir './IR-1/' --public-key signing-key.pem"),
            "{all}"
        );
    }

    #[test]
    fn the_case_in_the_certification_is_the_checked_id() {
        let mut r = report();
        r.case = "IR-1```\n<b>".into();
        let text = certification(&r);
        assert!(!text.contains("<b>") && text.contains("case [CASE]"), "{text}");
    }
}
