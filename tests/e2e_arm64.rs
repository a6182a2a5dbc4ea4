//! End to end: an aarch64 tree cross-compiled on this engine, and its arm64 runtime image run
//! under QEMU.
//!
//! What this costs: the cross builder image, the four cross stages, the arm64 base image
//! (mmdebstrap under emulation), and the runtime image and `verify` under emulation. The native
//! openssl and python stages the cross build takes its build interpreter from are the shared cold
//! build's, so when `e2e` ran first in this test directory they are cached. A second clean cross
//! build (`--check-reproducible --arch aarch64`) would cost about 24 minutes more than CI has:
//! it is run by hand (README, "Reproducibility and the SBOM").

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use object::elf::FileHeader64;
use object::read::elf::FileHeader;
use object::{Endianness, FileKind};
use support::*;

const BASE: &str = "arm64v8/debian:bookworm-slim";

/// The arm64 base image, made once per process (the command keeps an existing one).
fn arm64_base() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        setup();
        let out = xtask(&[
            "base-image",
            "--suite",
            "bookworm",
            "--slim",
            "--arch",
            "arm64",
        ]);
        assert!(out.status.success(), "base-image failed:\n{}", text(&out));
    });
}

/// The cold aarch64 cross build of the test configuration, with its runtime image and `verify`.
fn cross_build() -> &'static serde_json::Value {
    static REPORT: OnceLock<serde_json::Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        arm64_base();
        let started = std::time::Instant::now();
        let report = build(&["--arch", "aarch64"]);
        eprintln!(
            "aarch64 cross build, image and verify: {:.0} s",
            started.elapsed().as_secs_f64()
        );
        report
    })
}

/// The `e_machine` of a 64-bit ELF file's header.
fn machine(path: &str, data: &[u8]) -> u16 {
    assert_eq!(
        FileKind::parse(data).ok(),
        Some(FileKind::Elf64),
        "{path} is not a 64-bit ELF file"
    );
    let header = FileHeader64::<Endianness>::parse(data).unwrap();
    header.e_machine(header.endian().unwrap())
}

