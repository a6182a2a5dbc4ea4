//! End to end: the runtime image and `verify`, with real Docker and real builds.
//!
//! The patched build must pass every check in its runtime image, and the same build without
//! the patch (the negative control) must fail on exactly the checks the patch exists for.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use support::*;

/// The checks that fail without `patches/<minor>/fips.patch`, found by running the unpatched
/// build: each is a path by which stock CPython still computes a non-FIPS digest, or the API the
/// patch adds. Every other check must pass without the patch too (it tests OpenSSL, the
/// configuration, the build or the image, not the patch).
const PATCH_ROWS: [&str; 11] = [
    "HMAC objects run in the FIPS provider (EVP_MAC)",
    // An unpatched python moved elsewhere neither runs the per-machine self-test nor points
    // OpenSSL at its own tree: it loads /opt/python-fips's configuration and intact fips.so, and
    // without its own libcrypto it takes the image's (bookworm's 3.0 has every symbol it needs).
    "the tree copied elsewhere installs its FIPS module and runs on its own OpenSSL",
    "the tree copied without its libcrypto refuses to import hashlib",
    "a corrupted fips.so makes hashing fail",
    "ssl.FIPS_mode() == 1",
    "blake2 refuses",
    "_blake2 constructors and subclasses refuse",
    "FIPS_mode_set(1) at run time: no cached md5 or blake2",
    "ssl.FIPS_mode_set raises an audit event",
    "pbkdf2_hmac refuses what SP 800-132 forbids",
    "import hashlib fails loudly without _hashlib",
];

fn verify_json(tarball: &str) -> serde_json::Value {
    let path = format!("{tarball}.verify.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_slice(&bytes).unwrap()
}

fn failed_rows(verdict: &serde_json::Value) -> BTreeSet<String> {
    verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["passed"].as_bool().unwrap())
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn docker_text(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn build_is_verified_in_a_runtime_image_without_the_toolchain() {
    let _g = serial();
    let report = cold_build();
    let tarball = report["artifact"].as_str().unwrap();
    assert_eq!(
        report["verify"]["passed"], true,
        "verify failed: {}",
        report["verify"]
    );
    let verdict = verify_json(tarball);
    assert_eq!(failed_rows(&verdict), BTreeSet::new());
    assert!(
        verdict["checks"].as_array().unwrap().len() >= 20,
        "too few checks: {verdict}"
    );
    // The FIPS 140-3 module: OpenSSL 3.1.2's provider loaded and active, its fipsmodule.cnf
    // written by 3.1.2's own fipsinstall, certificate #4985 active, and the TLS floor.
    let detail = |name: &str| -> String {
        let row = verdict["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name} in {verdict}"));
        row["detail"].as_str().unwrap().to_string()
    };
    let providers = detail("openssl list -providers: fips active");
    assert!(providers.contains(" 3.1.2 active"), "{providers}");
    let cnf = detail("fipsmodule.cnf written by the provider's own release");
    assert!(
        cnf.contains("module-mac") && cnf.contains("by OpenSSL 3.1.2 1 Aug 2023"),
        "{cnf}"
    );
    let cmvp = detail("FIPS provider CMVP status");
    assert!(
        cmvp.contains("certificate #4985 (FIPS 140-3), active")
            && cmvp.contains("openssl-src-300.1.3+3.1.2.crate"),
        "{cmvp}"
    );
    let floor = detail("TLS floor: a 1024-bit RSA peer is refused");
    assert!(
        floor.contains("too weak") || floor.contains("too small"),
        "{floor}"
    );

    let id = report["image"]["id"].as_str().unwrap();
    let tags = report["image"]["tags"].as_array().unwrap();
    assert_eq!(tags, &["python-fips:3.13.15", "python-fips:3.13"]);
    for tag in ["python-fips:3.13.15", "python-fips:3.13"] {
        let format = "{{.Id}}";
        assert_eq!(
            docker_text(&["image", "inspect", "--format", format, tag]),
            id
        );
    }
    let labels: serde_json::Value = serde_json::from_str(&docker_text(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        id,
    ]))
    .unwrap();
    assert_eq!(labels["org.opencontainers.image.version"], "3.13.15");
    assert_eq!(
        labels["org.opencontainers.image.base.name"],
        "debian:bookworm-slim"
    );
    assert_eq!(labels["org.python-fips.openssl.version"], "3.5.7");
    assert_eq!(labels["org.python-fips.fips-provider.version"], "3.1.2");
    assert_eq!(labels["org.python-fips.tarball.sha256"], report["sha256"]);
    assert_eq!(labels["org.python-fips.patched"], "true");

    let user = docker_text(&["image", "inspect", "--format", "{{.Config.User}}", id]);
    assert_eq!(user, "python");
    // Its size budget, on the slim base (the engine's MB, 10^6 bytes).
    let size: u64 = docker_text(&["image", "inspect", "--format", "{{.Size}}", id])
        .parse()
        .unwrap();
    eprintln!("runtime image: {size} bytes");
    assert!(size <= 150_000_000, "the runtime image is {size} bytes");
    let env = docker_text(&["image", "inspect", "--format", "{{json .Config.Env}}", id]);
    assert!(env.contains("PATH=/opt/python-fips/bin:"), "{env}");
    assert!(!env.contains("LD_LIBRARY_PATH"), "{env}");

    // Only runtime libraries: no compiler, no headers of the system's libraries.
    let toolchain = docker(&[
        "run",
        "--rm",
        id,
        "sh",
        "-c",
        "command -v gcc || command -v cc || command -v make || ls /usr/include/sqlite3.h",
    ]);
    assert!(
        !toolchain.status.success(),
        "the runtime image has build tools: {}",
        text(&toolchain)
    );
}

