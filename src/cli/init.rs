//! `cleanroom init`: writes the commented example configuration.

use crate::config;
use crate::error::{ExitKind, Result};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the example on stdout instead of writing the --config file.
    #[arg(long)]
    pub stdout: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    if args.stdout {
        super::out(config::EXAMPLE);
        return Ok(ExitKind::Done);
    }
    config::write_example(&ctx.global.config)?;
    eprintln!("wrote {}; edit it, then run `cleanroom preflight`", ctx.global.config.display());
    Ok(ExitKind::Done)
}
