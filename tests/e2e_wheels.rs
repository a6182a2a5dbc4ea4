//! End to end: `wheels` builds cryptography and psycopg2 from a lock against the tree, `audit`
//! tells them from the index's wheel and from a psycopg2 linked against the system's libpq.
//!
//! The index's manylinux wheel of cryptography links its own OpenSSL statically, and a psycopg2
//! built on the host links Debian's libpq, which links the system's libssl: `audit` must flag
//! both. The wheels `wheels` builds from its lock (psycopg2 with the libpq of the `libpq` stage)
//! must pass `audit`, and in the runtime image `verify` must show both on the tree's OpenSSL in
//! FIPS mode, down to a TLS session with a PostgreSQL server on loopback.

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
/// psycopg2 from its sdist, which links whatever libpq `pg_config` names.
const PSYCOPG2: &str = "psycopg2==2.9.13";

/// The test configuration's flags for `wheels`, with the artifacts in `out` and the lock `lock`.
fn wheels(out: &Path, lock: &Path, extra: &[&str]) -> Output {
    let mirror = setup().to_str().unwrap().to_string();
    let mut args = vec!["wheels"];
    args.extend(VERSION);
    args.extend(["--mirror", &mirror, "--out", out.to_str().unwrap()]);
    args.extend(["--lock", lock.to_str().unwrap()]);
    args.extend(extra);
    xtask(&args)
}

/// The loopback PostgreSQL server of `tests/services.sh` (TLS only): its connection string.
fn postgres() -> &'static str {
    static DSN: OnceLock<String> = OnceLock::new();
    DSN.get_or_init(|| services(&["postgres", work().to_str().unwrap()])["POSTGRES"].clone())
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

/// The cold build's interpreter with cryptography and psycopg2 built against it from a fresh
/// lock, in an image verified against the loopback PostgreSQL server; built once.
struct Built {
    dir: PathBuf,
    lock: PathBuf,
    requirements: PathBuf,
    out: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        cold_build();
        let dsn = postgres();
        let out = work().join("dist");
        let lock = work().join("wheels.lock");
        let _ = std::fs::remove_file(&lock);
        let requirements = work().join("requirements.txt");
        std::fs::write(&requirements, format!("{CRYPTOGRAPHY}\n{PSYCOPG2}\n")).unwrap();
        let started = Instant::now();
        let run = wheels(
            &out,
            &lock,
            &[
                "--image",
                "-r",
                requirements.to_str().unwrap(),
                "--postgres",
                dsn,
            ],
        );
        let seconds = started.elapsed().as_secs_f64();
        assert!(run.status.success(), "wheels failed:\n{}", text(&run));
        eprintln!(
            "wheels --image (lock, libpq, cryptography, psycopg2) took {seconds:.0} s:\n{}",
            text(&run)
        );
        Built {
            dir: out.join("wheels/3.13.15-x86_64"),
            lock,
            requirements,
            out,
        }
    })
}

/// The wheel in `dir` whose file name starts with `prefix`.
fn wheel_of(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".whl")
        })
        .unwrap_or_else(|| panic!("no {prefix}*.whl in {}", dir.display()))
}

/// An sdist of a setuptools project `name` 1.0 in `dir`; `setup_py` is its whole setup.py.
fn sdist(dir: &Path, name: &str, setup_py: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let stem = format!("{}-1.0", name.replace('-', "_"));
    let path = dir.join(format!("{stem}.tar.gz"));
    let pkg_info = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    ));
    for (file, body) in [("setup.py", setup_py), ("PKG-INFO", pkg_info.as_str())] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, format!("{stem}/{file}"), body.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    path
}

/// A venv of this machine's Python at `work()/name`, made afresh, with `pip install <args>` run
/// in it.
fn host_venv(name: &str, args: &[&str]) -> PathBuf {
    let venv = work().join(name);
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3")
        .args(["-m", "venv", venv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success(), "venv: {}", text(&made));
    let installed = Command::new(venv.join("bin/pip"))
        .arg("install")
        .args(args)
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "pip install {args:?} on the host: {}",
        text(&installed)
    );
    venv
}

/// `audit DIR --json`: the run and the report it wrote.
fn audit_json(dir: &Path) -> (Output, serde_json::Value) {
    let json = dir.with_extension("audit.json");
    let out = xtask(&[
        "audit",
        dir.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (out, report)
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    <sha2::Sha256 as sha2::Digest>::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    let venv = host_venv(
        "index-venv",
        &["--no-deps", "--no-index", wheel.to_str().unwrap()],
    );
    let (out, report) = audit_json(&venv);
    assert!(
        !out.status.success(),
        "audit passed the venv:\n{}",
        text(&out)
    );
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["package"] == "cryptography"
            && f["file"].as_str().unwrap().ends_with("_rust.abi3.so")),
        "{report}"
    );
}

