//! Verified downloads: mirrors first, then the recipe's URLs; sha256 and size checked while streaming.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::blocking::{Client, Response};
use sha2::{Digest, Sha256};

use crate::cache::{self, Cache};
use crate::catalog::Source;
use crate::progress::{Reporter, Transfer};

mod error;
#[cfg(test)]
mod tests;

pub use error::{ChecksumMismatch, Failure, FetchError};

/// Fetches sources into the cache's content-addressed `downloads/` directory.
///
/// A download streams into `downloads/.partial/<sha256>.<file>` (outside `tmp/`, so that a later
/// run can resume it) and is renamed to `downloads/<sha256>/<file>` only once its size and sha256
/// are verified. The final path is therefore the cache hit; a partial file is never trusted.
pub struct Fetcher<'a> {
    pub cache: &'a Cache,
    pub mirrors: Vec<String>,
    /// Use the cache only: no network, and no mirror either.
    pub offline: bool,
    pub reporter: &'a dyn Reporter,
    pub retry: RetryPolicy,
}

/// How often, and how patiently, a transient failure (connect error, timeout, 5xx, body cut
/// short) is retried on one location before moving to the next.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per location, the first one included.
    pub attempts: u32,
    /// The wait after the first failure; it doubles after each further one, with jitter.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failures` failed attempts (1 or more): base × 2^(failures-1) × [0.5, 1.5).
    fn delay(&self, failures: u32) -> Duration {
        use std::hash::BuildHasher;
        let exp = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        let raw = self
            .base_delay
            .saturating_mul(exp)
            .min(Duration::from_secs(30));
        // RandomState is freshly keyed on every call: enough randomness for jitter.
        let bits = std::collections::hash_map::RandomState::new().hash_one(failures);
        let jitter = 0.5 + (bits >> 11) as f64 / (1u64 << 53) as f64;
        raw.mul_f64(jitter)
    }
}

/// Where a candidate copy of a file may be.
enum Location {
    Http(String),
    Local(PathBuf),
    Invalid(String),
}

/// The outcome of one HTTP attempt that did not produce a verified file.
enum Attempt {
    Retry(String),
    Fatal(Failure),
}

impl<'a> Fetcher<'a> {
    /// Returns the path of the verified file in the cache, downloading it if needed.
    pub fn fetch(&self, source: &Source) -> Result<PathBuf> {
        let dest = self.cache.download_path(source);
        if dest.is_file() {
            return Ok(dest);
        }
        if self.offline {
            bail!(
                "{} ({source}) is not in the cache and --offline forbids downloading it\n  looked for {}\nhint: drop --offline to download it (--mirror locations are tried first)",
                source.file,
                dest.display()
            );
        }
        let partial = self
            .cache
            .root()
            .join("downloads")
            .join(".partial")
            .join(format!("{}.{}", source.sha256, source.file));
        if let Some(dir) = partial.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut client = None;
        let mut failures = Vec::new();
        for (shown, location) in self.candidates(source) {
            let result = match &location {
                Location::Http(url) => {
                    if client.is_none() {
                        client = Some(http_client()?);
                    }
                    let client = client.as_ref().expect("just built");
                    self.try_http(client, source, url, &partial)
                }
                Location::Local(path) => self.try_local(source, path, &partial),
                Location::Invalid(why) => Err(Failure::Other(why.clone())),
            };
            match result {
                Ok(()) => {
                    cache::publish(&partial, &dest)?;
                    return Ok(dest);
                }
                Err(failure) => failures.push((shown, failure)),
            }
        }
        Err(FetchError {
            file: source.file.clone(),
            source_name: source.to_string(),
            failures,
        }
        .into())
    }

