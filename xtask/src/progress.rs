//! Progress reporting: the `Reporter` trait the logic talks to, and the terminal implementation.
//!
//! The logic never prints; it tells a `Reporter`. On a terminal, indicatif bars and spinners;
//! elsewhere (CI logs), plain one-line messages.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Prints a command's answer on standard output: what a script reads of it (a path, a tag, a
/// table). Everything else goes to standard error through a `Reporter`. With `main.rs`, this
/// module is the only one that prints.
pub fn print_answer(text: impl std::fmt::Display) {
    println!("{text}");
}

/// `print_answer`, with its text formatted as `format!` formats.
macro_rules! answer {
    ($($arg:tt)*) => {
        $crate::progress::print_answer(format_args!($($arg)*))
    };
}
pub(crate) use answer;

/// Receives progress events. Implementations must be cheap: they are called per chunk.
pub trait Reporter: Sync {
    /// A download of `file` starts; `total` is its size when known, `resumed_at` the bytes already on disk.
    fn download_started(
        &self,
        file: &str,
        total: Option<u64>,
        resumed_at: u64,
    ) -> Box<dyn Transfer + '_>;
    /// A free-form line worth showing the user.
    fn message(&self, line: &str);
    /// Something happened to the step `name` (a stage, the builder image, the package, the
    /// runtime image, verify, the floor). By default, its line is a message.
    fn step(&self, name: &str, event: StepEvent<'_>) {
        if let Some(line) = step_line(name, event) {
            self.message(&line);
        }
    }
}

/// The vocabulary of a step's progress.
#[derive(Debug, Clone, Copy)]
pub enum StepEvent<'a> {
    /// Nothing had to run: `what` says why (`cached`, `found <id>`, `would run (key ...)`).
    Skipped { what: &'a str },
    /// It starts `doing` something (`running`, `building`), logging to `log`.
    Started { doing: &'a str, log: &'a Path },
    /// A line of its output while it runs.
    Output { line: &'a str },
    /// It ran, in `seconds`; `note` adds what it made.
    Ran { seconds: f64, note: Option<&'a str> },
    /// It failed: the error that follows says why, `log` has the whole story.
    Failed { log: &'a Path },
}

/// One transfer in progress.
pub trait Transfer {
    fn advance(&self, bytes: u64);
    fn finish(&self, note: &str);
    fn fail(&self, note: &str);
}

/// The reporter of the command line.
pub struct Terminal {
    multi: Option<MultiProgress>,
    /// The spinner of each running step, on a terminal.
    spinners: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Terminal {
    pub fn new() -> Terminal {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Terminal {
            multi,
            spinners: Mutex::new(BTreeMap::new()),
        }
    }

    /// A spinner for a long step, or `None` when stderr is not a terminal.
    fn spinner(&self, prefix: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}")
                .unwrap(),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal::new()
    }
}

impl Reporter for Terminal {
    fn download_started(
        &self,
        file: &str,
        total: Option<u64>,
        resumed_at: u64,
    ) -> Box<dyn Transfer + '_> {
        match &self.multi {
            Some(multi) => {
                let bar = multi.add(match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::no_length(),
                });
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap()
                    .progress_chars("=> "),
                );
                bar.set_message(file.to_string());
                bar.set_position(resumed_at);
                Box::new(BarTransfer {
                    bar,
                    file: file.to_string(),
                })
            }
            None => {
                let from = if resumed_at > 0 {
                    format!(" (resuming at {resumed_at} bytes)")
                } else {
                    String::new()
                };
                eprintln!("downloading {file}{from}");
                Box::new(PlainTransfer::new(
                    file,
                    total,
                    resumed_at,
                    Duration::from_secs(5),
                    Box::new(|line: &str| eprintln!("{line}")),
                ))
            }
        }
    }

    fn message(&self, line: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn step(&self, name: &str, event: StepEvent<'_>) {
        let mut spinners = self.spinners.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            StepEvent::Started { .. } => match self.spinner(name) {
                Some(bar) => {
                    spinners.insert(name.to_string(), bar);
                }
                None => self.message(&step_line(name, event).expect("a start has a line")),
            },
            StepEvent::Output { line } => {
                if let Some(bar) = spinners.get(name) {
                    bar.set_message(line.to_string());
                }
            }
            StepEvent::Skipped { .. } | StepEvent::Ran { .. } | StepEvent::Failed { .. } => {
                if let Some(bar) = spinners.remove(name) {
                    bar.finish_and_clear();
                }
                if let Some(line) = step_line(name, event) {
                    self.message(&line);
                }
            }
        }
    }
}

/// The line a step's event prints, in the columns every step shares; none for its output
/// lines, which only a spinner shows.
pub fn step_line(name: &str, event: StepEvent<'_>) -> Option<String> {
    match event {
        StepEvent::Skipped { what } => Some(format!("{name:<14} {what}")),
        StepEvent::Started { doing, log } => {
            Some(format!("{name:<14} {doing} (log: {})", log.display()))
        }
        StepEvent::Ran { seconds, note } => Some(format!(
            "{name:<14} ran    {seconds:>7.1} s{}",
            note.map(|n| format!(" ({n})")).unwrap_or_default()
        )),
        StepEvent::Failed { log } => Some(format!("{name:<14} failed (log: {})", log.display())),
        StepEvent::Output { .. } => None,
    }
}

/// A reporter that keeps what it is told, as (step, line) pairs in the terminal's words (the
/// step is empty for plain messages): for tests that check what a run said.
#[cfg(test)]
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<(String, String)>>,
}

