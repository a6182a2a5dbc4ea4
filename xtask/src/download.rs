//! Verified downloads: mirrors first, then the recipe's URLs; sha256 and size checked while streaming.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::blocking::{Client, Response};
use sha2::{Digest, Sha256};

use crate::cache::{self, Cache};
use crate::catalog::Source;
use crate::progress::{Reporter, Transfer};

mod error;
#[cfg(test)]
mod tests;

pub use error::{ChecksumMismatch, Failure, FetchError, Seen};

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
    /// Re-hash a cached file before trusting it (the `fetch` command); otherwise a hit is
    /// checked by its size only.
    pub rehash: bool,
}

/// How often, and how patiently, a transient failure (connect error, timeout, 5xx, body cut
/// short) is retried on one location before moving to the next.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per location, the first one included.
    pub attempts: u32,
    /// The wait after the first failure; it doubles after each further one, with jitter.
    pub base_delay: Duration,
    /// A location slower than this many bytes per second for `slow_for` is left for the next.
    pub min_speed: u64,
    pub slow_for: Duration,
    /// The most bytes accepted for a source whose catalog entry has no `size`.
    pub unsized_limit: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            min_speed: 10 * 1024,
            slow_for: Duration::from_secs(30),
            unsized_limit: 128 * 1024 * 1024,
        }
    }
}