#[test]
fn cross_build_gives_an_aarch64_tree_with_its_self_test_pending() {
    let _g = serial();
    let report = cross_build();
    let tarball = Path::new(report["artifact"].as_str().unwrap());
    let name = tarball.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        name,
        "python-fips-3.13.15-openssl-3.5.7-fips-3.1.2-openssl-src-linux-aarch64.tar.gz"
    );
    let sha = std::fs::read_to_string(format!("{}.sha256", tarball.display())).unwrap();
    assert_eq!(
        sha,
        format!("{}  {name}\n", report["sha256"].as_str().unwrap())
    );
    let names: Vec<String> = stages(report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "openssl",
            "fips-provider",
            "native-openssl",
            "native-python",
            "python",
            "finalize"
        ]
    );

    // The build interpreter's stages are the native build's own, under the same keys.
    let native = cold_build();
    let key = |report: &serde_json::Value, name: &str| stage(report, name)["key"].clone();
    assert_eq!(key(report, "native-openssl"), key(native, "openssl"));
    assert_eq!(key(report, "native-python"), key(native, "python"));

    let prefix = "opt/python-fips/";
    let files = files_in(tarball, |p| {
        p.ends_with("/bin/python3.13")
            || p.ends_with("/lib/libcrypto.so.3")
            || p.ends_with("/lib/libssl.so.3")
            || p.ends_with("/ossl-modules/fips.so")
            || (p.contains("/lib-dynload/_ssl.") && p.ends_with(".so"))
            || (p.contains("/lib-dynload/_hashlib.") && p.ends_with(".so"))
            || p.ends_with("BUILD-INFO.json")
            || p.ends_with("SBOM.cdx.json")
            || p.contains("/share/python-fips/")
            || p.ends_with("/ssl/fipsmodule.cnf")
    });
    let elves: Vec<&String> = files
        .keys()
        .filter(|p| p.contains("/lib") || p.contains("/bin/"))
        .collect();
    for wanted in [
        "bin/python3.13",
        "lib/libcrypto.so.3",
        "lib/ossl-modules/fips.so",
        "lib/python3.13/lib-dynload/_ssl.",
        "lib/python3.13/lib-dynload/_hashlib.",
    ] {
        let path = elves
            .iter()
            .find(|p| p.starts_with(&format!("{prefix}{wanted}")))
            .unwrap_or_else(|| panic!("the tree has no {wanted}: {elves:?}"));
        let m = machine(path, &files[*path]);
        eprintln!(
            "{path}: e_machine {m} (AArch64 is {})",
            object::elf::EM_AARCH64
        );
        assert_eq!(m, object::elf::EM_AARCH64, "{path} is not AArch64");
    }

    let info: serde_json::Value =
        serde_json::from_slice(&files[&format!("{prefix}BUILD-INFO.json")]).unwrap();
    assert_eq!(info["arch"], "aarch64");
    assert_eq!(info["build_arch"], "x86_64");
    // The cross toolchain is among the builder's packages in the SBOM.
    let sbom = String::from_utf8_lossy(&files[&format!("{prefix}SBOM.cdx.json")]).into_owned();
    assert!(sbom.contains("pkg:deb/debian/crossbuild-essential-arm64@"));
    assert!(sbom.contains("pkg:deb/debian/libffi-dev@") && sbom.contains("arch=arm64"));

    // No target binary ran: the self-test waits for python-fips-setup on the target.
    let pending = format!("{prefix}share/python-fips/SELFTEST-PENDING");
    let note = String::from_utf8_lossy(&files[&pending]).into_owned();
    assert!(note.contains("python-fips-setup"), "{note}");
    assert!(!files.contains_key(&format!("{prefix}ssl/fipsmodule.cnf")));
}

