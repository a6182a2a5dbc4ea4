//! End to end: `wheels` builds cryptography against the tree, `audit` tells it from the index's wheel.
//!
//! The index's manylinux wheel of cryptography links its own OpenSSL statically: `audit` must
//! flag it, as a file and installed in a venv. The wheel `wheels` builds must pass `audit`, and
//! in the runtime image `verify` must show cryptography on the tree's OpenSSL in FIPS mode.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use support::*;

/// The release the tests build, pinned: cryptography 51 locks crates (asn1 0.25.1) that the crate
/// registry reachable here does not serve, so an unpinned build broke the day it came out. 50.0.2's
/// Cargo.lock resolves here and asks for Rust 1.83, which the recipe's rustc-web (1.85) meets.
const CRYPTOGRAPHY: &str = "cryptography==50.0.2";

/// The test configuration's flags for `wheels`, with the artifacts in `out`.
fn wheels(out: &Path, extra: &[&str]) -> Output {
    let mirror = setup().to_str().unwrap().to_string();
    let mut args = vec!["wheels"];
    args.extend(VERSION);
    args.extend(["--mirror", &mirror, "--out", out.to_str().unwrap()]);
    args.extend(extra);
    xtask(&args)
}

/// cryptography's manylinux wheel from the package index, downloaded once per process.
fn index_wheel() -> &'static Path {
    static WHEEL: OnceLock<PathBuf> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let dir = work().join("index-wheels");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
            ])
            .args([
                "--platform",
                "manylinux_2_34_x86_64",
                "--python-version",
                "3.11",
            ])
            .args(["--dest", dir.to_str().unwrap(), CRYPTOGRAPHY])
            .output()
            .unwrap();
        assert!(out.status.success(), "pip download: {}", text(&out));
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .expect("pip downloaded a wheel")
    })
}

/// The cold build's interpreter with cryptography built against it, in an image; built once.
fn built() -> &'static (PathBuf, f64) {
    static BUILT: OnceLock<(PathBuf, f64)> = OnceLock::new();
    BUILT.get_or_init(|| {
        cold_build();
        let out = work().join("dist");
        let started = Instant::now();
        let run = wheels(&out, &["--image", CRYPTOGRAPHY]);
        let seconds = started.elapsed().as_secs_f64();
        assert!(run.status.success(), "wheels failed:\n{}", text(&run));
        eprintln!(
            "wheels --image cryptography took {seconds:.0} s:\n{}",
            text(&run)
        );
        let dir = out.join("wheels/3.13.15-x86_64");
        (dir, seconds)
    })
}

