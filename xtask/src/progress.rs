//! Progress reporting: the `Reporter` trait the logic talks to, and the terminal implementation.
//!
//! The logic never prints; it tells a `Reporter`. On a terminal, indicatif bars and spinners;
//! elsewhere (CI logs), plain one-line messages.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
}

impl Terminal {
    pub fn new() -> Terminal {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Terminal { multi }
    }

    /// A spinner for a long step, or `None` when stderr is not a terminal.
    pub fn spinner(&self, prefix: &str) -> Option<ProgressBar> {
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

#[cfg(test)]
struct SilentTransfer;

#[cfg(test)]
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