#[cfg(test)]
impl Recorder {
    /// Everything recorded so far.
    pub fn lines(&self) -> Vec<(String, String)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
impl Reporter for Recorder {
    fn download_started(&self, file: &str, _: Option<u64>, _: u64) -> Box<dyn Transfer + '_> {
        self.message(&format!("downloading {file}"));
        Box::new(SilentTransfer)
    }

    fn message(&self, line: &str) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.push((String::new(), line.to_string()));
    }

    fn step(&self, name: &str, event: StepEvent<'_>) {
        let line = match event {
            StepEvent::Output { line } => format!("{name:<14} | {line}"),
            _ => step_line(name, event).expect("every other event has a line"),
        };
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.push((name.to_string(), line));
    }
}

struct BarTransfer {
    bar: ProgressBar,
    file: String,
}

impl Transfer for BarTransfer {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn finish(&self, note: &str) {
        self.bar
            .finish_with_message(format!("{} {note}", self.file));
    }
    fn fail(&self, note: &str) {
        self.bar
            .abandon_with_message(format!("{} {note}", self.file));
    }
}

/// A transfer shown without a terminal: a line every `every` (a CI log shows it is alive).
struct PlainTransfer {
    file: String,
    total: Option<u64>,
    resumed_at: u64,
    done: std::sync::atomic::AtomicU64,
    started: Instant,
    last: std::sync::Mutex<Instant>,
    every: Duration,
    out: Box<dyn Fn(&str) + Send + Sync>,
}

impl PlainTransfer {
    fn new(
        file: &str,
        total: Option<u64>,
        resumed_at: u64,
        every: Duration,
        out: Box<dyn Fn(&str) + Send + Sync>,
    ) -> PlainTransfer {
        let now = Instant::now();
        PlainTransfer {
            file: file.to_string(),
            total,
            resumed_at,
            done: std::sync::atomic::AtomicU64::new(resumed_at),
            started: now,
            last: std::sync::Mutex::new(now),
            every,
            out,
        }
    }
}

impl Transfer for PlainTransfer {
    fn advance(&self, bytes: u64) {
        use std::sync::atomic::Ordering;
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() < self.every {
            return;
        }
        *last = Instant::now();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let line = match self.total {
            Some(total) if total > 0 => format!(
                "{}: {:.1} of {:.1} MiB ({}%)",
                self.file,
                mib(done),
                mib(total),
                done * 100 / total
            ),
            _ => format!("{}: {:.1} MiB", self.file, mib(done)),
        };
        // The speed counts this transfer's bytes only, not a resumed prefix.
        let speed = (done - self.resumed_at) as f64 / 1024.0 / seconds;
        (self.out)(&format!("{line}, {speed:.0} KiB/s"));
    }
    fn finish(&self, note: &str) {
        eprintln!("{} {note}", self.file);
    }
    fn fail(&self, note: &str) {
        eprintln!("{} {note}", self.file);
    }
}

/// A reporter that shows nothing, for tests.
#[cfg(test)]
pub struct Silent;

#[cfg(test)]
impl Reporter for Silent {
    fn download_started(&self, _: &str, _: Option<u64>, _: u64) -> Box<dyn Transfer + '_> {
        Box::new(SilentTransfer)
    }
    fn message(&self, _: &str) {}
}

/// A transfer nobody watches.
pub struct SilentTransfer;

impl Transfer for SilentTransfer {
    fn advance(&self, _: u64) {}
    fn finish(&self, _: &str) {}
    fn fail(&self, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn every_step_speaks_in_the_same_columns() {
        let rec = Recorder::default();
        let log = Path::new("/c/logs/python-1.log");
        rec.step("python", StepEvent::Skipped { what: "cached" });
        rec.step(
            "python",
            StepEvent::Started {
                doing: "running",
                log,
            },
        );
        rec.step("python", StepEvent::Output { line: "make all" });
        rec.step(
            "python",
            StepEvent::Ran {
                seconds: 61.25,
                note: Some("python-fips:3.13"),
            },
        );
        rec.step("verify", StepEvent::Failed { log });
        rec.message("plain");
        let lines: Vec<String> = rec.lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            lines,
            [
                "python         cached",
                "python         running (log: /c/logs/python-1.log)",
                "python         | make all",
                "python         ran       61.2 s (python-fips:3.13)",
                "verify         failed (log: /c/logs/python-1.log)",
                "plain",
            ]
        );
        assert_eq!(rec.lines()[0].0, "python");
        assert_eq!(rec.lines()[5].0, "");
        // A plain reporter (one without spinners) prints the same lines as messages.
        struct Plain(Mutex<Vec<String>>);
        impl Reporter for Plain {
            fn download_started(&self, _: &str, _: Option<u64>, _: u64) -> Box<dyn Transfer + '_> {
                Box::new(SilentTransfer)
            }
            fn message(&self, line: &str) {
                self.0.lock().unwrap().push(line.to_string());
            }
        }
        let plain = Plain(Mutex::new(Vec::new()));
        plain.step("python", StepEvent::Output { line: "make all" });
        plain.step(
            "package",
            StepEvent::Ran {
                seconds: 8.0,
                note: None,
            },
        );
        assert_eq!(
            plain.0.lock().unwrap().clone(),
            ["package        ran        8.0 s"]
        );
    }

    #[test]
    fn without_a_terminal_a_download_prints_plain_progress_lines() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&lines);
        let transfer = PlainTransfer::new(
            "Python-3.99.0.tgz",
            Some(4 * 1024 * 1024),
            1024 * 1024,
            Duration::ZERO,
            Box::new(move |line: &str| sink.lock().unwrap().push(line.to_string())),
        );
        transfer.advance(1024 * 1024);
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("Python-3.99.0.tgz: 2.0 of 4.0 MiB (50%)"),
            "{lines:?}"
        );
    }
}
