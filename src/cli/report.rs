//! `cleanroom report` (being built).

use crate::error::{Error, ExitKind, Result};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_ctx: &Context, _args: Args) -> Result<ExitKind> {
    Err(Error::failed("report is not built yet"))
}
