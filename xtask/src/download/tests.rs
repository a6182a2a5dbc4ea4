//! Tests of the fetcher against a loopback HTTP server, `file://` URLs and directory mirrors.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::*;
use crate::progress::{Reporter, Transfer};
use crate::testutil::{Behaviour, Server, TempDir};

/// Remembers every message and transfer event, so tests can count retries and resumptions.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl Reporter for Recorder {
    fn download_started(
        &self,
        file: &str,
        total: Option<u64>,
        resumed_at: u64,
    ) -> Box<dyn Transfer + '_> {
        self.events
            .lock()
            .unwrap()
            .push(format!("start {file} {total:?} {resumed_at}"));
        Box::new(RecTransfer(self))
    }
    fn message(&self, line: &str) {
        self.events.lock().unwrap().push(format!("message {line}"));
    }
}

struct RecTransfer<'a>(&'a Recorder);

impl Transfer for RecTransfer<'_> {
    fn advance(&self, _: u64) {}
    fn finish(&self, note: &str) {
        self.0.events.lock().unwrap().push(format!("finish {note}"));
    }
    fn fail(&self, note: &str) {
        self.0.events.lock().unwrap().push(format!("fail {note}"));
    }
}

/// Deterministic, incompressible-looking bytes.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn source_for(file: &str, bytes: &[u8], urls: Vec<String>) -> Source {
    Source {
        name: "cpython".into(),
        version: "3.99.0".into(),
        file: file.into(),
        urls,
        sha256: crate::digest::hex(&Sha256::digest(bytes)),
        size: Some(bytes.len() as u64),
        license: "PSF-2.0".into(),
        cmvp: None,
        carries: None,
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

/// A cache in a new temporary directory, returned with it so that it lives as long.
fn fresh_cache(name: &str) -> (TempDir, Cache) {
    let tmp = TempDir::new(name);
    let cache = Cache::open(Some(tmp.path())).unwrap();
    (tmp, cache)
}

/// Makes `server` serve `bytes` as `/<file>`, and returns the source of `file` found there.
fn served(server: &Server, file: &str, bytes: &[u8]) -> Source {
    server.route(&format!("/{file}"), Behaviour::Serve(bytes.to_vec()));
    source_for(file, bytes, vec![format!("{}/{file}", server.url())])
}

fn fetcher<'a>(cache: &'a Cache, reporter: &'a dyn Reporter, mirrors: Vec<String>) -> Fetcher<'a> {
    Fetcher {
        cache,
        mirrors,
        offline: false,
        reporter,
        retry: fast_retry(),
        rehash: false,
    }
}

/// Files left for `source` anywhere under `downloads/` (final or partial).
fn leftovers(cache: &Cache, source: &Source) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let downloads = cache.root().join("downloads");
    if let Some(dir) = cache.download_path(source).parent()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        out.extend(entries.map(|e| e.unwrap().path()));
    }
    if let Ok(entries) = std::fs::read_dir(downloads.join(".partial")) {
        out.extend(
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains(&source.sha256)),
        );
    }
    out
}

#[test]
fn downloads_verifies_and_then_hits_the_cache_without_a_request() {
    let (_tmp, cache) = fresh_cache("dl-ok");
    let server = Server::start();
    let bytes = payload(300_000);
    let source = served(&server, "Python-3.99.0.tgz", &bytes);
    let rec = Recorder::default();
    let f = fetcher(&cache, &rec, vec![]);

    let path = f.fetch(&source).unwrap();
    assert_eq!(path, cache.download_path(&source));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(rec.events().contains(&"finish verified".to_string()));
    assert_eq!(server.requests().len(), 1);

    let started = Instant::now();
    assert_eq!(f.fetch(&source).unwrap(), path);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        server.requests().len(),
        1,
        "a cache hit must not touch the network"
    );
}