impl RetryPolicy {
    /// The slowest transfer this policy tolerates.
    pub fn pace(&self) -> Pace {
        Pace {
            min_speed: self.min_speed,
            over: self.slow_for,
        }
    }

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

/// Refuses a `--mirror` that names nothing: an empty one would be the current directory.
fn check_mirrors(mirrors: &[String]) -> Result<()> {
    if mirrors.iter().any(|m| m.trim().is_empty()) {
        bail!(
            "--mirror \"\" names no mirror\nhint: give a URL (http://, https://, file://) or a directory, or leave --mirror out"
        );
    }
    Ok(())
}

/// Whether a mirror without a scheme is no directory here but starts like `host:port`, as a
/// server's address missing its `http://`.
fn looks_like_a_server(base: &str) -> bool {
    let first = base.split('/').next().unwrap_or_default();
    !Path::new(base).exists()
        && first
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Where a candidate copy of a file may be.
enum Location {
    Http(String),
    Local(PathBuf),
    Invalid(String),
}

/// The outcome of one HTTP attempt that did not produce a verified file.
enum Attempt {
    /// A transient failure; `progressed` when the attempt added bytes worth keeping.
    Retry {
        why: String,
        progressed: bool,
    },
    /// A resumed file failed verification: the bytes on disk may have come from elsewhere, so
    /// this location gets one more try from byte 0 before it is blamed.
    Restart(Failure),
    Fatal(Failure),
}

/// An attempt that moved at least this many bytes does not count against the retries.
const PROGRESS: u64 = 64 * 1024;

fn retry(why: impl Into<String>) -> Attempt {
    Attempt::Retry {
        why: why.into(),
        progressed: false,
    }
}

impl<'a> Fetcher<'a> {
    /// Returns the path of the verified file in the cache, downloading it if needed.
    pub fn fetch(&self, source: &Source) -> Result<PathBuf> {
        check_mirrors(&self.mirrors)?;
        let dest = self.cache.download_path(source);
        if dest.is_file() {
            match self.check_hit(source, &dest) {
                Ok(()) => return Ok(dest),
                Err(why) if self.offline => bail!(
                    "the cached {} ({source}) is damaged: {why}\n  at {}\nhint: drop --offline to download it again",
                    source.file,
                    dest.display()
                ),
                Err(why) => {
                    self.reporter.message(&format!(
                        "{}: the cached copy is damaged ({why}); evicting it and downloading again",
                        source.file
                    ));
                    cache::remove(&dest)?;
                }
            }
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
                        client = Some(http_client(self.retry.slow_for)?);
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
                // No other location can fix a cache that cannot be written.
                Err(failure @ Failure::Local(_)) => {
                    failures.push((shown, failure));
                    break;
                }
                Err(failure) => failures.push((shown, failure)),
            }
        }
        Err(FetchError {
            file: source.file.clone(),
            source_name: source.to_string(),
            failures,
            upstream: source.urls.clone(),
            downloads: self.cache.root().join("downloads"),
        }
        .into())
    }

    /// Whether a cached file is still what was verified: its size always, its sha256 too when
    /// `rehash` is set. The answer is why not.
    fn check_hit(&self, source: &Source, dest: &Path) -> Result<(), String> {
        let len = std::fs::metadata(dest).map_err(|e| e.to_string())?.len();
        if let Some(size) = source.size
            && size != len
        {
            return Err(format!("{len} bytes instead of {size}"));
        }
        if self.rehash {
            let mut hasher = Sha256::new();
            hash_file(dest, &mut hasher).map_err(|e| e.to_string())?;
            let actual = crate::digest::hex(&hasher.finalize());
            if actual != source.sha256 {
                return Err(format!("its sha256 is now {actual}"));
            }
        }
        Ok(())
    }

    /// The most bytes accepted for `source`: its size, or the hard limit when it has none.
    fn limit(&self, source: &Source) -> u64 {
        source.size.unwrap_or(self.retry.unsized_limit)
    }

    /// Fetches several sources concurrently; paths in the same order.
    pub fn fetch_all(&self, sources: &[&Source]) -> Result<Vec<PathBuf>> {
        check_mirrors(&self.mirrors)?;
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
            } else if looks_like_a_server(base) {
                Location::Invalid(format!(
                    "no such directory (a --mirror without http:// or file:// is a directory); for a server, give --mirror http://{base}"
                ))
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
        // Failed attempts in a row that made no progress; one that did resets the count.
        let mut failed = 0;
        let mut restarted = false;
        loop {
            match self.http_attempt(client, source, url, partial) {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(failure)) => return Err(failure),
                Err(Attempt::Restart(failure)) if restarted => return Err(failure),
                Err(Attempt::Restart(failure)) => {
                    restarted = true;
                    self.reporter.message(&format!(
                        "{}: the resumed download failed verification ({}); starting over from byte 0",
                        source.file,
                        failure.to_string().lines().next().unwrap_or_default()
                    ));
                }
                Err(Attempt::Retry { why, progressed }) => {
                    failed = if progressed { 1 } else { failed + 1 };
                    if failed >= attempts {
                        return Err(Failure::GaveUp {
                            attempts,
                            last: why,
                        });
                    }
                    let delay = self.retry.delay(failed);
                    self.reporter.message(&format!(
                        "{}: {why}; retrying in {:.1}s (attempt {} of {attempts})",
                        source.file,
                        delay.as_secs_f64(),
                        failed + 1
                    ));
                    std::thread::sleep(delay);
                }
            }
        }
    }

