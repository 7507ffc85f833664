//! The command line: global options, the subcommands, and what every command shares
//! (configuration, AWS connection, output). Each subcommand is a module that owns its
//! `Args` and `run()`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::aws::{Aws, ConnectOptions};
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::ids::Region;
use crate::progress::Reporter;

pub mod acquire;
pub mod cases;
pub mod collect;
pub mod drill;
pub mod init;
pub mod isolate;
pub mod preflight;
pub mod release;
pub mod report;
pub mod targets;
pub mod teardown;
pub mod verify;

#[derive(Debug, Parser)]
#[command(name = "cleanroom", version, about = "Preserve a compromised EC2 instance as court-ready evidence")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE", default_value = config::DEFAULT_FILE)]
    pub config: PathBuf,
    /// AWS profile for the caller's own credentials.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Region for instances given by bare id (default: environment, profile, then config).
    #[arg(long, global = true)]
    pub region: Option<Region>,
    /// The person accountable for this run, recorded in custody (default: config `examiner`).
    #[arg(long, global = true, env = "CLEANROOM_EXAMINER")]
    pub examiner: Option<String>,
    /// Machine-readable JSON results on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented example configuration.
    Init(init::Args),
    /// Check accounts, permissions, bucket, keys and clean room before an incident.
    Preflight(preflight::Args),
    /// The whole pipeline: capture, protect, snapshot, isolate, hand off to the forensics account, seal.
    Acquire(acquire::Args),
    /// Contain instances: protect, detach from their service, cut network and credentials.
    Isolate(isolate::Args),
    /// Run the clean room's triage and YARA on a raw image here, and store it all in the case.
    Collect(collect::Args),
    /// Remove the case's analysis instances and volumes (the evidence and forensics copies stay).
    Teardown(teardown::Args),
    /// Undo containment of an instance, restoring the state recorded at isolation.
    Release(release::Args),
    /// Re-hash every evidence object and re-check locks and the custody chain.
    Verify(verify::Args),
    /// Write the hand-off report of a case.
    Report(report::Args),
    /// List the cases in the evidence bucket and their state.
    Cases(cases::Args),
    /// Rehearse the response against the local lab.
    Drill(drill::Args),
}

/// What every command gets: the global options and the progress reporter.
pub struct Context {
    pub global: GlobalArgs,
    pub reporter: Arc<dyn Reporter>,
}

impl Context {
    pub fn load_config(&self) -> Result<Config> {
        Ok(Config::load(&self.global.config)?)
    }

    /// The accountable human: the flag or environment, else the configuration.
    pub fn examiner(&self, config: &Config) -> Result<String> {
        self.global
            .examiner
            .clone()
            .or_else(|| config.examiner.clone())
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| {
                Error::refused(
                    "no examiner named: custody records must name the person accountable\n\
                     fix: pass --examiner \"Name, team\", set CLEANROOM_EXAMINER, or set `examiner` in the configuration",
                )
            })
    }

    pub async fn connect(&self, config: &Config, purpose: &str) -> Aws {
        let opts =
            ConnectOptions { profile: self.global.profile.clone(), region: self.global.region.clone() };
        Aws::connect(&opts, config, crate::aws::session_name(purpose)).await
    }

    /// Prints a result on stdout: JSON with `--json`, else the human text.
    pub fn emit(&self, json: &serde_json::Value, human: &str) {
        if self.global.json {
            out(&format!("{}\n", crate::text::json_for_terminal(json)));
        } else if human.ends_with('\n') {
            out(human);
        } else {
            out(&format!("{human}\n"));
        }
    }
}

pub async fn run(cli: Cli, reporter: Arc<dyn Reporter>) -> Result<crate::error::ExitKind> {
    let ctx = Context { global: cli.global, reporter };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Preflight(args) => preflight::run(&ctx, args).await,
        Command::Acquire(args) => acquire::run(&ctx, args).await,
        Command::Isolate(args) => isolate::run(&ctx, args).await,
        Command::Collect(args) => collect::run(&ctx, args).await,
        Command::Teardown(args) => teardown::run(&ctx, args).await,
        Command::Release(args) => release::run(&ctx, args).await,
        Command::Verify(args) => verify::run(&ctx, args).await,
        Command::Report(args) => report::run(&ctx, args).await,
        Command::Cases(args) => cases::run(&ctx, args).await,
        Command::Drill(args) => drill::run(&ctx, args).await,
    }
}

/// Writes to stdout. When the reader has gone (`cleanroom ... | head`), the process
/// ends quietly with success: the work is recorded, only the view was cut short.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(crate::error::ExitKind::Failed as i32);
    }
}

/// Renders rows as an aligned plain-text table (no colour: output is kept as evidence).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
