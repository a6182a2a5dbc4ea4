//! End to end: real Docker, real upstream tarballs (from Debian source packages), real builds.
//!
//! The configuration is the one obtainable offline here: CPython 3.13.15, OpenSSL 3.5.7 for the
//! libraries, and the FIPS provider from OpenSSL 3.0.20, so the separate-provider path runs.
//! Tests share one cache and one cold build, and take turns (a build holds the cache lock anyway).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

const VERSION: [&str; 8] = [
    "--version",
    "3.13",
    "--python",
    "3.13.15",
    "--openssl",
    "3.5.7",
    "--fips-provider",
    "3.0.20",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where the tests keep their cache, mirror and outputs (`target/e2e`, or PYTHON_FIPS_TEST_DIR).
fn work() -> PathBuf {
    std::env::var_os("PYTHON_FIPS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/e2e"))
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs debootstrap if needed, fills the mirror and makes the base image; once per process.
fn setup() -> &'static Path {
    static MIRROR: OnceLock<PathBuf> = OnceLock::new();
    MIRROR.get_or_init(|| {
        let mirror = work().join("mirror");
        let status = Command::new("bash")
            .arg(root().join("tests/setup.sh"))
            .arg(&mirror)
            .status()
            .unwrap();
        assert!(status.success(), "tests/setup.sh failed");
        let out = xtask(&["base-image", "--debootstrap", "bookworm"]);
        assert!(out.status.success(), "base-image failed:\n{}", text(&out));
        mirror
    })
}

fn xtask(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .env("PYTHON_FIPS_CACHE", work().join("cache"))
        .stdin(Stdio::null());
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python` with the test configuration and `extra` flags; returns the parsed `--report`.
fn build(extra: &[&str]) -> serde_json::Value {
    let mirror = setup();
    let report = work().join(format!("report-{}.json", std::process::id()));
    let mut args: Vec<&str> = vec!["python"];
    args.extend(VERSION);
    let mirror = mirror.to_str().unwrap();
    let out_dir = work().join("dist");
    let report_s = report.to_str().unwrap();
    args.extend([
        "--mirror",
        mirror,
        "--out",
        out_dir.to_str().unwrap(),
        "--report",
        report_s,
    ]);
    args.extend(extra);
    let out = xtask(&args);
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        text(&out)
    );
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

/// (stage name, cached) for each stage of a report.
fn stages(report: &serde_json::Value) -> Vec<(String, bool)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The cold build of the test configuration, shared by the tests that need a tarball.
fn cold_build() -> &'static serde_json::Value {
    static REPORT: OnceLock<serde_json::Value> = OnceLock::new();
    REPORT.get_or_init(|| build(&[]))
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Unpacks `tarball` at / in a new debian:bookworm container and runs `cmd` there.
fn in_fresh_container(tarball: &Path, cmd: &[&str]) -> Output {
    let container = format!("python-fips-e2e-{}", std::process::id());
    let create = docker(&[
        "create",
        "--name",
        &container,
        "debian:bookworm",
        "sleep",
        "600",
    ]);
    assert!(create.status.success(), "{}", text(&create));
    let mut child = Command::new("docker")
        .args(["cp", "-", &format!("{container}:/")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball).unwrap());
    std::io::copy(&mut gz, &mut stdin).unwrap();
    drop(stdin);
    let copied = child.wait().unwrap();
    let started = copied.success() && docker(&["start", &container]).status.success();
    let mut args = vec!["exec", container.as_str()];
    args.extend(cmd);
    let out = docker(&args);
    docker(&["rm", "--force", &container]);
    assert!(
        started,
        "cannot unpack {} into a container",
        tarball.display()
    );
    out
}

#[test]
fn build_gives_a_tarball_whose_python_uses_its_own_openssl() {
    let _g = serial();
    let report = cold_build();
    let tarball = PathBuf::from(report["artifact"].as_str().unwrap());
    let name = tarball.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        name,
        "python-fips-3.13.15-openssl-3.5.7-fips-3.0.20-linux-x86_64.tar.gz"
    );
    let sha = std::fs::read_to_string(tarball.with_file_name(format!("{name}.sha256"))).unwrap();
    assert!(sha.starts_with(report["sha256"].as_str().unwrap()));

    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for want in [
        "opt/python-fips/bin/python3",
        "opt/python-fips/lib/ossl-modules/fips.so",
        "opt/python-fips/ssl/openssl.cnf",
        "opt/python-fips/ssl/fipsmodule.cnf",
        "opt/python-fips/bin/python-fips-setup",
        "opt/python-fips/BUILD-INFO.json",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} is not in the tarball"
        );
    }

    // A fresh container from the plain base image: nothing but the tree.
    let run = in_fresh_container(
        &tarball,
        &[
            "/opt/python-fips/bin/python3",
            "-c",
            "import ssl; print(ssl.OPENSSL_VERSION)",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    let version = String::from_utf8_lossy(&run.stdout);
    assert!(
        version.starts_with("OpenSSL 3.5.7 "),
        "ssl.OPENSSL_VERSION is {version:?}"
    );
}

#[test]
fn second_run_is_all_cached() {
    let _g = serial();
    cold_build();
    let report = build(&[]);
    for (name, cached) in stages(&report) {
        assert!(cached, "stage {name} ran again although nothing changed");
    }
    assert_eq!(report["sha256"], cold_build()["sha256"]);
}

#[test]
fn patch_change_reruns_python_and_later_and_a_killed_run_recovers() {
    let _g = serial();
    let cold = cold_build();
    let mirror = setup().to_str().unwrap().to_string();

    // A test copy of the patches with one byte changed in the header comment.
    let patches = work().join(format!("patches-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&patches);
    std::fs::create_dir_all(patches.join("3.13")).unwrap();
    let original = std::fs::read(root().join("patches/3.13/fips.patch")).unwrap();
    let mut changed = original.clone();
    let at = changed.iter().position(|&b| b == b'a').unwrap();
    changed[at] = b'A';
    std::fs::write(patches.join("3.13/fips.patch"), &changed).unwrap();
    let patches_s = patches.to_str().unwrap().to_string();

    // Kill the run while the python stage is running.
    let mut args: Vec<&str> = vec!["python"];
    args.extend(VERSION);
    args.extend([
        "--mirror",
        &mirror,
        "--patches",
        &patches_s,
        "--out",
        "/dev/null/nowhere",
    ]);
    let mut child = command(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("python") && line.contains("running") {
            std::thread::sleep(std::time::Duration::from_secs(20));
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(
        seen.contains("python"),
        "the python stage never started:\n{seen}"
    );

    let report = build(&["--patches", &patches_s]);
    let ran: Vec<(String, bool)> = stages(&report);
    assert_eq!(
        ran,
        vec![
            ("openssl".to_string(), true),
            ("fips-provider".to_string(), true),
            ("python".to_string(), false),
            ("finalize".to_string(), false),
        ],
        "a patch change must re-run python and later stages only"
    );
    assert_ne!(report["sha256"], cold["sha256"]);
    // Nothing of the killed container is left running.
    let ps = docker(&[
        "ps",
        "--filter",
        "label=python-fips.stage=python",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "",
        "a container of the killed run is still running"
    );
    std::fs::remove_dir_all(&patches).unwrap();
}