    /// One request: resumes a partial file with `Range` when there is one.
    fn http_attempt(
        &self,
        client: &Client,
        source: &Source,
        url: &str,
        partial: &Path,
    ) -> Result<(), Attempt> {
        let limit = self.limit(source);
        let have = match complete_partial(source, url, partial, limit)? {
            Complete::Verified => return Ok(()),
            Complete::Resume(have) => have,
        };
        let mut response = send(client, url, have)?;
        let resume = resumes(&response, have, partial)?;
        let mut hasher = Sha256::new();
        let start = if resume { have } else { 0 };
        let announced = response.content_length().map(|len| start + len);
        check_announced(source, announced, limit, partial)?;
        let opened = if resume {
            hash_file(partial, &mut hasher)
                .and_then(|()| OpenOptions::new().append(true).open(partial))
        } else {
            File::create(partial)
        };
        let mut file = opened.map_err(|e| Attempt::Fatal(local_failure(partial, e)))?;

        let transfer =
            self.reporter
                .download_started(&source.file, source.size.or(announced), start);
        let pace = self.retry.pace();
        let copied = copy_hashing(
            &mut response,
            &mut file,
            &mut hasher,
            start,
            limit,
            Some(pace),
            transfer.as_ref(),
        );
        let written = match copied {
            Ok(n) => n,
            Err(e) => {
                let failed = Interrupted {
                    source,
                    partial,
                    limit,
                    start,
                    pace,
                };
                return Err(failed.attempt(e, &mut file, transfer.as_ref()));
            }
        };
        if let Err(e) = file.sync_all() {
            return Err(Attempt::Fatal(local_failure(partial, e)));
        }
        drop(file);
        match verify(source, url, partial, written, hasher) {
            Ok(()) => {
                transfer.finish("verified");
                Ok(())
            }
            Err(failure) if resume => {
                transfer.fail("failed verification after resuming");
                Err(Attempt::Restart(failure))
            }
            Err(failure) => {
                transfer.fail("failed verification");
                Err(Attempt::Fatal(failure))
            }
        }
    }

    /// Copies `<dir>/<file>` from a local mirror into `partial` and verifies it.
    fn try_local(&self, source: &Source, path: &Path, partial: &Path) -> Result<(), Failure> {
        let (mut input, len) = open_local(path)?;
        let limit = self.limit(source);
        let wrong = match source.size {
            Some(expected) => (expected != len).then_some(Seen::Received),
            None => (len > limit).then_some(Seen::OverLimit),
        };
        if let Some(seen) = wrong {
            return Err(Failure::Size {
                expected: limit,
                actual: len,
                seen,
            });
        }
        let mut out = File::create(partial).map_err(|e| local_failure(partial, e))?;
        let transfer = self.reporter.download_started(&source.file, Some(len), 0);
        let mut hasher = Sha256::new();
        let written = match copy_hashing(
            &mut input,
            &mut out,
            &mut hasher,
            0,
            limit,
            None,
            transfer.as_ref(),
        ) {
            Ok(n) => n,
            Err(e) => {
                drop(out);
                discard(partial);
                transfer.fail("copy failed");
                return Err(match e {
                    CopyError::Read(_, e) => io_failure(path, e),
                    CopyError::Write(e) => local_failure(partial, e),
                    CopyError::TooLong(actual) => Failure::Size {
                        expected: limit,
                        actual,
                        seen: if source.size.is_some() {
                            Seen::Exceeded
                        } else {
                            Seen::OverLimit
                        },
                    },
                    CopyError::TooSlow { .. } => unreachable!("no pace is set for a local copy"),
                });
            }
        };
        out.sync_all().map_err(|e| local_failure(partial, e))?;
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

/// Opens the regular file `path` of a local mirror; returns it with its length.
fn open_local(path: &Path) -> Result<(File, u64), Failure> {
    // Checked before opening: opening a FIFO (or a device) would block or never end.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(Failure::Other("not a regular file".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::NotFound("no such file".into()));
        }
        Err(e) => return Err(io_failure(path, e)),
    }
    let input = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::NotFound("no such file".into()));
        }
        Err(e) => return Err(io_failure(path, e)),
    };
    let meta = input.metadata().map_err(|e| io_failure(path, e))?;
    if !meta.is_file() {
        return Err(Failure::Other("not a regular file".into()));
    }
    Ok((input, meta.len()))
}

/// Asks for `url`, from byte `have` on when there are bytes already.
fn send(client: &Client, url: &str, have: u64) -> Result<reqwest::blocking::Response, Attempt> {
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    request.send().map_err(|e| {
        let why = error_chain(&e);
        if is_permanent(&e, &why) {
            Attempt::Fatal(Failure::Other(why))
        } else {
            retry(why)
        }
    })
}