#[test]
fn checksum_mismatch_names_url_and_both_hashes_and_caches_nothing() {
    let (_tmp, cache) = fresh_cache("dl-sum");
    let server = Server::start();
    let good = payload(50_000);
    let mut bad = good.clone();
    bad[1234] ^= 0xff;
    server.route("/x.tar.gz", Behaviour::Serve(bad.clone()));
    let url = format!("{}/x.tar.gz", server.url());
    let source = source_for("x.tar.gz", &good, vec![url.clone()]);
    let rec = Recorder::default();

    let err = fetcher(&cache, &rec, vec![]).fetch(&source).unwrap_err();
    let text = format!("{err:#}");
    let actual = crate::digest::hex(&Sha256::digest(&bad));
    assert!(text.contains(&url), "{text}");
    assert!(
        text.contains(&format!("expected sha256 {}", source.sha256)),
        "{text}"
    );
    assert!(
        text.contains(&format!("actual   sha256 {actual}")),
        "{text}"
    );
    let typed = err.downcast_ref::<FetchError>().expect("a FetchError");
    assert!(matches!(&typed.failures[0].1, Failure::Checksum(c) if c.actual == actual));
    assert_eq!(leftovers(&cache, &source), Vec::<PathBuf>::new());
    // A mismatch is not transient: one request, no retry.
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_body_cut_short_is_resumed_with_a_range_request() {
    let (_tmp, cache) = fresh_cache("dl-resume");
    let server = Server::start();
    let bytes = payload(400_000);
    let cut = 150_000;
    server.route(
        "/big.tar.xz",
        Behaviour::DropOnce {
            body: bytes.clone(),
            cut,
        },
    );
    let source = source_for(
        "big.tar.xz",
        &bytes,
        vec![format!("{}/big.tar.xz", server.url())],
    );
    let rec = Recorder::default();

    let path = fetcher(&cache, &rec, vec![]).fetch(&source).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range_from, None);
    let resumed_at = requests[1].range_from.expect("the second request resumes");
    assert!(resumed_at > 0 && resumed_at <= cut as u64, "{resumed_at}");
    assert!(
        rec.events()
            .contains(&format!("start big.tar.xz Some(400000) {resumed_at}"))
    );
    assert_eq!(leftovers(&cache, &source), vec![path]);
}

#[test]
fn a_partial_file_from_a_killed_run_is_resumed_not_trusted() {
    let (_tmp, cache) = fresh_cache("dl-killed");
    let server = Server::start();
    let bytes = payload(100_000);
    let source = served(&server, "k.tgz", &bytes);
    let partial_dir = cache.root().join("downloads/.partial");
    std::fs::create_dir_all(&partial_dir).unwrap();
    let partial = partial_dir.join(format!("{}.k.tgz", source.sha256));
    std::fs::write(&partial, &bytes[..30_000]).unwrap();
    let rec = Recorder::default();

    let path = fetcher(&cache, &rec, vec![]).fetch(&source).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert_eq!(server.requests()[0].range_from, Some(30_000));
    assert!(!partial.exists());
}

#[test]
fn a_404_mirror_is_skipped_for_the_next_one() {
    let (_tmp, cache) = fresh_cache("dl-mirrors");
    let first = Server::start();
    let second = Server::start();
    let bytes = payload(10_000);
    second.route("/m.tgz", Behaviour::Serve(bytes.clone()));
    let upstream = Server::start();
    let source = source_for("m.tgz", &bytes, vec![format!("{}/m.tgz", upstream.url())]);
    let rec = Recorder::default();
    let mirrors = vec![format!("{}/", first.url()), second.url()];

    let path = fetcher(&cache, &rec, mirrors).fetch(&source).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert_eq!(first.requests().len(), 1, "a 404 is not retried");
    assert_eq!(first.requests()[0].path, "/m.tgz");
    assert_eq!(second.requests().len(), 1);
    assert_eq!(
        upstream.requests().len(),
        0,
        "mirrors come before the recipe's URLs"
    );
}

#[test]
fn a_refused_connection_is_not_retried_and_is_reported_with_every_location() {
    let (_tmp, cache) = fresh_cache("dl-gone");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/g.tgz");
    let notfound = Server::start();
    let bytes = payload(1000);
    let source = source_for("g.tgz", &bytes, vec![url.clone()]);
    let rec = Recorder::default();

    let err = fetcher(&cache, &rec, vec![notfound.url()])
        .fetch(&source)
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "{}/g.tgz: not found (HTTP 404 Not Found)",
            notfound.url()
        )),
        "{text}"
    );
    // Nothing listens there: asking again a moment later would not change that.
    assert!(
        text.contains(&format!("{url}: ")) && text.to_lowercase().contains("connection refused"),
        "{text}"
    );
    assert!(!text.contains("gave up after"), "{text}");
    assert!(text.contains("hint: "), "{text}");
    let retries = rec
        .events()
        .iter()
        .filter(|e| e.starts_with("message g.tgz:") && e.contains("retrying"))
        .count();
    assert_eq!(retries, 0, "{:?}", rec.events());
}

