//! Progress reporting: the `Reporter` trait the logic talks to, and the terminal implementation.
//!
//! The logic never prints; it tells a `Reporter`. On a terminal, indicatif bars and spinners;
//! elsewhere (CI logs), plain one-line messages.

use std::io::IsTerminal;
use std::time::Duration;

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
    #[expect(dead_code, reason = "the build stages, not written yet, call it")]
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
                Box::new(PlainTransfer {
                    file: file.to_string(),
                })
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

struct PlainTransfer {
    file: String,
}

impl Transfer for PlainTransfer {
    fn advance(&self, _bytes: u64) {}
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