/// What a partial file left by an earlier attempt is worth.
enum Complete {
    /// It was whole and verified: nothing to download.
    Verified,
    /// Resume after this many bytes (0: start over).
    Resume(u64),
}

/// Checks a partial file of full length (a run killed before the rename), which still has to
/// verify; one that does not, or is longer than `limit`, is discarded.
fn complete_partial(
    source: &Source,
    url: &str,
    partial: &Path,
    limit: u64,
) -> Result<Complete, Attempt> {
    let have = std::fs::metadata(partial).map_or(0, |m| m.len());
    if have < limit || have == 0 {
        return Ok(Complete::Resume(have));
    }
    if Some(have) == source.size {
        let mut hasher = Sha256::new();
        hash_file(partial, &mut hasher).map_err(|e| Attempt::Fatal(local_failure(partial, e)))?;
        if verify(source, url, partial, have, hasher).is_ok() {
            return Ok(Complete::Verified);
        }
    }
    discard(partial);
    Ok(Complete::Resume(0))
}

/// Whether the server's answer resumes the `have` bytes of `partial` (`false`: it sends the
/// whole file), or the attempt's failure.
fn resumes(
    response: &reqwest::blocking::Response,
    have: u64,
    partial: &Path,
) -> Result<bool, Attempt> {
    let status = response.status();
    match status.as_u16() {
        200 => Ok(false),
        206 if have > 0 && content_range_start(response) == Some(have) => Ok(true),
        206 if have > 0 => {
            discard(partial);
            Err(retry("the server resumed at another offset; starting over"))
        }
        416 if have > 0 => {
            discard(partial);
            Err(retry(
                "the server cannot resume the partial download; starting over",
            ))
        }
        404 | 403 | 410 => Err(Attempt::Fatal(Failure::NotFound(format!("HTTP {status}")))),
        408 | 429 | 500..=599 => Err(retry(format!("HTTP {status}"))),
        _ => Err(Attempt::Fatal(Failure::Other(format!(
            "unexpected HTTP {status}"
        )))),
    }
}

/// Refuses a download whose announced length (`start` plus the body's) is not the catalog's
/// size, or over the limit when the catalog gives none.
fn check_announced(
    source: &Source,
    announced: Option<u64>,
    limit: u64,
    partial: &Path,
) -> Result<(), Attempt> {
    let Some(actual) = announced else {
        return Ok(());
    };
    let wrong = match source.size {
        Some(expected) => (expected != actual).then_some(Seen::Announced),
        None => (actual > limit).then_some(Seen::OverLimit),
    };
    match wrong {
        Some(seen) => {
            discard(partial);
            Err(Attempt::Fatal(Failure::Size {
                expected: limit,
                actual,
                seen,
            }))
        }
        None => Ok(()),
    }
}

/// A download whose body stopped before its end, and what it was to be.
struct Interrupted<'a> {
    source: &'a Source,
    partial: &'a Path,
    limit: u64,
    start: u64,
    pace: Pace,
}

impl Interrupted<'_> {
    /// The attempt's outcome for the copy's error `e`: the bytes so far stay for a resume
    /// unless they cannot be the file.
    fn attempt(&self, e: CopyError, file: &mut File, transfer: &dyn Transfer) -> Attempt {
        match e {
            CopyError::Read(at, e) => {
                // The partial file stays: the next attempt resumes from it.
                let _ = file.flush();
                transfer.fail(&format!("interrupted after {at} bytes"));
                Attempt::Retry {
                    why: format!("the connection broke after {at} bytes: {}", error_chain(&e)),
                    progressed: at - self.start >= PROGRESS,
                }
            }
            CopyError::TooSlow { at, speed } => {
                // The bytes so far are kept: the next location may resume them.
                let _ = file.flush();
                transfer.fail("too slow");
                Attempt::Fatal(Failure::Other(format!(
                    "too slow: {speed} bytes/s for {}s (the minimum is {} bytes/s); left after {at} bytes",
                    self.pace.over.as_secs(),
                    self.pace.min_speed
                )))
            }
            CopyError::TooLong(actual) => {
                discard(self.partial);
                transfer.fail("too large");
                let seen = if self.source.size.is_some() {
                    Seen::Exceeded
                } else {
                    Seen::OverLimit
                };
                Attempt::Fatal(Failure::Size {
                    expected: self.limit,
                    actual,
                    seen,
                })
            }
            CopyError::Write(e) => {
                transfer.fail("cannot write to the cache");
                Attempt::Fatal(local_failure(self.partial, e))
            }
        }
    }
}

