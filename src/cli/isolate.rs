//! `cleanroom isolate`: the containment stages of acquire, alone. Owns its arguments,
//! resolves instances (ids, ARNs in other accounts, tag filters) to the account and
//! region that hold them, runs the fleet workflow and prints one row per instance, the
//! containment table of each, then every failure at the end.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cloud::Cloud;
use crate::error::{Error, ExitKind, Result};
use crate::ids::{AccountId, CaseId, InstanceId, InstanceRef, Region};
use crate::isolate::workflow::{Outcome, Scope, Settings, Status, isolate};
use crate::pipeline::custody::{CaseCustody, CustodySink, OpeningCase, ReadOnlyCase};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Instances: ids (in --region, in the caller's account) or ARNs
    /// arn:aws:ec2:REGION:ACCOUNT:instance/ID (other accounts through the member role).
    #[arg(value_name = "INSTANCE")]
    pub instances: Vec<String>,
    /// The case every action is recorded under.
    #[arg(long)]
    pub case: CaseId,
    /// Also every running or stopped instance with this tag, in the caller's account and
    /// region (repeatable; all must match).
    #[arg(long = "filter", value_name = "tag:KEY=VALUE")]
    pub filters: Vec<String>,
    /// Print every API call it would make, change nothing (not even the evidence bucket).
    #[arg(long)]
    pub plan: bool,
    /// Also deny every session of the instance's roles issued before isolation
    /// (aws:TokenIssueTime), set once the profile is gone. Cuts every other instance and
    /// service using the role: `--plan` lists them.
    #[arg(long)]
    pub revoke_all_role_sessions: bool,
    /// Lower every ENI's connection tracking timeouts to the minimum (TCP established
    /// 60 s, UDP stream 60 s, UDP 30 s), so connections that stay tracked after the
    /// swap (NAT gateway, NLB, PrivateLink...) end a minute after going idle. Release
    /// restores the prior timeouts.
    #[arg(long)]
    pub minimal_conntrack_timeouts: bool,
}

/// `tag:KEY=VALUE` -> (KEY, VALUE).
pub fn parse_filter(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .strip_prefix("tag:")
        .and_then(|kv| kv.split_once('='))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("invalid filter {s:?}: expected tag:KEY=VALUE, e.g. tag:Name=web-1"))?;
    Ok((k.to_owned(), v.to_owned()))
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Resolves where each instance lives and builds one scope per (account, region).
pub(crate) async fn resolve(
    aws: &crate::aws::Aws,
    refs: &[InstanceRef],
    default_region: &Region,
) -> Result<Vec<(Arc<Scope>, InstanceId)>> {
    let caller = aws
        .caller_account()
        .await
        .map_err(|e| Error::refused(format!("cannot identify the caller's account: {e}")))?
        .ok_or_else(|| Error::refused("cannot identify the caller's account"))?;
    let mut scopes: HashMap<(AccountId, Region), Arc<Scope>> = HashMap::new();
    let mut out = Vec::new();
    for r in refs {
        let account = r.account.clone().unwrap_or_else(|| caller.clone());
        let region = r.region.clone().unwrap_or_else(|| default_region.clone());
        let key = (account.clone(), region.clone());
        let scope = match scopes.get(&key) {
            Some(s) => s.clone(),
            None => {
                let clients = aws
                    .member(Some(&account), &region)
                    .await
                    .map_err(|e| Error::refused(format!("cannot reach account {account}: {e}")))?;
                let cloud: Arc<dyn Cloud> = clients;
                let s = Scope::new(account, region, cloud);
                scopes.insert(key, s.clone());
                s
            }
        };
        out.push((scope, r.id.clone()));
    }
    Ok(out)
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let started = tokio::time::Instant::now();
    let mut refs: Vec<InstanceRef> =
        args.instances.iter().map(|s| s.parse()).collect::<std::result::Result<_, _>>()?;
    let filters: Vec<(String, String)> = args
        .filters
        .iter()
        .map(|f| parse_filter(f))
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::refused)?;
    if refs.is_empty() && filters.is_empty() {
        return Err(Error::refused(
            "no instance named: give instance ids or ARNs, or --filter tag:KEY=VALUE",
        ));
    }
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    let aws = Arc::new(ctx.connect(&config, &format!("isolate-{}", args.case)).await);
    let region = aws.default_region().clone();

    if !filters.is_empty() {
        let clients = aws.caller(&region).await;
        let found = crate::cloud::retry(|| crate::cloud::Ec2::find_instances(clients.as_ref(), &filters))
            .await
            .map_err(|e| Error::failed(format!("finding instances by tag: {e}")))?;
        if found.is_empty() {
            return Err(Error::refused(format!(
                "no running or stopped instance in {region} matches {}",
                args.filters.join(" ")
            )));
        }
        refs.extend(found.into_iter().map(|id| InstanceRef { id, account: None, region: None }));
    }
    refs.dedup();

    // The case opens (STS, KMS, S3) while the instances' accounts are resolved and their
    // state read: the first write to the case is the prior state, after those reads.
    let opened_error = Arc::new(std::sync::Mutex::new(None::<Error>));
    let custody: Arc<dyn CustodySink> = if args.plan {
        // --plan writes nothing, not even case.json: it reads the case as it is stored.
        let store = crate::evidence::evidence_store(&aws, &config).await;
        let case = ReadOnlyCase::open(store, &args.case)
            .await
            .map_err(|e| Error::failed(format!("reading case {}: {e}", args.case)))?;
        Arc::new(case)
    } else {
        let (aws, config, case, slot) =
            (aws.clone(), config.clone(), args.case.clone(), opened_error.clone());
        Arc::new(OpeningCase::start(async move {
            match crate::evidence::open_case(&aws, &config, &case, &examiner).await {
                Ok(c) => Ok(Arc::new(CaseCustody(c)) as Arc<dyn CustodySink>),
                Err(e) => {
                    let message = e.to_string();
                    *slot.lock().expect("open error lock") = Some(e);
                    Err(message)
                }
            }
        }))
    };
    let targets = resolve(&aws, &refs, &region).await?;

    let settings = Settings {
        case: args.case.clone(),
        concurrency: config.limits.instance_concurrency,
        plan_only: args.plan,
        now: now_rfc3339(),
        member_role: config.member.role_name.to_string(),
        started: Some(started),
        controls: crate::isolate::plan::Controls {
            revoke_all_role_sessions: args.revoke_all_role_sessions,
            minimal_conntrack: args.minimal_conntrack_timeouts,
        },
    };
    let outcomes = isolate(&settings, targets, custody, ctx.reporter.clone()).await;
    // A case that did not open stopped every instance before its first change: its
    // error (and exit code) is the answer.
    if let Some(e) = opened_error.lock().expect("open error lock").take() {
        return Err(e);
    }
    ctx.emit(
        &serde_json::json!({"case": args.case, "plan": args.plan, "instances": outcomes}),
        &render(&outcomes, args.plan),
    );
    Ok(exit_kind(&outcomes))
}