    /// Fetches several sources concurrently; paths in the same order.
    pub fn fetch_all(&self, sources: &[&Source]) -> Result<Vec<PathBuf>> {
        let results: Vec<Result<PathBuf>> = std::thread::scope(|scope| {
            let handles: Vec<_> = sources
                .iter()
                .map(|source| scope.spawn(move || self.fetch(source)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a download thread panicked")))
                })
                .collect()
        });
        let total = results.len();
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(path) => paths.push(path),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(paths),
            // A single error keeps its type, so callers can downcast it.
            1 => Err(errors.remove(0)),
            n => {
                let all: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
                bail!("cannot fetch {n} of {total} sources:\n{}", all.join("\n"))
            }
        }
    }

    /// Every place to look, in order: `<mirror>/<file>` for each mirror, then the recipe's URLs.
    fn candidates(&self, source: &Source) -> Vec<(String, Location)> {
        let mut out = Vec::new();
        for mirror in &self.mirrors {
            let base = mirror.trim_end_matches('/');
            let shown = format!("{base}/{}", source.file);
            let location = if is_http(base) {
                Location::Http(shown.clone())
            } else if base.starts_with("file:") {
                match file_url_path(base) {
                    Ok(dir) => Location::Local(dir.join(&source.file)),
                    Err(why) => Location::Invalid(why),
                }
            } else {
                Location::Local(Path::new(base).join(&source.file))
            };
            out.push((shown, location));
        }
        for url in &source.urls {
            let location = if is_http(url) {
                Location::Http(url.clone())
            } else if url.starts_with("file:") {
                file_url_path(url).map_or_else(Location::Invalid, Location::Local)
            } else {
                Location::Invalid(format!(
                    "unsupported URL {url:?} (expected http, https or file)"
                ))
            };
            out.push((url.clone(), location));
        }
        out
    }

    /// Downloads `url` into `partial` and verifies it, retrying transient failures.
    fn try_http(
        &self,
        client: &Client,
        source: &Source,
        url: &str,
        partial: &Path,
    ) -> Result<(), Failure> {
        let attempts = self.retry.attempts.max(1);
        for attempt in 1.. {
            match self.http_attempt(client, source, url, partial) {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(failure)) => return Err(failure),
                Err(Attempt::Retry(last)) if attempt >= attempts => {
                    return Err(Failure::GaveUp { attempts, last });
                }
                Err(Attempt::Retry(why)) => {
                    let delay = self.retry.delay(attempt);
                    self.reporter.message(&format!(
                        "{}: {why}; retrying in {:.1}s (attempt {} of {attempts})",
                        source.file,
                        delay.as_secs_f64(),
                        attempt + 1
                    ));
                    std::thread::sleep(delay);
                }
            }
        }
        unreachable!()
    }

    /// One request: resumes a partial file with `Range` when there is one.
    fn http_attempt(
        &self,
        client: &Client,
        source: &Source,
        url: &str,
        partial: &Path,
    ) -> Result<(), Attempt> {
        let mut have = std::fs::metadata(partial).map_or(0, |m| m.len());
        if let Some(size) = source.size
            && have >= size
            && have > 0
        {
            // A partial file of full length (killed before the rename) still has to verify.
            if have == size {
                let mut hasher = Sha256::new();
                hash_file(partial, &mut hasher)
                    .map_err(|e| Attempt::Fatal(io_failure(partial, e)))?;
                if verify(source, url, partial, have, hasher).is_ok() {
                    return Ok(());
                }
            }
            discard(partial);
            have = 0;
        }

        let mut request = client.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut response = request
            .send()
            .map_err(|e| Attempt::Retry(error_chain(&e)))?;
        let status = response.status();
        let resume = match status.as_u16() {
            200 => false,
            206 if have > 0 && content_range_start(&response) == Some(have) => true,
            206 if have > 0 => {
                discard(partial);
                return Err(Attempt::Retry(
                    "the server resumed at another offset; starting over".into(),
                ));
            }
            416 if have > 0 => {
                discard(partial);
                return Err(Attempt::Retry(
                    "the server cannot resume the partial download; starting over".into(),
                ));
            }
            404 | 403 | 410 => {
                return Err(Attempt::Fatal(Failure::NotFound(format!("HTTP {status}"))));
            }
            408 | 429 | 500..=599 => return Err(Attempt::Retry(format!("HTTP {status}"))),
            _ => {
                return Err(Attempt::Fatal(Failure::Other(format!(
                    "unexpected HTTP {status}"
                ))));
            }
        };

        let mut hasher = Sha256::new();
        let start = if resume { have } else { 0 };
        let announced = response.content_length().map(|len| start + len);
        if let (Some(expected), Some(actual)) = (source.size, announced)
            && expected != actual
        {
            discard(partial);
            return Err(Attempt::Fatal(Failure::Size { expected, actual }));
        }
        let opened = if resume {
            hash_file(partial, &mut hasher)
                .and_then(|()| OpenOptions::new().append(true).open(partial))
        } else {
            File::create(partial)
        };
        let mut file = opened.map_err(|e| Attempt::Fatal(io_failure(partial, e)))?;

        let transfer =
            self.reporter
                .download_started(&source.file, source.size.or(announced), start);
        let copied = copy_hashing(
            &mut response,
            &mut file,
            &mut hasher,
            start,
            source.size,
            transfer.as_ref(),
        );
        let written = match copied {
            Ok(n) => n,
            Err(CopyError::Read(at, e)) => {
                // The partial file stays: the next attempt resumes from it.
                let _ = file.flush();
                transfer.fail(&format!("interrupted after {at} bytes"));
                return Err(Attempt::Retry(format!(
                    "the connection broke after {at} bytes: {}",
                    error_chain(&e)
                )));
            }
            Err(CopyError::TooLong(actual)) => {
                discard(partial);
                transfer.fail("too large");
                let expected = source.size.unwrap_or_default();
                return Err(Attempt::Fatal(Failure::Size { expected, actual }));
            }
            Err(CopyError::Write(e)) => {
                transfer.fail("cannot write to the cache");
                return Err(Attempt::Fatal(io_failure(partial, e)));
            }
        };
        if let Err(e) = file.sync_all() {
            return Err(Attempt::Fatal(io_failure(partial, e)));
        }
        drop(file);
        match verify(source, url, partial, written, hasher) {
            Ok(()) => {
                transfer.finish("verified");
                Ok(())
            }
            Err(failure) => {
                transfer.fail("failed verification");
                Err(Attempt::Fatal(failure))
            }
        }
    }

    /// Copies `<dir>/<file>` from a local mirror into `partial` and verifies it.
    fn try_local(&self, source: &Source, path: &Path, partial: &Path) -> Result<(), Failure> {
        let mut input = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Failure::NotFound("no such file".into()));
            }
            Err(e) => return Err(io_failure(path, e)),
        };
        let len = input.metadata().map_err(|e| io_failure(path, e))?.len();
        if let Some(expected) = source.size
            && expected != len
        {
            return Err(Failure::Size {
                expected,
                actual: len,
            });
        }
        let mut out = File::create(partial).map_err(|e| io_failure(partial, e))?;
        let transfer = self.reporter.download_started(&source.file, Some(len), 0);
        let mut hasher = Sha256::new();
        let written = match copy_hashing(
            &mut input,
            &mut out,
            &mut hasher,
            0,
            source.size,
            transfer.as_ref(),
        ) {
            Ok(n) => n,
            Err(e) => {
                drop(out);
                discard(partial);
                transfer.fail("copy failed");
                return Err(match e {
                    CopyError::Read(_, e) => io_failure(path, e),
                    CopyError::Write(e) => io_failure(partial, e),
                    CopyError::TooLong(actual) => Failure::Size {
                        expected: source.size.unwrap_or_default(),
                        actual,
                    },
                });
            }
        };
        out.sync_all().map_err(|e| io_failure(partial, e))?;
        drop(out);
        let shown = path.display().to_string();
        match verify(source, &shown, partial, written, hasher) {
            Ok(()) => {
                transfer.finish("verified");
                Ok(())
            }
            Err(failure) => {
                transfer.fail("failed verification");
                Err(failure)
            }
        }
    }
}

