//! The registry client against reference parsing, logins and a loopback HTTP server.

use super::*;
use crate::testutil::{Behaviour, Server, TempDir};

#[test]
fn a_reference_needs_a_registry_host_and_a_plain_repository() {
    assert_eq!(
        parse_reference("registry.example.com/team/python-fips-cache").unwrap(),
        (
            "registry.example.com".to_string(),
            "team/python-fips-cache".to_string()
        )
    );
    assert_eq!(
        parse_reference("127.0.0.1:5117/cache").unwrap().0,
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
        let e = format!("{:#}", parse_reference(bad).unwrap_err());
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

/// A manifest for one `output.tar` layer with the given digest and size.
fn manifest_for(digest: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": "sha256:00", "size": 2 },
        "layers": [{
            "mediaType": FILE_TYPE,
            "digest": digest,
            "size": size,
            "annotations": { TITLE: "output.tar" }
        }]
    }))
    .unwrap()
}

/// The repository `cache` of a registry the test server plays: its host and a client of it.
fn registry_on(server: &Server) -> (String, Registry) {
    let host = server.url().trim_start_matches("http://").to_string();
    let registry = Registry::open(&format!("{host}/cache")).unwrap();
    (host, registry)
}

/// Makes `server` hold the entry tagged `tag` in `cache`: one `output.tar` of `bytes`, whose
/// digest it returns.
fn serve_entry(server: &Server, tag: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", hex(&Sha256::digest(bytes)));
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

#[test]
fn a_pulled_file_whose_bytes_differ_from_the_manifest_is_refused() {
    let server = Server::start();
    let good = b"the stage's output".to_vec();
    let digest = serve_entry(&server, "openssl-k1", &good);
    let (_, registry) = registry_on(&server);

    let dir = TempDir::new("registry-pull");
    let got = registry.fetch("openssl", "k1", dir.path()).unwrap();
    let manifest_digest = format!(
        "sha256:{}",
        hex(&Sha256::digest(manifest_for(&digest, good.len())))
    );
    assert_eq!(got, Some(manifest_digest));
    assert_eq!(std::fs::read(dir.path().join("output.tar")).unwrap(), good);
    assert_eq!(registry.fetch("openssl", "k2", dir.path()).unwrap(), None);

    // The same manifest, but the registry's blob holds other bytes.
    server.route(
        "/v2/cache/manifests/openssl-k3",
        Behaviour::Serve(manifest_for(&digest, good.len())),
    );
    server.route(
        &format!("/v2/cache/blobs/{digest}"),
        Behaviour::Serve(b"tampered bytes!!!!".to_vec()),
    );
    let e = format!(
        "{:#}",
        registry.fetch("openssl", "k3", dir.path()).unwrap_err()
    );
    assert!(
        e.contains("output.tar do not match the manifest") && e.contains("refused"),
        "{e}"
    );
    // One bad entry does not turn the registry off.
    assert_eq!(registry.fetch("openssl", "k2", dir.path()).unwrap(), None);
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
    let e = format!(
        "{:#}",
        registry.fetch("openssl", "k1", dir.path()).unwrap_err()
    );
    assert!(
        e.contains("GET manifest openssl-k1") && e.contains("not asked again"),
        "{e}"
    );
    assert_eq!(registry.fetch("python", "k2", dir.path()).unwrap(), None);
    std::fs::write(dir.path().join("output.tar"), b"x").unwrap();
    registry.push("python", "k2", dir.path()).unwrap();
}

#[test]
fn a_refusal_names_the_login_to_make() {
    let server = Server::start();
    server.route("/v2/cache/manifests/openssl-k1", Behaviour::Status(401));
    let (host, registry) = registry_on(&server);
    let dir = TempDir::new("registry-401");
    let e = format!(
        "{:#}",
        registry.fetch("openssl", "k1", dir.path()).unwrap_err()
    );
    assert!(
        e.contains("unauthorised") && e.contains(&format!("docker login {host}")),
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
    let dir = TempDir::new("registry-push");
    std::fs::write(dir.path().join("output.tar"), b"x").unwrap();
    registry.push("openssl", "k1", dir.path()).unwrap();
    let asked: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(asked, ["/v2/cache/manifests/openssl-k1"]);
    assert!(registry.has("openssl", "k1").unwrap());
}

#[test]
fn a_refused_push_stops_pushing_but_not_pulling() {
    let server = Server::start();
    serve_entry(&server, "openssl-k1", b"the stage's output");
    // A login that may pull but not push.
    server.route("/v2/cache/blobs/uploads/", Behaviour::Status(403));
    let (_, registry) = registry_on(&server);
    let dir = TempDir::new("registry-pull-only");
    std::fs::write(dir.path().join("output.tar"), b"new output").unwrap();
    let e = format!(
        "{:#}",
        registry.push("python", "k2", dir.path()).unwrap_err()
    );
    assert!(
        e.contains("403") && e.contains("not pushed to again"),
        "{e}"
    );
    let into = TempDir::new("registry-pull-only-into");
    assert!(
        registry
            .fetch("openssl", "k1", into.path())
            .unwrap()
            .is_some()
    );
    // Pushing is off: the next push asks nothing.
    let before = server.requests().len();
    registry.push("python", "k3", dir.path()).unwrap();
    assert_eq!(server.requests().len(), before);
}