#[test]
fn image_refuses_md5_as_a_non_root_user() {
    let _g = serial();
    cold_build();
    let md5 = docker(&[
        "run",
        "--rm",
        "python-fips:3.13.15",
        "python3",
        "-c",
        "import hashlib; hashlib.md5()",
    ]);
    assert!(
        !md5.status.success(),
        "hashlib.md5() worked in the image: {}",
        text(&md5)
    );
    // Refused by Python (a traceback), not failing for some other reason such as a missing image.
    assert!(text(&md5).contains("Traceback"), "{}", text(&md5));
    let uid = docker_text(&["run", "--rm", "python-fips:3.13.15", "id", "-u"]);
    assert_ne!(uid, "0", "the image runs as root");
    let sha = docker_text(&[
        "run",
        "--rm",
        "python-fips:3.13.15",
        "python3",
        "-c",
        "import hashlib; print(hashlib.sha256(b'abc').hexdigest())",
    ]);
    assert_eq!(
        sha,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn unpatched_build_fails_verify_on_exactly_the_patched_rows() {
    let _g = serial();
    setup();
    // The control tarball, then `verify` on it as a separate command.
    let report = build(&["--no-fips-patch", "--no-verify"]);
    let tarball = report["artifact"].as_str().unwrap().to_string();
    assert!(tarball.ends_with("-unpatched.tar.gz"), "{tarball}");
    assert!(report["image"].is_null(), "--no-verify built an image");
    let _ = std::fs::remove_file(format!("{tarball}.verify.json"));
    let out = xtask(&["verify", &tarball]);
    assert!(
        !out.status.success(),
        "verify passed an unpatched build:\n{}",
        text(&out)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for row in PATCH_ROWS {
        let line = table
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row} in the table:\n{table}"));
        assert!(line.contains(" FAIL "), "{line}");
    }
    let want: BTreeSet<String> = PATCH_ROWS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        failed_rows(&verify_json(&tarball)),
        want,
        "the unpatched build must fail on exactly the rows of the patch:\n{table}"
    );

    // `python` verifies by default, and a failed check fails the build.
    let (out, report) = run_python(&work().join("dist"), &["--no-fips-patch"]);
    assert!(
        !out.status.success(),
        "python passed an unpatched build:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("verify failed"), "{}", text(&out));
    let report = report.expect("the report is written before verify's verdict fails the run");
    assert_eq!(
        report["image"]["tags"][0], "python-fips:3.13.15-unpatched",
        "the control must not take the shipped tag"
    );
    let failed: BTreeSet<String> = report["verify"]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed, want);
}

#[test]
fn image_command_takes_a_tag_and_reuses_the_built_image() {
    let _g = serial();
    let report = cold_build();
    let mirror = setup().to_str().unwrap().to_string();
    let out_dir: PathBuf = work().join("dist");
    let mut args: Vec<&str> = vec!["image"];
    args.extend(VERSION);
    args.extend([
        "--mirror",
        &mirror,
        "--out",
        out_dir.to_str().unwrap(),
        "--no-verify",
        "--tag",
        "python-fips-e2e:custom",
    ]);
    let out = xtask(&args);
    assert!(out.status.success(), "image failed:\n{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "python-fips-e2e:custom"
    );
    let id = docker_text(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "python-fips-e2e:custom",
    ]);
    assert_eq!(
        id, report["image"]["id"],
        "the same tarball must give the same image, not a rebuild"
    );
    docker(&["rmi", "python-fips-e2e:custom"]);
}

