//! Support for the privilege tests: the templates read as the lab reads them, and a lab
//! of their own that evaluates IAM identity policies, with cleanroom's roles deployed
//! from the templates into it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use cleanroom::config::Config;
use cleanroom::ids::AccountId;
use cleanroom::lab::scenario::{self, Suspect};
use cleanroom::lab::{HOME_ACCOUNT, Lab, LabOptions, seed};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, RwLock};

use crate::support::{REGION, region, unique_account, unique_bucket};

pub const MEMBER_TEMPLATE: &str = "cloudformation/member-account.yaml";
pub const FORENSICS_TEMPLATE: &str = "cloudformation/forensics-account.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cfn(args: &[&str]) -> Value {
    let python = cleanroom::lab::lab_dir().join(".venv/bin/python");
    let script = repo().join("tests/it/privilege/cfn.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} (lab/bootstrap.sh installs it): {e}", python.display()));
    assert!(out.status.success(), "cfn.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A template as JSON, short tags (`!Sub`) in their long forms (`{"Fn::Sub": ...}`).
pub fn template(path: &str) -> Value {
    static CACHE: OnceLock<Mutex<HashMap<String, Value>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap().get(path) {
        return t.clone();
    }
    let t = cfn(&["template", path]);
    cache.lock().unwrap().insert(path.to_owned(), t.clone());
    t
}

/// One resource property of a template with every intrinsic resolved, as the lab
/// resolves them for roles-from-template.
pub fn resolved(
    path: &str,
    logical: &str,
    property: &str,
    account: &AccountId,
    parameters: &Value,
    resources: &Value,
) -> Value {
    cfn(&[
        "resolve",
        path,
        logical,
        property,
        account.as_str(),
        REGION,
        &parameters.to_string(),
        &resources.to_string(),
    ])
}

/// The lab of the privilege tests, with `iam_enforce` on: its own process, so the shared
/// lab of the other tests stays permissive.
pub async fn enforcing() -> &'static Lab {
    static LAB: OnceCell<Lab> = OnceCell::const_new();
    LAB.get_or_init(|| async {
        crate::support::lab(); // sets AWS_EC2_METADATA_DISABLED for this process first
        Lab::start(&LabOptions::default()).expect("the lab starts (lab/bootstrap.sh installs it)")
    })
    .await
}

/// Seeding runs with enforcement off (the scenario's attacker launches with a key whose
/// user has no policy); every test that runs cleanroom holds the gate shared, with
/// enforcement on.
static GATE: RwLock<()> = RwLock::const_new(());

async fn set_enforcement(lab: &Lab, on: bool) {
    lab.admin(reqwest::Method::POST, "/_lab/config", None, Some(json!({"iam_enforce": on})))
        .await
        .expect("the lab takes the iam_enforce option");
}

/// Runs `seeding` with IAM enforcement off and nobody running cleanroom.
pub async fn unenforced<T>(seeding: impl std::future::Future<Output = T>) -> T {
    let lab = enforcing().await;
    let _exclusive = GATE.write().await;
    set_enforcement(lab, false).await;
    let out = seeding.await;
    set_enforcement(lab, true).await;
    out
}

/// Holds enforcement on for as long as the guard lives.
pub async fn enforced() -> tokio::sync::RwLockReadGuard<'static, ()> {
    let guard = GATE.read().await;
    // Idempotent, and it repairs a seeding that panicked with enforcement off.
    set_enforcement(enforcing().await, true).await;
    guard
}