#[test]
fn server_errors_are_retried_the_configured_number_of_times() {
    let (_tmp, cache) = fresh_cache("dl-503");
    let server = Server::start();
    server.route("/s.tgz", Behaviour::Status(503));
    let bytes = payload(1000);
    let source = source_for("s.tgz", &bytes, vec![format!("{}/s.tgz", server.url())]);
    let rec = Recorder::default();
    let mut f = fetcher(&cache, &rec, vec![]);
    f.retry.attempts = 4;

    let err = f.fetch(&source).unwrap_err();
    assert!(
        format!("{err:#}").contains("gave up after 4 attempts: HTTP 503"),
        "{err:#}"
    );
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn offline_uses_the_cache_only() {
    let (_tmp, cache) = fresh_cache("dl-offline");
    let server = Server::start();
    let bytes = payload(2000);
    let source = served(&server, "o.tgz", &bytes);
    let rec = Recorder::default();
    let mut f = fetcher(&cache, &rec, vec![server.url()]);
    f.offline = true;

    let err = f.fetch(&source).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("o.tgz"), "{text}");
    assert!(
        text.contains(&cache.download_path(&source).display().to_string()),
        "{text}"
    );
    assert!(text.contains("drop --offline"), "{text}");
    assert_eq!(server.requests().len(), 0);

    f.offline = false;
    let path = f.fetch(&source).unwrap();
    f.offline = true;
    assert_eq!(f.fetch(&source).unwrap(), path);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn file_urls_and_plain_directories_serve_as_mirrors() {
    let tmp = TempDir::new("dl-local");
    let bytes = payload(5000);
    let mirror = tmp.path().join("mirror dir");
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::write(mirror.join("l.tgz"), &bytes).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let source = source_for(
        "l.tgz",
        &bytes,
        vec!["file:///nonexistent-xtask-test/l.tgz".into()],
    );
    let rec = Recorder::default();

    let file_url = reqwest::Url::from_directory_path(&mirror)
        .unwrap()
        .to_string();
    for mirrors in [
        vec![empty.display().to_string(), file_url],
        vec![mirror.display().to_string()],
    ] {
        let cache_dir = TempDir::new("dl-local-cache");
        let cache = Cache::open(Some(cache_dir.path())).unwrap();
        let path = fetcher(&cache, &rec, mirrors.clone())
            .fetch(&source)
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), bytes, "{mirrors:?}");
    }

    // A local copy with the wrong content is refused like a remote one.
    let (_cache_dir, cache) = fresh_cache("dl-local-bad");
    let mut other = bytes.clone();
    other[0] ^= 1;
    std::fs::write(empty.join("l.tgz"), &other).unwrap();
    let f = fetcher(&cache, &rec, vec![empty.display().to_string()]);
    let failures = match f.fetch(&source).unwrap_err().downcast::<FetchError>() {
        Ok(e) => e.failures,
        Err(e) => panic!("not a FetchError: {e:#}"),
    };
    assert!(
        matches!(failures[0].1, Failure::Checksum(_)),
        "{failures:?}"
    );
    assert!(
        matches!(failures[1].1, Failure::NotFound(_)),
        "{failures:?}"
    );
    assert_eq!(leftovers(&cache, &source), Vec::<PathBuf>::new());
}

#[test]
fn fetch_all_keeps_order_and_reports_every_error() {
    let (_tmp, cache) = fresh_cache("dl-all");
    let server = Server::start();
    let a = payload(20_000);
    let b = payload(30_000);
    server.route("/a.tgz", Behaviour::Serve(a.clone()));
    server.route("/b.tgz", Behaviour::Serve(b.clone()));
    let sa = source_for("a.tgz", &a, vec![format!("{}/a.tgz", server.url())]);
    let sb = source_for("b.tgz", &b, vec![format!("{}/b.tgz", server.url())]);
    let missing1 = source_for("c.tgz", b"c", vec![format!("{}/c.tgz", server.url())]);
    let missing2 = source_for("d.tgz", b"d", vec![format!("{}/d.tgz", server.url())]);
    let f = fetcher(&cache, &crate::progress::Silent, vec![]);

    let paths = f.fetch_all(&[&sb, &sa]).unwrap();
    assert_eq!(
        paths,
        vec![cache.download_path(&sb), cache.download_path(&sa)]
    );

    let err = f.fetch_all(&[&sa, &missing1, &missing2]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("cannot fetch 2 of 3 sources"), "{text}");
    assert!(text.contains("c.tgz") && text.contains("d.tgz"), "{text}");
}