/// The files of an image, by exporting a container of it (the distroless image has no shell
/// to ask).
fn image_files(image: &str) -> std::collections::BTreeMap<String, tar::EntryType> {
    let container = format!("python-fips-e2e-files-{}", std::process::id());
    let create = docker(&["create", "--name", &container, image, "python3"]);
    assert!(create.status.success(), "{}", text(&create));
    let out = docker(&["export", &container]);
    docker(&["rm", "--force", &container]);
    assert!(out.status.success(), "{}", text(&out));
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            (
                path.trim_end_matches('/').to_string(),
                e.header().entry_type(),
            )
        })
        .collect()
}

#[test]
fn distroless_image_passes_verify_with_no_shell_and_no_package_manager() {
    let _g = serial();
    // The shared cold build: only the image is new.
    let report = cold_build();
    let tarball = report["artifact"].as_str().unwrap();
    let mirror = setup().to_str().unwrap().to_string();
    let out_dir: PathBuf = work().join("dist");
    let mut args: Vec<&str> = vec!["image"];
    args.extend(VERSION);
    args.extend([
        "--mirror",
        &mirror,
        "--out",
        out_dir.to_str().unwrap(),
        "--runtime",
        "distroless",
    ]);
    let out = xtask(&args);
    // `image` verifies the image unless told not to, and fails if a check fails.
    assert!(
        out.status.success(),
        "image --runtime distroless failed:\n{}",
        text(&out)
    );
    let tags: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        tags,
        [
            "python-fips:3.13.15-distroless",
            "python-fips:3.13-distroless"
        ]
    );
    let verdict = verify_json(&tarball.replace(".tar.gz", ".tar.gz.distroless"));
    assert_eq!(failed_rows(&verdict), BTreeSet::new());
    assert!(
        verdict["checks"].as_array().unwrap().len() >= 20,
        "too few checks: {verdict}"
    );
    let base = verify_json(tarball);
    let names = |v: &serde_json::Value| -> BTreeSet<String> {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&verdict),
        names(&base),
        "both images must run the same checks"
    );

    let tag = "python-fips:3.13.15-distroless";
    let labels: serde_json::Value = serde_json::from_str(&docker_text(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        tag,
    ]))
    .unwrap();
    assert_eq!(labels["org.python-fips.runtime"], "distroless");
    assert_eq!(labels["org.python-fips.tarball.sha256"], report["sha256"]);
    assert_eq!(
        docker_text(&["image", "inspect", "--format", "{{.Config.User}}", tag]),
        "python"
    );

    let files = image_files(tag);
    for absent in [
        "bin/sh",
        "usr/bin/sh",
        "usr/bin/bash",
        "usr/bin/dash",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
        "usr/bin/ldd",
        "var/lib/dpkg",
        "usr/bin/gcc",
        "opt/python-fips/include",
        "opt/python-fips/lib/python3.13/test",
    ] {
        assert!(
            !files.contains_key(absent),
            "the distroless image has {absent}"
        );
    }
    for present in [
        "opt/python-fips/bin/python3.13",
        "opt/python-fips/ssl/fipsmodule.cnf",
        "etc/passwd",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "tmp",
        "home/python",
    ] {
        assert!(
            files.contains_key(present),
            "the distroless image lacks {present}"
        );
    }
    let size: u64 = docker_text(&["image", "inspect", "--format", "{{.Size}}", tag])
        .parse()
        .unwrap();
    eprintln!("distroless image: {} bytes, {} files", size, files.len());
    // Its size budget (the engine's MB, 10^6 bytes).
    assert!(size <= 80_000_000, "the distroless image is {size} bytes");
}
