//! Terminal output: status lines, progress for long one-time work, log set-up.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::env::EnvironmentOptions;
use crate::sandbox::wasi::CompileObserver;

/// Decides once whether to draw progress, and prints status lines to stderr.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub fancy: bool,
}

impl Printer {
    /// Progress is drawn only on a terminal, outside CI, and without verbose logs.
    pub fn resolve(stderr_is_terminal: bool, env: &EnvironmentOptions, verbose: bool) -> Self {
        Self { fancy: stderr_is_terminal && !env.ci && !verbose && env.log_filter.is_none() }
    }

    pub fn from_process(env: &EnvironmentOptions, verbose: bool) -> Self {
        Self::resolve(std::io::stderr().is_terminal(), env, verbose)
    }

    /// A status line on stderr.
    pub fn status(&self, line: &str) {
        eprintln!("{line}");
    }

    /// A spinner (terminal) or a plain line (otherwise) for work of unknown length.
    pub fn spinner(&self, message: &str) -> ProgressBar {
        if !self.fancy {
            eprintln!("{message} ...");
            return ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

/// Shows the one-time module compile.
pub struct CompileProgress {
    printer: Printer,
    bar: std::cell::RefCell<Option<ProgressBar>>,
}

impl CompileProgress {
    pub fn new(printer: Printer) -> Self {
        Self { printer, bar: std::cell::RefCell::new(None) }
    }
}

impl CompileObserver for CompileProgress {
    fn compile_started(&self, what: &str) {
        *self.bar.borrow_mut() =
            Some(self.printer.spinner(&format!("compiling {what} (one time, about a minute)")));
    }

    fn compile_finished(&self, what: &str, took: Duration) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
        self.printer
            .status(&format!("compiled {what} in {:.0} s (cached for next time)", took.as_secs_f64()));
    }
}

/// Where the JSON log goes once a run directory exists. Until then, nothing is written.
#[derive(Clone, Default)]
pub struct LogFile(std::sync::Arc<std::sync::Mutex<Option<std::fs::File>>>);

impl LogFile {
    /// Starts writing JSON log lines to `path` (appending).
    pub fn open(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        Ok(())
    }
}

impl std::io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Logs to stderr (`LOOP_RUNNER_LOG` wins over `--verbose`, which wins over the default:
/// warnings) and, once a run starts, as JSON lines into the run's `log.jsonl` (info and up).
pub fn init_logging(env: &EnvironmentOptions, verbose: bool) -> LogFile {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = env
        .log_filter
        .clone()
        .unwrap_or_else(|| if verbose { "loop_runner=debug,info".into() } else { "warn".into() });
    let ansi = std::io::stderr().is_terminal() && !env.no_color;
    let log_file = LogFile::default();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("warn")));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(log_file.clone())
        .with_filter(EnvFilter::new("loop_runner=info,warn"));
    let _ = tracing_subscriber::registry().with(stderr).with(json).try_init();
    log_file
}

pub use crate::units::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_on_an_interactive_terminal() {
        let plain = EnvironmentOptions::default();
        let ci = EnvironmentOptions { ci: true, ..Default::default() };
        assert!(Printer::resolve(true, &plain, false).fancy);
        assert!(!Printer::resolve(false, &plain, false).fancy);
        assert!(!Printer::resolve(true, &ci, false).fancy);
        assert!(!Printer::resolve(true, &plain, true).fancy);
    }
}