/// Deploys `role` of `template` into `account` of the enforcing lab, as the template
/// defines it (roles-from-template); returns the lab's answer (the documents created).
pub async fn deploy(
    template: &str,
    role: &str,
    account: &AccountId,
    parameters: &Value,
    resources: &Value,
) -> Value {
    enforcing()
        .await
        .admin(
            reqwest::Method::POST,
            &format!("/_lab/accounts/{account}/roles-from-template?region={REGION}"),
            None,
            Some(
                json!({"template": template, "role": role, "parameters": parameters, "resources": resources}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("deploying {role} of {template}: {e}"))
}

/// Why the enforcing lab refused calls in `accounts`, one line each, for a failure
/// message: the missing permission is then named in the test's output.
pub async fn denials(accounts: &[&AccountId]) -> String {
    let all = enforcing()
        .await
        .admin(reqwest::Method::GET, "/_lab/iam-enforce/denials", None, None)
        .await
        .expect("denials");
    let lines: Vec<String> = all["denials"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| accounts.iter().any(|a| d["account"] == a.as_str()))
        .map(|d| {
            format!(
                "  {} {} on {} ({}; {}{})",
                d["principal"].as_str().unwrap_or("?"),
                d["action"].as_str().unwrap_or("?"),
                d["resource"].as_str().unwrap_or("?"),
                d["operation"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or("?"),
                if d["dry_run"] == true { ", DryRun" } else { "" },
            )
        })
        .collect();
    if lines.is_empty() { "  (none)".into() } else { lines.join("\n") }
}

pub fn responder_principal() -> String {
    format!("arn:aws:iam::{HOME_ACCOUNT}:root")
}

/// A forensics account and a suspect's member account, both holding the templates'
/// roles and keys, in the enforcing lab.
pub struct World {
    pub lab: &'static Lab,
    pub forensics: AccountId,
    pub config: Config,
    pub suspect: Suspect,
    pub member_parameters: Value,
    pub member_resources: Value,
    /// Holds the configuration file and the scenario's disk image.
    pub _dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl World {
    pub async fn seed() -> Self {
        let lab = enforcing().await;
        let forensics = unique_account();
        let member = unique_account();
        let bucket = unique_bucket("privilege");
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().to_owned();
        let (seeded, suspect) = unenforced(async {
            let seeded = seed::forensics_account(lab, &forensics, &region(), &bucket, 1)
                .await
                .expect("forensics account");
            let suspect =
                scenario::cryptomining(lab, &member, &region(), &forensics, &work).await.expect("scenario");
            (seeded, suspect)
        })
        .await;
        let config = seeded.config;
        let handoff_key = lab
            .clients(&member, &region())
            .kms
            .describe_key()
            .key_id(seed::HANDOFF_ALIAS)
            .send()
            .await
            .unwrap()
            .key_metadata()
            .and_then(|m| m.arn())
            .unwrap()
            .to_owned();

        // The tooling image carries the tag the forensics role's RunInstances asks for
        // (moto 5.2.5 drops RegisterImage's TagSpecifications, so the seed's is lost).
        if let cleanroom::config::AmiSource::Id(ami) = &config.analysis.ami {
            lab.clients(&forensics, &region())
                .ec2
                .create_tags()
                .resources(ami.as_str())
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("cleanroom:role")
                        .value("forensic-tooling")
                        .build(),
                )
                .send()
                .await
                .expect("tag the tooling image");
        }

        // The forensics account's roles, exactly as its template defines them.
        let forensics_parameters = json!({
            "ResponderPrincipalArn": responder_principal(),
            "MemberAccountIds": member.as_str(),
            "EvidenceBucketName": bucket.as_str(),
            "S3PrefixListId": "pl-00000000",
        });
        let forensics_resources = json!({
            "EvidenceKey": {"Arn": config.forensics.kms_key_arn.as_str()},
            "SigningKey": {"Arn": config.forensics.signing_key_arn.as_ref().unwrap().as_str()},
            "AnalysisSubnet": config.analysis.subnet_id.as_str(),
            "AnalysisSecurityGroup": config.analysis.security_group_id.as_str(),
        });
        deploy(FORENSICS_TEMPLATE, "ForensicsRole", &forensics, &forensics_parameters, &forensics_resources)
            .await;
        deploy(FORENSICS_TEMPLATE, "AnalysisRole", &forensics, &forensics_parameters, &forensics_resources)
            .await;

        // The member account's role, and its hand-off key under the template's key policy.
        let member_parameters =
            json!({"ResponderPrincipalArn": responder_principal(), "ForensicsAccountId": forensics.as_str()});
        let member_resources = json!({"HandOffKey": {"Arn": handoff_key}});
        deploy(MEMBER_TEMPLATE, "ResponderRole", &member, &member_parameters, &member_resources).await;
        let key_policy = resolved(
            MEMBER_TEMPLATE,
            "HandOffKey",
            "KeyPolicy",
            &member,
            &member_parameters,
            &member_resources,
        );
        lab.clients(&member, &region())
            .kms
            .put_key_policy()
            .key_id(&handoff_key)
            .policy_name("default")
            .policy(key_policy.to_string())
            .send()
            .await
            .expect("the template's hand-off key policy");

        let config_path = dir.path().join("cleanroom.toml");
        std::fs::write(&config_path, seed::config_toml(&config)).unwrap();
        Self { lab, forensics, config, suspect, member_parameters, member_resources, _dir: dir, config_path }
    }

    pub fn member(&self) -> &AccountId {
        &self.suspect.account
    }

    /// `cleanroom --config <this world> <args>` against the enforcing lab, as the lab's
    /// home account (whose root the templates' trust policies name): every call it
    /// makes in the two accounts goes through the templates' roles.
    pub fn cleanroom(&self, args: &[&str]) -> crate::support::Run {
        let mut all = vec!["--config", self.config_path.to_str().unwrap()];
        all.extend_from_slice(args);
        run_against(self.lab, Path::new("."), &all, &[])
    }

    /// Fails with the run's output and the lab's denial reasons unless it exited `code`.
    pub async fn expect(&self, run: &crate::support::Run, code: i32) {
        if run.code() != code {
            let why = denials(&[&self.forensics, self.member()]).await;
            panic!(
                "cleanroom {:?} exited {} (expected {code})\n--- IAM denials in the enforcing lab\n{why}\n--- stdout\n{}\n--- stderr\n{}",
                run.args,
                run.code(),
                run.stdout(),
                run.stderr()
            );
        }
    }

    /// Clients acting as `account` in the enforcing lab (not evaluated: seeding, checks).
    pub fn clients(&self, account: &AccountId) -> cleanroom::aws::AccountClients {
        self.lab.clients(account, &region())
    }
}

/// Runs the binary against `lab` with extra environment.
pub fn run_against(lab: &Lab, dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> crate::support::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cleanroom"));
    cmd.current_dir(dir).args(args).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in lab.env(REGION) {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("cleanroom runs");
    crate::support::Run { args: args.iter().map(|s| s.to_string()).collect(), output }
}