fn http_client() -> Result<Client> {
    Client::builder()
        .user_agent(concat!("python-fips-xtask/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        // In the blocking client this bounds every read, not the whole download.
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot set up the HTTP client")
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn file_url_path(url: &str) -> Result<PathBuf, String> {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .ok_or_else(|| format!("{url} is not a valid file:// URL (write file:///absolute/path)"))
}

/// The first byte position of a `Content-Range: bytes N-M/T` header.
fn content_range_start(response: &Response) -> Option<u64> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let spec = value.strip_prefix("bytes ")?;
    spec.split('-').next()?.trim().parse().ok()
}

enum CopyError {
    /// Reading failed after this many bytes (counting the resumed prefix).
    Read(u64, io::Error),
    Write(io::Error),
    /// More bytes than the catalog's size arrived.
    TooLong(u64),
}

/// Streams `input` to `out`, hashing as it goes; returns the total (`start` plus bytes copied).
fn copy_hashing(
    input: &mut dyn Read,
    out: &mut File,
    hasher: &mut Sha256,
    start: u64,
    limit: Option<u64>,
    transfer: &dyn Transfer,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = start;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(total, e)),
        };
        total += n as u64;
        if limit.is_some_and(|l| total > l) {
            return Err(CopyError::TooLong(total));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        transfer.advance(n as u64);
    }
}

/// Checks size and sha256 of a finished `partial`; removes it when either is wrong.
fn verify(
    source: &Source,
    url: &str,
    partial: &Path,
    written: u64,
    hasher: Sha256,
) -> Result<(), Failure> {
    if let Some(expected) = source.size
        && expected != written
    {
        discard(partial);
        return Err(Failure::Size {
            expected,
            actual: written,
        });
    }
    let actual = crate::prepare::hex(&hasher.finalize());
    if actual != source.sha256 {
        discard(partial);
        return Err(Failure::Checksum(ChecksumMismatch {
            url: url.to_string(),
            expected: source.sha256.clone(),
            actual,
        }));
    }
    Ok(())
}

fn hash_file(path: &Path, hasher: &mut Sha256) -> io::Result<()> {
    let mut file = File::open(path)?;
    io::copy(&mut file, hasher)?;
    Ok(())
}

/// Removes a partial file that must not be resumed; a failure to do so is caught by the next
/// verification, never trusted.
fn discard(partial: &Path) {
    let _ = std::fs::remove_file(partial);
}

fn io_failure(path: &Path, e: io::Error) -> Failure {
    Failure::Other(format!("{}: {e}", path.display()))
}

/// An error and its sources on one line (reqwest hides the useful part in the chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}