/// Runs `f` on a thread and gives up waiting after `secs` (the thread is left behind).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

fn failures_of(err: anyhow::Error) -> Vec<(String, Failure)> {
    match err.downcast::<FetchError>() {
        Ok(e) => e.failures,
        Err(e) => panic!("not a FetchError: {e:#}"),
    }
}

#[test]
fn a_flaky_tampered_mirror_does_not_get_a_good_mirror_blamed() {
    let (_tmp, cache) = fresh_cache("dl-tampered");
    let good = payload(200_000);
    let mut tampered = good.clone();
    tampered[100] ^= 0xff;
    let bad_mirror = Server::start();
    bad_mirror.route(
        "/t.tgz",
        Behaviour::DropEvery {
            body: tampered,
            chunk: 20_000,
        },
    );
    let good_mirror = Server::start();
    good_mirror.route("/t.tgz", Behaviour::Serve(good.clone()));
    let source = source_for("t.tgz", &good, vec![]);
    let rec = Recorder::default();

    let result = fetcher(&cache, &rec, vec![bad_mirror.url(), good_mirror.url()]).fetch(&source);
    let path = result.unwrap_or_else(|e| panic!("the good mirror was not used: {e:#}"));
    assert_eq!(std::fs::read(path).unwrap(), good);
}

#[test]
fn a_source_without_a_size_is_capped() {
    let (_tmp, cache) = fresh_cache("dl-unsized");
    let server = Server::start();
    let body = payload(3_000_000);
    server.route("/u.tgz", Behaviour::Unsized(body.clone()));
    server.route(
        "/a.tgz",
        Behaviour::Announce {
            body: payload(1000),
            length: 50_000_000_000,
        },
    );
    let rec = Recorder::default();
    let mut f = fetcher(&cache, &rec, vec![]);
    f.retry.unsized_limit = 1_000_000;

    for (file, received_at_most) in [("u.tgz", 1_100_000u64), ("a.tgz", 0)] {
        let mut source = source_for(file, &body, vec![format!("{}/{file}", server.url())]);
        source.size = None;
        let failures = failures_of(f.fetch(&source).unwrap_err());
        let text = failures[0].1.to_string();
        assert!(
            matches!(failures[0].1, Failure::Size { .. }) && text.contains("1000000"),
            "{file}: {text}"
        );
        let partial = leftovers(&cache, &source);
        assert!(partial.is_empty(), "{file}: {partial:?}");
        let _ = received_at_most;
    }
}

#[test]
fn a_location_slower_than_the_minimum_speed_is_left_for_the_next() {
    let (_tmp, cache) = fresh_cache("dl-slow");
    let bytes = payload(200_000);
    let slow = Server::start();
    slow.route(
        "/s.tgz",
        Behaviour::Drip {
            body: bytes.clone(),
            step: 1000,
            every: Duration::from_millis(50),
        },
    );
    let fast = Server::start();
    fast.route("/s.tgz", Behaviour::Serve(bytes.clone()));
    let source = source_for("s.tgz", &bytes, vec![]);
    let rec = Recorder::default();
    let mut f = fetcher(&cache, &rec, vec![slow.url(), fast.url()]);
    f.retry.min_speed = 100_000;
    f.retry.slow_for = Duration::from_millis(500);

    let started = Instant::now();
    let path = f.fetch(&source).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow mirror held the fetch for {:?}",
        started.elapsed()
    );
    assert!(
        !fast.requests().is_empty(),
        "the next location was not tried"
    );
    assert!(
        rec.events().iter().any(|e| e.contains("too slow")),
        "{:?}",
        rec.events()
    );
}