pub fn exit_kind(outcomes: &[Outcome]) -> ExitKind {
    if outcomes.iter().any(|o| o.status == Status::Failed) {
        ExitKind::Failed
    } else if outcomes.iter().any(|o| matches!(o.status, Status::Refused | Status::NotStarted)) {
        ExitKind::Refused
    } else {
        ExitKind::Done
    }
}

/// One row per instance, then each instance's containment table (or plan), then every
/// warning and failure at the end.
pub fn render(outcomes: &[Outcome], plan: bool) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.instance.clone(),
                o.account.clone(),
                o.region.clone(),
                o.status.as_str().to_owned(),
                o.message.clone(),
            ]
        })
        .collect();
    let mut out = super::table(&["INSTANCE", "ACCOUNT", "REGION", "RESULT", "DETAIL"], &rows);
    for o in outcomes {
        if plan && !o.plan.is_empty() {
            out.push_str(&format!("\n{} would make these calls, in order:\n", o.instance));
            for (i, c) in o.plan.iter().enumerate() {
                out.push_str(&format!("  {:>2}. {c}\n", i + 1));
            }
        }
        if !o.checks.is_empty() {
            out.push_str(&format!("\ncontainment of {}:\n", o.instance));
            let rows: Vec<Vec<String>> = o
                .checks
                .iter()
                .map(|c| {
                    let state = match (c.warning, c.ok) {
                        (true, _) => "WARNING",
                        (false, true) => "in force",
                        (false, false) => "NOT IN FORCE",
                    };
                    vec![c.control.clone(), state.into(), c.detail.clone()]
                })
                .collect();
            out.push_str(&super::table(&["CONTROL", "STATE", "DETAIL"], &rows));
        }
    }
    let warnings: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.warnings.iter().map(move |w| format!("{}: {w}", o.instance)))
        .collect();
    if !warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in warnings {
            out.push_str(&format!("  {w}\n"));
        }
    }
    let failures: Vec<&Outcome> =
        outcomes.iter().filter(|o| matches!(o.status, Status::Failed | Status::Refused)).collect();
    if !failures.is_empty() {
        out.push_str(&format!("\n{} instance(s) not contained:\n", failures.len()));
        for o in failures {
            out.push_str(&format!("  {}: {}\n", o.instance, o.message));
            for e in &o.errors {
                out.push_str(&format!("    - {e}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_are_tag_key_value() {
        assert_eq!(super::parse_filter("tag:Name=web-1").unwrap(), ("Name".into(), "web-1".into()));
        assert_eq!(super::parse_filter("tag:a=b=c").unwrap(), ("a".into(), "b=c".into()));
        for bad in ["Name=web", "tag:=x", "tag:x=", "tag:x"] {
            assert!(super::parse_filter(bad).is_err(), "{bad}");
        }
    }
}
