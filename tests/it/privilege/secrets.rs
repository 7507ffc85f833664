//! Credentials stay out of logs and custody records (issue "Trust" 11).

use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::store::{ObjectStore, get_all};
use cleanroom::lab::scenario;
use serde_json::json;

use super::support::run_against;
use crate::support::*;

/// moto's session tokens start with this (moto/sts/utils.py `SESSION_TOKEN_PREFIX`).
const MOTO_SESSION_TOKEN_PREFIX: &str = "FQoGZXIvYXdzEBYaD";

// At trace level the SDK prints every request (Authorization: ... Signature=...,
// X-Amz-Security-Token) and every response (STS AssumeRole's SecretAccessKey and
// SessionToken); -vv and CLEANROOM_LOG=trace must print none of it.
#[tokio::test]
async fn the_most_verbose_logs_print_no_signature_secret_or_session_token() {
    let f = Forensics::seed().await;
    let config = f.config_path.to_str().unwrap().to_owned();
    for (env, flags) in
        [("trace", vec!["-vv"]), ("trace,aws_smithy_runtime=trace,aws_sigv4=trace,aws_config=trace", vec![])]
    {
        let mut args = flags.clone();
        args.extend(["--config", &config, "preflight"]);
        let run = run_against(lab(), std::path::Path::new("."), &args, &[("CLEANROOM_LOG", env)]);
        run.success();
        let stderr = run.stderr();
        // The filter did turn logging up: the SDK's own debug lines are there.
        assert!(stderr.contains("DEBUG") && stderr.lines().count() > 100, "{stderr}");
        for secret in [
            cleanroom::lab::SECRET_KEY,
            MOTO_SESSION_TOKEN_PREFIX,
            "Signature=",
            "x-amz-security-token",
            "X-Amz-Security-Token",
            "<SecretAccessKey>",
            "<SessionToken>",
        ] {
            assert!(!stderr.contains(secret), "CLEANROOM_LOG={env} {flags:?} printed {secret:?}");
        }
    }
}

// An error text can carry a secret (a failed credential process quotes its stderr, a
// proxy echoes a header): containment_failed records the error, and a custody record is
// locked for years and handed to the other side. The secret must not be in it.
#[tokio::test]
async fn a_secret_in_an_error_does_not_reach_a_custody_record() {
    let f = Forensics::seed().await;
    let work = tempfile::tempdir().unwrap();
    let member = unique_account();
    let suspect = scenario::cryptomining(lab(), &member, &region(), &f.account, work.path()).await.unwrap();
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
    let token = format!("{MOTO_SESSION_TOKEN_PREFIX}zYWx0ZWRfdG9rZW5fZm9yX3Rlc3Rpbmc=");
    // Every DisassociateIamInstanceProfile in the suspect's account (a call without
    // DryRun, so containment starts) fails with a message quoting a credential process's
    // output: cutting the credentials fails, and containment_failed records the error.
    lab()
        .admin(
            reqwest::Method::POST,
            &format!("/_lab/faults?region={REGION}"),
            Some(&member),
            Some(json!({
                "service": "ec2", "action": "DisassociateIamInstanceProfile", "code": "InvalidParameterValue", "status": 400,
                "times": null,
                "message": format!("proxy said: credential_process returned {{\"Version\": 1, \"AccessKeyId\": \"ASIAEXAMPLE\", \"SecretAccessKey\": \"{secret}\", \"SessionToken\": \"{token}\"}}"),
            })),
        )
        .await
        .unwrap();
    let case = "IR-PRIV-SECRET";
    let run = f.cleanroom(&["isolate", &suspect.arn(), "--case", case]);
    assert_ne!(run.code(), 0, "containment cannot succeed: {}", run.stdout());

    let store = S3Store::new(f.clients().s3, f.config.forensics.evidence_bucket.clone());
    let keys = store.list(&format!("cases/{case}/custody/")).await.unwrap();
    let mut failed = 0;
    for key in &keys {
        let text = String::from_utf8(get_all(&store, key, None, 1 << 20).await.unwrap().to_vec()).unwrap();
        assert!(!text.contains(secret) && !text.contains(&token), "{key} holds the secret:\n{text}");
        if text.contains("\"containment_failed\"") {
            failed += 1;
            // The error reached the record, with its secrets taken out.
            assert!(
                text.contains("DisassociateIamInstanceProfile") && text.contains("[REDACTED]"),
                "{key}:\n{text}"
            );
        }
    }
    assert!(
        failed > 0,
        "no containment_failed record among {keys:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.stdout(),
        run.stderr()
    );
    for out in [run.stdout(), run.stderr()] {
        assert!(!out.contains(secret) && !out.contains(&token), "printed the secret:\n{out}");
    }
}

// A credential process that fails prints what it has on stderr, and the SDK quotes that
// stderr in its error: the error reaches the terminal (a failed check's detail) and the
// SDK's debug log. Neither may show the secret.
#[tokio::test]
async fn a_failing_credential_process_does_not_print_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "cpSecretwJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLE";
    let script = dir.path().join("creds.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho \"vault: lease expired for aws_secret_access_key={secret} token {secret}\" >&2\nexit 1\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!("[profile vault]\ncredential_process = {}\nregion = {REGION}\n", script.display()),
    )
    .unwrap();
    let f = Forensics::seed().await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cleanroom"));
    cmd.args(["-vv", "--profile", "vault", "--config", f.config_path.to_str().unwrap(), "preflight"])
        .env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    // The lab's endpoint and no other source of credentials than the profile.
    for (k, v) in lab().env(REGION) {
        if !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET") && k != "AWS_CONFIG_FILE" {
            cmd.env(k, v);
        }
    }
    cmd.env("AWS_CONFIG_FILE", &config);
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "preflight cannot pass without credentials:\n{stdout}");
    // The failure is explained (the SDK's own words), without what the process printed.
    assert!(
        stdout.contains("external process exited") || stderr.contains("external process exited"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "printed the secret:\n{stdout}\n--- stderr\n{stderr}"
    );
}