#[test]
fn psycopg2_on_the_systems_libpq_is_flagged_through_libpq() {
    // libpq-dev and its pg_config come with the loopback server's packages.
    postgres();
    let venv = host_venv(
        "host-psycopg2-venv",
        &["--no-cache-dir", "--no-binary", "psycopg2", PSYCOPG2],
    );
    let (out, report) = audit_json(&venv);
    eprintln!("{}", text(&out));
    assert!(!out.status.success(), "audit passed:\n{}", text(&out));
    // The extension's own NEEDED entries hold no crypto library: libpq.so.5 brings it.
    let through: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["package"] == "psycopg2" && f["file"].as_str().unwrap().contains("/_psycopg"))
        .map(|f| f["what"].as_str().unwrap())
        .collect();
    for lib in ["libssl.so.3", "libcrypto.so.3"] {
        assert!(
            through.iter().any(|w| w.starts_with("loads /")
                && w.contains(lib)
                && w.contains(" through libpq.so.5 (")),
            "no finding of {lib} through libpq: {report}"
        );
    }
}

#[test]
fn built_wheels_pass_audit_and_verify_in_the_runtime_image() {
    let _g = serial();
    let built = built();
    let dir = &built.dir;

    // The lock pins both sdists and the wheels their builds ran with.
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&built.lock).unwrap()).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&lock).unwrap());
    assert_eq!(lock["python-fips-wheels-lock"], 1, "{lock}");
    assert_eq!(
        lock["requirements"],
        serde_json::json!([CRYPTOGRAPHY, PSYCOPG2])
    );
    let packages = lock["packages"].as_array().unwrap();
    for (name, version) in [("cryptography", "50.0.2"), ("psycopg2", "2.9.13")] {
        let p = packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the lock: {lock}"));
        assert_eq!(p["version"], version);
        assert_eq!(p["build"], true);
        assert_eq!(p["file"], format!("{name}-{version}.tar.gz"));
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        assert!(!p["build_requires"].as_array().unwrap().is_empty(), "{p}");
    }
    let crypto = packages
        .iter()
        .find(|p| p["name"] == "cryptography")
        .unwrap();
    assert!(
        crypto["build_requires"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "maturin"),
        "{crypto}"
    );

    let wheel = wheel_of(dir, "cryptography-");
    let size = std::fs::metadata(&wheel).unwrap().len();
    eprintln!("{} is {size} bytes", wheel.display());
    // psycopg2's wheel carries the libpq of the `libpq` stage.
    let psycopg2 = wheel_of(dir, "psycopg2-");
    let listed = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; print(*zipfile.ZipFile(sys.argv[1]).namelist())",
        ])
        .arg(&psycopg2)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    let members: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(
        members
            .iter()
            .any(|m| m.starts_with("psycopg2.libs/libpq.so")),
        "{members:?}"
    );

    for w in [&wheel, &psycopg2] {
        let out = xtask(&["audit", w.to_str().unwrap()]);
        eprintln!("{}", text(&out));
        assert!(
            out.status.success(),
            "audit flagged {}:\n{}",
            w.display(),
            text(&out)
        );
        assert!(text(&out).starts_with("clean: "), "{}", text(&out));
    }

    // The SBOM lists the wheel with its sha256; lock.json says it was built from the sdist.
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("wheels.cdx.json")).unwrap()).unwrap();
    let component = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cryptography")
        .expect("cryptography in the SBOM");
    assert_eq!(
        component["hashes"][0]["content"],
        sha256_hex(&wheel).as_str()
    );
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
        .filter(|r| {
            let name = r["name"].as_str().unwrap();
            ["cryptography", "psycopg2", "PostgreSQL"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .collect();
    for r in &rows {
        eprintln!("{}  {}  {}", r["name"], r["passed"], r["detail"]);
    }
    assert_eq!(rows.len(), 6, "{verdict}");
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
    let libs = detail("psycopg2's libpq and libssl are the tree's");
    assert!(libs.contains("/psycopg2.libs/libpq.so"), "{libs}");
    assert!(libs.contains("/opt/python-fips/lib/libssl.so"), "{libs}");
    assert!(detail("PostgreSQL TLS in FIPS mode").starts_with("TLSv1."));
    let user = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        "python-fips:3.13.15-wheels",
    ]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "python");

    // Both images' Python environments are clean, libpq's libssl followed.
    for image in ["python-fips:3.13.15-wheels", "python-fips:3.13.15"] {
        let out = xtask(&["audit", image]);
        eprintln!("{}", text(&out));
        assert!(out.status.success(), "audit of {image}:\n{}", text(&out));
        assert!(text(&out).starts_with("clean: "), "{}", text(&out));
    }

    // Again from the same lock: nothing is resolved or built again, and the lock is unchanged.
    let before = std::fs::read(&built.lock).unwrap();
    let run = wheels(
        &built.out,
        &built.lock,
        &["-r", built.requirements.to_str().unwrap()],
    );
    let shown = text(&run);
    assert!(run.status.success(), "{shown}");
    assert!(shown.contains("--upgrade re-resolves"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("wheels ") && l.contains(" cached ")),
        "{shown}"
    );
    assert_eq!(std::fs::read(&built.lock).unwrap(), before);
}