#[test]
fn arm64_image_passes_every_verify_row_as_its_user_under_emulation() {
    let _g = serial();
    let report = cross_build();
    assert_eq!(
        report["verify"]["passed"], true,
        "verify failed: {}",
        report["verify"]
    );
    let id = report["image"]["id"].as_str().unwrap();
    let inspect = |format: &str| {
        let out = docker(&["image", "inspect", "--format", format, id]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(inspect("{{.Architecture}}"), "arm64");
    assert_eq!(inspect("{{.Config.User}}"), "python");
    assert_eq!(
        inspect("{{index .Config.Labels \"org.opencontainers.image.base.name\"}}"),
        BASE
    );
    // Plain tags keep naming the engine's own architecture.
    let tags = report["image"]["tags"].as_array().unwrap();
    assert_eq!(
        tags,
        &["python-fips:3.13.15-aarch64", "python-fips:3.13-aarch64"]
    );

    let json = format!("{}.verify.json", report["artifact"].as_str().unwrap());
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = verdict["checks"].as_array().unwrap();
    assert!(rows.len() >= 20, "too few checks: {verdict}");
    for row in rows {
        eprintln!(
            "{:<6} {}",
            if row["passed"] == true {
                "pass"
            } else {
                "FAIL"
            },
            row["name"]
        );
        assert_eq!(row["passed"], true, "{row}");
    }

    // The image runs aarch64 code (under QEMU here), as its non-root user, self-test done.
    let out = docker(&[
        "run",
        "--rm",
        id,
        "sh",
        "-c",
        "uname -m; id -un; test ! -e /opt/python-fips/share/python-fips/SELFTEST-PENDING && \
         python3 -c 'import _hashlib; print(_hashlib.get_fips_mode())'",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "aarch64\npython\n1\n");
}

/// The aarch64 tree in a uv channel next to the native one: the real uv installs it (uv installs
/// another architecture's Python when asked by key), and the installed tree, mounted into the arm64
/// base image, runs its first use under QEMU: the per-machine self-test, then FIPS mode on its own
/// libcrypto.
#[test]
fn the_aarch64_tree_installs_from_a_uv_channel_and_runs_under_emulation() {
    let _g = serial();
    let cross = PathBuf::from(cross_build()["artifact"].as_str().unwrap());
    let native = PathBuf::from(cold_build()["artifact"].as_str().unwrap());
    let uv_bin = uv_binary();
    let (_server, json_url, json) = served_channel("uv-channel-arm64", &[&native, &cross]);
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "cpython-3.13.15-linux-aarch64-gnu",
            "cpython-3.13.15-linux-x86_64-gnu"
        ]
    );
    let key = "cpython-3.13.15-linux-aarch64-gnu";
    assert_eq!(json[key]["arch"]["family"], "aarch64");

    let tree = uv_install(&uv_bin, &work().join("uv-arm64"), &json_url, key);
    let python = tree.join("bin/python3.13");
    assert_eq!(
        machine("python3.13", &std::fs::read(&python).unwrap()),
        object::elf::EM_AARCH64
    );
    let cnf = tree.join("ssl/fipsmodule.cnf");
    assert!(
        !cnf.exists(),
        "a cross-built tree ships no {}",
        cnf.display()
    );

    let mount = format!("{0}:{0}", tree.display());
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        &mount,
        BASE,
        python.to_str().unwrap(),
        "-c",
        TREE_PROBE,
    ]);
    let all = text(&out);
    assert!(out.status.success(), "under QEMU:\n{all}");
    assert!(
        cnf.is_file(),
        "the first use wrote no {}:\n{all}",
        cnf.display()
    );
    let seen: serde_json::Value = serde_json::from_str(
        all.lines()
            .find(|l| l.starts_with('{'))
            .expect("no probe output"),
    )
    .unwrap();
    assert_eq!(seen["fips"], 1, "{all}");
    assert!(
        seen["md5"].as_str().unwrap().starts_with("refused"),
        "{all}"
    );
    assert_eq!(
        seen["libcrypto"],
        serde_json::json!([tree.join("lib/libcrypto.so.3")]),
        "{all}"
    );
}

