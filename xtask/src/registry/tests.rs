//! The registry client against reference parsing, logins and a loopback HTTP server.

use super::*;
use crate::testutil::{Behaviour, Server, TempDir};
use std::time::Duration;

#[test]
fn a_reference_needs_a_registry_host_and_a_plain_repository() {
    assert_eq!(
        parse_reference(
            "--cache-registry",
            "registry.example.com/team/python-fips-cache"
        )
        .unwrap(),
        (
            "registry.example.com".to_string(),
            "team/python-fips-cache".to_string()
        )
    );
    assert_eq!(
        parse_reference("--cache-registry", "127.0.0.1:5117/cache")
            .unwrap()
            .0,
        "127.0.0.1:5117"
    );
    for (bad, says) in [
        ("cache", "names no repository"),
        ("team/cache", "does not start with a registry host"),
        ("registry.example.com/", "must be lowercase"),
        ("registry.example.com/Team/cache", "must be lowercase"),
        ("registry.example.com/cache:latest", "no tag or digest"),
        ("registry.example.com/a//b", "must be lowercase"),
        ("https://registry.example.com/cache", "without a scheme"),
        ("registry.example.com:abc/cache", "is not a number"),
    ] {
        let e = format!(
            "{:#}",
            parse_reference("--cache-registry", bad).unwrap_err()
        );
        assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        assert!(e.contains("e.g. registry.example.com/"), "{e}");
    }
}

#[test]
fn plain_http_is_for_loopback_hosts_only() {
    for host in [
        "127.0.0.1:5117",
        "localhost:5000",
        "localhost",
        "[::1]:5000",
        "127.9.9.9",
    ] {
        assert!(is_loopback(host), "{host}");
    }
    for host in [
        "registry.example.com",
        "10.0.0.1:5000",
        "localhost.example.com:5000",
    ] {
        assert!(!is_loopback(host), "{host}");
    }
    let r = Registry::open("registry.example.com/team/cache").unwrap();
    assert!(
        r.url("manifests/x")
            .starts_with("https://registry.example.com/v2/team/cache/")
    );
    let r = Registry::open("127.0.0.1:5117/cache").unwrap();
    assert_eq!(
        r.url("manifests/x"),
        "http://127.0.0.1:5117/v2/cache/manifests/x"
    );
}

#[test]
fn a_bearer_challenge_gives_its_parameters() {
    let c = parse_challenge(
        r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/cache:pull""#,
    );
    assert_eq!(c["realm"], "https://auth.example.com/token");
    assert_eq!(c["service"], "registry.example.com");
    assert_eq!(c["scope"], "repository:team/cache:pull");
}

#[test]
fn logins_come_from_the_helper_then_the_auths_entry_of_the_host() {
    // `user:secret`, as `docker login` stores it.
    let config = serde_json::json!({
        "auths": {
            "https://registry.example.com": { "auth": "dXNlcjpzZWNyZXQ=" },
            "other.example.com": { "auth": "b3RoZXI6eA==" }
        },
        "credHelpers": { "helped.example.com": "pass" }
    });
    let no_helper = |_: &str, _: &str| None;
    assert_eq!(
        login_in(&config, "registry.example.com", &no_helper),
        Some(("user".to_string(), "secret".to_string()))
    );
    assert_eq!(login_in(&config, "nowhere.example.com", &no_helper), None);
    let helper = |h: &str, host: &str| {
        (h == "pass" && host == "helped.example.com").then(|| ("h".to_string(), "s".to_string()))
    };
    assert_eq!(
        login_in(&config, "helped.example.com", &helper),
        Some(("h".to_string(), "s".to_string()))
    );
}

/// The files of the entries most tests pull.
const OUT: &[&str] = &["output.tar"];

/// `sha256:` and the hex digest of `bytes`.
fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// A manifest's layer: the file `title` with the given digest and size.
fn layer(title: &str, digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({
        "mediaType": FILE_TYPE,
        "digest": digest,
        "size": size,
        "annotations": { TITLE: title }
    })
}

/// A manifest of `layers`.
fn manifest(layers: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": "sha256:00", "size": 2 },
        "layers": layers,
    }))
    .unwrap()
}

