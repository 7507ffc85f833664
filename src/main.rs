//! The `cleanroom` binary: parses arguments, sets up logging and progress on stderr,
//! runs the command and turns its outcome into the exit code of the contract
//! (0 done, 1 failed and resumable, 2 bad input or refused).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::io::Write;

use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use cleanroom::cli::{self, Cli};
use cleanroom::error::ExitKind;
use cleanroom::progress::Reporter;
use cleanroom::redact;

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
    redact::register_environment();
    init_tracing(cli.global.verbose);
    let reporter: Arc<dyn Reporter> = Arc::new(BarReporter::new(cli.global.verbose == 0));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(ExitKind::Failed as u8);
        }
    };
    let outcome = runtime.block_on(async {
        let outcome = cli::run(cli, reporter).await;
        // Records written behind the command's own waits are in the chain before exit.
        match (outcome, cleanroom::evidence::case::flush_opened().await) {
            (outcome, Ok(())) => outcome,
            (Ok(_), Err(e)) => Err(cleanroom::error::Error::from(e)),
            (Err(first), Err(e)) => {
                eprintln!("error: {}", redact::scrub(&e.to_string()));
                Err(first)
            }
        }
    });
    match outcome {
        Ok(kind) => ExitCode::from(kind as u8),
        Err(e) => {
            // Display, not Debug: the user reads this in the worst hour of their year.
            eprintln!("error: {}", redact::scrub(&e.to_string()));
            ExitCode::from(e.kind() as u8)
        }
    }
}

/// A 20-cell text bar for a percentage (the spinner line shows it after the scope).
fn progress_bar(percent: u8) -> String {
    let filled = usize::from(percent.min(100)) / 5;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

/// The SDK crates that handle credentials and signatures, with the most they may log
/// whatever `-v` or `CLEANROOM_LOG` asks for. At trace level they print what must never
/// reach a terminal or a log file: `aws_smithy_runtime` every request (its Authorization
/// header, a signature, and `x-amz-security-token`) and every response (STS AssumeRole's
/// SecretAccessKey and SessionToken); `aws_sigv4` the canonical request, session token
/// included; `aws_config` a credential process's command line, unredacted; `aws_runtime`
/// the values it reads from the environment and profiles. Their debug output is kept (it
/// says what the SDK is doing); it still goes through the scrubbing writer below.
const CREDENTIAL_CRATES_MAX: [(&str, LevelFilter); 10] = [
    ("aws_smithy_runtime", LevelFilter::DEBUG),
    ("aws_smithy_runtime_api", LevelFilter::DEBUG),
    ("aws_smithy_http_client", LevelFilter::DEBUG),
    ("aws_sigv4", LevelFilter::DEBUG),
    ("aws_runtime", LevelFilter::DEBUG),
    ("aws_config", LevelFilter::DEBUG),
    ("aws_credential_types", LevelFilter::DEBUG),
    ("hyper", LevelFilter::DEBUG),
    ("hyper_util", LevelFilter::DEBUG),
    ("h2", LevelFilter::DEBUG),
];

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
    // A ceiling the user's filter cannot lift: both filters must let an event through.
    let ceiling = Targets::new().with_default(LevelFilter::TRACE).with_targets(CREDENTIAL_CRATES_MAX);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(ScrubbedStderr)
        .with_target(false)
        .with_filter(filter.and(ceiling));
    tracing_subscriber::registry().with(layer).init();
}

/// Log output on stderr, one event at a time through [`redact::scrub`]: an error the SDK
/// logs at debug level can quote a failed credential process's stderr.
struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedEvent;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedEvent(Vec::new())
    }
}

/// One formatted event, written out scrubbed when the formatter is done with it.
struct ScrubbedEvent(Vec<u8>);

impl std::io::Write for ScrubbedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedEvent {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(redact::scrub(&text).as_bytes());
    }
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
        let message = redact::scrub(message);
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
