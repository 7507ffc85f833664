//! The hand-off report, written for the reader who was not there: a first page in
//! plain language (what happened to which instances, what was preserved, where, under
//! which retention, whether everything verified, who did what), the findings with
//! their evidence, the timeline as one sentence per action and as the playbooks' IR
//! log, each evidence item with its digests, S3 version and lock and the commands that
//! re-verify it with standard tools, how to verify the whole case, and a FRE 902(14)
//! certification template. HTML (self-contained, print-ready), Markdown and JSON
//! from the same data.
//!
//! - `model`: the report as data (its JSON form) and how it is built;
//! - `sources`: the result files it reads (capture summaries, clean-room results),
//!   used only when their digest is the one custody recorded;
//! - `timeline`: the sentences; `phrase`: text and suspect data kept apart;
//! - `reverify`: the commands; `html`, `markdown`: the renderings.
//!
//! Every value comes from the evidence bucket, and much of it from the suspect:
//! each rendering escapes every value for its format, with control and bidi
//! characters shown as escapes (`text::sanitize`); JSON escapes them as `\uXXXX`.

use serde::Serialize;

pub mod html;
pub mod markdown;
pub mod model;
pub mod phrase;
pub mod reverify;
pub mod sources;
pub mod timeline;

pub use model::{Report, build, build_at};
pub use sources::Sources;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Html,
    Md,
    Json,
}

impl Format {
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Md => "md",
            Format::Json => "json",
        }
    }
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Md => "text/markdown; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// The report in `format`; every form is also safe to print on a terminal.
pub fn render(data: &Report, format: Format) -> String {
    match format {
        Format::Json => {
            crate::text::json_for_terminal(&serde_json::to_value(data).expect("report serialises")) + "\n"
        }
        Format::Md => markdown::render(data),
        Format::Html => html::render(data),
    }
}