/// A manifest for one `output.tar` layer with the given digest and size.
fn manifest_for(digest: &str, size: usize) -> Vec<u8> {
    manifest(vec![layer("output.tar", digest, size)])
}

/// The repository `cache` of a registry the test server plays: its host and a client of it
/// with `limits`.
fn registry_on_with(server: &Server, limits: Limits) -> (String, Registry) {
    let host = server.url().trim_start_matches("http://").to_string();
    let registry = Registry::open_with(&format!("{host}/cache"), limits).unwrap();
    (host, registry)
}

/// `registry_on_with` the default limits.
fn registry_on(server: &Server) -> (String, Registry) {
    registry_on_with(server, Limits::default())
}

/// Makes `server` hold the entry tagged `tag` in `cache`: one `output.tar` of `bytes`, whose
/// digest it returns.
fn serve_entry(server: &Server, tag: &str, bytes: &[u8]) -> String {
    let digest = digest_of(bytes);
    server.route(
        &format!("/v2/cache/manifests/{tag}"),
        Behaviour::Serve(manifest_for(&digest, bytes.len())),
    );
    server.route(
        &format!("/v2/cache/blobs/{digest}"),
        Behaviour::Serve(bytes.to_vec()),
    );
    digest
}

/// A test server holding the entry `openssl-k1` of `bytes` (see `serve_entry`), the digest of
/// its file, and a client of it with `limits`.
fn serving_k1_with(bytes: &[u8], limits: Limits) -> (Server, String, Registry) {
    let server = Server::start();
    let digest = serve_entry(&server, "openssl-k1", bytes);
    let (_, registry) = registry_on_with(&server, limits);
    (server, digest, registry)
}

/// `serving_k1_with` the default limits.
fn serving_k1(bytes: &[u8]) -> (Server, String, Registry) {
    serving_k1_with(bytes, Limits::default())
}

/// What pulling the `OUT` files of `openssl-<key>` into `dir` gives; it must not fail.
fn fetched(registry: &Registry, key: &str, dir: &Path) -> Option<String> {
    registry.fetch("openssl", key, OUT, dir).unwrap()
}

/// The error, with its causes, of pulling the `OUT` files of `openssl-<key>` into `dir`,
/// which must fail.
fn fetch_error(registry: &Registry, key: &str, dir: &Path) -> String {
    format!(
        "{:#}",
        registry.fetch("openssl", key, OUT, dir).unwrap_err()
    )
}

/// A fresh directory holding an entry's `output.tar` of `bytes`, to push.
fn output_dir(name: &str, bytes: &[u8]) -> TempDir {
    let dir = TempDir::new(name);
    std::fs::write(dir.path().join("output.tar"), bytes).unwrap();
    dir
}

/// The paths `server` was asked for, in order.
fn asked_paths(server: &Server) -> Vec<String> {
    server.requests().into_iter().map(|r| r.path).collect()
}

#[test]
fn a_pulled_file_whose_bytes_differ_from_the_manifest_is_refused() {
    let good = b"the stage's output".to_vec();
    let (server, digest, registry) = serving_k1(&good);

    let dir = TempDir::new("registry-pull");
    let got = fetched(&registry, "k1", dir.path());
    let manifest_digest = digest_of(&manifest_for(&digest, good.len()));
    assert_eq!(got, Some(manifest_digest));
    assert_eq!(std::fs::read(dir.path().join("output.tar")).unwrap(), good);
    assert_eq!(fetched(&registry, "k2", dir.path()), None);

    // The same manifest, but the registry's blob holds other bytes.
    server.route(
        "/v2/cache/manifests/openssl-k3",
        Behaviour::Serve(manifest_for(&digest, good.len())),
    );
    server.route(
        &format!("/v2/cache/blobs/{digest}"),
        Behaviour::Serve(b"tampered bytes!!!!".to_vec()),
    );
    let e = fetch_error(&registry, "k3", dir.path());
    assert!(
        e.contains("output.tar do not match the manifest") && e.contains("refused"),
        "{e}"
    );
    // One bad entry does not turn the registry off.
    assert_eq!(fetched(&registry, "k2", dir.path()), None);
}

