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
    Size {
        expected: u64,
        actual: u64,
    },
    /// Anything else: an unexpected HTTP status, an unreadable mirror, a cache write error.
    Other(String),
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
            Failure::Size { expected, actual } => write!(
                f,
                "size mismatch: expected {expected} bytes, got {actual} (or more)"
            ),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// Every location of a source failed; lists each one and why.
#[derive(Debug)]
pub struct FetchError {
    pub file: String,
    /// `cpython 3.13.1`.
    pub source_name: String,
    pub failures: Vec<(String, Failure)>,
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
        let mismatch = self
            .failures
            .iter()
            .any(|(_, f)| matches!(f, Failure::Checksum(_) | Failure::Size { .. }));
        if mismatch {
            write!(
                f,
                "\nhint: the bytes served differ from the pin in recipes/sources.toml; if upstream re-released {}, verify the new file and update the pin",
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