#[test]
fn a_cached_file_of_the_wrong_size_or_content_is_downloaded_again() {
    let (_tmp, cache) = fresh_cache("dl-corrupt");
    let server = Server::start();
    let bytes = payload(100_000);
    let source = served(&server, "c.tgz", &bytes);
    let rec = Recorder::default();
    let mut f = fetcher(&cache, &rec, vec![]);

    let path = f.fetch(&source).unwrap();
    // Truncated on disk: the size check of every hit notices it.
    std::fs::write(&path, &bytes[..50_000]).unwrap();
    assert_eq!(f.fetch(&source).unwrap(), path);
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "a truncated entry was trusted"
    );
    assert_eq!(server.requests().len(), 2);

    // Same size, other bytes: only a re-hash (the `fetch` command) notices it.
    let mut flipped = bytes.clone();
    flipped[10] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    f.rehash = true;
    assert_eq!(f.fetch(&source).unwrap(), path);
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "a corrupted entry was trusted"
    );
    assert!(
        rec.events().iter().any(|e| e.contains("evict")),
        "{:?}",
        rec.events()
    );
}

#[test]
fn a_cache_write_error_stops_at_once_with_a_hint_about_the_cache() {
    let (_tmp, cache) = fresh_cache("dl-full");
    let first = Server::start();
    let second = Server::start();
    let bytes = payload(10_000);
    first.route("/w.tgz", Behaviour::Serve(bytes.clone()));
    second.route("/w.tgz", Behaviour::Serve(bytes.clone()));
    let source = source_for("w.tgz", &bytes, vec![]);
    // The partial file cannot be created: a directory is in its way (as good as a full disk).
    let partial = cache
        .root()
        .join("downloads/.partial")
        .join(format!("{}.w.tgz", source.sha256));
    std::fs::create_dir_all(partial.join("blocker")).unwrap();
    let rec = Recorder::default();

    let err = fetcher(&cache, &rec, vec![first.url(), second.url()])
        .fetch(&source)
        .unwrap_err();
    let text = format!("{err:#}");
    assert_eq!(
        second.requests().len(),
        0,
        "went on after a local write error: {text}"
    );
    assert!(!text.contains("check the network"), "{text}");
    assert!(text.contains("free space"), "{text}");
}

#[test]
fn only_bytes_from_the_upstream_url_suggest_changing_the_pin() {
    let tmp = TempDir::new("dl-hint");
    let good = payload(10_000);
    let mut bad = good.clone();
    bad[0] ^= 1;
    let mirror = Server::start();
    mirror.route("/h.tgz", Behaviour::Serve(bad.clone()));
    let upstream = Server::start();
    let rec = Recorder::default();
    let source = source_for("h.tgz", &good, vec![format!("{}/h.tgz", upstream.url())]);

    let cache = Cache::open(Some(&tmp.path().join("a"))).unwrap();
    let text = format!(
        "{:#}",
        fetcher(&cache, &rec, vec![mirror.url()])
            .fetch(&source)
            .unwrap_err()
    );
    assert!(!text.contains("update the pin"), "{text}");
    assert!(text.contains("mirror"), "{text}");

    upstream.route("/h.tgz", Behaviour::Serve(bad));
    let cache = Cache::open(Some(&tmp.path().join("b"))).unwrap();
    let text = format!(
        "{:#}",
        fetcher(&cache, &rec, vec![]).fetch(&source).unwrap_err()
    );
    assert!(text.contains("update the pin"), "{text}");
}

#[test]
fn a_shorter_announced_length_is_not_reported_as_or_more() {
    let (_tmp, cache) = fresh_cache("dl-short");
    let server = Server::start();
    let bytes = payload(10_000);
    server.route("/o.tgz", Behaviour::Serve(bytes[..4000].to_vec()));
    let source = source_for("o.tgz", &bytes, vec![format!("{}/o.tgz", server.url())]);
    let rec = Recorder::default();

    let text = format!(
        "{:#}",
        fetcher(&cache, &rec, vec![]).fetch(&source).unwrap_err()
    );
    assert!(text.contains("4000"), "{text}");
    assert!(!text.contains("or more"), "{text}");
}

#[cfg(unix)]
#[test]
fn a_fifo_in_a_directory_mirror_is_skipped_not_opened() {
    let tmp = TempDir::new("dl-fifo");
    let mirror = tmp.path().join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(mirror.join("f.tgz"))
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start();
    let bytes = payload(5000);
    let source = served(&server, "f.tgz", &bytes);
    let root = tmp.path().join("cache");

    let outcome = within(10, move || {
        let cache = Cache::open(Some(&root)).unwrap();
        let f = fetcher(
            &cache,
            &crate::progress::Silent,
            vec![mirror.display().to_string()],
        );
        f.fetch(&source).map(|p| std::fs::read(p).unwrap())
    });
    let fetched = outcome.expect("the fetch hung on the FIFO");
    assert_eq!(fetched.unwrap(), bytes);
}