#[test]
fn an_unreachable_registry_is_said_once_and_then_left_alone() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = Registry::open(&format!("127.0.0.1:{port}/cache")).unwrap();
    let dir = TempDir::new("registry-down");
    let e = fetch_error(&registry, "k1", dir.path());
    assert!(
        e.contains("GET manifest openssl-k1") && e.contains("not asked again"),
        "{e}"
    );
    assert_eq!(
        registry.fetch("python", "k2", OUT, dir.path()).unwrap(),
        None
    );
    std::fs::write(dir.path().join("output.tar"), b"x").unwrap();
    registry.push("python", "k2", dir.path()).unwrap();
}

#[test]
fn a_refusal_names_the_login_to_make() {
    let server = Server::start();
    server.route("/v2/cache/manifests/openssl-k1", Behaviour::Status(401));
    let (host, registry) = registry_on(&server);
    let dir = TempDir::new("registry-401");
    let e = fetch_error(&registry, "k1", dir.path());
    assert!(
        e.contains("unauthorised")
            && e.contains(&format!("`{}`", crate::engine::login_hint(&host))),
        "{e}"
    );
}

#[test]
fn a_second_push_of_a_key_sends_nothing_but_its_question() {
    let server = Server::start();
    server.route(
        "/v2/cache/manifests/openssl-k1",
        Behaviour::Serve(manifest_for("sha256:00", 1)),
    );
    let (_, registry) = registry_on(&server);
    let dir = output_dir("registry-push", b"x");
    registry.push("openssl", "k1", dir.path()).unwrap();
    assert_eq!(asked_paths(&server), ["/v2/cache/manifests/openssl-k1"]);
    assert!(registry.has("openssl", "k1").unwrap());
}

#[test]
fn a_refused_push_stops_pushing_but_not_pulling() {
    let (server, _, registry) = serving_k1(b"the stage's output");
    // A login that may pull but not push.
    server.route("/v2/cache/blobs/uploads/", Behaviour::Status(403));
    let dir = output_dir("registry-pull-only", b"new output");
    let e = format!(
        "{:#}",
        registry.push("python", "k2", dir.path()).unwrap_err()
    );
    assert!(
        e.contains("403") && e.contains("not pushed to again"),
        "{e}"
    );
    let into = TempDir::new("registry-pull-only-into");
    assert!(fetched(&registry, "k1", into.path()).is_some());
    // Pushing is off: the next push asks nothing.
    let before = server.requests().len();
    registry.push("python", "k3", dir.path()).unwrap();
    assert_eq!(server.requests().len(), before);
}

/// What the scripted registry saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// The path and query.
    path: String,
    authorization: Option<String>,
}

/// A loopback HTTP server whose every answer `answer` makes from the request: status, extra
/// header lines and body. It keeps what it saw, headers included, which `Server` does not.
struct Scripted {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<Mutex<Vec<Seen>>>,
}

type Answer = (u16, Vec<String>, Vec<u8>);

/// A token service's answer.
const TOKEN: &[u8] = br#"{"token":"t0k"}"#;

impl Scripted {
    fn start(ip: &str, answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Scripted {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (log, answer) = (seen.clone(), std::sync::Arc::new(answer));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut words = line.split_whitespace().map(str::to_string);
                let (method, path) = (
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default(),
                );
                let (mut authorization, mut length) = (None, 0usize);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let (name, value) = h.split_once(':').unwrap_or((&h, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "authorization" => authorization = Some(value.trim().to_string()),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
                let _ = std::io::copy(
                    &mut reader.by_ref().take(length as u64),
                    &mut std::io::sink(),
                );
                let request = Seen {
                    method,
                    path,
                    authorization,
                };
                log.lock().unwrap().push(request.clone());
                let (status, headers, body) = answer(&request);
                let mut head = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for h in headers {
                    head.push_str(&h);
                    head.push_str("\r\n");
                }
                head.push_str("\r\n");
                let mut out = stream;
                let _ = out
                    .write_all(head.as_bytes())
                    .and_then(|()| out.write_all(&body));
            }
        });
        Scripted { addr, seen }
    }

