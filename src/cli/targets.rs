//! Which instances a command acts on, resolved before any change: ids and ARNs, tag
//! filters, and the instances a credential launched (found in CloudTrail in every
//! enabled region). Each is described in its own account and region; an unknown,
//! terminated or non-VPC instance is bad input (exit 2), refused before anything is
//! written or changed. An instance named twice (id and ARN) is one target.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::cloud::{Accounts, Lookup, Side, TrailEvent, retry};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId, InstanceRef, Region};
use crate::pipeline::{Target, TargetState};

/// CloudTrail keeps 90 days of management events.
const HISTORY_DAYS: i64 = 90;
/// Launch events read per credential and region.
const LAUNCH_EVENT_LIMIT: usize = 5000;
/// Regions searched at once. LookupEvents allows 2 calls a second per account and region
/// (CloudTrail quotas), so regions may run side by side; 8 keeps a search of the ~30
/// regions of an account to a few rounds without opening dozens of connections at once.
const REGION_SEARCH_CONCURRENCY: usize = 8;

/// How the user named the instances.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Instances: ids (in --region, in the caller's account) or ARNs
    /// arn:aws:ec2:REGION:ACCOUNT:instance/ID (other accounts through the member role).
    #[arg(value_name = "INSTANCE")]
    pub instances: Vec<String>,
    /// Also every running or stopped instance with this tag, in the caller's account and
    /// region (repeatable; all must match).
    #[arg(long = "filter", value_name = "tag:KEY=VALUE")]
    pub filters: Vec<String>,
    /// Also every instance this access key launched (CloudTrail, every enabled region).
    #[arg(long = "launched-by-key", value_name = "AKIA...")]
    pub launched_by_key: Vec<String>,
    /// Also every instance this IAM user launched: arn:aws:iam::ACCOUNT:user/NAME.
    #[arg(long = "launched-by", value_name = "USER ARN")]
    pub launched_by: Vec<String>,
    /// Accounts searched for --launched-by-key (default: the caller's; an IAM user ARN
    /// names its own).
    #[arg(long = "account", value_name = "ID")]
    pub accounts: Vec<AccountId>,
}

impl TargetArgs {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
            && self.filters.is_empty()
            && self.launched_by_key.is_empty()
            && self.launched_by.is_empty()
    }
}

/// What a credential search found: the launches, as evidence of why each target is one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Launches {
    pub credential: String,
    pub account: AccountId,
    pub regions: Vec<Region>,
    /// (region, instance, event) of every RunInstances the credential made.
    pub launches: Vec<(Region, InstanceId, TrailEvent)>,
    /// Instances it launched that are gone (terminated): nothing left to preserve.
    pub gone: Vec<(Region, InstanceId)>,
}

fn access_key(s: &str) -> Result<String> {
    let ok = (16..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok && (s.starts_with("AKIA") || s.starts_with("ASIA")) {
        Ok(s.to_owned())
    } else {
        Err(Error::refused(format!(
            "invalid access key id {s:?}: expected AKIA or ASIA followed by uppercase letters and digits, e.g. AKIAIOSFODNN7EXAMPLE"
        )))
    }
}

fn user_arn(s: &str) -> Result<(AccountId, String)> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let bad = || {
        Error::refused(format!(
            "invalid IAM user ARN {s:?}: expected arn:aws:iam::<12-digit account>:user/<name>"
        ))
    };
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "iam" {
        return Err(bad());
    }
    let account: AccountId = parts[4].parse().map_err(|_| bad())?;
    let name = parts[5].strip_prefix("user/").ok_or_else(bad)?;
    let name = name.rsplit('/').next().unwrap_or(name);
    if name.is_empty() {
        return Err(bad());
    }
    Ok((account, name.to_owned()))
}

