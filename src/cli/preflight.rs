//! `cleanroom preflight`: checks every account, permission and resource before an
//! incident and prints one line per check with the fix for each failure. Changes nothing.

use crate::aws::preflight::AwsProbes;
use crate::error::{ExitKind, Result};
use crate::ids::AccountId;
use crate::preflight::{self, Status, Targets};

use super::{Context, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also check the member role in these accounts (repeatable).
    #[arg(long = "account", value_name = "ACCOUNT_ID")]
    pub accounts: Vec<AccountId>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let config = ctx.load_config()?;
    let aws = ctx.connect(&config, "preflight").await;
    let region = aws.default_region().clone();
    let caller = aws.caller(&region).await;
    let forensics = aws.forensics().await;
    let mut members = Vec::new();
    for account in &args.accounts {
        let role = aws.member_role(account).await;
        members.push((role.clone(), aws.assumed(&role, &region).await));
    }
    let caller_probes = AwsProbes { clients: &caller };
    let forensics_probes = AwsProbes { clients: &forensics };
    let member_probes: Vec<_> =
        members.iter().map(|(role, c)| (role.clone(), AwsProbes { clients: c })).collect();
    let targets = Targets {
        caller: &caller_probes,
        forensics: &forensics_probes,
        members: member_probes.iter().map(|(role, p)| (role.clone(), p as &dyn preflight::Probes)).collect(),
    };
    let report = preflight::run(&config, targets).await;

    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .map(|c| {
            let mut detail = c.detail.clone();
            if let Some(fix) = &c.fix {
                detail.push_str(&format!(" -- fix: {fix}"));
            }
            vec![c.status.to_string(), c.account.clone(), c.name.clone(), detail]
        })
        .collect();
    let failed = report.checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = report.checks.iter().filter(|c| c.status == Status::Warn).count();
    let mut human = table(&["RESULT", "ACCOUNT", "CHECK", "DETAIL"], &rows);
    human.push_str(&format!(
        "\n{} checks: {} passed, {failed} failed, {warned} warnings\n",
        report.checks.len(),
        report.checks.len() - failed - warned
    ));
    human.push_str(if report.ok {
        "preflight passed: cleanroom can run here\n"
    } else {
        "preflight refused: fix the failures above before relying on cleanroom\n"
    });
    ctx.emit(&serde_json::to_value(&report).expect("report serialises"), &human);
    Ok(if report.ok { ExitKind::Done } else { ExitKind::Refused })
}