#[test]
fn the_index_wheel_is_flagged_as_a_file_and_in_a_venv() {
    let wheel = index_wheel();
    let out = xtask(&["audit", wheel.to_str().unwrap()]);
    let shown = text(&out);
    eprintln!("{shown}");
    assert!(
        !out.status.success(),
        "audit passed the index wheel:\n{shown}"
    );
    assert!(
        shown.contains("cryptography/hazmat/bindings/_rust.abi3.so"),
        "{shown}"
    );
    assert!(shown.contains("OpenSSL "), "{shown}");

    // Installed into a venv of this machine's Python, it is found there too.
    let venv = work().join("index-venv");
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3")
        .args(["-m", "venv", venv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success(), "venv: {}", text(&made));
    let pip = venv.join("bin/pip");
    let installed = Command::new(&pip)
        .args([
            "install",
            "--no-deps",
            "--no-index",
            wheel.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "pip install: {}",
        text(&installed)
    );
    let json = work().join("index-venv.audit.json");
    let out = xtask(&[
        "audit",
        venv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "audit passed the venv:\n{}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["package"] == "cryptography"
            && f["file"].as_str().unwrap().ends_with("_rust.abi3.so")),
        "{report}"
    );
}

#[test]
fn built_cryptography_passes_audit_and_verify_in_the_runtime_image() {
    let _g = serial();
    let (dir, seconds) = built();
    let wheel = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("cryptography-") && name.ends_with(".whl")
        })
        .expect("a cryptography wheel");
    let size = std::fs::metadata(&wheel).unwrap().len();
    eprintln!(
        "{} is {size} bytes; wheels took {seconds:.0} s",
        wheel.display()
    );

    let out = xtask(&["audit", wheel.to_str().unwrap()]);
    eprintln!("{}", text(&out));
    assert!(
        out.status.success(),
        "audit flagged the built wheel:\n{}",
        text(&out)
    );
    assert!(text(&out).starts_with("clean: "), "{}", text(&out));

    // The SBOM lists the wheel with its sha256; lock.json says it was built from the sdist.
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("wheels.cdx.json")).unwrap()).unwrap();
    let component = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cryptography")
        .expect("cryptography in the SBOM");
    let bytes = std::fs::read(&wheel).unwrap();
    let sha256: String = <sha2::Sha256 as sha2::Digest>::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(component["hashes"][0]["content"], sha256.as_str());
    assert_eq!(component["version"], "50.0.2");
    assert!(
        component["properties"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "python-fips:built-from-source" && p["value"] == "true"),
        "{component}"
    );

    // verify ran in the image with the wheels, as its non-root user, with the new rows.
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("verify.json")).unwrap()).unwrap();
    assert_eq!(verdict["passed"], true, "{verdict}");
    let rows: Vec<&serde_json::Value> = verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().starts_with("cryptography"))
        .collect();
    for r in &rows {
        eprintln!("{}  {}  {}", r["name"], r["passed"], r["detail"]);
    }
    assert_eq!(rows.len(), 4, "{verdict}");
    let detail = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .map(|r| r["detail"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no row {name}"))
    };
    assert!(detail("cryptography uses the tree's OpenSSL").starts_with("OpenSSL 3.5.7 "));
    assert!(
        detail("cryptography's libcrypto is the tree's")
            .contains("/opt/python-fips/lib/libcrypto.so")
    );
    let user = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        "python-fips:3.13.15-wheels",
    ]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "python");

    // Both images' Python environments are clean.
    for image in ["python-fips:3.13.15-wheels", "python-fips:3.13.15"] {
        let out = xtask(&["audit", image]);
        eprintln!("{}", text(&out));
        assert!(out.status.success(), "audit of {image}:\n{}", text(&out));
        assert!(text(&out).starts_with("clean: "), "{}", text(&out));
    }
}

#[test]
fn wheels_errors_name_the_package_the_log_and_find_links() {
    let _g = serial();
    built();
    let out_dir = work().join("wheels-errors");

    let run = wheels(&out_dir, &["python-fips-no-such-package-4a1c"]);
    let shown = text(&run);
    assert!(!run.status.success());
    assert!(
        shown.contains("has no distribution of `python-fips-no-such-package-4a1c"),
        "{shown}"
    );

    let run = wheels(
        &out_dir,
        &["--index-url", "http://127.0.0.1:9/simple/", "cryptography"],
    );
    let shown = text(&run);
    assert!(!run.status.success());
    assert!(shown.contains("cannot reach the package index"), "{shown}");
    assert!(shown.contains("--find-links DIR"), "{shown}");

    // An sdist whose wheel build fails: the error names it, ends with its log, gives the path.
    let links = work().join("broken-links");
    let _ = std::fs::remove_dir_all(&links);
    std::fs::create_dir_all(&links).unwrap();
    let sdist = links.join("python_fips_broken-1.0.tar.gz");
    let setup_py = "import sys\nfrom setuptools import setup\n\
                    if 'bdist_wheel' in sys.argv:\n    \
                    sys.exit('python-fips-broken: this build fails on purpose')\n\
                    setup(name='python-fips-broken', version='1.0')\n";
    let pkg_info = "Metadata-Version: 2.1\nName: python-fips-broken\nVersion: 1.0\n";
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&sdist).unwrap(),
        flate2::Compression::fast(),
    ));
    for (name, body) in [("setup.py", setup_py), ("PKG-INFO", pkg_info)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        tar.append_data(
            &mut h,
            format!("python_fips_broken-1.0/{name}"),
            body.as_bytes(),
        )
        .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    let run = wheels(
        &out_dir,
        &[
            "--find-links",
            links.to_str().unwrap(),
            "python-fips-broken",
        ],
    );
    let shown = text(&run);
    assert!(!run.status.success());
    assert!(
        shown.contains("cannot build the wheel of python-fips-broken 1.0"),
        "{shown}"
    );
    assert!(shown.contains("this build fails on purpose"), "{shown}");
    assert!(shown.contains("full log: "), "{shown}");
}