    /// `ip:port`.
    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A client of its repository `cache`.
    fn registry(&self) -> Registry {
        Registry::open(&format!("{}/cache", self.host())).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(status: u16) -> Answer {
    (status, Vec::new(), Vec::new())
}

/// A registry at 127.0.0.1 that answers `challenge(its own host)` until it is given `wants`,
/// sends uploads to `upload` and tokens as `token`; `registry` is a client of it with the login `user:secret`.
fn asking_registry(
    challenge: impl Fn(&str) -> String + Send + Sync + 'static,
    wants: &'static str,
    upload: String,
    token: Vec<u8>,
) -> (Scripted, Registry) {
    let own = std::sync::Arc::new(OnceLock::<String>::new());
    let known = own.clone();
    let server = Scripted::start("127.0.0.1", move |r| {
        let host = known.get().map_or("", |h| h.as_str());
        if r.authorization.as_deref() != Some(wants) && !r.path.starts_with("/token") {
            return (
                401,
                vec![format!("WWW-Authenticate: {}", challenge(host))],
                vec![],
            );
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", p) if p.starts_with("/token") => (200, vec![], token.clone()),
            ("POST", "/v2/cache/blobs/uploads/") => {
                (202, vec![format!("Location: {upload}")], vec![])
            }
            ("PUT", "/v2/cache/manifests/openssl-k1") => answer(201),
            _ => answer(404),
        }
    });
    own.set(server.host()).unwrap();
    let registry = server.registry();
    let _ = registry.login.set(Some(("user".into(), "secret".into())));
    (server, registry)
}

/// An `asking_registry` that wants the token `t0k`, from a token service at its own origin
/// that answers `token`.
fn with_own_token_service(token: Vec<u8>) -> (Scripted, Registry) {
    let own = |host: &str| format!("Bearer realm=\"http://{host}/token\"");
    asking_registry(own, "Bearer t0k", String::new(), token)
}

#[test]
fn credentials_go_to_the_registry_origin_only() {
    // `user:secret`, as Basic sends it.
    let basic = "Basic dXNlcjpzZWNyZXQ=";
    let elsewhere = Scripted::start("127.0.0.2", |r| match r.method.as_str() {
        "GET" => (200, vec![], br#"{"token":"t0k"}"#.to_vec()),
        _ => answer(201),
    });
    let upload = format!("http://{}/upload?id=1", elsewhere.host());
    let (home, registry) = asking_registry(
        |_| "Basic realm=\"r\"".into(),
        basic,
        upload,
        TOKEN.to_vec(),
    );
    let dir = output_dir("registry-origin", b"x");
    registry.push("openssl", "k1", dir.path()).unwrap();
    let uploads = elsewhere.seen();
    assert!(uploads.iter().any(|r| r.method == "PUT"), "{uploads:?}");
    assert!(
        uploads.iter().all(|r| r.authorization.is_none()),
        "{uploads:?}"
    );
    assert!(
        home.seen()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(basic))
    );

    // A token service at another origin gets no login; one at the registry's own does.
    let realm = format!("Bearer realm=\"http://{}/token\"", elsewhere.host());
    let (_, registry) = asking_registry(
        move |_| realm.clone(),
        "Bearer t0k",
        String::new(),
        TOKEN.to_vec(),
    );
    assert_eq!(fetched(&registry, "k2", dir.path()), None);
    let asked = elsewhere.seen();
    let token = asked.iter().find(|r| r.path.starts_with("/token")).unwrap();
    assert_eq!(token.authorization, None, "{asked:?}");
    let (home, registry) = with_own_token_service(TOKEN.to_vec());
    assert_eq!(fetched(&registry, "k2", dir.path()), None);
    let asked = home.seen();
    let token = asked.iter().find(|r| r.path.starts_with("/token")).unwrap();
    assert_eq!(token.authorization.as_deref(), Some(basic), "{asked:?}");
}

#[test]
fn plain_http_locations_and_realms_are_refused_unless_the_registry_is_on_loopback() {
    let remote = Registry::open("registry.example.com/cache").unwrap();
    for url in [
        "http://127.0.0.2:5000/upload",
        "http://registry.example.com/token",
    ] {
        let e = format!("{:#}", remote.target(url, "the upload").unwrap_err());
        assert!(e.contains("not HTTPS") && e.contains(url), "{e}");
    }
    assert!(
        remote
            .target("https://blobs.example.com/u?x=1", "the upload")
            .is_ok()
    );
    let local = Registry::open("127.0.0.1:5000/cache").unwrap();
    assert!(
        local
            .target("http://127.0.0.2:5000/upload", "the upload")
            .is_ok()
    );
}

#[test]
fn a_manifest_or_a_token_answer_beyond_its_cap_is_refused() {
    // Valid JSON, but no manifest of ours is 5 MiB: leading blanks make it so.
    let mut big = vec![b' '; 5 << 20];
    big.extend(manifest_for(&digest_of(b"out"), 3));
    for behaviour in [Behaviour::Serve(big.clone()), Behaviour::Unsized(big)] {
        let (server, _, registry) = serving_k1(b"out");
        server.route("/v2/cache/manifests/openssl-k1", behaviour);
        let dir = TempDir::new("registry-big-manifest");
        let e = fetch_error(&registry, "k1", dir.path());
        assert!(
            e.contains("more than 4 MiB") && e.contains("not asked again"),
            "{e}"
        );
    }
    let mut big = vec![b' '; 2 << 20];
    big.extend(TOKEN);
    let (_, registry) = with_own_token_service(big);
    let dir = TempDir::new("registry-big-token");
    let e = fetch_error(&registry, "k1", dir.path());
    assert!(
        e.contains("token service") && e.contains("more than 1 MiB"),
        "{e}"
    );
}

#[test]
fn a_blob_of_another_size_than_its_manifest_turns_the_registry_off() {
    let good = b"the stage's output";
    let longer: Vec<u8> = (0..1 << 20).map(|i| i as u8).collect();
    for behaviour in [Behaviour::Serve(longer.clone()), Behaviour::Unsized(longer)] {
        let (server, digest, registry) = serving_k1(good);
        server.route(&format!("/v2/cache/blobs/{digest}"), behaviour);
        let dir = TempDir::new("registry-long-blob");
        let e = fetch_error(&registry, "k1", dir.path());
        assert!(
            e.contains("its manifest says 18") && e.contains("not asked again"),
            "{e}"
        );
        let kept = std::fs::metadata(dir.path().join("output.tar")).map_or(0, |m| m.len());
        assert!(kept <= good.len() as u64, "{kept} bytes written");
        let asked = server.requests().len();
        assert_eq!(fetched(&registry, "k1", dir.path()), None);
        assert_eq!(server.requests().len(), asked);
    }
    // An entry no stage makes: nothing of it is asked for.
    let (server, digest, registry) = serving_k1(good);
    server.route(
        "/v2/cache/manifests/openssl-k1",
        Behaviour::Serve(manifest_for(&digest, 1 << 40)),
    );
    let dir = TempDir::new("registry-huge-entry");
    let e = fetch_error(&registry, "k1", dir.path());
    assert!(e.contains("larger than the 16 GiB"), "{e}");
    assert_eq!(asked_paths(&server), ["/v2/cache/manifests/openssl-k1"]);
}

/// Limits a test can wait for: a second per call, 10 KiB/s over 300 ms for blobs.
fn quick() -> Limits {
    Limits {
        call: Duration::from_secs(1),
        pace: Pace {
            min_speed: 10 * 1024,
            over: Duration::from_millis(300),
        },
    }
}

#[test]
fn a_dripping_or_stalled_registry_is_left_after_the_pace_window() {
    let bytes: Vec<u8> = (0..4000).map(|i| i as u8).collect();
    let drip = |body: &[u8], step, ms| Behaviour::Drip {
        body: body.to_vec(),
        step,
        every: Duration::from_millis(ms),
    };
    // 2 KB/s for 2 s; then 10 bytes and 3 s of silence.
    for (blob, step, ms) in [(&bytes[..], 100, 50), (&bytes[..20], 10, 3000)] {
        let (server, digest, registry) = serving_k1_with(blob, quick());
        server.route(&format!("/v2/cache/blobs/{digest}"), drip(blob, step, ms));
        let dir = TempDir::new("registry-drip");
        let started = std::time::Instant::now();
        let e = fetch_error(&registry, "k1", dir.path());
        assert!(
            e.contains("too slow") && e.contains("not asked again"),
            "{e}"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }
    // A manifest that takes longer than a call may.
    let (server, digest, registry) = serving_k1_with(&bytes, quick());
    let manifest = manifest_for(&digest, bytes.len());
    let dripping = drip(&manifest, manifest.len() / 5, 700);
    server.route("/v2/cache/manifests/openssl-k1", dripping);
    let dir = TempDir::new("registry-drip-manifest");
    let e = fetch_error(&registry, "k1", dir.path());
    assert!(
        e.contains("GET manifest openssl-k1") && e.contains("not asked again"),
        "{e}"
    );
}

/// An entry's layers: title and bytes.
type Files<'a> = Vec<(&'a str, &'a [u8])>;

/// Makes `server` hold the entry `openssl-<key>` whose layers are `files` (title, bytes).
fn serve_files(server: &Server, key: &str, files: &[(&str, &[u8])]) {
    let layers: Vec<serde_json::Value> = files
        .iter()
        .map(|(title, bytes)| {
            let digest = digest_of(bytes);
            server.route(
                &format!("/v2/cache/blobs/{digest}"),
                Behaviour::Serve(bytes.to_vec()),
            );
            layer(title, &digest, bytes.len())
        })
        .collect();
    server.route(
        &format!("/v2/cache/manifests/openssl-{key}"),
        Behaviour::Serve(manifest(layers)),
    );
}

#[test]
fn a_pulled_entry_is_exactly_its_files_once_each() {
    const ENTRY: &[&str] = &["output.tar", "meta.json"];
    let server = Server::start();
    let (out, meta): (&[u8], &[u8]) = (b"tar", b"{}");
    let many: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    let mut flood: Vec<(&str, &[u8])> = many.iter().map(|f| (f.as_str(), &b"x"[..])).collect();
    flood.extend([("output.tar", out), ("meta.json", meta)]);
    let cases: Vec<(Files, &str)> = vec![
        (
            vec![("output.tar", out), ("output.tar", b"other")],
            "2 layers titled \"output.tar\"",
        ),
        (
            vec![("output.tar", out), ("meta.json", meta), ("evil.sh", b"rm")],
            "3 layers",
        ),
        (flood, "202 layers"),
        (
            vec![("output.tar", out), ("../meta.json", meta)],
            "\"../meta.json\", not a plain file name",
        ),
        (
            vec![("output.tar", out), ("evil\u{1b}[2J", meta)],
            "\"evil\\u{1b}[2J\", which is not a file",
        ),
        (
            vec![("output.tar", out), ("", meta)],
            "\"\", not a plain file name",
        ),
    ];
    let (_, registry) = registry_on(&server);
    for (n, (files, says)) in cases.iter().enumerate() {
        serve_files(&server, &format!("k{n}"), files);
        let dir = TempDir::new("registry-titles");
        let e = registry.fetch("openssl", &format!("k{n}"), ENTRY, dir.path());
        let e = format!("{:#}", e.unwrap_err());
        assert!(e.contains(says) && !e.contains('\u{1b}'), "{says}: {e}");
        let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(written.is_empty(), "{says}: {written:?}");
    }
    // One bad entry does not turn the registry off, and a good one is pulled whole.
    serve_files(&server, "good", &[("meta.json", meta), ("output.tar", out)]);
    let dir = TempDir::new("registry-titles-good");
    assert!(
        registry
            .fetch("openssl", "good", ENTRY, dir.path())
            .unwrap()
            .is_some()
    );
    assert_eq!(std::fs::read(dir.path().join("meta.json")).unwrap(), meta);
}

#[test]
fn registry_text_reaches_a_message_with_its_control_characters_escaped() {
    let server = Scripted::start("127.0.0.1", |_| {
        (
            500,
            vec![],
            b"oops\x1b]0;owned\x07\x1b[2J\xe2\x80\xae tail\nsecond line".to_vec(),
        )
    });
    let registry = server.registry();
    let dir = TempDir::new("registry-escape");
    let e = fetch_error(&registry, "k1", dir.path());
    assert!(e.contains("HTTP 500"), "{e}");
    assert!(
        !e.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{e:?}"
    );
    assert!(
        e.contains("oops\\u{1b}]0;owned\\u{7}") && !e.contains("second line"),
        "{e}"
    );
}
