//! The publishing steps against a registry held in memory on loopback, which can refuse chosen
//! manifests and has the referrers API or not. The end-to-end test (`e2e_arm64.rs`) publishes
//! real images to a real registry; these cover what that registry cannot be made to do.

use super::*;
use crate::progress::Silent;
use crate::testutil::TempDir;
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Store {
    blobs: BTreeMap<String, Vec<u8>>,
    /// By digest: the bytes and their media type.
    manifests: BTreeMap<String, (Vec<u8>, String)>,
    tags: BTreeMap<String, String>,
    /// Every request: method and path.
    seen: Vec<(String, String)>,
}

/// The registry: `referrers_api` says whether it has that API; a PUT of a manifest whose path
/// contains `refuse` is answered 403.
struct Memory {
    host: String,
    store: Arc<Mutex<Store>>,
}

impl Memory {
    fn start(referrers_api: bool, refuse: Option<String>) -> Memory {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let store = Arc::new(Mutex::new(Store::default()));
        let shared = store.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &shared, referrers_api, refuse.as_deref());
            }
        });
        Memory { host, store }
    }

    fn registry(&self) -> Registry {
        Registry::open_for("--registry", &format!("{}/r", self.host)).unwrap()
    }

    fn puts(&self) -> Vec<String> {
        let store = self.store.lock().unwrap();
        (store.seen.iter())
            .filter(|(m, _)| m == "PUT" || m == "POST")
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Fails naming them if requests that write came after the first `before`.
    fn assert_no_writes_since(&self, before: usize) {
        let puts = self.puts();
        assert_eq!(puts.len(), before, "{:?}", &puts[before..]);
    }

    fn tagged(&self, tag: &str) -> Option<serde_json::Value> {
        let store = self.store.lock().unwrap();
        let digest = store.tags.get(tag)?;
        serde_json::from_slice(&store.manifests[digest].0).ok()
    }
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Answers one request on `stream` from `store`.
fn serve(
    stream: std::net::TcpStream,
    store: &Mutex<Store>,
    referrers_api: bool,
    refuse: Option<&str>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or(""),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut length = 0usize;
    let mut content_type = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "content-type" => content_type = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    std::io::Read::read_exact(&mut reader, &mut body)?;
    let mut s = store.lock().unwrap();
    s.seen.push((method.clone(), path.to_string()));
    let rest = path.strip_prefix("/v2/r/").unwrap_or(path);
    let (status, headers, answer): (u16, Vec<String>, Vec<u8>) =
        match (method.as_str(), rest.split_once('/')) {
            ("HEAD" | "GET", Some(("blobs", d))) => match s.blobs.get(d) {
                Some(b) => (200, vec![], b.clone()),
                None => (404, vec![], vec![]),
            },
            ("POST", Some(("blobs", "uploads/"))) => {
                (202, vec!["Location: /upload/1".into()], vec![])
            }
            ("PUT", _) if path.starts_with("/upload/") => {
                let d = query
                    .strip_prefix("digest=")
                    .unwrap_or("")
                    .replace("%3A", ":");
                assert_eq!(sha(&body), d);
                s.blobs.insert(d, body.clone());
                (201, vec![], vec![])
            }
            ("HEAD" | "GET", Some(("manifests", r))) => {
                let d = s.tags.get(r).cloned().unwrap_or(r.to_string());
                match s.manifests.get(&d) {
                    Some((b, t)) => (
                        200,
                        vec![
                            format!("Content-Type: {t}"),
                            format!("Docker-Content-Digest: {d}"),
                        ],
                        b.clone(),
                    ),
                    None => (404, vec![], vec![]),
                }
            }
            ("PUT", Some(("manifests", r))) if refuse.is_some_and(|x| r.contains(x)) => {
                (403, vec![], b"denied".to_vec())
            }
            ("PUT", Some(("manifests", r))) => {
                let d = sha(&body);
                s.manifests.insert(d.clone(), (body.clone(), content_type));
                if !r.starts_with("sha256:") {
                    s.tags.insert(r.to_string(), d.clone());
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut headers = vec![format!("Docker-Content-Digest: {d}")];
                if referrers_api && let Some(subject) = v["subject"]["digest"].as_str() {
                    headers.push(format!("OCI-Subject: {subject}"));
                }
                (201, headers, vec![])
            }
            ("GET", Some(("referrers", d))) if referrers_api => {
                let manifests: Vec<serde_json::Value> = (s.manifests.iter())
                    .filter_map(|(digest, (b, _))| {
                        let v: serde_json::Value = serde_json::from_slice(b).ok()?;
                        (v["subject"]["digest"] == d).then(|| {
                            json!({"mediaType": MANIFEST_TYPE, "digest": digest,
                                   "size": b.len(), "artifactType": v["artifactType"],
                                   "annotations": v["annotations"]})
                        })
                    })
                    .collect();
                let index = json!({"schemaVersion": 2, "mediaType": INDEX_TYPE,
                                   "manifests": manifests});
                (
                    200,
                    vec![format!("Content-Type: {INDEX_TYPE}")],
                    serde_json::to_vec(&index).unwrap(),
                )
            }
            _ => (404, vec![], b"404 page not found".to_vec()),
        };
    drop(s);
    let body = if method == "HEAD" {
        &[][..]
    } else {
        &answer[..]
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.len()
    );
    for h in headers {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = stream;
    out.write_all(head.as_bytes())?;
    out.write_all(body)
}

/// An image of one small layer for `arch` (`amd64`, `arm64`), its files in `dir`.
fn image(dir: &Path, arch: &str) -> OciImage {
    let layer = dir.join(format!("{arch}.tar.gz"));
    std::fs::write(&layer, format!("layer of {arch}")).unwrap();
    let bytes = std::fs::read(&layer).unwrap();
    OciImage {
        config: format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).into_bytes(),
        layers: vec![oci::Layer {
            path: layer,
            digest: sha(&bytes),
            size: bytes.len() as u64,
        }],
        architecture: arch.to_string(),
        os: "linux".to_string(),
    }
}

fn documents() -> Vec<Attachment> {
    let statement = json!({"_type": "https://in-toto.io/Statement/v1"});
    vec![
        Attachment::file(
            SBOM_TYPE,
            "sbom.cdx.json",
            b"{\"bomFormat\":\"CycloneDX\"}".to_vec(),
        ),
        Attachment::file(VERDICT_TYPE, "verify.json", b"{\"passed\":true}".to_vec()),
        Attachment::statement(SLSA_PROVENANCE, "provenance.intoto.json", statement.clone())
            .unwrap(),
        Attachment::statement(FIPS_PREDICATE, "fips.intoto.json", statement).unwrap(),
    ]
}

/// Publishes an amd64 and an arm64 image with their attachments under `3.13`, as `run` does.
fn publish(registry: &Registry, dir: &Path) -> Result<(Pushed, Vec<PlatformImage>, Counts)> {
    let mut counts = Counts::default();
    let mut platforms = Vec::new();
    for (arch, deb) in [("x86_64", "amd64"), ("aarch64", "arm64")] {
        let annotations = BTreeMap::from([
            (CREATED.to_string(), "2026-12-01T00:00:00Z".to_string()),
            (
                crate::image::LABEL_TARBALL.to_string(),
                format!("tarball of {arch}"),
            ),
        ]);
        let manifest = push_image(registry, &image(dir, deb), &annotations, &mut counts)?;
        let subject = Subject {
            registry: registry.reference(),
            digest: &manifest.digest,
            size: manifest.size,
            created: "2026-12-01T00:00:00Z",
        };
        let attachments = attach(registry, &subject, &documents(), &mut counts, &Silent)?;
        platforms.push(PlatformImage {
            arch,
            platform: Platform {
                architecture: deb.to_string(),
                os: "linux".to_string(),
            },
            image_id: sha(&image(dir, deb).config),
            tarball_sha256: String::new(),
            manifest,
            attachments,
            annotations,
            info: BuildInfo::default(),
        });
    }
    let (index, body) = put_index(registry, &platforms, &mut counts)?;
    move_tags(registry, &["3.13".to_string()], &body, &mut counts, &Silent)?;
    Ok((index, platforms, counts))
}

#[test]
fn one_tag_names_both_platforms_and_a_second_publish_sends_nothing() {
    let dir = TempDir::new("publish");
    let server = Memory::start(false, None);
    let registry = server.registry();
    let (index, platforms, counts) = publish(&registry, dir.path()).unwrap();
    // Blobs: 2 configs, 2 layers, the empty config and 3 documents (both images get the same
    // 4, and the 2 statements here are the same bytes). Manifests: 2 images, 8 attachments, 2
    // fallback indexes, the index by digest and under its tag.
    assert_eq!(
        (counts.blobs, counts.manifests),
        (2 + 2 + 1 + 3, 2 + 8 + 2 + 1 + 1)
    );
    let tagged = server.tagged("3.13").unwrap();
    assert_eq!(
        sha(&serde_json::to_vec(&tagged).unwrap()).len(),
        index.digest.len()
    );
    let platforms_in_index: Vec<&str> = tagged["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms_in_index, ["amd64", "arm64"]);
    // The index keeps what both share, not each one's tarball.
    assert_eq!(tagged["annotations"][CREATED], "2026-12-01T00:00:00Z");
    assert!(
        tagged["annotations"]
            .get(crate::image::LABEL_TARBALL)
            .is_none()
    );
    // Without the referrers API, the fallback tag lists each image's four attachments.
    for p in &platforms {
        let listed = server.tagged(&fallback_tag(&p.manifest.digest)).unwrap();
        let types: Vec<String> = listed["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let predicate = m["annotations"][PREDICATE_TYPE].as_str().unwrap_or("-");
                format!("{} {predicate}", m["artifactType"].as_str().unwrap())
            })
            .collect();
        assert_eq!(
            types,
            [
                format!("{SBOM_TYPE} -"),
                format!("{VERDICT_TYPE} -"),
                format!("{IN_TOTO_TYPE} {SLSA_PROVENANCE}"),
                format!("{IN_TOTO_TYPE} {FIPS_PREDICATE}"),
            ]
        );
    }
    let before = server.puts().len();
    let (again, _, counts) = publish(&registry, dir.path()).unwrap();
    assert_eq!(again.digest, index.digest);
    assert_eq!((counts.blobs, counts.manifests), (0, 0));
    server.assert_no_writes_since(before);
}

#[test]
fn a_registry_with_the_referrers_api_gets_no_fallback_tag() {
    let dir = TempDir::new("publish-api");
    let server = Memory::start(true, None);
    let registry = server.registry();
    let (_, platforms, _) = publish(&registry, dir.path()).unwrap();
    for p in &platforms {
        assert!(server.tagged(&fallback_tag(&p.manifest.digest)).is_none());
        let listed = registry.referrers(&p.manifest.digest).unwrap().unwrap();
        assert_eq!(index_manifests(&listed, "it").unwrap().len(), 4);
    }
    let (_, _, counts) = publish(&registry, dir.path()).unwrap();
    assert_eq!((counts.blobs, counts.manifests), (0, 0));
}

#[test]
fn a_refused_manifest_moves_no_tag() {
    let dir = TempDir::new("publish-refused");
    let arm64 = {
        let mut c = Counts::default();
        let probe = Memory::start(false, None);
        let annotations = BTreeMap::from([
            (CREATED.to_string(), "2026-12-01T00:00:00Z".to_string()),
            (
                crate::image::LABEL_TARBALL.to_string(),
                "tarball of aarch64".to_string(),
            ),
        ]);
        push_image(
            &probe.registry(),
            &image(dir.path(), "arm64"),
            &annotations,
            &mut c,
        )
        .unwrap()
        .digest
    };
    let server = Memory::start(false, Some(arm64.clone()));
    let e = format!(
        "{:#}",
        publish(&server.registry(), dir.path()).err().unwrap()
    );
    assert!(
        e.contains(&format!("PUT manifest {arm64}")) && e.contains("403"),
        "{e}"
    );
    assert!(server.tagged("3.13").is_none());
    assert!(!server.puts().iter().any(|p| p.ends_with("/manifests/3.13")));
}

#[test]
fn an_index_is_not_put_while_a_platform_manifest_is_missing() {
    let dir = TempDir::new("publish-missing");
    let server = Memory::start(false, None);
    let registry = server.registry();
    let (_, mut platforms, _) = publish(&registry, dir.path()).unwrap();
    platforms[1].manifest.digest = sha(b"not pushed");
    let before = server.puts().len();
    let e = put_index(&registry, &platforms, &mut Counts::default())
        .err()
        .unwrap();
    let e = format!("{e:#}");
    assert!(
        e.contains("the aarch64 manifest") && e.contains("no tag was moved"),
        "{e}"
    );
    server.assert_no_writes_since(before);
}

#[test]
fn a_tag_that_fails_says_which_moved_and_a_bad_tag_is_refused_first() {
    let dir = TempDir::new("publish-tags");
    let server = Memory::start(false, Some("rc".to_string()));
    let registry = server.registry();
    let mut counts = Counts::default();
    let e = move_tags(
        &registry,
        &["3.13".into(), "rc".into()],
        b"{}",
        &mut counts,
        &Silent,
    );
    let e = format!("{:#}", e.err().unwrap());
    assert!(e.contains("only 3.13 now names the new index"), "{e}");
    drop(dir);
    for bad in ["", ".x", "-x", "a/b", "a?b", &"x".repeat(129)] {
        let e = format!("{:#}", check_tag(bad).err().unwrap());
        assert!(e.contains("is not a tag"), "{bad}: {e}");
    }
    for good in ["3.13", "3.13.15-distroless", "_x", "A.b-c_d"] {
        check_tag(good).unwrap();
    }
}

#[test]
fn default_tags_name_the_release_and_its_minor() {
    assert_eq!(default_tags("3.13.15", Runtime::Base), ["3.13.15", "3.13"]);
    assert_eq!(
        default_tags("3.12.12", Runtime::Distroless),
        ["3.12.12-distroless", "3.12-distroless"]
    );
}

/// A signer with a test key made from `seed`.
fn test_signer(dir: &Path, seed: u8) -> Signer {
    let key = dir.join(format!("key-{seed}.pem"));
    let secret = p256::SecretKey::from_slice(&[seed; 32]).unwrap();
    let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&secret, Default::default()).unwrap();
    std::fs::write(&key, pem.as_bytes()).unwrap();
    Signer::load(&key).unwrap()
}

#[test]
fn a_signature_is_added_beside_others_once() {
    let dir = TempDir::new("publish-sign");
    let server = Memory::start(false, None);
    let registry = server.registry();
    let signer = test_signer(dir.path(), 9);
    let other = test_signer(dir.path(), 5);
    let digest = sha(b"an index");
    let mut counts = Counts::default();
    put_signature(&registry, &signer, &digest, &mut counts).unwrap();
    put_signature(&registry, &other, &digest, &mut counts).unwrap();
    let before = server.puts().len();
    put_signature(&registry, &signer, &digest, &mut counts).unwrap();
    server.assert_no_writes_since(before);
    let sig = server.tagged(&sign::signature_tag(&digest)).unwrap();
    let layers = sig["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for layer in layers {
        assert_eq!(layer["mediaType"], sign::PAYLOAD_TYPE);
        assert!(layer["annotations"][sign::SIGNATURE_ANNOTATION].is_string());
    }
}