/// `publish` of the native and the aarch64 image under one tag to the test registry, with the
/// arguments of the test configuration; returns its output and its report.
fn publish(registry: &str, extra: &[&str]) -> (std::process::Output, Option<serde_json::Value>) {
    let out_dir = work().join("dist-publish");
    let mut flags = vec!["--arch", "x86_64,aarch64", "--registry", registry];
    flags.extend(extra);
    let args = build_command_args("publish", &out_dir, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (xtask(&args), read_report(&out_dir))
}

/// A blob of the test registry's repository `repository`, by digest.
fn blob(repository: &str, digest: &str) -> serde_json::Value {
    let url = format!("http://{}/v2/{repository}/blobs/{digest}", registry());
    let bytes = reqwest::blocking::get(&url).unwrap().bytes().unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// What skopeo reads of `reference` in the test registry (`--raw`: the manifest as stored).
fn skopeo_raw(reference: &str) -> serde_json::Value {
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/{reference}", registry()),
    ]);
    assert!(out.status.success(), "skopeo {reference}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The two images the suite built, published under one tag with their attachments: skopeo reads
/// the index and each image's referrers, podman (a second engine) pulls the one tag for each
/// platform and gets the suite's images by id, and `verify` passes on its native one. Publishing
/// again sends nothing and gives the same digests.
#[test]
fn both_images_publish_under_one_tag_and_podman_pulls_each_by_id() {
    let _g = serial();
    let built = [cold_build(), cross_build()];
    let repository = "python-fips";
    let target = format!("{}/{repository}", registry());
    // A signing key of the user's, made with OpenSSL as the README says.
    let key = work().join("publish-key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let key = key.to_str().unwrap();
    let source = [
        "--source",
        "https://example.org/python-fips",
        "--sign-key",
        key,
    ];
    let started = std::time::Instant::now();
    let (out, report) = publish(&target, &source);
    eprintln!("publish: {:.0} s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "publish failed:\n{}", text(&out));
    let report = report.unwrap();
    let digest = report["index"]["digest"].as_str().unwrap().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        stdout,
        format!("{target}:3.13.15@{digest}\n{target}:3.13@{digest}\n")
    );
    let platforms = report["platforms"].as_array().unwrap();
    for (platform, build) in platforms.iter().zip(built) {
        assert_eq!(platform["image_id"], build["image"]["id"], "{platform}");
        assert_eq!(platform["tarball_sha256"], build["sha256"], "{platform}");
    }

    // skopeo reads the index under both tags: one manifest per platform, with the annotations.
    let index = skopeo_raw(&format!("{repository}:3.13"));
    assert_eq!(index, skopeo_raw(&format!("{repository}:3.13.15")));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let listed: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let manifests: Vec<String> = platforms
        .iter()
        .map(|p| p["manifest"]["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        [
            ("amd64".to_string(), manifests[0].clone()),
            ("arm64".to_string(), manifests[1].clone())
        ]
    );
    let annotations = &index["annotations"];
    assert_eq!(annotations["org.opencontainers.image.version"], "3.13.15");
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://example.org/python-fips"
    );
    assert!(
        annotations["org.opencontainers.image.created"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{annotations}"
    );
    assert!(
        annotations["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| r.len() >= 40),
        "{annotations}"
    );

    // Each image's attachments, through the fallback tag (this registry, Debian's
    // docker-registry 2.8, has no referrers API: it answers 404), each read by skopeo and its
    // document fetched by digest.
    let api = format!(
        "http://{}/v2/{repository}/referrers/{}",
        registry(),
        manifests[0]
    );
    assert_eq!(reqwest::blocking::get(&api).unwrap().status(), 404);
    for (manifest, build) in manifests.iter().zip(built) {
        let referrers = skopeo_raw(&format!("{repository}:{}", manifest.replacen(':', "-", 1)));
        let mut kinds = Vec::new();
        for entry in referrers["manifests"].as_array().unwrap() {
            let attached = skopeo_raw(&format!(
                "{repository}@{}",
                entry["digest"].as_str().unwrap()
            ));
            assert_eq!(attached["subject"]["digest"], *manifest, "{attached}");
            assert_eq!(attached["artifactType"], entry["artifactType"]);
            let doc = blob(
                repository,
                attached["layers"][0]["digest"].as_str().unwrap(),
            );
            let kind = match attached["artifactType"].as_str().unwrap() {
                "application/vnd.cyclonedx+json" => {
                    assert_eq!(doc["bomFormat"], "CycloneDX");
                    "sbom"
                }
                "application/vnd.python-fips.verify.v1+json" => {
                    assert_eq!(doc["passed"], true);
                    assert_eq!(doc["image_id"], build["image"]["id"]);
                    assert!(doc["checks"].as_array().unwrap().len() >= 20);
                    "verify"
                }
                "application/vnd.in-toto+json" => {
                    assert_eq!(
                        doc["subject"][0]["digest"]["sha256"],
                        manifest.trim_start_matches("sha256:")
                    );
                    match doc["predicateType"].as_str().unwrap() {
                        "https://slsa.dev/provenance/v1" => {
                            let deps = doc["predicate"]["buildDefinition"]["resolvedDependencies"]
                                .to_string();
                            let info: serde_json::Value = serde_json::from_slice(
                                &std::fs::read(build["build_info"].as_str().unwrap()).unwrap(),
                            )
                            .unwrap();
                            for source in ["python", "openssl"] {
                                let sha = info[source]["sha256"].as_str().unwrap();
                                assert!(deps.contains(sha), "{source} {sha} not in {deps}");
                            }
                            let stages = doc["predicate"]["runDetails"]["byproducts"].to_string();
                            for stage in build["stages"].as_array().unwrap() {
                                assert!(stages.contains(stage["key"].as_str().unwrap()));
                            }
                            "provenance"
                        }
                        "urn:python-fips:fips-attestation:v1" => {
                            let fips = &doc["predicate"];
                            assert_eq!(fips["module"]["version"], "3.1.2");
                            assert_eq!(fips["cmvp"]["certificate"], "4985");
                            assert_eq!(fips["cmvp"]["standard"], "FIPS 140-3");
                            assert_eq!(fips["cmvp"]["status"], "active");
                            assert!(fips["cmvp"]["historical_from"].as_str().is_some());
                            assert_eq!(fips["verify"]["passed"], true);
                            "fips"
                        }
                        other => panic!("an unexpected statement {other}"),
                    }
                }
                other => panic!("an unexpected attachment {other}"),
            };
            kinds.push(kind);
        }
        assert_eq!(kinds, ["sbom", "verify", "provenance", "fips"]);
    }

    // The index and each image are signed: OpenSSL verifies each signature over its payload
    // with the key's public half, and the payload names the digest.
    assert_eq!(report["signed"].as_array().unwrap().len(), 3);
    let public = work().join("publish-key.pub");
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in", key, "-out"])
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for signed in manifests.iter().chain([&digest]) {
        let sig = skopeo_raw(&format!(
            "{repository}:{}.sig",
            signed.replacen(':', "-", 1)
        ));
        let layer = &sig["layers"][0];
        let url = format!(
            "http://{}/v2/{repository}/blobs/{}",
            registry(),
            layer["digest"].as_str().unwrap()
        );
        let payload = reqwest::blocking::get(&url).unwrap().bytes().unwrap();
        let said: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(said["critical"]["image"]["docker-manifest-digest"], *signed);
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                layer["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let (payload_file, sig_file) = (work().join("signed.json"), work().join("signature.der"));
        std::fs::write(&payload_file, &payload).unwrap();
        std::fs::write(&sig_file, der).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig_file)
            .arg(&payload_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the signature of {signed}: {}",
            text(&out)
        );
    }

    // A second engine pulls the one tag for each platform: the images are the suite's, by id.
    // `verify` runs on podman's pull of the native one; the arm64 one, the same image by id, was
    // verified under QEMU when it was built.
    let (engine, (var, conf)) = podman();
    for (platform, build) in ["amd64", "arm64"].iter().zip(built) {
        let image = format!("{target}:3.13");
        let out = podman_cli(&["pull", "--tls-verify=false", "--arch", platform, &image]);
        assert!(
            out.status.success(),
            "podman pull {platform}: {}",
            text(&out)
        );
        let out = podman_cli(&["image", "inspect", "--format", "{{.Id}}", &image]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            format!("sha256:{id}"),
            build["image"]["id"].as_str().unwrap()
        );
        if *platform == "amd64" {
            let mut args = vec!["verify"];
            args.extend(engine);
            args.push(&image);
            let out = command(&args).env(var, &conf).output().unwrap();
            assert!(
                out.status.success(),
                "verify on podman failed:\n{}",
                text(&out)
            );
        }
        let _ = podman_cli(&["rmi", "--force", &image]);
    }

    // Again: nothing sent, the same digests.
    let (out, again) = publish(&target, &source);
    assert!(out.status.success(), "{}", text(&out));
    let again = again.unwrap();
    assert_eq!(again["index"]["digest"], digest.as_str());
    assert_eq!(
        again["uploaded"],
        serde_json::json!({"blobs": 0, "manifests": 0})
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout);

    // A registry that cannot be reached fails the publish before any build, naming it.
    let (out, _) = publish("127.0.0.1:9/python-fips", &[]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("cannot push to 127.0.0.1:9/python-fips; nothing was built or published"),
        "{said}"
    );
}
