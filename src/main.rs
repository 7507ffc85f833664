//! The `cleanroom` binary: parses arguments, sets up logging and progress on stderr,
//! runs the command and turns its outcome into the exit code of the contract
//! (0 done, 1 failed and resumable, 2 bad input or refused).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use cleanroom::cli::{self, Cli};
use cleanroom::error::ExitKind;
use cleanroom::progress::Reporter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version on stdout with success, and usage errors on
            // stderr; usage errors are bad input (exit 2), as clap itself uses.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { ExitKind::Refused as u8 } else { 0 });
        }
    };
    init_tracing(cli.global.verbose);
    let reporter: Arc<dyn Reporter> = Arc::new(BarReporter::new(cli.global.verbose == 0));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(ExitKind::Failed as u8);
        }
    };
    match runtime.block_on(cli::run(cli, reporter)) {
        Ok(kind) => ExitCode::from(kind as u8),
        Err(e) => {
            // Display, not Debug: the user reads this in the worst hour of their year.
            eprintln!("error: {e}");
            ExitCode::from(e.kind() as u8)
        }
    }
}

/// A 20-cell text bar for a percentage (the spinner line shows it after the scope).
fn progress_bar(percent: u8) -> String {
    let filled = usize::from(percent.min(100)) / 5;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        // The SDK warns on every read of a multipart object that it cannot validate S3's
        // composite checksum: cleanroom checks its own full-object digests instead.
        0 => "warn,aws_sdk_s3::http_response_checksum=error",
        1 => "info,cleanroom=debug",
        _ => "debug,cleanroom=trace,aws_smithy_runtime=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLEANROOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Progress on stderr with indicatif: one spinner line per scope while it works.
/// With -v the log lines say the same, so bars are off to keep stderr readable.
struct BarReporter {
    bars: MultiProgress,
    enabled: bool,
    active: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>,
}

impl BarReporter {
    fn new(enabled: bool) -> Self {
        let enabled = enabled && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self { bars: MultiProgress::new(), enabled, active: Default::default() }
    }

    fn bar(&self, scope: &str) -> ProgressBar {
        let mut active = self.active.lock().expect("progress lock");
        active
            .entry(scope.to_owned())
            .or_insert_with(|| {
                let bar = self.bars.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix}: {msg}").expect("static template"),
                );
                bar.set_prefix(scope.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }
}

impl Reporter for BarReporter {
    fn step(&self, scope: &str, message: &str) {
        tracing::info!("{scope}: {message}");
        if self.enabled {
            self.bar(scope).set_message(message.to_owned());
        }
    }

    fn done(&self, scope: &str, message: &str) {
        tracing::info!("{scope}: {message}");
        if self.enabled {
            if let Some(bar) = self.active.lock().expect("progress lock").remove(scope) {
                bar.finish_and_clear();
            }
            let _ = self.bars.println(format!("✓ {scope}: {message}"));
        } else {
            eprintln!("{scope}: {message}");
        }
    }

    fn warn(&self, scope: &str, message: &str) {
        if self.enabled {
            let _ = self.bars.println(format!("warning: {scope}: {message}"));
        } else {
            eprintln!("warning: {scope}: {message}");
        }
    }

    fn percent(&self, scope: &str, percent: u8) {
        if self.enabled {
            let bar = self.bar(scope);
            bar.set_message(format!("{} {percent:>3}%", progress_bar(percent)));
        }
    }

    fn bytes(&self, scope: &str, done: u64, total: Option<u64>) {
        if self.enabled {
            let bar = self.bar(scope);
            match total {
                Some(t) => {
                    bar.set_message(format!("{} / {}", indicatif::HumanBytes(done), indicatif::HumanBytes(t)))
                }
                None => bar.set_message(format!("{}", indicatif::HumanBytes(done))),
            }
        }
    }
}