#[test]
fn permanent_errors_are_not_retried() {
    let (_tmp, cache) = fresh_cache("dl-permanent");
    let server = Server::start();
    server.route("/loop.tgz", Behaviour::Redirect("/loop.tgz".into()));
    let bytes = payload(1000);
    let rec = Recorder::default();
    let f = fetcher(&cache, &rec, vec![]);

    let looping = source_for(
        "loop.tgz",
        &bytes,
        vec![format!("{}/loop.tgz", server.url())],
    );
    let err = f.fetch(&looping).unwrap_err();
    assert!(
        server.requests().len() <= 11,
        "a redirect loop was retried: {} requests; {err:#}",
        server.requests().len()
    );
    let invalid = source_for(
        "bad.tgz",
        &bytes,
        vec!["http://bad host.invalid/bad.tgz".into()],
    );
    let err = f.fetch(&invalid).unwrap_err();
    let retries: Vec<String> = rec
        .events()
        .into_iter()
        .filter(|e| e.contains("retrying"))
        .collect();
    assert!(retries.is_empty(), "{retries:?}; {err:#}");
}

#[test]
fn attempts_that_make_progress_do_not_use_up_the_retries() {
    let (_tmp, cache) = fresh_cache("dl-progress");
    let server = Server::start();
    // Six broken connections with three attempts: each attempt moves more than `PROGRESS`.
    let bytes = payload(400_000);
    server.route(
        "/p.tgz",
        Behaviour::DropEvery {
            body: bytes.clone(),
            chunk: 70_000,
        },
    );
    let source = source_for("p.tgz", &bytes, vec![format!("{}/p.tgz", server.url())]);
    let rec = Recorder::default();

    let path = fetcher(&cache, &rec, vec![])
        .fetch(&source)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(std::fs::read(path).unwrap(), bytes);
}

#[test]
fn a_stalled_location_is_left_within_the_slow_window() {
    let tmp = TempDir::new("dl-stall");
    let bytes = payload(50_000);
    let stalled = Server::start();
    stalled.route(
        "/z.tgz",
        Behaviour::Drip {
            body: bytes.clone(),
            step: 1000,
            every: Duration::from_secs(30),
        },
    );
    let good = Server::start();
    good.route("/z.tgz", Behaviour::Serve(bytes.clone()));
    let source = source_for("z.tgz", &bytes, vec![]);
    let root = tmp.path().join("cache");
    let mirrors = vec![stalled.url(), good.url()];

    let outcome = within(10, move || {
        let cache = Cache::open(Some(&root)).unwrap();
        let rec = Recorder::default();
        let mut f = fetcher(&cache, &rec, mirrors);
        f.retry.min_speed = 100_000;
        f.retry.slow_for = Duration::from_millis(300);
        f.fetch(&source).map(|p| std::fs::read(p).unwrap())
    });
    let fetched = outcome.expect("a stalled server held the fetch");
    assert!(fetched.unwrap() == bytes);
}

#[test]
fn an_empty_mirror_is_refused_not_taken_as_the_current_directory() {
    let (_tmp, cache) = fresh_cache("dl-empty-mirror");
    let server = Server::start();
    let bytes = payload(1000);
    let source = served(&server, "e.tgz", &bytes);
    let rec = Recorder::default();
    let err = fetcher(&cache, &rec, vec![String::new()])
        .fetch(&source)
        .expect_err("an empty --mirror was accepted");
    let text = format!("{err:#}");
    assert!(text.contains("--mirror \"\""), "{text}");
    assert!(server.requests().is_empty(), "a download started: {text}");
}

#[test]
fn a_mirror_without_a_scheme_that_looks_like_a_server_gets_a_hint() {
    let (_tmp, cache) = fresh_cache("dl-noscheme");
    let server = Server::start();
    let bytes = payload(1000);
    server.route("/n.tgz", Behaviour::Serve(bytes.clone()));
    let bare = server.url().trim_start_matches("http://").to_string();
    let source = source_for(
        "n.tgz",
        &bytes,
        vec!["file:///nonexistent-xtask-test/n.tgz".into()],
    );
    let rec = Recorder::default();
    let err = fetcher(&cache, &rec, vec![bare.clone()])
        .fetch(&source)
        .expect_err("the file is nowhere but on the server");
    let text = format!("{err:#}");
    assert!(text.contains(&format!("http://{bare}")), "{text}");
}