/// Every instance a credential launched in `account`, in every enabled region.
async fn launched_by(
    accounts: &dyn Accounts,
    account: &AccountId,
    home: &Region,
    lookup: Lookup,
    label: &str,
) -> Result<Launches> {
    let side = accounts
        .member(account, home)
        .await
        .map_err(|e| Error::refused(format!("cannot reach account {account}: {e}")))?;
    let regions = retry(|| side.cloud.enabled_regions())
        .await
        .map_err(|e| Error::failed(format!("listing the regions of account {account}: {e}")))?;
    let end = OffsetDateTime::now_utc();
    let start = end - time::Duration::days(HISTORY_DAYS);
    let searched = crate::pipeline::fleet::each(regions.iter().collect(), REGION_SEARCH_CONCURRENCY, |r| {
        let lookup = lookup.clone();
        async move {
            let side = accounts.member(account, r).await?;
            let found = retry(|| side.cloud.lookup_events(&lookup, start, end, LAUNCH_EVENT_LIMIT)).await?;
            Ok::<_, crate::cloud::CloudError>((r.clone(), found.events))
        }
    })
    .await;
    let mut launches = Vec::new();
    for r in searched {
        let (region, events) = r.map_err(|e| {
            Error::failed(format!("searching CloudTrail for {label} in account {account}: {e}"))
        })?;
        for e in events.into_iter().filter(|e| e.event_name == "RunInstances") {
            for res in &e.resources {
                if res.resource_type.as_deref() == Some("AWS::EC2::Instance")
                    && let Some(id) = res.name.as_deref().and_then(|n| n.parse::<InstanceId>().ok())
                {
                    launches.push((region.clone(), id, e.clone()));
                }
            }
        }
    }
    Ok(Launches { credential: label.to_owned(), account: account.clone(), regions, launches, gone: vec![] })
}

