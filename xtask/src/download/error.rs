//! The errors of a download: why each location failed, and the checksum mismatch in full.

use std::fmt;

/// The sha256 of a download is not the catalog's.
#[derive(Debug)]
pub struct ChecksumMismatch {
    pub url: String,
    pub expected: String,
    pub actual: String,
}

impl fmt::Display for ChecksumMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checksum mismatch for {}\n  expected sha256 {}\n  actual   sha256 {}",
            self.url, self.expected, self.actual
        )
    }
}

impl std::error::Error for ChecksumMismatch {}

/// Why one location did not yield a verified file.
#[derive(Debug)]
pub enum Failure {
    /// HTTP 404, 403 or 410, or no such file in a directory mirror: the next location is tried at once.
    NotFound(String),
    /// A transient failure that lasted through every attempt.
    GaveUp {
        attempts: u32,
        last: String,
    },
    Checksum(ChecksumMismatch),
    /// The length is not the catalog's `size` or, for a source without one, over the limit.
    Size {
        expected: u64,
        actual: u64,
        seen: Seen,
    },
    /// The cache cannot be written (a full disk, a read-only directory): no other location can
    /// help, so the fetch stops at once.
    Local(String),
    /// Anything else: an unexpected HTTP status, an unreadable mirror, a permanent HTTP error.
    Other(String),
}

/// How a wrong length was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// In the `Content-Length` of the response, before any byte arrived.
    Announced,
    /// All bytes arrived; this is their count.
    Received,
    /// The download was stopped once more bytes than expected had arrived.
    Exceeded,
    /// A source without a `size` in the catalog: `expected` is the hard limit, and this many
    /// bytes were announced or had arrived when it was stopped.
    OverLimit,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound(why) => write!(f, "not found ({why})"),
            Failure::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
            Failure::Checksum(c) => write!(
                f,
                "checksum mismatch\nexpected sha256 {}\nactual   sha256 {}",
                c.expected, c.actual
            ),
            Failure::Size {
                expected,
                actual,
                seen,
            } => match seen {
                Seen::Announced => write!(
                    f,
                    "size mismatch: expected {expected} bytes, the server announced {actual}"
                ),
                Seen::Received => {
                    write!(f, "size mismatch: expected {expected} bytes, got {actual}")
                }
                Seen::Exceeded => write!(
                    f,
                    "size mismatch: expected {expected} bytes, got {actual} or more"
                ),
                Seen::OverLimit => write!(
                    f,
                    "too large: {actual} bytes, over the limit of {expected} bytes for a source without a `size` in recipes/sources.toml"
                ),
            },
            Failure::Local(why) | Failure::Other(why) => f.write_str(why),
        }
    }
}

/// Every location of a source failed (or the cache could not be written); lists each one and why.
#[derive(Debug)]
pub struct FetchError {
    pub file: String,
    /// `cpython 3.13.1`.
    pub source_name: String,
    pub failures: Vec<(String, Failure)>,
    /// The recipe's own URLs: only bytes from these can justify a new pin.
    pub upstream: Vec<String>,
    /// Where downloads are written (named by the hint of a local write error).
    pub downloads: std::path::PathBuf,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot download {} ({}); tried:",
            self.file, self.source_name
        )?;
        for (location, failure) in &self.failures {
            let failure = failure.to_string().replace('\n', "\n    ");
            write!(f, "\n  {location}: {failure}")?;
        }
        let differs = |(_, f): &&(String, Failure)| {
            matches!(f, Failure::Checksum(_))
                || matches!(f, Failure::Size { seen, .. } if *seen != Seen::OverLimit)
        };
        let upstream_differs = self
            .failures
            .iter()
            .filter(differs)
            .any(|(location, _)| self.upstream.contains(location));
        let mirrors_differ: Vec<&str> = self
            .failures
            .iter()
            .filter(differs)
            .filter(|(location, _)| !self.upstream.contains(location))
            .map(|(location, _)| location.as_str())
            .collect();
        if self
            .failures
            .iter()
            .any(|(_, f)| matches!(f, Failure::Local(_)))
        {
            write!(
                f,
                "\nhint: the cache cannot be written: free space in {} (or make it writable), then run again",
                self.downloads.display()
            )
        } else if upstream_differs {
            write!(
                f,
                "\nhint: the upstream URL serves bytes that differ from the pin in recipes/sources.toml; if upstream re-released {}, verify the new file and update the pin",
                self.file
            )
        } else if !mirrors_differ.is_empty() {
            write!(
                f,
                "\nhint: the pin is not in question: the mirror copy ({}) differs from it; replace or remove that copy",
                mirrors_differ.join(", ")
            )
        } else if self.failures.iter().any(|(_, f)| {
            matches!(
                f,
                Failure::Size {
                    seen: Seen::OverLimit,
                    ..
                }
            )
        }) {
            write!(
                f,
                "\nhint: give {} a `size` in recipes/sources.toml (the published file's length)",
                self.file
            )
        } else {
            write!(
                f,
                "\nhint: check the network, or pass --mirror with a URL or directory that holds {}",
                self.file
            )
        }
    }
}

impl std::error::Error for FetchError {}