#[test]
fn a_lock_refuses_a_changed_sdist_and_other_requirements() {
    let _g = serial();
    built();
    // Its own output directory: the shared build's wheels stay as they are.
    let out = work().join("pinned-dist");
    let links = work().join("pinned-links");
    let _ = std::fs::remove_dir_all(&links);
    let _ = std::fs::remove_dir_all(&out);
    let lock = work().join("pinned.lock");
    let _ = std::fs::remove_file(&lock);
    let setup_py =
        "from setuptools import setup\nsetup(name='python-fips-pinned', version='1.0')\n";
    let file = sdist(&links, "python-fips-pinned", setup_py);
    let first = wheels(
        &out,
        &lock,
        &[
            "--lock-only",
            "--find-links",
            links.to_str().unwrap(),
            "python-fips-pinned",
        ],
    );
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        !out.join("wheels/3.13.15-x86_64").exists(),
        "--lock-only built wheels"
    );
    let locked = sha256_hex(&file);
    let text_of_lock = std::fs::read_to_string(&lock).unwrap();
    assert!(text_of_lock.contains(&locked), "{text_of_lock}");

    // The same version with other bytes: the build stops at the download and says so.
    let file = sdist(
        &links,
        "python-fips-pinned",
        &format!("{setup_py}# changed\n"),
    );
    let changed = sha256_hex(&file);
    let run = wheels(
        &out,
        &lock,
        &[
            "--find-links",
            links.to_str().unwrap(),
            "python-fips-pinned",
        ],
    );
    let shown = text(&run);
    assert!(!run.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("expected sha256 {locked}, got {changed}")),
        "{shown}"
    );
    assert!(shown.contains("--upgrade"), "{shown}");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), text_of_lock);

    // Other requirements than the lock's: refused before anything runs.
    let run = wheels(&out, &lock, &["python-fips-other"]);
    let shown = text(&run);
    assert!(!run.status.success(), "{shown}");
    assert!(
        shown.contains("locks `python-fips-pinned`, not `python-fips-other`"),
        "{shown}"
    );

    // --upgrade takes the new bytes on purpose.
    let run = wheels(
        &out,
        &lock,
        &[
            "--upgrade",
            "--lock-only",
            "--find-links",
            links.to_str().unwrap(),
            "python-fips-pinned",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert!(std::fs::read_to_string(&lock).unwrap().contains(&changed));
}

#[test]
fn wheels_errors_name_the_package_the_log_and_find_links() {
    let _g = serial();
    built();
    let out_dir = work().join("wheels-errors");
    let lock = |name: &str| {
        let path = work().join(format!("locks/{name}.lock"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        path
    };

    let run = wheels(
        &out_dir,
        &lock("unknown"),
        &["python-fips-no-such-package-4a1c"],
    );
    let shown = text(&run);
    assert!(!run.status.success());
    assert!(
        shown.contains("has no distribution of `python-fips-no-such-package-4a1c"),
        "{shown}"
    );

    let run = wheels(
        &out_dir,
        &lock("unreachable"),
        &["--index-url", "http://127.0.0.1:9/simple/", "cryptography"],
    );
    let shown = text(&run);
    assert!(!run.status.success());
    assert!(shown.contains("cannot reach the package index"), "{shown}");
    assert!(shown.contains("--find-links DIR"), "{shown}");

    // An sdist whose wheel build fails: one line names it, the step and the log; the log's end
    // follows.
    let links = work().join("broken-links");
    let _ = std::fs::remove_dir_all(&links);
    let setup_py = "import sys\nfrom setuptools import setup\n\
                    if 'bdist_wheel' in sys.argv:\n    \
                    sys.exit('python-fips-broken: this build fails on purpose')\n\
                    setup(name='python-fips-broken', version='1.0')\n";
    sdist(&links, "python-fips-broken", setup_py);
    let run = wheels(
        &out_dir,
        &lock("broken"),
        &[
            "--find-links",
            links.to_str().unwrap(),
            "python-fips-broken",
        ],
    );
    let shown = text(&run);
    assert!(!run.status.success());
    let line = shown
        .lines()
        .find(|l| l.contains("cannot build python-fips-broken 1.0: building the wheel: "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(line.contains("(log: "), "{line}");
    assert!(shown.contains("this build fails on purpose"), "{shown}");
}