/// Resolves every way of naming instances to described, live targets.
pub async fn resolve(
    accounts: &dyn Accounts,
    args: &TargetArgs,
    default_region: &Region,
) -> Result<(Vec<TargetState>, Vec<Launches>)> {
    let caller = accounts
        .caller_account()
        .await
        .map_err(|e| Error::refused(format!("cannot identify the caller's account: {e}")))?;
    let mut refs: Vec<InstanceRef> =
        args.instances.iter().map(|s| s.parse()).collect::<std::result::Result<_, _>>()?;
    let filters: Vec<(String, String)> = args
        .filters
        .iter()
        .map(|f| super::isolate::parse_filter(f))
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::refused)?;
    let keys: Vec<String> = args.launched_by_key.iter().map(|k| access_key(k)).collect::<Result<_>>()?;
    let users: Vec<(AccountId, String)> =
        args.launched_by.iter().map(|u| user_arn(u)).collect::<Result<_>>()?;
    if args.is_empty() {
        return Err(Error::refused(
            "no instance named: give instance ids or ARNs, --filter tag:KEY=VALUE, or --launched-by-key",
        ));
    }
    if !filters.is_empty() {
        let side =
            accounts.member(&caller, default_region).await.map_err(|e| Error::refused(e.to_string()))?;
        let found = retry(|| side.cloud.find_instances(&filters))
            .await
            .map_err(|e| Error::failed(format!("finding instances by tag: {e}")))?;
        if found.is_empty() {
            return Err(Error::refused(format!(
                "no running or stopped instance in {default_region} matches {}",
                args.filters.join(" ")
            )));
        }
        refs.extend(found.into_iter().map(|id| InstanceRef { id, account: None, region: None }));
    }
    let mut searches = Vec::new();
    let search_accounts = if args.accounts.is_empty() { vec![caller.clone()] } else { args.accounts.clone() };
    for key in &keys {
        for account in &search_accounts {
            searches.push(
                launched_by(accounts, account, default_region, Lookup::AccessKeyId(key.clone()), key).await?,
            );
        }
    }
    for (account, name) in &users {
        searches.push(
            launched_by(accounts, account, default_region, Lookup::Username(name.clone()), name).await?,
        );
    }
    // A key belongs to one account, so searching it in several (--account, repeated)
    // finds nothing in the others: only a credential that launched nothing anywhere
    // searched is bad input.
    for s in &searches {
        if searches.iter().filter(|o| o.credential == s.credential).all(|o| o.launches.is_empty()) {
            let accounts: Vec<String> = searches
                .iter()
                .filter(|o| o.credential == s.credential)
                .map(|o| o.account.to_string())
                .collect();
            return Err(Error::refused(format!(
                "CloudTrail shows no instance launched by {} in account {} (regions searched: {})",
                s.credential,
                accounts.join(", "),
                s.regions.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    searches.retain(|s| !s.launches.is_empty());
    for s in &searches {
        for (region, id, _) in &s.launches {
            refs.push(InstanceRef {
                id: id.clone(),
                account: Some(s.account.clone()),
                region: Some(region.clone()),
            });
        }
    }

    // One target per (account, region, id), described in one call per scope.
    let mut by_scope: BTreeMap<(AccountId, Region), Vec<InstanceId>> = BTreeMap::new();
    let mut order: Vec<(AccountId, Region, InstanceId)> = Vec::new();
    for r in refs {
        let key = (
            r.account.clone().unwrap_or_else(|| caller.clone()),
            r.region.clone().unwrap_or_else(|| default_region.clone()),
        );
        if order.iter().any(|(a, g, i)| (a, g) == (&key.0, &key.1) && i == &r.id) {
            continue;
        }
        order.push((key.0.clone(), key.1.clone(), r.id.clone()));
        by_scope.entry(key).or_default().push(r.id);
    }
    let from_searches: Vec<(AccountId, Region, InstanceId)> = searches
        .iter()
        .flat_map(|s| s.launches.iter().map(move |(r, i, _)| (s.account.clone(), r.clone(), i.clone())))
        .collect();
    let mut described: BTreeMap<(AccountId, Region, InstanceId), (Side, crate::cloud::Instance)> =
        BTreeMap::new();
    for ((account, region), ids) in &by_scope {
        let side = accounts.member(account, region).await.map_err(|e| {
            Error::refused(format!("cannot act in account {account}: {e}\nfix: check that the member role exists there and trusts the caller"))
        })?;
        let found = retry(|| side.cloud.describe_instances(ids)).await.map_err(|e| match e.kind {
            crate::cloud::ErrorKind::Credentials | crate::cloud::ErrorKind::AccessDenied => Error::refused(format!(
                "cannot act in account {account}: {e}\nfix: check that the member role exists there, trusts the caller and may describe instances"
            )),
            _ => Error::failed(format!("describing instances in {account}/{region}: {e}")),
        })?;
        for i in found {
            described.insert((account.clone(), region.clone(), i.id.clone()), (side.clone(), i));
        }
    }
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    for (account, region, id) in order {
        let searched = from_searches.iter().any(|(a, r, i)| (a, r, i) == (&account, &region, &id));
        match described.remove(&(account.clone(), region.clone(), id.clone())) {
            None => problems.push(format!("instance {id} not found in account {account}, region {region} (a wrong region or account?)")),
            Some((_, i)) if i.is_gone() && searched => {
                for s in searches.iter_mut().filter(|s| s.account == account) {
                    if s.launches.iter().any(|(r, x, _)| r == &region && x == &id) {
                        s.gone.push((region.clone(), id.clone()));
                    }
                }
            }
            Some((_, i)) if i.is_gone() => problems.push(format!(
                "instance {id} is {}: there is nothing left to contain (its volumes may survive: check DeleteOnTermination)",
                i.state
            )),
            Some((_, i)) if i.vpc.is_none() || i.enis.is_empty() => {
                problems.push(format!("instance {id} is not in a VPC: EC2-Classic instances cannot be isolated with security groups"))
            }
            Some((side, i)) => targets.push(TargetState::new(Target { side, id }, i)),
        }
    }
    if !problems.is_empty() {
        return Err(Error::refused(format!("nothing was changed:\n  {}", problems.join("\n  "))));
    }
    if targets.is_empty() {
        return Err(Error::refused("every instance named is gone (terminated): nothing left to preserve"));
    }
    Ok((targets, searches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked_before_any_call() {
        assert!(access_key("AKIAIOSFODNN7EXAMPLE").is_ok());
        for bad in ["akiaiosfodnn7example", "AKIA", "AKIA/../x", "XXXXIOSFODNN7EXAMPLE"] {
            assert!(access_key(bad).is_err(), "{bad}");
        }
        assert_eq!(user_arn("arn:aws:iam::111122223333:user/dev/ci").unwrap().1, "ci");
        assert!(user_arn("arn:aws:iam::111122223333:role/x").is_err());
    }
}