/// `stall`: the longest a read may wait (a server silent that long is under any minimum speed).
pub(crate) fn http_client(stall: Duration) -> Result<Client> {
    Client::builder()
        .user_agent(concat!("python-fips-xtask/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        // In the blocking client this bounds every read, not the whole download.
        .timeout(stall.max(Duration::from_millis(100)))
        .build()
        .context("cannot set up the HTTP client")
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

pub(crate) fn file_url_path(url: &str) -> Result<PathBuf, String> {
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

pub enum CopyError {
    /// Reading failed after this many bytes (counting the resumed prefix).
    Read(u64, io::Error),
    Write(io::Error),
    /// More bytes than the limit (the catalog's size, or the hard limit) arrived.
    TooLong(u64),
    /// Fewer than the minimum bytes per second arrived over a whole window.
    TooSlow {
        at: u64,
        speed: u64,
    },
}

/// The slowest transfer tolerated: `min_speed` bytes per second, measured over `over`.
#[derive(Clone, Copy)]
pub struct Pace {
    pub min_speed: u64,
    pub over: Duration,
}

/// Streams `input` to `out`, hashing as it goes; returns the total (`start` plus bytes copied).
pub fn copy_hashing(
    input: &mut dyn Read,
    out: &mut File,
    hasher: &mut Sha256,
    start: u64,
    limit: u64,
    pace: Option<Pace>,
    transfer: &dyn Transfer,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = start;
    let mut window = (Instant::now(), total);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Nothing at all for a whole window: as slow as it gets.
            Err(e) if pace.is_some() && is_timeout(&e) => {
                return Err(CopyError::TooSlow {
                    at: total,
                    speed: 0,
                });
            }
            Err(e) => return Err(CopyError::Read(total, e)),
        };
        total += n as u64;
        if total > limit {
            return Err(CopyError::TooLong(total));
        }
        if let Some(pace) = pace {
            let elapsed = window.0.elapsed();
            if elapsed >= pace.over {
                let speed = ((total - window.1) as f64 / elapsed.as_secs_f64()) as u64;
                if speed < pace.min_speed {
                    return Err(CopyError::TooSlow { at: total, speed });
                }
                window = (Instant::now(), total);
            }
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        transfer.advance(n as u64);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut || error_chain(e).contains("timed out")
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
            seen: Seen::Received,
        });
    }
    let actual = crate::digest::hex(&hasher.finalize());
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

/// A failure to write the cache: it ends the fetch, whatever other locations there are.
fn local_failure(path: &Path, e: io::Error) -> Failure {
    Failure::Local(format!("cannot write {}: {e}", path.display()))
}

/// Errors no retry can mend: a malformed request or URL, a redirect loop, a name that does not
/// resolve, a certificate that is not trusted, a refused connection (nothing listens there).
fn is_permanent(e: &reqwest::Error, chain: &str) -> bool {
    let chain = chain.to_ascii_lowercase();
    let mut causes = std::iter::successors(std::error::Error::source(e), |c| c.source());
    let refused = causes.any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
    });
    refused
        || e.is_builder()
        || e.is_redirect()
        || chain.contains("dns error")
        || chain.contains("failed to lookup address")
        || chain.contains("certificate")
        || chain.contains("invalid url")
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
